//! The one error answer of every HTTP service (feature `actix`): each service's `ApiError`
//! maps its variants onto a [`Problem`], which renders the body, status and headers.
//!
//! Two body shapes exist, chosen per error, because clients of the designs Tally grew from
//! read them:
//!
//! - [`Problem::code`]: `{"error": "<stable_code>", "details"?: [...]}`, Tally's own routes
//!   (polls, votes, streams, administration).
//! - [`Problem::message`]: `{"success": false, "error": "<message>", "details"?: [...]}`, the
//!   analytics design's shape, kept word for word on the event and stats routes and their
//!   compatibility aliases.

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use actix_web::http::header::{RETRY_AFTER, WWW_AUTHENTICATE};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Body {
    Code(&'static str),
    Message(String),
}

/// An error answer: status, body and headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    status: StatusCode,
    body: Body,
    details: Vec<String>,
    retry_after_s: Option<u64>,
    bearer_challenge: bool,
}

impl Problem {
    /// `{"error": code}`: a stable machine-readable code.
    pub fn code(status: StatusCode, code: &'static str) -> Self {
        Self::new(status, Body::Code(code))
    }

    /// `{"success": false, "error": message}`: the analytics design's shape.
    pub fn message(status: StatusCode, message: impl Into<String>) -> Self {
        Self::new(status, Body::Message(message.into()))
    }

    fn new(status: StatusCode, body: Body) -> Self {
        Self {
            status,
            body,
            details: Vec::new(),
            retry_after_s: None,
            bearer_challenge: false,
        }
    }

    /// Every problem found, for the client to fix at once (`details`; left out when empty).
    #[must_use]
    pub fn details(mut self, details: Vec<String>) -> Self {
        self.details = details;
        self
    }

    /// `Retry-After` in seconds.
    #[must_use]
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after_s = Some(seconds);
        self
    }

    /// `WWW-Authenticate: Bearer` (a 401 for a missing or wrong token).
    #[must_use]
    pub fn bearer_challenge(mut self) -> Self {
        self.bearer_challenge = true;
        self
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        let mut body = match &self.body {
            Body::Code(code) => serde_json::json!({ "error": code }),
            Body::Message(message) => serde_json::json!({ "success": false, "error": message }),
        };
        if !self.details.is_empty() {
            body["details"] = self.details.clone().into();
        }
        body
    }

    /// The HTTP answer.
    pub fn response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status);
        if let Some(s) = self.retry_after_s {
            res.insert_header((RETRY_AFTER, s.to_string()));
        }
        if self.bearer_challenge {
            res.insert_header((WWW_AUTHENTICATE, "Bearer"));
        }
        if self.status == StatusCode::REQUEST_TIMEOUT {
            // The rest of the body may still be on its way: the connection cannot be reused.
            res.force_close();
        }
        res.json(self.body())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_shapes_render_with_details_only_when_given() {
        let p = Problem::code(StatusCode::NOT_FOUND, "poll_not_found");
        assert_eq!(p.body(), serde_json::json!({"error": "poll_not_found"}));
        let p = Problem::message(StatusCode::BAD_REQUEST, "Validation failed")
            .details(vec!["site_id is required and must be a string".into()]);
        assert_eq!(
            p.body(),
            serde_json::json!({"success": false, "error": "Validation failed",
                "details": ["site_id is required and must be a string"]})
        );
    }

    #[test]
    fn headers_follow_the_problem() {
        let res = Problem::code(StatusCode::SERVICE_UNAVAILABLE, "restoring")
            .retry_after(2)
            .response();
        assert_eq!(
            res.headers().get(RETRY_AFTER).map(|v| v.as_bytes()),
            Some(&b"2"[..])
        );
        let res = Problem::code(StatusCode::UNAUTHORIZED, "unauthorized")
            .bearer_challenge()
            .response();
        assert!(res.headers().contains_key(WWW_AUTHENTICATE));
    }
}
