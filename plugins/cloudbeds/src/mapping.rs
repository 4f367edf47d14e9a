//! Cloudbeds webhook → `getReservation` → unified events.

use serde_json::Value;
use stayhook_plugin_sdk::model::*;
use stayhook_plugin_sdk::status::{self, Vocabulary};
use stayhook_plugin_sdk::{api, contact, json, money, time};

/// The webhook events this plugin handles (`object/action`, as the body's `event` joins them).
pub const EVENTS: &[&str] = &["reservation/created", "reservation/status_changed", "reservation/dates_changed", "reservation/deleted"];
/// Request id of the reservation.
pub const RESERVATION: &str = "reservation";

/// Cloudbeds reservation statuses (`getReservation`'s `status` enum). A no-show is left unknown:
/// the stay neither happened nor was cancelled by anyone.
const STATUSES: Vocabulary = &[
    ("confirmed", ReservationStatus::Confirmed),
    ("not_confirmed", ReservationStatus::Pending),
    ("canceled", ReservationStatus::Cancelled),
    ("checked_in", ReservationStatus::Confirmed),
    ("checked_out", ReservationStatus::Confirmed),
];

/// A field spelled `<name>ID` or `<name>Id`: Cloudbeds' samples use both.
fn id_field(body: &Value, name: &str) -> Option<String> {
    json::string(body, &format!("{name}ID")).or_else(|| json::string(body, &format!("{name}Id")))
}

/// One webhook → events, or the reservation first.
pub fn normalize(inbound: &Inbound, responses: &[ApiResponse]) -> Result<Outcome, PluginError> {
    let body = stayhook_plugin_sdk::json_object_body(inbound)?;
    let event = json::string(&body, "event").ok_or_else(|| PluginError::BadPayload("no `event` field: not a Cloudbeds webhook".into()))?;
    if !event.contains('/') {
        return Err(PluginError::BadPayload(format!("event {event:?} is not Cloudbeds' object/action")));
    }
    if !event.starts_with("reservation/") {
        return Err(PluginError::UnsupportedEvent(event));
    }
    let reservation_id = id_field(&body, "reservation").ok_or_else(|| PluginError::BadPayload(format!("{event}: no `reservationID`")))?;
    let property_id = id_field(&body, "property");
    let configured = inbound.account.settings.iter().find(|(name, _)| name == "propertyID").map(|(_, value)| value.trim());
    if let (Some(configured), Some(property_id)) = (configured, property_id.as_deref())
        && !configured.split(',').any(|allowed| allowed.trim() == property_id)
    {
        return Err(PluginError::BadPayload(format!("the webhook is for property {property_id}, this account is for {configured}")));
    }
    let event_type = match event.as_str() {
        "reservation/created" => EventType::ReservationCreated,
        "reservation/status_changed" | "reservation/dates_changed" => EventType::ReservationUpdated,
        "reservation/deleted" => return Ok(Outcome::Done(vec![Event::ReservationDeleted(reservation_id)])),
        _ => return Err(PluginError::UnsupportedEvent(event)),
    };
    let Some(answer) = api::response(responses, RESERVATION) else {
        return Ok(Outcome::Fetch(vec![reservation_request(&reservation_id, property_id.as_deref())]));
    };
    let data = match api::successful(answer).and_then(|body| reservation_data(&body, &reservation_id)) {
        Ok(data) => data,
        Err(reason) => return Ok(Outcome::Done(vec![Event::Incomplete(Incomplete { event_type, record_id: reservation_id, reason })])),
    };
    let reservation = reservation(&data, &reservation_id);
    Ok(Outcome::Done(vec![match event_type {
        EventType::ReservationCreated => Event::ReservationCreated(reservation),
        _ => Event::ReservationUpdated(reservation),
    }]))
}

/// `GET /getReservation?reservationID=<id>[&propertyID=<id>]`.
pub fn reservation_request(reservation_id: &str, property_id: Option<&str>) -> ApiRequest {
    let mut query = vec![("reservationID".to_string(), reservation_id.to_string())];
    if let Some(property_id) = property_id {
        query.push(("propertyID".into(), property_id.into()));
    }
    ApiRequest { query, ..api::get(RESERVATION, "/getReservation") }
}

/// `data` of `{"success": true, "data": {...}}`; `success: false` carries `message`.
pub fn reservation_data(body: &Value, reservation_id: &str) -> Result<Value, String> {
    if json::flag(body, "success") == Some(false) {
        return Err(format!("Cloudbeds answered: {}", json::string(body, "message").unwrap_or_else(|| "success false".into())));
    }
    body.get("data")
        .filter(|data| data.is_object() && json::string(data, "reservationID").is_some())
        .cloned()
        .ok_or_else(|| format!("reservation {reservation_id} is not in the answer"))
}

/// The rooms of a reservation: assigned and unassigned.
fn rooms(data: &Value) -> impl Iterator<Item = &Value> {
    json::array(data, "assigned").iter().chain(json::array(data, "unassigned"))
}

