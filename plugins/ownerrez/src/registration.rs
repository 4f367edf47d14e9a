//! Automatic registration: one OwnerRez webhook subscription per entity type.
//!
//! `POST /v2/webhooksubscriptions` with `{"type": <booking|message>, "webhook_url": <listener>}`
//! (OAuth bearer token of the connection; personal access tokens cannot see webhooks). The
//! created subscriptions' ids are stored (`subscription-<type>`); unregister deletes each with
//! `DELETE /v2/webhooksubscriptions/{id}`. The body's field names come from a third party's
//! working client (README, sources); OwnerRez's reference page was not captured.
//!
//! The HTTP Basic user and password OwnerRez sends with every delivery are set once, by hand, in
//! the OAuth app's Webhooks section (OwnerRez has no API for them).

use serde_json::json;
use stayhook_plugin_sdk::model::*;
use stayhook_plugin_sdk::{api, json};

use crate::mapping::USER_AGENT;

/// Subscription types registered, in OwnerRez's spelling.
pub const TYPES: &[&str] = &["booking", "message"];
const PATH: &str = "/v2/webhooksubscriptions";

/// One step of registration.
pub fn subscribe(request: &RegistrationRequest) -> Result<RegistrationStep, PluginError> {
    match request.action {
        RegistrationAction::Register => register(request),
        RegistrationAction::Unregister => unregister(request),
    }
}

fn call(id: String, method: &str, path: String, body: Option<Vec<u8>>) -> ApiRequest {
    let mut headers = vec![("User-Agent".to_string(), USER_AGENT.to_string())];
    if body.is_some() {
        headers.push(("Content-Type".into(), "application/json".into()));
    }
    ApiRequest { method: method.into(), headers, body, ..api::get(&id, path) }
}

fn register(request: &RegistrationRequest) -> Result<RegistrationStep, PluginError> {
    if request.responses.is_empty() {
        let requests = TYPES
            .iter()
            .map(|kind| {
                let body = json!({"type": kind, "webhook_url": request.listener_url});
                call(format!("register-{kind}"), "POST", PATH.into(), Some(body.to_string().into_bytes()))
            })
            .collect();
        return Ok(RegistrationStep::Fetch(requests));
    }
    let mut registered = Vec::new();
    for kind in TYPES {
        let id = format!("register-{kind}");
        let response = api::response(&request.responses, &id).ok_or_else(|| PluginError::BadPayload(format!("{id} was not answered")))?;
        let answer = api::successful(response).map_err(PluginError::BadPayload)?;
        let subscription =
            json::string(&answer, "id").ok_or_else(|| PluginError::BadPayload(format!("{id}: OwnerRez answered without an `id`")))?;
        registered.push((format!("subscription-{kind}"), subscription));
    }
    Ok(RegistrationStep::Done(registered))
}

fn unregister(request: &RegistrationRequest) -> Result<RegistrationStep, PluginError> {
    let subscriptions: Vec<&(String, String)> = request.registered.iter().filter(|(name, _)| name.starts_with("subscription-")).collect();
    if request.responses.is_empty() && !subscriptions.is_empty() {
        let requests =
            subscriptions.iter().map(|(name, id)| call(format!("delete-{name}"), "DELETE", format!("{PATH}/{id}"), None)).collect();
        return Ok(RegistrationStep::Fetch(requests));
    }
    for response in &request.responses {
        if response.status != 404 {
            api::successful_or_empty(response).map_err(PluginError::BadPayload)?;
        }
    }
    Ok(RegistrationStep::Done(Vec::new()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use stayhook_plugin_sdk::testing::{answer_bytes, registration_request};

    fn request(action: RegistrationAction, registered: Vec<(String, String)>, responses: Vec<ApiResponse>) -> RegistrationRequest {
        registration_request(action, "https://hooks.example.com/w/a").registered_values(registered).responses(responses).build()
    }

    #[test]
    fn register_posts_one_subscription_per_type_and_stores_the_ids() {
        let Ok(RegistrationStep::Fetch(requests)) = subscribe(&request(RegistrationAction::Register, Vec::new(), Vec::new())) else {
            panic!("expected fetch")
        };
        assert_eq!(requests.len(), 2);
        assert_eq!((requests[0].method.as_str(), requests[0].path.as_str()), ("POST", "/v2/webhooksubscriptions"));
        let body: serde_json::Value = serde_json::from_slice(requests[0].body.as_deref().unwrap()).unwrap();
        assert_eq!(body, json!({"type": "booking", "webhook_url": "https://hooks.example.com/w/a"}));
        let responses =
            vec![answer_bytes("register-booking", 200, r#"{"id": 26703}"#), answer_bytes("register-message", 200, r#"{"id": 26704}"#)];
        let Ok(RegistrationStep::Done(stored)) = subscribe(&request(RegistrationAction::Register, Vec::new(), responses)) else {
            panic!("expected done")
        };
        assert_eq!(stored, [("subscription-booking".to_string(), "26703".to_string()), ("subscription-message".into(), "26704".into())]);
    }

    #[test]
    fn unregister_deletes_and_tolerates_404() {
        let registered = vec![("subscription-booking".to_string(), "26703".to_string())];
        let Ok(RegistrationStep::Fetch(requests)) = subscribe(&request(RegistrationAction::Unregister, registered.clone(), Vec::new()))
        else {
            panic!("expected fetch")
        };
        assert_eq!((requests[0].method.as_str(), requests[0].path.as_str()), ("DELETE", "/v2/webhooksubscriptions/26703"));
        let responses = vec![answer_bytes("delete-subscription-booking", 404, "")];
        assert!(matches!(subscribe(&request(RegistrationAction::Unregister, registered, responses)), Ok(RegistrationStep::Done(_))));
    }
}
