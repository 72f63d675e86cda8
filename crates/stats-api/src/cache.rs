//! Read-through caching of answers in Redis, validated by the site's generation (see
//! `domain::cache`): a cached answer is served only while no batch touched the site since.

use crate::error::ApiError;
use crate::startup::AppState;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::future::Future;

/// Serves `signature` for `site_id` from the cache, or computes and caches it. A Redis
/// failure only costs the cache, never the answer.
///
/// # Errors
/// Whatever `compute` fails with.
pub async fn cached<T, F>(
    state: &AppState,
    site_id: &str,
    signature: &str,
    compute: F,
) -> Result<T, ApiError>
where
    T: Serialize + DeserializeOwned,
    F: Future<Output = Result<T, ApiError>>,
{
    let mut redis = state.redis.clone();
    let lookup = domain::cache::lookup(&mut redis, &state.keys, site_id, signature).await;
    let generation = match lookup {
        Ok(found) => {
            if let Some(value) = found
                .hit
                .as_deref()
                .and_then(|body| serde_json::from_str(body).ok())
            {
                metrics::counter!("stats_api_cache_requests_total", "result" => "hit").increment(1);
                return Ok(value);
            }
            metrics::counter!("stats_api_cache_requests_total", "result" => "miss").increment(1);
            Some(found.generation)
        }
        Err(e) => {
            metrics::counter!("stats_api_cache_requests_total", "result" => "error").increment(1);
            tracing::warn!(error = %e, "stats cache unavailable; answering from PostgreSQL");
            None
        }
    };
    let value = compute.await?;
    if let (Some(generation), Ok(body)) = (generation, serde_json::to_string(&value))
        && let Err(e) = domain::cache::store(
            &mut redis,
            &state.keys,
            site_id,
            signature,
            generation,
            &body,
        )
        .await
    {
        tracing::debug!(error = %e, "could not cache the answer");
    }
    Ok(value)
}