/// Cloudbeds' date-times ("YYYY-MM-DD HH:MM:SS", the tech specs' format) are kept as written.
fn when(data: &Value, key: &str) -> Option<String> {
    json::timestamp(data, key)
}

/// `getReservation`'s `data` → the unified reservation.
pub fn reservation(data: &Value, reservation_id: &str) -> Reservation {
    let mut reservation = Reservation::new(json::string(data, "reservationID").unwrap_or_else(|| reservation_id.to_string()));
    reservation.created_at = when(data, "dateCreated");
    reservation.updated_at = when(data, "dateModified");
    reservation.arrival_date = json::date(data, "startDate");
    reservation.departure_date = json::date(data, "endDate");
    reservation.nights = match (&reservation.arrival_date, &reservation.departure_date) {
        (Some(arrival), Some(departure)) => time::nights_between(arrival, departure),
        _ => None,
    };
    reservation.property_id = json::string(data, "propertyID");
    let adults: Option<u32> = rooms(data).filter_map(|room| json::count(room, "adults")).reduce(|a, b| a + b);
    let children: Option<u32> = rooms(data).filter_map(|room| json::count(room, "children")).reduce(|a, b| a + b);
    reservation.number_of_adults = adults;
    reservation.number_of_children = children;
    reservation.number_of_guests = match (adults, children) {
        (None, None) => None,
        (adults, children) => Some(adults.unwrap_or(0) + children.unwrap_or(0)),
    };
    reservation.primary_guest = Some(guest(data));
    reservation.source = json::string(data, "source");
    reservation.status = json::string(data, "status").map(|word| status::lookup(STATUSES, &word)).unwrap_or(ReservationStatus::Unknown);
    reservation.total_price = money::amount_at(data, "total");
    reservation.finances.total_price = reservation.total_price;
    reservation.finances.remaining_balance = money::amount_at(data, "balance");
    // `estimatedArrivalTime` is "HH:MM" (24-hour) on the arrival date, local to the property.
    reservation.arrival_estimated_time = match (&reservation.arrival_date, json::string(data, "estimatedArrivalTime")) {
        (Some(date), Some(clock)) => {
            let text = format!("{date} {}", if clock.len() == 5 { format!("{clock}:00") } else { clock });
            time::is_timestamp(&text).then_some(text)
        }
        _ => None,
    };
    reservation.codes.confirmation_code = json::string(data, "thirdPartyIdentifier");
    reservation.custom_fields = json::array(data, "customFields")
        .iter()
        .filter_map(|field| {
            Some(CustomField {
                id: json::string(field, "customFieldID").or_else(|| json::string(field, "shortcode"))?,
                name: json::string(field, "customFieldName").unwrap_or_default(),
                // The schema types every value as a string; Cloudbeds' field types are not in the answer.
                kind: "string".into(),
                value: json::string(field, "customFieldValue"),
                default_value: None,
            })
        })
        .collect();
    reservation
}

