//! The Hospitable plugin: Hospitable's Public API v2 webhooks → unified stayhook events.
//!
//! # What it maps
//! - Every webhook is the envelope `{id, action, data, created, version}`, signed with
//!   `Signature: hex(HMAC-SHA256(secret, raw body))` (checked by the host).
//! - `reservation.created` → `reservation-created`; `reservation.changed` (and the
//!   `reservation.updated` spelling of third-party docs) → `reservation-updated`; a cancellation
//!   is an update whose `reservation_status.current.category` is `cancelled`. `data` is the whole
//!   reservation (`ReservationFull`, with guest, financials and properties included by scope), so
//!   no API call is made (`mapping.rs`).
//! - `message.created` → `conversation-updated` with the reservation's thread, fetched with
//!   `GET /v2/reservations/{uuid}/messages`; an API that stays down yields an incomplete
//!   conversation (`conversation.rs`).
//! - Reconciliation (`sync`, stay-date-window): `GET /v2/reservations` by check-in, then by
//!   check-out date in the window, per property; rows map like a webhook's `data` (`listing.rs`).
//!
//! # What it deliberately does not
//! - `property.*`, `review.created` and `integration.disconnected` are refused as unsupported:
//!   they carry no reservation, conversation or calendar days. Hospitable has no calendar webhook.
//! - No automatic registration: Hospitable documents no webhook API (`registration.rs`).

pub mod conversation;
pub mod listing;
pub mod mapping;
pub mod registration;

use stayhook_plugin_sdk::model::*;

/// What the plugin declares.
pub fn plugin_info() -> PluginInfo {
    PluginInfo {
        sync_modes: vec![SyncMode::StayDateWindow],
        name: "hospitable".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        pms: "Hospitable".into(),
        events: mapping::EVENTS.iter().map(|event| event.to_string()).collect(),
        // "We will include a Signature header in each webhook call ... standard HMAC with the
        // SHA256 function": lower-case hex, no prefix (developer.hospitable.com, Webhooks).
        verification: VerificationScheme::HmacSha256(HmacHeader {
            header: "signature".into(),
            encoding: SignatureEncoding::Hex,
            prefix: None,
        }),
        // For the message thread of `message.created` and the reservation list of `sync`; the token is a Personal Access Token
        // or an OAuth access token of the Hospitable account (`Authorization: Bearer`).
        api: Some(ApiInfo { base_url: "https://public.api.hospitable.com".into(), allowed_hosts: Vec::new(), auth: AuthScheme::Bearer }),
    }
}

stayhook_plugin_sdk::plugin! {
    describe: plugin_info,
    normalize: mapping::normalize,
    subscribe: registration::subscribe,
    sync: listing::sync,
}
