//! Hostify notification → `GET /reservations/{id}` → unified events.
//!
//! Hostify delivers through Amazon SNS; the host verifies the SNS envelope, answers the
//! subscription handshake and hands this plugin the notification's `Message`, a JSON object such as
//! `{"type": "message_new", "reservation_id": 12345, "message": "Guest: Hello!"}` (Hostify's
//! example). Reservation notifications carry the id only: the reservation is fetched.

use serde_json::Value;
use stayhook_plugin_sdk::model::*;
use stayhook_plugin_sdk::status::{self, Vocabulary};
use stayhook_plugin_sdk::{api, contact, json, money, time};

/// The notification types this plugin maps (one Hostify subscription each).
pub const EVENTS: &[&str] = &["new_reservation", "update_reservation", "move_reservation"];
/// Every notification type Hostify documents; the others are recognized and skipped.
pub const KNOWN_TYPES: &[&str] = &[
    "message_new",
    "new_reservation",
    "update_reservation",
    "move_reservation",
    "create_listing",
    "update_listing",
    "create_update_listing",
    "listing_photo_processed",
];
/// Request id of the reservation.
pub const RESERVATION: &str = "reservation";

/// Hostify's reservation statuses (the reservation object's `status`). Only words whose meaning
/// is plain are mapped; the rest (moved, extended, edited, inquiry, offer, …) stay unknown.
const STATUSES: Vocabulary = &[
    ("accepted", ReservationStatus::Confirmed),
    ("pending", ReservationStatus::Pending),
    ("awaiting_payment", ReservationStatus::Pending),
    ("cancelled", ReservationStatus::Cancelled),
    ("cancelled_by_host", ReservationStatus::Cancelled),
    ("cancelled_by_guest", ReservationStatus::Cancelled),
    ("denied", ReservationStatus::Cancelled),
];

/// The notification's type: `type` in Hostify's example, `notification_type` as registered.
fn notification_type(body: &Value) -> Option<String> {
    json::string(body, "type").or_else(|| json::string(body, "notification_type"))
}

/// One notification → events, or the reservation first.
pub fn normalize(inbound: &Inbound, responses: &[ApiResponse]) -> Result<Outcome, PluginError> {
    let body = stayhook_plugin_sdk::json_object_body(inbound)?;
    let kind = notification_type(&body).ok_or_else(|| PluginError::BadPayload("no `type`: not a Hostify notification".into()))?;
    if !KNOWN_TYPES.contains(&kind.as_str()) {
        return Err(PluginError::BadPayload(format!("{kind:?} is not a Hostify notification type")));
    }
    let event_type = match kind.as_str() {
        "new_reservation" => EventType::ReservationCreated,
        "update_reservation" | "move_reservation" => EventType::ReservationUpdated,
        _ => return Err(PluginError::UnsupportedEvent(kind)),
    };
    let reservation_id = json::string(&body, "reservation_id")
        .or_else(|| body.get("reservation").and_then(|reservation| json::string(reservation, "id")))
        .ok_or_else(|| PluginError::BadPayload(format!("{kind}: no `reservation_id`")))?;
    let Some(answer) = api::response(responses, RESERVATION) else {
        return Ok(Outcome::Fetch(vec![reservation_request(&reservation_id)]));
    };
    let (data, guest) = match api::successful(answer).and_then(|body| reservation_data(&body, &reservation_id)) {
        Ok(found) => found,
        Err(reason) => return Ok(Outcome::Done(vec![Event::Incomplete(Incomplete { event_type, record_id: reservation_id, reason })])),
    };
    let reservation = reservation(&data, guest.as_ref(), &reservation_id);
    Ok(Outcome::Done(vec![match event_type {
        EventType::ReservationCreated => Event::ReservationCreated(reservation),
        _ => Event::ReservationUpdated(reservation),
    }]))
}

/// `GET /reservations/<id>?include_related_objects=1`: the reservation with its related objects
/// (the guest).
pub fn reservation_request(reservation_id: &str) -> ApiRequest {
    ApiRequest {
        query: vec![("include_related_objects".into(), "1".into())],
        ..api::get(RESERVATION, format!("/reservations/{reservation_id}"))
    }
}

