//! OwnerRez webhook → unified events.
//!
//! The envelope (https://www.ownerrez.com/support/articles/api-webhooks, field names as real
//! receivers read them): `{id, user_id, action, entity_type, entity_id, categories, entity}`.
//! `action` is `entity_create`, `entity_update`, `entity_delete`, `webhook_test` (the "Send a Test
//! Webhook" button) or `application_authorization_revoked`; `entity` is the record as the v2 API
//! answers it (`GET /v2/bookings/{id}`, `GET /v2/messages/{id}`).
//!
//! - booking, `entity_create` → `reservation-created`; `entity_update` → `reservation-upserted`
//!   (an update is also how a hold/block turns into a real booking under the same id, so the host
//!   decides created vs updated from its store); a cancellation is an update whose status is
//!   `canceled`. `entity_delete` → `reservation-deleted`.
//! - booking with `is_block: true` (or `type: "block"`) → `calendar-updated`: its nights are not
//!   available. A cancelled block is skipped (see README, open points).
//! - thread_message `entity_create`/`entity_update` → `conversation-updated` with that one message.
//! - When a create/update arrives without its inline `entity`, the record is fetched; when that
//!   fails for good the event is reported incomplete.

use serde_json::Value;
use stayhook_plugin_sdk::model::*;
use stayhook_plugin_sdk::status::{self, Vocabulary};
use stayhook_plugin_sdk::{api, contact, json, money, time};

/// The webhook actions this plugin understands, in OwnerRez's spelling.
pub const EVENTS: &[&str] = &["entity_create", "entity_update", "entity_delete", "webhook_test"];
/// Request id of the booking fetch.
pub const BOOKING: &str = "booking";
/// Request id of the message fetch.
pub const MESSAGE: &str = "message";
/// OwnerRez asks every API client for a descriptive User-Agent.
pub const USER_AGENT: &str = concat!("stayhook-plugin-ownerrez/", env!("CARGO_PKG_VERSION"));

/// OwnerRez booking statuses (seen: `active`, `pending`, `canceled`).
const STATUSES: Vocabulary = &[
    ("active", ReservationStatus::Confirmed),
    ("pending", ReservationStatus::Pending),
    ("canceled", ReservationStatus::Cancelled),
    ("cancelled", ReservationStatus::Cancelled),
];

/// One webhook → the unified events it means, or the API calls needed first.
pub fn normalize(inbound: &Inbound, responses: &[ApiResponse]) -> Result<Outcome, PluginError> {
    let body = stayhook_plugin_sdk::json_object_body(inbound)?;
    let action = json::string(&body, "action").ok_or_else(|| PluginError::BadPayload("no `action` field".into()))?;
    if action == "webhook_test" {
        return Ok(Outcome::Done(Vec::new()));
    }
    if !matches!(action.as_str(), "entity_create" | "entity_update" | "entity_delete") {
        return Err(PluginError::UnsupportedEvent(action));
    }
    let entity_type = json::string(&body, "entity_type").ok_or_else(|| PluginError::BadPayload(format!("{action}: no `entity_type`")))?;
    let entity_id = json::string(&body, "entity_id");
    let entity = body.get("entity").filter(|entity| entity.is_object());
    match entity_type.as_str() {
        "booking" => booking_event(&action, entity_id, entity, responses),
        "thread_message" if action != "entity_delete" => message_event(&action, entity_id, entity, responses),
        other => Err(PluginError::UnsupportedEvent(format!("{other}.{action}"))),
    }
}

