//! The {{Pms}} plugin: {{Pms}}'s webhooks → unified stayhook events.
//!
//! Written by `stayhook plugin new`. The payload shape in `mapping.rs` and the sample case are
//! PLACEHOLDERS: replace them with what {{Pms}} documents (keep the documentation's address in
//! every case's `case.json`), then run `stayhook plugin test .` until the cases pass.
//! docs/writing-a-plugin.md walks through every step.

pub mod mapping;

use stayhook_plugin_sdk::model::*;

/// What the plugin declares: its name (accounts use it as their `pms`), the events it reads, how
/// the host verifies a webhook, and the PMS's API if the plugin asks the host to call it.
pub fn plugin_info() -> PluginInfo {
    PluginInfo {
        // No listing for reconciliation (yet): `sync` answers unsupported.
        sync_modes: Vec::new(),
        name: "{{name}}".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        pms: "{{Pms}}".into(),
        events: mapping::EVENTS.iter().map(|event| event.to_string()).collect(),
        // The host checks this before the plugin sees the webhook; the account holds the secret.
        // Pick what the PMS documents: HmacSha256, StandardWebhooks, BasicAuth, HeaderToken,
        // HmacSha1Base64Body (HMAC-SHA1 over Ruby's Base64 of the body, like Smily), Sns (Amazon SNS
        // deliveries: the host verifies and unwraps them, the plugin gets the Message), or
        // UrlToken("token") when the PMS signs nothing. docs/plugin-contract.md describes each.
        verification: VerificationScheme::HmacSha256(HmacHeader {
            header: "x-signature".into(),
            encoding: SignatureEncoding::Hex,
            prefix: None,
        }),
        // Declare the API (base URL, auth scheme) when the payload is thin and the mapping asks the
        // host to fetch the rest (Outcome::Fetch); the host adds the account's credentials.
        api: None,
    }
}

/// Automatic webhook registration. This plugin has none: the operator pastes the listener URL
/// into the PMS. A PMS with a webhook API answers `RegistrationStep::Fetch` with the calls instead.
pub fn subscribe(request: &RegistrationRequest) -> Result<RegistrationStep, PluginError> {
    Ok(RegistrationStep::Manual(format!(
        "In {{Pms}}'s settings, add a webhook with the URL {} for the events {}.",
        request.listener_url,
        mapping::EVENTS.join(", ")
    )))
}

stayhook_plugin_sdk::plugin! {
    describe: plugin_info,
    normalize: mapping::normalize,
    subscribe: subscribe,
}
