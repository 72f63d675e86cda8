//! Putting polls back into Redis after Redis lost them (restarted empty, flushed).
//!
//! Each vote shard has a "restored" marker key. While it is missing, the vote script
//! answers "retry" for polls it does not know instead of a wrong 404, and this module
//! loads the shard's polls from PostgreSQL (definition, tallies, voters, sequence number),
//! then sets the marker. A lock key with a TTL makes sure one worker restores a shard at a
//! time; any worker checks every shard periodically, so whichever notices first restores.

use domain::deadpool_postgres::Pool;
use domain::keys::{Keys, VOTE_SHARDS};
use domain::poll::{PersistedPoll, PollOption, PollSettings, shard_marker};
use domain::redis::RedisConn;
use std::collections::HashMap;

/// How long a restorer may hold a shard's lock before another may take over.
const LOCK_TTL_MS: u64 = 120_000;

/// Restores every shard whose marker is missing. Returns the number of polls restored.
///
/// # Errors
/// When Redis or PostgreSQL fails (the marker stays unset; the next check retries).
pub async fn restore_missing_shards(
    redis: &mut RedisConn,
    pg: &Pool,
    keys: &Keys,
    worker_id: &str,
) -> anyhow::Result<usize> {
    let mut restored = 0;
    for shard in 0..VOTE_SHARDS {
        if shard_marker::is_restored(redis, keys, shard).await? {
            continue;
        }
        if !shard_marker::lock(redis, keys, shard, worker_id, LOCK_TTL_MS).await? {
            continue; // someone else is restoring this shard
        }
        let result = restore_shard(redis, pg, keys, shard).await;
        if let Ok(n) = result {
            shard_marker::set_restored(redis, keys, shard).await?;
            restored += n;
            tracing::info!(shard, polls = n, "vote shard restored into Redis");
        }
        shard_marker::unlock(redis, keys, shard, worker_id).await?;
        result?;
    }
    Ok(restored)
}

async fn restore_shard(
    redis: &mut RedisConn,
    pg: &Pool,
    keys: &Keys,
    shard: u16,
) -> anyhow::Result<usize> {
    let client = pg.get().await?;
    let shard_i16 = i16::try_from(shard)?;
    let polls = client
        .query(
            "SELECT poll_id, question, (extract(epoch FROM closes_at) * 1000)::bigint,
                    closed_at IS NOT NULL, min_choices, max_choices, results, allow_change, voters
             FROM polls WHERE shard = $1 AND question IS NOT NULL",
            &[&shard_i16],
        )
        .await?;
    let mut restored = 0;
    for row in polls {
        let poll_id: String = row.get(0);
        let options = client
            .query(
                "SELECT option_id, coalesce(label, option_id), votes FROM poll_options
                 WHERE poll_id = $1 ORDER BY position NULLS LAST, option_id",
                &[&poll_id],
            )
            .await?;
        let voters = client
            .query(
                "SELECT user_id, array_to_string(option_ids, ',') FROM votes WHERE poll_id = $1",
                &[&poll_id],
            )
            .await?;
        let seq: i64 = client
            .query_one(
                "SELECT coalesce(max(seq), 0) FROM votes WHERE poll_id = $1",
                &[&poll_id],
            )
            .await?
            .get(0);
        let tally: HashMap<String, i64> = options.iter().map(|o| (o.get(0), o.get(2))).collect();
        let (min, max): (i16, i16) = (row.get(4), row.get(5));
        let (results, allow_change, voters_mode): (String, bool, String) =
            (row.get(6), row.get(7), row.get(8));
        let settings = PollSettings::from_fields(|field| match field {
            "min_choices" => Some(min.to_string()),
            "max_choices" => Some(max.to_string()),
            "results" => Some(results.clone()),
            "allow_change" => Some(if allow_change { "1" } else { "0" }.to_string()),
            "voters" => Some(voters_mode.clone()),
            _ => None,
        });
        let poll = PersistedPoll {
            question: row.get(1),
            closes_at_ms: row.get(2),
            closed: row.get(3),
            settings,
            seq,
            options: options
                .iter()
                .map(|o| PollOption {
                    id: o.get(0),
                    label: o.get(1),
                })
                .collect(),
            tally: tally.into_iter().collect(),
            voters: voters.iter().map(|v| (v.get(0), v.get(1))).collect(),
            poll_id,
        };
        if domain::poll::restore(redis, keys, &poll).await? {
            restored += 1;
        }
    }
    Ok(restored)
}
