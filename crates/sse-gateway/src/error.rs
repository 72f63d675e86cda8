//! Maps sse-gateway failures to HTTP: `{"error": code}` with the right status.

use actix_web::http::StatusCode;
use actix_web::http::header::RETRY_AFTER;
use actix_web::{HttpResponse, ResponseError};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("poll not found")]
    PollNotFound,
    #[error("poll state is being restored")]
    Restoring,
    #[error("too many streams from this client")]
    TooManyFromClient,
    #[error("the gateway is full")]
    Full,
    #[error("{0}")]
    BadRequest(String),
    #[error("Redis unavailable")]
    Unavailable(#[source] anyhow::Error),
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::PollNotFound => StatusCode::NOT_FOUND,
            Self::TooManyFromClient => StatusCode::TOO_MANY_REQUESTS,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Restoring | Self::Full | Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status_code());
        let code = match self {
            Self::PollNotFound => "poll_not_found",
            Self::Restoring => "restoring",
            Self::TooManyFromClient => "too_many_streams",
            Self::Full => "gateway_full",
            Self::BadRequest(_) => "invalid_request",
            Self::Unavailable(e) => {
                tracing::error!(error = ?e, "Redis unavailable");
                "unavailable"
            }
        };
        if matches!(
            self,
            Self::Restoring | Self::Full | Self::Unavailable(_) | Self::TooManyFromClient
        ) {
            res.insert_header((RETRY_AFTER, "2"));
        }
        match self {
            Self::BadRequest(m) => res.json(serde_json::json!({"error": code, "details": [m]})),
            _ => res.json(serde_json::json!({"error": code})),
        }
    }
}
