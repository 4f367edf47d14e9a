//! Reconciliation (contract 0.2 `sync`, mode `modified-since`): Cloudbeds'
//! `getReservationsWithRateDetails` list.
//!
//! `GET /getReservationsWithRateDetails?modifiedFrom=<since - 1 day>` ("based on modification
//! date"). Of Cloudbeds' two lists this one is used because its rows carry what the
//! `getReservation` answer of a webhook carries (`total`, `estimatedArrivalTime`, the rooms with
//! their guests, the guest list), so a listed reservation that changed nothing reads exactly as
//! its stored state; `getReservations` rows have no total and no arrival time. It also lists
//! deleted reservations (`includeDeleted`, `isDeleted`), which become `reservation-deleted`.
//! The filter's time zone is not documented (Cloudbeds' date-times are "YYYY-MM-DD HH:MM:SS"
//! without a zone; the rows carry `dateModified` and a separate `dateModifiedUTC`), so the filter
//! starts [`OVERLAP_DAYS`] before `since`: offsets reach ±14 h.
//!
//! Pages: `pageNumber` (from 1) and `pageSize=100` (the documented maximum, or the account's
//! `syncPageSize`); the answer's `total` says whether more pages follow.
//! Source: https://github.com/cloudbeds/openapi-specs/blob/f6c4b9a/src/pms-v1.3-openapi.yaml
//! (`/getReservationsWithRateDetails`, `GetReservationsWithRateDetailsResponse`).

use serde_json::{Map, Value};
use stayhook_plugin_sdk::model::*;
use stayhook_plugin_sdk::{api, json, time};

use crate::mapping;

/// Rows asked per page: the documented maximum ("Results page size. Max = 100").
pub const PAGE_SIZE: u64 = 100;

/// The account setting that asks for smaller pages (1 to 100), for accounts whose answers time out.
pub const PAGE_SIZE_SETTING: &str = "syncPageSize";

/// Days before `since` the modification filter starts (the filter's zone is not documented).
pub const OVERLAP_DAYS: i64 = 1;

/// The id of the list request.
const REQUEST_ID: &str = "reservations";

/// One step of a sync pass: ask for the page at the cursor, then turn its answer into a page.
pub fn sync(request: &SyncRequest, responses: &[ApiResponse]) -> Result<SyncOutcome, PluginError> {
    let page_number: u64 = match &request.cursor {
        None => 1,
        Some(cursor) => cursor
            .parse()
            .ok()
            .filter(|page| *page >= 1)
            .ok_or_else(|| PluginError::BadPayload(format!("cursor {cursor:?} is not a page number")))?,
    };
    let Some(response) = api::response(responses, REQUEST_ID) else {
        return Ok(SyncOutcome::Fetch(vec![list_request(request, page_number)?]));
    };
    let answer = api::successful(response).map_err(PluginError::BadPayload)?;
    page(&answer, page_number, page_size(&request.account.settings))
}

/// The page size: the account's `syncPageSize` (clamped to 1..=100), else 100.
pub fn page_size(settings: &[(String, String)]) -> u64 {
    settings
        .iter()
        .find(|(name, _)| name == PAGE_SIZE_SETTING)
        .and_then(|(_, value)| value.trim().parse::<u64>().ok())
        .map_or(PAGE_SIZE, |size| size.clamp(1, PAGE_SIZE))
}

/// `GET /getReservationsWithRateDetails` from `modifiedFrom` (none on an initial sync), the
/// account's `propertyID` setting (when set), the details a row needs, and the page.
pub fn list_request(request: &SyncRequest, page_number: u64) -> Result<ApiRequest, PluginError> {
    if request.mode != SyncMode::ModifiedSince {
        return Err(PluginError::UnsupportedEvent("Cloudbeds is reconciled by modification date only (modified-since)".into()));
    }
    let mut query: Vec<(String, String)> = Vec::new();
    if let Some(since) = &request.since {
        let from = modified_from(since).ok_or_else(|| PluginError::BadPayload(format!("since {since:?} is not a timestamp")))?;
        query.push(("modifiedFrom".into(), from));
        // Deletions matter to a pass that follows webhooks; an initial sync lists what exists.
        query.push(("includeDeleted".into(), "true".into()));
    }
    if let Some((_, property)) = request.account.settings.iter().find(|(name, _)| name == "propertyID") {
        query.push(("propertyID".into(), property.trim().to_string()));
    }
    query.extend(
        [
            ("includeGuestsDetails", "true".to_string()),
            ("includeCustomFields", "true".to_string()),
            ("pageNumber", page_number.to_string()),
            ("pageSize", page_size(&request.account.settings).to_string()),
        ]
        .map(|(name, value)| (name.to_string(), value)),
    );
    Ok(ApiRequest { query, ..api::get(REQUEST_ID, "/getReservationsWithRateDetails") })
}