fn booking_event(
    action: &str,
    entity_id: Option<String>,
    entity: Option<&Value>,
    responses: &[ApiResponse],
) -> Result<Outcome, PluginError> {
    let id = entity_id.or_else(|| entity.and_then(|entity| json::string(entity, "id")));
    if action == "entity_delete" {
        let id = id.ok_or_else(|| PluginError::BadPayload("booking entity_delete without `entity_id`".into()))?;
        return Ok(Outcome::Done(vec![Event::ReservationDeleted(id)]));
    }
    let created = action == "entity_create";
    let booking = match entity {
        Some(entity) => entity.clone(),
        None => {
            let id =
                id.clone().ok_or_else(|| PluginError::BadPayload(format!("booking {action} with neither `entity` nor `entity_id`")))?;
            let Some(answer) = api::response(responses, BOOKING) else { return Ok(Outcome::Fetch(vec![booking_request(&id)])) };
            match api::successful(answer) {
                Ok(booking) if booking.is_object() => booking,
                Ok(_) => return Ok(Outcome::Done(vec![incomplete(created, &id, "the booking answer is not a JSON object".into())])),
                Err(reason) => return Ok(Outcome::Done(vec![incomplete(created, &id, reason)])),
            }
        }
    };
    if is_block(&booking) {
        return block(&booking).map(|calendar| Outcome::Done(vec![Event::CalendarUpdated(calendar)]));
    }
    let reservation = reservation(&booking, id.as_deref())?;
    Ok(Outcome::Done(vec![if created { Event::ReservationCreated(reservation) } else { Event::ReservationUpserted(reservation) }]))
}

fn message_event(
    action: &str,
    entity_id: Option<String>,
    entity: Option<&Value>,
    responses: &[ApiResponse],
) -> Result<Outcome, PluginError> {
    let message = match entity {
        Some(entity) => entity.clone(),
        None => {
            let id = entity_id
                .ok_or_else(|| PluginError::BadPayload(format!("thread_message {action} with neither `entity` nor `entity_id`")))?;
            let Some(answer) = api::response(responses, MESSAGE) else {
                return Ok(Outcome::Fetch(vec![request(MESSAGE, format!("/v2/messages/{id}"))]));
            };
            match api::successful(answer) {
                Ok(message) if message.is_object() => message,
                Ok(_) => return Ok(Outcome::Done(vec![incomplete_conversation(&id, "the message answer is not a JSON object".into())])),
                Err(reason) => return Ok(Outcome::Done(vec![incomplete_conversation(&id, reason)])),
            }
        }
    };
    // OwnerRez also reports drafts the host is still writing; they are not messages yet.
    if json::flag(&message, "is_draft") == Some(true) {
        return Ok(Outcome::Done(Vec::new()));
    }
    Ok(Outcome::Done(vec![Event::ConversationUpdated(conversation(&message)?)]))
}

/// A GET below the API base URL, with the User-Agent OwnerRez asks for.
pub fn request(id: &str, path: String) -> ApiRequest {
    ApiRequest { headers: vec![("User-Agent".into(), USER_AGENT.into())], ..api::get(id, path) }
}

/// `GET /v2/bookings/{id}`.
pub fn booking_request(id: &str) -> ApiRequest {
    request(BOOKING, format!("/v2/bookings/{id}"))
}

fn incomplete(created: bool, id: &str, reason: String) -> Event {
    let event_type = if created { EventType::ReservationCreated } else { EventType::ReservationUpdated };
    Event::Incomplete(Incomplete { event_type, record_id: id.into(), reason })
}

fn incomplete_conversation(id: &str, reason: String) -> Event {
    Event::Incomplete(Incomplete { event_type: EventType::ConversationUpdated, record_id: id.into(), reason })
}

/// Whether a booking entity is a block (a hold or owner block), not a guest reservation.
pub fn is_block(booking: &Value) -> bool {
    json::flag(booking, "is_block") == Some(true) || json::string(booking, "type").as_deref() == Some("block")
}

fn property_id(booking: &Value) -> Option<String> {
    json::string(booking, "property_id").or_else(|| booking.get("property").and_then(|property| json::string(property, "id")))
}

