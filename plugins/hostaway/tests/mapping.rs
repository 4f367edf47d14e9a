//! The golden cases in `tests/cases/`, run natively through the mapping.
//!
//! Each case's `body.json` goes through `mapping::normalize`; the typed output is checked field by
//! field against the input. The rendered output is compared with the hand-written `expected.json`
//! by the host's golden runner (`tests/it/golden.rs`), with the real renderer and the wasm component.

use std::path::{Path, PathBuf};

use serde_json::Value;
use stayhook_plugin_hostaway::mapping;
use stayhook_plugin_sdk::model::*;

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases")
}

fn inbound(body: Vec<u8>, settings: Vec<(String, String)>) -> Inbound {
    Inbound {
        account: AccountContext { id: "acc-1".into(), workspace_id: "ws-1".into(), settings },
        method: "POST".into(),
        query: String::new(),
        content_type: Some("application/json".into()),
        headers: Vec::new(),
        body,
        received_at: "2025-01-01T00:00:00Z".into(),
    }
}

fn body_of(case: &str) -> Vec<u8> {
    std::fs::read(cases_dir().join(case).join("body.json")).unwrap()
}

fn run(case: &str) -> Vec<Event> {
    match mapping::normalize(&inbound(body_of(case), Vec::new()), &[]) {
        Ok(Outcome::Done(events)) => events,
        Ok(Outcome::Fetch(_)) => panic!("{case}: unexpected fetch"),
        Err(error) => panic!("{case}: refused: {error:?}"),
    }
}

fn only_reservation(case: &str) -> (&'static str, Reservation) {
    let mut events = run(case);
    assert_eq!(events.len(), 1, "{case}: one event");
    match events.remove(0) {
        Event::ReservationCreated(reservation) => ("reservation.created", reservation),
        Event::ReservationUpdated(reservation) => ("reservation.updated", reservation),
        _ => panic!("{case}: not a reservation created/updated event"),
    }
}

/// The reservation object the case's body carries.
fn data_of(case: &str) -> Value {
    let body: Value = serde_json::from_slice(&body_of(case)).unwrap();
    body.get("data").cloned().unwrap_or_else(|| body["payload"]["data"].clone())
}

#[test]
fn reservation_created_maps_the_documented_object() {
    let (event, r) = only_reservation("reservation-created");
    let data = data_of("reservation-created");
    assert_eq!(event, "reservation.created");
    assert_eq!(r.id, data["id"].to_string());
    assert_eq!(r.id, "13");
    assert_eq!(r.created_at.as_deref(), data["reservationDate"].as_str());
    assert_eq!(r.updated_at, None);
    assert_eq!(r.cancelled_at, None);
    assert_eq!(r.arrival_date.as_deref(), Some("2017-07-15"));
    assert_eq!(r.departure_date.as_deref(), Some("2017-07-16"));
    assert_eq!(r.nights, Some(1));
    assert_eq!(r.property_id.as_deref(), Some("40160"));
    assert_eq!(r.number_of_guests, Some(1));
    assert_eq!(r.number_of_adults, Some(1));
    assert_eq!(r.number_of_children, None);
    assert_eq!(r.source.as_deref(), Some("AIRBNB"));
    assert_eq!(r.status, ReservationStatus::Confirmed);
    assert_eq!(r.total_price, Some(267.0));
    assert_eq!(r.currency.as_deref(), Some("USD"));
    assert_eq!(r.arrival_estimated_time, None);

    let guest = r.primary_guest.as_ref().expect("guest");
    assert_eq!(guest.name.as_deref(), Some("Andrew Peterson"));
    assert_eq!(guest.name_first.as_deref(), Some("Andrew"));
    assert_eq!(guest.name_last.as_deref(), Some("Peterson"));
    assert_eq!(guest.emails, vec!["mail@test.com".to_string()]);
    assert_eq!(guest.mobile_numbers, vec!["+75125551212".to_string()]);
    assert!(guest.preferred_language.is_none());
    let address = guest.address.as_ref().expect("address");
    assert_eq!(address.line1.as_deref(), Some("3411 Cedar St"));
    assert_eq!(address.postal_code.as_deref(), Some("TX 78705"));
    assert_eq!(address.city.as_deref(), Some("Austin"));
    assert_eq!(address.country.as_deref(), Some("US"));
    assert_eq!(guest.pictures.len(), 1);
    assert!(guest.pictures[0].starts_with("https://a0.muscache.com/"));

    assert_eq!(r.codes.access_code, vec!["12345".to_string()]);
    assert_eq!(r.codes.confirmation_code.as_deref(), Some("HMP2KQ4B44"));
    assert_eq!(r.notes, None);
    assert_eq!(r.verification.is_identity_verified, Some(true));
    assert_eq!(r.verification.is_government_id_verified, Some(true));

    let f = &r.finances;
    assert_eq!(f.total_price, Some(267.0));
    assert_eq!(f.remaining_balance, Some(4563.54));
    assert_eq!(f.payment_status.as_deref(), Some("Unknown"));
    assert_eq!(f.base_price.total, Some(42.0));
    assert_eq!(f.base_price.breakdown[0].kind, "BASE_PRICE");
    assert_eq!(f.base_price.breakdown[0].name.as_deref(), Some("Total price from channel"));
    assert_eq!(f.fee.total, Some(69.0));
    assert_eq!(f.fee.breakdown[0].kind, "OTHER_FEE");
    assert_eq!(f.fee.breakdown[0].units, Some(1));
    assert_eq!(f.tax.total, Some(0.0));
    assert!(f.tax.breakdown.is_empty());
    assert_eq!(f.discount.total, Some(0.0));

    let ids: Vec<&str> = r.custom_fields.iter().map(|field| field.id.as_str()).collect();
    assert_eq!(ids, ["167", "243"]);
    assert_eq!(r.custom_fields[0].value.as_deref(), Some("Custom field value one"));
    assert_eq!(r.custom_fields[0].kind, "unknown");
}

