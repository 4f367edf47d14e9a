//! Reconciliation through Query Reservations, `GET /reservations`
//! (https://apidoc.hostex.io/reference/query-reservations): no "changed since" filter, but
//! `order_by` sorts newest first (always descending) by `created_at` (when the stay first reached
//! Hostex) or `cancelled_at`, with `offset` / `limit` (at most 100) pages.
//!
//! - **newest-first-scan**: two scans in one pass. First by `created_at`, until a page reaches a
//!   stay created before `since` minus [`OVERLAP_SECONDS`] (new stays); then by `cancelled_at`,
//!   until a stay cancelled before that instant (cancellations). Only stays at or
//!   after the instant become events; the cancellation scan asks for `status=cancelled` only, so
//!   stays never cancelled (no `cancelled_at`) do not stand in its way. Other edits (dates, guests, prices) are not ordered by
//!   anything: a stay-date-window pass covers them. An initial sync (no `since`) is the first scan
//!   to its end: every stay, cancelled ones with their status.
//! - **stay-date-window**: the stays whose check-in is before `until` and check-out on or after
//!   `since` (`end_check_in_date` / `start_check_out_date`, both inclusive), by check-in date.
//!
//! Hostex limits the list to check-outs "within 180 days" unless `start_check_out_date` is given,
//! so every scan gives one. The cursor is `<order>:<offset>`. Hostex answers errors, rate limits
//! included, with HTTP 200 and another `error_code` (https://apidoc.hostex.io/reference/rate-limits):
//! those refuse the page like a failed status.

use serde_json::Value;
use stayhook_plugin_sdk::model::*;
use stayhook_plugin_sdk::{api, json, time};

use crate::mapping;

/// Request id of the list call.
pub const LIST: &str = "reservations";
/// Page size: Query Reservations' maximum `limit`.
pub const PAGE_SIZE: u64 = 100;
/// How far before `since` a newest-first scan still reads (clock skew between the host and Hostex).
pub const OVERLAP_SECONDS: i64 = 600;
/// `start_check_out_date` of the newest-first scans: early enough to hold every stay.
pub const EARLIEST_CHECK_OUT: &str = "2000-01-01";

/// Which ordering a page reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Newest-first scan, first part: `order_by=created_at`.
    Created,
    /// Newest-first scan, second part: `order_by=cancelled_at`.
    Cancelled,
    /// Stay-date window: `order_by=check_in_date`.
    CheckIn,
}

impl Order {
    fn word(self) -> &'static str {
        match self {
            Order::Created => "created_at",
            Order::Cancelled => "cancelled_at",
            Order::CheckIn => "check_in_date",
        }
    }

    fn parse(word: &str) -> Option<Self> {
        [Order::Created, Order::Cancelled, Order::CheckIn].into_iter().find(|order| order.word() == word)
    }
}

/// Where a stay stands against a newest-first scan's threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Age {
    Recent,
    Old,
    Unknown,
}

/// Where a page starts: an ordering and an offset in it (the cursor `<order>:<offset>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub order: Order,
    pub offset: u64,
}

impl Position {
    fn cursor(self) -> String {
        format!("{}:{}", self.order.word(), self.offset)
    }
}

/// One page of a pass.
pub fn sync(request: &SyncRequest, responses: &[ApiResponse]) -> Result<SyncOutcome, PluginError> {
    let position = position(request)?;
    let Some(answer) = api::response(responses, LIST) else { return Ok(SyncOutcome::Fetch(vec![list_request(request, position)?])) };
    let body = api::successful(answer).map_err(PluginError::BadPayload)?;
    if let Some(code) = json::number(&body, "error_code").filter(|code| *code != 200.0) {
        let message = json::string(&body, "error_msg").unwrap_or_default();
        return Err(PluginError::BadPayload(format!("the reservation list answered error_code {code}: {message}")));
    }
    let stays = json::path(&body, &["data", "reservations"])
        .and_then(Value::as_array)
        .ok_or_else(|| PluginError::BadPayload("the reservation list has no data.reservations".into()))?;
    let threshold = match (position.order, request.since.as_deref()) {
        (Order::CheckIn, _) | (_, None) => None,
        (_, Some(since)) => Some(
            time::epoch_seconds(since).ok_or_else(|| PluginError::BadPayload(format!("since {since:?} is not a timestamp")))?
                - OVERLAP_SECONDS,
        ),
    };
    // Newest first: the scan ends at the first stay before the threshold. A stay without the
    // time (where a database sorts them is not documented) is skipped, never the end.
    let age = |stay: &Value| match threshold {
        None => Age::Recent,
        Some(threshold) => match json::string(stay, position.order.word()).and_then(|at| time::epoch_seconds(&at)) {
            None => Age::Unknown,
            Some(at) if at >= threshold => Age::Recent,
            Some(_) => Age::Old,
        },
    };
    let events = stays
        .iter()
        .take_while(|stay| age(stay) != Age::Old)
        .filter(|stay| age(stay) == Age::Recent)
        .filter_map(|stay| json::string(stay, "stay_code").map(|code| Event::ReservationUpserted(mapping::reservation(stay, &code))))
        .collect();
    let reached_the_end = (stays.len() as u64) < PAGE_SIZE || stays.iter().any(|stay| age(stay) == Age::Old);
    let next = if !reached_the_end {
        Some(Position { order: position.order, offset: position.offset + stays.len() as u64 })
    } else if position.order == Order::Created && threshold.is_some() {
        Some(Position { order: Order::Cancelled, offset: 0 })
    } else {
        None
    };
    Ok(SyncOutcome::Page(SyncPage { events, more: next.is_some(), next_cursor: next.map(Position::cursor) }))
}

