//! Email deliveries over SMTP (`SMTP_URL`), with lettre: a text part and, when the
//! notification has one, an HTML part. The `Message-ID` is derived from the delivery id,
//! so a message sent again after an interrupted attempt is recognisably the same. A
//! permanent SMTP refusal (5xx) gives the delivery up; anything else is retried.

use super::records::Loaded;
use super::{Sender, Verdict};
use domain::notify::ChannelKind;
use domain::notify::delivery::Delivery;
use futures_util::future::BoxFuture;
use lettre::message::{Mailbox, MultiPart, SinglePart, header::ContentType};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use std::time::Duration;

/// The email channel.
pub struct EmailSender {
    transport: Option<AsyncSmtpTransport<Tokio1Executor>>,
    from: Option<Mailbox>,
}

impl EmailSender {
    /// Without `smtp_url`, every attempt fails (and is retried: the operator may set it).
    ///
    /// # Errors
    /// When `smtp_url` is not an SMTP URL (checked at start).
    pub fn new(smtp_url: &str, from: &str, timeout: Duration) -> anyhow::Result<Self> {
        let transport = if smtp_url.is_empty() {
            None
        } else {
            Some(
                AsyncSmtpTransport::<Tokio1Executor>::from_url(smtp_url)?
                    .timeout(Some(timeout))
                    .build(),
            )
        };
        Ok(Self {
            transport,
            from: from.parse().ok(),
        })
    }

    fn message(&self, delivery: &Delivery, notification: &Loaded) -> Result<Message, String> {
        let to: Mailbox = delivery
            .target
            .parse()
            .map_err(|e| format!("{:?} is not an email address: {e}", delivery.target))?;
        let from = self.from.clone().ok_or("EMAIL_FROM is not a mailbox")?;
        let record = &notification.record;
        let builder = Message::builder()
            .from(from)
            .to(to)
            .subject(record.title.clone())
            .message_id(Some(format!("<{}@tally>", delivery.delivery_id)));
        let text = SinglePart::builder()
            .header(ContentType::TEXT_PLAIN)
            .body(record.body.clone());
        let built = match &record.html {
            Some(html) => builder.multipart(
                MultiPart::alternative().singlepart(text).singlepart(
                    SinglePart::builder()
                        .header(ContentType::TEXT_HTML)
                        .body(html.clone()),
                ),
            ),
            None => builder.singlepart(text),
        };
        built.map_err(|e| format!("the message could not be built: {e}"))
    }
}

impl Sender for EmailSender {
    const CHANNEL: ChannelKind = ChannelKind::Email;

    fn attempt<'a>(
        &'a self,
        delivery: &'a Delivery,
        notification: &'a Loaded,
    ) -> BoxFuture<'a, Verdict> {
        Box::pin(async move {
            let Some(transport) = &self.transport else {
                return Verdict::Failed {
                    status: None,
                    error: "no SMTP server is configured (SMTP_URL)".into(),
                };
            };
            let message = match self.message(delivery, notification) {
                Ok(m) => m,
                Err(error) => {
                    return Verdict::Refused {
                        status: None,
                        error,
                    };
                }
            };
            match transport.send(message).await {
                Ok(response) => Verdict::Delivered {
                    status: Some(response.code().into()),
                },
                Err(e) if e.is_permanent() => Verdict::Refused {
                    status: e.status().map(Into::into),
                    error: format!("the SMTP server refused the message: {e}"),
                },
                Err(e) => Verdict::Failed {
                    status: e.status().map(Into::into),
                    error: format!("SMTP: {e}"),
                },
            }
        })
    }
}
