//! `message.created` → `conversation-updated`.
//!
//! The webhook's `data` is one Message (`platform`, `platform_id`, `conversation_id`,
//! `reservation_id` (may be null), `content_type`, `body`, `attachments[{type, url}]`,
//! `sender_type` host|guest, `sender_role`, `sender{first_name, full_name, locale, picture_url,
//! thumbnail_url}`, `user`, `created_at`). The unified conversation holds the whole thread, so
//! for a reservation's message the plugin asks the host for `GET
//! /v2/reservations/{reservation_id}/messages` (answer `{"data": [Message, ...]}`) and adds the
//! webhook's message when the answer does not have it yet. A message without a reservation (an
//! inquiry's) is delivered as a conversation of that one message: Hospitable's inquiry messages
//! are read by inquiry id, which the webhook does not carry.

use serde_json::Value;
use stayhook_plugin_sdk::model::*;
use stayhook_plugin_sdk::{api, json};

/// Request id of the reservation's messages.
pub const MESSAGES: &str = "messages";

/// One `message.created` webhook → the conversation, or the request for its messages.
pub fn normalize(body: &Value, responses: &[ApiResponse]) -> Result<Outcome, PluginError> {
    let message = body
        .get("data")
        .filter(|data| data.is_object())
        .ok_or_else(|| PluginError::BadPayload("message.created: `data` is not an object".into()))?;
    let conversation_id = json::string(message, "conversation_id")
        .ok_or_else(|| PluginError::BadPayload("message.created: the message has no `conversation_id`".into()))?;
    let Some(reservation_id) = json::string(message, "reservation_id") else {
        return Ok(Outcome::Done(vec![Event::ConversationUpdated(conversation(&conversation_id, None, message, &[])?)]));
    };
    let Some(answer) = api::response(responses, MESSAGES) else { return Ok(Outcome::Fetch(vec![messages_request(&reservation_id)])) };
    let thread = match api::successful(answer).and_then(|answer| match answer.get("data") {
        Some(Value::Array(items)) => Ok(items.clone()),
        _ => Err(format!("{MESSAGES} answered without a `data` list")),
    }) {
        Ok(thread) => thread,
        Err(reason) => {
            return Ok(Outcome::Done(vec![Event::Incomplete(Incomplete {
                event_type: EventType::ConversationUpdated,
                record_id: conversation_id,
                reason,
            })]));
        }
    };
    Ok(Outcome::Done(vec![Event::ConversationUpdated(conversation(&conversation_id, Some(&reservation_id), message, &thread)?)]))
}

/// `GET /v2/reservations/{uuid}/messages`.
pub fn messages_request(reservation_id: &str) -> ApiRequest {
    api::get(MESSAGES, format!("/v2/reservations/{reservation_id}/messages"))
}

/// A message's id: `id` when Hospitable gives one, else a non-zero `platform_id` (the documented
/// example has 0, its default), else the conversation and the time it was written.
pub fn message_id(conversation_id: &str, message: &Value) -> String {
    json::string(message, "id")
        .or_else(|| json::string(message, "platform_id").filter(|id| id != "0"))
        .unwrap_or_else(|| format!("{conversation_id}:{}", json::string(message, "created_at").unwrap_or_default()))
}

fn unified_message(conversation_id: &str, message: &Value) -> Message {
    let created_at = json::timestamp(message, "created_at");
    Message {
        id: message_id(conversation_id, message),
        body: json::string(message, "body").unwrap_or_default(),
        sender_type: match json::string(message, "sender_type").map(|kind| kind.to_ascii_lowercase()).as_deref() {
            Some("guest") => SenderType::Guest,
            Some("host") => SenderType::Owner,
            _ => SenderType::System,
        },
        updated_at: created_at.clone(),
        created_at,
        seen: None,
        attachments: json::array(message, "attachments")
            .iter()
            .filter_map(|attachment| json::string(attachment, "url"))
            // Only real addresses: the documented example holds the placeholder "The image location URL".
            .filter(|url| url.starts_with("https://") || url.starts_with("http://"))
            .map(|url| Attachment { url, name: None, mime_type: None })
            .collect(),
    }
}

