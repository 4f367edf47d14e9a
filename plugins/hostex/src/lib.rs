//! The Hostex plugin: Hostex's thin webhooks → unified reservation and calendar events,
//! completed through the Hostex API.
//!
//! # What it maps
//! - `reservation_created` / `reservation_updated` carry codes only (`reservation_code`,
//!   `stay_code`, `timestamp`, and `sub_event` on updates), at the top level (the payload
//!   examples page) or under `data` (the event-types page): both are read. The stay is fetched
//!   with `GET /reservations?reservation_code=<code>` and the one whose `stay_code` matches is
//!   mapped. Created → `reservation-created`, updated → `reservation-updated` (a cancellation is an
//!   update whose status is `cancelled`).
//! - `property_availability_updated` carries the days itself → `calendar-updated`.
//! - Reconciliation (`sync`): Query Reservations newest first (by `created_at`, then by
//!   `cancelled_at`) down to the watermark, or by a stay-date window; each stay →
//!   `reservation-upserted` (see [`listing`]).
//! - When the API fails for good, the stay is reported incomplete (result FAILURE, its stay code).
//!
//! # What it deliberately does not
//! - `listing_calendar_updated` (a channel listing's window), `message_created` and the review
//!   events are skipped as unsupported: their API answers were not captured from public docs.
//!
//! Hostex sends its webhook secret in the `Hostex-Webhook-Secret-Token` header; the host compares it
//! with the account's secret. Registration is by hand in Hostex's settings (see `subscribe`).

pub mod listing;
pub mod mapping;

use stayhook_plugin_sdk::model::*;

/// What the plugin declares.
pub fn plugin_info() -> PluginInfo {
    PluginInfo {
        // No "changed since" filter: newest first by creation and cancellation, and stay windows
        // for the other edits.
        sync_modes: vec![SyncMode::NewestFirstScan, SyncMode::StayDateWindow],
        name: "hostex".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        pms: "Hostex".into(),
        events: mapping::EVENTS.iter().map(|event| event.to_string()).collect(),
        verification: VerificationScheme::HeaderToken("hostex-webhook-secret-token".into()),
        api: Some(ApiInfo {
            base_url: "https://api.hostex.io/v3".into(),
            allowed_hosts: Vec::new(),
            auth: AuthScheme::ApiKeyHeader("Hostex-Access-Token".into()),
        }),
    }
}

/// Registration by hand: Hostex documents webhook set-up in its UI, and the secret it mints for a
/// webhook is shown there; no public documentation shows how an API call would return it.
pub fn subscribe(request: &RegistrationRequest) -> Result<RegistrationStep, PluginError> {
    Ok(RegistrationStep::Manual(format!(
        "In Hostex, open the OpenAPI Setting page, tab Webhooks, click \"+ Add new\" and enter the URL {}. \
         Hostex sends every event ({}) to it with a secret in the Hostex-Webhook-Secret-Token header: \
         set that secret as this account's verification secret. Give the account an API access token \
         (credentials apiKey, sent as Hostex-Access-Token) so thin reservation events can be completed.",
        request.listener_url,
        mapping::EVENTS.join(", ")
    )))
}

stayhook_plugin_sdk::plugin! {
    describe: plugin_info,
    normalize: mapping::normalize,
    subscribe: subscribe,
    sync: listing::sync,
}
