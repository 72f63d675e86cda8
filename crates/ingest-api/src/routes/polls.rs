//! Polls: `POST /v1/polls`, `POST /v1/polls/{poll_id}/close` (admin), votes
//! `POST /v1/polls/{poll_id}/votes` and the compatibility alias `POST /api/vote`.
//!
//! Every change is one Lua script in Redis (see `domain::poll`): the answer reflects the
//! state after the vote, atomically.

use super::{client_rate_limit, read_json_body, require_admin, traceparent};
use crate::ballot_box::BallotBox;
use crate::error::ApiError;
use crate::limits::retry_after_secs;
use crate::pusher::EventPusher;
use crate::startup::{AppState, WorkerRedis};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, post, web};
use chrono::Utc;
use domain::poll::{self, BallotError, CloseOutcome, Vote, VoteOutcome, Voters, voter_token};
use serde_json::json;

/// Longest poll id accepted in a path (ids we create are 36 characters).
const MAX_POLL_ID_CHARS: usize = 100;

/// Largest poll definition read: a question and twenty labels of at most a few hundred
/// characters each fit many times over.
const POLL_BODY_LIMIT_BYTES: usize = 64 * 1024;

fn queue_unavailable(e: domain::redis_client::RedisError) -> ApiError {
    ApiError::QueueUnavailable(anyhow::Error::new(e).context("poll script"))
}

/// Creates a poll (admin).
#[utoipa::path(
    tag = "polls",
    security(("admin_token" = [])),
    request_body(content = super::docs::NewPoll, content_type = "application/json"),
    responses(
        (status = 201, description = "Created", body = super::docs::PollCreated),
        (status = 413, description = "Body over 64 KiB"),
        (status = 400, description = "Invalid body; every problem listed", body = super::docs::PollError),
        (status = 401, description = "Missing or wrong admin token"),
        (status = 429, description = "Per-client rate exceeded (Retry-After)"),
        (status = 503, description = "Redis unavailable"),
    )
)]
#[post("/v1/polls")]
#[tracing::instrument(name = "post_poll", skip_all, fields(poll_id = tracing::field::Empty))]
pub async fn post_poll(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    redis: web::Data<WorkerRedis>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state)?;
    client_rate_limit(&req, &state)?;
    let body = read_json_body(&req, payload, POLL_BODY_LIMIT_BYTES).await?;
    let now = Utc::now();
    let new_poll = poll::parse_new_poll(&body, now).map_err(ApiError::invalid_body)?;
    if new_poll.settings.voters == Voters::Signed && state.settings.voter_token_secret.is_empty() {
        return Err(ApiError::invalid_body(vec![
            "voters: signed needs VOTER_TOKEN_SECRET set on ingest-api (the secret voter tokens are signed with)".into(),
        ]));
    }
    let poll_id = uuid::Uuid::now_v7().to_string();
    tracing::Span::current().record("poll_id", poll_id.as_str());
    let created = poll::create(&mut redis.0.clone(), &state.keys, &poll_id, &new_poll, now)
        .await
        .map_err(queue_unavailable)?;
    if !created {
        return Err(ApiError::Unexpected(anyhow::anyhow!(
            "a fresh UUIDv7 poll id collided"
        )));
    }
    metrics::counter!("ingest_api_polls_created_total").increment(1);
    Ok(HttpResponse::Created().json(json!({
        "poll_id": poll_id,
        "question": new_poll.question,
        "options": new_poll.options,
        "closes_at": new_poll.closes_at,
        "min_choices": new_poll.settings.min_choices,
        "max_choices": new_poll.settings.max_choices,
        "results": new_poll.settings.results,
        "allow_change": new_poll.settings.allow_change,
        "voters": new_poll.settings.voters,
    })))
}

