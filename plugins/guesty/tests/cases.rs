//! The golden cases in `tests/cases/`, run natively through the mapping and its fetch rounds.
//!
//! Each case's `body.json` goes through `mapping::normalize`; every `fetch` is answered from the
//! case's `responses/<request-id>.json` (a request without a file fails the test, as the host's
//! offline runner does). The typed events are checked field by field against the inputs, and the
//! events rendered by a copy of the host's rendering rules (`src/model/render.rs`) are compared with
//! the hand-checked `expected.json`. The host's golden runner (`tests/it/golden.rs`) does the same
//! with the wasm component and the real renderer. `GUESTY_BLESS=1` rewrites `expected.json` (check
//! every rewrite against the sources before keeping it).

use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};
use stayhook_plugin_guesty::mapping;
use stayhook_plugin_sdk::model::*;
use stayhook_plugin_sdk::testing::{answer, answer_bytes};

fn case_dir(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases").join(case)
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

fn settings_of(case: &str) -> Vec<(String, String)> {
    let case_json = read_json(&case_dir(case).join("case.json"));
    assert!(case_json["source"].as_str().is_some_and(|source| source.contains("http")), "{case}: case.json must name its source");
    case_json["settings"]
        .as_object()
        .map(|settings| settings.iter().map(|(name, value)| (name.clone(), value.as_str().unwrap().to_string())).collect())
        .unwrap_or_default()
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

/// A recorded response file as the host reads it (docs/enrichment.md).
fn recorded(case: &str, request: &ApiRequest) -> ApiResponse {
    let path = case_dir(case).join("responses").join(format!("{}.json", request.id));
    assert!(
        path.exists(),
        "{case}: the plugin asked for {} {} (id {:?}), which has no recorded response",
        request.method,
        request.path,
        request.id
    );
    let file = read_json(&path);
    let body = match (file.get("body"), file.get("bodyText")) {
        (Some(body), _) => serde_json::to_vec(body).unwrap(),
        (None, Some(Value::String(text))) => text.clone().into_bytes(),
        _ => Vec::new(),
    };
    ApiResponse {
        id: request.id.clone(),
        status: file["status"].as_u64().unwrap() as u16,
        headers: file
            .get("headers")
            .and_then(Value::as_object)
            .map(|headers| headers.iter().map(|(name, value)| (name.to_ascii_lowercase(), value.as_str().unwrap().to_string())).collect())
            .unwrap_or_default(),
        body,
        error: file.get("error").and_then(Value::as_str).map(str::to_string),
    }
}

/// What a run produced: the events and every request, round by round.
struct Run {
    events: Vec<Event>,
    rounds: Vec<Vec<ApiRequest>>,
}

fn run(case: &str) -> Run {
    let body = std::fs::read(case_dir(case).join("body.json")).unwrap();
    let inbound = inbound(body, settings_of(case));
    let mut responses = Vec::new();
    let mut rounds = Vec::new();
    loop {
        match mapping::normalize(&inbound, &responses) {
            Ok(Outcome::Done(events)) => return Run { events, rounds },
            Ok(Outcome::Fetch(requests)) => {
                assert!(rounds.len() < 4, "{case}: more than 4 fetch rounds");
                assert!(requests.len() <= 16, "{case}: more than 16 requests in a round");
                for request in &requests {
                    assert!(
                        !responses.iter().any(|response: &ApiResponse| response.id == request.id),
                        "{case}: request id {} asked twice",
                        request.id
                    );
                    responses.push(recorded(case, request));
                }
                rounds.push(requests);
            }
            Err(error) => panic!("{case}: refused: {error:?}"),
        }
    }
}

fn ids(round: &[ApiRequest]) -> Vec<&str> {
    round.iter().map(|request| request.id.as_str()).collect()
}

fn query<'a>(request: &'a ApiRequest, name: &str) -> Option<&'a str> {
    request.query.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
}

// ---- A copy of the host's rendering rules (src/model/render.rs), for comparing with expected.json.

