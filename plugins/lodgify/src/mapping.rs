//! Lodgify webhook → unified events.
//!
//! Shapes (docs.lodgify.com/reference/webhook-objects; the booking object from Pipedream's test
//! events, see the README): every body is a JSON object with `action`. Booking events carry
//! `booking`, `guest`, `current_order`, `booking_total_amount`, `booking_currency_code`,
//! `total_transactions`, `balance_due`; `guest_message_received` carries `thread_uid`,
//! `message_id`, `inbox_uid`, `guest_name`, `subject`, `message`, `creation_time`,
//! `has_attachments`.

use serde_json::Value;
use stayhook_plugin_sdk::model::*;
use stayhook_plugin_sdk::status::{self, Vocabulary};
use stayhook_plugin_sdk::{contact, json, language, money, time};

/// Booking events that mean a new booking.
pub const CREATED: &[&str] = &["booking_new_any_status", "booking_new_status_booked"];
/// Booking events that mean a change of an existing booking.
pub const UPDATED: &[&str] = &[
    "booking_change",
    "booking_status_change_booked",
    "booking_status_change_tentative",
    "booking_status_change_open",
    "booking_status_change_declined",
];
/// The message event.
pub const MESSAGE: &str = "guest_message_received";
/// Events Lodgify sends that this plugin refuses (ids and a window only; see the README).
pub const NOT_MAPPED: &[&str] = &["availability_change", "rate_change"];

/// The inbound event names this plugin understands, in Lodgify's spelling.
pub const EVENTS: &[&str] = &[
    "booking_new_any_status",
    "booking_new_status_booked",
    "booking_change",
    "booking_status_change_booked",
    "booking_status_change_tentative",
    "booking_status_change_open",
    "booking_status_change_declined",
    MESSAGE,
];

/// Lodgify's booking statuses. The event names give the vocabulary (Booked, Tentative, Open,
/// Declined); Lodgify has no separate cancelled status or event, so Declined (how a cancelled
/// booking reads) is CANCELLED. "Cancelled"/"Canceled" are accepted in case the API spells it.
const STATUSES: Vocabulary = &[
    ("Booked", ReservationStatus::Confirmed),
    ("Tentative", ReservationStatus::Pending),
    ("Open", ReservationStatus::Inquiry),
    ("Declined", ReservationStatus::Cancelled),
    ("Cancelled", ReservationStatus::Cancelled),
    ("Canceled", ReservationStatus::Cancelled),
];

/// One webhook → the unified events it means. No API call is ever needed.
pub fn normalize(inbound: &Inbound, _responses: &[ApiResponse]) -> Result<Outcome, PluginError> {
    let body = stayhook_plugin_sdk::json_object_body(inbound)?;
    let action = json::string(&body, "action").ok_or_else(|| PluginError::BadPayload("no `action` field".into()))?;
    let action = action.as_str();
    if CREATED.contains(&action) || UPDATED.contains(&action) {
        let reservation = reservation(&body).map_err(|problem| PluginError::BadPayload(format!("{action}: {problem}")))?;
        let event = if CREATED.contains(&action) { Event::ReservationCreated(reservation) } else { Event::ReservationUpdated(reservation) };
        return Ok(Outcome::Done(vec![event]));
    }
    if action == MESSAGE {
        let conversation = conversation(&body).map_err(|problem| PluginError::BadPayload(format!("{action}: {problem}")))?;
        return Ok(Outcome::Done(vec![Event::ConversationUpdated(conversation)]));
    }
    if NOT_MAPPED.contains(&action) {
        return Err(PluginError::UnsupportedEvent(format!(
            "{action}: the webhook carries only property/room type ids (and a window), and Lodgify documents no example answer of its \
             availability or rates API to build the calendar from"
        )));
    }
    Err(PluginError::UnsupportedEvent(action.to_string()))
}

