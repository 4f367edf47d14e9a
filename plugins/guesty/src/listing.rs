//! Reconciliation (contract 0.2 `sync`, mode `modified-since`): Guesty's reservation list.
//!
//! `GET /v1/reservations` with `filters=[{"field":"lastUpdatedAt","operator":"$gte","value":<t>}]`,
//! `sort=lastUpdatedAt` (oldest change first), `limit=100` (Guesty's maximum), `skip` and `fields`
//! (the list answers only a few fields unless asked). Paging is by key, not by offset alone: the
//! cursor is `<t>|<n>`, the `lastUpdatedAt` of the previous page's last row and how many rows of the
//! list at or after `t` were already seen; the next page asks `lastUpdatedAt >= t` and skips `n`.
//! A reservation updated while a pass pages moves to the end of the order instead of shifting the
//! rows of pages not read yet, so none is skipped; rows listed twice are harmless (the host drops a
//! record that changes nothing).
//!
//! Guesty marks this endpoint deprecated and says it is removed on 1 March 2027; its replacement
//! (`/v1/reservations-v3/search`) has no "updated since" filter (see the README's "Sync" section).
//! Sources: https://open-api-docs.guesty.com/docs/how-to-search-for-reservations and
//! https://open-api-docs.guesty.com/reference/reservationsv2list .

use serde_json::{Value, json};
use stayhook_plugin_sdk::model::*;
use stayhook_plugin_sdk::{api, json};

use crate::reservation;

/// Rows asked per page: Guesty's maximum ("default 25 ... a maximum of 100").
pub const PAGE_SIZE: usize = 100;

/// The fields the list is asked for: every top-level field `reservation::reservation` reads.
pub const FIELDS: &str = "_id listingId listing checkIn checkOut checkInDateLocalized checkOutDateLocalized plannedArrival \
                          plannedDeparture nightsCount guestsCount numberOfGuests guest status source integration confirmationCode \
                          createdAt lastUpdatedAt canceledAt money customFields";

/// The id of the list request.
const REQUEST_ID: &str = "reservations";

/// Where a page starts: rows with `lastUpdatedAt` at or after `from` (all rows when `None`),
/// skipping the first `skip` of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub from: Option<String>,
    pub skip: usize,
}

impl Position {
    /// The cursor text `<from>|<skip>` (`from` empty when none).
    pub fn cursor(&self) -> String {
        format!("{}|{}", self.from.as_deref().unwrap_or_default(), self.skip)
    }

    /// A pass's first page (`since`) or a later one (`cursor`).
    pub fn parse(cursor: Option<&str>, since: Option<&str>) -> Result<Position, PluginError> {
        let Some(cursor) = cursor else {
            return Ok(Position { from: since.map(String::from), skip: 0 });
        };
        let (from, skip) =
            cursor.rsplit_once('|').ok_or_else(|| PluginError::BadPayload(format!("cursor {cursor:?} is not <time>|<skip>")))?;
        let skip = skip.parse().map_err(|_| PluginError::BadPayload(format!("cursor {cursor:?} is not <time>|<skip>")))?;
        Ok(Position { from: (!from.is_empty()).then(|| from.to_string()), skip })
    }
}

/// One step of a sync pass: ask for the page at the cursor, then turn its answer into a page.
pub fn sync(request: &SyncRequest, responses: &[ApiResponse]) -> Result<SyncOutcome, PluginError> {
    if request.mode != SyncMode::ModifiedSince {
        return Err(PluginError::UnsupportedEvent("Guesty lists reservations changed since a time only (modified-since)".into()));
    }
    let position = Position::parse(request.cursor.as_deref(), request.since.as_deref())?;
    let Some(response) = api::response(responses, REQUEST_ID) else {
        return Ok(SyncOutcome::Fetch(vec![list_request(&position)]));
    };
    let answer = api::successful(response).map_err(PluginError::BadPayload)?;
    page(&answer, &position)
}

/// `GET /v1/reservations?filters=...&sort=lastUpdatedAt&limit=100&skip=<n>&fields=...`.
pub fn list_request(position: &Position) -> ApiRequest {
    let mut request = api::get(REQUEST_ID, "/v1/reservations");
    request.headers.push(("accept".into(), "application/json".into()));
    if let Some(from) = &position.from {
        let filters = json!([{"field": "lastUpdatedAt", "operator": "$gte", "value": from}]);
        request.query.push(("filters".into(), filters.to_string()));
    }
    request.query.extend([
        ("sort".to_string(), "lastUpdatedAt".to_string()),
        ("limit".to_string(), PAGE_SIZE.to_string()),
        ("skip".to_string(), position.skip.to_string()),
        ("fields".to_string(), FIELDS.split_whitespace().collect::<Vec<_>>().join(" ")),
    ]);
    request
}

/// One page from a list answer `{"results": [...], "count", "limit", "skip"}`. More pages follow
/// while the rows seen stay below `count` (the number of rows the filter matches), or, when the
/// answer has no `count`, while pages come back full.
pub fn page(answer: &Value, position: &Position) -> Result<SyncOutcome, PluginError> {
    let rows = answer
        .get("results")
        .and_then(Value::as_array)
        .ok_or_else(|| PluginError::BadPayload("the reservation list has no `results` array".into()))?;
    let events = rows.iter().map(|row| reservation::reservation(row).map(Event::ReservationUpserted)).collect::<Result<Vec<_>, _>>()?;
    let seen = position.skip + rows.len();
    let more = !rows.is_empty()
        && match answer.get("count").and_then(Value::as_u64) {
            Some(count) => (seen as u64) < count,
            None => rows.len() >= PAGE_SIZE,
        };
    let next_cursor = more.then(|| next_position(rows, position).cursor());
    Ok(SyncOutcome::Page(SyncPage { events, next_cursor, more }))
}

