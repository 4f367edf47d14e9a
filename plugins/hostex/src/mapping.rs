//! Hostex webhook → API request → unified events.

use serde_json::Value;
use stayhook_plugin_sdk::model::*;
use stayhook_plugin_sdk::status::{self, Vocabulary};
use stayhook_plugin_sdk::{api, contact, json, money, time};

/// The inbound event names Hostex documents, in its spelling.
pub const EVENTS: &[&str] = &[
    "reservation_created",
    "reservation_updated",
    "property_availability_updated",
    "listing_calendar_updated",
    "message_created",
    "review_created",
    "review_updated",
];
/// Request id of the reservation lookup.
pub const RESERVATION: &str = "reservation";

/// Hostex reservation statuses (the `status` filter of Query Reservations).
const STATUSES: Vocabulary = &[
    ("wait_accept", ReservationStatus::Pending),
    ("wait_pay", ReservationStatus::Pending),
    ("accepted", ReservationStatus::Confirmed),
    ("cancelled", ReservationStatus::Cancelled),
    ("denied", ReservationStatus::Declined),
    ("timeout", ReservationStatus::Expired),
];

/// One webhook → events, or the reservation lookup first.
pub fn normalize(inbound: &Inbound, responses: &[ApiResponse]) -> Result<Outcome, PluginError> {
    let body = stayhook_plugin_sdk::json_object_body(inbound)?;
    let event = json::string(&body, "event").ok_or_else(|| PluginError::BadPayload("no `event` field: not a Hostex webhook".into()))?;
    // Hostex's event names are snake_case words; `reservation/created` or `reservation.created`
    // is another PMS's body.
    if event.contains(['/', '.']) {
        return Err(PluginError::BadPayload(format!("event {event:?} is not a Hostex event name")));
    }
    // The payload examples page puts the fields at the top level; the event-types page under `data`.
    let fields = body.get("data").filter(|data| data.is_object()).unwrap_or(&body);
    match event.as_str() {
        "reservation_created" | "reservation_updated" => {
            let created = event == "reservation_created";
            // Query Reservations filters by reservation code; the stay code picks the stay (a
            // reservation of one stay has the same code for both).
            let reservation_code = json::string(fields, "reservation_code")
                .ok_or_else(|| PluginError::BadPayload(format!("{event}: no `reservation_code`")))?;
            let stay_code = json::string(fields, "stay_code").unwrap_or_else(|| reservation_code.clone());
            let event_type = if created { EventType::ReservationCreated } else { EventType::ReservationUpdated };
            let Some(answer) = api::response(responses, RESERVATION) else {
                return Ok(Outcome::Fetch(vec![reservation_request(&reservation_code)]));
            };
            let stay = match api::successful(answer).and_then(|body| find_stay(&body, &stay_code)) {
                Ok(stay) => stay,
                Err(reason) => return Ok(Outcome::Done(vec![Event::Incomplete(Incomplete { event_type, record_id: stay_code, reason })])),
            };
            let reservation = reservation(&stay, &stay_code);
            Ok(Outcome::Done(vec![if created { Event::ReservationCreated(reservation) } else { Event::ReservationUpdated(reservation) }]))
        }
        "property_availability_updated" => Ok(Outcome::Done(vec![Event::CalendarUpdated(availability(fields)?)])),
        "listing_calendar_updated" | "message_created" | "review_created" | "review_updated" => Err(PluginError::UnsupportedEvent(
            format!("{event}: the API answer needed to complete it was not captured from Hostex's public documentation"),
        )),
        other => Err(PluginError::UnsupportedEvent(other.to_string())),
    }
}

/// `GET /reservations?reservation_code=<code>` (Query Reservations; the stays of one reservation).
pub fn reservation_request(reservation_code: &str) -> ApiRequest {
    ApiRequest { query: vec![("reservation_code".into(), reservation_code.into())], ..api::get(RESERVATION, "/reservations") }
}

/// The stay in `{"error_code": 200, "data": {"reservations": [...]}}`. Hostex answers errors,
/// rate limits included, with HTTP 200 and another `error_code`: those are failures.
pub fn find_stay(body: &Value, stay_code: &str) -> Result<Value, String> {
    match json::number(body, "error_code") {
        Some(code) if code != 200.0 => {
            let message = json::string(body, "error_msg").unwrap_or_default();
            return Err(format!("Hostex answered error_code {code}: {message}"));
        }
        _ => {}
    }
    let stays = json::path(body, &["data", "reservations"])
        .and_then(Value::as_array)
        .ok_or_else(|| "the answer has no data.reservations".to_string())?;
    stays
        .iter()
        .find(|stay| json::string(stay, "stay_code").as_deref() == Some(stay_code))
        .or_else(|| (stays.len() == 1).then(|| &stays[0]))
        .cloned()
        .ok_or_else(|| format!("stay {stay_code} is not in the answer"))
}