/// `modifiedFrom` for a pass's `since`: [`OVERLAP_DAYS`] earlier, as "YYYY-MM-DD HH:MM:SS" (the
/// tech specs' date-time form), the clock as `since` gives it. `None` when `since` is not a
/// timestamp.
pub fn modified_from(since: &str) -> Option<String> {
    if !time::is_timestamp(since) {
        return None;
    }
    let date = time::add_days(time::date_part(since)?, -OVERLAP_DAYS)?;
    let clock = since.get(11..19).filter(|clock| clock.len() == 8 && clock.as_bytes()[2] == b':').unwrap_or("00:00:00");
    Some(format!("{date} {clock}"))
}

/// One page from `{"success", "data": [...], "count", "total"}`: more pages follow while the
/// rows up to this page stay below `total` (or, without `total`, while pages come back full).
pub fn page(answer: &Value, page_number: u64, page_size: u64) -> Result<SyncOutcome, PluginError> {
    if json::flag(answer, "success") == Some(false) {
        let message = json::string(answer, "message").unwrap_or_else(|| "success false".into());
        return Err(PluginError::BadPayload(format!("getReservationsWithRateDetails answered: {message}")));
    }
    let rows = answer
        .get("data")
        .and_then(Value::as_array)
        .ok_or_else(|| PluginError::BadPayload("the getReservationsWithRateDetails answer has no `data` array".into()))?;
    let events = rows
        .iter()
        .map(|row| event(row).ok_or_else(|| PluginError::BadPayload("a listed reservation has no `reservationID`".into())))
        .collect::<Result<Vec<_>, _>>()?;
    let seen = (page_number - 1) * page_size + rows.len() as u64;
    let more = !rows.is_empty()
        && match json::count(answer, "total") {
            Some(total) => seen < u64::from(total),
            None => rows.len() as u64 >= page_size,
        };
    Ok(SyncOutcome::Page(SyncPage { events, next_cursor: more.then(|| (page_number + 1).to_string()), more }))
}

/// One listed row → `reservation-deleted` when `isDeleted`, else `reservation-upserted`.
pub fn event(row: &Value) -> Option<Event> {
    let id = json::string(row, "reservationID")?;
    if json::flag(row, "isDeleted") == Some(true) {
        return Some(Event::ReservationDeleted(id));
    }
    Some(Event::ReservationUpserted(mapping::reservation(&as_get_reservation(row), &id)))
}

