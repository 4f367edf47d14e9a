//! The Hostaway plugin: Hostaway's unified webhook → stayhook's unified reservation events.
//!
//! # What it maps
//! - `reservation.created` → `reservation-created`, `reservation.updated` → `reservation-updated`
//!   (Hostaway has no cancellation event: a cancellation is an update with status `cancelled`,
//!   `cancelledAt` from `cancellationDate`). The webhook carries the whole reservation object, so
//!   no API call is made. Both envelopes are accepted: `{"object","event","accountId","data"}` and
//!   `{"object","event","accountId","payload":{"data"}}`.
//! - Every unified reservation field Hostaway's reservation object has: ids, dates, guest counts,
//!   the guest (name, e-mail, phone, locale, address, picture), channel (`source`), status,
//!   check-in/out hours, door code, confirmation code, guest note, verification flags, money
//!   (`financeField` lines grouped into base price, fees, taxes and discounts, or the flat
//!   `cleaningFee`/`taxAmount` when there are none) and custom field values. The table is in the
//!   crate's README.
//! - `message.received` (object `conversationMessage`, one message) → `conversation-updated` with the
//!   whole conversation: `GET /v1/conversations/{id}` and `.../messages` are fetched through the
//!   host (`conversation.rs`); an API that stays down yields an incomplete (FAILURE) conversation.
//! - A dashboard test delivery (`"data": "test"`) → no events.
//!
//! - Reconciliation (`sync`, newest-first-scan): `GET /v1/reservations` newest change first, paged
//!   with `afterId`, each row mapped like a webhook's reservation (`listing.rs`).
//!
//! # What it deliberately does not
//! - Other or future events are refused as unsupported (Hostaway asks for a 200 on events a
//!   receiver does not know; the host records them as skipped).
//! - Hostaway's `previousArrivalDate`/`previousDepartureDate` are not used: the host fills the
//!   previous dates from its own state. `hostNote` (the host's internal note), commissions, payout
//!   amounts, security deposits and the Airbnb-specific price fields are not part of the unified
//!   record.
//! - No deduplication: Hostaway may deliver the same update more than once; the host's state
//!   handles repeats.
//! - A webhook whose `accountId` differs from the account's `hostawayAccountId` setting is refused
//!   as a bad payload. Authenticity itself is HTTP Basic auth, checked by the host.

pub mod conversation;
pub mod listing;
pub mod mapping;
pub mod registration;

use stayhook_plugin_sdk::model::*;

/// Hostaway's API, as `describe` declares it.
pub fn plugin_info() -> PluginInfo {
    PluginInfo {
        sync_modes: vec![SyncMode::NewestFirstScan],
        name: "hostaway".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        pms: "Hostaway".into(),
        events: mapping::EVENTS.iter().map(|event| (*event).to_string()).collect(),
        verification: VerificationScheme::BasicAuth,
        api: Some(ApiInfo {
            base_url: "https://api.hostaway.com".into(),
            allowed_hosts: Vec::new(),
            auth: AuthScheme::Oauth2ClientCredentials(Oauth2Client {
                token_url: "https://api.hostaway.com/v1/accessTokens".into(),
                scope: Some("general".into()),
            }),
        }),
    }
}

stayhook_plugin_sdk::plugin! {
    describe: plugin_info,
    normalize: mapping::normalize,
    subscribe: registration::subscribe,
    sync: listing::sync,
}
