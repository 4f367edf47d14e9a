//! Guesty conversations (`reservation.messageReceived` / `reservation.messageSent`) → the unified
//! conversation.
//!
//! The webhook carries the conversation object and the one new message, not the thread, so the
//! plugin fetches `GET /v1/communication/conversations/{id}` and its posts
//! (`GET /v1/communication/conversations/{id}/posts`, newest first, paged by `cursorAfter`).

use serde_json::Value;
use stayhook_plugin_sdk::json;
use stayhook_plugin_sdk::model::*;

use stayhook_plugin_sdk::json::path;

/// Request id of the conversation fetch.
pub const CONVERSATION: &str = "conversation";
/// Request id of the first page of posts; later pages are `posts-2`, `posts-3`.
pub const POSTS: &str = "posts";
/// Pages of posts fetched at most (Guesty answers 25 per page by default).
pub const MAX_POST_PAGES: usize = 3;

/// The conversation id of a message webhook: `conversation._id`, else `conversation.id`, else
/// `message.conversationId`.
pub fn conversation_id(body: &Value) -> Option<String> {
    let conversation = body.get("conversation");
    conversation
        .and_then(|conversation| json::string(conversation, "_id").or_else(|| json::string(conversation, "id")))
        .or_else(|| body.get("message").and_then(|message| json::string(message, "conversationId")))
}

/// The request id of page `n` (1-based) of posts.
pub fn posts_id(page: usize) -> String {
    if page <= 1 { POSTS.to_string() } else { format!("{POSTS}-{page}") }
}

/// The request for the conversation.
pub fn conversation_request(conversation_id: &str) -> ApiRequest {
    ApiRequest {
        id: CONVERSATION.into(),
        method: "GET".into(),
        path: format!("/v1/communication/conversations/{conversation_id}"),
        query: Vec::new(),
        headers: vec![("accept".into(), "application/json".into())],
        body: None,
    }
}

/// The request for page `page` of posts, `cursor` being the previous page's `cursor.after`.
pub fn posts_request(conversation_id: &str, page: usize, cursor: Option<&str>) -> ApiRequest {
    let mut query = vec![("sort".to_string(), "-createdAt".to_string())];
    if let Some(cursor) = cursor {
        query.push(("cursorAfter".into(), cursor.into()));
    }
    ApiRequest {
        id: posts_id(page),
        method: "GET".into(),
        path: format!("/v1/communication/conversations/{conversation_id}/posts"),
        query,
        headers: vec![("accept".into(), "application/json".into())],
        body: None,
    }
}

/// The posts of one page (`data.posts`).
pub fn page_posts(body: &Value) -> &[Value] {
    path(body, &["data", "posts"]).or_else(|| body.get("posts")).and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
}

/// The cursor to the next page, when this page was full and Guesty says there is more.
pub fn next_cursor(body: &Value) -> Option<String> {
    let data = body.get("data").unwrap_or(body);
    let after = path(data, &["cursor", "after"]).and_then(json::text)?;
    let limit = json::count(data, "limit").unwrap_or(25) as usize;
    (page_posts(body).len() >= limit).then_some(after)
}

/// Who wrote a post: `sentBy` ("guest", "host", "log"), else `from.type`, else the webhook
/// message's `type` (fromGuest / fromHost). Logs are the system; everything not from the guest is
/// the host side (`Owner`).
pub fn sender(post: &Value) -> SenderType {
    let module_type = path(post, &["module", "type"]).and_then(json::text).unwrap_or_default().to_ascii_lowercase();
    let who = json::string(post, "sentBy")
        .or_else(|| path(post, &["from", "type"]).and_then(json::text))
        .or_else(|| json::string(post, "type"))
        .unwrap_or_default()
        .to_ascii_lowercase();
    if who == "log" || module_type == "log" || who == "system" {
        SenderType::System
    } else if who == "guest" || who == "fromguest" || who == "tohost" {
        SenderType::Guest
    } else {
        SenderType::Owner
    }
}

/// Whether a post is an internal note (`module.type` "note"): not part of the thread with the guest.
pub fn is_note(post: &Value) -> bool {
    path(post, &["module", "type"]).and_then(json::text).is_some_and(|kind| kind.eq_ignore_ascii_case("note"))
}

/// One post as a message; `None` for notes and posts without an id.
pub fn message(post: &Value) -> Option<Message> {
    if is_note(post) {
        return None;
    }
    Some(Message {
        id: json::string(post, "_id").or_else(|| json::string(post, "postId"))?,
        body: json::string(post, "body").unwrap_or_default(),
        sender_type: sender(post),
        created_at: json::timestamp(post, "createdAt"),
        updated_at: json::timestamp(post, "updatedAt"),
        seen: None,
        attachments: json::array(post, "attachments").iter().filter_map(attachment).collect(),
    })
}

