//! Notifications: accepted in one Redis step, fanned out by the batch-worker to in-app
//! feeds, webhooks, email and SMS, retried on a schedule, dead-lettered when every
//! attempt failed, and recorded in PostgreSQL.
//!
//! - [`model`], [`request`]: what a notification is, and the request that makes one.
//! - [`accept`]: the atomic step that records and queues it (`notify_accept.lua`).
//! - [`feed`]: users' feeds in Redis, read marks, what live streams read and publish.
//! - [`delivery`], [`delivery_queue`]: deliveries on the webhook, email and SMS
//!   channels, their reliable queues, retry schedule and attempt records.
//! - [`webhook`], [`endpoints`]: Standard Webhooks signatures, and the endpoints
//!   registry.
//! - [`topics`]: topic subscriptions.

pub mod accept;
pub mod delivery;
pub mod delivery_queue;
pub mod endpoints;
pub mod feed;
pub mod model;
pub mod rate;
pub mod request;
pub mod topics;
pub mod webhook;

pub use model::{
    ChannelKind, DeliveryState, Notification, NotificationRecord, Priority, Recipient,
};
