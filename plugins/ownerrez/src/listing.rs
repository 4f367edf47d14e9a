//! Reconciliation: `GET /v2/bookings?since_utc=<instant>&limit=100&offset=<n>`, the bookings
//! "created or updated at or after" an instant (modified-since), page by page.
//!
//! OwnerRez documents the list at https://api.ownerrez.com/help/v2 (operation index); the
//! parameters and the page envelope `{count, limit, offset, nextPageUrl, items}` are read from the
//! third-party OpenAPI description derived from it
//! (https://github.com/api-evangelist/ownerrez/blob/main/openapi/_original/ownerrez-openapi.yml).
//! The list needs `since_utc` or `property_ids`, so an initial sync (no `since`) asks for
//! everything changed since [`INITIAL_SINCE`]. The cursor is the next `offset`. A page is the last
//! one when `nextPageUrl` is null (or, if the answer has no such field, when it holds fewer than
//! `limit` items). Blocks (holds, owner blocks) are not reservations and are left out.

use serde_json::Value;
use stayhook_plugin_sdk::model::*;
use stayhook_plugin_sdk::{api, json, log};

use crate::mapping;

/// Request id of the list call.
pub const LIST: &str = "bookings";
/// Page size: the list's documented default `limit` (no maximum is documented).
pub const PAGE_SIZE: u64 = 100;
/// `since_utc` of an initial sync: earlier than any OwnerRez record.
pub const INITIAL_SINCE: &str = "2000-01-01T00:00:00Z";

/// One page of the booking list.
pub fn sync(request: &SyncRequest, responses: &[ApiResponse]) -> Result<SyncOutcome, PluginError> {
    if request.mode != SyncMode::ModifiedSince {
        return Err(PluginError::UnsupportedEvent(format!(
            "sync mode {:?}: OwnerRez lists bookings modified since an instant",
            request.mode
        )));
    }
    let offset = cursor_offset(request.cursor.as_deref())?;
    let Some(answer) = api::response(responses, LIST) else {
        return Ok(SyncOutcome::Fetch(vec![list_request(request.since.as_deref(), offset)]));
    };
    let page = api::successful(answer).map_err(PluginError::BadPayload)?;
    let items = page
        .get("items")
        .and_then(Value::as_array)
        .ok_or_else(|| PluginError::BadPayload("the booking list has no `items` array".into()))?;
    let mut events = Vec::new();
    for booking in items {
        if mapping::is_block(booking) {
            continue;
        }
        match mapping::reservation(booking, None) {
            Ok(reservation) => events.push(Event::ReservationUpserted(reservation)),
            Err(error) => log(LogLevel::Warn, &format!("booking list: an item left out: {error:?}")),
        }
    }
    let more = has_more(&page, items.len() as u64);
    let next_cursor = more.then(|| (offset + items.len() as u64).to_string());
    Ok(SyncOutcome::Page(SyncPage { events, next_cursor, more }))
}

/// `GET /v2/bookings?since_utc=...&limit=100&offset=...`.
pub fn list_request(since: Option<&str>, offset: u64) -> ApiRequest {
    let query = vec![
        ("since_utc".to_string(), since.unwrap_or(INITIAL_SINCE).to_string()),
        ("limit".to_string(), PAGE_SIZE.to_string()),
        ("offset".to_string(), offset.to_string()),
    ];
    ApiRequest { query, ..mapping::request(LIST, "/v2/bookings".into()) }
}

fn cursor_offset(cursor: Option<&str>) -> Result<u64, PluginError> {
    match cursor {
        None => Ok(0),
        Some(text) => text.parse().map_err(|_| PluginError::BadPayload(format!("sync cursor {text:?} is not an offset"))),
    }
}

/// Whether another page follows: `nextPageUrl` says so when present; otherwise a full page may
/// have a successor.
fn has_more(page: &Value, n_items: u64) -> bool {
    match page.get("nextPageUrl") {
        Some(Value::String(url)) => !url.trim().is_empty(),
        Some(_) => false,
        None => n_items > 0 && n_items >= json::number(page, "limit").map(|limit| limit as u64).unwrap_or(PAGE_SIZE),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use stayhook_plugin_sdk::testing::{answer, fetch, page, sync_request};

    fn request(cursor: Option<&str>, since: Option<&str>) -> SyncRequest {
        sync_request(SyncMode::ModifiedSince).cursor(cursor).since(since).build()
    }

    #[test]
    fn first_call_asks_for_the_list_since_the_watermark() {
        let first = fetch(sync(&request(None, Some("2026-12-01T00:00:00Z")), &[]).unwrap());
        assert_eq!(first.path, "/v2/bookings");
        assert!(first.query.contains(&("since_utc".into(), "2026-12-01T00:00:00Z".into())));
        assert!(first.query.contains(&("offset".into(), "0".into())));
        let later = fetch(sync(&request(Some("200"), None), &[]).unwrap());
        assert!(later.query.contains(&("since_utc".into(), INITIAL_SINCE.into())));
        assert!(later.query.contains(&("offset".into(), "200".into())));
    }

    #[test]
    fn a_next_page_url_continues_at_the_next_offset() {
        let body = json!({"count": 3, "limit": 2, "offset": 0, "nextPageUrl": "/v2/bookings?offset=2",
            "items": [{"id": 1, "status": "active"}, {"id": 2, "status": "canceled"}]});
        let page = page(sync(&request(None, None), &[answer(LIST, 200, body)]).unwrap());
        assert!(page.more);
        assert_eq!(page.next_cursor.as_deref(), Some("2"));
        assert_eq!(page.events.len(), 2);
        let Event::ReservationUpserted(cancelled) = &page.events[1] else { panic!() };
        assert_eq!(cancelled.status, ReservationStatus::Cancelled);
    }

    #[test]
    fn the_last_page_says_no_more() {
        let body = json!({"count": 3, "limit": 2, "offset": 2, "nextPageUrl": null, "items": [{"id": 3}]});
        let page = page(sync(&request(Some("2"), None), &[answer(LIST, 200, body)]).unwrap());
        assert!(!page.more);
        assert_eq!(page.next_cursor, None);
        // Without the field, a short page is the last one, a full one may not be.
        assert!(!has_more(&json!({"limit": 2}), 1));
        assert!(has_more(&json!({"limit": 2}), 2));
        assert!(!has_more(&json!({}), 0));
    }

    #[test]
    fn blocks_are_left_out() {
        let body = json!({"nextPageUrl": null, "items": [{"id": 1, "is_block": true}, {"id": 2, "type": "block"}, {"id": 3}]});
        let page = page(sync(&request(None, None), &[answer(LIST, 200, body)]).unwrap());
        assert_eq!(page.events.len(), 1);
    }

    #[test]
    fn failed_answers_are_refused_with_their_status() {
        let responses = [answer(LIST, 429, json!({"error": "rate limited"}))];
        let Err(PluginError::BadPayload(message)) = sync(&request(None, None), &responses) else { panic!() };
        assert!(message.contains("429"), "{message}");
        assert!(matches!(sync(&request(Some("x"), None), &[]), Err(PluginError::BadPayload(_))));
    }
}
