//! Uplisting webhook → unified events.
//!
//! Uplisting posts the FLAT booking object (`id`, `property_id`, `channel`, `check_in`,
//! `check_out`, `arrival_time`, `guest_name`, `status`, `currency`, money fields, `timestamp`,
//! ...) with **no event name in the body** (Pipedream's Uplisting sources, README "Sources").
//! A hook is registered per event (`booking_created`, `booking_updated`, `booking_removed`), so
//! registration gives each its own listener URL with `event=<name>` in the query, and that is how
//! the plugin tells them apart:
//!
//! - `event=booking_created` → `reservation-created`; `event=booking_updated` →
//!   `reservation-updated` (kept an update even for a booking the daemon has not seen);
//! - `event=booking_removed` → `reservation-deleted` with the booking id (removed bookings carry a
//!   `reason`, e.g. "destroyed", and no guest fields);
//! - no `event` parameter (a URL registered by hand): `reservation-upserted`, so the host decides
//!   created or updated from its stored state; a body with `reason` and no guest is a removal.

use serde_json::Value;
use stayhook_plugin_sdk::model::*;
use stayhook_plugin_sdk::status::{self, Vocabulary};
use stayhook_plugin_sdk::{contact, json, money, time};

/// The Uplisting hook events this plugin understands (values of the listener URL's `event=`).
pub const EVENTS: &[&str] = &["booking_created", "booking_updated", "booking_removed"];

/// The query parameter of the listener URL that names the hook event.
pub const EVENT_PARAMETER: &str = "event";

/// Uplisting's booking `status` words. Only "confirmed" appears in a sample; the others are the
/// plain English words, anything else maps to UNKNOWN (README, open points).
const STATUSES: Vocabulary = &[
    ("confirmed", ReservationStatus::Confirmed),
    ("pending", ReservationStatus::Pending),
    ("enquiry", ReservationStatus::Inquiry),
    ("inquiry", ReservationStatus::Inquiry),
    ("cancelled", ReservationStatus::Cancelled),
    ("canceled", ReservationStatus::Cancelled),
    ("declined", ReservationStatus::Declined),
    ("expired", ReservationStatus::Expired),
];

/// The value of a query parameter (decoded), if present and not empty.
pub fn query_param(query: &str, name: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.trim().to_string())
        .filter(|value| !value.is_empty())
}

/// One webhook → the unified event it means.
pub fn normalize(inbound: &Inbound, _responses: &[ApiResponse]) -> Result<Outcome, PluginError> {
    let event = query_param(&inbound.query, EVENT_PARAMETER);
    if let Some(event) = &event
        && !EVENTS.contains(&event.as_str())
    {
        return Err(PluginError::UnsupportedEvent(event.clone()));
    }
    let body = stayhook_plugin_sdk::json_object_body(inbound)?;
    let id = json::string(&body, "id").ok_or_else(|| PluginError::BadPayload("the booking has no `id`".into()))?;
    // A flat Uplisting booking always names its stay; a body without `check_in` is not one
    // (another PMS's envelope, or a truncated object).
    if json::string(&body, "check_in").is_none() && json::string(&body, "reason").is_none() {
        return Err(PluginError::BadPayload("not an Uplisting booking: no `check_in` (and no removal `reason`)".into()));
    }
    let removal = json::string(&body, "reason").is_some() && json::string(&body, "guest_name").is_none();
    let event = match event.as_deref() {
        Some("booking_removed") => Event::ReservationDeleted(id),
        Some("booking_created") => Event::ReservationCreated(reservation(id, &body)),
        Some(_) => Event::ReservationUpdated(reservation(id, &body)),
        None if removal => Event::ReservationDeleted(id),
        None => Event::ReservationUpserted(reservation(id, &body)),
    };
    Ok(Outcome::Done(vec![event]))
}

/// The unified status of a booking's `status`; none → UNKNOWN.
pub fn booking_status(booking: &Value) -> ReservationStatus {
    json::string(booking, "status").map(|word| status::lookup(STATUSES, &word)).unwrap_or(ReservationStatus::Unknown)
}

