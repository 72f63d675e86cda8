//! Maps sse-gateway failures to HTTP: `{"error": code}` with the right status.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use domain::problem::Problem;

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
    #[error("a stream token is required")]
    TokenRequired,
    #[error("the stream token is refused: {0}")]
    TokenRefused(domain::stream_token::TokenError),
}

impl ApiError {
    /// The answer to the client: `{"error": code}` (see [`domain::problem`]).
    pub fn problem(&self) -> Problem {
        let unavailable =
            |code| Problem::code(StatusCode::SERVICE_UNAVAILABLE, code).retry_after(2);
        match self {
            Self::PollNotFound => Problem::code(StatusCode::NOT_FOUND, "poll_not_found"),
            Self::Restoring => unavailable("restoring"),
            Self::TooManyFromClient => {
                Problem::code(StatusCode::TOO_MANY_REQUESTS, "too_many_streams").retry_after(2)
            }
            Self::Full => unavailable("gateway_full"),
            Self::BadRequest(m) => {
                Problem::code(StatusCode::BAD_REQUEST, "invalid_request").details(vec![m.clone()])
            }
            Self::Unavailable(_) => unavailable("unavailable"),
            Self::TokenRequired => Problem::code(StatusCode::UNAUTHORIZED, "token_required")
                .details(vec![
                    "this stream is private (a private site, a user's feed): open it with ?token= (a signed stream token)"
                        .into(),
                ]),
            Self::TokenRefused(why) => {
                Problem::code(StatusCode::FORBIDDEN, "token_refused").details(vec![why.to_string()])
            }
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.problem().status()
    }

    fn error_response(&self) -> HttpResponse {
        if let Self::Unavailable(e) = self {
            tracing::error!(error = format!("{e:#}"), "Redis unavailable");
        }
        self.problem().response()
    }
}
