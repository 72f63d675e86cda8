//! Writing poll definitions, closes and votes to PostgreSQL, one statement per kind, in
//! one transaction. Votes are inserted `ON CONFLICT DO NOTHING` (on the vote id and on
//! `(poll_id, user_id)`), and option counts rise by the votes that statement really
//! inserted, so replays and redeliveries never count twice.

use super::VotesWritten;
use crate::lane::StoreError;
use chrono::{DateTime, Utc};
use domain::deadpool_postgres::Pool;
use domain::poll::PollMessage;
use uuid::Uuid;

const UPSERT_POLLS: &str = r"
WITH polls_in AS (
    INSERT INTO polls AS p (poll_id, question, closes_at, created_at, shard)
    SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[], $5::smallint[])
    ON CONFLICT (poll_id) DO UPDATE
        SET question = EXCLUDED.question, closes_at = EXCLUDED.closes_at, created_at = EXCLUDED.created_at
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

const INSERT_VOTES: &str = r"
WITH ins AS (
    INSERT INTO votes (vote_id, poll_id, option_id, user_id, seq, voted_at)
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::timestamptz[])
    ON CONFLICT DO NOTHING
    RETURNING poll_id, option_id
), counts AS (
    INSERT INTO poll_options AS o (poll_id, option_id, votes)
    SELECT poll_id, option_id, count(*) FROM ins GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (poll_id, option_id) DO UPDATE SET votes = o.votes + EXCLUDED.votes
)
SELECT count(*) FROM ins
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
    let (mut o_poll, mut o_id, mut o_label, mut o_pos) = (vec![], vec![], vec![], vec![]);
    let (mut c_id, mut c_at, mut c_shard) = (vec![], vec![], vec![]);
    let (mut v_id, mut v_poll, mut v_option, mut v_user, mut v_seq, mut v_at) =
        (Vec::<Uuid>::new(), vec![], vec![], vec![], vec![], vec![]);
    for m in messages {
        match m {
            PollMessage::Poll {
                poll_id,
                question,
                options,
                closes_at_ms,
                created_at_ms,
                ..
            } => {
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
                vote_id,
                poll_id,
                option_id,
                user_id,
                seq,
                voted_at_ms,
                ..
            } => {
                v_id.push(*vote_id);
                v_poll.push(poll_id.as_str());
                v_option.push(option_id.as_str());
                v_user.push(user_id.as_str());
                v_seq.push(*seq);
                v_at.push(at(*voted_at_ms));
            }
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
        let stmt = tx
            .prepare_cached(INSERT_VOTES)
            .await
            .map_err(StoreError::from_pg)?;
        let row = tx
            .query_one(&stmt, &[&v_id, &v_poll, &v_option, &v_user, &v_seq, &v_at])
            .await
            .map_err(StoreError::from_pg)?;
        inserted += u64::try_from(row.get::<_, i64>(0)).unwrap_or(0);
    }
    tx.commit().await.map_err(StoreError::from_pg)?;
    Ok(VotesWritten { inserted })
}
