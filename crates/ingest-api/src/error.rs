//! Maps every failure of ingest-api to an HTTP answer. Client mistakes get a 4xx with a
//! helpful body; a Redis outage gets a quick 503 with `Retry-After`; anything unexpected
//! gets a 500 that reveals nothing (the cause goes to the log).

use actix_web::http::StatusCode;
use actix_web::http::header::RETRY_AFTER;
use actix_web::{HttpResponse, ResponseError};
use domain::event::EventBodyError;
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("validation failed")]
    Validation(Vec<String>),
    #[error("invalid JSON: {0}")]
    MalformedJson(String),
    #[error("unsupported content type")]
    UnsupportedMediaType,
    #[error("body over {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("rate limited")]
    RateLimited { retry_after_s: u64 },
    #[error("queue over its high-water mark")]
    Overloaded { retry_after_s: u64 },
    #[error("queue unavailable")]
    QueueUnavailable(#[source] anyhow::Error),
    #[error("unexpected error")]
    Unexpected(#[source] anyhow::Error),
    /// A poll or vote answer: `{"error": code}` (plus `details` when given).
    #[error("{code}")]
    Poll {
        status: StatusCode,
        code: &'static str,
        details: Vec<String>,
        retry_after_s: Option<u64>,
    },
    #[error("unauthorized")]
    Unauthorized,
}

impl ApiError {
    /// A poll error with no details.
    pub fn poll(status: StatusCode, code: &'static str) -> Self {
        Self::Poll {
            status,
            code,
            details: Vec::new(),
            retry_after_s: None,
        }
    }

    /// 400 for a poll or vote body, listing every problem.
    pub fn invalid_body(details: Vec<String>) -> Self {
        Self::Poll {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_body",
            details,
            retry_after_s: None,
        }
    }

    /// 503 while the worker restores polls Redis lost.
    pub fn restoring() -> Self {
        Self::Poll {
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

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Validation(_) | Self::MalformedJson(_) => StatusCode::BAD_REQUEST,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Overloaded { .. } | Self::QueueUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Poll { status, .. } => *status,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        let mut res = HttpResponse::build(status);
        let body = match self {
            Self::Validation(details) => {
                json!({"success": false, "error": "Validation failed", "details": details})
            }
            Self::MalformedJson(msg) => {
                json!({"success": false, "error": "Invalid JSON body", "details": [msg]})
            }
            Self::UnsupportedMediaType => json!({
                "success": false,
                "error": "Unsupported Media Type",
                "details": ["Content-Type must be application/json"]
            }),
            Self::PayloadTooLarge { limit } => json!({
                "success": false,
                "error": "Payload Too Large",
                "details": [format!("the request body must be at most {limit} bytes")]
            }),
            Self::RateLimited { retry_after_s } => {
                res.insert_header((RETRY_AFTER, retry_after_s.to_string()));
                json!({"success": false, "error": "Too Many Requests"})
            }
            Self::Overloaded { retry_after_s } => {
                res.insert_header((RETRY_AFTER, retry_after_s.to_string()));
                json!({"success": false, "error": "Service overloaded, retry later"})
            }
            Self::QueueUnavailable(cause) => {
                tracing::error!(error = ?cause, "queue unavailable");
                res.insert_header((RETRY_AFTER, "1"));
                json!({"success": false, "error": "Queue unavailable, retry later"})
            }
            Self::Unexpected(cause) => {
                tracing::error!(error = ?cause, "unexpected error");
                json!({"success": false, "error": "Internal server error"})
            }
            Self::Poll {
                code,
                details,
                retry_after_s,
                ..
            } => {
                if let Some(s) = retry_after_s {
                    res.insert_header((RETRY_AFTER, s.to_string()));
                }
                if details.is_empty() {
                    json!({"error": code})
                } else {
                    json!({"error": code, "details": details})
                }
            }
            Self::Unauthorized => {
                res.insert_header((actix_web::http::header::WWW_AUTHENTICATE, "Bearer"));
                json!({"error": "unauthorized"})
            }
        };
        res.json(body)
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
            (ApiError::UnsupportedMediaType, 415),
            (ApiError::PayloadTooLarge { limit: 1 }, 413),
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