/// Uplisting's flat booking → the unified reservation.
pub fn reservation(id: String, booking: &Value) -> Reservation {
    let mut reservation = Reservation::new(id);
    reservation.status = booking_status(booking);
    reservation.created_at = json::timestamp(booking, "booked_at");
    reservation.updated_at = json::timestamp(booking, "timestamp");
    reservation.arrival_date = json::date(booking, "check_in");
    reservation.departure_date = json::date(booking, "check_out");
    // Nights from the dates: the samples' `number_of_nights` (7) disagrees with their dates (2 nights).
    reservation.nights = match (&reservation.arrival_date, &reservation.departure_date) {
        (Some(arrival), Some(departure)) => time::nights_between(arrival, departure),
        _ => None,
    };
    reservation.arrival_estimated_time = reservation.arrival_date.as_deref().and_then(|date| at_time(date, booking, "arrival_time"));
    reservation.departure_estimated_time = reservation.departure_date.as_deref().and_then(|date| at_time(date, booking, "departure_time"));
    reservation.property_id = json::string(booking, "property_id");
    reservation.number_of_guests = json::count(booking, "number_of_guests");
    reservation.source = json::string(booking, "channel");
    reservation.codes.confirmation_code = json::string(booking, "external_reservation_id");
    reservation.notes = json::string(booking, "note");
    let mut guest = GuestInfo::named(json::string(booking, "guest_name"));
    guest.emails = contact::emails(json::string(booking, "guest_email").as_deref());
    guest.mobile_numbers = contact::phones(json::string(booking, "guest_phone").as_deref());
    reservation.primary_guest = Some(guest);
    reservation.currency = json::string(booking, "currency").and_then(|code| money::currency(&code));
    reservation.finances.currency = reservation.currency.clone();
    // `total_payout` is what the host receives, not what the guest pays: the total price stays
    // unknown. The accommodation and the cleaning fee are the two documented price parts.
    if let Some(accommodation) = money::amount_at(booking, "accomodation_total") {
        reservation.finances.base_price.total = Some(accommodation);
        reservation.finances.base_price.breakdown.push(charge("Accommodation", "BASE_PRICE", accommodation));
    }
    if let Some(cleaning) = money::amount_at(booking, "cleaning_fee") {
        reservation.finances.fee.total = Some(cleaning);
        reservation.finances.fee.breakdown.push(charge("Cleaning fee", "CLEANING_FEE", cleaning));
    }
    reservation
}

fn charge(name: &str, kind: &str, total: f64) -> Charge {
    Charge { name: Some(name.into()), description: None, kind: kind.into(), units: None, total: Some(total), is_mandatory: None }
}

