//! Events of concurrent requests pushed to Redis together: one `LPUSH` per shard carries
//! every request that arrived while the previous push was in flight.
//!
//! Redis spends most of an event's cost on the command around it (parsing, dispatch, the
//! reply), not on the list element, and so does the client; on a loaded server a push
//! of many requests' events costs about what one request's did. Nothing waits for a
//! batch to fill: a request alone is pushed at once, as before. Each request's events
//! stay in one `LPUSH`, so a request is still queued whole or not at all, and it is
//! answered only once Redis has acknowledged that push.
//!
//! With `REDIS_WAIT_REPLICAS` set, a push is acknowledged only once that many replicas
//! hold it (`WAIT` after the `LPUSH`): a failover then loses no acknowledged event. One
//! `WAIT` covers every request of the push, so the replication round trip is paid per
//! push, not per request.

use domain::keys::QueueKeys;
use domain::redis::RedisConn;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc, oneshot};

/// Requests one push carries at most...
const MAX_REQUESTS_PER_PUSH: usize = 256;
/// ...and events (a push is one Redis command, held whole in memory).
const MAX_EVENTS_PER_PUSH: usize = 10_000;
/// Pushes in flight at once (each a round trip; more requests wait in the channel).
const PUSHES_IN_FLIGHT: usize = 4;
/// Requests waiting to be pushed before new ones wait to be accepted.
const WAITING: usize = 4_096;

/// Replicas that must hold a push before its requests are answered (0: none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replication {
    pub replicas: u32,
    pub timeout: Duration,
}

/// Why a push was not acknowledged.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PushError {
    /// Redis failed: none of the request's events was queued.
    #[error(transparent)]
    Redis(#[from] domain::redis_client::RedisError),
    /// Queued on the master, but fewer replicas than asked hold it after the timeout: a
    /// failover now could lose it; a retry with the same event ids is stored once.
    #[error("{acked} of {wanted} replicas acknowledged the push in time")]
    NotReplicated { acked: i64, wanted: u32 },
}

type Pushed = Result<u64, PushError>;

struct Request {
    shard: usize,
    items: Vec<Vec<u8>>,
    reply: oneshot::Sender<Pushed>,
}

/// One HTTP worker's pusher (its task runs on that worker's runtime, on its connection).
#[derive(Clone)]
pub struct EventPusher {
    tx: mpsc::Sender<Request>,
    replicas: u32,
}

impl EventPusher {
    /// Starts the pushing task on the current runtime.
    pub fn start(conn: RedisConn, queues: Vec<QueueKeys>, replication: Replication) -> Self {
        let (tx, rx) = mpsc::channel(WAITING);
        tokio::spawn(run(rx, conn, Arc::new(queues), replication));
        Self {
            tx,
            replicas: replication.replicas,
        }
    }

    /// Waits until the replicas asked for hold what this worker's connection wrote so
    /// far (a vote's script, say): one `WAIT` with the next push covers it. At once when
    /// no replicas are asked for.
    ///
    /// # Errors
    /// As [`EventPusher::push`].
    pub async fn replicated(&self) -> Result<(), PushError> {
        if self.replicas == 0 {
            return Ok(());
        }
        self.push(0, Vec::new()).await.map(|_| ())
    }

    /// Pushes `items` onto shard `shard` in one `LPUSH` (with other requests' items);
    /// returns the shard's length after it.
    ///
    /// # Errors
    /// Redis's, when the push failed (none of `items` was queued), or too few replicas
    /// acknowledged it.
    pub async fn push(&self, shard: usize, items: Vec<Vec<u8>>) -> Pushed {
        let (reply, answer) = oneshot::channel();
        let gone = || {
            domain::redis_client::RedisError::from((
                domain::redis_client::ErrorKind::Io,
                "the event pusher stopped",
            ))
        };
        self.tx
            .send(Request {
                shard,
                items,
                reply,
            })
            .await
            .map_err(|_| PushError::Redis(gone()))?;
        answer.await.map_err(|_| PushError::Redis(gone()))?
    }
}

async fn run(
    mut rx: mpsc::Receiver<Request>,
    conn: RedisConn,
    queues: Arc<Vec<QueueKeys>>,
    replication: Replication,
) {
    let in_flight = Arc::new(Semaphore::new(PUSHES_IN_FLIGHT));
    loop {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = rx.recv().await else {
            return;
        };
        let mut events = first.items.len();
        let mut batch = vec![first];
        while batch.len() < MAX_REQUESTS_PER_PUSH && events < MAX_EVENTS_PER_PUSH {
            match rx.try_recv() {
                Ok(next) => {
                    events += next.items.len();
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        metrics::histogram!("ingest_api_requests_per_push").record(batch.len() as f64);
        let (conn, queues) = (conn.clone(), queues.clone());
        tokio::spawn(async move {
            push_batch(conn, &queues, batch, replication).await;
            drop(permit);
        });
    }
}

/// One `LPUSH` per shard the batch touches, answered to each of its requests.
async fn push_batch(
    conn: RedisConn,
    queues: &[QueueKeys],
    batch: Vec<Request>,
    replication: Replication,
) {
    let mut by_shard: Vec<Vec<Request>> = (0..queues.len()).map(|_| Vec::new()).collect();
    for request in batch {
        let shard = request.shard.min(queues.len() - 1);
        by_shard[shard].push(request);
    }
    let pushes = by_shard
        .into_iter()
        .enumerate()
        .filter(|(_, requests)| !requests.is_empty())
        .map(|(shard, requests)| {
            let mut conn = conn.clone();
            let keys = &queues[shard];
            async move {
                let items: Vec<&[u8]> = requests
                    .iter()
                    .flat_map(|r| r.items.iter().map(Vec::as_slice))
                    .collect();
                let pushed = push_and_wait(&mut conn, keys, &items, replication).await;
                for request in requests {
                    let _ = request.reply.send(pushed.clone());
                }
            }
        });
    futures_util::future::join_all(pushes).await;
}

/// One `LPUSH`, then (when replicas are asked for) a `WAIT` on the same connection, which
/// covers it.
async fn push_and_wait(
    conn: &mut RedisConn,
    keys: &QueueKeys,
    items: &[&[u8]],
    replication: Replication,
) -> Pushed {
    // A push of no events is a request to wait for the replicas only.
    let len = if items.is_empty() {
        0
    } else {
        domain::queue::push(conn, keys, items).await?
    };
    if replication.replicas == 0 {
        return Ok(len);
    }
    let timeout_ms = u64::try_from(replication.timeout.as_millis()).unwrap_or(u64::MAX);
    let acked: i64 = domain::redis_client::cmd("WAIT")
        .arg(replication.replicas)
        .arg(timeout_ms.max(1))
        .query_async(conn)
        .await?;
    if acked < i64::from(replication.replicas) {
        metrics::counter!("ingest_api_pushes_not_replicated_total").increment(1);
        return Err(PushError::NotReplicated {
            acked,
            wanted: replication.replicas,
        });
    }
    Ok(len)
}
