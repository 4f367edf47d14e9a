//! The Smoobu plugin: Smoobu's webhooks → unified reservation events.
//!
//! # What it maps
//! - Smoobu posts `{"action", "user", "data"}`; for reservation actions `data` is the full booking
//!   (kebab-case keys), so no API call is made.
//! - `newReservation` → `reservation-created`; `updateReservation` → `reservation-updated`;
//!   `cancelReservation` → `reservation-updated` with status CANCELLED; `deleteReservation` →
//!   `reservation-deleted` with the booking id. A blocked period (`is-blocked-booking: true`) is an
//!   OWNER_STAY.
//!
//! # What it deliberately does not
//! - `newMessage` and `updateRates` are skipped as unsupported: no public source shows their
//!   payloads, so no conversation or calendar is built from them (README, open points).
//! - Currency: Smoobu's booking object carries none, so it stays unknown.
//! - Reconciliation (`sync`): not available. The reservation list needs HMAC-signed requests
//!   (`X-Timestamp`, `X-Nonce`, `X-Signature`) that no host auth scheme makes (README, "Sync").
//!
//! Smoobu signs nothing: the host verifies a token in the listener URL (`?token=...`).

pub mod mapping;
pub mod registration;

use stayhook_plugin_sdk::model::*;

/// What the plugin declares.
pub fn plugin_info() -> PluginInfo {
    PluginInfo {
        // No reconciliation: Smoobu's API takes only HMAC-signed requests since 2026-09-25, which
        // the contract's auth schemes cannot make (README, "Sync"); `sync` answers unsupported.
        sync_modes: Vec::new(),
        name: "smoobu".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        pms: "Smoobu".into(),
        events: mapping::EVENTS.iter().map(|event| event.to_string()).collect(),
        verification: VerificationScheme::UrlToken("token".into()),
        // The webhook carries the whole booking: the plugin never calls Smoobu's API.
        api: None,
    }
}

stayhook_plugin_sdk::plugin! {
    describe: plugin_info,
    normalize: mapping::normalize,
    subscribe: registration::subscribe,
}
