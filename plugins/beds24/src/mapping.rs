//! Webhook → (API V2 booking) → unified events.

use serde_json::Value;
use stayhook_plugin_sdk::model::*;
use stayhook_plugin_sdk::{api, contact, json, language, status, time};

/// Inbound events this plugin understands, in Beds24's spelling: the `status` values of the
/// booking webhook v1, the VERSION 2 booking body, and the inventory webhook's `action`.
pub const EVENTS: &[&str] = &["new", "modify", "cancel", "booking (webhook version 2)", "SYNC_ROOM"];
/// Request id of the booking lookup.
pub const BOOKING: &str = "booking";

/// Beds24 API V2 booking statuses → unified status.
pub const STATUSES: status::Vocabulary = &[
    ("confirmed", ReservationStatus::Confirmed),
    ("new", ReservationStatus::Confirmed),
    ("request", ReservationStatus::Pending),
    ("inquiry", ReservationStatus::Inquiry),
    ("cancelled", ReservationStatus::Cancelled),
    ("black", ReservationStatus::OwnerStay),
];

/// What kind of webhook arrived.
#[derive(Debug, Clone, PartialEq)]
pub enum Webhook {
    /// Booking webhook v1: the booking id and Beds24's `status` from the query string.
    BookingV1 { booking_id: String, status: String },
    /// Booking webhook v2: the booking object in API V2 format.
    BookingV2(Value),
    /// Inventory webhook: a room type needs syncing.
    SyncRoom { property_id: String, room_id: String },
}

/// The value of a query parameter (decoded), if present and not empty.
pub fn query_param(query: &str, name: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.trim().to_string())
        .filter(|value| !value.is_empty())
}

/// Tell the three webhooks apart: `bookid` in the query (v1), else the JSON body.
pub fn classify(inbound: &Inbound) -> Result<Webhook, PluginError> {
    if let Some(booking_id) = query_param(&inbound.query, "bookid") {
        // The v1 body is empty or optional form data holding card details: never read.
        let status = query_param(&inbound.query, "status")
            .ok_or_else(|| PluginError::BadPayload(format!("booking webhook for {booking_id} without `status` in the query")))?;
        return Ok(Webhook::BookingV1 { booking_id, status });
    }
    if inbound.body.iter().all(u8::is_ascii_whitespace) {
        return Err(PluginError::BadPayload("no `bookid` in the query and an empty body: not a Beds24 webhook".into()));
    }
    let body = stayhook_plugin_sdk::json_object_body(inbound)?;
    if let Some(booking) = body.get("booking") {
        if !booking.is_object() {
            return Err(PluginError::BadPayload("`booking` is not an object".into()));
        }
        return Ok(Webhook::BookingV2(booking.clone()));
    }
    match json::string(&body, "action").as_deref() {
        Some("SYNC_ROOM") => {
            let room_id = json::string(&body, "roomId").ok_or_else(|| PluginError::BadPayload("SYNC_ROOM without `roomId`".into()))?;
            let property_id = json::string(&body, "propId").ok_or_else(|| PluginError::BadPayload("SYNC_ROOM without `propId`".into()))?;
            Ok(Webhook::SyncRoom { property_id, room_id })
        }
        Some(other) => Err(PluginError::UnsupportedEvent(other.to_string())),
        None => Err(PluginError::BadPayload("neither `bookid` in the query, nor `booking`, nor `action` in the body".into())),
    }
}

