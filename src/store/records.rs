//! What the store keeps, one type per tree value.
//!
//! These types are the on-disk format: JSON for accounts, subscriptions and events (so a field
//! added with `#[serde(default)]` keeps older data loading), postcard for raw webhooks. The sled
//! backend (storage format 3) keeps [`Delivery`], [`Attempt`] and [`InboxOutcome`] inside
//! postcard index records, where fields are read by position: adding a field to one of them needs a
//! new storage format and its migration (`store/sled_backend/migrate.rs`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::{EventResult, EventType};

/// An integration account: one PMS connection of one workspace.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Account {
    /// The account id; part of the listener URL.
    pub id: String,
    /// The workspace the account belongs to.
    pub workspace_id: String,
    /// The plugin name ("hostaway").
    pub pms: String,
    /// A label for operators.
    #[serde(default)]
    pub name: Option<String>,
    /// Secrets for the PMS's API (names depend on the auth scheme). Never shown by the API.
    #[serde(default)]
    pub credentials: BTreeMap<String, String>,
    /// Secrets to verify inbound webhooks (`username`/`password`, or `secret`). Never shown.
    #[serde(default)]
    pub verification: BTreeMap<String, String>,
    /// Non-secret settings handed to the plugin.
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
    /// Replaces the plugin's declared API base URL (a PMS sandbox, or a test server).
    #[serde(default)]
    pub api_base_url: Option<String>,
    /// API requests per second for enrichment; the PMS's default when absent.
    #[serde(default)]
    pub rate_limit_per_second: Option<u32>,
    /// What automatic webhook registration stored (the PMS's webhook ids; a `secret` it handed out
    /// is moved into `verification`).
    #[serde(default)]
    pub registration: BTreeMap<String, String>,
    /// Seconds between reconciliation passes for this account (`0`: off); the daemon's
    /// `reconcile_interval_secs` when absent.
    #[serde(default)]
    pub reconcile_interval_secs: Option<u64>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

/// A webhook subscription (the seed's "webhook"): where unified events of an account go.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subscription {
    /// The subscription id; the envelope's `hook.id`.
    pub id: String,
    /// The account whose events it receives.
    pub account_id: String,
    /// A label.
    pub name: String,
    /// The receiver's URL.
    pub url: String,
    /// Disabled subscriptions receive nothing new.
    pub enabled: bool,
    /// The event types it receives.
    pub event_types: Vec<EventType>,
    /// The Standard Webhooks signing secret, `whsec_` + base64.
    pub secret: String,
    /// Unix ms of the first failed attempt since the last success; none while healthy.
    #[serde(default)]
    pub failing_since_ms: Option<u64>,
    /// Why the daemon disabled the subscription (it failed for too long); cleared when re-enabled.
    #[serde(default)]
    pub disabled_reason: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

/// A webhook as received, before any plugin saw it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InboxEntry {
    /// The account whose listener URL received it.
    pub account_id: String,
    /// Unix time in milliseconds.
    pub received_at_ms: u64,
    /// HTTP method.
    pub method: String,
    /// Raw query string without `?`.
    pub query: String,
    /// Content-Type header.
    pub content_type: Option<String>,
    /// Headers handed to the plugin (lower-case names; secrets withheld).
    pub headers: Vec<(String, String)>,
    /// The raw body.
    pub body: Vec<u8>,
}

/// What became of an inbox entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InboxStatus {
    /// Waiting for (or in) normalization.
    Pending,
    /// Normalized; its events are in the log.
    Done,
    /// The plugin said it does not handle this event.
    Skipped,
    /// Normalization failed; kept for replay.
    Failed,
}

