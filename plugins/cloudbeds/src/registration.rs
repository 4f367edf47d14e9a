//! Automatic registration: one Cloudbeds subscription per object/action pair.
//!
//! 1. `GET /getWebhooks[?propertyID=]`: the subscriptions the API client already has. Those for
//!    one of our events whose endpoint is the listener URL are kept (registering twice is
//!    idempotent).
//! 2. `POST /postWebhook`, form-encoded `object`, `action`, `endpointUrl` (and `propertyID` when
//!    the account setting is set), for each missing pair → `{"success": true, "data":
//!    {"subscriptionID": ...}}`.
//! 3. Done: `subscription-<object>/<action>` = the subscription id, for each pair.
//!
//! Unregister: `DELETE /deleteWebhook?subscriptionID=<id>[&propertyIDs=]` for each stored id; a
//! 404 counts as gone.

use serde_json::Value;
use stayhook_plugin_sdk::model::*;
use stayhook_plugin_sdk::{api, json};

use crate::mapping::EVENTS;

/// Request id of the subscription list.
pub const LIST: &str = "webhooks";

/// One step of registration.
pub fn subscribe(request: &RegistrationRequest) -> Result<RegistrationStep, PluginError> {
    match request.action {
        RegistrationAction::Register => register(request),
        RegistrationAction::Unregister => unregister(request),
    }
}

fn property(request: &RegistrationRequest) -> Option<String> {
    request
        .account
        .settings
        .iter()
        .find(|(name, _)| name == "propertyID")
        .map(|(_, value)| value.trim().to_string())
        .filter(|value| !value.is_empty())
}

/// A Cloudbeds answer: `success` must not be false.
fn answered(response: &ApiResponse) -> Result<Value, PluginError> {
    let body = api::successful(response).map_err(PluginError::BadPayload)?;
    if json::flag(&body, "success") == Some(false) {
        let message = json::string(&body, "message").unwrap_or_else(|| "success false".into());
        return Err(PluginError::BadPayload(format!("{}: Cloudbeds answered: {message}", response.id)));
    }
    Ok(body)
}

/// The subscriptions of `getWebhooks` for our events at `listener_url`: (event, subscription id).
pub fn existing(list: &Value, listener_url: &str) -> Vec<(String, String)> {
    json::array(list, "data")
        .iter()
        .filter(|subscription| {
            json::path(subscription, &["subscriptionData", "endpoint"]).and_then(json::text).as_deref() == Some(listener_url)
        })
        .filter_map(|subscription| {
            let event = subscription.get("event")?;
            let name = format!("{}/{}", json::string(event, "entity")?, json::string(event, "action")?);
            Some((name, json::string(subscription, "id")?))
        })
        .filter(|(name, _)| EVENTS.contains(&name.as_str()))
        .collect()
}

fn register(request: &RegistrationRequest) -> Result<RegistrationStep, PluginError> {
    let property = property(request);
    let Some(list) = api::response(&request.responses, LIST) else {
        let mut list = api::get(LIST, "/getWebhooks");
        list.query = property.iter().map(|property| ("propertyID".to_string(), property.clone())).collect();
        return Ok(RegistrationStep::Fetch(vec![list]));
    };
    let mut registered = existing(&answered(list)?, &request.listener_url);
    let missing: Vec<&str> = EVENTS.iter().copied().filter(|event| !registered.iter().any(|(name, _)| name == event)).collect();
    let posted: Vec<&ApiResponse> = request.responses.iter().filter(|response| response.id.starts_with("register-")).collect();
    if posted.is_empty() && !missing.is_empty() {
        let requests = missing
            .iter()
            .map(|event| {
                let (object, action) = event.split_once('/').expect("events are object/action");
                let mut form = form_urlencoded::Serializer::new(String::new());
                if let Some(property) = &property {
                    form.append_pair("propertyID", property);
                }
                form.append_pair("object", object).append_pair("action", action).append_pair("endpointUrl", &request.listener_url);
                ApiRequest {
                    method: "POST".into(),
                    headers: vec![("content-type".into(), "application/x-www-form-urlencoded".into())],
                    body: Some(form.finish().into_bytes()),
                    ..api::get(&format!("register-{event}"), "/postWebhook")
                }
            })
            .collect();
        return Ok(RegistrationStep::Fetch(requests));
    }
    for event in missing {
        let id = format!("register-{event}");
        let response = api::response(&request.responses, &id).ok_or_else(|| PluginError::BadPayload(format!("{id} was not answered")))?;
        let subscription = json::path(&answered(response)?, &["data", "subscriptionID"])
            .and_then(json::text)
            .ok_or_else(|| PluginError::BadPayload(format!("{id}: Cloudbeds answered without a subscriptionID")))?;
        registered.push((event.to_string(), subscription));
    }
    Ok(RegistrationStep::Done(registered.into_iter().map(|(event, id)| (format!("subscription-{event}"), id)).collect()))
}

