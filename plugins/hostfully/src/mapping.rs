//! Callback → API requests → unified events.

use serde_json::{Map, Value};
use stayhook_plugin_sdk::model::*;
use stayhook_plugin_sdk::{api, json, time};

/// Callback event types this plugin handles.
pub const EVENTS: &[&str] = &[
    "NEW_BOOKING",
    "NEW_BOOKING_REQUEST",
    "NEW_INQUIRY",
    "NEW_HOLD",
    "BOOKING_UPDATED",
    "UNIT_CHANGED",
    "BOOKING_CANCELLED",
    "NEW_INBOX_MESSAGE",
    "INBOX_THREAD_UPDATED",
];
/// Request id of the lead.
pub const LEAD: &str = "lead";
/// Request id of the lead's messages.
pub const MESSAGES: &str = "messages";

/// The callback's fields, from a JSON or a form-encoded body.
pub fn callback(inbound: &Inbound) -> Result<Map<String, Value>, PluginError> {
    let is_form = inbound
        .content_type
        .as_deref()
        .is_some_and(|content_type| content_type.to_ascii_lowercase().starts_with("application/x-www-form-urlencoded"));
    if is_form {
        return Ok(form_urlencoded::parse(&inbound.body)
            .map(|(name, value)| (name.into_owned(), Value::String(value.into_owned())))
            .collect());
    }
    match serde_json::from_slice(&inbound.body) {
        Ok(Value::Object(fields)) => Ok(fields),
        Ok(_) => Err(PluginError::BadPayload("the callback is not a JSON object".into())),
        Err(error) => Err(PluginError::BadPayload(format!("the callback is neither form-encoded nor JSON: {error}"))),
    }
}

/// Turn one callback into events, or ask for the lead (and messages).
pub fn normalize(inbound: &Inbound, responses: &[ApiResponse]) -> Result<Outcome, PluginError> {
    let fields = Value::Object(callback(inbound)?);
    let event = json::string(&fields, "event_type").ok_or_else(|| PluginError::BadPayload("missing `event_type`".into()))?;
    let lead_uid = json::string(&fields, "lead_uid");
    match event.as_str() {
        "NEW_BOOKING" | "NEW_BOOKING_REQUEST" | "NEW_INQUIRY" | "NEW_HOLD" | "BOOKING_UPDATED" | "UNIT_CHANGED" | "BOOKING_CANCELLED" => {
            let lead_uid = lead_uid.ok_or_else(|| PluginError::BadPayload(format!("{event}: missing `lead_uid`")))?;
            let created = event.starts_with("NEW_");
            let Some(answer) = api::response(responses, LEAD) else { return Ok(Outcome::Fetch(vec![lead_request(&lead_uid)])) };
            let event_type = if created { EventType::ReservationCreated } else { EventType::ReservationUpdated };
            let lead = match api::successful(answer).and_then(|body| first_lead(&body, &lead_uid)) {
                Ok(lead) => lead,
                Err(reason) => return Ok(Outcome::Done(vec![incomplete(event_type, &lead_uid, reason)])),
            };
            let reservation = reservation(&lead, &lead_uid);
            Ok(Outcome::Done(vec![if created { Event::ReservationCreated(reservation) } else { Event::ReservationUpdated(reservation) }]))
        }
        "NEW_INBOX_MESSAGE" | "INBOX_THREAD_UPDATED" => {
            let Some(lead_uid) = lead_uid else {
                return Err(PluginError::UnsupportedEvent(format!(
                    "{event} without lead_uid: Hostfully documents no lookup of a thread's messages by thread or message uid"
                )));
            };
            let (Some(lead), Some(messages)) = (api::response(responses, LEAD), api::response(responses, MESSAGES)) else {
                return Ok(Outcome::Fetch(vec![lead_request(&lead_uid), messages_request(&lead_uid)]));
            };
            let answers =
                api::successful(lead).and_then(|lead| first_lead(&lead, &lead_uid)).and_then(|lead| Ok((lead, api::successful(messages)?)));
            let thread_id = json::string(&fields, "thread_uid").unwrap_or_else(|| lead_uid.clone());
            match answers {
                Ok((lead, messages)) => {
                    Ok(Outcome::Done(vec![Event::ConversationUpdated(conversation(&thread_id, &lead_uid, &lead, &messages))]))
                }
                Err(reason) => Ok(Outcome::Done(vec![incomplete(EventType::ConversationUpdated, &thread_id, reason)])),
            }
        }
        other => Err(PluginError::UnsupportedEvent(other.to_string())),
    }
}

/// `GET /api/v3.2/leads?leadUids=<uid>` (the list endpoint, whose answer shape is documented).
pub fn lead_request(lead_uid: &str) -> ApiRequest {
    ApiRequest { query: vec![("leadUids".into(), lead_uid.into())], ..api::get(LEAD, "/api/v3.2/leads") }
}

