//! Smily (BookingSync) webhook → unified events. The body is `{"account_id", "event", "resource"}`
//! and the resource is the object as API v3 serializes it (full payloads: no API call).

use serde_json::Value;
use stayhook_plugin_sdk::model::*;
use stayhook_plugin_sdk::status::{self, Vocabulary};
use stayhook_plugin_sdk::{json, money, time};

/// The webhook events this plugin maps (Smily's names, subscribed per application).
pub const EVENTS: &[&str] = &["booking_created", "booking_updated", "booking_destroyed"];

/// The account setting that pins the Smily account(s) this stayhook account accepts (one id or a
/// comma-separated list): a Smily application's webhooks cover every account that authorized it.
pub const ACCOUNT_SETTING: &str = "accountId";

/// Smily's booking statuses (guide `bookings.md`: Booked, Tentative, Unavailable, Canceled).
/// Unavailable periods are calendar blocks, not reservations, and are never mapped.
const STATUSES: Vocabulary = &[
    ("Booked", ReservationStatus::Confirmed),
    ("Tentative", ReservationStatus::Pending),
    ("Canceled", ReservationStatus::Cancelled),
    ("Cancelled", ReservationStatus::Cancelled),
];

/// One webhook → events.
pub fn normalize(inbound: &Inbound, _responses: &[ApiResponse]) -> Result<Outcome, PluginError> {
    let body = stayhook_plugin_sdk::json_object_body(inbound)?;
    let event = json::string(&body, "event").ok_or_else(|| PluginError::BadPayload("no `event` field: not a Smily webhook".into()))?;
    let resource = body
        .get("resource")
        .filter(|resource| resource.is_object())
        .ok_or_else(|| PluginError::BadPayload(format!("{event}: no `resource` object: not a Smily webhook")))?;
    let account_id = json::string(&body, "account_id").ok_or_else(|| PluginError::BadPayload(format!("{event}: no `account_id`")))?;
    let configured = inbound.account.settings.iter().find(|(name, _)| name == ACCOUNT_SETTING).map(|(_, value)| value.trim());
    if let Some(configured) = configured.filter(|configured| !configured.is_empty())
        && !configured.split(',').any(|allowed| allowed.trim() == account_id)
    {
        return Err(PluginError::BadPayload(format!("the webhook is for Smily account {account_id}, this account is for {configured}")));
    }
    if !EVENTS.contains(&event.as_str()) {
        return Err(PluginError::UnsupportedEvent(event));
    }
    let booking =
        booking(resource).ok_or_else(|| PluginError::BadPayload(format!("{event}: the resource holds no booking with an `id`")))?;
    let id = json::string(booking, "id").unwrap_or_default();
    if event == "booking_destroyed" {
        // Smily soft-deletes: the booking is gone from its calendar and from `updated_since`
        // listings (`meta.deleted_ids`), so downstream systems should remove it.
        return Ok(Outcome::Done(vec![Event::ReservationDeleted(id)]));
    }
    if is_unavailable_block(booking) {
        // A period closed on the calendar (maintenance, owner stay): not a reservation.
        return Ok(Outcome::Done(Vec::new()));
    }
    let reservation = reservation(booking);
    Ok(Outcome::Done(vec![if event == "booking_created" {
        Event::ReservationCreated(reservation)
    } else {
        Event::ReservationUpdated(reservation)
    }]))
}

/// The booking inside a resource. The guide's one example (`client_created`) nests the object under
/// its singular name (`"client": {...}`); API v3 answers put it in a plural array
/// (`"bookings": [{...}]`). Both are read, and so is a bare booking object.
pub fn booking(resource: &Value) -> Option<&Value> {
    let has_id = |value: &&Value| value.is_object() && json::string(value, "id").is_some();
    resource
        .get("booking")
        .filter(has_id)
        .or_else(|| json::array(resource, "bookings").first().filter(has_id))
        .or_else(|| Some(resource).filter(|resource| resource.get("start_at").is_some()).filter(has_id))
}

/// `unavailable: true`, or status Unavailable, without `booked`: a calendar block.
fn is_unavailable_block(booking: &Value) -> bool {
    let unavailable = json::flag(booking, "unavailable") == Some(true)
        || json::string(booking, "status").is_some_and(|status| status.eq_ignore_ascii_case("unavailable"));
    unavailable && json::flag(booking, "booked") != Some(true)
}