/// The main guest: `guestList`'s entry with `isMainGuest`, else the top-level name and e-mail.
fn guest(data: &Value) -> GuestInfo {
    let main = data
        .get("guestList")
        .and_then(Value::as_object)
        .and_then(|guests| guests.values().find(|guest| json::flag(guest, "isMainGuest") == Some(true)).or_else(|| guests.values().next()));
    let mut guest = GuestInfo::named(json::string(data, "guestName"));
    if let Some(main) = main {
        guest.name_first = json::string(main, "guestFirstName");
        guest.name_last = json::string(main, "guestLastName");
        if guest.name.is_none() {
            let name = [guest.name_first.clone(), guest.name_last.clone()].into_iter().flatten().collect::<Vec<_>>().join(" ");
            guest.name = (!name.is_empty()).then_some(name);
        }
        guest.mobile_numbers =
            contact::phones([json::string(main, "guestCellPhone"), json::string(main, "guestPhone")].iter().flatten().map(String::as_str));
        let address = PostalAddress {
            line1: json::string(main, "guestAddress"),
            postal_code: json::string(main, "guestZip"),
            city: json::string(main, "guestCity"),
            country: json::string(main, "guestCountry").filter(|country| country.len() == 2),
        };
        if address.line1.is_some() || address.postal_code.is_some() || address.city.is_some() || address.country.is_some() {
            guest.address = Some(address);
        }
    }
    guest.emails = contact::emails(
        [json::string(data, "guestEmail"), main.and_then(|main| json::string(main, "guestEmail"))].iter().flatten().map(String::as_str),
    );
    guest
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
        for (cloudbeds, unified) in [
            ("confirmed", ReservationStatus::Confirmed),
            ("not_confirmed", ReservationStatus::Pending),
            ("canceled", ReservationStatus::Cancelled),
            ("checked_in", ReservationStatus::Confirmed),
            ("checked_out", ReservationStatus::Confirmed),
            ("no_show", ReservationStatus::Unknown),
        ] {
            assert_eq!(reservation(&json!({"status": cloudbeds}), "r").status, unified, "{cloudbeds}");
        }
    }

    #[test]
    fn both_id_spellings_ask_for_the_reservation() {
        for body in [
            json!({"reservationID": "7061304407766", "propertyID": 318267, "event": "reservation/created"}),
            json!({"reservationId": "7061304407766", "propertyId": 318267, "event": "reservation/created"}),
        ] {
            let Outcome::Fetch(requests) = normalize(&inbound(body), &[]).unwrap() else { panic!("expected fetch") };
            assert_eq!(requests[0].path, "/getReservation");
            assert_eq!(
                requests[0].query,
                vec![("reservationID".to_string(), "7061304407766".to_string()), ("propertyID".to_string(), "318267".to_string())]
            );
        }
    }

    #[test]
    fn a_deletion_needs_no_api_call() {
        let body = json!({"event": "reservation/deleted", "propertyId": 12345, "reservationId": "31415926"});
        let Outcome::Done(events) = normalize(&inbound(body), &[]).unwrap() else { panic!("expected done") };
        assert!(matches!(events.as_slice(), [Event::ReservationDeleted(id)] if id == "31415926"));
    }

    #[test]
    fn a_webhook_for_another_property_is_refused() {
        let mut webhook = inbound(json!({"event": "reservation/deleted", "propertyID": 99, "reservationID": "1"}));
        webhook.account.settings.push(("propertyID".into(), "318267, 12345".into()));
        assert!(matches!(normalize(&webhook, &[]).unwrap_err(), PluginError::BadPayload(message) if message.contains("property 99")));
        webhook.body = json!({"event": "reservation/deleted", "propertyID": 12345, "reservationID": "1"}).to_string().into_bytes();
        assert!(normalize(&webhook, &[]).is_ok());
    }

    #[test]
    fn an_unsuccessful_answer_is_an_incomplete_reservation() {
        let body = json!({"event": "reservation/status_changed", "reservationID": "1", "propertyID": 2, "status": "canceled"});
        let failed = json!({"success": false, "message": "Reservation not found"});
        let Outcome::Done(events) = normalize(&inbound(body), &[answer(RESERVATION, 200, failed)]).unwrap() else {
            panic!("expected done")
        };
        let [Event::Incomplete(incomplete)] = events.as_slice() else { panic!("{events:?}") };
        assert_eq!(incomplete.event_type, EventType::ReservationUpdated);
        assert!(incomplete.reason.contains("Reservation not found"));
    }

    #[test]
    fn bad_bodies_are_refused_with_a_reason() {
        let error = normalize(&inbound(json!({"reservationID": "1"})), &[]).unwrap_err();
        assert!(matches!(error, PluginError::BadPayload(message) if message.contains("event")));
        // Another PMS's body (Hostex) is not Cloudbeds' object/action.
        let error = normalize(&inbound(json!({"event": "reservation_created", "reservation_code": "r"})), &[]).unwrap_err();
        assert!(matches!(error, PluginError::BadPayload(message) if message.contains("object/action")));
        let error = normalize(&inbound(json!({"event": "reservation/created", "propertyID": 1})), &[]).unwrap_err();
        assert!(matches!(error, PluginError::BadPayload(message) if message.contains("reservationID")));
        let error = normalize(&inbound(json!({"event": "guest/created", "guestId": "1"})), &[]).unwrap_err();
        assert!(matches!(error, PluginError::UnsupportedEvent(event) if event == "guest/created"));
        let mut truncated = inbound(json!({}));
        truncated.body = br#"{"reservationID": "7061304407766", "propertyID": 3182"#.to_vec();
        assert!(matches!(normalize(&truncated, &[]).unwrap_err(), PluginError::BadPayload(message) if message.contains("not JSON")));
    }

    #[test]
    fn guests_rooms_and_times() {
        let data = json!({
            "reservationID": "1", "startDate": "2026-10-10", "endDate": "2026-10-12", "estimatedArrivalTime": "15:30",
            "guestName": "Ann Lee", "guestEmail": "ANN@example.com",
            "guestList": {"7": {"guestFirstName": "Bob", "isMainGuest": false}, "8": {"guestFirstName": "Ann", "guestLastName": "Lee", "guestCellPhone": "+15551234567", "guestCountry": "US", "isMainGuest": true}},
            "assigned": [{"adults": "2", "children": "1"}], "unassigned": [{"adults": "1", "children": "0"}]
        });
        let reservation = reservation(&data, "1");
        assert_eq!(reservation.nights, Some(2));
        assert_eq!(reservation.number_of_guests, Some(4));
        assert_eq!(reservation.arrival_estimated_time.as_deref(), Some("2026-10-10 15:30:00"));
        let guest = reservation.primary_guest.unwrap();
        assert_eq!(guest.name_first.as_deref(), Some("Ann"));
        assert_eq!(guest.emails, vec!["ann@example.com".to_string()]);
        assert_eq!(guest.mobile_numbers, vec!["+15551234567".to_string()]);
    }
}