/// Closes a poll (admin); later votes get 410.
#[utoipa::path(
    tag = "polls",
    security(("admin_token" = [])),
    params(("poll_id" = String, Path, description = "The poll")),
    responses(
        (status = 200, description = "Closed (also when it already was)", body = super::docs::PollClosed),
        (status = 401, description = "Missing or wrong admin token"),
        (status = 429, description = "Per-client rate exceeded (Retry-After)"),
        (status = 404, description = "Unknown poll", body = super::docs::PollError),
        (status = 503, description = "Poll state being restored, or Redis unavailable (Retry-After)"),
    )
)]
#[post("/v1/polls/{poll_id}/close")]
#[tracing::instrument(name = "close_poll", skip_all, fields(poll_id = %path))]
pub async fn close_poll(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
    redis: web::Data<WorkerRedis>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state)?;
    client_rate_limit(&req, &state)?;
    let poll_id = path.into_inner();
    if !poll_id_fits(&poll_id) {
        return Err(ApiError::poll(StatusCode::NOT_FOUND, "poll_not_found"));
    }
    match poll::close(&mut redis.0.clone(), &state.keys, &poll_id, Utc::now())
        .await
        .map_err(queue_unavailable)?
    {
        CloseOutcome::Closed | CloseOutcome::AlreadyClosed => {
            Ok(HttpResponse::Ok().json(json!({"poll_id": poll_id, "closed": true})))
        }
        CloseOutcome::NotFound => Err(ApiError::poll(StatusCode::NOT_FOUND, "poll_not_found")),
        CloseOutcome::Restoring => Err(ApiError::restoring()),
    }
}

/// Casts a vote: 202 with the new tally, or why not. An `Idempotency-Key` header makes
/// retries safe: the retry of an accepted vote gets the original answer.
#[utoipa::path(
    tag = "polls",
    params(
        ("poll_id" = String, Path, description = "The poll"),
        ("Idempotency-Key" = Option<String>, Header, description = "1 to 255 visible ASCII characters; kept 24 h"),
    ),
    request_body(content = super::docs::Vote, content_type = "application/json"),
    responses(
        (status = 202, description = "Counted (or moved); the poll's state after this vote", body = super::docs::VoteAccepted),
        (status = 400, description = "Invalid body", body = super::docs::PollError),
        (status = 403, description = "A `voters: signed` poll and no voter token (`voter_token_required`) or one that does not verify (`voter_token_invalid`)", body = super::docs::PollError),
        (status = 404, description = "Unknown poll (`poll_not_found`)", body = super::docs::PollError),
        (status = 409, description = "This user already voted and the poll does not allow changes (`duplicate_vote`)", body = super::docs::PollError),
        (status = 410, description = "The poll is closed (`poll_closed`)", body = super::docs::PollError),
        (status = 413, description = "Body over VOTE_BODY_LIMIT_BYTES"),
        (status = 415, description = "Content-Type is not JSON"),
        (status = 422, description = "Unknown option (`unknown_option`), an option named twice (`invalid_choice`), too few or too many options (`choice_count`), or an Idempotency-Key that answered another user's or option's vote (`idempotency_key_reused`); nothing counted", body = super::docs::PollError),
        (status = 429, description = "Per-client or per-poll rate exceeded (Retry-After)"),
        (status = 503, description = "Poll state being restored, or Redis unavailable (Retry-After)"),
    )
)]
#[post("/v1/polls/{poll_id}/votes")]
#[tracing::instrument(name = "post_vote", skip_all, fields(poll_id = %path))]
pub async fn post_vote(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
    ballot_box: web::Data<BallotBox>,
    pusher: web::Data<EventPusher>,
) -> Result<HttpResponse, ApiError> {
    let poll_id = path.into_inner();
    client_vote_limit(&req, &state)?;
    if !poll_id_fits(&poll_id) {
        return Err(refusal(VoteOutcome::NotFound));
    }
    poll_vote_limit(&state, &poll_id)?;
    let body = read_json_body(&req, payload, state.settings.vote_body_limit_bytes).await?;
    let value: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::invalid_body(vec![format!("invalid JSON: {e}")]))?;
    let ballot = poll::check_ballot(
        value.get("option_id"),
        value.get("option_ids"),
        value.get("user_id"),
        ["option_id", "option_ids", "user_id"],
    )
    .map_err(ballot_error)?;
    let token = match value.get("voter_token") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(t)) => Some(t.as_str()),
        Some(_) => {
            return Err(ApiError::invalid_body(vec![
                "voter_token must be a string".into(),
            ]));
        }
    };
    let proof = voter_token::verify(
        state.settings.voter_token_secret.expose().as_bytes(),
        &poll_id,
        &ballot.user_id,
        token,
    );
    let idempotency_key = match req.headers().get("idempotency-key") {
        None => None,
        Some(v) => {
            let key = v.to_str().unwrap_or("");
            poll::check_idempotency_key(key).map_err(|m| ApiError::invalid_body(vec![m]))?;
            Some(key)
        }
    };
    let vote = Vote {
        idempotency_key: idempotency_key.map(str::to_string),
        traceparent: traceparent(&req),
        poll_id,
        ballot,
        proof,
    };
    let poll_id = vote.poll_id.clone();
    let counted = cast(&ballot_box, vote).await?;
    match replicated(&pusher, counted).await? {
        VoteOutcome::Accepted(body) | VoteOutcome::Unchanged(body) | VoteOutcome::Replay(body) => {
            Ok(HttpResponse::Accepted()
                .content_type("application/json")
                .body(with_results_token(&state, &poll_id, body)))
        }
        VoteOutcome::Duplicate => Err(ApiError::poll(StatusCode::CONFLICT, "duplicate_vote")),
        other => Err(refusal(other)),
    }
}

