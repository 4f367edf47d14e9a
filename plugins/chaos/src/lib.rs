//! The chaos plugin: a real component that misbehaves on request, so the daemon's tests can prove
//! that a bad plugin fails its own events and nothing else.
//!
//! The body is JSON `{"behaviour": "...", "id": "..."}`. Behaviours: `ok` (one upserted reservation
//! with that id), `trap` (panics, which aborts into a trap), `loop` (never returns), `oom` (allocates
//! until the memory cap stops it), `invalid` (a reservation whose timestamp is not a timestamp), `delete` (a deleted reservation),
//! `bad-payload` (a refusal as data), `fetch` (asks the host for an API call).

use serde_json::Value;
use stayhook_plugin_sdk::model::*;
use stayhook_plugin_sdk::{Guest, export_plugin, json};

struct Chaos;

impl Guest for Chaos {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "chaos".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            pms: "Chaos (test plugin)".into(),
            events: ["ok", "delete", "trap", "loop", "oom", "invalid", "bad-payload", "fetch"].map(String::from).to_vec(),
            verification: VerificationScheme::None,
            api: None,
        }
    }

    fn normalize(inbound: Inbound, responses: Vec<ApiResponse>) -> Result<Outcome, PluginError> {
        let body: Value =
            serde_json::from_slice(&inbound.body).map_err(|error| PluginError::BadPayload(format!("body is not JSON: {error}")))?;
        let id = json::string(&body, "id").unwrap_or_else(|| "chaos-1".into());
        match json::string(&body, "behaviour").as_deref() {
            Some("ok") => Ok(Outcome::Done(vec![Event::ReservationUpserted(reservation(id, None))])),
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
            Some("fetch") if responses.is_empty() => Ok(Outcome::Fetch(vec![ApiRequest {
                id: "reservation".into(),
                method: "GET".into(),
                path: format!("/reservations/{id}"),
                query: Vec::new(),
                headers: Vec::new(),
                body: None,
            }])),
            Some("fetch") => Ok(Outcome::Done(vec![Event::ReservationUpserted(reservation(id, None))])),
            Some("bad-payload") => Err(PluginError::BadPayload("asked to refuse".into())),
            Some(other) => Err(PluginError::UnsupportedEvent(other.to_string())),
            None => Err(PluginError::BadPayload("missing `behaviour`".into())),
        }
    }

    fn subscribe(_request: RegistrationRequest) -> Result<RegistrationStep, PluginError> {
        Ok(RegistrationStep::Manual("The chaos plugin has no PMS to register with.".into()))
    }
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
