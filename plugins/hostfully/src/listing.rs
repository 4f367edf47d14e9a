//! Reconciliation (contract 0.2 `sync`, mode `stay-date-window`): Hostfully's lead list.
//!
//! No "updated since" filter is known for Hostfully's leads, so only stay dates are filtered:
//! `GET /api/v3.2/leads?agencyUid=<agency>&checkOutFrom=<first day>&checkInTo=<last day>&_limit=100`
//! lists the leads whose stay overlaps the window (check-out on or after its first day, check-in
//! on or before its last). Pages follow `_paging._nextCursor` (`_cursor` on the next request);
//! no cursor, an empty page, or a cursor equal to the one just used ends the pass. The rows are
//! the lead objects the webhook path fetches from the same endpoint (`leadUids=`), mapped by the
//! same code. Needs the account setting `agencyUid`, as registration does.
//! Evidence: third-party code that records Hostfully's live answers (the lead list answer
//! `{leads, _metadata, _paging: {_limit, _nextCursor}}` and the parameters); Hostfully's own API
//! reference pages were not captured (see the README's "Sync").

use serde_json::Value;
use stayhook_plugin_sdk::model::*;
use stayhook_plugin_sdk::{api, json, time};

use crate::mapping;

/// Leads asked per page.
pub const PAGE_SIZE: u32 = 100;

/// The account setting naming the Hostfully agency.
pub const AGENCY_SETTING: &str = "agencyUid";

/// The id of the list request.
const REQUEST_ID: &str = "leads";

/// One step of a sync pass.
pub fn sync(request: &SyncRequest, responses: &[ApiResponse]) -> Result<SyncOutcome, PluginError> {
    if request.mode != SyncMode::StayDateWindow {
        return Err(PluginError::UnsupportedEvent("Hostfully lists leads by stay dates only (stay-date-window)".into()));
    }
    let agency = request
        .account
        .settings
        .iter()
        .find(|(name, _)| name == AGENCY_SETTING)
        .map(|(_, value)| value.trim().to_string())
        .filter(|value| !value.is_empty())
        .ok_or_else(|| {
            PluginError::BadPayload(format!("set the account setting `{AGENCY_SETTING}` (the Hostfully agency) to reconcile"))
        })?;
    let Some(response) = api::response(responses, REQUEST_ID) else {
        let (first, last) = window(request.since.as_deref(), request.until.as_deref())?;
        return Ok(SyncOutcome::Fetch(vec![list_request(&agency, &first, &last, request.cursor.as_deref())]));
    };
    let answer = api::successful(response).map_err(PluginError::BadPayload)?;
    page(&answer, request.cursor.as_deref())
}

/// The window's first and last day ("YYYY-MM-DD") from `since` and the exclusive `until`.
pub fn window(since: Option<&str>, until: Option<&str>) -> Result<(String, String), PluginError> {
    let first = since.and_then(time::date_part).ok_or_else(|| PluginError::BadPayload("a stay-date window needs `since`".into()))?;
    let last = until
        .and_then(time::date_part)
        .and_then(|until| time::add_days(until, -1))
        .ok_or_else(|| PluginError::BadPayload("a stay-date window needs `until`".into()))?;
    Ok((first.to_string(), last))
}

/// `GET /api/v3.2/leads?agencyUid=...&checkOutFrom=...&checkInTo=...&_limit=100[&_cursor=...]`.
pub fn list_request(agency: &str, first: &str, last: &str, cursor: Option<&str>) -> ApiRequest {
    let mut query: Vec<(String, String)> = [
        ("agencyUid", agency.to_string()),
        ("checkOutFrom", first.to_string()),
        ("checkInTo", last.to_string()),
        ("_limit", PAGE_SIZE.to_string()),
    ]
    .map(|(name, value)| (name.to_string(), value))
    .to_vec();
    if let Some(cursor) = cursor {
        query.push(("_cursor".into(), cursor.to_string()));
    }
    ApiRequest { query, ..api::get(REQUEST_ID, "/api/v3.2/leads") }
}

