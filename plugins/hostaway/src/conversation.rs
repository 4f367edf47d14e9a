//! `message.received` → `conversation-updated`, with the whole conversation fetched from the API.
//!
//! Hostaway's unified webhook carries one ConversationMessage (`data.conversationId`); the seed's
//! `conversation.updated` carries the conversation with every message. So the plugin asks for
//! `GET /v1/conversations/{id}` (request `conversation`: type, recipient, reservation, listing)
//! and `GET /v1/conversations/{id}/messages` (request `messages`: every message) in one round, and
//! maps them: `senderType` Guest when `isIncoming` is 1, else Owner; `seenStatus` from `isSeen`;
//! `createdAt` from `date` (else `insertedOn`), `updatedAt` from `updatedOn`; newest first. Hostaway
//! answers `{"status": "success", "result": ...}`; a bare result is accepted too. When the API
//! fails for good the conversation is reported incomplete (result FAILURE with its id).

use serde_json::Value;
use stayhook_plugin_sdk::model::*;
use stayhook_plugin_sdk::{api, json};

use crate::mapping::local_timestamp;

/// Request id of the conversation.
pub const CONVERSATION: &str = "conversation";
/// Request id of its messages.
pub const MESSAGES: &str = "messages";
/// Messages asked for; Hostaway's docs name `limit` and `offset` without a maximum.
const MESSAGE_LIMIT: &str = "100";

/// The events of a `message.received` webhook whose message is `data`.
pub fn message_received(data: &Value, responses: &[ApiResponse]) -> Result<Outcome, PluginError> {
    let conversation_id = json::string(data, "conversationId")
        .ok_or_else(|| PluginError::BadPayload("message.received: `data.conversationId` is missing".into()))?;
    let (Some(conversation), Some(messages)) = (api::response(responses, CONVERSATION), api::response(responses, MESSAGES)) else {
        return Ok(Outcome::Fetch(requests(&conversation_id)));
    };
    let answers = api::successful(conversation).and_then(|conversation| Ok((conversation, api::successful(messages)?)));
    let (conversation, messages) = match answers {
        Ok(answers) => answers,
        Err(reason) => {
            return Ok(Outcome::Done(vec![Event::Incomplete(Incomplete {
                event_type: EventType::ConversationUpdated,
                record_id: conversation_id,
                reason,
            })]));
        }
    };
    let conversation = result(&conversation);
    let mut mapped: Vec<Message> = match result(&messages) {
        Value::Array(items) => items.iter().filter_map(message).collect(),
        _ => return Err(PluginError::BadPayload(format!("GET /v1/conversations/{conversation_id}/messages did not answer a list"))),
    };
    mapped.sort_by(|a, b| b.created_at.cmp(&a.created_at).then_with(|| numeric(&b.id).cmp(&numeric(&a.id))));
    Ok(Outcome::Done(vec![Event::ConversationUpdated(unified(&conversation_id, conversation, data, mapped))]))
}

/// The two requests of the one round.
pub fn requests(conversation_id: &str) -> Vec<ApiRequest> {
    let messages = ApiRequest {
        query: vec![("limit".into(), MESSAGE_LIMIT.into()), ("offset".into(), "0".into())],
        ..api::get(MESSAGES, format!("/v1/conversations/{conversation_id}/messages"))
    };
    vec![api::get(CONVERSATION, format!("/v1/conversations/{conversation_id}")), messages]
}

/// `result` of Hostaway's `{"status", "result"}` answer, or the answer itself.
fn result(answer: &Value) -> &Value {
    answer.get("result").filter(|result| !result.is_null()).unwrap_or(answer)
}

fn numeric(id: &str) -> u64 {
    id.parse().unwrap_or(0)
}

/// One ConversationMessage object.
pub fn message(item: &Value) -> Option<Message> {
    Some(Message {
        id: json::string(item, "id")?,
        body: json::string(item, "body").unwrap_or_default(),
        sender_type: if json::flag(item, "isIncoming") == Some(true) { SenderType::Guest } else { SenderType::Owner },
        created_at: local_timestamp(item, "date").or_else(|| local_timestamp(item, "insertedOn")),
        updated_at: local_timestamp(item, "updatedOn"),
        seen: json::flag(item, "isSeen"),
        attachments: json::array(item, "attachments")
            .iter()
            .filter_map(|attachment| {
                Some(Attachment {
                    url: json::string(attachment, "url")?,
                    name: json::string(attachment, "name"),
                    mime_type: json::string(attachment, "mimeType"),
                })
            })
            .collect(),
    })
}

fn unified(conversation_id: &str, conversation: &Value, webhook_message: &Value, messages: Vec<Message>) -> Conversation {
    let reservation = conversation.get("Reservation").filter(|reservation| reservation.is_object());
    let reservation_id =
        json::string(conversation, "reservationId").or_else(|| json::string(webhook_message, "reservationId")).into_iter().collect();
    let property_id =
        json::string(conversation, "listingMapId").or_else(|| json::string(webhook_message, "listingMapId")).into_iter().collect();
    let latest = [local_timestamp(conversation, "messageSentOn"), local_timestamp(conversation, "messageReceivedOn")]
        .into_iter()
        .flatten()
        .chain(messages.iter().filter_map(|message| message.updated_at.clone().or_else(|| message.created_at.clone())))
        .max();
    Conversation {
        id: conversation_id.to_string(),
        reservation_ids: reservation_id,
        property_ids: property_id,
        kind: json::string(conversation, "type"),
        recipient: Recipient {
            name: json::string(conversation, "recipientName").or_else(|| reservation.and_then(|r| json::string(r, "guestName"))),
            email: json::string(conversation, "recipientEmail").or_else(|| reservation.and_then(|r| json::string(r, "guestEmail"))),
            phone: reservation.and_then(|r| json::string(r, "phone")),
            picture: json::string(conversation, "recipientPicture").or_else(|| reservation.and_then(|r| json::string(r, "guestPicture"))),
        },
        updated_at: latest,
        messages,
    }
}