/// Lodgify booking status → unified status.
pub fn status(word: Option<&str>) -> ReservationStatus {
    word.map(|word| status::lookup(STATUSES, word)).unwrap_or(ReservationStatus::Unknown)
}

/// A booking webhook body (`booking`, `guest`, `current_order`, totals) → the unified reservation.
pub fn reservation(body: &Value) -> Result<Reservation, String> {
    let booking = body.get("booking").filter(|booking| booking.is_object()).ok_or("no `booking` object")?;
    let id = json::string(booking, "id").ok_or("the booking has no `id`")?;
    let guest = body.get("guest").filter(|guest| guest.is_object()).cloned().unwrap_or(Value::Null);
    let order = body.get("current_order").filter(|order| order.is_object()).cloned().unwrap_or(Value::Null);

    let mut reservation = Reservation::new(id);
    reservation.created_at = json::timestamp(booking, "date_created");
    // Lodgify writes stay dates as local midnights without a zone ("2022-05-21T00:00:00").
    reservation.arrival_date = json::string(booking, "date_arrival").as_deref().and_then(time::date_part).map(str::to_string);
    reservation.departure_date = json::string(booking, "date_departure").as_deref().and_then(time::date_part).map(str::to_string);
    reservation.nights = json::count(booking, "nights");
    reservation.property_id = json::string(booking, "property_id");
    let people: Vec<u32> = json::array(booking, "room_types").iter().filter_map(|room| json::count(room, "people")).collect();
    reservation.number_of_guests = (!people.is_empty()).then(|| people.iter().sum());
    reservation.primary_guest = Some(primary_guest(&guest, json::string(booking, "language")));
    reservation.source = json::string(booking, "source");
    reservation.status = status(json::string(booking, "status").as_deref());
    reservation.codes.confirmation_code = json::string(booking, "source_text");
    reservation.notes = json::string(booking, "notes");

    let currency =
        [json::string(booking, "currency_code"), json::string(body, "booking_currency_code"), json::string(&order, "currency_code")]
            .into_iter()
            .flatten()
            .find_map(|code| money::currency(&code));
    reservation.total_price = money::amount_at(body, "booking_total_amount");
    reservation.currency = currency.clone();
    reservation.finances = finances(body, &order, reservation.total_price, currency);
    Ok(reservation)
}

/// The webhook's `guest` object (and the booking's `language`) → the primary guest.
fn primary_guest(guest: &Value, language_code: Option<String>) -> GuestInfo {
    let mut info = GuestInfo::named(json::string(guest, "name"));
    info.emails = contact::emails(json::string(guest, "email").as_deref());
    info.mobile_numbers = contact::phones(json::string(guest, "phone_number").as_deref());
    info.preferred_language = language_code.as_deref().and_then(language::from_code);
    let country = json::string(guest, "country_code").filter(|code| code.len() == 2).map(|code| code.to_ascii_uppercase());
    if country.is_some() {
        info.address = Some(PostalAddress { line1: None, postal_code: None, city: None, country });
    }
    info
}

/// Totals, balance and the order's net amounts per group (room rate, fees, taxes, promotions).
fn finances(body: &Value, order: &Value, total: Option<f64>, currency: Option<String>) -> Finances {
    let net = order.get("amount_net").cloned().unwrap_or(Value::Null);
    let group = |key: &str| ChargeGroup { total: money::amount_at(&net, key), breakdown: Vec::new() };
    let balance = money::amount_at(body, "balance_due");
    let paid = body.get("total_transactions").and_then(|transactions| money::amount_at(transactions, "amount"));
    Finances {
        total_price: total,
        currency,
        remaining_balance: balance,
        payment_status: Some(payment_status(paid, balance).into()),
        base_price: group("total_room_rate_amount"),
        fee: group("total_fees_amount"),
        tax: group("total_taxes_amount"),
        discount: group("total_promotions_amount"),
    }
}

