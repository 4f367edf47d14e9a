//! Reconciliation (contract 0.2 `sync`, mode `newest-first-scan`): Hostaway's reservation list.
//!
//! `GET /v1/reservations?limit=100&includeResources=1[&afterId=<id>]` answers reservations ordered by `updatedOn`
//! descending, then `id` descending (Hostaway's default order); the next page is asked with
//! `afterId` = the `id` of the previous page's last row, and the list ends with an empty page
//! (Hostaway's documented workflow: "Repeat until you receive an empty result set"). Hostaway has
//! no "changed since" filter, so a pass with a `since` stops by itself: the first row whose
//! `updatedOn` falls before the watermark ends the pass (`more: false`), and rows before it are
//! left out. The watermark is [`OVERLAP_DAYS`] calendar days before `since`'s date, because
//! `updatedOn` is "YYYY-MM-DD HH:MM:SS" without a zone (UTC by Hostaway's general rule, but the
//! docs never say so for this field) and rows updated during paging can move between pages.
//! Source: https://github.com/Hostaway/api/blob/63073eaa1469e2fa9830eb1c0edcbcc6f68d848b/source/includes/_reservation_retrieveReservationsList.md

use serde_json::Value;
use stayhook_plugin_sdk::model::*;
use stayhook_plugin_sdk::{api, json, time};

/// Rows asked per page: Hostaway's documented default (`limit`, "default limit is 100").
pub const PAGE_SIZE: u32 = 100;

/// Calendar days before `since`'s date that a pass still lists (zone-less `updatedOn`, rows moving
/// while paging).
pub const OVERLAP_DAYS: i64 = 2;

/// The id of the list request.
const REQUEST_ID: &str = "reservations";

/// One step of a sync pass: ask for the page after `cursor`, then turn its answer into a page.
pub fn sync(request: &SyncRequest, responses: &[ApiResponse]) -> Result<SyncOutcome, PluginError> {
    if request.mode != SyncMode::NewestFirstScan {
        return Err(PluginError::UnsupportedEvent("Hostaway lists reservations newest change first only (newest-first-scan)".into()));
    }
    let Some(response) = api::response(responses, REQUEST_ID) else {
        return Ok(SyncOutcome::Fetch(vec![list_request(request.cursor.as_deref())]));
    };
    let answer = api::successful(response).map_err(PluginError::BadPayload)?;
    let rows = rows(&answer)?;
    let watermark = match &request.since {
        Some(since) => Some(watermark(since).ok_or_else(|| PluginError::BadPayload(format!("since {since:?} is not a timestamp")))?),
        None => None,
    };
    page(rows, watermark.as_deref())
}

/// `GET /v1/reservations?limit=100&includeResources=1`, with `afterId` after the first page.
/// `includeResources=1` because some reservation fields reach the list only with it (Hostaway's
/// changelog: `hostProxyEmail` "by including the `includeResources=1`"), and a listed reservation
/// should read like the whole object a webhook carries.
pub fn list_request(cursor: Option<&str>) -> ApiRequest {
    let mut request = api::get(REQUEST_ID, "/v1/reservations");
    request.query.push(("limit".into(), PAGE_SIZE.to_string()));
    request.query.push(("includeResources".into(), "1".into()));
    if let Some(after_id) = cursor {
        request.query.push(("afterId".into(), after_id.to_string()));
    }
    request
}

/// The rows of a list answer `{"status": "success", "result": [...]}` (or a bare array).
pub fn rows(answer: &Value) -> Result<&[Value], PluginError> {
    if json::string(answer, "status").as_deref() == Some("fail") {
        let message = json::string(answer, "message").or_else(|| json::string(answer, "result")).unwrap_or_default();
        return Err(PluginError::BadPayload(format!("the reservation list answered status fail: {message}")));
    }
    answer
        .get("result")
        .unwrap_or(answer)
        .as_array()
        .map(Vec::as_slice)
        .ok_or_else(|| PluginError::BadPayload("the reservation list has no `result` array".into()))
}

/// The first calendar date a pass with this `since` still lists: `since`'s date minus
/// [`OVERLAP_DAYS`]. `None` when `since` is not a timestamp.
pub fn watermark(since: &str) -> Option<String> {
    if !time::is_timestamp(since) {
        return None;
    }
    time::add_days(time::date_part(since)?, -OVERLAP_DAYS)
}

