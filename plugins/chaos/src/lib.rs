//! The chaos plugin: a real component that misbehaves on request, so the daemon's tests can prove
//! that a bad plugin fails its own events and nothing else.
//!
//! The body is JSON `{"behaviour": "...", "id": "..."}`. Behaviours: `ok` (one upserted reservation
//! with that id), `trap` (panics, which aborts into a trap), `loop` (never returns), `oom` (allocates
//! until the memory cap stops it), `invalid` (a reservation whose timestamp is not a timestamp), `delete` (a deleted reservation),
//! `bad-payload` (a refusal as data), `fetch` (asks the host for `GET /reservations/{id}` and takes
//! the arrival date from the answer, or reports the record incomplete when the API failed),
//! `fetch-foreign` (asks for a host it did not declare), `fetch-forever` (never stops asking).
//! Its API is declared with OAuth2 client credentials, so the tests exercise token caching.
//! Registration: with the account setting `manual` it answers manual instructions; otherwise it
//! registers with `POST /webhooks` and unregisters with `DELETE /webhooks/{webhookId}`.
//! Sync (contract 0.2, mode modified-since): one `GET /reservations?updatedSince=<since>&page=<n>`
//! per page, whose answer `{"reservations": [{"id", "arrivalDate", "updatedAt"?, "cancelled"?}],
//! "nextPage": n|null}` becomes upserted (or, `cancelled: true`, deleted) reservations; the
//! cursor is the next page number. Behaviour `ok` takes `arrivalDate` and `updatedAt` from the
//! webhook's body, so a test can make a webhook and a listing describe the same record.

use serde_json::Value;
use stayhook_plugin_sdk::model::*;
use stayhook_plugin_sdk::{Guest, export_plugin, json};

struct Chaos;

impl Guest for Chaos {
    fn describe() -> PluginInfo {
        PluginInfo {
            sync_modes: vec![SyncMode::ModifiedSince],
            name: "chaos".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            pms: "Chaos (test plugin)".into(),
            events: ["ok", "delete", "trap", "loop", "oom", "invalid", "bad-payload", "fetch", "fetch-foreign", "fetch-forever"]
                .map(String::from)
                .to_vec(),
            verification: VerificationScheme::None,
            api: Some(ApiInfo {
                base_url: "https://api.chaos.invalid".into(),
                allowed_hosts: Vec::new(),
                auth: AuthScheme::Oauth2ClientCredentials(Oauth2Client {
                    token_url: "https://api.chaos.invalid/oauth/token".into(),
                    scope: Some("chaos".into()),
                }),
            }),
        }
    }

    fn normalize(inbound: Inbound, responses: Vec<ApiResponse>) -> Result<Outcome, PluginError> {
        let body: Value =
            serde_json::from_slice(&inbound.body).map_err(|error| PluginError::BadPayload(format!("body is not JSON: {error}")))?;
        let id = json::string(&body, "id").unwrap_or_else(|| "chaos-1".into());
        match json::string(&body, "behaviour").as_deref() {
            Some("ok") => Ok(Outcome::Done(vec![Event::ReservationUpserted(Reservation {
                updated_at: json::string(&body, "updatedAt"),
                ..reservation(id, json::string(&body, "arrivalDate"))
            })])),
            Some("delete") => Ok(Outcome::Done(vec![Event::ReservationDeleted(id)])),
            Some("trap") => panic!("chaos plugin asked to trap"),
            Some("loop") => {
                let mut counter: u64 = 0;
                loop {
                    counter = std::hint::black_box(counter.wrapping_add(1));
                }
            }
            Some("oom") => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            Some("invalid") => Ok(Outcome::Done(vec![Event::ReservationUpserted(reservation(id, Some("next tuesday".into())))])),
            Some("fetch") => match responses.iter().find(|response| response.id == "reservation") {
                None => Ok(Outcome::Fetch(vec![get("reservation", format!("/reservations/{id}"))])),
                Some(response) if response.status == 200 => {
                    let answer: Value = serde_json::from_slice(&response.body).unwrap_or_default();
                    Ok(Outcome::Done(vec![Event::ReservationUpserted(reservation(id, json::string(&answer, "arrivalDate")))]))
                }
                Some(response) => Ok(Outcome::Done(vec![Event::Incomplete(Incomplete {
                    event_type: EventType::ReservationUpdated,
                    record_id: id,
                    reason: response.error.clone().unwrap_or_else(|| format!("HTTP {}", response.status)),
                })])),
            },
            Some("fetch-foreign") => Ok(Outcome::Fetch(vec![get("steal", "https://evil.example.com/steal".into())])),
            Some("fetch-forever") => Ok(Outcome::Fetch(vec![get(&format!("round-{}", responses.len()), format!("/reservations/{id}"))])),
            Some("bad-payload") => Err(PluginError::BadPayload("asked to refuse".into())),
            Some(other) => Err(PluginError::UnsupportedEvent(other.to_string())),
            None => Err(PluginError::BadPayload("missing `behaviour`".into())),
        }
    }