/// The webhook's message and the thread (possibly empty) → the unified conversation, newest first.
pub fn conversation(
    conversation_id: &str,
    reservation_id: Option<&str>,
    message: &Value,
    thread: &[Value],
) -> Result<Conversation, PluginError> {
    let mut sources: Vec<&Value> = thread.iter().filter(|item| item.is_object()).collect();
    let webhook_id = message_id(conversation_id, message);
    if !sources.iter().any(|item| message_id(conversation_id, item) == webhook_id) {
        sources.push(message);
    }
    let mut pairs: Vec<(&Value, Message)> = sources.into_iter().map(|item| (item, unified_message(conversation_id, item))).collect();
    pairs.sort_by(|(_, a), (_, b)| b.created_at.cmp(&a.created_at));
    // The guest is the person the host talks to: the newest guest message's sender.
    let guest_sender = pairs.iter().find(|(_, unified)| unified.sender_type == SenderType::Guest).and_then(|(item, _)| item.get("sender"));
    let recipient = Recipient {
        name: guest_sender.and_then(|sender| json::string(sender, "full_name").or_else(|| json::string(sender, "first_name"))),
        email: None,
        phone: None,
        picture: guest_sender.and_then(|sender| json::string(sender, "picture_url").or_else(|| json::string(sender, "thumbnail_url"))),
    };
    let messages: Vec<Message> = pairs.into_iter().map(|(_, unified)| unified).collect();
    Ok(Conversation {
        id: conversation_id.to_string(),
        reservation_ids: reservation_id.map(str::to_string).into_iter().collect(),
        property_ids: Vec::new(),
        kind: json::string(message, "platform"),
        recipient,
        updated_at: messages.first().and_then(|message| message.created_at.clone()),
        messages,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use stayhook_plugin_sdk::testing::answer;

    fn message(platform_id: u64, sender_type: &str, created_at: &str) -> Value {
        json!({"platform": "airbnb", "platform_id": platform_id, "conversation_id": "c1", "reservation_id": "r1", "body": "Hi",
               "attachments": [], "sender_type": sender_type, "sender": {"first_name": "Jane", "full_name": "Jane Doe", "picture_url": "https://p/j.jpg"},
               "created_at": created_at})
    }

    #[test]
    fn a_reservation_message_asks_for_the_thread_then_merges_it() {
        let body = json!({"action": "message.created", "data": message(3, "guest", "2019-07-29T19:10:00Z")});
        let Outcome::Fetch(requests) = normalize(&body, &[]).unwrap() else { panic!("expected a fetch") };
        assert_eq!(requests[0].path, "/v2/reservations/r1/messages");
        let thread = json!({"data": [message(1, "host", "2019-07-29T19:01:14Z"), message(2, "guest", "2019-07-29T19:05:00Z")]});
        let Outcome::Done(events) = normalize(&body, &[answer(MESSAGES, 200, thread)]).unwrap() else { panic!("expected done") };
        let [Event::ConversationUpdated(conversation)] = events.as_slice() else { panic!("got {events:?}") };
        assert_eq!(conversation.messages.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(), ["3", "2", "1"]);
        assert_eq!(conversation.messages[2].sender_type, SenderType::Owner);
        assert_eq!(conversation.updated_at.as_deref(), Some("2019-07-29T19:10:00Z"));
        assert_eq!(conversation.recipient.name.as_deref(), Some("Jane Doe"));
        assert_eq!(conversation.reservation_ids, ["r1"]);
    }

    #[test]
    fn the_api_down_gives_an_incomplete_conversation() {
        let body = json!({"action": "message.created", "data": message(3, "guest", "2019-07-29T19:10:00Z")});
        let Outcome::Done(events) = normalize(&body, &[answer(MESSAGES, 503, json!({"message": "down"}))]).unwrap() else {
            panic!("expected done")
        };
        assert!(
            matches!(events.as_slice(), [Event::Incomplete(incomplete)] if incomplete.record_id == "c1" && incomplete.reason.contains("503"))
        );
    }

    #[test]
    fn an_inquiry_message_is_a_conversation_of_one_without_api_calls() {
        let mut data = message(0, "host", "2019-07-29T19:01:14Z");
        data["reservation_id"] = Value::Null;
        data["attachments"] = json!([{"type": "image", "url": "The image location URL"}]);
        let Outcome::Done(events) = normalize(&json!({"action": "message.created", "data": data}), &[]).unwrap() else {
            panic!("expected done")
        };
        let [Event::ConversationUpdated(conversation)] = events.as_slice() else { panic!("got {events:?}") };
        assert_eq!(conversation.messages[0].id, "c1:2019-07-29T19:01:14Z");
        assert!(conversation.reservation_ids.is_empty());
        assert_eq!(conversation.recipient.name, None);
        assert!(conversation.messages[0].attachments.is_empty());
        let with_image = json!({"conversation_id": "c1", "attachments": [{"type": "image", "url": "https://img/x.jpg"}, {"type": "image", "url": "The image location URL"}]});
        let unified = unified_message("c1", &with_image);
        assert_eq!(unified.attachments.iter().map(|a| a.url.as_str()).collect::<Vec<_>>(), ["https://img/x.jpg"]);
    }

    #[test]
    fn a_message_without_a_conversation_is_refused() {
        let error = normalize(&json!({"action": "message.created", "data": {"body": "Hi"}}), &[]).unwrap_err();
        assert!(matches!(error, PluginError::BadPayload(message) if message.contains("conversation_id")));
    }
}
