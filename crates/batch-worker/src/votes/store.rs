//! Writing poll definitions, closes and votes to PostgreSQL, one statement per kind, in
//! one transaction.
//!
//! A `votes` row is a voter's current vote. A vote message replaces it only when its
//! sequence number is newer, and option counts move by exactly what the statement changed:
//! plus the new options of every row it wrote, minus the old options of every row it
//! replaced. Replays and redeliveries change nothing; a moved vote stored before the vote it
//! moved (workers racing) leaves the older one without effect. Transactions touching a poll
//! take that poll's advisory lock first, so the old options they read are the committed
//! ones.

use super::VotesWritten;
use crate::lane::StoreError;
use chrono::{DateTime, Utc};
use domain::deadpool_postgres::Pool;
use domain::poll::PollMessage;
use std::collections::HashMap;
use uuid::Uuid;

const UPSERT_POLLS: &str = r"
WITH polls_in AS (
    INSERT INTO polls AS p (poll_id, question, closes_at, created_at, shard, min_choices,
                            max_choices, results, allow_change, voters)
    SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[], $5::smallint[],
                         $10::smallint[], $11::smallint[], $12::text[], $13::bool[], $14::text[])
    ON CONFLICT (poll_id) DO UPDATE
        SET question = EXCLUDED.question, closes_at = EXCLUDED.closes_at, created_at = EXCLUDED.created_at,
            min_choices = EXCLUDED.min_choices, max_choices = EXCLUDED.max_choices,
            results = EXCLUDED.results, allow_change = EXCLUDED.allow_change, voters = EXCLUDED.voters
)
INSERT INTO poll_options AS o (poll_id, option_id, label, position)
SELECT * FROM unnest($6::text[], $7::text[], $8::text[], $9::int[])
ON CONFLICT (poll_id, option_id) DO UPDATE SET label = EXCLUDED.label, position = EXCLUDED.position
";

const CLOSE_POLLS: &str = r"
INSERT INTO polls AS p (poll_id, closed_at, shard)
SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::smallint[])
ON CONFLICT (poll_id) DO UPDATE SET closed_at = coalesce(p.closed_at, EXCLUDED.closed_at)
";

/// Serialises writers of the same polls (in one order, so they cannot deadlock).
const LOCK_POLLS: &str = r"
SELECT count(pg_advisory_xact_lock(k))
FROM (SELECT DISTINCT hashtextextended(p, 7061) AS k FROM unnest($1::text[]) AS p ORDER BY 1) AS keys
";

/// Inputs hold one row per (poll, user): the newest of the batch.
const UPSERT_VOTES: &str = r"
WITH input AS (
    SELECT vote_id, poll_id, user_id, string_to_array(choices, ',') AS option_ids, seq, voted_at
    FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::timestamptz[])
        AS t(vote_id, poll_id, user_id, choices, seq, voted_at)
), previous AS (
    SELECT v.poll_id, v.user_id, v.option_ids
    FROM votes v JOIN input i ON v.poll_id = i.poll_id AND v.user_id = i.user_id
), written AS (
    INSERT INTO votes AS v (vote_id, poll_id, option_id, option_ids, user_id, seq, voted_at)
    SELECT vote_id, poll_id, option_ids[1], option_ids, user_id, seq, voted_at FROM input
    ON CONFLICT (poll_id, user_id) DO UPDATE
        SET vote_id = EXCLUDED.vote_id, option_id = EXCLUDED.option_id,
            option_ids = EXCLUDED.option_ids, seq = EXCLUDED.seq, voted_at = EXCLUDED.voted_at
        WHERE v.seq < EXCLUDED.seq
    RETURNING poll_id, user_id, option_ids
), deltas AS (
    SELECT w.poll_id, unnest(w.option_ids) AS option_id, 1 AS d FROM written w
    UNION ALL
    SELECT p.poll_id, unnest(p.option_ids), -1
    FROM previous p JOIN written w ON w.poll_id = p.poll_id AND w.user_id = p.user_id
), counts AS (
    INSERT INTO poll_options AS o (poll_id, option_id, votes)
    SELECT poll_id, option_id, sum(d) FROM deltas GROUP BY 1, 2 HAVING sum(d) <> 0 ORDER BY 1, 2
    ON CONFLICT (poll_id, option_id) DO UPDATE SET votes = o.votes + EXCLUDED.votes
)
SELECT count(*) FROM written
";

fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

fn shard_of(poll_id: &str) -> i16 {
    i16::try_from(domain::keys::vote_shard(poll_id)).unwrap_or(0)
}

