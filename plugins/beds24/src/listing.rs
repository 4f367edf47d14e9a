//! Reconciliation: API V2 `GET /bookings?modifiedFrom=<instant>&status=...&page=<n>`, the bookings
//! modified at or after an instant (modified-since), page by page.
//!
//! - Filters: `modifiedFrom` (the Beds24 OpenAPI description derived from
//!   https://api.beds24.com/v2, https://github.com/api-evangelist/beds24/blob/main/openapi/beds24-bookings-api-openapi.yml);
//!   every `status` of the documented enum is asked for explicitly, because the default status set
//!   leaves cancelled bookings out (https://glama.ai/mcp/connectors/io.usefulapi/beds24/tools/beds24_list_bookings).
//! - Pages: Beds24 chooses the page size (100 in the answer posted on Beds24's forum,
//!   https://forum.beds24.com/viewtopic.php?f=15&p=5636&t=1555); the answer's
//!   `pages.nextPageExists` says whether `page=<n+1>` follows. The cursor is the next page number.
//! - An initial sync (no `since`) asks for everything modified since [`INITIAL_SINCE`]: without
//!   any filter Beds24 would list only upcoming bookings.

use serde_json::Value;
use stayhook_plugin_sdk::model::*;
use stayhook_plugin_sdk::{api, json, log};

use crate::mapping;

/// Request id of the list call.
pub const LIST: &str = "bookings";
/// `modifiedFrom` of an initial sync: earlier than any Beds24 booking.
pub const INITIAL_SINCE: &str = "2000-01-01T00:00:00Z";
/// Every booking status of API V2, cancelled included.
pub const ALL_STATUSES: &[&str] = &["new", "request", "confirmed", "cancelled", "black", "inquiry"];

/// One page of the booking list.
pub fn sync(request: &SyncRequest, responses: &[ApiResponse]) -> Result<SyncOutcome, PluginError> {
    if request.mode != SyncMode::ModifiedSince {
        return Err(PluginError::UnsupportedEvent(format!(
            "sync mode {:?}: Beds24 lists bookings modified since an instant",
            request.mode
        )));
    }
    let page_number = cursor_page(request.cursor.as_deref())?;
    let Some(answer) = api::response(responses, LIST) else {
        return Ok(SyncOutcome::Fetch(vec![list_request(request.since.as_deref(), page_number)]));
    };
    let page = api::successful(answer).map_err(PluginError::BadPayload)?;
    if json::flag(&page, "success") == Some(false) {
        let error = json::string(&page, "error").unwrap_or_else(|| "no reason given".into());
        return Err(PluginError::BadPayload(format!("the booking list answered success false: {error}")));
    }
    let items =
        page.get("data").and_then(Value::as_array).ok_or_else(|| PluginError::BadPayload("the booking list has no `data` array".into()))?;
    let mut events = Vec::new();
    for booking in items {
        match json::string(booking, "id") {
            Some(id) => events.push(Event::ReservationUpserted(mapping::reservation(booking, &id))),
            None => log(LogLevel::Warn, "booking list: an item without `id` left out"),
        }
    }
    let more = json::path(&page, &["pages", "nextPageExists"]).and_then(Value::as_bool).unwrap_or(false) && !items.is_empty();
    let next_cursor = more.then(|| (page_number + 1).to_string());
    Ok(SyncOutcome::Page(SyncPage { events, next_cursor, more }))
}

/// `GET /bookings?modifiedFrom=...&status=new&status=request&...&page=...`.
pub fn list_request(since: Option<&str>, page: u64) -> ApiRequest {
    let mut query = vec![("modifiedFrom".to_string(), since.unwrap_or(INITIAL_SINCE).to_string())];
    query.extend(ALL_STATUSES.iter().map(|status| ("status".to_string(), status.to_string())));
    query.push(("page".to_string(), page.to_string()));
    ApiRequest { query, ..api::get(LIST, "/bookings") }
}

fn cursor_page(cursor: Option<&str>) -> Result<u64, PluginError> {
    match cursor {
        None => Ok(1),
        Some(text) => text
            .parse()
            .ok()
            .filter(|page| *page >= 1)
            .ok_or_else(|| PluginError::BadPayload(format!("sync cursor {text:?} is not a page number"))),
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
    fn asks_for_every_status_modified_since_the_watermark() {
        let list = fetch(sync(&request(Some("3"), Some("2026-12-01T00:00:00Z")), &[]).unwrap());
        let query = &list.query;
        assert!(query.contains(&("modifiedFrom".into(), "2026-12-01T00:00:00Z".into())));
        assert!(query.contains(&("status".into(), "cancelled".into())));
        assert_eq!(query.iter().filter(|(name, _)| name == "status").count(), ALL_STATUSES.len());
        assert!(query.contains(&("page".into(), "3".into())));
        let initial = fetch(sync(&request(None, None), &[]).unwrap());
        assert!(initial.query.contains(&("modifiedFrom".into(), INITIAL_SINCE.into())));
        assert!(initial.query.contains(&("page".into(), "1".into())));
    }

    #[test]
    fn next_page_exists_continues_and_the_last_page_says_no_more() {
        let body = json!({"success": true, "pages": {"nextPageExists": true, "nextPageLink": "https://api.beds24.com/v2/bookings?page=2"},
            "data": [{"id": 1, "status": "confirmed"}, {"id": 2, "status": "cancelled"}]});
        let first = page(sync(&request(None, None), &[answer(LIST, 200, body)]).unwrap());
        assert!(first.more);
        assert_eq!(first.next_cursor.as_deref(), Some("2"));
        assert_eq!(first.events.len(), 2);
        let Event::ReservationUpserted(cancelled) = &first.events[1] else { panic!() };
        assert_eq!(cancelled.status, ReservationStatus::Cancelled);
        let body = json!({"success": true, "pages": {"nextPageExists": false}, "data": [{"id": 3}]});
        let last = page(sync(&request(Some("2"), None), &[answer(LIST, 200, body)]).unwrap());
        assert!(!last.more);
        assert_eq!(last.next_cursor, None);
        // An empty page ends the pass whatever it says.
        let body = json!({"success": true, "pages": {"nextPageExists": true}, "data": []});
        assert!(!page(sync(&request(Some("2"), None), &[answer(LIST, 200, body)]).unwrap()).more);
    }

    #[test]
    fn failures_are_refused() {
        let Err(PluginError::BadPayload(message)) = sync(&request(None, None), &[answer(LIST, 429, json!({}))]) else { panic!() };
        assert!(message.contains("429"), "{message}");
        let body = json!({"success": false, "error": "Token not valid", "code": 401});
        let Err(PluginError::BadPayload(message)) = sync(&request(None, None), &[answer(LIST, 200, body)]) else { panic!() };
        assert!(message.contains("Token not valid"), "{message}");
        assert!(matches!(sync(&request(Some("0"), None), &[]), Err(PluginError::BadPayload(_))));
    }
}