/// A time of day ("14:45", or "12" for 12:00) on a date → "YYYY-MM-DD HH:MM:00", local.
fn at_time(date: Option<&String>, clock: Option<String>) -> Option<String> {
    let (date, clock) = (date?, clock?);
    let clock = if clock.contains(':') { clock } else { format!("{clock}:00") };
    let (hours, minutes) = clock.split_once(':')?;
    let (hours, minutes): (u32, u32) = (hours.trim().parse().ok()?, minutes.trim().parse().ok()?);
    (hours < 24 && minutes < 60).then(|| format!("{date} {hours:02}:{minutes:02}:00"))
}

/// A Smily booking (API v3 serialization) → the unified reservation.
pub fn reservation(booking: &Value) -> Reservation {
    let mut reservation = Reservation::new(json::string(booking, "id").unwrap_or_default());
    reservation.created_at = json::timestamp(booking, "created_at");
    reservation.updated_at = json::timestamp(booking, "updated_at");
    reservation.cancelled_at = json::timestamp(booking, "canceled_at");
    // `start_at`/`end_at` are instants in UTC ("2014-08-21T16:00:00Z"); the rental's time zone
    // is not in the payload, so the stay's dates are their UTC date parts (see the README).
    reservation.arrival_date = json::string(booking, "start_at").and_then(|text| time::date_part(&text).map(str::to_string));
    reservation.departure_date = json::string(booking, "end_at").and_then(|text| time::date_part(&text).map(str::to_string));
    reservation.nights = match (&reservation.arrival_date, &reservation.departure_date) {
        (Some(arrival), Some(departure)) => time::nights_between(arrival, departure),
        _ => None,
    };
    let links = booking.get("links").cloned().unwrap_or(Value::Null);
    reservation.property_id = json::string(&links, "rental");
    let adults = json::count(booking, "adults");
    let children = json::count(booking, "children");
    reservation.number_of_adults = adults;
    reservation.number_of_children = children;
    reservation.number_of_guests = match (adults, children) {
        (None, None) => None,
        (adults, children) => Some(adults.unwrap_or(0) + children.unwrap_or(0)),
    };
    reservation.status = match json::string(booking, "status") {
        _ if reservation.cancelled_at.is_some() => ReservationStatus::Cancelled,
        Some(word) => status::lookup(STATUSES, &word),
        None if json::flag(booking, "booked") == Some(true) => ReservationStatus::Confirmed,
        None => ReservationStatus::Unknown,
    };
    reservation.currency = json::string(booking, "currency").and_then(|code| money::currency(&code));
    // `final_price` is the booking's price after discount (`initial_price` before it).
    reservation.total_price = money::amount_at(booking, "final_price");
    reservation.finances.total_price = reservation.total_price;
    reservation.finances.currency = reservation.currency.clone();
    reservation.finances.remaining_balance = money::amount_at(booking, "payment_left_to_collect");
    reservation.arrival_estimated_time = at_time(reservation.arrival_date.as_ref(), json::string(booking, "expected_checkin_time"));
    reservation.departure_estimated_time = at_time(reservation.departure_date.as_ref(), json::string(booking, "expected_checkout_time"));
    // The channel's reference when the booking came from one, else Smily's own reference code.
    reservation.codes.confirmation_code = json::string(booking, "external_reference").or_else(|| json::string(booking, "reference"));
    reservation.codes.access_code = json::string(booking, "door_key_code").into_iter().collect();
    reservation.notes = json::string(booking, "notes");
    reservation
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn webhook(event: &str, resource: Value) -> Inbound {
        stayhook_plugin_sdk::json_inbound(&json!({"account_id": 1, "event": event, "resource": resource}))
    }

    fn done(outcome: Result<Outcome, PluginError>) -> Vec<Event> {
        match outcome {
            Ok(Outcome::Done(events)) => events,
            other => panic!("expected done, got {other:?}"),
        }
    }

    fn sample() -> Value {
        json!({"links": {"rental": 16, "client": 37}, "id": 80, "start_at": "2026-08-21T16:00:00Z", "end_at": "2026-08-25T10:00:00Z",
               "status": "Booked", "booked": true, "unavailable": false, "adults": 2, "children": 1, "currency": "eur",
               "final_price": "2700.0", "payment_left_to_collect": "0.0", "expected_checkin_time": "14:45",
               "expected_checkout_time": "11", "reference": "0000EG", "external_reference": null, "canceled_at": null})
    }

    #[test]
    fn statuses() {
        for (word, unified) in [
            ("Booked", ReservationStatus::Confirmed),
            ("Tentative", ReservationStatus::Pending),
            ("Canceled", ReservationStatus::Cancelled),
            ("Something new", ReservationStatus::Unknown),
        ] {
            assert_eq!(reservation(&json!({"id": 1, "status": word})).status, unified, "{word}");
        }
        // A cancellation time wins over a stale status word.
        assert_eq!(
            reservation(&json!({"id": 1, "status": "Booked", "canceled_at": "2026-08-01T10:00:00Z"})).status,
            ReservationStatus::Cancelled
        );
    }

    #[test]
    fn every_resource_shape_is_read() {
        for resource in [json!({"booking": sample()}), json!({"links": {}, "bookings": [sample()], "meta": {}}), sample()] {
            let events = done(normalize(&webhook("booking_created", resource.clone()), &[]));
            let [Event::ReservationCreated(reservation)] = events.as_slice() else { panic!("{resource}: {events:?}") };
            assert_eq!(reservation.id, "80");
            assert_eq!(reservation.property_id.as_deref(), Some("16"));
            assert_eq!(
                (reservation.arrival_date.as_deref(), reservation.departure_date.as_deref()),
                (Some("2026-08-21"), Some("2026-08-25"))
            );
            assert_eq!(reservation.nights, Some(4));
            assert_eq!(reservation.number_of_guests, Some(3));
            assert_eq!(reservation.currency.as_deref(), Some("EUR"));
            assert_eq!(reservation.total_price, Some(2700.0));
            assert_eq!(reservation.arrival_estimated_time.as_deref(), Some("2026-08-21 14:45:00"));
            assert_eq!(reservation.departure_estimated_time.as_deref(), Some("2026-08-25 11:00:00"));
            assert_eq!(reservation.codes.confirmation_code.as_deref(), Some("0000EG"));
        }
    }

    #[test]
    fn updated_destroyed_and_blocks() {
        let events = done(normalize(&webhook("booking_updated", json!({"booking": sample()})), &[]));
        assert!(
            matches!(events.as_slice(), [Event::ReservationUpdated(reservation)] if reservation.status == ReservationStatus::Confirmed)
        );
        let events = done(normalize(&webhook("booking_destroyed", json!({"booking": sample()})), &[]));
        assert!(matches!(events.as_slice(), [Event::ReservationDeleted(id)] if id == "80"));
        let block = json!({"booking": {"id": 81, "status": "Unavailable", "booked": false, "unavailable": true, "start_at": "2026-09-01T00:00:00Z"}});
        assert!(done(normalize(&webhook("booking_created", block), &[])).is_empty(), "a calendar block is not a reservation");
    }

    #[test]
    fn another_smily_account_is_refused_when_pinned() {
        let mut inbound = webhook("booking_created", json!({"booking": sample()}));
        inbound.account.settings.push((ACCOUNT_SETTING.into(), "7, 8".into()));
        assert!(matches!(normalize(&inbound, &[]), Err(PluginError::BadPayload(message)) if message.contains("account 1")));
        inbound.account.settings[0].1 = "8,1".into();
        assert!(normalize(&inbound, &[]).is_ok());
    }

    #[test]
    fn bad_bodies_are_refused_with_a_reason() {
        let refused = |body: Value| normalize(&stayhook_plugin_sdk::json_inbound(&body), &[]).unwrap_err();
        assert!(matches!(refused(json!({"resource": {}})), PluginError::BadPayload(message) if message.contains("event")));
        // Hostaway's unified webhook: `event` but no Smily resource.
        assert!(matches!(
            refused(json!({"object": "reservation", "event": "reservation.created", "accountId": 1, "data": {"id": 1}})),
            PluginError::BadPayload(message) if message.contains("resource")
        ));
        assert!(
            matches!(refused(json!({"event": "booking_created", "resource": {"booking": {"id": 1}}})), PluginError::BadPayload(message) if message.contains("account_id"))
        );
        assert!(
            matches!(refused(json!({"account_id": 1, "event": "booking_created", "resource": {"client": {"id": 1}}})), PluginError::BadPayload(message) if message.contains("no booking"))
        );
        assert!(
            matches!(refused(json!({"account_id": 1, "event": "client_created", "resource": {"client": {"id": 1}}})), PluginError::UnsupportedEvent(event) if event == "client_created")
        );
        let mut truncated = stayhook_plugin_sdk::json_inbound(&json!({}));
        truncated.body = br#"{"account_id": 1, "event": "booking_created", "resource": {"booking": {"id": 8"#.to_vec();
        assert!(matches!(normalize(&truncated, &[]), Err(PluginError::BadPayload(message)) if message.contains("not JSON")));
    }
}