#[test]
fn dates_moved_update() {
    let (event, r) = only_reservation("reservation-updated-dates-moved");
    assert_eq!(event, "reservation.updated");
    assert_eq!(r.id, "13");
    assert_eq!(r.arrival_date.as_deref(), Some("2017-07-20"));
    assert_eq!(r.departure_date.as_deref(), Some("2017-07-23"));
    assert_eq!(r.nights, Some(3));
    assert_eq!(r.status, ReservationStatus::Confirmed);
    assert_eq!(r.created_at.as_deref(), Some("2017-06-10 10:41:10"));
    assert_eq!(r.updated_at.as_deref(), Some("2017-06-12 09:15:00"));
    assert_eq!(r.arrival_estimated_time.as_deref(), Some("2017-07-20T16:00:00"));
    assert_eq!(r.departure_estimated_time.as_deref(), Some("2017-07-23T10:00:00"));
    let language = r.primary_guest.unwrap().preferred_language.unwrap();
    assert_eq!(language.code, "en");
    assert_eq!(language.name.as_deref(), Some("ENGLISH"));
}

#[test]
fn cancellation_is_an_update_with_cancelled_status() {
    let (event, r) = only_reservation("reservation-cancelled");
    assert_eq!(event, "reservation.updated");
    assert_eq!(r.status, ReservationStatus::Cancelled);
    assert_eq!(r.cancelled_at.as_deref(), Some("2017-07-01"));
    assert_eq!(r.arrival_date.as_deref(), Some("2017-07-15"));
}

#[test]
fn nested_payload_maps_like_the_flat_envelope() {
    let (event, nested) = only_reservation("nested-payload-variant");
    let (_, flat) = only_reservation("reservation-created");
    assert_eq!(event, "reservation.updated");
    assert_eq!(format!("{nested:?}"), format!("{flat:?}"), "the same reservation either way");
}

