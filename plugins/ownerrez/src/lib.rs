//! The OwnerRez plugin: OwnerRez's entity-change webhooks → unified reservation, calendar and
//! conversation events.
//!
//! # What it maps
//! - Every delivery is `{id, user_id, action, entity_type, entity_id, categories, entity}`, where
//!   `entity` is the changed record as the v2 API shows it.
//! - booking `entity_create` → `reservation-created`; `entity_update` → `reservation-upserted`
//!   (a hold or block that becomes a booking keeps its id, so the host decides created vs
//!   updated); `entity_delete` → `reservation-deleted`. A cancellation is an update whose status
//!   is `canceled`.
//! - Blocks (`is_block: true`, `type: "block"`) → `calendar-updated`, their nights not available.
//! - thread_message → `conversation-updated` with the one message.
//! - `webhook_test` (the "Send a Test Webhook" button) → nothing.
//! - A create/update without an inline `entity` is completed with `GET /v2/bookings/{id}` (or
//!   `/v2/messages/{id}`); when the API fails for good the record is reported incomplete.
//!
//! - Reconciliation (`sync`, modified-since): `GET /v2/bookings?since_utc=` page by page, each
//!   booking → `reservation-upserted` (see [`listing`]).
//!
//! OwnerRez does not sign deliveries: it sends HTTP Basic credentials set on the OAuth app,
//! checked by the host. The API is called with the connection's OAuth access token (bearer).

pub mod listing;
pub mod mapping;
pub mod registration;

use stayhook_plugin_sdk::model::*;

/// What the plugin declares.
pub fn plugin_info() -> PluginInfo {
    PluginInfo {
        sync_modes: vec![SyncMode::ModifiedSince],
        name: "ownerrez".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        pms: "OwnerRez".into(),
        events: mapping::EVENTS.iter().map(|event| event.to_string()).collect(),
        verification: VerificationScheme::BasicAuth,
        api: Some(ApiInfo { base_url: "https://api.ownerrez.com".into(), allowed_hosts: Vec::new(), auth: AuthScheme::Bearer }),
    }
}

stayhook_plugin_sdk::plugin! {
    describe: plugin_info,
    normalize: mapping::normalize,
    subscribe: registration::subscribe,
    sync: listing::sync,
}