/// The answer to a vote on an `after_vote` poll, with the stream token that opens the
/// poll's results to this voter's streams (when a stream secret is configured).
fn with_results_token(state: &AppState, poll_id: &str, body: String) -> String {
    let secret = state.settings.stream_token_secret.expose();
    if secret.is_empty() || !body.contains("\"results\":\"after_vote\"") {
        return body;
    }
    let Ok(mut answer) = serde_json::from_str::<serde_json::Value>(&body) else {
        return body;
    };
    let exp = Utc::now().timestamp() + RESULTS_TOKEN_TTL_S;
    answer["results_token"] = json!(domain::stream_token::mint(
        secret.as_bytes(),
        &domain::stream_token::poll_scope(poll_id),
        exp
    ));
    answer.to_string()
}

/// How long a results token opens an `after_vote` poll's streams.
const RESULTS_TOKEN_TTL_S: i64 = 24 * 3600;

fn ballot_error(e: BallotError) -> ApiError {
    match e {
        BallotError::Invalid(details) => ApiError::invalid_body(details),
        BallotError::Choice(why) => ApiError::coded(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_choice",
            vec![why],
        ),
    }
}

/// The poll design's `POST /api/vote`: `{"pollId","optionId","userId","timestamp",
/// "idempotencyKey"}`, answered `{"status": "accepted"}` or `{"error": "Duplicate vote"}`.
/// `timestamp` is accepted and ignored: the server's clock orders votes.
#[utoipa::path(
    tag = "compatibility",
    request_body(content = super::docs::CompatVote, content_type = "application/json"),
    responses(
        (status = 202, description = "`{\"status\": \"accepted\"}`", body = super::docs::CompatAccepted),
        (status = 409, description = "`{\"error\": \"Duplicate vote\"}`", body = super::docs::PollError),
        (status = 400, description = "Invalid body", body = super::docs::PollError),
        (status = 404, description = "Unknown poll"),
        (status = 410, description = "The poll is closed"),
        (status = 422, description = "Unknown option"),
        (status = 429, description = "Per-client or per-poll rate exceeded (Retry-After)"),
        (status = 503, description = "Poll state being restored, or Redis unavailable"),
    )
)]
#[post("/api/vote")]
#[tracing::instrument(name = "post_vote_compat", skip_all)]
pub async fn post_vote_compat(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    ballot_box: web::Data<BallotBox>,
    pusher: web::Data<EventPusher>,
) -> Result<HttpResponse, ApiError> {
    client_vote_limit(&req, &state)?;
    let body = read_json_body(&req, payload, state.settings.vote_body_limit_bytes).await?;
    let value: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::invalid_body(vec![format!("invalid JSON: {e}")]))?;
    let mut problems = Vec::new();
    let poll_id = match value.get("pollId") {
        Some(serde_json::Value::String(s)) if !s.is_empty() => s.clone(),
        _ => {
            problems.push("pollId is required and must be a non-empty string".to_string());
            String::new()
        }
    };
    let ballot = poll::check_ballot(
        value.get("optionId"),
        None,
        value.get("userId"),
        ["optionId", "optionIds", "userId"],
    );
    if let Some(why) = compat_timestamp_problem(value.get("timestamp")) {
        problems.push(why);
    }
    let idempotency_key = match value.get("idempotencyKey") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(k)) => match poll::check_idempotency_key(k) {
            Ok(()) => Some(k.as_str()),
            Err(m) => {
                problems.push(m.replace("Idempotency-Key", "idempotencyKey"));
                None
            }
        },
        Some(_) => {
            problems.push("idempotencyKey must be a string".into());
            None
        }
    };
    let ballot = match ballot {
        Ok(b) if problems.is_empty() => b,
        Ok(_) => return Err(ApiError::invalid_body(problems)),
        Err(BallotError::Invalid(mut more)) => {
            problems.append(&mut more);
            return Err(ApiError::invalid_body(problems));
        }
        Err(choice) if problems.is_empty() => return Err(ballot_error(choice)),
        Err(_) => return Err(ApiError::invalid_body(problems)),
    };
    if !poll_id_fits(&poll_id) {
        return Err(refusal(VoteOutcome::NotFound));
    }
    poll_vote_limit(&state, &poll_id)?;
    let vote = Vote {
        idempotency_key: idempotency_key.map(str::to_string),
        traceparent: traceparent(&req),
        ..Vote::open(poll_id, ballot)
    };
    let counted = cast(&ballot_box, vote).await?;
    match replicated(&pusher, counted).await? {
        VoteOutcome::Accepted(_) | VoteOutcome::Unchanged(_) | VoteOutcome::Replay(_) => {
            Ok(HttpResponse::Accepted().json(json!({"status": "accepted"})))
        }
        VoteOutcome::Duplicate => Err(ApiError::poll(StatusCode::CONFLICT, "Duplicate vote")),
        other => Err(refusal(other)),
    }
}

