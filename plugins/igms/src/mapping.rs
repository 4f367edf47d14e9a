//! iGMS webhook → unified events.
//!
//! iGMS posts `{"type": "booking_data" | "calendar_data" | "guest_data" | "properties_data",
//! "data": [ ... ]}`: `data` is an ARRAY, so one delivery may carry several changes
//! (https://www.igms.com/docs/airgms-api/webhooks.html, "Webhooks general info"). For
//! `booking_data` every item is a booking with the fields of the official table (`booking_uid`,
//! `reservation_code`, `booking_status`, `platform_type`, `property_uid`, `number_of_guests`,
//! `price`, `local_checkin_dttm`, `local_checkout_dttm`, ...). Each item becomes its own event, in
//! the order of the array.
//!
//! No item says whether the booking is new: every booking is emitted as `reservation-upserted`
//! and the host decides created or updated from its stored state. A cancellation is a change of
//! `booking_status`, so it arrives as an update with status CANCELLED.
//!
//! The other webhook types are skipped as unsupported: the captured documentation gives no item
//! schema for them (README, open points). Every field name here comes from a source listed in
//! README.md.

use serde_json::Value;
use stayhook_plugin_sdk::model::*;
use stayhook_plugin_sdk::status::{self, Vocabulary};
use stayhook_plugin_sdk::{json, money, time};

/// The webhook types this plugin maps, in iGMS's spelling.
pub const EVENTS: &[&str] = &["booking_data"];

/// Webhook types iGMS sends that the plugin skips on purpose (recorded as unsupported, not failed).
pub const SKIPPED: &[&str] = &["calendar_data", "guest_data", "properties_data"];

/// iGMS's `booking_status` words. Only `accepted` appears in an official sample (the v1/bookings
/// response sample); the statuses list of the "filters section" was not captured, so the other
/// words are the plain English ones and anything else maps to UNKNOWN (README, open points).
const STATUSES: Vocabulary = &[
    ("accepted", ReservationStatus::Confirmed),
    ("confirmed", ReservationStatus::Confirmed),
    ("pending", ReservationStatus::Pending),
    ("inquiry", ReservationStatus::Inquiry),
    ("cancelled", ReservationStatus::Cancelled),
    ("canceled", ReservationStatus::Cancelled),
    ("declined", ReservationStatus::Declined),
    ("expired", ReservationStatus::Expired),
];

/// One webhook → one event per record, in the order of `data`.
pub fn normalize(inbound: &Inbound, _responses: &[ApiResponse]) -> Result<Outcome, PluginError> {
    let body = stayhook_plugin_sdk::json_object_body(inbound)?;
    let kind = json::string(&body, "type").ok_or_else(|| PluginError::BadPayload("no `type` field".into()))?;
    if !EVENTS.contains(&kind.as_str()) {
        return Err(PluginError::UnsupportedEvent(kind));
    }
    let items =
        body.get("data").and_then(Value::as_array).ok_or_else(|| PluginError::BadPayload(format!("{kind} without a `data` array")))?;
    let mut events = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        if !item.is_object() {
            return Err(PluginError::BadPayload(format!("{kind}: data[{index}] is not an object")));
        }
        let id = json::string(item, "booking_uid")
            .ok_or_else(|| PluginError::BadPayload(format!("{kind}: data[{index}] has no `booking_uid`")))?;
        events.push(Event::ReservationUpserted(reservation(id, item)));
    }
    Ok(Outcome::Done(events))
}

/// The unified status of a `booking_status` word; a booking without one is UNKNOWN.
pub fn booking_status(item: &Value) -> ReservationStatus {
    json::string(item, "booking_status").map(|word| status::lookup(STATUSES, &word)).unwrap_or(ReservationStatus::Unknown)
}