#[test]
fn custom_field_definitions_and_flat_prices() {
    let (_, r) = only_reservation("custom-field-definitions-flat-prices");
    assert_eq!(r.custom_fields.len(), 1);
    let field = &r.custom_fields[0];
    assert_eq!(field.id, "74419");
    assert_eq!(field.name, "KnowYourGuest Screening");
    assert_eq!(field.kind, "text");
    assert_eq!(field.value.as_deref(), Some("Approved"));
    assert_eq!(r.finances.fee.total, Some(126.5));
    assert_eq!(r.finances.fee.breakdown[0].kind, "CLEANING_FEE");
    assert_eq!(r.finances.tax.total, Some(115.64));
    assert_eq!(r.finances.base_price.total, None);
    assert_eq!(r.finances.payment_status.as_deref(), Some("Paid"));
    assert_eq!(r.notes.as_deref(), Some("Need parking spot near the property."));
}

#[test]
fn ping_yields_nothing() {
    assert!(run("ping").is_empty());
}

#[test]
fn refusals() {
    let refuse = |body: &str, settings: Vec<(String, String)>| {
        mapping::normalize(&inbound(body.as_bytes().to_vec(), settings), &[]).expect_err("refused")
    };
    let bad = |error: PluginError| match error {
        PluginError::BadPayload(message) => message,
        other => panic!("expected bad payload, got {other:?}"),
    };
    let unsupported = |error: PluginError| match error {
        PluginError::UnsupportedEvent(message) => message,
        other => panic!("expected unsupported, got {other:?}"),
    };
    assert!(bad(refuse("not json", Vec::new())).contains("not JSON"));
    assert!(bad(refuse("[1]", Vec::new())).contains("object"));
    assert!(bad(refuse(r#"{"object":"reservation","accountId":1,"data":{"id":1}}"#, Vec::new())).contains("event"));
    assert!(bad(refuse(r#"{"object":"reservation","event":"reservation.created","accountId":1}"#, Vec::new())).contains("data"));
    assert!(bad(refuse(r#"{"object":"reservation","event":"reservation.updated","data":{"status":"new"}}"#, Vec::new())).contains("id"));
    let message = r#"{"object":"conversationMessage","event":"message.received","accountId":10450,"data":{"id":340127415,"body":"Hi","isIncoming":1}}"#;
    assert!(bad(refuse(message, Vec::new())).contains("conversationId"));
    assert_eq!(unsupported(refuse(r#"{"object":"listing","event":"listing.updated","data":{}}"#, Vec::new())), "listing.updated");

    let pinned = vec![("hostawayAccountId".to_string(), "99999".to_string())];
    let body = String::from_utf8(body_of("reservation-created")).unwrap();
    let message = bad(refuse(&body, pinned));
    assert!(message.contains("accountId 10450 does not match"), "{message}");
    let matching = vec![("hostawayAccountId".to_string(), "10450".to_string())];
    assert!(mapping::normalize(&inbound(body.into_bytes(), matching), &[]).is_ok());
}

#[test]
fn describe_declares_the_api() {
    let info = stayhook_plugin_hostaway::plugin_info();
    assert_eq!(info.name, "hostaway");
    assert_eq!(info.pms, "Hostaway");
    assert!(info.events.contains(&"reservation.created".to_string()));
    assert!(matches!(info.verification, VerificationScheme::BasicAuth));
    let api = info.api.expect("api");
    assert_eq!(api.base_url, "https://api.hostaway.com");
    match api.auth {
        AuthScheme::Oauth2ClientCredentials(client) => {
            assert_eq!(client.token_url, "https://api.hostaway.com/v1/accessTokens");
            assert_eq!(client.scope.as_deref(), Some("general"));
        }
        _ => panic!("expected OAuth2 client credentials"),
    }
}

#[test]
fn a_message_asks_for_the_whole_conversation() {
    let body = body_of("message-received");
    match mapping::normalize(&inbound(body, Vec::new()), &[]).expect("normalizes") {
        Outcome::Fetch(requests) => {
            let asked: Vec<(String, String)> = requests.iter().map(|request| (request.id.clone(), request.path.clone())).collect();
            assert_eq!(
                asked,
                [
                    ("conversation".to_string(), "/v1/conversations/1406".to_string()),
                    ("messages".to_string(), "/v1/conversations/1406/messages".to_string())
                ]
            );
        }
        Outcome::Done(events) => panic!("expected a fetch, got {events:?}"),
    }
}
