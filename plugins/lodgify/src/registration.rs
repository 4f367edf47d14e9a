//! Automatic registration: one Lodgify webhook subscription per event.
//!
//! Lodgify subscribes one `target_url` to one `event` (`POST /webhooks/v1/subscribe`
//! `{"target_url", "event"}`, X-ApiKey) and the target URL "must be unique", so each event gets the
//! listener URL with `event=<name>` appended to its query. The answer holds the subscription `id`
//! and its signing `secret`, "only returned at the moment you create the webhook".
//! `unregister` removes each stored subscription with `DELETE /webhooks/v1/unsubscribe` `{"id"}`.
//!
//! Secrets: Lodgify generates "a unique secret key for each endpoint", while the host verifies an
//! account with ONE secret. The plugin hands the secret over as `secret` (the account's
//! verification secret) only when every subscription answered the same one (always the case when
//! the account setting `events` names a single event). Otherwise no secret is stored, the host
//! does not verify this account's webhooks, and the registration says so in
//! `signatureVerification`. See the README's open points.

use serde_json::{Value, json};
use stayhook_plugin_sdk::model::*;
use stayhook_plugin_sdk::{api, json};

use crate::mapping::EVENTS;

/// Events registered when the account setting `events` is absent: every mapped event except
/// `booking_new_status_booked`, which `booking_new_any_status` already covers.
pub const DEFAULT_EVENTS: &[&str] = &[
    "booking_new_any_status",
    "booking_change",
    "booking_status_change_booked",
    "booking_status_change_tentative",
    "booking_status_change_open",
    "booking_status_change_declined",
    "guest_message_received",
];
/// Prefix of the stored subscription ids (`webhook-<event>`).
pub const WEBHOOK_PREFIX: &str = "webhook-";
/// The name under which the signing secret is handed to the host.
pub const SECRET: &str = "secret";
/// The name of the note stored when the subscriptions' secrets differ.
pub const VERIFICATION_NOTE: &str = "signatureVerification";

/// One step of registration.
pub fn subscribe(request: &RegistrationRequest) -> Result<RegistrationStep, PluginError> {
    match request.action {
        RegistrationAction::Register => register(request),
        RegistrationAction::Unregister => unregister(request),
    }
}

/// The events to subscribe: the account setting `events` (comma-separated Lodgify names), else
/// [`DEFAULT_EVENTS`].
pub fn events(settings: &[(String, String)]) -> Result<Vec<String>, PluginError> {
    let Some((_, value)) = settings.iter().find(|(name, _)| name == "events") else {
        return Ok(DEFAULT_EVENTS.iter().map(|event| event.to_string()).collect());
    };
    let mut chosen: Vec<String> = Vec::new();
    for event in value.split(',').map(str::trim).filter(|event| !event.is_empty()) {
        if !EVENTS.contains(&event) {
            return Err(PluginError::BadPayload(format!(
                "the account setting `events` names {event:?}, which this plugin does not map (known: {})",
                EVENTS.join(", ")
            )));
        }
        if !chosen.iter().any(|known| known == event) {
            chosen.push(event.to_string());
        }
    }
    if chosen.is_empty() {
        return Err(PluginError::BadPayload("the account setting `events` names no event".into()));
    }
    Ok(chosen)
}

/// The listener URL made unique per event: `event=<name>` appended to its query.
pub fn target_url(listener_url: &str, event: &str) -> String {
    let separator = if listener_url.contains('?') { '&' } else { '?' };
    format!("{listener_url}{separator}event={event}")
}

fn json_request(id: String, method: &str, path: &str, body: Value) -> ApiRequest {
    ApiRequest {
        id,
        method: method.into(),
        path: path.into(),
        query: Vec::new(),
        headers: vec![("content-type".into(), "application/json".into())],
        body: Some(body.to_string().into_bytes()),
    }
}

