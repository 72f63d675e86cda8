//! Maps stats-api failures to HTTP. Bodies keep the analytics design's shape
//! `{"success": false, "error": "..."}`.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use domain::problem::Problem;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("unauthorized")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// The resource is not in a state that has what was asked (an unfinished job's file).
    #[error("{0}")]
    Conflict(String),
    #[error("body over {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("body not received in time")]
    BodyTimeout,
    #[error("unsupported content type")]
    UnsupportedMediaType,
    /// Well-formed, but not answerable (raw events a filter needs have expired).
    #[error("{0}")]
    Unprocessable(String),
    #[error("database unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error("unexpected error")]
    Unexpected(#[source] anyhow::Error),
}

impl ApiError {
    /// The answer to a JSON body that could not be read or parsed.
    pub fn from_json_body(err: &actix_web::error::JsonPayloadError, limit: usize) -> Self {
        use actix_web::error::JsonPayloadError;
        match err {
            JsonPayloadError::Overflow { .. } | JsonPayloadError::OverflowKnownLength { .. } => {
                Self::PayloadTooLarge { limit }
            }
            JsonPayloadError::ContentType => Self::UnsupportedMediaType,
            JsonPayloadError::Payload(e) if domain::body_deadline::is_timed_out(e) => {
                Self::BodyTimeout
            }
            other => Self::BadRequest(format!("invalid JSON body: {other}")),
        }
    }

    /// A failed read: PostgreSQL (or its pool) being unreachable, or a statement cancelled
    /// by `statement_timeout`, is a 503; anything else a 500.
    pub fn from_db(e: anyhow::Error) -> Self {
        let unreachable = e.chain().any(|cause| {
            cause
                .downcast_ref::<domain::deadpool_postgres::PoolError>()
                .is_some()
                || cause
                    .downcast_ref::<domain::tokio_postgres::Error>()
                    .is_some_and(|pg| {
                        pg.code().is_none()
                            || pg.is_closed()
                            // statement_timeout: the database is too busy (or locked) now.
                            || pg.code() == Some(&domain::tokio_postgres::error::SqlState::QUERY_CANCELED)
                    })
        });
        if unreachable {
            Self::Unavailable(e)
        } else {
            Self::Unexpected(e)
        }
    }
}

impl ApiError {
    /// The answer to the client, in the analytics design's shape (see [`domain::problem`]).
    pub fn problem(&self) -> Problem {
        match self {
            Self::BadRequest(m) => Problem::message(StatusCode::BAD_REQUEST, m.clone()),
            Self::NotFound(m) => Problem::message(StatusCode::NOT_FOUND, m.clone()),
            Self::Conflict(m) => Problem::message(StatusCode::CONFLICT, m.clone()),
            Self::PayloadTooLarge { limit } => {
                Problem::message(StatusCode::PAYLOAD_TOO_LARGE, "Payload Too Large").details(vec![
                    format!("the request body must be at most {limit} bytes"),
                ])
            }
            Self::UnsupportedMediaType => {
                Problem::message(StatusCode::UNSUPPORTED_MEDIA_TYPE, "Unsupported Media Type")
                    .details(vec!["Content-Type must be application/json".into()])
            }
            Self::BodyTimeout => Problem::message(StatusCode::REQUEST_TIMEOUT, "Request Timeout")
                .details(vec![
                    "the request body did not arrive within BODY_READ_TIMEOUT_MS".into(),
                ]),
            Self::Unprocessable(m) => Problem::message(StatusCode::UNPROCESSABLE_ENTITY, m.clone()),
            Self::Unauthorized => {
                Problem::message(StatusCode::UNAUTHORIZED, "Unauthorized").bearer_challenge()
            }
            Self::Forbidden(m) => Problem::message(StatusCode::FORBIDDEN, m.clone()),
            Self::Unavailable(_) => Problem::message(
                StatusCode::SERVICE_UNAVAILABLE,
                "Database unavailable, retry later",
            )
            .retry_after(1),
            Self::Unexpected(_) => {
                Problem::message(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error")
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
            Self::Unavailable(cause) => {
                tracing::error!(error = format!("{cause:#}"), "database unavailable")
            }
            Self::Unexpected(cause) => {
                tracing::error!(error = format!("{cause:#}"), "unexpected error")
            }
            _ => {}
        }
        self.problem().response()
    }
}
