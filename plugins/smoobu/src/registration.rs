//! Webhook registration: Smoobu has no public API to register a webhook URL, so the operator
//! enters the listener URL in Smoobu's settings by hand.

use stayhook_plugin_sdk::model::*;

use crate::mapping;

/// The manual instructions, with the account's listener URL (which carries its `?token=` secret).
pub fn subscribe(request: &RegistrationRequest) -> Result<RegistrationStep, PluginError> {
    match request.action {
        RegistrationAction::Register => Ok(RegistrationStep::Manual(format!(
            "Smoobu has no API to register webhooks. In Smoobu, open Settings → API / \"For Developers\" (the webhook \
             section), add the webhook URL {} (keep its token parameter: Smoobu signs nothing, the token is what \
             identifies and authenticates the calls) and save. Smoobu then posts the actions {} (and newMessage and \
             updateRates, which this plugin skips).",
            request.listener_url,
            mapping::EVENTS.join(", ")
        ))),
        RegistrationAction::Unregister => Ok(RegistrationStep::Manual(format!(
            "In Smoobu, open Settings → API / \"For Developers\" and remove the webhook URL {}.",
            request.listener_url
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(action: RegistrationAction) -> RegistrationRequest {
        stayhook_plugin_sdk::testing::registration_request(action, "https://hooks.example/in/a?token=t").build()
    }

    #[test]
    fn registration_is_manual_and_names_the_url() {
        for action in [RegistrationAction::Register, RegistrationAction::Unregister] {
            let Ok(RegistrationStep::Manual(text)) = subscribe(&request(action)) else { panic!("expected manual") };
            assert!(text.contains("https://hooks.example/in/a?token=t"), "{text}");
        }
    }
}