/// What is wrong with the alias's `timestamp`, if anything. The seed's client sends the
/// vote's time in milliseconds since the epoch; an ISO 8601 date is taken too. It is
/// checked, not used: Tally orders votes by its own clock, so a client's clock (or a
/// forged time) cannot reorder them.
fn compat_timestamp_problem(timestamp: Option<&serde_json::Value>) -> Option<String> {
    /// 9999-12-31T23:59:59.999Z, the last millisecond a date string can name.
    const LAST_MS: f64 = 253_402_300_799_999.0;
    let fits = match timestamp {
        None | Some(serde_json::Value::Null) => true,
        Some(serde_json::Value::Number(n)) => {
            n.as_f64().is_some_and(|ms| (0.0..=LAST_MS).contains(&ms))
        }
        Some(serde_json::Value::String(s)) => domain::event::parse_timestamp(s).is_ok(),
        Some(_) => false,
    };
    (!fits).then(|| {
        "timestamp must be milliseconds since the epoch (0 to 253402300799999) or an ISO 8601 date string".to_string()
    })
}

/// Whether `poll_id` could name a poll. Checked before the id keys anything (a limiter
/// bucket, a Redis key), so a client cannot make us keep megabytes of made-up ids.
fn poll_id_fits(poll_id: &str) -> bool {
    poll_id.len() <= MAX_POLL_ID_CHARS * 4 && poll_id.chars().count() <= MAX_POLL_ID_CHARS
}

/// The per-client vote limit, before anything of the request is read.
fn client_vote_limit(req: &HttpRequest, state: &AppState) -> Result<(), ApiError> {
    if let Some(ip) = domain::http::client_ip(req, &state.trusted_proxies)
        && let Err(wait) = state.vote_ip_limiter.check(&domain::net::limit_key(ip))
    {
        metrics::counter!("ingest_api_requests_shed_total", "reason" => "vote_rate_limited")
            .increment(1);
        return Err(ApiError::RateLimited {
            retry_after_s: retry_after_secs(wait),
        });
    }
    Ok(())
}