/// One page of `{"leads": [...], "_metadata", "_paging": {"_nextCursor"}}`.
pub fn page(answer: &Value, cursor: Option<&str>) -> Result<SyncOutcome, PluginError> {
    if let Some(message) = json::string(answer, "apiErrorMessage") {
        return Err(PluginError::BadPayload(format!("Hostfully answered: {message}")));
    }
    let leads = answer
        .get("leads")
        .and_then(Value::as_array)
        .ok_or_else(|| PluginError::BadPayload("the lead list has no `leads` array".into()))?;
    let events = leads
        .iter()
        .map(|lead| {
            let uid = json::string(lead, "uid").ok_or_else(|| PluginError::BadPayload("a listed lead has no `uid`".into()))?;
            Ok(Event::ReservationUpserted(mapping::reservation(lead, &uid)))
        })
        .collect::<Result<Vec<_>, PluginError>>()?;
    let next = answer
        .get("_paging")
        .and_then(|paging| json::string(paging, "_nextCursor"))
        .filter(|next| !leads.is_empty() && Some(next.as_str()) != cursor);
    Ok(SyncOutcome::Page(SyncPage { events, more: next.is_some(), next_cursor: next }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use stayhook_plugin_sdk::testing::{self, answer, fetch, sync_request};

    fn request(cursor: Option<&str>, settings: Vec<(String, String)>) -> SyncRequest {
        sync_request(SyncMode::StayDateWindow).settings(settings).cursor(cursor).since("2026-04-01").until("2026-05-01").build()
    }

    fn agency() -> Vec<(String, String)> {
        vec![(AGENCY_SETTING.into(), "ag-1".into())]
    }

    #[test]
    fn the_request_filters_the_window_and_follows_the_cursor() {
        let list = fetch(sync(&request(None, agency()), &[]).unwrap());
        let query = &list.query;
        assert_eq!(list.path, "/api/v3.2/leads");
        for pair in [("agencyUid", "ag-1"), ("checkOutFrom", "2026-04-01"), ("checkInTo", "2026-04-30"), ("_limit", "100")] {
            assert!(query.contains(&(pair.0.to_string(), pair.1.to_string())), "{pair:?}");
        }
        assert!(!query.iter().any(|(name, _)| name == "_cursor"));
        let next = fetch(sync(&request(Some("abc"), agency()), &[]).unwrap());
        assert!(next.query.contains(&("_cursor".to_string(), "abc".to_string())));
        assert!(matches!(sync(&request(None, Vec::new()), &[]), Err(PluginError::BadPayload(message)) if message.contains("agencyUid")));
    }

    #[test]
    fn the_next_cursor_decides_more() {
        let lead = json!({"uid": "l1", "status": "BOOKED"});
        let more = testing::page(page(&json!({"leads": [lead], "_paging": {"_limit": 100, "_nextCursor": "c2"}}), None).unwrap());
        assert!(more.more);
        assert_eq!(more.next_cursor.as_deref(), Some("c2"));
        let last = testing::page(page(&json!({"leads": [lead], "_paging": {"_limit": 100}}), Some("c2")).unwrap());
        assert!(!last.more);
        let empty = testing::page(page(&json!({"leads": [], "_paging": {"_nextCursor": "c3"}}), Some("c2")).unwrap());
        assert!(!empty.more);
        let repeated = testing::page(page(&json!({"leads": [lead], "_paging": {"_nextCursor": "c2"}}), Some("c2")).unwrap());
        assert!(!repeated.more, "a cursor that does not move ends the pass");
    }

    #[test]
    fn refusals() {
        for status in [429, 500, 401] {
            let Err(PluginError::BadPayload(message)) = sync(&request(None, agency()), &[answer(REQUEST_ID, status, json!({}))]) else {
                panic!("{status}")
            };
            assert!(message.contains(&format!("HTTP {status}")), "{message}");
        }
        let refused = sync(&request(None, agency()), &[answer(REQUEST_ID, 200, json!({"apiErrorMessage": "Agency not found"}))]);
        assert!(matches!(refused, Err(PluginError::BadPayload(message)) if message.contains("Agency not found")));
        assert!(matches!(
            sync(&SyncRequest { mode: SyncMode::ModifiedSince, ..request(None, agency()) }, &[]),
            Err(PluginError::UnsupportedEvent(_))
        ));
    }
}