fn unregister(request: &RegistrationRequest) -> Result<RegistrationStep, PluginError> {
    let subscriptions: Vec<&(String, String)> = request.registered.iter().filter(|(name, _)| name.starts_with("subscription-")).collect();
    if request.responses.is_empty() && !subscriptions.is_empty() {
        let property = property(request);
        let requests = subscriptions
            .iter()
            .map(|(name, id)| {
                let mut query = vec![("subscriptionID".to_string(), id.clone())];
                if let Some(property) = &property {
                    query.push(("propertyIDs".into(), property.clone()));
                }
                ApiRequest { method: "DELETE".into(), query, ..api::get(&format!("delete-{name}"), "/deleteWebhook") }
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use stayhook_plugin_sdk::testing::{answer, registration_request};

    const LISTENER: &str = "https://hooks.example.com/listen/cb?token=t";

    fn request(action: RegistrationAction, responses: Vec<ApiResponse>) -> RegistrationRequest {
        registration_request(action, LISTENER)
            .setting("propertyID", "318267")
            .registered("subscription-reservation/created", "s1")
            .responses(responses)
            .build()
    }

    #[test]
    fn register_lists_then_creates_only_the_missing_subscriptions() {
        let Ok(RegistrationStep::Fetch(first)) = subscribe(&request(RegistrationAction::Register, Vec::new())) else { panic!() };
        assert_eq!(first[0].path, "/getWebhooks");
        let list = answer(
            LIST,
            200,
            json!({"success": true, "data": [
                {"id": "s1", "event": {"entity": "reservation", "action": "created"}, "subscriptionType": "webhook", "subscriptionData": {"endpoint": LISTENER}},
                {"id": "s9", "event": {"entity": "reservation", "action": "deleted"}, "subscriptionType": "webhook", "subscriptionData": {"endpoint": "https://elsewhere.example"}}
            ]}),
        );
        let Ok(RegistrationStep::Fetch(posts)) = subscribe(&request(RegistrationAction::Register, vec![list.clone()])) else { panic!() };
        assert_eq!(posts.len(), 3, "reservation/created exists already");
        let body = String::from_utf8(posts[0].body.clone().unwrap()).unwrap();
        assert_eq!(
            body,
            "propertyID=318267&object=reservation&action=status_changed&endpointUrl=https%3A%2F%2Fhooks.example.com%2Flisten%2Fcb%3Ftoken%3Dt"
        );
        let mut responses = vec![list];
        for (n, post) in posts.iter().enumerate() {
            responses.push(answer(&post.id, 200, json!({"success": true, "data": {"subscriptionID": format!("n{n}")}})));
        }
        let Ok(RegistrationStep::Done(stored)) = subscribe(&request(RegistrationAction::Register, responses)) else { panic!() };
        assert_eq!(stored.len(), 4);
        assert!(stored.contains(&("subscription-reservation/created".into(), "s1".into())));
        assert!(stored.contains(&("subscription-reservation/deleted".into(), "n2".into())));
    }

    #[test]
    fn a_refused_subscription_fails_registration_with_cloudbeds_message() {
        let list = answer(LIST, 200, json!({"success": true, "data": []}));
        let Ok(RegistrationStep::Fetch(posts)) = subscribe(&request(RegistrationAction::Register, vec![list.clone()])) else { panic!() };
        let mut responses = vec![list];
        for post in &posts {
            responses.push(answer(&post.id, 200, json!({"success": false, "message": "Invalid endpointUrl"})));
        }
        let error = subscribe(&request(RegistrationAction::Register, responses)).unwrap_err();
        assert!(matches!(error, PluginError::BadPayload(message) if message.contains("Invalid endpointUrl")));
    }

    #[test]
    fn unregister_deletes_each_stored_subscription() {
        let Ok(RegistrationStep::Fetch(deletes)) = subscribe(&request(RegistrationAction::Unregister, Vec::new())) else { panic!() };
        assert_eq!(deletes.len(), 1);
        assert_eq!(deletes[0].method, "DELETE");
        assert_eq!(
            deletes[0].query,
            vec![("subscriptionID".to_string(), "s1".to_string()), ("propertyIDs".to_string(), "318267".to_string())]
        );
        let gone = answer(&deletes[0].id, 404, json!({}));
        assert!(matches!(subscribe(&request(RegistrationAction::Unregister, vec![gone])), Ok(RegistrationStep::Done(_))));
    }
}
