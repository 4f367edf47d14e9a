//! Smoobu webhook → unified events.
//!
//! Smoobu posts `{"action": "<name>", "user": <Smoobu user id>, "data": {...}}`. For the
//! reservation actions `data` is the booking as the reservations API returns it, with kebab-case
//! keys (`guest-name`, `reference-id`, `created-at`, `is-blocked-booking`, ...) and nested
//! `apartment {id, name}` and `channel {id, name}`. The payload is complete: no API call is needed.
//! Every field name here comes from a source listed in README.md ("Sources and open points").

use serde_json::Value;
use stayhook_plugin_sdk::model::*;
use stayhook_plugin_sdk::status::{self, Vocabulary};
use stayhook_plugin_sdk::{contact, json, language, money, time};

/// The inbound actions this plugin understands, in Smoobu's spelling.
pub const EVENTS: &[&str] = &["newReservation", "updateReservation", "cancelReservation", "deleteReservation"];

/// Actions Smoobu sends that the plugin skips on purpose (recorded as unsupported, not failed):
/// `newMessage` (its payload is not documented publicly) and `updateRates` (rates, not a calendar
/// of one property with a documented shape).
pub const SKIPPED: &[&str] = &["newMessage", "updateRates"];

/// Smoobu's booking `type` words. A blocked period (`is-blocked-booking: true`) is read before this
/// table, as an owner stay.
const TYPES: Vocabulary = &[
    ("reservation", ReservationStatus::Confirmed),
    ("modification of booking", ReservationStatus::Confirmed),
    ("cancellation", ReservationStatus::Cancelled),
];

/// One webhook → the unified events it means.
pub fn normalize(inbound: &Inbound, _responses: &[ApiResponse]) -> Result<Outcome, PluginError> {
    let body = stayhook_plugin_sdk::json_object_body(inbound)?;
    let action = json::string(&body, "action").ok_or_else(|| PluginError::BadPayload("no `action` field".into()))?;
    if !EVENTS.contains(&action.as_str()) {
        return Err(PluginError::UnsupportedEvent(action));
    }
    let data = body
        .get("data")
        .filter(|data| data.is_object())
        .ok_or_else(|| PluginError::BadPayload(format!("{action} without a `data` object")))?;
    let id = json::string(data, "id").ok_or_else(|| PluginError::BadPayload(format!("{action}: `data` has no `id`")))?;
    let event = match action.as_str() {
        "deleteReservation" => Event::ReservationDeleted(id),
        "newReservation" => Event::ReservationCreated(reservation(id, data, false)),
        "updateReservation" => Event::ReservationUpdated(reservation(id, data, false)),
        // A cancellation is an update whose status says CANCELLED, whatever `type` says.
        _ => Event::ReservationUpdated(reservation(id, data, true)),
    };
    Ok(Outcome::Done(vec![event]))
}

/// The unified status of a booking: cancelled when the action says so, an owner stay for a blocked
/// period, else what `type` says; a booking without `type` counts as confirmed (Smoobu's booking
/// object has no pending or inquiry state in any source read).
pub fn booking_status(data: &Value, cancelled: bool) -> ReservationStatus {
    if cancelled {
        return ReservationStatus::Cancelled;
    }
    if json::flag(data, "is-blocked-booking") == Some(true) {
        return ReservationStatus::OwnerStay;
    }
    match json::string(data, "type") {
        Some(word) => status::lookup(TYPES, &word),
        None => ReservationStatus::Confirmed,
    }
}

/// Smoobu's booking object → the unified reservation.
pub fn reservation(id: String, data: &Value, cancelled: bool) -> Reservation {
    let mut reservation = Reservation::new(id);
    reservation.status = booking_status(data, cancelled);
    // "2018-01-03 13:51": Smoobu's local time without a zone, kept as written.
    reservation.created_at = json::timestamp(data, "created-at");
    // Sources disagree on the spelling of the modification time; both are read.
    reservation.updated_at = json::timestamp(data, "modifiedAt").or_else(|| json::timestamp(data, "modified-at"));
    reservation.arrival_date = json::date(data, "arrival");
    reservation.departure_date = json::date(data, "departure");
    reservation.nights = match (&reservation.arrival_date, &reservation.departure_date) {
        (Some(arrival), Some(departure)) => time::nights_between(arrival, departure),
        _ => None,
    };
    reservation.arrival_estimated_time = reservation.arrival_date.as_deref().and_then(|date| at_time(date, data, "check-in"));
    reservation.departure_estimated_time = reservation.departure_date.as_deref().and_then(|date| at_time(date, data, "check-out"));
    // `apartmentId` and `channelName` (flat) appear in one third-party payload sample instead of the
    // nested objects (README, open points); read as fallbacks.
    reservation.property_id =
        data.get("apartment").and_then(|apartment| json::string(apartment, "id")).or_else(|| json::string(data, "apartmentId"));
    reservation.source =
        data.get("channel").and_then(|channel| json::string(channel, "name")).or_else(|| json::string(data, "channelName"));
    reservation.number_of_adults = json::count(data, "adults");
    reservation.number_of_children = json::count(data, "children");
    reservation.number_of_guests = match (reservation.number_of_adults, reservation.number_of_children) {
        (None, None) => None,
        (adults, children) => Some(adults.unwrap_or(0) + children.unwrap_or(0)),
    };
    reservation.primary_guest = Some(guest(data));
    reservation.codes.confirmation_code = json::string(data, "reference-id");
    reservation.notes = json::string(data, "notice");
    reservation.total_price = money::amount_at(data, "price");
    reservation.finances.total_price = reservation.total_price;
    reservation.finances.payment_status = json::string(data, "price-paid").and_then(|paid| payment_status(&paid));
    reservation
}

