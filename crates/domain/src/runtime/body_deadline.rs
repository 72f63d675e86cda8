//! A deadline on reading a request body. Without one, a client sending a body a byte a
//! second holds a connection (and the handler's buffer) as long as it likes; actix bounds
//! only the request head (`client_request_timeout`). [`http::app`](crate::http::app) wraps
//! every request that carries a body: once `BODY_READ_TIMEOUT_MS` has passed since the
//! head arrived, reading the body fails with a timed-out I/O error, which handlers answer
//! with 408 ([`is_timed_out`]).

use actix_http::HttpMessage;
use actix_http::error::PayloadError;
use actix_web::body::MessageBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use actix_web::middleware::Next;
use actix_web::web::Bytes;
use futures_util::Stream;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

const TIMED_OUT: &str = "the request body did not arrive within BODY_READ_TIMEOUT_MS";

/// Wraps the body of `req` (when it has one) in the deadline `timeout` from now.
///
/// # Errors
/// Passes on the inner service's error.
pub async fn limit_body_read<B: MessageBody>(
    timeout: Duration,
    mut req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<B>, actix_web::Error> {
    if has_body(&req) {
        let inner = req.take_payload();
        let deadline = Instant::now() + timeout;
        req.set_payload(Payload::Stream {
            payload: Box::pin(DeadlinePayload {
                inner,
                deadline,
                timer: None,
                done: false,
            }),
        });
    }
    next.call(req).await
}

/// Whether reading a body failed because its deadline passed.
pub fn is_timed_out(e: &PayloadError) -> bool {
    matches!(e, PayloadError::Io(io) if io.kind() == std::io::ErrorKind::TimedOut && io.to_string() == TIMED_OUT)
}

/// A body is framed by Content-Length or chunked encoding; a request with neither has none
/// (and pays nothing for the deadline).
fn has_body(req: &ServiceRequest) -> bool {
    let headers = req.headers();
    headers.contains_key(TRANSFER_ENCODING)
        || headers
            .get(CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0")
}

struct DeadlinePayload {
    inner: Payload,
    deadline: Instant,
    /// Made only when the body does not arrive in the first poll: most bodies do, and
    /// never touch the timer wheel.
    timer: Option<Pin<Box<Sleep>>>,
    done: bool,
}

impl Stream for DeadlinePayload {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if let Poll::Ready(item) = Pin::new(&mut this.inner).poll_next(cx) {
            this.done = item.is_none();
            return Poll::Ready(item);
        }
        let deadline = this.deadline;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.as_mut().poll(cx).is_ready() {
            this.done = true;
            return Poll::Ready(Some(Err(PayloadError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                TIMED_OUT,
            )))));
        }
        Poll::Pending
    }
}