/// A `getReservationsWithRateDetails` row in the shape of `getReservation`'s `data`, so the
/// webhook's mapping reads it: `reservationCheckIn`/`reservationCheckOut` → `startDate`/`endDate`
/// (their date part), `source.name` (else `sourceName`) → `source`, `rooms` → `assigned` (each
/// with its `adults` and `children`); every other field has the same name in both.
pub fn as_get_reservation(row: &Value) -> Value {
    let mut data: Map<String, Value> = row.as_object().cloned().unwrap_or_default();
    for (from, to) in [("reservationCheckIn", "startDate"), ("reservationCheckOut", "endDate")] {
        if let Some(date) = json::string(row, from).as_deref().and_then(time::date_part) {
            data.insert(to.into(), Value::String(date.to_string()));
        }
    }
    let source = row.get("source").and_then(|source| json::string(source, "name")).or_else(|| json::string(row, "sourceName"));
    data.insert("source".into(), source.map_or(Value::Null, Value::String));
    data.insert("assigned".into(), row.get("rooms").cloned().unwrap_or(Value::Array(Vec::new())));
    Value::Object(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use stayhook_plugin_sdk::testing::{self, answer, fetch, query, sync_request};

    fn request(mode: SyncMode, cursor: Option<&str>, since: Option<&str>, until: Option<&str>) -> SyncRequest {
        sync_request(mode).setting("propertyID", "7").cursor(cursor).since(since).until(until).build()
    }

    #[test]
    fn modified_since_starts_a_day_early_and_pages_by_number() {
        let first = fetch(sync(&request(SyncMode::ModifiedSince, None, Some("2026-12-01T10:30:00.000Z"), None), &[]).unwrap());
        assert_eq!(first.path, "/getReservationsWithRateDetails");
        assert_eq!(query(&first, "modifiedFrom"), Some("2026-11-30 10:30:00"));
        assert_eq!(query(&first, "includeDeleted"), Some("true"));
        assert_eq!(query(&first, "pageNumber"), Some("1"));
        assert_eq!(query(&first, "pageSize"), Some("100"));
        assert_eq!(query(&first, "propertyID"), Some("7"));
        assert_eq!(query(&first, "includeGuestsDetails"), Some("true"));
        let third = fetch(sync(&request(SyncMode::ModifiedSince, Some("3"), Some("2026-12-01T10:30:00Z"), None), &[]).unwrap());
        assert_eq!(query(&third, "pageNumber"), Some("3"));
        let initial = fetch(sync(&request(SyncMode::ModifiedSince, None, None, None), &[]).unwrap());
        assert_eq!(query(&initial, "modifiedFrom"), None);
        assert_eq!(query(&initial, "includeDeleted"), None);
    }

    #[test]
    fn the_page_size_setting_is_clamped() {
        assert_eq!(page_size(&[]), 100);
        assert_eq!(page_size(&[(PAGE_SIZE_SETTING.into(), "25".into())]), 25);
        assert_eq!(page_size(&[(PAGE_SIZE_SETTING.into(), "500".into())]), 100);
        assert_eq!(page_size(&[(PAGE_SIZE_SETTING.into(), "0".into())]), 1);
        assert_eq!(page_size(&[(PAGE_SIZE_SETTING.into(), "many".into())]), 100);
    }

    #[test]
    fn total_decides_whether_more_pages_follow() {
        let rows: Vec<Value> = (0..100).map(|n| json!({"reservationID": n.to_string(), "status": "confirmed"})).collect();
        let full = testing::page(page(&json!({"success": true, "data": rows, "count": 100, "total": 150}), 1, 100).unwrap());
        assert!(full.more);
        assert_eq!(full.next_cursor.as_deref(), Some("2"));
        let last =
            testing::page(page(&json!({"success": true, "data": [{"reservationID": "x"}], "count": 1, "total": 101}), 2, 100).unwrap());
        assert!(!last.more);
        assert_eq!(last.next_cursor, None);
        let short = testing::page(page(&json!({"success": true, "data": [{"reservationID": "y"}]}), 1, 100).unwrap());
        assert!(!short.more);
        let empty = testing::page(page(&json!({"success": true, "data": [], "count": 0, "total": 0}), 1, 100).unwrap());
        assert!(!empty.more && empty.events.is_empty());
    }

    #[test]
    fn a_row_maps_like_a_get_reservation_answer() {
        let row = json!({
            "reservationID": "r1", "reservationCheckIn": "2026-12-10 00:00:00", "reservationCheckOut": "2026-12-12",
            "source": {"name": "Website", "sourceID": "s-1"}, "sourceName": "Website (old)", "status": "canceled", "total": 129.0,
            "estimatedArrivalTime": "15:00", "rooms": [{"adults": "1"}, {"adults": "2", "children": "1"}]
        });
        let Some(Event::ReservationUpserted(listed)) = event(&row) else { panic!("an upsert") };
        assert_eq!(listed.source.as_deref(), Some("Website"));
        assert_eq!((listed.arrival_date.as_deref(), listed.departure_date.as_deref()), (Some("2026-12-10"), Some("2026-12-12")));
        assert_eq!((listed.number_of_adults, listed.number_of_children, listed.number_of_guests), (Some(3), Some(1), Some(4)));
        assert_eq!(listed.status, ReservationStatus::Cancelled);
        assert_eq!(listed.total_price, Some(129.0));
        assert_eq!(listed.arrival_estimated_time.as_deref(), Some("2026-12-10 15:00:00"));
        let Some(Event::ReservationUpserted(by_name)) = event(&json!({"reservationID": "r2", "sourceName": "Booking.com"})) else {
            panic!()
        };
        assert_eq!(by_name.source.as_deref(), Some("Booking.com"));
        assert!(matches!(event(&json!({"reservationID": "r3", "isDeleted": true})), Some(Event::ReservationDeleted(id)) if id == "r3"));
        assert!(event(&json!({"status": "confirmed"})).is_none());
    }

    #[test]
    fn failures_are_refused() {
        let plain = request(SyncMode::ModifiedSince, None, None, None);
        for status in [429, 500, 503, 401] {
            let Err(PluginError::BadPayload(message)) = sync(&plain, &[answer(REQUEST_ID, status, json!({}))]) else { panic!("{status}") };
            assert!(message.contains(&format!("HTTP {status}")), "{message}");
        }
        let Err(PluginError::BadPayload(message)) =
            sync(&plain, &[answer(REQUEST_ID, 200, json!({"success": false, "message": "Invalid propertyID"}))])
        else {
            panic!("success false")
        };
        assert!(message.contains("Invalid propertyID"));
        assert!(matches!(sync(&request(SyncMode::ModifiedSince, Some("x"), None, None), &[]), Err(PluginError::BadPayload(_))));
        assert!(matches!(sync(&request(SyncMode::ModifiedSince, Some("0"), None, None), &[]), Err(PluginError::BadPayload(_))));
        assert!(matches!(sync(&request(SyncMode::NewestFirstScan, None, None, None), &[]), Err(PluginError::UnsupportedEvent(_))));
        assert!(matches!(sync(&request(SyncMode::StayDateWindow, None, None, None), &[]), Err(PluginError::UnsupportedEvent(_))));
    }
}
