//! Automatic registration: one Uplisting hook per event.
//!
//! `POST https://connect.uplisting.io/hooks` with `{"target_url", "event"}` answers `{"id"}`;
//! `DELETE /hooks/{id}` removes it (Pipedream's Uplisting app and sources). The body of a hook
//! call does not say which event fired, so each event's target URL is the listener URL with
//! `event=<name>` appended to its query: the mapping reads it back from there.

use serde_json::{Value, json};
use stayhook_plugin_sdk::model::*;
use stayhook_plugin_sdk::{api, json};

use crate::mapping::{EVENT_PARAMETER, EVENTS};

/// Prefix of the stored hook ids (`webhook-<event>`).
pub const WEBHOOK_PREFIX: &str = "webhook-";

/// One step of registration.
pub fn subscribe(request: &RegistrationRequest) -> Result<RegistrationStep, PluginError> {
    match request.action {
        RegistrationAction::Register => register(request),
        RegistrationAction::Unregister => unregister(request),
    }
}

/// The listener URL of one event: `event=<name>` appended to its query.
pub fn target_url(listener_url: &str, event: &str) -> String {
    let separator = if listener_url.contains('?') { '&' } else { '?' };
    format!("{listener_url}{separator}{EVENT_PARAMETER}={event}")
}

fn json_request(id: String, method: &str, path: &str, body: Option<Value>) -> ApiRequest {
    ApiRequest {
        id,
        method: method.into(),
        path: path.into(),
        query: Vec::new(),
        headers: vec![("content-type".into(), "application/json".into())],
        body: body.map(|body| body.to_string().into_bytes()),
    }
}

fn register(request: &RegistrationRequest) -> Result<RegistrationStep, PluginError> {
    if request.responses.is_empty() {
        let requests = EVENTS
            .iter()
            .map(|event| {
                let body = json!({"target_url": target_url(&request.listener_url, event), "event": event});
                json_request(format!("hook-{event}"), "POST", "/hooks", Some(body))
            })
            .collect();
        return Ok(RegistrationStep::Fetch(requests));
    }
    let mut stored = Vec::new();
    let mut failures = Vec::new();
    for event in EVENTS {
        let id = format!("hook-{event}");
        let answer = api::response(&request.responses, &id).ok_or_else(|| format!("{id} was not answered")).and_then(api::successful);
        match answer.and_then(|answer| json::string(&answer, "id").ok_or_else(|| format!("{id}: Uplisting answered without a hook `id`"))) {
            Ok(hook) => stored.push((format!("{WEBHOOK_PREFIX}{event}"), hook)),
            Err(reason) => failures.push(reason),
        }
    }
    if !failures.is_empty() {
        let created: Vec<String> = stored.iter().map(|(name, id)| format!("{name}={id}")).collect();
        return Err(PluginError::BadPayload(format!(
            "registering Uplisting hooks failed: {}. Hooks created before the failure: [{}]; remove them with \
             DELETE https://connect.uplisting.io/hooks/{{id}} before registering again",
            failures.join("; "),
            created.join(", ")
        )));
    }
    Ok(RegistrationStep::Done(stored))
}

fn unregister(request: &RegistrationRequest) -> Result<RegistrationStep, PluginError> {
    let hooks: Vec<(&str, &str)> =
        request.registered.iter().filter_map(|(name, id)| name.strip_prefix(WEBHOOK_PREFIX).map(|event| (event, id.as_str()))).collect();
    if hooks.is_empty() {
        return Ok(RegistrationStep::Done(Vec::new()));
    }
    if request.responses.is_empty() {
        let requests =
            hooks.iter().map(|(event, id)| json_request(format!("unhook-{event}"), "DELETE", &format!("/hooks/{id}"), None)).collect();
        return Ok(RegistrationStep::Fetch(requests));
    }
    let mut failures = Vec::new();
    for (event, id) in &hooks {
        let request_id = format!("unhook-{event}");
        match api::response(&request.responses, &request_id) {
            None => failures.push(format!("{request_id} was not answered")),
            Some(response) if response.status == 404 => {}
            Some(response) => {
                if let Err(reason) = api::successful_or_empty(response) {
                    failures.push(format!("hook {id} ({event}): {reason}"));
                }
            }
        }
    }
    if !failures.is_empty() {
        return Err(PluginError::BadPayload(format!("removing Uplisting hooks failed: {}", failures.join("; "))));
    }
    Ok(RegistrationStep::Done(Vec::new()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use stayhook_plugin_sdk::testing::{answer_bytes, registration_request};

    fn request(action: RegistrationAction, registered: Vec<(&str, &str)>, responses: Vec<ApiResponse>) -> RegistrationRequest {
        let request = registration_request(action, "https://hooks.example.com/listen/a?token=t").responses(responses);
        registered.into_iter().fold(request, |request, (name, value)| request.registered(name, value)).build()
    }

    #[test]
    fn one_hook_per_event_each_with_its_own_url() {
        let Ok(RegistrationStep::Fetch(requests)) = subscribe(&request(RegistrationAction::Register, vec![], vec![])) else {
            panic!("expected a fetch")
        };
        assert_eq!(requests.len(), 3);
        assert_eq!((requests[0].method.as_str(), requests[0].path.as_str()), ("POST", "/hooks"));
        let body: Value = serde_json::from_slice(requests[2].body.as_ref().unwrap()).unwrap();
        assert_eq!(
            body,
            json!({"target_url": "https://hooks.example.com/listen/a?token=t&event=booking_removed", "event": "booking_removed"})
        );
        let answers = vec![
            answer_bytes("hook-booking_created", 201, r#"{"id": 11}"#),
            answer_bytes("hook-booking_updated", 201, r#"{"id": 12}"#),
            answer_bytes("hook-booking_removed", 201, r#"{"id": "13"}"#),
        ];
        let Ok(RegistrationStep::Done(stored)) = subscribe(&request(RegistrationAction::Register, vec![], answers)) else {
            panic!("expected done")
        };
        assert_eq!(stored[0], ("webhook-booking_created".to_string(), "11".to_string()));
        assert_eq!(stored[2], ("webhook-booking_removed".to_string(), "13".to_string()));
    }

    #[test]
    fn a_failed_hook_names_the_ones_created() {
        let answers = vec![
            answer_bytes("hook-booking_created", 201, r#"{"id": 11}"#),
            answer_bytes("hook-booking_updated", 401, "denied"),
            answer_bytes("hook-booking_removed", 201, r#"{}"#),
        ];
        let error = subscribe(&request(RegistrationAction::Register, vec![], answers)).unwrap_err();
        assert!(
            matches!(error, PluginError::BadPayload(ref m) if m.contains("webhook-booking_created=11") && m.contains("401")),
            "{error:?}"
        );
    }

    #[test]
    fn unregister_deletes_every_stored_hook() {
        let registered = vec![("webhook-booking_created", "11"), ("webhook-booking_removed", "13")];
        let Ok(RegistrationStep::Fetch(requests)) = subscribe(&request(RegistrationAction::Unregister, registered.clone(), vec![])) else {
            panic!("expected a fetch")
        };
        assert_eq!((requests[1].method.as_str(), requests[1].path.as_str()), ("DELETE", "/hooks/13"));
        let answers = vec![answer_bytes("unhook-booking_created", 204, ""), answer_bytes("unhook-booking_removed", 404, "")];
        assert!(
            matches!(subscribe(&request(RegistrationAction::Unregister, registered, answers)), Ok(RegistrationStep::Done(v)) if v.is_empty())
        );
    }
}