/// One `booking_data` item → the unified reservation.
pub fn reservation(id: String, item: &Value) -> Reservation {
    let mut reservation = Reservation::new(id);
    reservation.status = booking_status(item);
    // "Y-m-d H:i:s", local to the property and without a zone: kept as written.
    let checkin = json::timestamp(item, "local_checkin_dttm");
    let checkout = json::timestamp(item, "local_checkout_dttm");
    reservation.arrival_date = checkin.as_deref().and_then(time::date_part).map(str::to_string);
    reservation.departure_date = checkout.as_deref().and_then(time::date_part).map(str::to_string);
    reservation.arrival_estimated_time = checkin;
    reservation.departure_estimated_time = checkout;
    reservation.nights = match (&reservation.arrival_date, &reservation.departure_date) {
        (Some(arrival), Some(departure)) => time::nights_between(arrival, departure),
        _ => None,
    };
    // Not in the webhook's field table, but in the bookings API's answer (same object): read when present.
    reservation.created_at = json::timestamp(item, "created_dttm");
    reservation.updated_at = json::timestamp(item, "updated_dttm");
    reservation.property_id = json::string(item, "property_uid");
    reservation.number_of_guests = json::count(item, "number_of_guests");
    reservation.source = json::string(item, "platform_type");
    reservation.codes.confirmation_code = json::string(item, "reservation_code");
    // Only `price.currency` is read: the rest of the price object was not captured (README, open points).
    reservation.currency = item.get("price").and_then(|price| json::string(price, "currency")).and_then(|code| money::currency(&code));
    reservation.finances.currency = reservation.currency.clone();
    reservation
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn inbound(body: Value) -> Inbound {
        stayhook_plugin_sdk::json_inbound(&body)
    }

    fn item(uid: &str) -> Value {
        json!({
            "booking_uid": uid,
            "reservation_code": "AXFNTT",
            "booking_status": "accepted",
            "platform_type": "airbnb",
            "property_uid": "1482329366187",
            "number_of_guests": 2,
            "local_checkin_dttm": "2019-01-05 08:30:00",
            "local_checkout_dttm": "2019-01-12 03:00:00"
        })
    }

    fn events(body: Value) -> Vec<Event> {
        let Outcome::Done(events) = normalize(&inbound(body), &[]).unwrap() else { panic!("expected done") };
        events
    }

    #[test]
    fn a_batch_yields_one_upsert_per_record_in_order() {
        let events = events(json!({"type": "booking_data", "data": [item("a"), item("b"), item("c")]}));
        let ids: Vec<&str> = events
            .iter()
            .map(|event| match event {
                Event::ReservationUpserted(reservation) => reservation.id.as_str(),
                other => panic!("expected an upsert, got {other:?}"),
            })
            .collect();
        assert_eq!(ids, ["a", "b", "c"]);
    }

    #[test]
    fn a_booking_maps_dates_times_and_codes() {
        let events = events(json!({"type": "booking_data", "data": [item("AXFNTT_airbnb_123")]}));
        let Event::ReservationUpserted(r) = &events[0] else { panic!("upsert") };
        assert_eq!(r.arrival_date.as_deref(), Some("2019-01-05"));
        assert_eq!(r.departure_date.as_deref(), Some("2019-01-12"));
        assert_eq!(r.arrival_estimated_time.as_deref(), Some("2019-01-05 08:30:00"));
        assert_eq!(r.nights, Some(7));
        assert_eq!(r.status, ReservationStatus::Confirmed);
        assert_eq!(r.source.as_deref(), Some("airbnb"));
        assert_eq!(r.codes.confirmation_code.as_deref(), Some("AXFNTT"));
        assert_eq!(r.number_of_guests, Some(2));
    }

    #[test]
    fn statuses_map_case_insensitively_and_unknown_words_stay_unknown() {
        for (word, expected) in [
            ("accepted", ReservationStatus::Confirmed),
            ("ACCEPTED", ReservationStatus::Confirmed),
            ("cancelled", ReservationStatus::Cancelled),
            ("something_new", ReservationStatus::Unknown),
        ] {
            assert_eq!(booking_status(&json!({"booking_status": word})), expected, "{word}");
        }
        assert_eq!(booking_status(&json!({})), ReservationStatus::Unknown);
    }

    #[test]
    fn an_empty_batch_emits_nothing() {
        assert!(events(json!({"type": "booking_data", "data": []})).is_empty());
    }

    #[test]
    fn other_types_are_unsupported_and_bad_shapes_are_refused() {
        for kind in SKIPPED {
            let error = normalize(&inbound(json!({"type": kind, "data": []})), &[]).unwrap_err();
            assert!(matches!(error, PluginError::UnsupportedEvent(ref name) if name == kind), "{error:?}");
        }
        let refused = [
            json!({"data": [item("a")]}),
            json!({"type": "booking_data", "data": {"booking_uid": "a"}}),
            json!({"type": "booking_data", "data": [item("a"), "b"]}),
            json!({"type": "booking_data", "data": [{"reservation_code": "X"}]}),
        ];
        for body in refused {
            assert!(matches!(normalize(&inbound(body.clone()), &[]), Err(PluginError::BadPayload(_))), "{body}");
        }
        let mut truncated = inbound(json!({}));
        truncated.body = br#"{"type": "booking_data", "data": [{"booking_uid": "a""#.to_vec();
        assert!(matches!(normalize(&truncated, &[]), Err(PluginError::BadPayload(_))));
    }

    #[test]
    fn a_body_of_another_pms_is_refused() {
        // Smoobu's envelope: no `type`.
        let smoobu = json!({"action": "newReservation", "user": 1, "data": {"id": 5}});
        assert!(matches!(normalize(&inbound(smoobu), &[]), Err(PluginError::BadPayload(_))));
        // Uplisting's flat booking: no `type` either.
        let uplisting = json!({"id": 1, "check_in": "2021-12-03", "status": "confirmed"});
        assert!(matches!(normalize(&inbound(uplisting), &[]), Err(PluginError::BadPayload(_))));
    }
}