/// An attachment with a URL (`url`, else `path`); others are dropped.
pub fn attachment(item: &Value) -> Option<Attachment> {
    Some(Attachment {
        url: json::string(item, "url").or_else(|| json::string(item, "path"))?,
        name: json::string(item, "name").or_else(|| json::string(item, "fileName")),
        mime_type: json::string(item, "mimeType").or_else(|| json::string(item, "contentType")),
    })
}

/// The unified conversation from the webhook body, the fetched conversation (`data` of its answer,
/// if it came) and every fetched post.
pub fn conversation(id: &str, body: &Value, fetched: Option<&Value>, posts: &[Value]) -> Conversation {
    let hooked = body.get("conversation").filter(|conversation| conversation.is_object());
    let mut reservation_ids: Vec<String> = Vec::new();
    let mut property_ids: Vec<String> = Vec::new();
    let add = |list: &mut Vec<String>, id: Option<String>| {
        if let Some(id) = id
            && !list.contains(&id)
        {
            list.push(id);
        }
    };
    add(&mut reservation_ids, json::string(body, "reservationId"));
    for reservation in meta_reservations(fetched).iter().chain(meta_reservations(hooked)) {
        add(&mut reservation_ids, json::string(reservation, "_id"));
        add(
            &mut property_ids,
            path(reservation, &["listing", "_id"]).and_then(json::text).or_else(|| json::string(reservation, "listingId")),
        );
    }
    let either = |keys: &[&str]| fetched.and_then(|c| path(c, keys)).or_else(|| hooked.and_then(|c| path(c, keys))).and_then(json::text);
    let mut messages: Vec<Message> = posts.iter().filter_map(message).collect();
    messages.sort_by(|a, b| b.created_at.cmp(&a.created_at));
    messages.dedup_by(|a, b| a.id == b.id);
    Conversation {
        id: id.into(),
        reservation_ids,
        property_ids,
        kind: either(&["meta", "integration", "platform"]).or_else(|| either(&["integration", "platform"])),
        recipient: Recipient {
            name: either(&["meta", "guestName"]).or_else(|| either(&["meta", "guest", "fullName"])),
            email: either(&["meta", "guest", "email"]),
            phone: either(&["meta", "guest", "phone"]),
            picture: None,
        },
        updated_at: ["updatedAt", "modifiedAt", "lastUpdatedAt"]
            .iter()
            .find_map(|key| fetched.and_then(|c| json::timestamp(c, key)).or_else(|| hooked.and_then(|c| json::timestamp(c, key)))),
        messages,
    }
}

/// `meta.reservations` of a conversation object.
fn meta_reservations(conversation: Option<&Value>) -> &[Value] {
    conversation.and_then(|conversation| conversation.get("meta")).map(|meta| json::array(meta, "reservations")).unwrap_or(&[])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn senders() {
        assert_eq!(sender(&json!({"sentBy": "guest"})), SenderType::Guest);
        assert_eq!(sender(&json!({"sentBy": "host"})), SenderType::Owner);
        assert_eq!(sender(&json!({"sentBy": "log", "module": {"type": "log"}})), SenderType::System);
        assert_eq!(sender(&json!({"type": "fromGuest", "module": "airbnb2"})), SenderType::Guest);
        assert_eq!(sender(&json!({"type": "fromHost"})), SenderType::Owner);
        assert_eq!(sender(&json!({"from": {"type": "user"}})), SenderType::Owner);
    }

    #[test]
    fn notes_are_not_messages_and_attachments_need_urls() {
        assert!(message(&json!({"_id": "n", "body": "internal", "module": {"type": "note"}})).is_none());
        let post = json!({"_id": "p", "body": "photo", "sentBy": "guest", "createdAt": "2021-10-11T12:54:43.248Z",
            "attachments": [{"url": "https://example.com/a.jpg", "name": "a.jpg", "mimeType": "image/jpeg"}, {"name": "no-url"}]});
        let message = message(&post).unwrap();
        assert_eq!(message.sender_type, SenderType::Guest);
        assert_eq!(message.attachments.len(), 1);
        assert_eq!(message.attachments[0].mime_type.as_deref(), Some("image/jpeg"));
    }

    #[test]
    fn cursor_only_when_the_page_was_full() {
        let partial = json!({"data": {"posts": [{}], "limit": 25, "cursor": {"after": "abc", "before": ""}}});
        assert_eq!(next_cursor(&partial), None);
        let full = json!({"data": {"posts": [{}, {}], "limit": 2, "cursor": {"after": "abc", "before": ""}}});
        assert_eq!(next_cursor(&full).as_deref(), Some("abc"));
        let last = json!({"data": {"posts": [{}, {}], "limit": 2, "cursor": {"after": "", "before": "x"}}});
        assert_eq!(next_cursor(&last), None);
    }
}
