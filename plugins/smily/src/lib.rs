//! The Smily (formerly BookingSync) plugin: Smily's webhooks → unified reservation events.
//!
//! # What it maps
//! - The body is `{"account_id", "event", "resource"}`; the resource is the object serialized as
//!   API v3 does (full payloads: no API call is made).
//! - `booking_created` → `reservation-created`, `booking_updated` → `reservation-updated` (status
//!   Canceled or a `canceled_at` time → cancelled), `booking_destroyed` → `reservation-deleted(id)`.
//! - Unavailable periods (`unavailable: true`, not booked) are calendar blocks: nothing is emitted.
//! - With the account setting `accountId`, a webhook for another Smily account is refused.
//!
//! # What it deliberately does not
//! - Other events (clients, rentals, inbox, availability, payments, …) are skipped as unsupported.
//! - The client (guest) is only a link id in the booking: no guest details without an API call.
//! - Reconciliation (`sync`): not available, for want of an authorization-code token scheme in
//!   the contract (README, "Sync").
//!
//! Verification: `X-Content-Signature`, hex HMAC-SHA1 with the application's secret over the
//! Base64 of the body as Ruby's `Base64.encode64` writes it (contract v0.2's
//! `hmac-sha1-base64-body`). Registration is per application in Smily's partner UI: manual.

pub mod mapping;

use stayhook_plugin_sdk::model::*;

/// What the plugin declares.
pub fn plugin_info() -> PluginInfo {
    PluginInfo {
        // `GET /bookings?updated_since=` would serve reconciliation, but it needs OAuth 2.0
        // authorization-code tokens (2-hour access tokens, rotating refresh tokens), which the
        // contract's API schemes do not carry yet (README, "Sync").
        sync_modes: Vec::new(),
        name: "smily".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        pms: "Smily (BookingSync)".into(),
        events: mapping::EVENTS.iter().map(|event| event.to_string()).collect(),
        verification: VerificationScheme::HmacSha1Base64Body(HmacHeader {
            header: "X-Content-Signature".into(),
            encoding: SignatureEncoding::Hex,
            prefix: None,
        }),
        api: None,
    }
}

/// Webhooks are set once per Smily application, in the partner UI; every account that authorizes
/// the application is covered. There is no API call for it.
pub fn subscribe(request: &RegistrationRequest) -> Result<RegistrationStep, PluginError> {
    Ok(RegistrationStep::Manual(format!(
        "Sign in at https://www.bookingsync.com/en/partners/login, open your application (Manage), tab Webhooks, \
         New Webhook: URL {}, events {}. Copy the application's secret into this account's verification \
         `secret`; with several Smily accounts on one application, set this account's setting `{}` to its Smily account id.",
        request.listener_url,
        mapping::EVENTS.join(", "),
        mapping::ACCOUNT_SETTING
    )))
}

stayhook_plugin_sdk::plugin! {
    describe: plugin_info,
    normalize: mapping::normalize,
    subscribe: subscribe,
}