/// Turn one webhook into events, or ask for the booking.
pub fn normalize(inbound: &Inbound, responses: &[ApiResponse]) -> Result<Outcome, PluginError> {
    match classify(inbound)? {
        Webhook::BookingV1 { booking_id, status } => {
            let event_type = match status.as_str() {
                "new" => EventType::ReservationCreated,
                "modify" | "cancel" => EventType::ReservationUpdated,
                "message" => {
                    return Err(PluginError::UnsupportedEvent(
                        "message: Beds24's public docs show no answer of GET /bookings/messages to map the conversation from".into(),
                    ));
                }
                other => return Err(PluginError::UnsupportedEvent(other.to_string())),
            };
            let Some(answer) = api::response(responses, BOOKING) else { return Ok(Outcome::Fetch(vec![booking_request(&booking_id)])) };
            let booking = match api::successful(answer).and_then(|body| find_booking(&body, &booking_id)) {
                Ok(booking) => booking,
                Err(reason) => {
                    return Ok(Outcome::Done(vec![Event::Incomplete(Incomplete { event_type, record_id: booking_id, reason })]));
                }
            };
            let reservation = reservation(&booking, &booking_id);
            Ok(Outcome::Done(vec![match status.as_str() {
                "new" => Event::ReservationCreated(reservation),
                "cancel" => Event::ReservationUpdated(reservation),
                // "do not use status = modify ... to assume anything about the status of the booking"
                _ => Event::ReservationUpserted(reservation),
            }]))
        }
        Webhook::BookingV2(booking) => {
            let id = json::string(&booking, "id").ok_or_else(|| PluginError::BadPayload("`booking` without `id`".into()))?;
            Ok(Outcome::Done(vec![Event::ReservationUpserted(reservation(&booking, &id))]))
        }
        Webhook::SyncRoom { property_id, room_id } => {
            Ok(Outcome::Done(vec![Event::CalendarUpdated(Calendar { property_id, room_type_id: Some(room_id), days: Vec::new() })]))
        }
    }
}

/// `GET /bookings?id=<id>` (API V2).
pub fn booking_request(booking_id: &str) -> ApiRequest {
    ApiRequest { query: vec![("id".into(), booking_id.into())], ..api::get(BOOKING, "/bookings") }
}

/// The booking in `{"success": true, "data": [...]}`; `success: false` or a missing booking is a failure.
pub fn find_booking(body: &Value, booking_id: &str) -> Result<Value, String> {
    if json::flag(body, "success") == Some(false) {
        let error = json::string(body, "error").unwrap_or_else(|| "no reason given".into());
        return Err(format!("Beds24 answered success false: {error}"));
    }
    json::array(body, "data")
        .iter()
        .find(|booking| json::string(booking, "id").as_deref() == Some(booking_id))
        .cloned()
        .ok_or_else(|| format!("booking {booking_id} is not in the answer"))
}

/// An `arrivalTime` of the form "HH:MM" on the arrival date; Beds24's field is free text, so
/// anything else is left out.
fn arrival_time(arrival: Option<&str>, text: Option<&str>) -> Option<String> {
    let (arrival, text) = (arrival?, text?);
    let (hours, minutes) = text.split_once(':')?;
    let valid = hours.len() == 2 && minutes.len() == 2 && hours.parse::<u32>().ok()? < 24 && minutes.parse::<u32>().ok()? < 60;
    let candidate = format!("{arrival}T{hours}:{minutes}:00");
    (valid && time::is_timestamp(&candidate)).then_some(candidate)
}

