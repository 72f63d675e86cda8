//! Signed, expiring stream tokens: how a browser is let into a private stream (a
//! non-public site's live activity, a user's notification feed) without ever holding an
//! API token. `EventSource` cannot send headers, so the token travels as `?token=`.
//!
//! The host application mints tokens with the secret it shares with the gateway
//! (`STREAM_TOKEN_SECRET`):
//!
//! ```text
//! token = "v1." + exp + "." + base64url_nopad(HMAC-SHA256(secret, "v1." + scope + "." + exp))
//! ```
//!
//! where `exp` is the expiry in Unix seconds (decimal) and `scope` names the stream:
//! `site:<site_id>` or `feed:<user_id>`. A token is valid for its scope only, until `exp`.
//! One line of shell mints one:
//!
//! ```text
//! exp=$(( $(date +%s) + 3600 )); printf 'v1.%s.%s' "$exp" "$(printf 'v1.site:example.com.%s' "$exp" \
//!   | openssl dgst -sha256 -hmac "$STREAM_TOKEN_SECRET" -binary | basenc --base64url | tr -d '=')"
//! ```

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is malformed")]
    Malformed,
    #[error("the token has expired")]
    Expired,
    #[error("the token's signature does not match this stream")]
    BadSignature,
    #[error("no stream token secret is configured (STREAM_TOKEN_SECRET), so no token is valid")]
    NoSecret,
}

fn signature(secret: &[u8], scope: &str, exp: i64) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(format!("v1.{scope}.{exp}").as_bytes());
    mac
}

/// The scope of a site's live stream.
pub fn site_scope(site_id: &str) -> String {
    format!("site:{site_id}")
}

/// The scope of a poll's streams with its counts shown (an `after_vote` poll's voter).
pub fn poll_scope(poll_id: &str) -> String {
    format!("poll:{poll_id}")
}

/// The scope of a user's notification feed.
pub fn feed_scope(user_id: &str) -> String {
    format!("feed:{user_id}")
}

/// A token for `scope` valid until `exp` (Unix seconds).
pub fn mint(secret: &[u8], scope: &str, exp: i64) -> String {
    let sig = signature(secret, scope, exp).finalize().into_bytes();
    format!("v1.{exp}.{}", URL_SAFE_NO_PAD.encode(sig))
}

/// Checks `token` for `scope` at `now` (Unix seconds), in constant time over the
/// signature.
///
/// # Errors
/// Why it is refused.
pub fn verify(secret: &[u8], scope: &str, token: &str, now: i64) -> Result<(), TokenError> {
    // An empty key would let anyone sign.
    if secret.is_empty() {
        return Err(TokenError::NoSecret);
    }
    let mut parts = token.splitn(3, '.');
    let (Some("v1"), Some(exp), Some(sig)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(TokenError::Malformed);
    };
    let exp: i64 = exp.parse().map_err(|_| TokenError::Malformed)?;
    let sig = URL_SAFE_NO_PAD
        .decode(sig)
        .map_err(|_| TokenError::Malformed)?;
    signature(secret, scope, exp)
        .verify_slice(&sig)
        .map_err(|_| TokenError::BadSignature)?;
    if exp <= now {
        return Err(TokenError::Expired);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_opens_its_scope_until_it_expires() {
        let t = mint(b"secret", "site:a", 1_000);
        assert_eq!(verify(b"secret", "site:a", &t, 999), Ok(()));
        assert_eq!(
            verify(b"secret", "site:a", &t, 1_000),
            Err(TokenError::Expired)
        );
        assert_eq!(
            verify(b"secret", "site:b", &t, 999),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            verify(b"other", "site:a", &t, 999),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            verify(b"secret", "site:a", "v1.abc.def", 0),
            Err(TokenError::Malformed)
        );
        assert_eq!(
            verify(b"", "site:a", &mint(b"", "site:a", 1_000), 999),
            Err(TokenError::NoSecret)
        );
        // A later expiry cannot be grafted onto a signature.
        let forged = t.replacen("1000", "9999", 1);
        assert_eq!(
            verify(b"secret", "site:a", &forged, 999),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn the_documented_scheme_is_what_is_computed() {
        // HMAC-SHA256("secret", "v1.site:example.com.1767225600"), computed independently
        // with `openssl dgst -sha256 -hmac secret -binary | basenc --base64url`.
        let t = mint(b"secret", "site:example.com", 1_767_225_600);
        assert_eq!(t, format!("v1.1767225600.{}", EXPECTED_SIG));
    }

    const EXPECTED_SIG: &str = "QP5KPN4xgwP5ZwGrd0ZLLk8A_cEoJ6VgAqvSwKyPWR0";
}
