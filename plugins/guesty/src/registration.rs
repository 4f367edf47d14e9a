//! Registering the listener as a Guesty webhook, and removing it.
//!
//! `register`: `POST /v1/webhooks` `{"url", "events"}` (request `register`), then
//! `GET /v1/webhooks-v2/secret?url=<listener>` (request `secret`; Guesty may answer 404 for a few
//! seconds after creating the subscription, so a 404 is asked once more as `secret-retry`), then
//! store `webhookId` and `secret` (the `whsec_...` Standard Webhooks key the host verifies with).
//! `unregister`: `DELETE /v1/webhooks/{webhookId}` (request `unregister`); already gone is fine.

use serde_json::{Value, json};
use stayhook_plugin_sdk::api;
use stayhook_plugin_sdk::json as read;
use stayhook_plugin_sdk::model::*;

use stayhook_plugin_sdk::json::path;

/// The name under which the webhook id is stored.
pub const WEBHOOK_ID: &str = "webhookId";
/// The name under which the signing secret is stored.
pub const SECRET: &str = "secret";
/// Events the registration subscribes to: the v2 reservation events (the legacy ones need Guesty's
/// approval for new subscriptions), both message events and calendar changes.
pub const SUBSCRIBED: &[&str] = &[
    "reservation.created.v2",
    "reservation.updated.v2",
    "reservation.messageReceived",
    "reservation.messageSent",
    "listing.calendar.updated",
];

const REGISTER: &str = "register";
const SECRET_REQUEST: &str = "secret";
const SECRET_RETRY: &str = "secret-retry";
const UNREGISTER: &str = "unregister";

/// One step of registration.
pub fn subscribe(request: &RegistrationRequest) -> Result<RegistrationStep, PluginError> {
    match request.action {
        RegistrationAction::Register => register(request),
        RegistrationAction::Unregister => unregister(request),
    }
}

fn register(request: &RegistrationRequest) -> Result<RegistrationStep, PluginError> {
    let Some(created) = api::response(&request.responses, REGISTER) else {
        let body = json!({ "url": request.listener_url, "events": SUBSCRIBED });
        return Ok(RegistrationStep::Fetch(vec![ApiRequest {
            id: REGISTER.into(),
            method: "POST".into(),
            path: "/v1/webhooks".into(),
            query: Vec::new(),
            headers: vec![("content-type".into(), "application/json".into())],
            body: Some(body.to_string().into_bytes()),
        }]));
    };
    let answer = api::successful(created).map_err(|reason| PluginError::BadPayload(format!("creating the Guesty webhook: {reason}")))?;
    let webhook_id = [Some(&answer), answer.get("data"), answer.get("result")]
        .into_iter()
        .flatten()
        .find_map(|value| read::string(value, "_id").or_else(|| read::string(value, "id")))
        .ok_or_else(|| PluginError::BadPayload("Guesty's answer to the webhook creation has no `_id`".into()))?;

    let secret_request = |id: &str| ApiRequest {
        id: id.into(),
        method: "GET".into(),
        path: "/v1/webhooks-v2/secret".into(),
        query: vec![("url".into(), request.listener_url.clone())],
        headers: vec![("accept".into(), "application/json".into())],
        body: None,
    };
    let Some(first) = api::response(&request.responses, SECRET_REQUEST) else {
        return Ok(RegistrationStep::Fetch(vec![secret_request(SECRET_REQUEST)]));
    };
    let answer = if first.status == 404 {
        let Some(retry) = api::response(&request.responses, SECRET_RETRY) else {
            return Ok(RegistrationStep::Fetch(vec![secret_request(SECRET_RETRY)]));
        };
        retry
    } else {
        first
    };
    let secret = secret_of(answer).map_err(|reason| {
        PluginError::BadPayload(format!(
            "Guesty created webhook {webhook_id} but did not hand out its signing secret ({reason}); \
             delete it (DELETE /v1/webhooks/{webhook_id}) and register again"
        ))
    })?;
    Ok(RegistrationStep::Done(vec![(WEBHOOK_ID.into(), webhook_id), (SECRET.into(), secret)]))
}

/// The `whsec_...` secret of an answer: a JSON `secret`/`key` (top level or in `data`), or the bare
/// text of the body.
pub fn secret_of(response: &ApiResponse) -> Result<String, String> {
    if let Some(error) = &response.error {
        return Err(error.clone());
    }
    if !(200..300).contains(&response.status) {
        return Err(format!("HTTP {}", response.status));
    }
    let text = String::from_utf8_lossy(&response.body);
    let found = match serde_json::from_str::<Value>(&text) {
        Ok(Value::String(secret)) => Some(secret),
        Ok(value) => [Some(&value), value.get("data")]
            .into_iter()
            .flatten()
            .find_map(|value| read::string(value, "secret").or_else(|| read::string(value, "key")))
            .or_else(|| path(&value, &["data"]).and_then(read::text)),
        Err(_) => Some(text.trim().to_string()),
    };
    found.filter(|secret| secret.starts_with("whsec_")).ok_or_else(|| "no whsec_ secret in the answer".to_string())
}