/// Writes poll definitions, closes and votes in one transaction.
///
/// # Errors
/// [`StoreError::Data`] when a value is refused; [`StoreError::Transient`] otherwise.
pub async fn store_poll_messages(
    pg: &Pool,
    messages: &[PollMessage],
) -> Result<VotesWritten, StoreError> {
    let (mut p_id, mut p_question, mut p_closes, mut p_created, mut p_shard) =
        (vec![], vec![], vec![], vec![], vec![]);
    let (mut p_min, mut p_max, mut p_results, mut p_change, mut p_voters) =
        (vec![], vec![], vec![], vec![], vec![]);
    let (mut o_poll, mut o_id, mut o_label, mut o_pos) = (vec![], vec![], vec![], vec![]);
    let (mut c_id, mut c_at, mut c_shard) = (vec![], vec![], vec![]);
    // The newest vote of each (poll, user) in the batch.
    let mut newest: HashMap<(&str, &str), &PollMessage> = HashMap::new();
    for m in messages {
        match m {
            PollMessage::Poll {
                poll_id,
                question,
                options,
                closes_at_ms,
                created_at_ms,
                settings,
                ..
            } => {
                p_min.push(i16::from(settings.min_choices));
                p_max.push(i16::from(settings.max_choices));
                p_results.push(settings.results.as_str());
                p_change.push(settings.allow_change);
                p_voters.push(settings.voters.as_str());
                p_id.push(poll_id.as_str());
                p_question.push(question.as_str());
                p_closes.push(closes_at_ms.map(at));
                p_created.push(at(*created_at_ms));
                p_shard.push(shard_of(poll_id));
                for (i, o) in options.iter().enumerate() {
                    o_poll.push(poll_id.as_str());
                    o_id.push(o.id.as_str());
                    o_label.push(o.label.as_str());
                    o_pos.push(i32::try_from(i).unwrap_or(i32::MAX));
                }
            }
            PollMessage::Close {
                poll_id,
                closed_at_ms,
                ..
            } => {
                c_id.push(poll_id.as_str());
                c_at.push(at(*closed_at_ms));
                c_shard.push(shard_of(poll_id));
            }
            PollMessage::Vote {
                poll_id,
                user_id,
                seq,
                ..
            } => {
                let slot = newest.entry((poll_id, user_id)).or_insert(m);
                if matches!(slot, PollMessage::Vote { seq: kept, .. } if kept < seq) {
                    *slot = m;
                }
            }
        }
    }
    let mut votes: Vec<&PollMessage> = newest.into_values().collect();
    votes.sort_by_key(|m| match m {
        PollMessage::Vote {
            poll_id, user_id, ..
        } => (poll_id.as_str(), user_id.as_str()),
        _ => ("", ""),
    });
    let (mut v_id, mut v_poll, mut v_user, mut v_choices, mut v_seq, mut v_at) =
        (Vec::<Uuid>::new(), vec![], vec![], vec![], vec![], vec![]);
    for m in votes {
        if let PollMessage::Vote {
            vote_id,
            poll_id,
            user_id,
            seq,
            voted_at_ms,
            ..
        } = m
        {
            v_id.push(*vote_id);
            v_poll.push(poll_id.as_str());
            v_user.push(user_id.as_str());
            v_choices.push(m.choices().join(","));
            v_seq.push(*seq);
            v_at.push(at(*voted_at_ms));
        }
    }
    let mut client = pg.get().await.map_err(StoreError::no_connection)?;
    let tx = client.transaction().await.map_err(StoreError::from_pg)?;
    let mut inserted = 0u64;
    if !p_id.is_empty() {
        let stmt = tx
            .prepare_cached(UPSERT_POLLS)
            .await
            .map_err(StoreError::from_pg)?;
        tx.execute(
            &stmt,
            &[
                &p_id,
                &p_question,
                &p_closes,
                &p_created,
                &p_shard,
                &o_poll,
                &o_id,
                &o_label,
                &o_pos,
                &p_min,
                &p_max,
                &p_results,
                &p_change,
                &p_voters,
            ],
        )
        .await
        .map_err(StoreError::from_pg)?;
        inserted += p_id.len() as u64;
    }
    if !c_id.is_empty() {
        let stmt = tx
            .prepare_cached(CLOSE_POLLS)
            .await
            .map_err(StoreError::from_pg)?;
        tx.execute(&stmt, &[&c_id, &c_at, &c_shard])
            .await
            .map_err(StoreError::from_pg)?;
        inserted += c_id.len() as u64;
    }
    if !v_id.is_empty() {
        let lock = tx
            .prepare_cached(LOCK_POLLS)
            .await
            .map_err(StoreError::from_pg)?;
        tx.query_one(&lock, &[&v_poll])
            .await
            .map_err(StoreError::from_pg)?;
        let stmt = tx
            .prepare_cached(UPSERT_VOTES)
            .await
            .map_err(StoreError::from_pg)?;
        let row = tx
            .query_one(&stmt, &[&v_id, &v_poll, &v_user, &v_choices, &v_seq, &v_at])
            .await
            .map_err(StoreError::from_pg)?;
        inserted += u64::try_from(row.get::<_, i64>(0)).unwrap_or(0);
    }
    tx.commit().await.map_err(StoreError::from_pg)?;
    Ok(VotesWritten { inserted })
}