/// A local date-time from a date and Uplisting's "HH:MM:SS" arrival or departure time.
fn at_time(date: &str, booking: &Value, key: &str) -> Option<String> {
    let clock = json::string(booking, key)?;
    let mut parts = clock.split(':');
    let hour: u32 = parts.next()?.trim().parse().ok()?;
    let minute: u32 = parts.next().unwrap_or("0").trim().parse().ok()?;
    (hour < 24 && minute < 60).then(|| format!("{}T{hour:02}:{minute:02}:00", time::date_part(date).unwrap_or(date)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn booking() -> Value {
        json!({
            "id": 2721958, "property_id": 2, "channel": "airbnb_official", "check_in": "2021-12-03",
            "check_out": "2021-12-05", "arrival_time": "15:00:00", "departure_time": "11:00:00",
            "guest_name": "Jon Snow", "guest_email": "Jon.Snow@castleblack.com", "guest_phone": "+44797978889991",
            "number_of_guests": 3, "number_of_nights": 7, "status": "confirmed", "currency": "USD",
            "accomodation_total": 362.45, "cleaning_fee": 40.0, "total_payout": 388,
            "external_reservation_id": "ABC2DEF3YZ", "timestamp": "2021-11-26T11:20:00Z", "booked_at": "2021-11-26T11:19:59Z"
        })
    }

    fn run(query: &str, body: Value) -> Result<Outcome, PluginError> {
        let mut inbound = stayhook_plugin_sdk::json_inbound(&body);
        inbound.query = query.into();
        normalize(&inbound, &[])
    }

    fn one(query: &str, body: Value) -> Event {
        let Ok(Outcome::Done(mut events)) = run(query, body) else { panic!("expected done") };
        assert_eq!(events.len(), 1);
        events.remove(0)
    }

    #[test]
    fn the_event_comes_from_the_query() {
        assert!(matches!(one("event=booking_created", booking()), Event::ReservationCreated(r) if r.id == "2721958"));
        assert!(matches!(one("event=booking_updated", booking()), Event::ReservationUpdated(_)));
        assert!(matches!(one("event=booking_removed", booking()), Event::ReservationDeleted(id) if id == "2721958"));
        assert!(matches!(one("", booking()), Event::ReservationUpserted(_)));
        assert!(matches!(one("x=1&event=booking_updated", booking()), Event::ReservationUpdated(_)));
        let error = run("event=property_updated", booking()).unwrap_err();
        assert!(matches!(error, PluginError::UnsupportedEvent(name) if name == "property_updated"));
    }

    #[test]
    fn a_removal_without_the_event_parameter_is_a_deletion() {
        let removed = json!({"id": 1, "check_in": "2021-12-03", "check_out": "2021-12-05", "reason": "destroyed"});
        assert!(matches!(one("", removed), Event::ReservationDeleted(id) if id == "1"));
    }

    #[test]
    fn a_booking_maps_dates_guest_and_money() {
        let Event::ReservationUpserted(r) = one("", booking()) else { panic!("upsert") };
        assert_eq!(r.arrival_date.as_deref(), Some("2021-12-03"));
        assert_eq!(r.nights, Some(2));
        assert_eq!(r.arrival_estimated_time.as_deref(), Some("2021-12-03T15:00:00"));
        assert_eq!(r.departure_estimated_time.as_deref(), Some("2021-12-05T11:00:00"));
        assert_eq!(r.property_id.as_deref(), Some("2"));
        assert_eq!(r.status, ReservationStatus::Confirmed);
        let guest = r.primary_guest.unwrap();
        assert_eq!(guest.name.as_deref(), Some("Jon Snow"));
        assert_eq!(guest.emails, ["jon.snow@castleblack.com"]);
        assert_eq!(r.finances.base_price.total, Some(362.45));
        assert_eq!(r.finances.fee.breakdown[0].kind, "CLEANING_FEE");
        assert_eq!(r.total_price, None);
        assert_eq!(r.currency.as_deref(), Some("USD"));
    }

    #[test]
    fn statuses_map_and_unknown_words_stay_unknown() {
        assert_eq!(booking_status(&json!({"status": "Confirmed"})), ReservationStatus::Confirmed);
        assert_eq!(booking_status(&json!({"status": "cancelled"})), ReservationStatus::Cancelled);
        assert_eq!(booking_status(&json!({"status": "mystery"})), ReservationStatus::Unknown);
    }

    #[test]
    fn bad_input_is_refused() {
        // Another PMS's body: iGMS's envelope, Smoobu's.
        let igms = json!({"type": "booking_data", "data": [{"booking_uid": "a"}]});
        assert!(matches!(run("", igms), Err(PluginError::BadPayload(_))));
        let smoobu = json!({"action": "newReservation", "user": 1, "data": {"id": 5}});
        assert!(matches!(run("event=booking_created", smoobu), Err(PluginError::BadPayload(_))));
        assert!(matches!(run("", json!({"check_in": "2021-12-03"})), Err(PluginError::BadPayload(_))));
        let mut truncated = stayhook_plugin_sdk::json_inbound(&json!({}));
        truncated.body = br#"{"id": 1, "check_in": "2021-12"#.to_vec();
        assert!(matches!(normalize(&truncated, &[]), Err(PluginError::BadPayload(_))));
    }
}