/// The outcome of normalizing one inbox entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InboxOutcome {
    /// Done, skipped or failed.
    pub status: InboxStatus,
    /// The plugin that ran.
    pub plugin: Option<String>,
    /// Its version.
    pub plugin_version: Option<String>,
    /// Failure category (`trap`, `timeout`, `memory_limit`, `invalid_output`, `bad_payload`, ...).
    pub error_kind: Option<String>,
    /// What went wrong or why it was skipped.
    pub error: Option<String>,
    /// Events written to the log.
    pub event_ids: Vec<String>,
    /// Events dropped because they changed nothing.
    pub n_unchanged: u32,
    /// Which normalization of the entry this was: 0 the first, one more per renormalization.
    /// Event ids derive from it (see `normalize::event_id`), so a replay after a crash reproduces
    /// the ids of its generation and a renormalization gets new ones.
    #[serde(default)]
    pub generation: u32,
    /// RFC 3339.
    pub at: String,
}

/// One unified event in the log.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredEvent {
    /// UUID v7; also the `webhook-id` header of every delivery.
    pub id: String,
    /// The seed's `hook.eventType`.
    pub event_type: EventType,
    /// When it was produced; the seed's `hook.timestamp`.
    pub timestamp: String,
    /// The account.
    pub integration_account_id: String,
    /// The account's workspace.
    pub workspace_id: String,
    /// The record's id.
    pub record_id: String,
    /// The seed's `data.record`.
    pub record: Value,
    /// The seed's `data.result`.
    pub result: EventResult,
    /// Why the record is incomplete (FAILURE only).
    #[serde(default)]
    pub failure_reason: Option<String>,
    /// The inbox entry it came from (decimal).
    pub inbox_id: String,
    /// What produced it: a webhook, or a listing of the PMS's records (absent in events stored
    /// before issue 13: webhook).
    #[serde(default, skip_serializing_if = "Origin::is_webhook")]
    pub origin: Origin,
}

/// What produced an event; receivers see it in the `stayhook-origin` delivery header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    /// A webhook of the PMS.
    #[default]
    Webhook,
    /// A reconciliation pass found a change no webhook announced.
    Reconciliation,
    /// An initial sync delivered the record (only with `deliver: true`).
    InitialSync,
}

impl Origin {
    /// Whether it is the default, [`Origin::Webhook`].
    pub fn is_webhook(&self) -> bool {
        *self == Origin::Webhook
    }

    /// The header's and the API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Webhook => "webhook",
            Origin::Reconciliation => "reconciliation",
            Origin::InitialSync => "initial-sync",
        }
    }
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    /// Waiting for its turn or its next attempt.
    Pending,
    /// A 2xx came back.
    Delivered,
    /// Every attempt failed; in the dead letters.
    Dead,
    /// The subscription was deleted or disabled before it could be delivered.
    Cancelled,
}

/// One event on its way to one subscription.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    /// Store-generated id.
    pub id: u64,
    /// The event.
    pub event_id: String,
    /// The subscription.
    pub subscription_id: String,
    /// The subscription's account.
    pub account_id: String,
    /// Ordering lane: deliveries of one record to one subscription go in order.
    pub lane: String,
    /// Attempts made so far.
    pub attempts: u32,
    /// Attempts made before the delivery was last redelivered from the dead letters: the retry
    /// schedule starts again from there.
    #[serde(default)]
    pub retry_base: u32,
    /// Where it stands.
    pub status: DeliveryStatus,
    /// When the next attempt is due (Unix ms); meaningful while pending.
    pub next_attempt_at_ms: u64,
    /// The last attempt's error.
    #[serde(default)]
    pub last_error: Option<String>,
    /// Unix ms.
    pub created_at_ms: u64,
    /// Unix ms.
    pub updated_at_ms: u64,
}

/// One HTTP attempt of a delivery.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    /// The delivery.
    pub delivery_id: String,
    /// The subscription.
    pub subscription_id: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// When it started (RFC 3339).
    pub at: String,
    /// The URL posted to.
    pub url: String,
    /// The receiver's status code, if it answered.
    pub status_code: Option<u16>,
    /// Time to the response or the error.
    pub latency_ms: u64,
    /// Connection error, timeout or refusal.
    pub error: Option<String>,
    /// The start of the response body.
    pub response: Option<String>,
    /// Whether this attempt delivered the event.
    pub success: bool,
}
