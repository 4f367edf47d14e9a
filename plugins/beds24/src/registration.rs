//! Registration: Beds24 has no API for it, so the operator sets the URLs in the control panel.
//!
//! The booking webhook URL is set per property (SETTINGS > PROPERTIES > ACCESS, "Booking Webhook"),
//! the inventory webhook under (SETTINGS) APPS & INTEGRATIONS > WEBHOOKS. Sources:
//! <https://wiki.beds24.com/index.php/Category:Webhooks>,
//! <https://wiki.beds24.com/index.php/Setting/propertiesnotifyurl>,
//! <https://wiki.beds24.com/index.php/Inventory_Webhooks>.

use stayhook_plugin_sdk::model::*;

/// One step of registration: always manual instructions.
pub fn subscribe(request: &RegistrationRequest) -> Result<RegistrationStep, PluginError> {
    let url = &request.listener_url;
    Ok(RegistrationStep::Manual(match request.action {
        RegistrationAction::Register => format!(
            "Beds24 has no API to register webhooks. In Beds24, for every property: SETTINGS > PROPERTIES > ACCESS > \
             Booking Webhook, set the URL to {url} (Webhook Version 1 or 2; Beds24 appends bookid and status to a \
             version 1 URL; leave Additional Data without card details). For availability changes, add the same URL under \
             (SETTINGS) APPS & INTEGRATIONS > WEBHOOKS (inventory webhook). Version 1 needs an API V2 long life token \
             with the bookings and bookings-personal scopes in the account's `apiKey` credential."
        ),
        RegistrationAction::Unregister => format!(
            "Beds24 has no API to remove webhooks. In Beds24, remove the URL {url} from SETTINGS > PROPERTIES > ACCESS > \
             Booking Webhook of every property and from (SETTINGS) APPS & INTEGRATIONS > WEBHOOKS."
        ),
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
                listener_url: "https://hooks.example.com/beds24?token=t".into(),
                registered: Vec::new(),
                responses: Vec::new(),
            };
            let Ok(RegistrationStep::Manual(text)) = subscribe(&request) else { panic!("manual") };
            assert!(text.contains("https://hooks.example.com/beds24?token=t"));
        }
    }
}