/// A Hostex reservation (one stay) → the unified reservation.
pub fn reservation(stay: &Value, stay_code: &str) -> Reservation {
    let mut reservation = Reservation::new(json::string(stay, "stay_code").unwrap_or_else(|| stay_code.to_string()));
    reservation.created_at = json::timestamp(stay, "booked_at").or_else(|| json::timestamp(stay, "created_at"));
    reservation.cancelled_at = json::timestamp(stay, "cancelled_at");
    reservation.arrival_date = json::date(stay, "check_in_date");
    reservation.departure_date = json::date(stay, "check_out_date");
    reservation.nights = match (&reservation.arrival_date, &reservation.departure_date) {
        (Some(arrival), Some(departure)) => time::nights_between(arrival, departure),
        _ => None,
    };
    // Hostex answers 0 for a reservation not allocated to a property.
    reservation.property_id = json::string(stay, "property_id").filter(|id| id != "0");
    reservation.number_of_guests = json::count(stay, "number_of_guests");
    reservation.number_of_adults = json::count(stay, "number_of_adults");
    reservation.number_of_children = json::count(stay, "number_of_children");
    reservation.number_of_infants = json::count(stay, "number_of_infants");
    reservation.number_of_pets = json::count(stay, "number_of_pets");
    let mut guest = GuestInfo::named(json::string(stay, "guest_name"));
    guest.emails = contact::emails(json::string(stay, "guest_email").as_deref());
    guest.mobile_numbers = contact::phones(json::string(stay, "guest_phone").as_deref());
    reservation.primary_guest = Some(guest);
    reservation.source = json::string(stay, "channel_type");
    reservation.status = json::string(stay, "status").map(|word| status::lookup(STATUSES, &word)).unwrap_or(ReservationStatus::Unknown);
    let rates = stay.get("rates").cloned().unwrap_or(Value::Null);
    let total = rates.get("total_rate").cloned().unwrap_or(Value::Null);
    reservation.total_price = money::amount_at(&total, "amount");
    reservation.currency = json::string(&total, "currency").and_then(|code| money::currency(&code));
    reservation.finances.total_price = reservation.total_price;
    reservation.finances.currency = reservation.currency.clone();
    // Only the accommodation line is mapped: the other detail types seen (HOST_SERVICE_FEE, the
    // channel's commission) are what the host pays, not charges of the stay.
    let accommodation: Vec<Charge> = json::array(&rates, "details")
        .iter()
        .filter(|line| json::string(line, "type").as_deref() == Some("ACCOMMODATION"))
        .map(|line| Charge {
            name: json::string(line, "type"),
            description: json::string(line, "description"),
            kind: "BASE_PRICE".into(),
            units: None,
            total: money::amount_at(line, "amount"),
            is_mandatory: Some(true),
        })
        .collect();
    if !accommodation.is_empty() {
        reservation.finances.base_price.total = accommodation.iter().filter_map(|line| line.total).reduce(|a, b| a + b);
        reservation.finances.base_price.breakdown = accommodation;
    }
    reservation.codes.confirmation_code = json::string(stay, "channel_id");
    reservation.notes = json::string(stay, "remarks");
    reservation
}