/// The guest of a booking: `guest-name`, `firstname`/`lastname`, `email`, `phone`, `language`.
fn guest(data: &Value) -> GuestInfo {
    let first = json::string(data, "firstname");
    let last = json::string(data, "lastname");
    let name = json::string(data, "guest-name").or_else(|| match (&first, &last) {
        (None, None) => None,
        _ => Some([first.as_deref(), last.as_deref()].into_iter().flatten().collect::<Vec<_>>().join(" ")),
    });
    let mut guest = GuestInfo::named(name);
    guest.name_first = first;
    guest.name_last = last;
    guest.emails = contact::emails(json::string(data, "email").as_deref());
    guest.mobile_numbers = contact::phones(json::string(data, "phone").as_deref());
    guest.preferred_language = json::string(data, "language").and_then(|code| language::from_code(&code));
    guest
}

/// A local date-time from a date and Smoobu's "HH:MM" check-in or check-out time.
fn at_time(date: &str, data: &Value, key: &str) -> Option<String> {
    let clock = json::string(data, key)?;
    let (hour, minute) = clock.split_once(':')?;
    let (hour, minute): (u32, u32) = (hour.trim().parse().ok()?, minute.trim().get(..2)?.parse().ok()?);
    (hour < 24 && minute < 60).then(|| format!("{}T{hour:02}:{minute:02}:00", time::date_part(date).unwrap_or(date)))
}

