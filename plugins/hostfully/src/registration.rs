//! Automatic registration: one Hostfully webhook per event type.
//!
//! `POST /api/v3.2/webhooks` with `agencyUid`, `objectUid` (the agency), `eventType`,
//! `callbackUrl` (the listener URL, which carries the account's token) and `webhookType`
//! `POST_JSON`, one request per event type (Hostfully registers one event type per webhook).
//! The body's field names follow Hostfully's webhook reference as read by two third parties, whose
//! casing disagrees; this uses the camelCase they share. The created webhooks' uids are stored
//! (`webhook-<EVENT>`); unregister deletes each. Needs the account setting `agencyUid`.

use serde_json::json;
use stayhook_plugin_sdk::model::*;
use stayhook_plugin_sdk::{api, json};

use crate::mapping::EVENTS;

/// One step of registration.
pub fn subscribe(request: &RegistrationRequest) -> Result<RegistrationStep, PluginError> {
    match request.action {
        RegistrationAction::Register => register(request),
        RegistrationAction::Unregister => unregister(request),
    }
}

fn register(request: &RegistrationRequest) -> Result<RegistrationStep, PluginError> {
    let agency_uid =
        request.account.settings.iter().find(|(name, _)| name == "agencyUid").map(|(_, value)| value.clone()).ok_or_else(|| {
            PluginError::BadPayload("set the account setting `agencyUid` (the Hostfully agency) to register webhooks".into())
        })?;
    if request.responses.is_empty() {
        let requests = EVENTS
            .iter()
            .map(|event| {
                let body = json!({"agencyUid": agency_uid, "objectUid": agency_uid, "eventType": event, "callbackUrl": request.listener_url, "webhookType": "POST_JSON"});
                ApiRequest { method: "POST".into(), body: Some(body.to_string().into_bytes()), ..api::get(&format!("register-{event}"), "/api/v3.2/webhooks") }
            })
            .collect();
        return Ok(RegistrationStep::Fetch(requests));
    }
    let mut registered = Vec::new();
    for event in EVENTS {
        let id = format!("register-{event}");
        let response = api::response(&request.responses, &id).ok_or_else(|| PluginError::BadPayload(format!("{id} was not answered")))?;
        let answer = api::successful(response).map_err(PluginError::BadPayload)?;
        let uid = answer
            .get("webhook")
            .and_then(|webhook| json::string(webhook, "uid"))
            .or_else(|| json::string(&answer, "uid"))
            .ok_or_else(|| PluginError::BadPayload(format!("{id}: Hostfully answered without a webhook uid")))?;
        registered.push((format!("webhook-{event}"), uid));
    }
    Ok(RegistrationStep::Done(registered))
}

fn unregister(request: &RegistrationRequest) -> Result<RegistrationStep, PluginError> {
    let webhooks: Vec<&(String, String)> = request.registered.iter().filter(|(name, _)| name.starts_with("webhook-")).collect();
    if request.responses.is_empty() && !webhooks.is_empty() {
        let requests = webhooks
            .iter()
            .map(|(name, uid)| ApiRequest {
                method: "DELETE".into(),
                ..api::get(&format!("delete-{name}"), format!("/api/v3.2/webhooks/{uid}"))
            })
            .collect();
        return Ok(RegistrationStep::Fetch(requests));
    }
    for response in &request.responses {
        if response.status != 404 {
            api::successful_or_empty(response).map_err(PluginError::BadPayload)?;
        }
    }
    Ok(RegistrationStep::Done(Vec::new()))
}
