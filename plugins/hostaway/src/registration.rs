//! Registering the listener as a Hostaway unified webhook, and removing it.
//!
//! `register`: `POST /v1/webhooks/unifiedWebhooks` with `{"isEnabled":1,"url":...}`, then store the
//! `result.id` of the answer as `webhookId`. `unregister`: `DELETE
//! /v1/webhooks/unifiedWebhooks/{webhookId}`. Source: `source/includes/_webhook_unified*.md` in
//! <https://github.com/Hostaway/api>.

use serde_json::{Value, json};
use stayhook_plugin_sdk::json as read;
use stayhook_plugin_sdk::model::*;

/// Where unified webhooks live in Hostaway's API.
pub const WEBHOOKS_PATH: &str = "/v1/webhooks/unifiedWebhooks";
/// The name under which the webhook id is stored.
pub const WEBHOOK_ID: &str = "webhookId";

const CREATE: &str = "create-webhook";
const DELETE: &str = "delete-webhook";

/// One step of registration.
pub fn subscribe(request: &RegistrationRequest) -> Result<RegistrationStep, PluginError> {
    match request.action {
        RegistrationAction::Register => register(request),
        RegistrationAction::Unregister => unregister(request),
    }
}

fn register(request: &RegistrationRequest) -> Result<RegistrationStep, PluginError> {
    let Some(response) = request.responses.iter().find(|response| response.id == CREATE) else {
        let body = json!({
            "isEnabled": 1,
            "url": request.listener_url,
            "login": null,
            "password": null,
            "alertingEmailAddress": null,
        });
        return Ok(RegistrationStep::Fetch(vec![ApiRequest {
            id: CREATE.into(),
            method: "POST".into(),
            path: WEBHOOKS_PATH.into(),
            query: Vec::new(),
            headers: vec![("content-type".into(), "application/json".into())],
            body: Some(body.to_string().into_bytes()),
        }]));
    };
    let body = successful(response, "creating the unified webhook")?;
    let id = body
        .get("result")
        .and_then(|result| read::string(result, "id"))
        .ok_or_else(|| PluginError::BadPayload("Hostaway's answer to the webhook creation has no `result.id`".into()))?;
    Ok(RegistrationStep::Done(vec![(WEBHOOK_ID.into(), id)]))
}

fn unregister(request: &RegistrationRequest) -> Result<RegistrationStep, PluginError> {
    let Some((_, id)) = request.registered.iter().find(|(name, _)| name == WEBHOOK_ID) else {
        return Ok(RegistrationStep::Done(Vec::new()));
    };
    let Some(response) = request.responses.iter().find(|response| response.id == DELETE) else {
        return Ok(RegistrationStep::Fetch(vec![ApiRequest {
            id: DELETE.into(),
            method: "DELETE".into(),
            path: format!("{WEBHOOKS_PATH}/{id}"),
            query: Vec::new(),
            headers: Vec::new(),
            body: None,
        }]));
    };
    // Already gone is as good as deleted.
    if response.status != 404 {
        successful(response, "deleting the unified webhook")?;
    }
    Ok(RegistrationStep::Done(Vec::new()))
}

fn successful(response: &ApiResponse, what: &str) -> Result<Value, PluginError> {
    if let Some(error) = &response.error {
        return Err(PluginError::BadPayload(format!("{what}: {error}")));
    }
    if !(200..300).contains(&response.status) {
        let text = String::from_utf8_lossy(&response.body);
        let excerpt: String = text.chars().take(300).collect();
        return Err(PluginError::BadPayload(format!("{what}: HTTP {}: {excerpt}", response.status)));
    }
    Ok(serde_json::from_slice(&response.body).unwrap_or(Value::Null))
}

#[cfg(test)]
mod tests {
    use super::*;
    use stayhook_plugin_sdk::testing::{answer_bytes, registration_request};

    fn request(action: RegistrationAction, registered: Vec<(String, String)>, responses: Vec<ApiResponse>) -> RegistrationRequest {
        registration_request(action, "https://hooks.example.com/in/a").registered_values(registered).responses(responses).build()
    }

    #[test]
    fn register_posts_then_stores_the_id() {
        let step = subscribe(&request(RegistrationAction::Register, Vec::new(), Vec::new())).unwrap();
        let RegistrationStep::Fetch(requests) = step else { panic!("expected a fetch") };
        assert_eq!(requests[0].method, "POST");
        assert_eq!(requests[0].path, "/v1/webhooks/unifiedWebhooks");
        let body: Value = serde_json::from_slice(requests[0].body.as_ref().unwrap()).unwrap();
        assert_eq!(body["isEnabled"], 1);
        assert_eq!(body["url"], "https://hooks.example.com/in/a");
        assert!(body["login"].is_null() && body["password"].is_null() && body["alertingEmailAddress"].is_null());

        let answer = answer_bytes(CREATE, 200, r#"{"status":"success","result":{"id":3021,"isEnabled":1}}"#);
        let step = subscribe(&request(RegistrationAction::Register, Vec::new(), vec![answer])).unwrap();
        let RegistrationStep::Done(stored) = step else { panic!("expected done") };
        assert_eq!(stored, vec![("webhookId".to_string(), "3021".to_string())]);

        let failed = answer_bytes(CREATE, 403, "forbidden");
        assert!(subscribe(&request(RegistrationAction::Register, Vec::new(), vec![failed])).is_err());
    }

    #[test]
    fn unregister_deletes_the_stored_id() {
        let registered = vec![("webhookId".to_string(), "3021".to_string())];
        let step = subscribe(&request(RegistrationAction::Unregister, registered.clone(), Vec::new())).unwrap();
        let RegistrationStep::Fetch(requests) = step else { panic!("expected a fetch") };
        assert_eq!(requests[0].method, "DELETE");
        assert_eq!(requests[0].path, "/v1/webhooks/unifiedWebhooks/3021");
        let answer = answer_bytes(DELETE, 200, r#"{"status":"success","result":[]}"#);
        let step = subscribe(&request(RegistrationAction::Unregister, registered, vec![answer])).unwrap();
        assert!(matches!(step, RegistrationStep::Done(stored) if stored.is_empty()));
    }
}
