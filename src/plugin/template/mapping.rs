//! {{Pms}} webhook → unified events.
//!
//! PLACEHOLDER SHAPE: `{"event": "booking.created" | "booking.updated" | "booking.cancelled",
//! "booking": {...}}` stands in for {{Pms}}'s real format. Replace the field names with the ones
//! {{Pms}} documents. Keep this plain Rust: it compiles natively, so the unit tests below run
//! without WebAssembly.

use serde_json::Value;
use stayhook_plugin_sdk::model::*;
use stayhook_plugin_sdk::status::{self, Vocabulary};
use stayhook_plugin_sdk::{contact, json, money, time};

/// The inbound event names this plugin understands, in the PMS's spelling.
pub const EVENTS: &[&str] = &["booking.created", "booking.updated", "booking.cancelled"];

/// The PMS's booking statuses and what they mean (unknown words map to `Unknown`).
const STATUSES: Vocabulary = &[
    ("confirmed", ReservationStatus::Confirmed),
    ("pending", ReservationStatus::Pending),
    ("inquiry", ReservationStatus::Inquiry),
    ("cancelled", ReservationStatus::Cancelled),
    ("declined", ReservationStatus::Declined),
    ("expired", ReservationStatus::Expired),
];

/// One webhook → the unified events it means.
pub fn normalize(inbound: &Inbound, _responses: &[ApiResponse]) -> Result<Outcome, PluginError> {
    let body = stayhook_plugin_sdk::json_object_body(inbound)?;
    let event = json::string(&body, "event").ok_or_else(|| PluginError::BadPayload("no `event` field".into()))?;
    let booking = body.get("booking").filter(|booking| booking.is_object()).ok_or_else(|| PluginError::BadPayload("no `booking` object".into()))?;
    let reservation = reservation(booking)?;
    let event = match event.as_str() {
        "booking.created" => Event::ReservationCreated(reservation),
        // A cancellation is an update whose status says CANCELLED.
        "booking.updated" | "booking.cancelled" => Event::ReservationUpdated(reservation),
        other => return Err(PluginError::UnsupportedEvent(other.to_string())),
    };
    Ok(Outcome::Done(vec![event]))
}

/// The PMS's booking object → the unified reservation.
pub fn reservation(booking: &Value) -> Result<Reservation, PluginError> {
    let id = json::string(booking, "id").ok_or_else(|| PluginError::BadPayload("booking has no `id`".into()))?;
    let mut reservation = Reservation::new(id);
    reservation.created_at = json::timestamp(booking, "createdAt");
    reservation.updated_at = json::timestamp(booking, "updatedAt");
    reservation.arrival_date = json::date(booking, "arrival");
    reservation.departure_date = json::date(booking, "departure");
    reservation.nights = match (&reservation.arrival_date, &reservation.departure_date) {
        (Some(arrival), Some(departure)) => time::nights_between(arrival, departure),
        _ => None,
    };
    reservation.property_id = json::string(booking, "propertyId");
    reservation.number_of_adults = json::count(booking, "adults");
    reservation.number_of_children = json::count(booking, "children");
    reservation.number_of_guests = match (reservation.number_of_adults, reservation.number_of_children) {
        (None, None) => None,
        (adults, children) => Some(adults.unwrap_or(0) + children.unwrap_or(0)),
    };
    let mut guest = GuestInfo::named(json::string(booking, "guestName"));
    guest.emails = contact::emails(json::string(booking, "guestEmail").as_deref());
    guest.mobile_numbers = contact::phones(json::string(booking, "guestPhone").as_deref());
    reservation.primary_guest = Some(guest);
    reservation.source = json::string(booking, "channel");
    reservation.status = json::string(booking, "status").map(|word| status::lookup(STATUSES, &word)).unwrap_or(ReservationStatus::Unknown);
    reservation.total_price = money::amount_at(booking, "total");
    reservation.currency = json::string(booking, "currency").and_then(|code| money::currency(&code));
    reservation.finances.total_price = reservation.total_price;
    reservation.finances.currency = reservation.currency.clone();
    reservation.codes.confirmation_code = json::string(booking, "confirmationCode");
    Ok(reservation)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    // The host's side of a call, for tests: requests, recorded answers, outcomes taken apart.
    use stayhook_plugin_sdk::testing::json_inbound;

    fn inbound(body: Value) -> Inbound {
        json_inbound(&body)
    }

    #[test]
    fn a_cancellation_is_an_update_with_status_cancelled() {
        let outcome = normalize(&inbound(json!({"event": "booking.cancelled", "booking": {"id": "b1", "status": "Cancelled"}})), &[]).unwrap();
        let Outcome::Done(events) = outcome else { panic!("expected done") };
        let [Event::ReservationUpdated(reservation)] = events.as_slice() else { panic!("expected one update, got {events:?}") };
        assert_eq!(reservation.status, ReservationStatus::Cancelled);
    }

    #[test]
    fn bad_bodies_are_named() {
        let error = normalize(&inbound(json!({"event": "booking.created"})), &[]).unwrap_err();
        assert!(matches!(error, PluginError::BadPayload(message) if message.contains("booking")));
        let error = normalize(&inbound(json!({"event": "review.created", "booking": {"id": "b1"}})), &[]).unwrap_err();
        assert!(matches!(error, PluginError::UnsupportedEvent(event) if event == "review.created"));
    }
}
