//! The Uplisting plugin: Uplisting's booking hooks → unified reservation events.
//!
//! # What it maps
//! - Uplisting posts the flat booking object with no event name; each hook event gets its own
//!   listener URL (`event=booking_created|booking_updated|booking_removed` in the query), and the
//!   plugin reads the event from there. Without the parameter a booking is an upsert: the host
//!   decides created or updated from its stored state.
//!
//! # What it deliberately does not
//! - No API calls while normalizing: the booking is complete (fat). The API is declared for the
//!   automatic registration of the hooks (`POST /hooks`, `DELETE /hooks/{id}`) and for `sync`.
//! - No messages or calendars: no such Uplisting hook was found.
//!
//! Reconciliation (`sync`, stay-date-window only: Uplisting has no "changed since" filter): the
//! account's properties, then each property's bookings in the window, each booking →
//! `reservation-upserted` (see [`listing`]).
//!
//! Uplisting signs nothing that was captured: the host verifies a token in the listener URL.

pub mod listing;
pub mod mapping;
pub mod registration;

use stayhook_plugin_sdk::model::*;

/// What the plugin declares.
pub fn plugin_info() -> PluginInfo {
    PluginInfo {
        name: "uplisting".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        pms: "Uplisting".into(),
        events: mapping::EVENTS.iter().map(|event| event.to_string()).collect(),
        verification: VerificationScheme::UrlToken("token".into()),
        // Uplisting authenticates with `Authorization: Basic base64(<api key>)` (the key alone, no
        // `user:password` pair), which the host's `basic` scheme cannot produce: the account's
        // `apiKey` credential holds the whole header value, `Basic <base64 of the key>` (README).
        api: Some(ApiInfo {
            base_url: "https://connect.uplisting.io".into(),
            allowed_hosts: Vec::new(),
            auth: AuthScheme::ApiKeyHeader("authorization".into()),
        }),
        sync_modes: vec![SyncMode::StayDateWindow],
    }
}

stayhook_plugin_sdk::plugin! {
    describe: plugin_info,
    normalize: mapping::normalize,
    subscribe: registration::subscribe,
    sync: listing::sync,
}
