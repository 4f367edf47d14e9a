//! Hostfully plugin (being written).

use stayhook_plugin_sdk::model::*;
use stayhook_plugin_sdk::{Guest, export_plugin};

struct Plugin;

impl Guest for Plugin {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "hostfully".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            pms: "Hostfully".into(),
            events: Vec::new(),
            verification: VerificationScheme::None,
            api: None,
        }
    }

    fn normalize(_inbound: Inbound, _responses: Vec<ApiResponse>) -> Result<Outcome, PluginError> {
        Err(PluginError::UnsupportedEvent("not written yet".into()))
    }

    fn subscribe(_request: RegistrationRequest) -> Result<RegistrationStep, PluginError> {
        Ok(RegistrationStep::Manual("not written yet".into()))
    }
}

export_plugin!(Plugin);