/// `GET /api/v3.2/messages?leadUid=<uid>&_limit=100`.
pub fn messages_request(lead_uid: &str) -> ApiRequest {
    ApiRequest {
        query: vec![("leadUid".into(), lead_uid.into()), ("_limit".into(), "100".into())],
        ..api::get(MESSAGES, "/api/v3.2/messages")
    }
}

fn incomplete(event_type: EventType, record_id: &str, reason: String) -> Event {
    Event::Incomplete(Incomplete { event_type, record_id: record_id.into(), reason })
}

/// The lead in `{"leads": [...]}` (or a bare lead object); a "not found" answer is a failure.
pub fn first_lead(body: &Value, lead_uid: &str) -> Result<Value, String> {
    if let Some(message) = json::string(body, "apiErrorMessage") {
        return Err(format!("Hostfully answered: {message}"));
    }
    let lead = match body.get("leads") {
        Some(Value::Array(leads)) => leads.iter().find(|lead| json::string(lead, "uid").as_deref() == Some(lead_uid)).or(leads.first()),
        _ => body.get("lead").or(Some(body)).filter(|lead| json::string(lead, "uid").is_some()),
    };
    lead.cloned().ok_or_else(|| format!("lead {lead_uid} is not in the answer"))
}

/// Hostfully's `...UtcDateTime` values are UTC without a zone ("2026-04-01T10:00:00"): add `Z`.
pub fn utc(value: &Value, key: &str) -> Option<String> {
    let text = json::string(value, key)?;
    let text = if text.ends_with('Z') || text.len() > 19 && text[19..].contains(['+', '-']) { text } else { format!("{text}Z") };
    time::is_timestamp(&text).then_some(text)
}

/// A local date-time as Hostfully wrote it (the property's time, unshifted).
fn local(value: &Value, key: &str) -> Option<String> {
    json::timestamp(value, key)
}

/// Lead status → unified status.
pub fn status(lead: &Value) -> ReservationStatus {
    match json::string(lead, "status").unwrap_or_default().as_str() {
        "BOOKED" | "BOOKED_BY_AGENT" | "BOOKED_BY_CUSTOMER" | "BOOKED_EXTERNALLY" | "STAY" | "ARCHIVED" => ReservationStatus::Confirmed,
        "CANCELLED" | "CANCELLED_BY_TRAVELER" | "CANCELLED_BY_OWNER" => ReservationStatus::Cancelled,
        "NEW" | "QUOTE_SENT" => ReservationStatus::Inquiry,
        "ON_HOLD" => ReservationStatus::Pending,
        "HOLD_EXPIRED" => ReservationStatus::Expired,
        "CLOSED" | "CLOSED_QUOTE" | "CLOSED_HOLD" => ReservationStatus::Declined,
        _ => ReservationStatus::Unknown,
    }
}

/// A lead → the unified reservation.
pub fn reservation(lead: &Value, lead_uid: &str) -> Reservation {
    let guest = lead.get("guestInformation").cloned().unwrap_or(Value::Null);
    let arrival = local(lead, "checkInLocalDateTime").or_else(|| json::date(lead, "checkInLocalDate"));
    let departure = local(lead, "checkOutLocalDateTime").or_else(|| json::date(lead, "checkOutLocalDate"));
    let date_of = |text: &Option<String>| text.as_deref().and_then(time::date_part).map(str::to_string);
    let (adults, children) = (json::count(&guest, "adultCount"), json::count(&guest, "childrenCount"));
    let first = json::string(&guest, "firstName");
    let last = json::string(&guest, "lastName");
    let name = match (&first, &last) {
        (Some(first), Some(last)) => Some(format!("{first} {last}")),
        (Some(one), None) | (None, Some(one)) => Some(one.clone()),
        (None, None) => None,
    };
    let notes = [json::string(lead, "notes"), json::string(lead, "extraNotes")].into_iter().flatten().collect::<Vec<_>>().join("\n\n");
    Reservation {
        id: json::string(lead, "uid").unwrap_or_else(|| lead_uid.to_string()),
        created_at: utc(lead.get("metadata").unwrap_or(&Value::Null), "createdUtcDateTime").or_else(|| utc(lead, "bookedUtcDateTime")),
        updated_at: utc(lead.get("metadata").unwrap_or(&Value::Null), "updatedUtcDateTime"),
        cancelled_at: None,
        arrival_date: date_of(&arrival),
        departure_date: date_of(&departure),
        nights: None,
        property_id: json::string(lead, "propertyUid"),
        number_of_guests: match (adults, children) {
            (None, None) => None,
            (adults, children) => Some(adults.unwrap_or(0) + children.unwrap_or(0)),
        },
        primary_guest: Some(GuestInfo {
            name,
            name_first: first,
            name_last: last,
            emails: json::string(&guest, "email").into_iter().collect(),
            mobile_numbers: json::string(&guest, "phoneNumber").into_iter().collect(),
            preferred_language: None,
            address: None,
            pictures: Vec::new(),
        }),
        number_of_adults: adults,
        number_of_children: children,
        number_of_infants: json::count(&guest, "infantCount"),
        number_of_pets: json::count(&guest, "petCount"),
        source: json::string(lead, "channel").or_else(|| json::string(lead, "source")),
        total_price: None,
        currency: None,
        status: status(lead),
        arrival_estimated_time: arrival.filter(|text| text.len() > 10),
        departure_estimated_time: departure.filter(|text| text.len() > 10),
        codes: ReservationCodes { access_code: Vec::new(), confirmation_code: json::string(lead, "externalBookingId") },
        notes: (!notes.is_empty()).then_some(notes),
        verification: GuestVerification::unknown(),
        finances: Finances::unknown(),
        custom_fields: Vec::new(),
    }
}

