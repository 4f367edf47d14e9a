//! The Beds24 plugin: Beds24's booking and inventory webhooks → unified stayhook events.
//!
//! # What it maps
//! - Booking webhook VERSION 1: Beds24 appends `?bookid=<id>&status=new|modify|cancel|message` to
//!   the listener URL; the body is empty or optional form data (card CVV), which is never read. The
//!   booking is fetched with API V2 `GET /bookings?id=<bookid>`. `new` → `reservation-created`,
//!   `cancel` → `reservation-updated` (status from the fetched booking), `modify` →
//!   `reservation-upserted`: Beds24 says not to trust `modify` about the booking's state.
//! - Booking webhook VERSION 2 (beta): a JSON body `{timeStamp, booking, ...}` with the booking in
//!   API V2 format and no event name → `reservation-upserted` (the host decides new vs update
//!   from its state; a cancellation carries status `cancelled`).
//! - Inventory webhook `{"roomId","propId","ownerId","action":"SYNC_ROOM"}` → `calendar-updated`
//!   for the property and room type, with no days: the webhook only says the room needs syncing.
//! - Reconciliation (`sync`, modified-since): API V2 `GET /bookings?modifiedFrom=` page by page,
//!   every booking (cancelled ones included) → `reservation-upserted` (see [`listing`]).
//! - When the API fails for good, the reservation is reported incomplete (result FAILURE, its id).
//!
//! # What it deliberately does not
//! - `status=message` (a guest message from an OTA) is skipped as unsupported: no documented
//!   answer of `GET /bookings/messages` was found to map messages from.
//! - Money beyond the booking's `price`: invoice items were not captured from the docs.
//!
//! Beds24 signs nothing: the host verifies a token in the listener URL (`?token=...`). Beds24's
//! booking webhook URL keeps its own query string and appends `bookid`/`status` to it.

pub mod listing;
pub mod mapping;
pub mod registration;

use stayhook_plugin_sdk::model::*;

/// What the plugin declares.
pub fn plugin_info() -> PluginInfo {
    PluginInfo {
        sync_modes: vec![SyncMode::ModifiedSince],
        name: "beds24".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        pms: "Beds24".into(),
        events: mapping::EVENTS.iter().map(|event| event.to_string()).collect(),
        verification: VerificationScheme::UrlToken("token".into()),
        api: Some(ApiInfo {
            base_url: "https://beds24.com/api/v2".into(),
            allowed_hosts: Vec::new(),
            // API V2 reads a `token: <token>` header; the account's `apiKey` holds a long life token.
            auth: AuthScheme::ApiKeyHeader("token".into()),
        }),
    }
}

stayhook_plugin_sdk::plugin! {
    describe: plugin_info,
    normalize: mapping::normalize,
    subscribe: registration::subscribe,
    sync: listing::sync,
}