/// "Paid", "Partially paid", "Unpaid" from what was paid (`total_transactions.amount`) and what is
/// still due (`balance_due`); "Unknown" when neither is known.
pub fn payment_status(paid: Option<f64>, balance: Option<f64>) -> &'static str {
    match (paid, balance) {
        (_, Some(balance)) if balance <= 0.0 => "Paid",
        (Some(paid), Some(_)) if paid > 0.0 => "Partially paid",
        (_, Some(_)) => "Unpaid",
        (Some(paid), None) if paid > 0.0 => "Partially paid",
        _ => "Unknown",
    }
}

/// The booking id of an `inbox_uid` ("B12345" → "12345"); enquiries ("E…") have none.
pub fn booking_of_inbox(inbox_uid: &str) -> Option<String> {
    let id = inbox_uid.trim().strip_prefix(['B', 'b'])?;
    (!id.is_empty() && id.chars().all(|character| character.is_ascii_digit())).then(|| id.to_string())
}

/// A `guest_message_received` body → the conversation with the new message (the only one the
/// webhook carries).
pub fn conversation(body: &Value) -> Result<Conversation, String> {
    let thread = json::string(body, "thread_uid").ok_or("no `thread_uid`")?;
    let message_id = json::string(body, "message_id").ok_or("no `message_id`")?;
    // "In UTC zone" (documented), written with an offset: "2024-01-30T14:15:00+00:00".
    let created_at = json::timestamp(body, "creation_time");
    let message = Message {
        id: message_id,
        body: body.get("message").and_then(Value::as_str).unwrap_or_default().to_string(),
        sender_type: SenderType::Guest,
        created_at: created_at.clone(),
        updated_at: created_at.clone(),
        seen: None,
        attachments: Vec::new(),
    };
    Ok(Conversation {
        id: thread,
        reservation_ids: json::string(body, "inbox_uid").as_deref().and_then(booking_of_inbox).into_iter().collect(),
        property_ids: Vec::new(),
        kind: None,
        recipient: Recipient { name: json::string(body, "guest_name"), email: None, phone: None, picture: None },
        updated_at: created_at,
        messages: vec![message],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn inbound(body: Value) -> Inbound {
        stayhook_plugin_sdk::json_inbound(&body)
    }

    fn events(body: Value) -> Vec<Event> {
        match normalize(&inbound(body), &[]).unwrap() {
            Outcome::Done(events) => events,
            other => panic!("expected done, got {other:?}"),
        }
    }

    #[test]
    fn status_vocabulary() {
        for (word, unified) in [
            ("Booked", ReservationStatus::Confirmed),
            ("booked", ReservationStatus::Confirmed),
            ("Tentative", ReservationStatus::Pending),
            ("Open", ReservationStatus::Inquiry),
            ("Declined", ReservationStatus::Cancelled),
            ("Cancelled", ReservationStatus::Cancelled),
            ("Unavailable", ReservationStatus::Unknown),
        ] {
            assert_eq!(status(Some(word)), unified, "{word}");
        }
        assert_eq!(status(None), ReservationStatus::Unknown);
    }

    #[test]
    fn new_events_create_and_status_changes_update() {
        let booking =
            json!({"id": 7, "status": "Declined", "date_arrival": "2022-05-21T00:00:00", "date_departure": "2022-05-24T00:00:00"});
        for action in CREATED {
            let events = events(json!({"action": action, "booking": booking}));
            assert!(matches!(events.as_slice(), [Event::ReservationCreated(_)]), "{action}");
        }
        for action in UPDATED {
            let events = events(json!({"action": action, "booking": booking}));
            let [Event::ReservationUpdated(reservation)] = events.as_slice() else { panic!("{action}: {events:?}") };
            assert_eq!(reservation.id, "7");
            assert_eq!(reservation.status, ReservationStatus::Cancelled);
            assert_eq!(reservation.arrival_date.as_deref(), Some("2022-05-21"));
            assert_eq!(reservation.departure_date.as_deref(), Some("2022-05-24"));
            assert_eq!(reservation.finances.payment_status.as_deref(), Some("Unknown"));
        }
    }

    #[test]
    fn guests_are_summed_over_room_types_and_money_reads_strings() {
        let body = json!({"action": "booking_change", "booking": {"id": 1, "room_types": [{"people": 2}, {"people": 3}], "currency_code": "eur"},
            "booking_total_amount": "1113.50", "balance_due": "500", "total_transactions": {"amount": "613.5"}});
        let events = events(body);
        let [Event::ReservationUpdated(reservation)] = events.as_slice() else { panic!("{events:?}") };
        assert_eq!(reservation.number_of_guests, Some(5));
        assert_eq!(reservation.total_price, Some(1113.5));
        assert_eq!(reservation.currency.as_deref(), Some("EUR"));
        assert_eq!(reservation.finances.remaining_balance, Some(500.0));
        assert_eq!(reservation.finances.payment_status.as_deref(), Some("Partially paid"));
    }

    #[test]
    fn payment_statuses() {
        assert_eq!(payment_status(Some(0.0), Some(1113.0)), "Unpaid");
        assert_eq!(payment_status(Some(1113.0), Some(0.0)), "Paid");
        assert_eq!(payment_status(Some(100.0), Some(1013.0)), "Partially paid");
        assert_eq!(payment_status(None, None), "Unknown");
    }

    #[test]
    fn inbox_ids() {
        assert_eq!(booking_of_inbox("B12345").as_deref(), Some("12345"));
        assert_eq!(booking_of_inbox("E12345"), None);
        assert_eq!(booking_of_inbox("B"), None);
        assert_eq!(booking_of_inbox("Bx1"), None);
    }

    #[test]
    fn an_enquiry_message_has_no_reservation() {
        let body = json!({"action": "guest_message_received", "thread_uid": "t", "message_id": 1, "inbox_uid": "E99", "message": null});
        let events = events(body);
        let [Event::ConversationUpdated(conversation)] = events.as_slice() else { panic!("{events:?}") };
        assert!(conversation.reservation_ids.is_empty());
        assert_eq!(conversation.messages[0].body, "");
        assert_eq!(conversation.messages[0].sender_type, SenderType::Guest);
    }

    #[test]
    fn bad_and_unsupported_bodies_are_named() {
        let refused = |body: Value| normalize(&inbound(body), &[]).unwrap_err();
        assert!(matches!(refused(json!([1])), PluginError::BadPayload(message) if message.contains("object")));
        assert!(matches!(refused(json!({"booking": {}})), PluginError::BadPayload(message) if message.contains("action")));
        assert!(
            matches!(refused(json!({"action": "booking_change"})), PluginError::BadPayload(message) if message.contains("`booking` object"))
        );
        assert!(
            matches!(refused(json!({"action": "booking_change", "booking": {"status": "Booked"}})), PluginError::BadPayload(message) if message.contains("`id`"))
        );
        assert!(
            matches!(refused(json!({"action": "guest_message_received", "message_id": 1})), PluginError::BadPayload(message) if message.contains("thread_uid"))
        );
        assert!(matches!(
            refused(json!({"action": "availability_change", "property_id": 1000, "room_type_ids": [1233], "start": "2022-06-13T00:00:00", "end": "2022-06-14T00:00:00", "source": "Manual"})),
            PluginError::UnsupportedEvent(message) if message.starts_with("availability_change")
        ));
        assert!(
            matches!(refused(json!({"action": "rate_change", "property_id": 1000, "room_type_ids": [12345]})), PluginError::UnsupportedEvent(message) if message.starts_with("rate_change"))
        );
        assert!(
            matches!(refused(json!({"action": "something_new"})), PluginError::UnsupportedEvent(message) if message == "something_new")
        );
        let error = normalize(&Inbound { body: b"not json".to_vec(), ..inbound(json!({})) }, &[]).unwrap_err();
        assert!(matches!(error, PluginError::BadPayload(message) if message.contains("not JSON")));
    }
}
