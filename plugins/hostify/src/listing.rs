//! Reconciliation (contract 0.2 `sync`, mode `stay-date-window`): Hostify's reservation list.
//!
//! Hostify's `GET /reservations` has no "changed since" filter; its documented `filters` take
//! `checkIn` and `checkOut` with the operators `= <> < > <= >= in not_in between not_between`. A
//! window pass asks for the stays overlapping the window:
//! `filters=[{"field":"checkOut","operator":">=","value":<first day>},{"field":"checkIn","operator":"<","value":<until>}]`
//! (the filter array as JSON text, as a third-party client sends it), with
//! `include_related_objects=1` (the related guest, as the webhook's fetch asks), `per_page=100`
//! and `page` (documented global params). The answer `{"reservations": [...], "total": N}` is not
//! shown in Hostify's docs; it is what third-party clients read. A page's rows count toward
//! `total`; the cursor `<next page>|<rows seen>` keeps that count, so the pass ends when the rows
//! seen reach `total` (or at an empty page), whatever page size Hostify really applies (a third
//! party reports pages of 20 whatever it asked).
//! Sources: Hostify's API documentation "Docs | Hostify API" (List reservations, global params,
//! the filter object, the Reservation object), read through a third-party markdown copy; the
//! answer's shape from third-party clients (see the README's "Sync").

use serde_json::{Value, json};
use stayhook_plugin_sdk::model::*;
use stayhook_plugin_sdk::{api, json, time};

use crate::mapping;

/// Rows asked per page (`per_page`; Hostify's default is 20).
pub const PAGE_SIZE: u32 = 100;

/// The id of the list request.
const REQUEST_ID: &str = "reservations";

/// Where a pass is: the page to ask (from 1) and how many rows earlier pages held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub page: u32,
    pub seen: u64,
}

impl Position {
    /// A pass's first page, or the position a cursor `<page>|<seen>` names.
    pub fn parse(cursor: Option<&str>) -> Result<Position, PluginError> {
        let Some(cursor) = cursor else { return Ok(Position { page: 1, seen: 0 }) };
        let bad = || PluginError::BadPayload(format!("cursor {cursor:?} is not <page>|<rows seen>"));
        let (page, seen) = cursor.split_once('|').ok_or_else(bad)?;
        Ok(Position { page: page.parse().ok().filter(|page| *page >= 1).ok_or_else(bad)?, seen: seen.parse().map_err(|_| bad())? })
    }

    pub fn cursor(self) -> String {
        format!("{}|{}", self.page, self.seen)
    }
}

/// One step of a sync pass.
pub fn sync(request: &SyncRequest, responses: &[ApiResponse]) -> Result<SyncOutcome, PluginError> {
    if request.mode != SyncMode::StayDateWindow {
        return Err(PluginError::UnsupportedEvent("Hostify lists reservations by stay dates only (stay-date-window)".into()));
    }
    let position = Position::parse(request.cursor.as_deref())?;
    let Some(response) = api::response(responses, REQUEST_ID) else {
        let (first, until) = window(request.since.as_deref(), request.until.as_deref())?;
        return Ok(SyncOutcome::Fetch(vec![list_request(&first, &until, position.page)]));
    };
    let answer = api::successful(response).map_err(PluginError::BadPayload)?;
    page(&answer, position)
}

/// The window's first day and its exclusive end ("YYYY-MM-DD").
pub fn window(since: Option<&str>, until: Option<&str>) -> Result<(String, String), PluginError> {
    let first = since.and_then(time::date_part).ok_or_else(|| PluginError::BadPayload("a stay-date window needs `since`".into()))?;
    let until = until.and_then(time::date_part).ok_or_else(|| PluginError::BadPayload("a stay-date window needs `until`".into()))?;
    Ok((first.to_string(), until.to_string()))
}

/// `GET /reservations?filters=<stays overlapping the window>&include_related_objects=1&per_page=100&page=<n>`.
pub fn list_request(first: &str, until: &str, page: u32) -> ApiRequest {
    let filters = json!([
        {"field": "checkOut", "operator": ">=", "value": first},
        {"field": "checkIn", "operator": "<", "value": until},
    ]);
    let query = [
        ("filters", filters.to_string()),
        ("include_related_objects", "1".to_string()),
        ("per_page", PAGE_SIZE.to_string()),
        ("page", page.to_string()),
    ]
    .map(|(name, value)| (name.to_string(), value))
    .to_vec();
    ApiRequest { query, ..api::get(REQUEST_ID, "/reservations") }
}