/// A block → its nights as not available (arrival up to the night before departure).
pub fn block(booking: &Value) -> Result<Calendar, PluginError> {
    let status = json::string(booking, "status").unwrap_or_default();
    if status::lookup(STATUSES, &status) == ReservationStatus::Cancelled {
        return Err(PluginError::UnsupportedEvent(
            "a cancelled block: OwnerRez does not say whether its nights are free again (another booking may hold them)".into(),
        ));
    }
    let property_id = property_id(booking).ok_or_else(|| PluginError::BadPayload("block without `property_id`".into()))?;
    let (Some(arrival), Some(departure)) = (json::date(booking, "arrival"), json::date(booking, "departure")) else {
        return Err(PluginError::BadPayload("block without `arrival`/`departure` dates".into()));
    };
    let nights = time::nights_between(&arrival, &departure).unwrap_or(0);
    let days = (0..i64::from(nights))
        .filter_map(|offset| time::add_days(&arrival, offset))
        .map(|date| CalendarDay {
            date,
            status: DayStatus::NotAvailable,
            units_available: None,
            price: None,
            currency: None,
            minimum_nights: None,
            maximum_nights: None,
            reservation_ids: Vec::new(),
        })
        .collect();
    Ok(Calendar { property_id, room_type_id: None, days })
}

/// A local date and an OwnerRez "HH:MM" time → "YYYY-MM-DDTHH:MM:00" (unshifted local time).
fn at_time(date: &Option<String>, clock: Option<String>) -> Option<String> {
    let (date, clock) = (date.as_deref()?, clock?);
    let text = format!("{date}T{clock}:00");
    time::is_timestamp(&text).then_some(text)
}

/// An OwnerRez booking (the webhook's `entity` or the API's answer) → the unified reservation.
pub fn reservation(booking: &Value, fallback_id: Option<&str>) -> Result<Reservation, PluginError> {
    let id = json::string(booking, "id")
        .or_else(|| fallback_id.map(str::to_string))
        .ok_or_else(|| PluginError::BadPayload("booking has no `id`".into()))?;
    let mut reservation = Reservation::new(id);
    reservation.created_at = json::timestamp(booking, "created_utc").or_else(|| json::timestamp(booking, "booked_utc"));
    reservation.updated_at = json::timestamp(booking, "updated_utc");
    reservation.cancelled_at = json::timestamp(booking, "canceled_utc");
    reservation.arrival_date = json::date(booking, "arrival");
    reservation.departure_date = json::date(booking, "departure");
    reservation.property_id = property_id(booking);
    reservation.number_of_adults = json::count(booking, "adults");
    reservation.number_of_children = json::count(booking, "children");
    reservation.number_of_infants = json::count(booking, "infants");
    reservation.number_of_pets = json::count(booking, "pets");
    reservation.number_of_guests = match (reservation.number_of_adults, reservation.number_of_children) {
        (None, None) => None,
        (adults, children) => Some(adults.unwrap_or(0) + children.unwrap_or(0)),
    };
    reservation.primary_guest = booking.get("guest").filter(|guest| guest.is_object()).map(guest);
    reservation.source = json::string(booking, "listing_site");
    reservation.status = json::string(booking, "status").map(|word| status::lookup(STATUSES, &word)).unwrap_or(ReservationStatus::Unknown);
    reservation.total_price = money::amount_at(booking, "total_amount");
    reservation.currency = json::string(booking, "currency_code").and_then(|code| money::currency(&code));
    reservation.arrival_estimated_time = at_time(&reservation.arrival_date, json::string(booking, "check_in"));
    reservation.departure_estimated_time = at_time(&reservation.departure_date, json::string(booking, "check_out"));
    reservation.codes.confirmation_code = json::string(booking, "platform_reservation_number");
    reservation.codes.access_code = json::array(booking, "door_codes").iter().filter_map(|code| json::string(code, "code")).collect();
    reservation.notes = json::string(booking, "notes");
    reservation.finances.total_price = reservation.total_price;
    reservation.finances.currency = reservation.currency.clone();
    charges(booking, &mut reservation.finances);
    Ok(reservation)
}