/// One page from the rows of one answer. Rows come newest change first: the first row updated
/// before `watermark` (a "YYYY-MM-DD" date) ends the pass, and it and the rows after it are left
/// out. Without a watermark (an initial sync) every row is listed and only an empty page ends the
/// pass. The cursor is the `id` of the page's last row.
pub fn page(rows: &[Value], watermark: Option<&str>) -> Result<SyncOutcome, PluginError> {
    let mut events = Vec::new();
    let mut reached_watermark = false;
    for row in rows {
        let updated = json::string(row, "updatedOn");
        if let (Some(watermark), Some(updated)) = (watermark, updated.as_deref().and_then(time::date_part))
            && updated < watermark
        {
            reached_watermark = true;
            break;
        }
        events.push(Event::ReservationUpserted(crate::mapping::reservation(row)?));
    }
    let last_id = rows.last().and_then(|row| json::string(row, "id"));
    let more = !reached_watermark && !rows.is_empty() && last_id.is_some();
    Ok(SyncOutcome::Page(SyncPage { events, next_cursor: if more { last_id } else { None }, more }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use stayhook_plugin_sdk::testing::{self, answer, fetch, sync_request};

    fn request(cursor: Option<&str>, since: Option<&str>) -> SyncRequest {
        sync_request(SyncMode::NewestFirstScan).cursor(cursor).since(since).build()
    }

    fn row(id: u32, updated_on: &str) -> Value {
        json!({"id": id, "status": "new", "updatedOn": updated_on, "arrivalDate": "2026-04-01", "departureDate": "2026-04-03"})
    }

    fn ids(page: &SyncPage) -> Vec<String> {
        page.events
            .iter()
            .map(|event| match event {
                Event::ReservationUpserted(reservation) => reservation.id.clone(),
                _ => panic!("not an upsert"),
            })
            .collect()
    }

    #[test]
    fn first_page_has_no_after_id_and_later_pages_do() {
        let first = fetch(sync(&request(None, None), &[]).unwrap());
        assert_eq!(first.path, "/v1/reservations");
        assert_eq!(first.query, vec![("limit".to_string(), "100".to_string()), ("includeResources".to_string(), "1".to_string())]);
        let later = fetch(sync(&request(Some("12345"), None), &[]).unwrap());
        assert!(later.query.contains(&("afterId".to_string(), "12345".to_string())));
    }

    #[test]
    fn stops_at_the_first_row_before_the_watermark() {
        let rows = json!({"status": "success", "result": [row(103, "2026-03-13 18:00:54"), row(102, "2026-02-27 00:00:00"), row(101, "2026-02-26 23:59:59"), row(100, "2026-03-01 00:00:00")]});
        let page = testing::page(sync(&request(None, Some("2026-03-01T10:00:00Z")), &[answer(REQUEST_ID, 200, rows)]).unwrap());
        // Watermark: 2026-02-27 (two days before since's date); 101 is older, so 101 and 100 (moved
        // while paging) are left out and the pass ends.
        assert_eq!(ids(&page), ["103", "102"]);
        assert!(!page.more);
        assert_eq!(page.next_cursor, None);
    }

    #[test]
    fn a_page_above_the_watermark_continues_after_its_last_id() {
        let rows = json!({"status": "success", "result": [row(103, "2026-03-13 18:00:54"), row(102, "2026-03-02 08:00:00")]});
        let page = testing::page(sync(&request(None, Some("2026-03-01T00:00:00Z")), &[answer(REQUEST_ID, 200, rows)]).unwrap());
        assert_eq!(ids(&page), ["103", "102"]);
        assert!(page.more);
        assert_eq!(page.next_cursor.as_deref(), Some("102"));
    }

    #[test]
    fn an_initial_sync_ends_only_with_an_empty_page() {
        let rows = json!({"status": "success", "result": [row(2, "2001-01-01 00:00:00")]});
        let page = testing::page(sync(&request(Some("3"), None), &[answer(REQUEST_ID, 200, rows)]).unwrap());
        assert_eq!(ids(&page), ["2"]);
        assert!(page.more);
        let page =
            testing::page(sync(&request(Some("2"), None), &[answer(REQUEST_ID, 200, json!({"status": "success", "result": []}))]).unwrap());
        assert!(page.events.is_empty());
        assert!(!page.more);
        assert_eq!(page.next_cursor, None);
    }

    #[test]
    fn a_row_without_updated_on_is_listed() {
        let rows = json!({"status": "success", "result": [{"id": 7, "status": "cancelled"}]});
        let page = testing::page(sync(&request(None, Some("2026-03-01T00:00:00Z")), &[answer(REQUEST_ID, 200, rows)]).unwrap());
        assert_eq!(ids(&page), ["7"]);
        assert!(page.more);
    }

    #[test]
    fn failures_are_refused_with_the_status() {
        let limited = json!({"status": "fail", "message": "too many requests"});
        for status in [429, 500, 503, 401] {
            let Err(PluginError::BadPayload(message)) = sync(&request(None, None), &[answer(REQUEST_ID, status, limited.clone())]) else {
                panic!("{status}: expected a refusal")
            };
            assert!(message.contains(&format!("HTTP {status}")), "{message}");
        }
        let Err(PluginError::BadPayload(message)) = sync(&request(None, None), &[answer(REQUEST_ID, 200, limited)]) else {
            panic!("fail refused")
        };
        assert!(message.contains("status fail"), "{message}");
        assert!(matches!(sync(&request(None, None), &[answer(REQUEST_ID, 200, json!({"result": "x"}))]), Err(PluginError::BadPayload(_))));
        assert!(matches!(
            sync(&request(None, Some("yesterday")), &[answer(REQUEST_ID, 200, json!({"result": []}))]),
            Err(PluginError::BadPayload(_))
        ));
    }

    #[test]
    fn watermark_is_two_days_before_since() {
        assert_eq!(watermark("2026-03-01T00:00:00Z").as_deref(), Some("2026-02-27"));
        assert_eq!(watermark("2024-03-01T23:59:59.000Z").as_deref(), Some("2024-02-28"));
        assert_eq!(watermark("soon"), None);
    }
}