    fn subscribe(request: RegistrationRequest) -> Result<RegistrationStep, PluginError> {
        if request.account.settings.iter().any(|(name, _)| name == "manual") {
            return Ok(RegistrationStep::Manual(format!("Paste {} into the PMS's webhook settings.", request.listener_url)));
        }
        let answer = request.responses.last();
        match (request.action, answer) {
            (RegistrationAction::Register, None) => {
                let body = format!(r#"{{"url":{:?}}}"#, request.listener_url);
                Ok(RegistrationStep::Fetch(vec![ApiRequest {
                    body: Some(body.into_bytes()),
                    method: "POST".into(),
                    ..get("register", "/webhooks".into())
                }]))
            }
            (RegistrationAction::Register, Some(response)) if response.status == 201 || response.status == 200 => {
                let answer: Value = serde_json::from_slice(&response.body).unwrap_or_default();
                let webhook_id =
                    json::string(&answer, "id").ok_or_else(|| PluginError::BadPayload("the PMS answered without an id".into()))?;
                Ok(RegistrationStep::Done(vec![("webhookId".into(), webhook_id)]))
            }
            (RegistrationAction::Unregister, None) => {
                let webhook_id =
                    request.registered.iter().find(|(name, _)| name == "webhookId").map(|(_, value)| value.clone()).unwrap_or_default();
                Ok(RegistrationStep::Fetch(vec![ApiRequest {
                    method: "DELETE".into(),
                    ..get("unregister", format!("/webhooks/{webhook_id}"))
                }]))
            }
            (RegistrationAction::Unregister, Some(response)) if response.status < 300 || response.status == 404 => {
                Ok(RegistrationStep::Done(Vec::new()))
            }
            (_, Some(response)) => Err(PluginError::BadPayload(format!("the PMS answered HTTP {}", response.status))),
        }
    }

    fn sync(request: SyncRequest, responses: Vec<ApiResponse>) -> Result<SyncOutcome, PluginError> {
        let page = request.cursor.clone().unwrap_or_else(|| "1".into());
        let Some(response) = responses.iter().find(|response| response.id == "page") else {
            let mut query = vec![("page".to_string(), page)];
            if let Some(since) = &request.since {
                query.push(("updatedSince".into(), since.clone()));
            }
            return Ok(SyncOutcome::Fetch(vec![ApiRequest { query, ..get("page", "/reservations".into()) }]));
        };
        if response.status != 200 {
            return Err(PluginError::BadPayload(format!("the list answered HTTP {}", response.status)));
        }
        let answer: Value =
            serde_json::from_slice(&response.body).map_err(|error| PluginError::BadPayload(format!("the list is not JSON: {error}")))?;
        let events = answer
            .get("reservations")
            .and_then(Value::as_array)
            .ok_or_else(|| PluginError::BadPayload("the list has no `reservations` array".into()))?
            .iter()
            .filter_map(|item| {
                let id = json::string(item, "id")?;
                if item.get("cancelled").and_then(Value::as_bool) == Some(true) {
                    return Some(Event::ReservationDeleted(id));
                }
                let updated_at = json::string(item, "updatedAt");
                Some(Event::ReservationUpserted(Reservation { updated_at, ..reservation(id, json::string(item, "arrivalDate")) }))
            })
            .collect();
        let next = answer.get("nextPage").and_then(Value::as_u64).map(|page| page.to_string());
        Ok(SyncOutcome::Page(SyncPage { events, more: next.is_some(), next_cursor: next }))
    }
}

fn get(id: &str, path: String) -> ApiRequest {
    ApiRequest { id: id.into(), method: "GET".into(), path, query: Vec::new(), headers: Vec::new(), body: None }
}

fn reservation(id: String, arrival_date: Option<String>) -> Reservation {
    Reservation {
        id,
        created_at: None,
        updated_at: None,
        cancelled_at: None,
        arrival_date,
        departure_date: None,
        nights: None,
        property_id: None,
        number_of_guests: None,
        primary_guest: None,
        number_of_adults: None,
        number_of_children: None,
        number_of_infants: None,
        number_of_pets: None,
        source: None,
        total_price: None,
        currency: None,
        status: ReservationStatus::Confirmed,
        arrival_estimated_time: None,
        departure_estimated_time: None,
        codes: ReservationCodes { access_code: Vec::new(), confirmation_code: None },
        notes: None,
        verification: GuestVerification::unknown(),
        finances: Finances::unknown(),
        custom_fields: Vec::new(),
    }
}

export_plugin!(Chaos);
