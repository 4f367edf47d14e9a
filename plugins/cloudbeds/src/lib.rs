//! The Cloudbeds plugin: Cloudbeds' thin webhooks → unified reservation events, completed through
//! the Cloudbeds API (v1.3).
//!
//! # What it maps
//! - Bodies are flat: `version`, `timestamp`, `event` (`object/action`), the property and
//!   reservation ids (spelled `reservationID`/`propertyID` or `reservationId`/`propertyId`: both
//!   are read) and a few event fields.
//! - `reservation/created` → `reservation-created`; `reservation/status_changed`,
//!   `reservation/dates_changed` → `reservation-updated` (status `canceled` → cancelled). The
//!   reservation is fetched with `GET /getReservation?reservationID=&propertyID=`.
//! - `reservation/deleted` → `reservation-deleted(id)`: Cloudbeds really removes it; no API call.
//! - When the API fails for good, the reservation is reported incomplete (result FAILURE, its id).
//! - With the account setting `propertyID`, a webhook for another property is refused.
//! - Reconciliation (`sync`, modified-since): `getReservationsWithRateDetails` by modification
//!   date, each row mapped like a `getReservation` answer, deleted rows as deletions (`listing.rs`).
//!
//! # What it deliberately does not
//! - Guest, transaction and other objects' events are skipped as unsupported.
//! - Cloudbeds signs nothing: the host verifies a token in the listener URL (`?token=`).
//!
//! Registration (`subscribe`) lists the subscriptions with `getWebhooks` and creates the missing
//! ones with `postWebhook`, one per object/action pair; unregistering calls `deleteWebhook`.

pub mod listing;
pub mod mapping;
pub mod registration;

use stayhook_plugin_sdk::model::*;

/// What the plugin declares.
pub fn plugin_info() -> PluginInfo {
    PluginInfo {
        sync_modes: vec![SyncMode::ModifiedSince],
        name: "cloudbeds".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        pms: "Cloudbeds".into(),
        events: mapping::EVENTS.iter().map(|event| event.to_string()).collect(),
        verification: VerificationScheme::UrlToken("token".into()),
        api: Some(ApiInfo {
            base_url: "https://api.cloudbeds.com/api/v1.3".into(),
            allowed_hosts: Vec::new(),
            // Cloudbeds' other scheme, OAuth 2.0 authorization code with refresh tokens, is not in
            // contract v0.1 (client credentials only): see the README.
            auth: AuthScheme::ApiKeyHeader("x-api-key".into()),
        }),
    }
}

stayhook_plugin_sdk::plugin! {
    describe: plugin_info,
    normalize: mapping::normalize,
    subscribe: registration::subscribe,
    sync: listing::sync,
}
