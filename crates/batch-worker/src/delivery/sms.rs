//! SMS deliveries through an HTTP provider in the shape of Twilio's Messages API:
//! `POST {SMS_API_URL}/2010-04-01/Accounts/{SMS_ACCOUNT_SID}/Messages.json`, form fields
//! `To`, `From`, `Body`, HTTP Basic auth with the account SID and auth token. A 2xx
//! delivers; 429 and 5xx are retried; another 4xx (an invalid number) gives it up.

use super::records::Loaded;
use super::{Sender, Verdict};
use domain::notify::ChannelKind;
use domain::notify::delivery::Delivery;
use futures_util::future::BoxFuture;
use std::time::Duration;

/// Longest SMS body sent (Twilio's limit).
const MAX_BODY_CHARS: usize = 1_600;

/// The SMS channel.
pub struct SmsSender {
    client: reqwest::Client,
    messages_url: Option<String>,
    account_sid: String,
    auth_token: String,
    from: String,
}

impl SmsSender {
    /// Without `api_url`, every attempt fails (and is retried).
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(
        api_url: &str,
        account_sid: &str,
        auth_token: &str,
        from: &str,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let messages_url = (!api_url.is_empty()).then(|| {
            format!(
                "{}/2010-04-01/Accounts/{}/Messages.json",
                api_url.trim_end_matches('/'),
                percent_encode(account_sid)
            )
        });
        Ok(Self {
            client: reqwest::Client::builder()
                .timeout(timeout)
                .redirect(reqwest::redirect::Policy::none())
                .build()?,
            messages_url,
            account_sid: account_sid.to_string(),
            auth_token: auth_token.to_string(),
            from: from.to_string(),
        })
    }
}

fn percent_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The text of a notification as an SMS: its title and body.
pub fn sms_text(notification: &Loaded) -> String {
    let r = &notification.record;
    let text = format!("{}: {}", r.title, r.body);
    text.chars().take(MAX_BODY_CHARS).collect()
}

impl Sender for SmsSender {
    const CHANNEL: ChannelKind = ChannelKind::Sms;

    fn attempt<'a>(
        &'a self,
        delivery: &'a Delivery,
        notification: &'a Loaded,
    ) -> BoxFuture<'a, Verdict> {
        Box::pin(async move {
            let Some(url) = &self.messages_url else {
                return Verdict::Failed {
                    status: None,
                    error: "no SMS provider is configured (SMS_API_URL)".into(),
                };
            };
            let form: String = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("To", &delivery.target)
                .append_pair("From", &self.from)
                .append_pair("Body", &sms_text(notification))
                .finish();
            let sent = self
                .client
                .post(url)
                .basic_auth(&self.account_sid, Some(&self.auth_token))
                .header("content-type", "application/x-www-form-urlencoded")
                .header("idempotency-key", &delivery.delivery_id)
                .body(form)
                .send()
                .await;
            let response = match sent {
                Ok(r) => r,
                Err(e) => {
                    return Verdict::Failed {
                        status: None,
                        error: format!("the SMS provider could not be reached: {e}"),
                    };
                }
            };
            let code = response.status().as_u16();
            let text = response.text().await.unwrap_or_default();
            let error = format!(
                "HTTP {code}: {}",
                text.chars().take(256).collect::<String>()
            );
            match code {
                200..=299 => Verdict::Delivered { status: Some(code) },
                429 | 500..=599 => Verdict::Failed {
                    status: Some(code),
                    error,
                },
                _ => Verdict::Refused {
                    status: Some(code),
                    error,
                },
            }
        })
    }
}
