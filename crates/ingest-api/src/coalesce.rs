//! Requests that arrive while earlier ones are with Redis, handled in one call.
//!
//! Redis spends most of a small write's cost on the command around it (parsing, dispatch,
//! the reply, a script's setup), not on the write itself, and so does the client; on a
//! loaded server one call for many requests costs about what one request's did. Nothing
//! waits for a batch to fill: a request alone is handled at once, so latency at low load
//! is unchanged. Under load, the requests that queued while up to `in_flight` calls were
//! with Redis go together in the next one.

use std::future::Future;
use std::sync::Arc;
use tokio::sync::{Semaphore, mpsc, oneshot};

/// How requests are gathered.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Requests one call carries at most...
    pub max_requests: usize,
    /// ...and their weight (what one call holds whole in memory, say events).
    pub max_weight: usize,
    /// Calls in flight at once (each a round trip; more requests wait in the channel).
    pub in_flight: usize,
    /// Requests waiting for a call before new ones wait to be accepted.
    pub waiting: usize,
    /// The histogram of requests per call.
    pub metric: &'static str,
}

/// Hands requests of type `T` to a handler in batches, and each its answer `R`.
pub struct Coalescer<T, R> {
    tx: mpsc::Sender<(T, oneshot::Sender<R>)>,
}

impl<T, R> Clone for Coalescer<T, R> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
        }
    }
}

impl<T: Send + 'static, R: Send + 'static> Coalescer<T, R> {
    /// Starts the gathering task on the current runtime. `handle` gets a batch and answers
    /// each of its requests, in order.
    pub fn start<W, H, F>(limits: Limits, weight: W, handle: H) -> Self
    where
        W: Fn(&T) -> usize + Send + 'static,
        H: Fn(Vec<T>) -> F + Send + 'static,
        F: Future<Output = Vec<R>> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(limits.waiting.max(1));
        tokio::spawn(run(rx, limits, weight, handle));
        Self { tx }
    }

    /// The answer to `request`; `None` when the gathering task has stopped (the runtime
    /// is shutting down) or the handler gave no answer for it.
    pub async fn call(&self, request: T) -> Option<R> {
        let (reply, answer) = oneshot::channel();
        self.tx.send((request, reply)).await.ok()?;
        answer.await.ok()
    }
}

async fn run<T, R, W, H, F>(
    mut rx: mpsc::Receiver<(T, oneshot::Sender<R>)>,
    limits: Limits,
    weight: W,
    handle: H,
) where
    T: Send + 'static,
    R: Send + 'static,
    W: Fn(&T) -> usize,
    H: Fn(Vec<T>) -> F,
    F: Future<Output = Vec<R>> + Send + 'static,
{
    let in_flight = Arc::new(Semaphore::new(limits.in_flight.max(1)));
    loop {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = rx.recv().await else {
            return;
        };
        let mut weights = weight(&first.0);
        let mut batch = vec![first];
        while batch.len() < limits.max_requests && weights < limits.max_weight {
            match rx.try_recv() {
                Ok(next) => {
                    weights += weight(&next.0);
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        metrics::histogram!(limits.metric).record(batch.len() as f64);
        let (requests, replies): (Vec<T>, Vec<oneshot::Sender<R>>) = batch.into_iter().unzip();
        let answered = handle(requests);
        tokio::spawn(async move {
            for (reply, answer) in replies.into_iter().zip(answered.await) {
                let _ = reply.send(answer);
            }
            drop(permit);
        });
    }
}
