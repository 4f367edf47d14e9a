//! Webhook registration. Hospitable documents no API to create webhooks: an integration partner
//! gives its URL "during onboarding" (developer.hospitable.com, Webhooks), and a host adds one in
//! the app under Apps → Webhooks (help.hospitable.com, "V2 Webhooks for Reservations and
//! Properties"). So the answer is always manual instructions.

use stayhook_plugin_sdk::model::*;

use crate::mapping::EVENTS;

/// One step of registration: always the instructions for the operator.
pub fn subscribe(request: &RegistrationRequest) -> Result<RegistrationStep, PluginError> {
    Ok(RegistrationStep::Manual(match request.action {
        RegistrationAction::Register => format!(
            "Hospitable has no API to register webhooks. As a Hospitable partner, give the URL {url} to Hospitable during \
             onboarding and store the webhook secret they give you as this account's verification secret (it checks the \
             `Signature` header). As a host, open Apps > Webhooks (under Tools) in Hospitable, click \"+ Add new\", paste \
             {url} and choose Reservations. The plugin reads the actions {events}; Hospitable sends webhooks from \
             38.80.170.0/24.",
            url = request.listener_url,
            events = EVENTS.join(", "),
        ),
        RegistrationAction::Unregister => {
            format!(
                "Remove the webhook with the URL {} in Hospitable (Apps > Webhooks), or ask Hospitable to remove it.",
                request.listener_url
            )
        }
    }))
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
                listener_url: "https://hooks.example.com/in/a".into(),
                registered: Vec::new(),
                responses: Vec::new(),
            };
            let RegistrationStep::Manual(text) = subscribe(&request).unwrap() else { panic!("expected manual") };
            assert!(text.contains("https://hooks.example.com/in/a"));
        }
    }
}