fn timestamp(value: &Option<String>) -> Value {
    let Some(text) = value else { return Value::Null };
    let (date, rest) = text.split_at(10);
    if rest.is_empty() {
        return Value::String(format!("{date}T00:00:00.000Z"));
    }
    let clock = &rest[1..];
    let clock = clock.strip_suffix('Z').unwrap_or(clock);
    assert!(!clock.contains('+') && !clock.contains('-'), "offsets are not rendered by this copy: {text}");
    let (hms, fraction) = clock.split_once('.').unwrap_or((clock, ""));
    let hms = if hms.len() == 5 { format!("{hms}:00") } else { hms.to_string() };
    let millis = format!("{fraction:0<3}");
    Value::String(format!("{date}T{hms}.{}Z", &millis[..3]))
}

fn money(value: Option<f64>) -> Value {
    match value {
        None => Value::Null,
        Some(amount) if amount.fract() == 0.0 => json!(amount as i64),
        Some(amount) => json!(amount),
    }
}

fn text(value: &Option<String>) -> Value {
    value.clone().map_or(Value::Null, Value::String)
}

fn count(value: Option<u32>) -> Value {
    value.map_or(Value::Null, |n| json!(n))
}

fn status_name(status: ReservationStatus) -> &'static str {
    match status {
        ReservationStatus::Confirmed => "CONFIRMED",
        ReservationStatus::Pending => "PENDING",
        ReservationStatus::Inquiry => "INQUIRY",
        ReservationStatus::Cancelled => "CANCELLED",
        ReservationStatus::Declined => "DECLINED",
        ReservationStatus::Expired => "EXPIRED",
        ReservationStatus::OwnerStay => "OWNER_STAY",
        ReservationStatus::Unknown => "UNKNOWN",
    }
}

fn group(group: &ChargeGroup, key: &str) -> Value {
    let mut map = Map::new();
    map.insert(key.into(), money(group.total));
    let lines = group
        .breakdown
        .iter()
        .map(|c| {
            json!({"name": text(&c.name), "description": text(&c.description), "type": c.kind, "units": count(c.units),
                   "total": money(c.total), "isMandatory": c.is_mandatory})
        })
        .collect();
    map.insert("breakdown".into(), Value::Array(lines));
    Value::Object(map)
}

fn reservation_record(r: &Reservation) -> Value {
    let guest = r.primary_guest.as_ref();
    let language = guest.and_then(|g| g.preferred_language.as_ref());
    let address = guest.and_then(|g| g.address.as_ref());
    let nights = r.nights.map(|n| json!(n)).unwrap_or(Value::Null);
    json!({
        "id": r.id,
        "createdAt": timestamp(&r.created_at),
        "updatedAt": timestamp(&r.updated_at),
        "cancelledAt": match timestamp(&r.cancelled_at) { Value::Null => json!(""), other => other },
        "arrivalDate": timestamp(&r.arrival_date),
        "departureDate": timestamp(&r.departure_date),
        "previousArrivalDate": "",
        "previousDepartureDate": "",
        "nights": nights,
        "propertyId": text(&r.property_id),
        "numberOfGuests": count(r.number_of_guests),
        "primaryGuest": {
            "name": guest.map_or(Value::Null, |g| text(&g.name)),
            "nameFirst": guest.map_or(Value::Null, |g| text(&g.name_first)),
            "nameLast": guest.map_or(Value::Null, |g| text(&g.name_last)),
            "emails": guest.map_or(json!([]), |g| json!(g.emails)),
            "mobileNumbers": guest.map_or(json!([]), |g| json!(g.mobile_numbers)),
            "preferredLanguage": {"code": language.map_or(Value::Null, |l| json!(l.code)), "name": language.map_or(Value::Null, |l| text(&l.name))},
            "address": {
                "line1": address.map_or(Value::Null, |a| text(&a.line1)),
                "postal_code": address.map_or(Value::Null, |a| text(&a.postal_code)),
                "city": address.map_or(Value::Null, |a| text(&a.city)),
                "country": address.map_or(Value::Null, |a| text(&a.country)),
            },
            "pictures": guest.map_or(json!([]), |g| json!(g.pictures)),
        },
        "numberOfAdults": count(r.number_of_adults),
        "numberOfChildren": count(r.number_of_children),
        "numberOfInfants": count(r.number_of_infants),
        "numberOfPets": count(r.number_of_pets),
        "source": text(&r.source),
        "totalPrice": money(r.total_price),
        "currency": text(&r.currency),
        "status": status_name(r.status),
        "arrivalEstimatedTime": timestamp(&r.arrival_estimated_time),
        "departureEstimatedTime": timestamp(&r.departure_estimated_time),
        "codes": {"accessCode": r.codes.access_code, "confirmationCode": text(&r.codes.confirmation_code)},
        "notes": text(&r.notes),
        "verification": {
            "isIdentityVerified": r.verification.is_identity_verified,
            "isEmailVerified": r.verification.is_email_verified,
            "isPhoneVerified": r.verification.is_phone_verified,
            "isGovernmentIdVerified": r.verification.is_government_id_verified,
        },
        "finances": {
            "totalPrice": money(r.finances.total_price),
            "currency": text(&r.finances.currency),
            "remainingBalance": money(r.finances.remaining_balance),
            "paymentStatus": text(&r.finances.payment_status),
            "basePrice": group(&r.finances.base_price, "totalBasePrice"),
            "fee": group(&r.finances.fee, "totalFee"),
            "tax": group(&r.finances.tax, "totalTax"),
            "discount": group(&r.finances.discount, "totalDiscount"),
        },
        "customFields": r.custom_fields.iter().map(|f| json!({"id": f.id, "name": f.name, "type": f.kind, "value": text(&f.value), "defaultValue": text(&f.default_value)})).collect::<Vec<_>>(),
    })
}