/// An API V2 booking object → the unified reservation.
pub fn reservation(booking: &Value, booking_id: &str) -> Reservation {
    let first = json::string(booking, "firstName");
    let last = json::string(booking, "lastName");
    let name = [first.clone(), last.clone()].into_iter().flatten().collect::<Vec<_>>().join(" ");
    let email = json::string(booking, "email").unwrap_or_default();
    let (mobile, phone) = (json::string(booking, "mobile").unwrap_or_default(), json::string(booking, "phone").unwrap_or_default());
    let address = PostalAddress {
        line1: json::string(booking, "address"),
        postal_code: json::string(booking, "postcode"),
        city: json::string(booking, "city"),
        country: json::string(booking, "country2").map(|country| country.to_ascii_uppercase()),
    };
    let has_address = address.line1.is_some() || address.postal_code.is_some() || address.city.is_some() || address.country.is_some();
    let arrival = json::date(booking, "arrival");
    let departure = json::date(booking, "departure");
    let (adults, children) = (json::count(booking, "numAdult"), json::count(booking, "numChild"));
    let notes = [json::string(booking, "notes"), json::string(booking, "comments")].into_iter().flatten().collect::<Vec<_>>().join("\n\n");
    let custom_fields = (1..=10)
        .filter_map(|n| {
            let key = format!("custom{n}");
            json::string(booking, &key).map(|value| CustomField {
                id: key.clone(),
                name: key,
                kind: "text".into(),
                value: Some(value),
                default_value: None,
            })
        })
        .collect();
    let mut reservation = Reservation::new(json::string(booking, "id").unwrap_or_else(|| booking_id.to_string()));
    reservation.created_at = json::timestamp(booking, "bookingTime");
    reservation.updated_at = json::timestamp(booking, "modifiedTime");
    reservation.cancelled_at = json::timestamp(booking, "cancelTime");
    reservation.arrival_estimated_time = arrival_time(arrival.as_deref(), json::string(booking, "arrivalTime").as_deref());
    reservation.arrival_date = arrival;
    reservation.departure_date = departure;
    reservation.property_id = json::string(booking, "propertyId");
    reservation.number_of_guests = match (adults, children) {
        (None, None) => None,
        (adults, children) => Some(adults.unwrap_or(0) + children.unwrap_or(0)),
    };
    reservation.number_of_adults = adults;
    reservation.number_of_children = children;
    reservation.primary_guest = Some(GuestInfo {
        name: (!name.is_empty()).then_some(name),
        name_first: first,
        name_last: last,
        emails: contact::emails([email.as_str()]),
        mobile_numbers: contact::phones([mobile.as_str(), phone.as_str()]),
        preferred_language: json::string(booking, "lang").and_then(|code| language::from_code(&code)),
        address: has_address.then_some(address),
        pictures: Vec::new(),
    });
    reservation.source = json::string(booking, "referer").or_else(|| json::string(booking, "apiSource"));
    reservation.total_price = json::number(booking, "price");
    reservation.finances.total_price = reservation.total_price;
    reservation.status = json::string(booking, "status").map_or(ReservationStatus::Unknown, |word| status::lookup(STATUSES, &word));
    reservation.codes.confirmation_code = json::string(booking, "apiReference");
    reservation.notes = (!notes.is_empty()).then_some(notes);
    reservation.custom_fields = custom_fields;
    reservation
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use stayhook_plugin_sdk::testing::answer;

    fn inbound(query: &str, body: &[u8]) -> Inbound {
        Inbound { query: query.into(), body: body.to_vec(), ..stayhook_plugin_sdk::json_inbound(&json!({})) }
    }

    #[test]
    fn statuses() {
        for (beds24, unified) in [
            ("confirmed", ReservationStatus::Confirmed),
            ("new", ReservationStatus::Confirmed),
            ("request", ReservationStatus::Pending),
            ("inquiry", ReservationStatus::Inquiry),
            ("cancelled", ReservationStatus::Cancelled),
            ("black", ReservationStatus::OwnerStay),
            ("something-else", ReservationStatus::Unknown),
        ] {
            assert_eq!(reservation(&json!({"id": 1, "status": beds24}), "1").status, unified, "{beds24}");
        }
    }

    #[test]
    fn v1_query_asks_for_the_booking_and_ignores_the_form_body() {
        let request = inbound("token=abc&bookid=12345678&status=new", b"cvv=123&token=xyz");
        assert_eq!(classify(&request).unwrap(), Webhook::BookingV1 { booking_id: "12345678".into(), status: "new".into() });
        let Ok(Outcome::Fetch(requests)) = normalize(&request, &[]) else { panic!("fetch") };
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].path, "/bookings");
        assert_eq!(requests[0].query, vec![("id".to_string(), "12345678".to_string())]);
    }

    #[test]
    fn v1_message_and_unknown_statuses_are_unsupported() {
        for status in ["message", "archive"] {
            match normalize(&inbound(&format!("bookid=1&status={status}"), b""), &[]) {
                Err(PluginError::UnsupportedEvent(text)) => assert!(text.starts_with(status), "{text}"),
                other => panic!("{status}: {other:?}"),
            }
        }
    }

    #[test]
    fn refusals_name_the_problem() {
        let bad = |query: &str, body: &[u8]| match normalize(&inbound(query, body), &[]) {
            Err(PluginError::BadPayload(message)) => message,
            other => panic!("expected bad payload, got {other:?}"),
        };
        assert!(bad("bookid=1", b"").contains("status"));
        assert!(bad("", b"").contains("bookid"));
        assert!(bad("", b"not json").contains("not JSON"));
        assert!(bad("", br#"{"booking": 5}"#).contains("booking"));
        assert!(bad("", br#"{"booking": {"status": "new"}}"#).contains("id"));
        assert!(bad("", br#"{"action": "SYNC_ROOM", "propId": "1"}"#).contains("roomId"));
        assert!(bad("", br#"{"hello": 1}"#).contains("action"));
        assert!(matches!(normalize(&inbound("", br#"{"action": "OTHER"}"#), &[]), Err(PluginError::UnsupportedEvent(a)) if a == "OTHER"));
    }

    #[test]
    fn answers_without_the_booking_are_incomplete() {
        let respond = |body: Value| answer(BOOKING, 200, body);
        for (body, reason) in [
            (json!({"success": false, "type": "booking", "code": 401, "error": "Token is missing"}), "Token is missing"),
            (json!({"success": true, "type": "booking", "count": 0, "data": []}), "not in the answer"),
        ] {
            let Ok(Outcome::Done(events)) = normalize(&inbound("bookid=7&status=cancel", b""), &[respond(body)]) else { panic!("done") };
            let Event::Incomplete(incomplete) = &events[0] else { panic!("incomplete") };
            assert_eq!(incomplete.event_type, EventType::ReservationUpdated);
            assert_eq!(incomplete.record_id, "7");
            assert!(incomplete.reason.contains(reason), "{}", incomplete.reason);
        }
    }

    #[test]
    fn version_2_body_is_an_upsert_of_its_booking() {
        // Envelope keys as third-party integrations record them; booking fields as in API V2 answers.
        let body = json!({"timeStamp": "2022-05-20T09:12:45Z", "booking": {"id": 12345678, "propertyId": 12345, "status": "cancelled",
            "arrival": "2022-06-10", "departure": "2022-06-14", "cancelTime": "2022-05-20T09:12:44Z"},
            "invoiceItems": [], "infoItems": [], "messages": [], "retries": 0});
        let Ok(Outcome::Done(events)) = normalize(&stayhook_plugin_sdk::json_inbound(&body), &[]) else { panic!("done") };
        let Event::ReservationUpserted(r) = &events[0] else { panic!("upserted") };
        assert_eq!(r.id, "12345678");
        assert_eq!(r.status, ReservationStatus::Cancelled);
        assert_eq!(r.cancelled_at.as_deref(), Some("2022-05-20T09:12:44Z"));
    }

    #[test]
    fn modify_is_an_upsert() {
        let answer = json!({"success": true, "data": [{"id": 7, "status": "confirmed"}]});
        let response = stayhook_plugin_sdk::testing::answer(BOOKING, 200, answer);
        let Ok(Outcome::Done(events)) = normalize(&inbound("bookid=7&status=modify", b""), &[response]) else { panic!("done") };
        assert!(matches!(&events[0], Event::ReservationUpserted(r) if r.id == "7"));
    }

    #[test]
    fn describe_declares_beds24() {
        let info = crate::plugin_info();
        assert_eq!(info.name, "beds24");
        assert!(matches!(info.verification, VerificationScheme::UrlToken(ref name) if name == "token"));
        let api = info.api.expect("api");
        assert_eq!(api.base_url, "https://beds24.com/api/v2");
        assert!(matches!(api.auth, AuthScheme::ApiKeyHeader(ref header) if header == "token"));
    }

    #[test]
    fn guest_details_and_free_text_arrival_time() {
        let booking = json!({"id": 9, "arrival": "2024-05-01", "departure": "2024-05-03", "arrivalTime": "15:30", "firstName": "",
            "lastName": "Paul", "email": "", "mobile": "", "phone": "+49 170 1234567", "country2": "de", "lang": "de", "custom3": "late"});
        let r = reservation(&booking, "9");
        let guest = r.primary_guest.unwrap();
        assert_eq!(guest.name.as_deref(), Some("Paul"));
        assert!(guest.emails.is_empty());
        assert_eq!(guest.mobile_numbers, ["+491701234567"]);
        assert_eq!(guest.address.unwrap().country.as_deref(), Some("DE"));
        assert_eq!(guest.preferred_language.unwrap().name.as_deref(), Some("GERMAN"));
        assert_eq!(r.arrival_estimated_time.as_deref(), Some("2024-05-01T15:30:00"));
        assert_eq!(r.custom_fields.len(), 1);
        assert_eq!(r.custom_fields[0].id, "custom3");
        assert_eq!(arrival_time(Some("2024-05-01"), Some("after 6pm")), None);
        assert_eq!(arrival_time(Some("2024-05-01"), Some("25:00")), None);
    }
}
