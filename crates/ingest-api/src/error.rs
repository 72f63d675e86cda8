//! Maps every failure of ingest-api to an HTTP answer. Client mistakes get a 4xx with a
//! helpful body; a Redis outage gets a quick 503 with `Retry-After`; anything unexpected
//! gets a 500 that reveals nothing (the cause goes to the log).

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use domain::event::EventBodyError;
use domain::problem::Problem;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("validation failed")]
    Validation(Vec<String>),
    #[error("invalid JSON: {0}")]
    MalformedJson(String),
    #[error("unsupported content type")]
    UnsupportedMediaType(&'static str),
    #[error("body over {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("body not received in time")]
    BodyTimeout,
    #[error("rate limited")]
    RateLimited { retry_after_s: u64 },
    #[error("queue over its high-water mark")]
    Overloaded { retry_after_s: u64 },
    #[error("queue unavailable")]
    QueueUnavailable(#[source] anyhow::Error),
    #[error("unexpected error")]
    Unexpected(#[source] anyhow::Error),
    /// A poll, vote or site answer: `{"error": code}` (plus `details` when given).
    #[error("{code}")]
    Coded {
        status: StatusCode,
        code: &'static str,
        details: Vec<String>,
        retry_after_s: Option<u64>,
    },
    #[error("unauthorized")]
    Unauthorized,
}

impl From<crate::pusher::PushError> for ApiError {
    fn from(e: crate::pusher::PushError) -> Self {
        match e {
            crate::pusher::PushError::Redis(e) => {
                Self::QueueUnavailable(anyhow::Error::new(e).context("writing to the queue"))
            }
            e @ crate::pusher::PushError::NotReplicated { .. } => Self::Coded {
                status: StatusCode::SERVICE_UNAVAILABLE,
                code: "not_replicated",
                details: vec![format!(
                    "{e}: it is queued but not yet safe from a failover; a retry with the same event_id values (or the vote's Idempotency-Key) is stored once"
                )],
                retry_after_s: Some(1),
            },
        }
    }
}

impl ApiError {
    /// A poll error with no details.
    pub fn poll(status: StatusCode, code: &'static str) -> Self {
        Self::Coded {
            status,
            code,
            details: Vec::new(),
            retry_after_s: None,
        }
    }

    /// 400 for a poll or vote body, listing every problem.
    pub fn invalid_body(details: Vec<String>) -> Self {
        Self::Coded {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_body",
            details,
            retry_after_s: None,
        }
    }

    /// A coded answer with details.
    pub fn coded(status: StatusCode, code: &'static str, details: Vec<String>) -> Self {
        Self::Coded {
            status,
            code,
            details,
            retry_after_s: None,
        }
    }

    /// 503 while the worker restores the site registry Redis lost.
    pub fn sites_restoring() -> Self {
        Self::registry_restoring("the site registry")
    }

    /// 503 while the worker restores `what` (a registry Redis lost).
    pub fn registry_restoring(what: &str) -> Self {
        Self::Coded {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "restoring",
            details: vec![format!("{what} is being restored; retry shortly")],
            retry_after_s: Some(1),
        }
    }

    /// 503 while the worker restores polls Redis lost.
    pub fn restoring() -> Self {
        Self::Coded {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "restoring",
            details: vec!["poll state is being restored; retry shortly".into()],
            retry_after_s: Some(1),
        }
    }
}

impl From<EventBodyError> for ApiError {
    fn from(e: EventBodyError) -> Self {
        match e {
            EventBodyError::Malformed(msg) => Self::MalformedJson(msg),
            EventBodyError::Invalid(details) => Self::Validation(details),
        }
    }
}

impl ApiError {
    /// The answer to the client (see [`domain::problem`] for the two body shapes).
    pub fn problem(&self) -> Problem {
        let analytics = Problem::message;
        match self {
            Self::Validation(details) => {
                analytics(StatusCode::BAD_REQUEST, "Validation failed").details(details.clone())
            }
            Self::MalformedJson(msg) => {
                analytics(StatusCode::BAD_REQUEST, "Invalid JSON body").details(vec![msg.clone()])
            }
            Self::UnsupportedMediaType(why) => {
                analytics(StatusCode::UNSUPPORTED_MEDIA_TYPE, "Unsupported Media Type")
                    .details(vec![(*why).to_string()])
            }
            Self::PayloadTooLarge { limit } => {
                analytics(StatusCode::PAYLOAD_TOO_LARGE, "Payload Too Large").details(vec![
                    format!("the request body must be at most {limit} bytes"),
                ])
            }
            Self::BodyTimeout => {
                analytics(StatusCode::REQUEST_TIMEOUT, "Request Timeout").details(vec![
                    "the request body did not arrive within BODY_READ_TIMEOUT_MS".into(),
                ])
            }
            Self::RateLimited { retry_after_s } => {
                analytics(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests")
                    .retry_after(*retry_after_s)
            }
            Self::Overloaded { retry_after_s } => analytics(
                StatusCode::SERVICE_UNAVAILABLE,
                "Service overloaded, retry later",
            )
            .retry_after(*retry_after_s),
            Self::QueueUnavailable(_) => analytics(
                StatusCode::SERVICE_UNAVAILABLE,
                "Queue unavailable, retry later",
            )
            .retry_after(1),
            Self::Unexpected(_) => {
                analytics(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error")
            }
            Self::Coded {
                status,
                code,
                details,
                retry_after_s,
            } => {
                let p = Problem::code(*status, code).details(details.clone());
                match retry_after_s {
                    Some(s) => p.retry_after(*s),
                    None => p,
                }
            }
            Self::Unauthorized => {
                Problem::code(StatusCode::UNAUTHORIZED, "unauthorized").bearer_challenge()
            }
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.problem().status()
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            Self::QueueUnavailable(cause) => {
                tracing::error!(error = format!("{cause:#}"), "queue unavailable")
            }
            Self::Unexpected(cause) => {
                tracing::error!(error = format!("{cause:#}"), "unexpected error")
            }
            _ => {}
        }
        self.problem().response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_spec() {
        let cases = [
            (ApiError::Validation(vec![]), 400),
            (ApiError::MalformedJson(String::new()), 400),
            (ApiError::UnsupportedMediaType(""), 415),
            (ApiError::PayloadTooLarge { limit: 1 }, 413),
            (ApiError::BodyTimeout, 408),
            (ApiError::RateLimited { retry_after_s: 1 }, 429),
            (ApiError::Overloaded { retry_after_s: 1 }, 503),
            (ApiError::QueueUnavailable(anyhow::anyhow!("x")), 503),
            (ApiError::Unexpected(anyhow::anyhow!("x")), 500),
        ];
        for (err, status) in cases {
            assert_eq!(err.status_code().as_u16(), status, "{err:?}");
        }
    }

    #[test]
    fn shedding_answers_carry_retry_after() {
        use actix_web::http::header::RETRY_AFTER;
        let res = ApiError::Overloaded { retry_after_s: 7 }.error_response();
        assert_eq!(
            res.headers().get(RETRY_AFTER).and_then(|v| v.to_str().ok()),
            Some("7")
        );
    }

    #[test]
    fn unexpected_errors_reveal_nothing() {
        let res = ApiError::Unexpected(anyhow::anyhow!("password=hunter2")).error_response();
        let body = actix_web::body::to_bytes(res.into_body());
        let bytes = futures_util::FutureExt::now_or_never(body)
            .and_then(Result::ok)
            .unwrap_or_default();
        assert!(!String::from_utf8_lossy(&bytes).contains("hunter2"));
    }
}
