//! The iGMS plugin: iGMS's webhooks → unified reservation events.
//!
//! # What it maps
//! - iGMS posts `{"type", "data": [ ... ]}`; `data` is an array, so one delivery may carry several
//!   bookings. `booking_data` → one `reservation-upserted` per item, in order (no item says whether
//!   the booking is new: the host decides from its stored state).
//!
//! # What it deliberately does not
//! - `calendar_data`, `guest_data` and `properties_data` are skipped as unsupported: the captured
//!   documentation gives no item schema for them. iGMS has no message webhook.
//! - No API calls: the booking item carries what the unified record needs except the guest, which
//!   only the guests API would give (README, open points).
//! - Reconciliation (`sync`): not available. `GET v1/bookings?from_updated_date=` exists, but iGMS
//!   takes its token as a query parameter, which the contract's auth schemes cannot send (README,
//!   "Sync").
//!
//! iGMS documents no signature: the host verifies a token in the listener URL (`?token=...`).

pub mod mapping;

use stayhook_plugin_sdk::model::*;

/// What the plugin declares.
pub fn plugin_info() -> PluginInfo {
    PluginInfo {
        name: "igms".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        pms: "iGMS".into(),
        events: mapping::EVENTS.iter().map(|event| event.to_string()).collect(),
        // No signature, header or IP list is documented: a secret token in the listener URL.
        verification: VerificationScheme::UrlToken("token".into()),
        api: None,
        // No reconciliation: the bookings list takes the token as the `access_token` query
        // parameter, which no contract auth scheme sends (README, "Sync").
        sync_modes: Vec::new(),
    }
}

/// Registration: iGMS has no API for it; the operator e-mails iGMS support.
pub fn subscribe(request: &RegistrationRequest) -> Result<RegistrationStep, PluginError> {
    match request.action {
        RegistrationAction::Register => Ok(RegistrationStep::Manual(format!(
            "iGMS has no API to register webhooks. E-mail support@igms.com with the Client ID of your iGMS API \
             application, the webhook type \"Booking change\" and the URL {} (keep its token parameter: iGMS signs \
             nothing, the token is what authenticates the calls). Calendar, guest and properties webhooks are not \
             mapped by this plugin; do not ask for them on this URL.",
            request.listener_url
        ))),
        RegistrationAction::Unregister => Ok(RegistrationStep::Manual(format!(
            "E-mail support@igms.com with the Client ID of your iGMS API application and ask them to remove the \
             webhook URL {}.",
            request.listener_url
        ))),
    }
}

stayhook_plugin_sdk::plugin! {
    describe: plugin_info,
    normalize: mapping::normalize,
    subscribe: subscribe,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_is_manual_and_names_the_url() {
        for action in [RegistrationAction::Register, RegistrationAction::Unregister] {
            let request = RegistrationRequest {
                account: AccountContext { id: "a".into(), workspace_id: "w".into(), settings: Vec::new() },
                action,
                listener_url: "https://hooks.example/listen/a?token=t".into(),
                registered: Vec::new(),
                responses: Vec::new(),
            };
            let Ok(RegistrationStep::Manual(text)) = subscribe(&request) else { panic!("expected manual") };
            assert!(text.contains("https://hooks.example/listen/a?token=t") && text.contains("support@igms.com"), "{text}");
        }
    }
}