fn register(request: &RegistrationRequest) -> Result<RegistrationStep, PluginError> {
    let events = events(&request.account.settings)?;
    if request.responses.is_empty() {
        let requests = events
            .iter()
            .map(|event| {
                let body = json!({"target_url": target_url(&request.listener_url, event), "event": event});
                json_request(format!("subscribe-{event}"), "POST", "/webhooks/v1/subscribe", body)
            })
            .collect();
        return Ok(RegistrationStep::Fetch(requests));
    }
    let mut stored = Vec::new();
    let mut secrets: Vec<String> = Vec::new();
    let mut failures = Vec::new();
    for event in &events {
        let id = format!("subscribe-{event}");
        let answer = api::response(&request.responses, &id).ok_or_else(|| format!("{id} was not answered")).and_then(api::successful);
        let subscription = answer.and_then(|answer| {
            let webhook = json::string(&answer, "id").ok_or_else(|| format!("{id}: Lodgify answered without a subscription `id`"))?;
            Ok((webhook, json::string(&answer, "secret")))
        });
        match subscription {
            Ok((webhook, secret)) => {
                stored.push((format!("{WEBHOOK_PREFIX}{event}"), webhook));
                match secret {
                    Some(secret) if !secrets.contains(&secret) => secrets.push(secret),
                    Some(_) => {}
                    None => failures.push(format!("{id}: Lodgify answered without the signing `secret`")),
                }
            }
            Err(reason) => failures.push(reason),
        }
    }
    if !failures.is_empty() {
        let created: Vec<String> = stored.iter().map(|(name, id)| format!("{name}={id}")).collect();
        return Err(PluginError::BadPayload(format!(
            "registering Lodgify webhooks failed: {}. Subscriptions created before the failure: [{}]; remove them with \
             DELETE /webhooks/v1/unsubscribe {{\"id\": ...}} before registering again",
            failures.join("; "),
            created.join(", ")
        )));
    }
    match secrets.as_slice() {
        [secret] => stored.push((SECRET.into(), secret.clone())),
        _ => stored.push((
            VERIFICATION_NOTE.into(),
            format!(
                "off: Lodgify issued {} different signing secrets (one per subscription) and the host verifies an account with one; \
                 set the account setting `events` to a single event, or one account per event, to verify ms-signature",
                secrets.len()
            ),
        )),
    }
    Ok(RegistrationStep::Done(stored))
}

/// A stored subscription id as Lodgify sent it: digits go back as a JSON number, anything else as text.
fn id_value(id: &str) -> Value {
    id.parse::<u64>().map(Value::from).unwrap_or_else(|_| Value::String(id.to_string()))
}