/// A lead and its messages → the unified conversation (newest first).
pub fn conversation(thread_id: &str, lead_uid: &str, lead: &Value, answer: &Value) -> Conversation {
    let items = json::array(answer, "messages");
    let mut messages: Vec<Message> = items
        .iter()
        .filter_map(|item| {
            let content = item.get("content").cloned().unwrap_or(Value::Null);
            Some(Message {
                id: json::string(item, "uid")?,
                body: json::string(&content, "text").or_else(|| json::string(item, "content")).unwrap_or_default(),
                sender_type: match json::string(item, "senderType").as_deref() {
                    Some("GUEST") => SenderType::Guest,
                    Some("AGENCY") => SenderType::Owner,
                    _ => SenderType::System,
                },
                created_at: utc(item, "createdUtcDateTime"),
                updated_at: utc(item, "createdUtcDateTime"),
                seen: None,
                attachments: Vec::new(),
            })
        })
        .collect();
    messages.sort_by(|a, b| b.created_at.cmp(&a.created_at));
    let guest = lead.get("guestInformation").cloned().unwrap_or(Value::Null);
    let name = [json::string(&guest, "firstName"), json::string(&guest, "lastName")].into_iter().flatten().collect::<Vec<_>>().join(" ");
    Conversation {
        id: items.first().and_then(|item| json::string(item, "threadUid")).unwrap_or_else(|| thread_id.to_string()),
        reservation_ids: vec![lead_uid.to_string()],
        property_ids: json::string(lead, "propertyUid").into_iter().collect(),
        kind: items.first().and_then(|item| json::string(item, "type")),
        recipient: Recipient {
            name: (!name.is_empty()).then_some(name),
            email: json::string(&guest, "email"),
            phone: json::string(&guest, "phoneNumber"),
            picture: None,
        },
        updated_at: messages.first().and_then(|message| message.created_at.clone()),
        messages,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn utc_values_without_a_zone_get_one() {
        let value = json!({"a": "2026-04-01T10:00:00", "b": "2026-04-22T12:00:00Z", "c": "soon"});
        assert_eq!(utc(&value, "a").as_deref(), Some("2026-04-01T10:00:00Z"));
        assert_eq!(utc(&value, "b").as_deref(), Some("2026-04-22T12:00:00Z"));
        assert_eq!(utc(&value, "c"), None);
    }

    #[test]
    fn statuses() {
        for (hostfully, unified) in [
            ("BOOKED_BY_CUSTOMER", ReservationStatus::Confirmed),
            ("CANCELLED_BY_TRAVELER", ReservationStatus::Cancelled),
            ("QUOTE_SENT", ReservationStatus::Inquiry),
            ("ON_HOLD", ReservationStatus::Pending),
            ("HOLD_EXPIRED", ReservationStatus::Expired),
            ("CLOSED_HOLD", ReservationStatus::Declined),
            ("BLOCKED", ReservationStatus::Unknown),
        ] {
            assert_eq!(status(&json!({"status": hostfully})), unified, "{hostfully}");
        }
    }

    #[test]
    fn messages_are_newest_first_with_guest_and_agency_senders() {
        // The message shape observed live by a third party (see README): content is an object.
        let answer = json!({"messages": [
            {"uid": "m1", "createdUtcDateTime": "2026-04-20T09:00:00Z", "senderType": "GUEST", "content": {"subject": null, "text": "Hi"}, "threadUid": "t1", "type": "AIRBNB"},
            {"uid": "m2", "createdUtcDateTime": "2026-04-21T09:00:00Z", "senderType": "AGENCY", "content": {"subject": null, "text": "Hello"}, "threadUid": "t1", "type": "AIRBNB"}
        ]});
        let lead = json!({"uid": "l1", "propertyUid": "p1", "guestInformation": {"firstName": "John", "lastName": "Doe", "email": "john@example.com"}});
        let conversation = conversation("t0", "l1", &lead, &answer);
        assert_eq!(conversation.id, "t1");
        assert_eq!(conversation.messages.iter().map(|message| message.id.as_str()).collect::<Vec<_>>(), ["m2", "m1"]);
        assert_eq!(conversation.messages[0].sender_type, SenderType::Owner);
        assert_eq!(conversation.messages[1].sender_type, SenderType::Guest);
        assert_eq!(conversation.messages[1].body, "Hi");
        assert_eq!(conversation.recipient.name.as_deref(), Some("John Doe"));
        assert_eq!(conversation.kind.as_deref(), Some("AIRBNB"));
    }
}
