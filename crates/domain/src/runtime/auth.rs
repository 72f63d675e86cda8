//! Bearer-token checks (poll administration, stats), compared in constant time.

use crate::config::Secret;
use subtle::ConstantTimeEq;

/// The token of an `Authorization: Bearer <token>` header value.
pub fn bearer_token(authorization: Option<&str>) -> Option<&str> {
    let value = authorization?;
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
}

/// Whether an `Authorization` header value carries `Bearer <expected>`.
///
/// The comparison takes the same time wherever the first difference is, so the token
/// cannot be guessed byte by byte from response times. An empty `expected` matches
/// nothing (a token that is not configured never authorises).
pub fn bearer_matches(authorization: Option<&str>, expected: &Secret) -> bool {
    if expected.is_empty() {
        return false;
    }
    let Some(token) = bearer_token(authorization) else {
        return false;
    };
    token.as_bytes().ct_eq(expected.expose().as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_token_matches() {
        let t = Secret::new("s3cret");
        assert!(bearer_matches(Some("Bearer s3cret"), &t));
        assert!(bearer_matches(Some("bearer s3cret"), &t));
        assert!(!bearer_matches(Some("Bearer s3cre"), &t));
        assert!(!bearer_matches(Some("Bearer s3cret2"), &t));
        assert!(!bearer_matches(Some("Basic s3cret"), &t));
        assert!(!bearer_matches(None, &t));
    }

    #[test]
    fn an_unset_token_authorises_nobody() {
        assert!(!bearer_matches(Some("Bearer "), &Secret::default()));
    }
}