/// `charges[]` (`type` rent / surcharge / tax / ..., `amount`, `description`) → charge groups.
fn charges(booking: &Value, finances: &mut Finances) {
    for item in json::array(booking, "charges") {
        let kind = json::string(item, "type").unwrap_or_default().to_ascii_lowercase();
        let (group, category) = match kind.as_str() {
            "rent" => (&mut finances.base_price, "BASE_PRICE"),
            "tax" => (&mut finances.tax, "OTHER_TAX"),
            "discount" => (&mut finances.discount, "DISCOUNT"),
            _ => (&mut finances.fee, "OTHER_FEE"),
        };
        let total = money::amount_at(item, "amount");
        group.breakdown.push(Charge {
            name: json::string(item, "description").or_else(|| (!kind.is_empty()).then(|| kind.clone())),
            description: None,
            kind: category.into(),
            units: None,
            total,
            is_mandatory: None,
        });
        if let Some(total) = total {
            group.total = Some(money::cents(group.total.unwrap_or(0.0) + total));
        }
    }
}

/// The booking's `guest` object → the primary guest. The full guest carries `email_addresses[]`,
/// `phones[]` and `addresses[]`, each with `is_default`; defaults come first.
pub fn guest(guest: &Value) -> GuestInfo {
    let first = json::string(guest, "first_name");
    let last = json::string(guest, "last_name");
    let name = match (&first, &last) {
        (Some(first), Some(last)) => Some(format!("{first} {last}")),
        (Some(one), None) | (None, Some(one)) => Some(one.clone()),
        (None, None) => None,
    };
    let mut info = GuestInfo::named(name);
    info.name_first = first;
    info.name_last = last;
    let emails = defaults_first(json::array(guest, "email_addresses"));
    info.emails = contact::emails(emails.iter().filter_map(|item| item.get("address").and_then(Value::as_str)));
    let phones = defaults_first(json::array(guest, "phones"));
    info.mobile_numbers = contact::phones(phones.iter().filter_map(|item| item.get("number").and_then(Value::as_str)));
    info.address = defaults_first(json::array(guest, "addresses")).first().map(|address| PostalAddress {
        line1: json::string(address, "street1"),
        postal_code: json::string(address, "postal_code"),
        city: json::string(address, "city"),
        country: json::string(address, "country"),
    });
    info
}

fn defaults_first(items: &[Value]) -> Vec<&Value> {
    let mut sorted: Vec<&Value> = items.iter().collect();
    sorted.sort_by_key(|item| json::flag(item, "is_default") != Some(true));
    sorted
}