/// The reservation of an answer, `{"reservation": {...}}` (the shape of the documented `fees`
/// example), and the guest when the answer relates one (`guest`, beside or inside it).
/// `success: false` carries an error.
pub fn reservation_data(body: &Value, reservation_id: &str) -> Result<(Value, Option<Value>), String> {
    if json::flag(body, "success") == Some(false) {
        let reason = json::string(body, "error").or_else(|| json::string(body, "message")).unwrap_or_else(|| "success false".into());
        return Err(format!("Hostify answered: {reason}"));
    }
    let reservation = body
        .get("reservation")
        .filter(|reservation| reservation.is_object() && json::string(reservation, "id").is_some())
        .cloned()
        .ok_or_else(|| format!("reservation {reservation_id} is not in the answer"))?;
    let guest = body.get("guest").or_else(|| reservation.get("guest")).filter(|guest| guest.is_object()).cloned();
    Ok((reservation, guest))
}

/// "HH:mm" (or "HH:mm:ss") on a date → "YYYY-MM-DD HH:MM:SS", local.
fn at_time(date: Option<&String>, clock: Option<String>) -> Option<String> {
    let text = format!("{} {}", date?, clock?);
    let text = if text.len() == 16 { format!("{text}:00") } else { text };
    time::is_timestamp(&text).then_some(text)
}

