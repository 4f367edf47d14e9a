//! The Guesty plugin: Guesty Open API webhooks → stayhook's unified events.
//!
//! # What it maps
//! - `reservation.new` / `reservation.updated` (legacy, the whole reservation in `reservation`) and
//!   their lean v2 successors `reservation.created.v2` / `reservation.updated.v2` (the reservation
//!   is fetched, `GET /v1/reservations/{id}`) → `reservation-created` / `reservation-updated`. A
//!   cancellation is an update with status `cancelled` (Guesty `canceled`); Guesty has no deletion
//!   event. Because reservation events do not trigger Guesty's calendar webhook, each one also
//!   fetches the listing's calendar for the stay ± `calendarPaddingDays` (default 2) and, for a
//!   sub-unit of a multi-unit listing, the parent's calendar: `calendar-updated` events.
//! - `listing.calendar.updated` → one `calendar-updated` per listing in the payload, no fetch.
//! - `reservation.messageReceived` / `reservation.messageSent` → `conversation-updated` with the
//!   whole thread (the conversation and its posts are fetched).
//! - Reconciliation (`sync`, modified-since): the (deprecated) reservation list filtered by
//!   `lastUpdatedAt`, paged by key (`listing.rs`); each row maps like a webhook's reservation.
//! - An API call that failed for good → `incomplete` (result FAILURE) for the record it was for.
//!
//! The tables are in the crate README. Mapping code lives in plain modules; this file only
//! implements the component's `Guest`.

pub mod calendar;
pub mod conversation;
pub mod listing;
pub mod mapping;
pub mod registration;
pub mod reservation;

use stayhook_plugin_sdk::model::*;

/// What `describe` answers.
pub fn plugin_info() -> PluginInfo {
    PluginInfo {
        sync_modes: vec![SyncMode::ModifiedSince],
        name: "guesty".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        pms: "Guesty".into(),
        events: mapping::EVENTS.iter().map(|event| (*event).to_string()).collect(),
        verification: VerificationScheme::StandardWebhooks,
        api: Some(ApiInfo {
            base_url: "https://open-api.guesty.com".into(),
            allowed_hosts: Vec::new(),
            auth: AuthScheme::Oauth2ClientCredentials(Oauth2Client {
                token_url: "https://open-api.guesty.com/oauth2/token".into(),
                scope: Some("open-api".into()),
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