fn unregister(request: &RegistrationRequest) -> Result<RegistrationStep, PluginError> {
    let webhooks: Vec<(&str, &str)> =
        request.registered.iter().filter_map(|(name, id)| name.strip_prefix(WEBHOOK_PREFIX).map(|event| (event, id.as_str()))).collect();
    if webhooks.is_empty() {
        return Ok(RegistrationStep::Done(Vec::new()));
    }
    if request.responses.is_empty() {
        let requests = webhooks
            .iter()
            .map(|(event, id)| {
                json_request(format!("unsubscribe-{event}"), "DELETE", "/webhooks/v1/unsubscribe", json!({"id": id_value(id)}))
            })
            .collect();
        return Ok(RegistrationStep::Fetch(requests));
    }
    let mut failures = Vec::new();
    for (event, id) in &webhooks {
        let request_id = format!("unsubscribe-{event}");
        match api::response(&request.responses, &request_id) {
            None => failures.push(format!("{request_id} was not answered")),
            Some(response) if response.status == 404 => {}
            Some(response) => {
                if let Err(reason) = api::successful_or_empty(response) {
                    failures.push(format!("subscription {id} ({event}): {reason}"));
                }
            }
        }
    }
    if !failures.is_empty() {
        return Err(PluginError::BadPayload(format!("removing Lodgify webhooks failed: {}", failures.join("; "))));
    }
    Ok(RegistrationStep::Done(Vec::new()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use stayhook_plugin_sdk::testing::{answer_bytes, registration_done, registration_fetches, registration_request};

    fn request(
        action: RegistrationAction,
        settings: Vec<(&str, &str)>,
        registered: Vec<(&str, &str)>,
        responses: Vec<ApiResponse>,
    ) -> RegistrationRequest {
        let request = registration_request(action, "https://hooks.example.com/in/a").responses(responses);
        let request = settings.into_iter().fold(request, |request, (name, value)| request.setting(name, value));
        registered.into_iter().fold(request, |request, (name, value)| request.registered(name, value)).build()
    }

    #[test]
    fn one_subscription_per_default_event_with_a_unique_url() {
        let requests = registration_fetches(subscribe(&request(RegistrationAction::Register, vec![], vec![], vec![])).unwrap());
        assert_eq!(requests.len(), DEFAULT_EVENTS.len());
        let first = &requests[0];
        assert_eq!(
            (first.id.as_str(), first.method.as_str(), first.path.as_str()),
            ("subscribe-booking_new_any_status", "POST", "/webhooks/v1/subscribe")
        );
        let body: Value = serde_json::from_slice(first.body.as_ref().unwrap()).unwrap();
        assert_eq!(
            body,
            json!({"target_url": "https://hooks.example.com/in/a?event=booking_new_any_status", "event": "booking_new_any_status"})
        );
        assert_eq!(target_url("https://h/in/a?token=x", "booking_change"), "https://h/in/a?token=x&event=booking_change");
    }

    #[test]
    fn a_single_event_hands_its_secret_to_the_host() {
        let settings = vec![("events", "booking_change")];
        let requests = registration_fetches(subscribe(&request(RegistrationAction::Register, settings.clone(), vec![], vec![])).unwrap());
        assert_eq!(requests.len(), 1);
        let answer = answer_bytes("subscribe-booking_change", 200, r#"{"id": 42, "secret": "s3cr3t"}"#);
        let stored = registration_done(subscribe(&request(RegistrationAction::Register, settings, vec![], vec![answer])).unwrap());
        assert_eq!(stored, vec![("webhook-booking_change".to_string(), "42".to_string()), ("secret".to_string(), "s3cr3t".to_string())]);
    }

    #[test]
    fn different_secrets_leave_verification_off_and_say_so() {
        let settings = vec![("events", "booking_change, guest_message_received")];
        let answers = vec![
            answer_bytes("subscribe-booking_change", 200, r#"{"id": "a1", "secret": "one"}"#),
            answer_bytes("subscribe-guest_message_received", 200, r#"{"id": "a2", "secret": "two"}"#),
        ];
        let stored = registration_done(subscribe(&request(RegistrationAction::Register, settings, vec![], answers)).unwrap());
        assert!(stored.iter().all(|(name, _)| name != "secret"));
        assert!(stored.iter().any(|(name, value)| name == VERIFICATION_NOTE && value.starts_with("off: Lodgify issued 2")));
        assert!(stored.contains(&("webhook-guest_message_received".to_string(), "a2".to_string())));
    }

    #[test]
    fn failures_name_the_created_subscriptions() {
        let settings = vec![("events", "booking_change,guest_message_received")];
        let answers = vec![
            answer_bytes("subscribe-booking_change", 200, r#"{"id": 7, "secret": "one"}"#),
            answer_bytes("subscribe-guest_message_received", 500, r#"{"message": "target_url already exists", "code": 0}"#),
        ];
        let error = subscribe(&request(RegistrationAction::Register, settings, vec![], answers)).unwrap_err();
        assert!(
            matches!(error, PluginError::BadPayload(message) if message.contains("webhook-booking_change=7") && message.contains("HTTP 500"))
        );
    }

    #[test]
    fn unknown_events_in_the_setting_are_refused() {
        let error = subscribe(&request(RegistrationAction::Register, vec![("events", "rate_change")], vec![], vec![])).unwrap_err();
        assert!(matches!(error, PluginError::BadPayload(message) if message.contains("rate_change")));
        assert!(subscribe(&request(RegistrationAction::Register, vec![("events", " , ")], vec![], vec![])).is_err());
    }

    #[test]
    fn unregister_removes_every_stored_subscription() {
        let registered = vec![("webhook-booking_change", "42"), ("webhook-guest_message_received", "ab-1"), ("secret", "x")];
        let requests =
            registration_fetches(subscribe(&request(RegistrationAction::Unregister, vec![], registered.clone(), vec![])).unwrap());
        assert_eq!(requests.len(), 2);
        assert_eq!((requests[0].method.as_str(), requests[0].path.as_str()), ("DELETE", "/webhooks/v1/unsubscribe"));
        let body: Value = serde_json::from_slice(requests[0].body.as_ref().unwrap()).unwrap();
        assert_eq!(body, json!({"id": 42}));
        let body: Value = serde_json::from_slice(requests[1].body.as_ref().unwrap()).unwrap();
        assert_eq!(body, json!({"id": "ab-1"}));
        let answers =
            vec![answer_bytes("unsubscribe-booking_change", 200, ""), answer_bytes("unsubscribe-guest_message_received", 404, "")];
        assert!(
            registration_done(subscribe(&request(RegistrationAction::Unregister, vec![], registered.clone(), answers)).unwrap()).is_empty()
        );
        let denied =
            vec![answer_bytes("unsubscribe-booking_change", 401, "denied"), answer_bytes("unsubscribe-guest_message_received", 200, "")];
        assert!(subscribe(&request(RegistrationAction::Unregister, vec![], registered, denied)).is_err());
        assert!(registration_done(subscribe(&request(RegistrationAction::Unregister, vec![], vec![], vec![])).unwrap()).is_empty());
    }
}