/// Hostify's reservation object (and its related guest) → the unified reservation.
pub fn reservation(data: &Value, guest: Option<&Value>, reservation_id: &str) -> Reservation {
    let mut reservation = Reservation::new(json::string(data, "id").unwrap_or_else(|| reservation_id.to_string()));
    reservation.created_at = json::timestamp(data, "created_at");
    reservation.updated_at = json::timestamp(data, "updated_at");
    reservation.arrival_date = json::date(data, "checkIn");
    reservation.departure_date = json::date(data, "checkOut");
    reservation.nights = json::count(data, "nights").or_else(|| match (&reservation.arrival_date, &reservation.departure_date) {
        (Some(arrival), Some(departure)) => time::nights_between(arrival, departure),
        _ => None,
    });
    reservation.property_id = json::string(data, "listing_id");
    reservation.number_of_guests = json::count(data, "guests");
    reservation.number_of_adults = json::count(data, "adults");
    reservation.number_of_children = json::count(data, "children");
    reservation.number_of_infants = json::count(data, "infants");
    reservation.number_of_pets = json::count(data, "pets");
    reservation.source = json::string(data, "source");
    reservation.status = json::string(data, "status").map(|word| status::lookup(STATUSES, &word)).unwrap_or(ReservationStatus::Unknown);
    reservation.currency = json::string(data, "currency").and_then(|code| money::currency(&code));
    reservation.finances.currency = reservation.currency.clone();
    // No field is documented as the guest's total (`subtotal` and `payout_price` are not
    // described): only the base price is mapped, as what it is named.
    reservation.finances.base_price.total = money::amount_at(data, "base_price");
    reservation.arrival_estimated_time = at_time(reservation.arrival_date.as_ref(), json::string(data, "planned_arrival"));
    reservation.departure_estimated_time = at_time(reservation.departure_date.as_ref(), json::string(data, "planned_departure"));
    reservation.codes.confirmation_code = json::string(data, "confirmation_code");
    reservation.codes.access_code = json::string(data, "lock_pin").into_iter().collect();
    reservation.notes = json::string(data, "notes");
    if let Some(guest) = guest {
        let mut info = GuestInfo::named(json::string(guest, "name"));
        info.emails = contact::emails(json::string(guest, "email").as_deref());
        info.mobile_numbers = contact::phones(json::string(guest, "phone").as_deref());
        reservation.primary_guest = Some(info);
    }
    reservation
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
        for (word, unified) in [
            ("accepted", ReservationStatus::Confirmed),
            ("pending", ReservationStatus::Pending),
            ("awaiting_payment", ReservationStatus::Pending),
            ("cancelled", ReservationStatus::Cancelled),
            ("denied", ReservationStatus::Cancelled),
            ("moved", ReservationStatus::Unknown),
            ("inquiry", ReservationStatus::Unknown),
            ("no_show", ReservationStatus::Unknown),
        ] {
            assert_eq!(reservation(&json!({"id": 1, "status": word}), None, "1").status, unified, "{word}");
        }
    }

    #[test]
    fn a_reservation_notification_asks_for_the_reservation_then_maps_it() {
        for kind in ["new_reservation", "update_reservation", "move_reservation"] {
            let body = json!({"type": kind, "reservation_id": 12345});
            let Outcome::Fetch(requests) = normalize(&inbound(body.clone()), &[]).unwrap() else { panic!("expected fetch") };
            assert_eq!((requests[0].method.as_str(), requests[0].path.as_str()), ("GET", "/reservations/12345"));
            let found = json!({"success": true, "reservation": {"id": 12345, "status": "accepted", "checkIn": "2026-05-01", "checkOut": "2026-05-04",
                "listing_id": 1000, "guests": 3, "adults": 2, "children": 1, "planned_arrival": "15:00", "currency": "eur"},
                "guest": {"name": "Ann Lee", "email": "ANN@example.com", "phone": "+1-541-754-3010"}});
            let Outcome::Done(events) = normalize(&inbound(body), &[answer(RESERVATION, 200, found)]).unwrap() else {
                panic!("expected done")
            };
            let reservation = match (kind, events.as_slice()) {
                ("new_reservation", [Event::ReservationCreated(reservation)]) => reservation,
                (_, [Event::ReservationUpdated(reservation)]) if kind != "new_reservation" => reservation,
                other => panic!("{kind}: {other:?}"),
            };
            assert_eq!(reservation.nights, Some(3));
            assert_eq!(reservation.property_id.as_deref(), Some("1000"));
            assert_eq!(reservation.arrival_estimated_time.as_deref(), Some("2026-05-01 15:00:00"));
            assert_eq!(reservation.currency.as_deref(), Some("EUR"));
            let guest = reservation.primary_guest.as_ref().unwrap();
            assert_eq!(guest.emails, vec!["ann@example.com".to_string()]);
        }
    }

    #[test]
    fn a_failed_or_empty_answer_is_an_incomplete_reservation() {
        let body = json!({"type": "update_reservation", "reservation_id": 7});
        for failed in [json!({"success": false, "error": "Reservation not found"}), json!({"success": true})] {
            let Outcome::Done(events) = normalize(&inbound(body.clone()), &[answer(RESERVATION, 200, failed)]).unwrap() else {
                panic!("expected done")
            };
            let [Event::Incomplete(incomplete)] = events.as_slice() else { panic!("{events:?}") };
            assert_eq!((incomplete.event_type, incomplete.record_id.as_str()), (EventType::ReservationUpdated, "7"));
        }
    }

    #[test]
    fn bad_bodies_are_refused_with_a_reason() {
        let refused = |body: Value| normalize(&inbound(body), &[]).unwrap_err();
        assert!(matches!(refused(json!({"reservation_id": 1})), PluginError::BadPayload(message) if message.contains("type")));
        // Another PMS's body (Beds24 inventory, Hostex): a `type`/`event` that is not Hostify's.
        assert!(
            matches!(refused(json!({"type": "reservation", "document": {}})), PluginError::BadPayload(message) if message.contains("not a Hostify"))
        );
        assert!(matches!(refused(json!({"event": "reservation_created", "reservation_code": "x"})), PluginError::BadPayload(_)));
        assert!(
            matches!(refused(json!({"type": "new_reservation"})), PluginError::BadPayload(message) if message.contains("reservation_id"))
        );
        assert!(
            matches!(refused(json!({"type": "message_new", "reservation_id": 1, "message": "Guest: Hello!"})), PluginError::UnsupportedEvent(kind) if kind == "message_new")
        );
        let mut truncated = inbound(json!({}));
        truncated.body = br#"{"type": "new_reservation", "reservation_id": 12"#.to_vec();
        assert!(matches!(normalize(&truncated, &[]), Err(PluginError::BadPayload(message)) if message.contains("not JSON")));
    }
}