/// A message entity (`id`, `body`, `date_utc`, `from_role`, `thread {id, booking_id, property_id,
/// channel, type}`) → a conversation holding that message.
pub fn conversation(message: &Value) -> Result<Conversation, PluginError> {
    let id = json::string(message, "id").ok_or_else(|| PluginError::BadPayload("message has no `id`".into()))?;
    let thread = message.get("thread").cloned().unwrap_or(Value::Null);
    let thread_id = json::string(&thread, "id").or_else(|| json::string(message, "thread_id")).unwrap_or_else(|| id.clone());
    let created_at = json::timestamp(message, "date_utc");
    let sender_type = match json::string(message, "from_role").unwrap_or_default().to_ascii_lowercase().as_str() {
        "guest" => SenderType::Guest,
        "admin" | "owner" | "host" | "co_host" | "cohost" | "user" => SenderType::Owner,
        _ => SenderType::System,
    };
    Ok(Conversation {
        id: thread_id,
        reservation_ids: json::string(&thread, "booking_id").into_iter().collect(),
        property_ids: json::string(&thread, "property_id").into_iter().collect(),
        kind: json::string(&thread, "channel").or_else(|| json::string(&thread, "type")),
        recipient: Recipient { name: None, email: None, phone: None, picture: None },
        updated_at: created_at.clone(),
        messages: vec![Message {
            id,
            body: json::string(message, "body").unwrap_or_default(),
            sender_type,
            created_at: created_at.clone(),
            updated_at: created_at,
            seen: None,
            attachments: Vec::new(),
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn inbound(body: Value) -> Inbound {
        stayhook_plugin_sdk::json_inbound(&body)
    }

    fn done(outcome: Outcome) -> Vec<Event> {
        match outcome {
            Outcome::Done(events) => events,
            Outcome::Fetch(requests) => panic!("expected done, got fetch {requests:?}"),
        }
    }

    #[test]
    fn statuses() {
        for (word, unified) in [
            ("active", ReservationStatus::Confirmed),
            ("Active", ReservationStatus::Confirmed),
            ("pending", ReservationStatus::Pending),
            ("canceled", ReservationStatus::Cancelled),
            ("Cancelled", ReservationStatus::Cancelled),
            ("archived", ReservationStatus::Unknown),
        ] {
            assert_eq!(reservation(&json!({"id": 1, "status": word}), None).unwrap().status, unified, "{word}");
        }
    }

    #[test]
    fn a_cancellation_is_an_update_with_status_cancelled() {
        let body = json!({"action": "entity_update", "entity_type": "booking", "entity_id": 7,
            "entity": {"id": 7, "type": "booking", "is_block": false, "status": "canceled", "canceled_utc": "2026-03-09T10:00:00Z"}});
        let events = done(normalize(&inbound(body), &[]).unwrap());
        let [Event::ReservationUpserted(reservation)] = events.as_slice() else { panic!("expected one upsert, got {events:?}") };
        assert_eq!(reservation.status, ReservationStatus::Cancelled);
        assert_eq!(reservation.cancelled_at.as_deref(), Some("2026-03-09T10:00:00Z"));
    }

    #[test]
    fn delete_test_and_unknown_events() {
        let events = done(normalize(&inbound(json!({"action": "entity_delete", "entity_type": "booking", "entity_id": 42})), &[]).unwrap());
        assert!(matches!(events.as_slice(), [Event::ReservationDeleted(id)] if id == "42"));
        let ping = json!({"action": "webhook_test", "entity_type": "api_application", "entity_id": 1});
        assert!(done(normalize(&inbound(ping), &[]).unwrap()).is_empty());
        let revoked = normalize(&inbound(json!({"action": "application_authorization_revoked", "user_id": 5})), &[]).unwrap_err();
        assert!(matches!(revoked, PluginError::UnsupportedEvent(event) if event == "application_authorization_revoked"));
        let guest = normalize(&inbound(json!({"action": "entity_update", "entity_type": "guest", "entity_id": 3})), &[]).unwrap_err();
        assert!(matches!(guest, PluginError::UnsupportedEvent(event) if event == "guest.entity_update"));
    }

    #[test]
    fn bad_bodies_are_named() {
        let error = normalize(&inbound(json!({"entity_type": "booking"})), &[]).unwrap_err();
        assert!(matches!(error, PluginError::BadPayload(message) if message.contains("action")));
        let error = normalize(&inbound(json!(["entity_create"])), &[]).unwrap_err();
        assert!(matches!(error, PluginError::BadPayload(message) if message.contains("object")));
        let error = normalize(&inbound(json!({"action": "entity_create", "entity_type": "booking"})), &[]).unwrap_err();
        assert!(matches!(error, PluginError::BadPayload(message) if message.contains("entity_id")));
    }

    #[test]
    fn a_booking_without_entity_is_fetched_then_mapped() {
        let body = json!({"action": "entity_create", "entity_type": "booking", "entity_id": 9});
        let Outcome::Fetch(requests) = normalize(&inbound(body.clone()), &[]).unwrap() else { panic!("expected fetch") };
        assert_eq!(requests[0].path, "/v2/bookings/9");
        assert!(requests[0].headers.iter().any(|(name, _)| name == "User-Agent"));
        let answer = stayhook_plugin_sdk::testing::answer(BOOKING, 200, json!({"id": 9, "status": "active", "type": "booking"}));
        let events = done(normalize(&inbound(body), &[answer]).unwrap());
        assert!(matches!(events.as_slice(), [Event::ReservationCreated(reservation)] if reservation.id == "9"));
    }

    #[test]
    fn guest_contacts_defaults_first_and_charges_grouped() {
        let booking = json!({"id": 1, "arrival": "2026-10-05", "departure": "2026-10-08", "check_in": "16:00", "check_out": "11:00",
            "door_codes": [{"code": "4821", "lock_names": "Front"}],
            "guest": {"first_name": "Ada", "last_name": "Lovelace",
                "email_addresses": [{"address": "old@example.com", "is_default": false}, {"address": "Ada@Example.com", "is_default": true}],
                "phones": [{"number": "+1 (555) 010-0199", "is_default": true}],
                "addresses": [{"street1": "1 Main St", "city": "Lake Town", "postal_code": "12345", "country": "US", "is_default": true}]},
            "charges": [{"type": "rent", "amount": 600.0}, {"type": "surcharge", "amount": 150.0, "description": "Cleaning"}, {"type": "tax", "amount": 90.0}]});
        let reservation = reservation(&booking, None).unwrap();
        let guest = reservation.primary_guest.unwrap();
        assert_eq!(guest.emails, ["ada@example.com", "old@example.com"]);
        assert_eq!(guest.mobile_numbers, ["+15550100199"]);
        assert_eq!(guest.address.unwrap().city.as_deref(), Some("Lake Town"));
        assert_eq!(reservation.arrival_estimated_time.as_deref(), Some("2026-10-05T16:00:00"));
        assert_eq!(reservation.departure_estimated_time.as_deref(), Some("2026-10-08T11:00:00"));
        assert_eq!(reservation.codes.access_code, ["4821"]);
        assert_eq!(reservation.finances.base_price.total, Some(600.0));
        assert_eq!(reservation.finances.fee.breakdown[0].name.as_deref(), Some("Cleaning"));
        assert_eq!(reservation.finances.tax.total, Some(90.0));
    }

    #[test]
    fn blocks_are_calendar_nights_and_cancelled_blocks_are_skipped() {
        let booking = json!({"id": 5, "is_block": true, "type": "block", "status": "pending", "property_id": 4, "arrival": "2026-03-30", "departure": "2026-04-02"});
        let calendar = block(&booking).unwrap();
        assert_eq!(calendar.days.iter().map(|day| day.date.as_str()).collect::<Vec<_>>(), ["2026-03-30", "2026-03-31", "2026-04-01"]);
        let cancelled =
            json!({"id": 5, "is_block": true, "status": "canceled", "property_id": 4, "arrival": "2026-03-30", "departure": "2026-04-02"});
        assert!(matches!(block(&cancelled), Err(PluginError::UnsupportedEvent(_))));
    }

    #[test]
    fn messages_become_a_conversation_and_drafts_are_ignored() {
        let entity = json!({"id": 77, "body": "Hi!", "date_utc": "2026-08-16T10:00:00Z", "from_role": "guest", "is_draft": false,
            "thread": {"id": 12, "booking_id": 9, "property_id": 4, "channel": "airbnb"}});
        let body = json!({"action": "entity_create", "entity_type": "thread_message", "entity_id": 77, "entity": entity});
        let events = done(normalize(&inbound(body), &[]).unwrap());
        let [Event::ConversationUpdated(conversation)] = events.as_slice() else { panic!("{events:?}") };
        assert_eq!((conversation.id.as_str(), conversation.reservation_ids.as_slice()), ("12", ["9".to_string()].as_slice()));
        assert_eq!(conversation.messages[0].sender_type, SenderType::Guest);
        let draft = json!({"action": "entity_update", "entity_type": "thread_message", "entity_id": 78, "entity": {"id": 78, "body": "..", "is_draft": true}});
        assert!(done(normalize(&inbound(draft), &[]).unwrap()).is_empty());
    }
}
