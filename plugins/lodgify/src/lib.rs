//! The Lodgify plugin: Lodgify's webhooks (public API, `webhooks/v1`) → unified stayhook events.
//!
//! # What it maps
//! - Every body carries `"action": "<event name>"`; the plugin dispatches on it.
//! - `booking_new_any_status`, `booking_new_status_booked` → `reservation-created`;
//!   `booking_change`, `booking_status_change_{booked,tentative,open,declined}` →
//!   `reservation-updated`. Booking bodies are full (`booking`, `guest`, `current_order`, totals):
//!   no API call. Lodgify has no cancellation event: a cancelled booking arrives with status
//!   `Declined`, mapped to `CANCELLED`.
//! - `guest_message_received` → `conversation-updated` built from the webhook alone (the thread
//!   id, the new guest message, the booking id from `inbox_uid` `B<id>`).
//! - `availability_change`, `rate_change` are refused as unsupported: they carry only ids and a
//!   window, and Lodgify documents no example answer of its availability or rates API to map the
//!   days from (see the README's open points).
//!
//! # Verification and registration
//! Lodgify signs every delivery: `ms-signature: sha256=<hex HMAC-SHA256(secret, raw body)>`, with
//! one secret per subscription, returned only by `POST /webhooks/v1/subscribe`. `subscribe`
//! registers one subscription per event (see `registration.rs`).
//!
//! The tables are in the crate README. Mapping code lives in plain modules; this file only
//! declares the plugin and exports it.

pub mod mapping;
pub mod registration;

use stayhook_plugin_sdk::model::*;

/// What the plugin declares: its name, the events it reads, how the host verifies a webhook, and
/// the API it calls (registration only: no normalize step needs it).
pub fn plugin_info() -> PluginInfo {
    PluginInfo {
        // Reconciliation not available: the v2 booking list's object (known only from third
        // parties) is not the webhook body this plugin maps, so a listed booking would not read as
        // its stored state (see the README's "Sync").
        sync_modes: Vec::new(),
        name: "lodgify".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        pms: "Lodgify".into(),
        events: mapping::EVENTS.iter().map(|event| event.to_string()).collect(),
        verification: VerificationScheme::HmacSha256(HmacHeader {
            header: "ms-signature".into(),
            encoding: SignatureEncoding::Hex,
            prefix: Some("sha256=".into()),
        }),
        api: Some(ApiInfo {
            base_url: "https://api.lodgify.com".into(),
            allowed_hosts: Vec::new(),
            auth: AuthScheme::ApiKeyHeader("X-ApiKey".into()),
        }),
    }
}

stayhook_plugin_sdk::plugin! {
    describe: plugin_info,
    normalize: mapping::normalize,
    subscribe: registration::subscribe,
}
