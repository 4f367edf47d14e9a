//! The Hostify plugin: Hostify's push notifications (delivered by Amazon SNS) → unified
//! reservation events, completed through the Hostify API.
//!
//! # What it maps
//! - The host handles the SNS envelope (contract v0.2's `sns` scheme): it verifies the message
//!   signature with a certificate from an SNS host only, confirms the subscription, and hands this
//!   plugin the notification's `Message` (JSON) as the body.
//! - `new_reservation` → `reservation-created`; `update_reservation`, `move_reservation` →
//!   `reservation-updated`. The message carries the reservation id only; the reservation is
//!   fetched with `GET /reservations/{id}?include_related_objects=1` (header `x-api-key`).
//! - When the API fails for good, the reservation is reported incomplete (result FAILURE, its id).
//! - Reconciliation (`sync`, stay-date-window): `GET /reservations` filtered to the stays overlapping
//!   the window, each row mapped like the fetched reservation (`listing.rs`).
//!
//! # What it deliberately does not
//! - `message_new` and the listing notifications are skipped as unsupported (see the README).

pub mod listing;
pub mod mapping;

use stayhook_plugin_sdk::model::*;

/// What the plugin declares.
pub fn plugin_info() -> PluginInfo {
    PluginInfo {
        // No modified-since filter: the list is swept by stay dates (see the README's "Sync").
        sync_modes: vec![SyncMode::StayDateWindow],
        name: "hostify".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        pms: "Hostify".into(),
        events: mapping::EVENTS.iter().map(|event| event.to_string()).collect(),
        verification: VerificationScheme::Sns,
        api: Some(ApiInfo {
            base_url: "https://api-rms.hostify.com".into(),
            allowed_hosts: Vec::new(),
            auth: AuthScheme::ApiKeyHeader("x-api-key".into()),
        }),
    }
}

/// Registration by hand: Hostify documents the call that creates a notification
/// (`POST /webhooks_v2`) but not what it answers, so the plugin does not make it (it could not
/// store the id needed to remove it again).
pub fn subscribe(request: &RegistrationRequest) -> Result<RegistrationStep, PluginError> {
    Ok(RegistrationStep::Manual(format!(
        "For each of {events}, create a Hostify notification: POST https://api-rms.hostify.com/webhooks_v2 with header \
         x-api-key and the JSON body {{\"url\": \"{url}\", \"notification_type\": \"<type>\"}}. stayhook confirms the \
         Amazon SNS subscription itself when SNS posts the SubscriptionConfirmation. Set this account's verification \
         `topicArn` to the TopicArn of those messages (Hostify's topic) so messages of any other topic are refused.",
        events = mapping::EVENTS.join(", "),
        url = request.listener_url,
    )))
}

stayhook_plugin_sdk::plugin! {
    describe: plugin_info,
    normalize: mapping::normalize,
    subscribe: subscribe,
    sync: listing::sync,
}