/// One page of `{"reservations": [...], "total": N}`; `success: false` refuses the page.
pub fn page(answer: &Value, position: Position) -> Result<SyncOutcome, PluginError> {
    if json::flag(answer, "success") == Some(false) {
        let reason = json::string(answer, "error").or_else(|| json::string(answer, "message")).unwrap_or_else(|| "success false".into());
        return Err(PluginError::BadPayload(format!("Hostify answered: {reason}")));
    }
    let rows = answer
        .get("reservations")
        .and_then(Value::as_array)
        .ok_or_else(|| PluginError::BadPayload("the reservation list has no `reservations` array".into()))?;
    let events = rows
        .iter()
        .map(|row| {
            let id = json::string(row, "id").ok_or_else(|| PluginError::BadPayload("a listed reservation has no `id`".into()))?;
            let guest = row.get("guest").filter(|guest| guest.is_object());
            Ok(Event::ReservationUpserted(mapping::reservation(row, guest, &id)))
        })
        .collect::<Result<Vec<_>, PluginError>>()?;
    let seen = position.seen + rows.len() as u64;
    let more = !rows.is_empty()
        && match json::count(answer, "total") {
            Some(total) => seen < u64::from(total),
            None => true,
        };
    let next = more.then(|| Position { page: position.page + 1, seen }.cursor());
    Ok(SyncOutcome::Page(SyncPage { events, more, next_cursor: next }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use stayhook_plugin_sdk::testing::{self, answer, fetch, sync_request};

    fn request(cursor: Option<&str>) -> SyncRequest {
        sync_request(SyncMode::StayDateWindow).cursor(cursor).since("2026-05-01").until("2026-06-01").build()
    }

    #[test]
    fn the_request_asks_for_stays_overlapping_the_window() {
        let list = fetch(sync(&request(Some("3|200")), &[]).unwrap());
        let query = &list.query;
        assert_eq!(list.path, "/reservations");
        let filters = testing::query(&list, "filters").unwrap();
        assert_eq!(
            filters,
            r#"[{"field":"checkOut","operator":">=","value":"2026-05-01"},{"field":"checkIn","operator":"<","value":"2026-06-01"}]"#
        );
        assert!(query.contains(&("page".to_string(), "3".to_string())));
        assert!(query.contains(&("per_page".to_string(), "100".to_string())));
        assert!(query.contains(&("include_related_objects".to_string(), "1".to_string())));
    }

    #[test]
    fn total_counts_rows_whatever_the_page_size() {
        let rows = |n: u64| (0..n).map(|i| json!({"id": i, "status": "accepted"})).collect::<Vec<_>>();
        // Hostify answered 20 rows although 100 were asked: the pass goes on until `total`.
        let first = testing::page(page(&json!({"reservations": rows(20), "total": 45}), Position { page: 1, seen: 0 }).unwrap());
        assert!(first.more);
        assert_eq!(first.next_cursor.as_deref(), Some("2|20"));
        let last = testing::page(page(&json!({"reservations": rows(5), "total": 45}), Position { page: 3, seen: 40 }).unwrap());
        assert!(!last.more);
        assert_eq!(last.next_cursor, None);
        let empty = testing::page(page(&json!({"reservations": []}), Position { page: 2, seen: 20 }).unwrap());
        assert!(!empty.more);
        let untotalled = testing::page(page(&json!({"reservations": rows(3)}), Position { page: 1, seen: 0 }).unwrap());
        assert!(untotalled.more, "without `total` only an empty page ends the pass");
        assert_eq!(Position::parse(Some("2|20")).unwrap(), Position { page: 2, seen: 20 });
        assert!(Position::parse(Some("0|0")).is_err());
        assert!(Position::parse(Some("x")).is_err());
    }

    #[test]
    fn the_related_guest_is_read_from_the_row() {
        let row = json!({"reservations": [{"id": 7, "status": "cancelled", "guest": {"name": "Ann Lee", "email": "ann@example.com"}}], "total": 1});
        let listed = testing::page(page(&row, Position { page: 1, seen: 0 }).unwrap());
        let [Event::ReservationUpserted(reservation)] = listed.events.as_slice() else { panic!("one upsert") };
        assert_eq!(reservation.status, ReservationStatus::Cancelled);
        assert_eq!(reservation.primary_guest.as_ref().and_then(|guest| guest.name.as_deref()), Some("Ann Lee"));
    }

    #[test]
    fn refusals() {
        for status in [429, 500, 401] {
            let Err(PluginError::BadPayload(message)) = sync(&request(None), &[answer(REQUEST_ID, status, json!({}))]) else {
                panic!("{status}")
            };
            assert!(message.contains(&format!("HTTP {status}")), "{message}");
        }
        let refused = sync(&request(None), &[answer(REQUEST_ID, 200, json!({"success": false, "error": "Invalid filter"}))]);
        assert!(matches!(refused, Err(PluginError::BadPayload(message)) if message.contains("Invalid filter")));
        assert!(matches!(sync(&SyncRequest { until: None, ..request(None) }, &[]), Err(PluginError::BadPayload(_))));
        assert!(matches!(
            sync(&SyncRequest { mode: SyncMode::ModifiedSince, ..request(None) }, &[]),
            Err(PluginError::UnsupportedEvent(_))
        ));
    }
}
