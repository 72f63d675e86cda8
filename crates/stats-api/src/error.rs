//! Maps stats-api failures to HTTP. Bodies keep the analytics design's shape
//! `{"success": false, "error": "..."}`.

use actix_web::http::StatusCode;
use actix_web::http::header::{RETRY_AFTER, WWW_AUTHENTICATE};
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("unauthorized")]
    Unauthorized,
    #[error("{0}")]
    NotFound(String),
    #[error("database unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error("unexpected error")]
    Unexpected(#[source] anyhow::Error),
}

impl ApiError {
    /// A failed read: PostgreSQL (or its pool) being unreachable is a 503, anything else a
    /// 500.
    pub fn from_db(e: anyhow::Error) -> Self {
        let unreachable = e.chain().any(|cause| {
            cause
                .downcast_ref::<domain::deadpool_postgres::PoolError>()
                .is_some()
                || cause
                    .downcast_ref::<domain::tokio_postgres::Error>()
                    .is_some_and(|pg| pg.code().is_none() || pg.is_closed())
        });
        if unreachable {
            Self::Unavailable(e)
        } else {
            Self::Unexpected(e)
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status_code());
        let message = match self {
            Self::BadRequest(m) | Self::NotFound(m) => m.clone(),
            Self::Unauthorized => {
                res.insert_header((WWW_AUTHENTICATE, "Bearer"));
                "Unauthorized".into()
            }
            Self::Unavailable(cause) => {
                tracing::error!(error = ?cause, "database unavailable");
                res.insert_header((RETRY_AFTER, "1"));
                "Database unavailable, retry later".into()
            }
            Self::Unexpected(cause) => {
                tracing::error!(error = ?cause, "unexpected error");
                "Internal server error".into()
            }
        };
        res.json(json!({"success": false, "error": message}))
    }
}