/// `property_availability_updated`: `{property_id, availabilities: [{date, available}]}`.
pub fn availability(fields: &Value) -> Result<Calendar, PluginError> {
    let property_id = json::string(fields, "property_id")
        .ok_or_else(|| PluginError::BadPayload("property_availability_updated: no `property_id`".into()))?;
    let days = json::array(fields, "availabilities")
        .iter()
        .map(|day| {
            let date =
                json::date(day, "date").ok_or_else(|| PluginError::BadPayload(format!("availability without a valid `date`: {day}")))?;
            let status = match json::flag(day, "available") {
                Some(true) => DayStatus::Available,
                Some(false) => DayStatus::NotAvailable,
                None => return Err(PluginError::BadPayload(format!("availability of {date} without `available`"))),
            };
            Ok(CalendarDay {
                date,
                status,
                units_available: None,
                price: None,
                currency: None,
                minimum_nights: None,
                maximum_nights: None,
                reservation_ids: Vec::new(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Calendar { property_id, room_type_id: None, days })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use stayhook_plugin_sdk::testing::answer;

    fn inbound(body: Value) -> Inbound {
        stayhook_plugin_sdk::json_inbound(&body)
    }

    #[test]
    fn statuses() {
        for (hostex, unified) in [
            ("wait_accept", ReservationStatus::Pending),
            ("wait_pay", ReservationStatus::Pending),
            ("accepted", ReservationStatus::Confirmed),
            ("cancelled", ReservationStatus::Cancelled),
            ("denied", ReservationStatus::Declined),
            ("timeout", ReservationStatus::Expired),
            ("something_new", ReservationStatus::Unknown),
        ] {
            assert_eq!(reservation(&json!({"status": hostex}), "s").status, unified, "{hostex}");
        }
    }

    #[test]
    fn both_envelopes_ask_for_the_reservation_by_its_code() {
        for body in [
            json!({"event": "reservation_updated", "reservation_code": "0-1-a", "stay_code": "0-1_1-a", "timestamp": "2024-01-01T00:00:00Z"}),
            json!({"event": "reservation_updated", "data": {"reservation_code": "0-1-a", "stay_code": "0-1_1-a"}, "timestamp": "2024-01-01T00:00:00Z"}),
        ] {
            let Outcome::Fetch(requests) = normalize(&inbound(body), &[]).unwrap() else { panic!("expected fetch") };
            assert_eq!(requests.len(), 1);
            assert_eq!(requests[0].path, "/reservations");
            assert_eq!(requests[0].query, vec![("reservation_code".to_string(), "0-1-a".to_string())]);
        }
    }

    #[test]
    fn the_matching_stay_is_mapped() {
        let body = json!({"event": "reservation_updated", "reservation_code": "0-1-a", "stay_code": "0-1_2-a"});
        let stays = json!({"error_code": 200, "data": {"reservations": [
            {"stay_code": "0-1_1-a", "status": "accepted"},
            {"stay_code": "0-1_2-a", "status": "cancelled", "cancelled_at": "2024-01-02T00:00:00+00:00"}
        ]}});
        let Outcome::Done(events) = normalize(&inbound(body), &[answer(RESERVATION, 200, stays)]).unwrap() else { panic!("expected done") };
        let [Event::ReservationUpdated(reservation)] = events.as_slice() else { panic!("{events:?}") };
        assert_eq!(reservation.id, "0-1_2-a");
        assert_eq!(reservation.status, ReservationStatus::Cancelled);
        assert_eq!(reservation.cancelled_at.as_deref(), Some("2024-01-02T00:00:00+00:00"));
    }

    #[test]
    fn an_error_answered_with_http_200_is_a_failure() {
        let body = json!({"event": "reservation_created", "reservation_code": "r", "stay_code": "s"});
        let limited = json!({"request_id": "x", "error_code": 429, "error_msg": "Too many requests"});
        let Outcome::Done(events) = normalize(&inbound(body), &[answer(RESERVATION, 200, limited)]).unwrap() else {
            panic!("expected done")
        };
        let [Event::Incomplete(incomplete)] = events.as_slice() else { panic!("{events:?}") };
        assert_eq!(incomplete.record_id, "s");
        assert_eq!(incomplete.event_type, EventType::ReservationCreated);
        assert!(incomplete.reason.contains("429"), "{}", incomplete.reason);
    }

    #[test]
    fn bad_bodies_are_refused_with_a_reason() {
        let error = normalize(&inbound(json!({"reservation_code": "r"})), &[]).unwrap_err();
        assert!(matches!(error, PluginError::BadPayload(message) if message.contains("event")));
        let error = normalize(&inbound(json!({"event": "reservation_created"})), &[]).unwrap_err();
        assert!(matches!(error, PluginError::BadPayload(message) if message.contains("reservation_code")));
        let error = normalize(&inbound(json!({"event": "property_availability_updated", "property_id": 1, "availabilities": [{"date": "soon", "available": true}]})), &[]).unwrap_err();
        assert!(matches!(error, PluginError::BadPayload(message) if message.contains("date")));
        let mut truncated = inbound(json!({}));
        truncated.body = br#"{"event": "reservation_created", "reservation_co"#.to_vec();
        assert!(matches!(normalize(&truncated, &[]).unwrap_err(), PluginError::BadPayload(message) if message.contains("not JSON")));
        let error = normalize(&inbound(json!({"event": "reservation/created", "reservationID": "1"})), &[]).unwrap_err();
        assert!(matches!(error, PluginError::BadPayload(message) if message.contains("not a Hostex event")));
        let error = normalize(&inbound(json!({"event": "message_created", "conversation_id": "c", "message_id": "m"})), &[]).unwrap_err();
        assert!(matches!(error, PluginError::UnsupportedEvent(_)));
    }

    #[test]
    fn availability_days_map_to_calendar_days() {
        let body = json!({"event": "property_availability_updated", "property_id": 10000, "availabilities": [
            {"date": "2019-01-01", "available": true}, {"date": "2019-01-02", "available": false}
        ]});
        let Outcome::Done(events) = normalize(&inbound(body), &[]).unwrap() else { panic!("expected done") };
        let [Event::CalendarUpdated(calendar)] = events.as_slice() else { panic!("{events:?}") };
        assert_eq!(calendar.property_id, "10000");
        assert_eq!(calendar.days.len(), 2);
        assert_eq!(calendar.days[1].status, DayStatus::NotAvailable);
    }
}