/// The per-poll vote limit, for a poll id that [`poll_id_fits`].
fn poll_vote_limit(state: &AppState, poll_id: &str) -> Result<(), ApiError> {
    if let Err(wait) = state.vote_poll_limiter.check(&poll_id.to_string()) {
        metrics::counter!("ingest_api_requests_shed_total", "reason" => "poll_rate_limited")
            .increment(1);
        return Err(ApiError::RateLimited {
            retry_after_s: retry_after_secs(wait),
        });
    }
    Ok(())
}

async fn cast(ballot_box: &BallotBox, vote: Vote) -> Result<VoteOutcome, ApiError> {
    let outcome = ballot_box.cast(vote).await.map_err(queue_unavailable)?;
    let label = match &outcome {
        VoteOutcome::Accepted(_) => "accepted",
        VoteOutcome::Unchanged(_) => "unchanged",
        VoteOutcome::Replay(_) => "replay",
        VoteOutcome::ChoiceCount(..) => "choice_count",
        VoteOutcome::Unsigned => "unsigned",
        VoteOutcome::BadSignature => "bad_signature",
        VoteOutcome::KeyReused => "key_reused",
        VoteOutcome::Duplicate => "duplicate",
        VoteOutcome::NotFound => "not_found",
        VoteOutcome::Restoring => "restoring",
        VoteOutcome::Closed => "closed",
        VoteOutcome::UnknownOption => "unknown_option",
    };
    metrics::counter!("ingest_api_votes_total", "outcome" => label).increment(1);
    Ok(outcome)
}

/// With `REDIS_WAIT_REPLICAS`, a vote that was counted is answered once replicas hold it
/// too (a `WAIT` shared with other requests' pushes).
async fn replicated(pusher: &EventPusher, outcome: VoteOutcome) -> Result<VoteOutcome, ApiError> {
    if matches!(
        outcome,
        VoteOutcome::Accepted(_) | VoteOutcome::Unchanged(_)
    ) {
        pusher.replicated().await?;
    }
    Ok(outcome)
}

fn refusal(outcome: VoteOutcome) -> ApiError {
    match outcome {
        VoteOutcome::NotFound => ApiError::poll(StatusCode::NOT_FOUND, "poll_not_found"),
        VoteOutcome::Closed => ApiError::poll(StatusCode::GONE, "poll_closed"),
        VoteOutcome::UnknownOption => {
            ApiError::poll(StatusCode::UNPROCESSABLE_ENTITY, "unknown_option")
        }
        VoteOutcome::Restoring => ApiError::restoring(),
        VoteOutcome::Duplicate => ApiError::poll(StatusCode::CONFLICT, "duplicate_vote"),
        VoteOutcome::KeyReused => ApiError::Coded {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "idempotency_key_reused",
            details: vec![
                "this Idempotency-Key answered a vote by another user or for another option; \
                 nothing was counted"
                    .into(),
            ],
            retry_after_s: None,
        },
        VoteOutcome::ChoiceCount(min, max) => ApiError::coded(
            StatusCode::UNPROCESSABLE_ENTITY,
            "choice_count",
            vec![if min == max {
                format!("this poll takes exactly {min} option(s) per vote")
            } else {
                format!("this poll takes {min} to {max} options per vote")
            }],
        ),
        VoteOutcome::Unsigned => ApiError::coded(
            StatusCode::FORBIDDEN,
            "voter_token_required",
            vec![
                "this poll counts only voters the host application signed for: send voter_token"
                    .into(),
            ],
        ),
        VoteOutcome::BadSignature => ApiError::coded(
            StatusCode::FORBIDDEN,
            "voter_token_invalid",
            vec!["the voter_token is not signed for this poll and user".into()],
        ),
        VoteOutcome::Accepted(_) | VoteOutcome::Unchanged(_) | VoteOutcome::Replay(_) => {
            ApiError::Unexpected(anyhow::anyhow!("accepted vote treated as refused"))
        }
    }
}