fn unregister(request: &RegistrationRequest) -> Result<RegistrationStep, PluginError> {
    let Some((_, id)) = request.registered.iter().find(|(name, _)| name == WEBHOOK_ID) else {
        return Ok(RegistrationStep::Done(Vec::new()));
    };
    let Some(response) = api::response(&request.responses, UNREGISTER) else {
        return Ok(RegistrationStep::Fetch(vec![ApiRequest {
            id: UNREGISTER.into(),
            method: "DELETE".into(),
            path: format!("/v1/webhooks/{id}"),
            query: Vec::new(),
            headers: Vec::new(),
            body: None,
        }]));
    };
    if response.status != 404 {
        api::successful_or_empty(response).map_err(|reason| PluginError::BadPayload(format!("deleting Guesty webhook {id}: {reason}")))?;
    }
    Ok(RegistrationStep::Done(Vec::new()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use stayhook_plugin_sdk::testing::{answer_bytes, registration_fetches, registration_request};

    fn request(action: RegistrationAction, registered: Vec<(String, String)>, responses: Vec<ApiResponse>) -> RegistrationRequest {
        registration_request(action, "https://hooks.example.com/in/a").registered_values(registered).responses(responses).build()
    }

    #[test]
    fn register_creates_then_reads_the_secret_retrying_a_404_once() {
        let step = subscribe(&request(RegistrationAction::Register, Vec::new(), Vec::new())).unwrap();
        let requests = registration_fetches(step);
        assert_eq!((requests[0].id.as_str(), requests[0].method.as_str(), requests[0].path.as_str()), ("register", "POST", "/v1/webhooks"));
        let body: Value = serde_json::from_slice(requests[0].body.as_ref().unwrap()).unwrap();
        assert_eq!(body["url"], "https://hooks.example.com/in/a");
        assert_eq!(body["events"].as_array().unwrap().len(), 5);
        assert!(body["events"].as_array().unwrap().iter().any(|event| event == "reservation.updated.v2"));

        let created = answer_bytes("register", 200, r#"{"_id":"64f0c0ffee","url":"https://hooks.example.com/in/a"}"#);
        let requests = registration_fetches(subscribe(&request(RegistrationAction::Register, Vec::new(), vec![created.clone()])).unwrap());
        assert_eq!(requests[0].path, "/v1/webhooks-v2/secret");
        assert_eq!(requests[0].query, vec![("url".to_string(), "https://hooks.example.com/in/a".to_string())]);

        let not_yet = answer_bytes("secret", 404, r#"{"message":"Not found"}"#);
        let requests = registration_fetches(
            subscribe(&request(RegistrationAction::Register, Vec::new(), vec![created.clone(), not_yet.clone()])).unwrap(),
        );
        assert_eq!(requests[0].id, "secret-retry");

        let secret = answer_bytes("secret-retry", 200, r#"{"secret":"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}"#);
        let step = subscribe(&request(RegistrationAction::Register, Vec::new(), vec![created.clone(), not_yet.clone(), secret])).unwrap();
        let RegistrationStep::Done(stored) = step else { panic!("expected done") };
        assert_eq!(stored[0], ("webhookId".to_string(), "64f0c0ffee".to_string()));
        assert_eq!(stored[1], ("secret".to_string(), "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_string()));

        let still_missing = answer_bytes("secret-retry", 404, "");
        let error = subscribe(&request(RegistrationAction::Register, Vec::new(), vec![created, not_yet, still_missing])).unwrap_err();
        assert!(matches!(error, PluginError::BadPayload(message) if message.contains("64f0c0ffee") && message.contains("signing secret")));
    }

    #[test]
    fn secret_in_every_shape() {
        assert!(secret_of(&answer_bytes("s", 200, r#"{"key":"whsec_a"}"#)).is_ok());
        assert!(secret_of(&answer_bytes("s", 200, r#"{"data":{"secret":"whsec_b"}}"#)).is_ok());
        assert!(secret_of(&answer_bytes("s", 200, "whsec_c")).is_ok());
        assert!(secret_of(&answer_bytes("s", 200, r#""whsec_d""#)).is_ok());
        assert!(secret_of(&answer_bytes("s", 200, r#"{"secret":"nope"}"#)).is_err());
        assert!(secret_of(&answer_bytes("s", 500, "")).is_err());
    }

    #[test]
    fn unregister_deletes_the_stored_id() {
        let registered = vec![("webhookId".to_string(), "64f0c0ffee".to_string())];
        let requests = registration_fetches(subscribe(&request(RegistrationAction::Unregister, registered.clone(), Vec::new())).unwrap());
        assert_eq!((requests[0].method.as_str(), requests[0].path.as_str()), ("DELETE", "/v1/webhooks/64f0c0ffee"));
        let gone = answer_bytes("unregister", 404, "");
        assert!(matches!(
            subscribe(&request(RegistrationAction::Unregister, registered.clone(), vec![gone])).unwrap(),
            RegistrationStep::Done(_)
        ));
        let ok = answer_bytes("unregister", 204, "");
        assert!(matches!(
            subscribe(&request(RegistrationAction::Unregister, registered.clone(), vec![ok])).unwrap(),
            RegistrationStep::Done(_)
        ));
        let denied = answer_bytes("unregister", 403, "forbidden");
        assert!(subscribe(&request(RegistrationAction::Unregister, registered, vec![denied])).is_err());
        assert!(matches!(subscribe(&request(RegistrationAction::Unregister, Vec::new(), Vec::new())).unwrap(), RegistrationStep::Done(_)));
    }
}