fn calendar_record(c: &Calendar) -> Value {
    let id = match &c.room_type_id {
        Some(room) => format!("{}/{room}", c.property_id),
        None => c.property_id.clone(),
    };
    json!({
        "id": id,
        "propertyId": c.property_id,
        "roomTypeId": text(&c.room_type_id),
        "dateWiseAvailability": c.days.iter().map(|d| json!({
            "date": d.date,
            "status": if d.status == DayStatus::Available { "AVAILABLE" } else { "NOT_AVAILABLE" },
            "unitsAvailable": count(d.units_available),
            "price": match money(d.price) { Value::Null => Value::Null, amount => json!({"amount": amount, "currency": text(&d.currency)}) },
            "minimumNights": count(d.minimum_nights),
            "maximumNights": count(d.maximum_nights),
            "reservationIds": d.reservation_ids,
        })).collect::<Vec<_>>(),
    })
}

fn conversation_record(c: &Conversation) -> Value {
    json!({
        "id": c.id,
        "reservationId": c.reservation_ids,
        "propertyId": c.property_ids,
        "type": text(&c.kind),
        "recipient": {"name": text(&c.recipient.name), "email": text(&c.recipient.email), "phone": text(&c.recipient.phone), "picture": text(&c.recipient.picture)},
        "updatedAt": timestamp(&c.updated_at),
        "messages": c.messages.iter().map(|m| json!({
            "id": m.id,
            "body": m.body,
            "senderType": match m.sender_type { SenderType::Guest => "Guest", SenderType::Owner => "Owner", SenderType::System => "System" },
            "createdAt": timestamp(&m.created_at),
            "updatedAt": timestamp(&m.updated_at),
            "seenStatus": match m.seen { Some(true) => json!("seen"), Some(false) => json!("unseen"), None => Value::Null },
            "attachments": m.attachments.iter().map(|a| json!({"url": a.url, "name": text(&a.name), "mimeType": text(&a.mime_type)})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

fn event_type_name(event_type: EventType) -> &'static str {
    match event_type {
        EventType::ReservationCreated => "reservation.created",
        EventType::ReservationUpdated => "reservation.updated",
        EventType::ReservationDeleted => "reservation.deleted",
        EventType::ConversationUpdated => "conversation.updated",
        EventType::CalendarUpdated => "calendar.updated",
    }
}

fn render(event: &Event) -> Value {
    let (event_type, result, record) = match event {
        Event::ReservationCreated(r) | Event::ReservationUpserted(r) => ("reservation.created", "SUCCESS", reservation_record(r)),
        Event::ReservationUpdated(r) => ("reservation.updated", "SUCCESS", reservation_record(r)),
        Event::ReservationDeleted(id) => ("reservation.deleted", "SUCCESS", json!({"id": id})),
        Event::ConversationUpdated(c) => ("conversation.updated", "SUCCESS", conversation_record(c)),
        Event::CalendarUpdated(c) => ("calendar.updated", "SUCCESS", calendar_record(c)),
        Event::Incomplete(i) => (event_type_name(i.event_type), "FAILURE", json!({"id": i.record_id})),
    };
    json!({"eventType": event_type, "result": result, "record": record})
}

/// The rendered events equal `expected.json` (or rewrite it with `GUESTY_BLESS=1`).
fn matches_expected(case: &str, events: &[Event]) {
    let actual = Value::Array(events.iter().map(render).collect());
    let path = case_dir(case).join("expected.json");
    if std::env::var_os("GUESTY_BLESS").is_some() {
        std::fs::write(&path, serde_json::to_string_pretty(&actual).unwrap() + "\n").unwrap();
        return;
    }
    let expected = read_json(&path);
    assert_eq!(actual, expected, "{case}: rendered events differ from expected.json");
}

fn calendar(event: &Event) -> &Calendar {
    match event {
        Event::CalendarUpdated(calendar) => calendar,
        other => panic!("expected a calendar, got {other:?}"),
    }
}

// ---- The cases.

#[test]
fn legacy_new_maps_the_documented_reservation_and_fetches_its_calendar() {
    let case = "reservation-new-legacy";
    let run = run(case);
    let body = read_json(&case_dir(case).join("body.json"));
    let object = &body["reservation"];

    assert_eq!(run.rounds.len(), 1, "calendar and listing lookup in one round");
    assert_eq!(ids(&run.rounds[0]), ["calendar", "parent-listing"]);
    let calendar_request = &run.rounds[0][0];
    assert_eq!(calendar_request.path, "/v1/availability-pricing/api/calendar/listings/59ac245d27cb310f0017afe3");
    assert_eq!(query(calendar_request, "startDate"), Some("2017-10-02"), "check-in 2017-10-04 minus 2 days");
    assert_eq!(query(calendar_request, "endDate"), Some("2017-10-10"), "check-out 2017-10-08 plus 2 days");
    assert_eq!(run.rounds[0][1].path, "/v1/listings/59ac245d27cb310f0017afe3");

    assert_eq!(run.events.len(), 2);
    let Event::ReservationCreated(r) = &run.events[0] else { panic!("reservation.new is a created event") };
    assert_eq!(r.id, object["_id"].as_str().unwrap());
    assert_eq!(r.property_id.as_deref(), object["listingId"].as_str());
    assert_eq!(r.arrival_date.as_deref(), Some("2017-10-04"));
    assert_eq!(r.departure_date.as_deref(), Some("2017-10-08"));
    assert_eq!(r.nights, Some(4));
    assert_eq!(r.number_of_guests, Some(2));
    assert_eq!(r.status, ReservationStatus::Inquiry);
    assert_eq!(r.source.as_deref(), Some("Manual"));
    assert_eq!(r.updated_at.as_deref(), Some("2017-10-01T16:13:25.711Z"));
    assert_eq!(r.created_at, None, "createdAt is past the read part of the example");
    assert_eq!(r.arrival_estimated_time.as_deref(), object["checkIn"].as_str());
    assert_eq!(r.departure_estimated_time.as_deref(), object["checkOut"].as_str());
    assert_eq!(r.total_price, Some(3471.0));
    assert_eq!(r.currency.as_deref(), Some("EUR"));
    assert!(r.primary_guest.is_none(), "the webhook carries only guestId");
    let f = &r.finances;
    assert_eq!(f.base_price.total, Some(3436.0));
    assert_eq!(f.base_price.breakdown[0].kind, "BASE_PRICE");
    assert_eq!(f.fee.total, Some(35.0));
    assert_eq!(f.fee.breakdown[0].kind, "CLEANING_FEE");
    assert_eq!(f.tax.total, None);
    assert_eq!(f.remaining_balance, Some(3471.0));
    assert_eq!(f.payment_status.as_deref(), Some("Unpaid"));

    let c = calendar(&run.events[1]);
    assert_eq!(c.property_id, "59ac245d27cb310f0017afe3");
    assert_eq!(c.days.len(), 9);
    assert_eq!(c.days.first().unwrap().date, "2017-10-02");
    assert_eq!(c.days.last().unwrap().date, "2017-10-10");
    assert!(c.days.iter().all(|day| day.status == DayStatus::Available && day.price == Some(859.0) && day.minimum_nights == Some(2)));
    matches_expected(case, &run.events);
}

#[test]
fn thin_v2_update_fetches_the_reservation_then_the_calendar() {
    let case = "reservation-updated-v2";
    let run = run(case);
    assert_eq!(run.rounds.len(), 2);
    assert_eq!(ids(&run.rounds[0]), ["reservation"]);
    assert_eq!(run.rounds[0][0].path, "/v1/reservations/5fe9c81934209c002c8ecd8b");
    assert_eq!(ids(&run.rounds[1]), ["calendar", "parent-listing"]);
    assert_eq!(query(&run.rounds[1][0], "startDate"), Some("2020-12-28"));
    assert_eq!(query(&run.rounds[1][0], "endDate"), Some("2021-01-04"));

    let fetched = read_json(&case_dir(case).join("responses/reservation.json"))["body"].clone();
    let Event::ReservationUpdated(r) = &run.events[0] else { panic!("v2 update is an updated event") };
    assert_eq!(r.id, fetched["_id"].as_str().unwrap());
    assert_eq!(r.status, ReservationStatus::Confirmed);
    assert_eq!(r.codes.confirmation_code.as_deref(), Some("J86mAAAM2"));
    assert_eq!(r.nights, Some(3));
    assert_eq!(r.property_id.as_deref(), Some("5988346d3c31bf0f00747eb6"));
    assert_eq!(r.total_price, Some(367.55), "hostPayout without subTotalPrice");
    assert_eq!(r.finances.remaining_balance, Some(367.55));
    assert_eq!(r.finances.payment_status.as_deref(), Some("Unpaid"), "totalPaid 0, balanceDue 367.55");
    assert_eq!(r.source.as_deref(), Some("Manual"));
    assert_eq!(r.arrival_estimated_time.as_deref(), Some("2020-12-30T13:00:00.000Z"));

    assert_eq!(run.events.len(), 2);
    let c = calendar(&run.events[1]);
    assert_eq!(c.days.len(), 8);
    let booked: Vec<&str> = c.days.iter().filter(|day| day.status == DayStatus::NotAvailable).map(|day| day.date.as_str()).collect();
    assert_eq!(booked, ["2020-12-30", "2020-12-31", "2021-01-01"], "the three nights of the stay");
    for day in c.days.iter().filter(|day| day.status == DayStatus::NotAvailable) {
        assert_eq!(day.reservation_ids, vec![r.id.clone()]);
    }
    assert!(c.days.iter().filter(|day| day.status == DayStatus::Available).all(|day| day.reservation_ids.is_empty()));
    matches_expected(case, &run.events);
}

#[test]
fn sub_unit_reservation_also_emits_the_parent_calendar() {
    let case = "sub-unit-reservation";
    let run = run(case);
    assert_eq!(run.rounds.len(), 3);
    assert_eq!(ids(&run.rounds[0]), ["reservation"]);
    assert_eq!(ids(&run.rounds[1]), ["calendar", "parent-listing"]);
    assert_eq!(ids(&run.rounds[2]), ["parent-calendar"]);
    let parent_request = &run.rounds[2][0];
    assert_eq!(parent_request.path, "/v1/availability-pricing/api/calendar/listings/5fa02fa358d2db673e17bc2d");
    assert_eq!(query(parent_request, "startDate"), query(&run.rounds[1][0], "startDate"), "same dates as the sub-unit");
    assert_eq!(query(parent_request, "startDate"), Some("2020-12-29"), "padding setting 1");
    assert_eq!(query(parent_request, "endDate"), Some("2021-01-03"));

    assert_eq!(run.events.len(), 3);
    assert!(matches!(&run.events[0], Event::ReservationCreated(r) if r.id == "5fe9c81934209c002c8ecd8b"));
    assert_eq!(calendar(&run.events[1]).property_id, "5988346d3c31bf0f00747eb6");
    let parent = calendar(&run.events[2]);
    assert_eq!(parent.property_id, "5fa02fa358d2db673e17bc2d");
    assert!(parent.days.iter().all(|day| day.status == DayStatus::Available), "one unit left on the stay's nights");
    let units: Vec<Option<u32>> = parent.days.iter().map(|day| day.units_available).collect();
    assert_eq!(units, [Some(2), Some(1), Some(1), Some(1), Some(2), Some(2)]);
    matches_expected(case, &run.events);
}

#[test]
fn calendar_webhook_maps_the_seed_and_checks_for_a_parent() {
    let case = "listing-calendar-updated";
    let run = run(case);
    assert_eq!(run.rounds.len(), 1, "one round: the listing lookup");
    let body = read_json(&case_dir(case).join("body.json"));
    let day = &body["calendar"][0];
    assert_eq!(run.events.len(), 1);
    let c = calendar(&run.events[0]);
    assert_eq!(c.property_id, day["listingId"].as_str().unwrap());
    assert_eq!(c.room_type_id, None);
    assert_eq!(c.days.len(), 1);
    assert_eq!(c.days[0].date, "2022-08-30");
    assert_eq!(c.days[0].status, DayStatus::Available);
    assert_eq!(c.days[0].price, Some(15000.0));
    assert_eq!(c.days[0].currency.as_deref(), Some("NZD"));
    assert_eq!(c.days[0].minimum_nights, Some(1));
    assert_eq!(c.days[0].maximum_nights, None);
    assert_eq!(c.days[0].units_available, None);
    assert!(c.days[0].reservation_ids.is_empty());
    matches_expected(case, &run.events);
}

#[test]
fn message_fetches_the_whole_conversation() {
    let case = "message-received";
    let run = run(case);
    assert_eq!(run.rounds.len(), 1);
    assert_eq!(ids(&run.rounds[0]), ["conversation", "posts"]);
    assert_eq!(run.rounds[0][0].path, "/v1/communication/conversations/630f63c09dcce60032d93a7f");
    assert_eq!(run.rounds[0][1].path, "/v1/communication/conversations/630f63c09dcce60032d93a7f/posts");

    assert_eq!(run.events.len(), 1);
    let Event::ConversationUpdated(c) = &run.events[0] else { panic!("expected a conversation") };
    assert_eq!(c.id, "630f63c09dcce60032d93a7f");
    assert_eq!(c.reservation_ids, ["630f6529fae9050037b01e5e", "630f63bf9dcce60032d93a45"]);
    assert_eq!(c.property_ids, ["5fba2d97d8e638002d76d842"]);
    assert_eq!(c.kind.as_deref(), Some("manual"));
    assert_eq!(c.recipient.name.as_deref(), Some("Moshe Test"));
    assert_eq!(c.updated_at.as_deref(), Some("2021-10-11T12:40:16.566Z"));
    let message_ids: Vec<&str> = c.messages.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(message_ids, ["615997cf732aba0030d9de6a", "615997c3732aba0030d9de5e"], "logs newest first; notes left out");
    assert!(c.messages.iter().all(|m| m.sender_type == SenderType::System));
    assert_eq!(c.messages[0].body, "Reservation VvvPzxBjv status changed to confirmed");
    matches_expected(case, &run.events);
}

#[test]
fn api_down_gives_an_incomplete_reservation() {
    let case = "api-down";
    let run = run(case);
    assert_eq!(run.rounds.len(), 1);
    assert_eq!(run.events.len(), 1);
    let Event::Incomplete(incomplete) = &run.events[0] else { panic!("expected incomplete") };
    assert_eq!(incomplete.event_type, EventType::ReservationUpdated);
    assert_eq!(incomplete.record_id, "5fe9c81934209c002c8ecd8b");
    assert!(incomplete.reason.contains("connection refused"), "{}", incomplete.reason);
    matches_expected(case, &run.events);
}

#[test]
fn cancellation_is_an_update_with_cancelled_status() {
    let case = "reservation-cancelled";
    let run = run(case);
    assert_eq!(query(&run.rounds[0][0], "startDate"), Some("2017-10-04"), "padding 0: the stay only");
    assert_eq!(query(&run.rounds[0][0], "endDate"), Some("2017-10-08"));
    let Event::ReservationUpdated(r) = &run.events[0] else { panic!("a cancellation is an update") };
    assert_eq!(r.status, ReservationStatus::Cancelled);
    assert_eq!(r.cancelled_at, None);
    assert_eq!(r.updated_at.as_deref(), Some("2017-10-02T09:30:00.000Z"));
    assert!(!run.events.iter().any(|event| matches!(event, Event::ReservationDeleted(_))));
    assert_eq!(calendar(&run.events[1]).days.len(), 5);
    matches_expected(case, &run.events);
}

// ---- Behaviour beyond the cases, on inline payloads.

fn normalize(body: &Value, settings: Vec<(String, String)>, responses: &[ApiResponse]) -> Result<Outcome, PluginError> {
    mapping::normalize(&inbound(body.to_string().into_bytes(), settings), responses)
}

#[test]
fn failures_of_later_calls_keep_the_reservation() {
    let body = read_json(&case_dir("reservation-new-legacy").join("body.json"));
    let down = answer_bytes("calendar", 503, "{}");
    let listing_gone = answer_bytes("parent-listing", 404, "");
    let Ok(Outcome::Done(events)) = normalize(&body, Vec::new(), &[down, listing_gone]) else { panic!("expected done") };
    assert_eq!(events.len(), 2);
    assert!(matches!(&events[0], Event::ReservationCreated(_)));
    let Event::Incomplete(incomplete) = &events[1] else { panic!("calendar incomplete") };
    assert_eq!(incomplete.event_type, EventType::CalendarUpdated);
    assert_eq!(incomplete.record_id, "59ac245d27cb310f0017afe3");
    assert!(incomplete.reason.contains("503"));
}

#[test]
fn embedded_listing_type_and_the_setting_skip_the_lookup() {
    let mut body = read_json(&case_dir("reservation-new-legacy").join("body.json"));
    let Ok(Outcome::Fetch(requests)) = normalize(&body, vec![("subUnitLookup".into(), "false".into())], &[]) else { panic!("fetch") };
    assert_eq!(ids(&requests), ["calendar"]);
    body["reservation"]["listing"] = json!({"_id": "59ac245d27cb310f0017afe3", "type": "MTL_CHILD", "mtl": {"p": "PARENT"}});
    let Ok(Outcome::Fetch(requests)) = normalize(&body, Vec::new(), &[]) else { panic!("fetch") };
    assert_eq!(ids(&requests), ["calendar"]);
    let Ok(Outcome::Fetch(requests)) =
        normalize(&body, Vec::new(), &[answer("calendar", 200, json!({"status": 200, "data": {"days": []}}))])
    else {
        panic!("parent calendar")
    };
    assert_eq!(ids(&requests), ["parent-calendar"]);
    assert!(requests[0].path.ends_with("/PARENT"));
}

#[test]
fn v2_reservation_id_shapes_and_event_type_key() {
    for body in [
        json!({"event": "reservation.updated.v2", "data": {"reservationId": "A"}}),
        json!({"event": "reservation.updated.v2", "data": {"reservation": {"_id": "A"}}}),
        json!({"event": "reservation.updated.v2", "data": {"reservation": {"id": "A"}}}),
        json!({"eventType": "reservation.updated.v2", "reservationId": "A"}),
    ] {
        let Ok(Outcome::Fetch(requests)) = normalize(&body, Vec::new(), &[]) else { panic!("fetch for {body}") };
        assert_eq!(requests[0].path, "/v1/reservations/A", "{body}");
    }
}

#[test]
fn created_v2_failure_is_an_incomplete_created_event() {
    let body = json!({"event": "reservation.created.v2", "data": {"reservationId": "A"}});
    let gone = answer_bytes("reservation", 404, r#"{"message":"not found"}"#);
    let Ok(Outcome::Done(events)) = normalize(&body, Vec::new(), &[gone]) else { panic!("done") };
    assert!(matches!(&events[0], Event::Incomplete(i) if i.event_type == EventType::ReservationCreated && i.record_id == "A"));
}

#[test]
fn full_pages_of_posts_are_followed() {
    let body = json!({"event": "reservation.messageSent", "conversation": {"_id": "C"}, "reservationId": "R"});
    let page = |ids: &[&str], after: &str| {
        json!({"status": 200, "data": {"posts": ids.iter().map(|id| json!({"_id": id, "body": id, "sentBy": "guest", "createdAt": format!("2024-01-0{}T10:00:00.000Z", id.len())})).collect::<Vec<_>>(),
            "limit": 2, "cursor": {"after": after, "before": ""}}})
    };
    let first =
        vec![answer("conversation", 200, json!({"status": 200, "data": {"_id": "C"}})), answer("posts", 200, page(&["a", "bb"], "CUR"))];
    let Ok(Outcome::Fetch(requests)) = normalize(&body, Vec::new(), &first) else { panic!("second page") };
    assert_eq!(requests[0].id, "posts-2");
    assert_eq!(query(&requests[0], "cursorAfter"), Some("CUR"));
    let mut all = first.clone();
    all.push(answer("posts-2", 200, page(&["ccc"], "")));
    let Ok(Outcome::Done(events)) = normalize(&body, Vec::new(), &all) else { panic!("done") };
    let Event::ConversationUpdated(c) = &events[0] else { panic!("conversation") };
    let ids: Vec<&str> = c.messages.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["ccc", "bb", "a"], "newest first across pages");
    assert!(c.messages.iter().all(|m| m.sender_type == SenderType::Guest));
    assert_eq!(c.reservation_ids, ["R"]);
}

#[test]
fn refusals() {
    let bad = |body: &[u8]| match mapping::normalize(&inbound(body.to_vec(), Vec::new()), &[]) {
        Err(PluginError::BadPayload(message)) => message,
        other => panic!("expected bad payload, got {other:?}"),
    };
    assert!(bad(b"not json").contains("not JSON"));
    assert!(bad(b"[1]").contains("object"));
    assert!(bad(br#"{"reservation": {}}"#).contains("event"));
    assert!(bad(br#"{"event": "reservation.new"}"#).contains("reservation"));
    assert!(bad(br#"{"event": "reservation.new", "reservation": {"status": "confirmed"}}"#).contains("_id"));
    assert!(bad(br#"{"event": "reservation.updated.v2", "data": {}}"#).contains("reservation id"));
    assert!(bad(br#"{"event": "reservation.messageReceived", "message": {}}"#).contains("conversation"));
    match mapping::normalize(&inbound(br#"{"event": "guest.created", "guest": {}}"#.to_vec(), Vec::new()), &[]) {
        Err(PluginError::UnsupportedEvent(event)) => assert_eq!(event, "guest.created"),
        other => panic!("expected unsupported, got {other:?}"),
    }
}

#[test]
fn describe_declares_guesty() {
    let info = stayhook_plugin_guesty::plugin_info();
    assert_eq!(info.name, "guesty");
    assert_eq!(info.pms, "Guesty");
    assert!(matches!(info.verification, VerificationScheme::StandardWebhooks));
    assert_eq!(info.events.len(), 7);
    assert!(info.events.contains(&"reservation.updated.v2".to_string()));
    let api = info.api.expect("api");
    assert_eq!(api.base_url, "https://open-api.guesty.com");
    assert!(api.allowed_hosts.is_empty());
    match api.auth {
        AuthScheme::Oauth2ClientCredentials(client) => {
            assert_eq!(client.token_url, "https://open-api.guesty.com/oauth2/token");
            assert_eq!(client.scope.as_deref(), Some("open-api"));
        }
        _ => panic!("expected OAuth2 client credentials"),
    }
}

#[test]
fn sub_unit_calendar_webhook_adds_the_parents_calendar_for_the_same_dates() {
    let case = "sub-unit-calendar-updated";
    let run = run(case);
    assert_eq!(run.rounds.len(), 2, "the listing lookup, then the parent's calendar");
    assert_eq!(run.events.len(), 2);
    assert_eq!(calendar(&run.events[0]).property_id, "5faa154685cfc0002f7bbd1d");
    let parent = calendar(&run.events[1]);
    assert_eq!(parent.property_id, "5fa02fa358d2db673e17bc2d");
    assert_eq!(
        parent.days.iter().map(|day| day.date.as_str()).collect::<Vec<_>>(),
        ["2022-08-30"],
        "the same dates as the sub-unit's change"
    );
    assert_eq!(parent.days[0].units_available, Some(1));
    matches_expected(case, &run.events);
}