/// Where the page after `rows` starts: at the last row's `lastUpdatedAt`, skipping the rows of
/// this page that share it; at the same key with a larger skip when the whole page shares the
/// current key (or the last row has no `lastUpdatedAt`).
pub fn next_position(rows: &[Value], position: &Position) -> Position {
    let last = rows.last().and_then(|row| json::string(row, "lastUpdatedAt"));
    match last {
        Some(last) if position.from.as_deref() != Some(last.as_str()) => {
            let ties = rows.iter().rev().take_while(|row| json::string(row, "lastUpdatedAt").as_deref() == Some(last.as_str())).count();
            Position { from: Some(last), skip: ties }
        }
        _ => Position { from: position.from.clone(), skip: position.skip + rows.len() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stayhook_plugin_sdk::testing::{self, answer, fetch, query, sync_request};

    fn request(cursor: Option<&str>, since: Option<&str>) -> SyncRequest {
        sync_request(SyncMode::ModifiedSince).cursor(cursor).since(since).build()
    }

    fn row(id: &str, updated: &str) -> Value {
        json!({"_id": id, "status": "confirmed", "lastUpdatedAt": updated})
    }

    #[test]
    fn the_first_page_filters_by_since_and_later_pages_by_the_cursor() {
        let first = fetch(sync(&request(None, Some("2026-12-01T00:00:00Z")), &[]).unwrap());
        assert_eq!(query(&first, "filters"), Some(r#"[{"field":"lastUpdatedAt","operator":"$gte","value":"2026-12-01T00:00:00Z"}]"#));
        assert_eq!(query(&first, "skip"), Some("0"));
        assert_eq!(query(&first, "limit"), Some("100"));
        assert_eq!(query(&first, "sort"), Some("lastUpdatedAt"));
        assert!(query(&first, "fields").unwrap().contains("lastUpdatedAt"));
        let later = fetch(sync(&request(Some("2026-12-02T10:00:00.000Z|3"), Some("2026-12-01T00:00:00Z")), &[]).unwrap());
        assert_eq!(query(&later, "filters"), Some(r#"[{"field":"lastUpdatedAt","operator":"$gte","value":"2026-12-02T10:00:00.000Z"}]"#));
        assert_eq!(query(&later, "skip"), Some("3"));
        let initial = fetch(sync(&request(None, None), &[]).unwrap());
        assert_eq!(query(&initial, "filters"), None);
        assert!(matches!(sync(&request(Some("garbage"), None), &[]), Err(PluginError::BadPayload(_))));
    }

    #[test]
    fn the_cursor_is_the_last_time_and_the_rows_that_share_it() {
        let rows = [row("a", "2026-12-01T01:00:00.000Z"), row("b", "2026-12-01T02:00:00.000Z"), row("c", "2026-12-01T02:00:00.000Z")];
        let page = testing::page(
            sync(
                &request(None, Some("2026-12-01T00:00:00Z")),
                &[answer(REQUEST_ID, 200, json!({"results": rows, "count": 5, "limit": 100, "skip": 0}))],
            )
            .unwrap(),
        );
        assert_eq!(page.events.len(), 3);
        assert!(page.more);
        assert_eq!(page.next_cursor.as_deref(), Some("2026-12-01T02:00:00.000Z|2"));
    }

    #[test]
    fn a_page_sharing_the_current_time_grows_the_skip() {
        let position = Position { from: Some("2026-12-01T02:00:00.000Z".into()), skip: 2 };
        let rows = [row("d", "2026-12-01T02:00:00.000Z"), row("e", "2026-12-01T02:00:00.000Z")];
        assert_eq!(next_position(&rows, &position), Position { from: Some("2026-12-01T02:00:00.000Z".into()), skip: 4 });
        let untimed = [json!({"_id": "f"})];
        assert_eq!(next_position(&untimed, &position), Position { from: Some("2026-12-01T02:00:00.000Z".into()), skip: 3 });
    }

    #[test]
    fn the_last_page_says_no_more() {
        let position = Position { from: Some("2026-12-01T02:00:00.000Z".into()), skip: 2 };
        let last = testing::page(page(&json!({"results": [row("x", "2026-12-03T00:00:00.000Z")], "count": 3}), &position).unwrap());
        assert!(!last.more);
        assert_eq!(last.next_cursor, None);
        let empty = testing::page(page(&json!({"results": [], "count": 0}), &position).unwrap());
        assert!(!empty.more);
        // Without `count`, a page shorter than 100 rows is the last.
        let short = testing::page(page(&json!({"results": [row("y", "2026-12-03T00:00:00.000Z")]}), &position).unwrap());
        assert!(!short.more);
    }

    #[test]
    fn failures_are_refused_with_the_status() {
        for status in [429, 500, 503, 404] {
            let Err(PluginError::BadPayload(message)) = sync(&request(None, None), &[answer(REQUEST_ID, status, json!({}))]) else {
                panic!("{status}: expected a refusal")
            };
            assert!(message.contains(&format!("HTTP {status}")), "{message}");
        }
        assert!(matches!(sync(&request(None, None), &[answer(REQUEST_ID, 200, json!({"data": []}))]), Err(PluginError::BadPayload(_))));
        assert!(matches!(
            sync(&SyncRequest { mode: SyncMode::StayDateWindow, ..request(None, None) }, &[]),
            Err(PluginError::UnsupportedEvent(_))
        ));
    }
}