/// The position the request's cursor names, or the start of its mode's first scan.
pub fn position(request: &SyncRequest) -> Result<Position, PluginError> {
    let Some(cursor) = request.cursor.as_deref() else {
        let order = if request.mode == SyncMode::StayDateWindow { Order::CheckIn } else { Order::Created };
        return Ok(Position { order, offset: 0 });
    };
    cursor
        .split_once(':')
        .and_then(|(order, offset)| Some(Position { order: Order::parse(order)?, offset: offset.parse().ok()? }))
        .ok_or_else(|| PluginError::BadPayload(format!("sync cursor {cursor:?} is not <order>:<offset>")))
}

/// `GET /reservations?order_by=...&start_check_out_date=...&offset=...&limit=100`.
pub fn list_request(request: &SyncRequest, position: Position) -> Result<ApiRequest, PluginError> {
    let mut query = vec![("order_by".to_string(), position.order.word().to_string())];
    if position.order == Order::CheckIn {
        let window = |name: &str, value: Option<&str>| {
            value
                .and_then(time::date_part)
                .map(str::to_string)
                .ok_or_else(|| PluginError::BadPayload(format!("stay-date-window needs `{name}` as a date or timestamp")))
        };
        let first_day = window("since", request.since.as_deref())?;
        let end = window("until", request.until.as_deref())?;
        // `until` is exclusive, `end_check_in_date` inclusive.
        let last_day = time::add_days(&end, -1).ok_or_else(|| PluginError::BadPayload(format!("until {end:?} is not a date")))?;
        query.push(("start_check_out_date".into(), first_day));
        query.push(("end_check_in_date".into(), last_day));
    } else {
        query.push(("start_check_out_date".into(), EARLIEST_CHECK_OUT.into()));
    }
    if position.order == Order::Cancelled {
        query.push(("status".into(), "cancelled".into()));
    }
    query.push(("offset".into(), position.offset.to_string()));
    query.push(("limit".into(), PAGE_SIZE.to_string()));
    Ok(ApiRequest { query, ..api::get(LIST, "/reservations") })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use stayhook_plugin_sdk::testing::{self, fetch, page, sync_request};

    fn request(mode: SyncMode, cursor: Option<&str>, since: Option<&str>, until: Option<&str>) -> SyncRequest {
        sync_request(mode).cursor(cursor).since(since).until(until).build()
    }

    fn scan(cursor: Option<&str>) -> SyncRequest {
        request(SyncMode::NewestFirstScan, cursor, Some("2026-05-22T00:00:00Z"), None)
    }

    fn answer(stays: Vec<Value>) -> Vec<ApiResponse> {
        let body = json!({"request_id": "r", "error_code": 200, "error_msg": "Success", "data": {"reservations": stays, "total": 0}});
        vec![testing::answer(LIST, 200, body)]
    }

    fn stay(code: &str, created_at: &str, cancelled_at: Option<&str>) -> Value {
        json!({"stay_code": code, "reservation_code": code, "created_at": created_at, "cancelled_at": cancelled_at,
            "status": if cancelled_at.is_some() { "cancelled" } else { "accepted" }})
    }

    #[test]
    fn the_scan_asks_newest_first_with_an_explicit_check_out_window() {
        let query = fetch(sync(&scan(None), &[]).unwrap()).query;
        assert!(query.contains(&("order_by".into(), "created_at".into())));
        assert!(query.contains(&("start_check_out_date".into(), EARLIEST_CHECK_OUT.into())));
        assert!(query.contains(&("limit".into(), "100".into())));
        let query = fetch(sync(&scan(Some("cancelled_at:200")), &[]).unwrap()).query;
        assert!(query.contains(&("order_by".into(), "cancelled_at".into())));
        assert!(query.contains(&("status".into(), "cancelled".into())));
        assert!(query.contains(&("offset".into(), "200".into())));
    }

    #[test]
    fn the_created_scan_stops_at_the_watermark_then_the_cancelled_scan_runs() {
        let stays = vec![stay("new", "2026-05-23T00:00:00+00:00", None), stay("old", "2026-05-01T00:00:00+00:00", None)];
        let first = page(sync(&scan(None), &answer(stays)).unwrap());
        assert_eq!(first.events.len(), 1, "the stay before the watermark is not an event");
        assert!(first.more);
        assert_eq!(first.next_cursor.as_deref(), Some("cancelled_at:0"));
        let stays = vec![
            stay("no-time", "2026-01-01", None),
            stay("gone", "2026-01-01T00:00:00+00:00", Some("2026-05-22T01:00:00+00:00")),
            stay("long-gone", "2026-01-01", Some("2026-02-01T00:00:00Z")),
        ];
        let second = page(sync(&scan(first.next_cursor.as_deref()), &answer(stays)).unwrap());
        assert_eq!(second.events.len(), 1, "a stay without cancelled_at is skipped, one cancelled before the watermark ends the scan");
        let Event::ReservationUpserted(gone) = &second.events[0] else { panic!() };
        assert_eq!((gone.id.as_str(), gone.status), ("gone", ReservationStatus::Cancelled));
        assert!(!second.more);
        assert_eq!(second.next_cursor, None);
    }

    #[test]
    fn the_overlap_reaches_a_little_before_the_watermark() {
        let stays = vec![stay("skewed", "2026-05-21T23:55:00Z", None), stay("older", "2026-05-21T23:49:00Z", None)];
        let page = page(sync(&scan(None), &answer(stays)).unwrap());
        assert_eq!(page.events.len(), 1);
    }

    #[test]
    fn a_full_page_of_recent_stays_continues_at_the_next_offset() {
        let stays = (0..PAGE_SIZE).map(|n| stay(&format!("s{n}"), "2026-06-01T00:00:00Z", None)).collect();
        let page = page(sync(&scan(Some("created_at:100")), &answer(stays)).unwrap());
        assert_eq!(page.events.len(), PAGE_SIZE as usize);
        assert_eq!(page.next_cursor.as_deref(), Some("created_at:200"));
    }

    #[test]
    fn an_initial_sync_reads_the_created_scan_to_its_end_only() {
        let initial = request(SyncMode::NewestFirstScan, None, None, None);
        let stays = vec![stay("a", "2026-05-23T00:00:00Z", None), stay("b", "2020-01-01T00:00:00Z", Some("2020-02-01T00:00:00Z"))];
        let page = page(sync(&initial, &answer(stays)).unwrap());
        assert_eq!(page.events.len(), 2);
        assert!(!page.more);
    }

    #[test]
    fn a_stay_date_window_filters_check_in_and_check_out() {
        let window = request(SyncMode::StayDateWindow, None, Some("2026-06-01T00:00:00Z"), Some("2026-07-01T00:00:00Z"));
        let query = fetch(sync(&window, &[]).unwrap()).query;
        assert!(query.contains(&("order_by".into(), "check_in_date".into())));
        assert!(query.contains(&("start_check_out_date".into(), "2026-06-01".into())));
        assert!(query.contains(&("end_check_in_date".into(), "2026-06-30".into())));
        let page = page(sync(&window, &answer(vec![stay("old-but-in-window", "2020-01-01", None)])).unwrap());
        assert_eq!(page.events.len(), 1, "no watermark in a window");
        assert!(!page.more);
        let no_until = request(SyncMode::StayDateWindow, None, Some("2026-06-01"), None);
        assert!(matches!(sync(&no_until, &[]), Err(PluginError::BadPayload(_))));
    }

    #[test]
    fn errors_answered_with_http_200_refuse_the_page() {
        let body = json!({"request_id": "r", "error_code": 429, "error_msg": "Too Many Requests"});
        let responses = vec![testing::answer(LIST, 200, body)];
        let Err(PluginError::BadPayload(message)) = sync(&scan(None), &responses) else { panic!() };
        assert!(message.contains("429"), "{message}");
        let mut failed = answer(Vec::new());
        failed[0].status = 503;
        assert!(matches!(sync(&scan(None), &failed), Err(PluginError::BadPayload(message)) if message.contains("503")));
        assert!(matches!(sync(&scan(Some("booked_at:0")), &[]), Err(PluginError::BadPayload(_))));
    }
}
