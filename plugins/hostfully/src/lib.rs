//! The Hostfully plugin: Hostfully's thin webhook callbacks → unified reservation and conversation
//! events, completed through the Hostfully API.
//!
//! # What it maps
//! - Callbacks carry only ids (`agency_uid`, `event_type`, `lead_uid`, `property_uid`), as JSON
//!   (POST_JSON) or form-encoded (POST_FORM); both are read.
//! - `NEW_BOOKING`, `NEW_BOOKING_REQUEST`, `NEW_INQUIRY`, `NEW_HOLD` → `reservation-created`;
//!   `BOOKING_UPDATED`, `UNIT_CHANGED`, `BOOKING_CANCELLED` → `reservation-updated` (a cancellation
//!   is an update whose lead status is `CANCELLED*`). The lead is fetched with
//!   `GET /api/v3.2/leads?leadUids=<uid>`.
//! - `NEW_INBOX_MESSAGE`, `INBOX_THREAD_UPDATED` with a `lead_uid` → `conversation-updated`: the
//!   lead and its messages (`GET /api/v3.2/messages?leadUid=`) are fetched in one round.
//! - When the API fails for good, the record is reported incomplete (result FAILURE, its id).
//! - Reconciliation (`sync`, stay-date-window): the agency's leads whose stay overlaps the window,
//!   from the same list endpoint, mapped by the same code (`listing.rs`).
//!
//! # What it deliberately does not
//! - Message callbacks that carry only `message_uid`/`thread_uid` are skipped as unsupported: the
//!   public docs name no endpoint that finds a thread's lead or messages by those ids.
//! - Blocked dates, availability, property, pincode and custom-data events are skipped.
//! - Money: the lead's quote was not captured from Hostfully's docs, so finances stay unknown.
//!
//! Hostfully does not sign callbacks: the host verifies a token in the listener URL
//! (`?token=...`), generated per account.

pub mod listing;
pub mod mapping;
pub mod registration;

use stayhook_plugin_sdk::model::*;

/// What the plugin declares.
pub fn plugin_info() -> PluginInfo {
    PluginInfo {
        sync_modes: vec![SyncMode::StayDateWindow],
        name: "hostfully".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        pms: "Hostfully".into(),
        events: mapping::EVENTS.iter().map(|event| event.to_string()).collect(),
        verification: VerificationScheme::UrlToken("token".into()),
        api: Some(ApiInfo {
            base_url: "https://api.hostfully.com".into(),
            allowed_hosts: Vec::new(),
            auth: AuthScheme::ApiKeyHeader("X-HOSTFULLY-APIKEY".into()),
        }),
    }
}

stayhook_plugin_sdk::plugin! {
    describe: plugin_info,
    normalize: mapping::normalize,
    subscribe: registration::subscribe,
    sync: listing::sync,
}