/// `price-paid` ("Yes" / "No") as the unified free-text payment status.
fn payment_status(paid: &str) -> Option<String> {
    match paid.trim().to_ascii_lowercase().as_str() {
        "yes" => Some("Paid".into()),
        "no" => Some("Unpaid".into()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn inbound(body: Value) -> Inbound {
        stayhook_plugin_sdk::json_inbound(&body)
    }

    fn one(body: Value) -> Event {
        let Outcome::Done(mut events) = normalize(&inbound(body), &[]).unwrap() else { panic!("expected done") };
        assert_eq!(events.len(), 1, "{events:?}");
        events.remove(0)
    }

    #[test]
    fn actions_map_to_events() {
        let data = json!({"id": 7, "arrival": "2026-05-01", "departure": "2026-05-03"});
        let status = |event: Event| match event {
            Event::ReservationCreated(r) => ("created", r.id, r.status),
            Event::ReservationUpdated(r) => ("updated", r.id, r.status),
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!(status(one(json!({"action": "newReservation", "data": data}))), ("created", "7".into(), ReservationStatus::Confirmed));
        assert_eq!(
            status(one(json!({"action": "updateReservation", "data": data}))),
            ("updated", "7".into(), ReservationStatus::Confirmed)
        );
        assert_eq!(
            status(one(json!({"action": "cancelReservation", "data": data}))),
            ("updated", "7".into(), ReservationStatus::Cancelled)
        );
        assert!(matches!(one(json!({"action": "deleteReservation", "user": 1, "data": data})), Event::ReservationDeleted(id) if id == "7"));
    }

    #[test]
    fn statuses_follow_action_blocking_and_type() {
        assert_eq!(booking_status(&json!({"type": "reservation"}), false), ReservationStatus::Confirmed);
        assert_eq!(booking_status(&json!({"type": "modification of booking"}), false), ReservationStatus::Confirmed);
        assert_eq!(booking_status(&json!({"type": "cancellation"}), false), ReservationStatus::Cancelled);
        assert_eq!(booking_status(&json!({"type": "reservation", "is-blocked-booking": true}), false), ReservationStatus::OwnerStay);
        assert_eq!(booking_status(&json!({"type": "reservation", "is-blocked-booking": false}), false), ReservationStatus::Confirmed);
        assert_eq!(booking_status(&json!({"type": "something new"}), false), ReservationStatus::Unknown);
        assert_eq!(booking_status(&json!({}), false), ReservationStatus::Confirmed);
        assert_eq!(booking_status(&json!({"is-blocked-booking": true}), true), ReservationStatus::Cancelled);
    }

    #[test]
    fn booking_fields_are_read() {
        let data = json!({
            "id": 291, "reference-id": null, "type": "reservation", "arrival": "2018-01-10", "departure": "2018-01-12",
            "created-at": "2018-01-03 13:51", "modified-at": "2018-01-04 09:00",
            "apartment": {"id": 36, "name": "Apartment 1"}, "channel": {"id": 465614, "name": "Booking.com"},
            "guest-name": "Harry Potter", "firstname": "Harry", "lastname": "Potter", "email": "guest@example.com",
            "phone": "+49123456789", "adults": 3, "children": 2, "check-in": "16:00", "check-out": "10:00",
            "notice": "", "price": 150, "price-paid": "Yes", "language": "en"
        });
        let r = reservation("291".into(), &data, false);
        assert_eq!(r.created_at.as_deref(), Some("2018-01-03 13:51"));
        assert_eq!(r.updated_at.as_deref(), Some("2018-01-04 09:00"));
        assert_eq!(r.nights, Some(2));
        assert_eq!(r.arrival_estimated_time.as_deref(), Some("2018-01-10T16:00:00"));
        assert_eq!(r.departure_estimated_time.as_deref(), Some("2018-01-12T10:00:00"));
        assert_eq!(r.property_id.as_deref(), Some("36"));
        assert_eq!(r.source.as_deref(), Some("Booking.com"));
        assert_eq!(r.number_of_guests, Some(5));
        assert_eq!(r.codes.confirmation_code, None);
        assert_eq!(r.notes, None);
        assert_eq!(r.total_price, Some(150.0));
        assert_eq!(r.currency, None);
        assert_eq!(r.finances.payment_status.as_deref(), Some("Paid"));
        let guest = r.primary_guest.unwrap();
        assert_eq!(guest.name.as_deref(), Some("Harry Potter"));
        assert_eq!(guest.name_last.as_deref(), Some("Potter"));
        assert_eq!(guest.emails, vec!["guest@example.com".to_string()]);
        assert_eq!(guest.mobile_numbers, vec!["+49123456789".to_string()]);
        assert_eq!(guest.preferred_language.unwrap().name.as_deref(), Some("ENGLISH"));
    }

    #[test]
    fn odd_values_are_left_out() {
        let r = reservation(
            "1".into(),
            &json!({"arrival": "2026-02-30", "check-in": "late", "created-at": "yesterday", "modifiedAt": "2026-01-01 10:00"}),
            false,
        );
        assert_eq!(r.arrival_date, None);
        assert_eq!(r.arrival_estimated_time, None);
        assert_eq!(r.created_at, None);
        assert_eq!(r.updated_at.as_deref(), Some("2026-01-01 10:00"));
        assert_eq!(r.number_of_guests, None);
        let r = reservation("1".into(), &json!({"firstname": "Ada", "lastname": "Lovelace"}), false);
        assert_eq!(r.primary_guest.unwrap().name.as_deref(), Some("Ada Lovelace"));
    }

    #[test]
    fn bad_and_skipped_bodies_are_named() {
        let error = normalize(&inbound(json!({"data": {"id": 1}})), &[]).unwrap_err();
        assert!(matches!(error, PluginError::BadPayload(message) if message.contains("action")));
        let error = normalize(&inbound(json!({"action": "newReservation"})), &[]).unwrap_err();
        assert!(matches!(error, PluginError::BadPayload(message) if message.contains("data")));
        let error = normalize(&inbound(json!({"action": "newReservation", "data": {"arrival": "2026-05-01"}})), &[]).unwrap_err();
        assert!(matches!(error, PluginError::BadPayload(message) if message.contains("id")));
        for action in SKIPPED {
            let error = normalize(&inbound(json!({"action": action})), &[]).unwrap_err();
            assert!(matches!(error, PluginError::UnsupportedEvent(event) if event == *action));
        }
        let mut raw = inbound(json!({}));
        raw.body = b"not json".to_vec();
        assert!(matches!(normalize(&raw, &[]).unwrap_err(), PluginError::BadPayload(message) if message.contains("JSON")));
    }
}
