//! Reconciliation (contract 0.2 `sync`, mode `stay-date-window`): Hospitable's reservation list.
//!
//! Hospitable has no "changed since" filter: `GET /v2/reservations` finds reservations by check-in
//! or check-out date (`date_query=checkin|checkout`, `start_date`, `end_date`) for the property
//! UUIDs given in `properties[]` (required). A window pass therefore runs in two phases, check-ins
//! in the window, then check-outs in it; together they list every stay that begins or ends in the
//! window (a stay that spans the whole window was listed by an earlier window holding its check-in).
//! The ends are widened by a day each side, as the docs do not say whether "after this day" and
//! "before this day" include the day itself; a reservation listed twice is harmless (the host drops
//! a record that changes nothing).
//!
//! The property UUIDs come from the account setting `properties` (comma-separated), else from
//! `GET /v2/properties?per_page=100`, asked again for each page (one more call per page).
//! Rows are `ReservationFull` with `guest`, `financials`, `properties` and `listings` included, the
//! shape of a reservation webhook's `data`, mapped by the same code. Pages: `page` and
//! `per_page=100` (the documented maximum); `meta.last_page` ends a phase.
//! Source: the "Hospitable API V2" OpenAPI document of developer.hospitable.com (`GET /reservations`,
//! `GET /properties`), as copied in
//! https://github.com/condechi/hospitable-api-docs-markdown/blob/69748f7cb7d6beb88ec2572f60a3d323535a53b3/frontend/node_modules/public%20(original).json

use serde_json::Value;
use stayhook_plugin_sdk::model::*;
use stayhook_plugin_sdk::{api, json, time};

use crate::mapping;

/// Rows asked per page: the documented maximum (`per_page`, "maximum": 100).
pub const PAGE_SIZE: u32 = 100;

/// The account setting listing the property UUIDs to reconcile (comma-separated).
pub const PROPERTIES_SETTING: &str = "properties";

/// Request ids.
const PROPERTIES: &str = "properties";
const RESERVATIONS: &str = "reservations";

/// Which date a phase filters by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    CheckIn,
    CheckOut,
}

impl Phase {
    fn query_value(self) -> &'static str {
        match self {
            Phase::CheckIn => "checkin",
            Phase::CheckOut => "checkout",
        }
    }
}

/// Where a pass is: the phase and the page (from 1). Cursor text `checkin:<page>` / `checkout:<page>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub phase: Phase,
    pub page: u32,
}

impl Position {
    pub fn parse(cursor: Option<&str>) -> Result<Position, PluginError> {
        let Some(cursor) = cursor else {
            return Ok(Position { phase: Phase::CheckIn, page: 1 });
        };
        let bad = || PluginError::BadPayload(format!("cursor {cursor:?} is not checkin:<page> or checkout:<page>"));
        let (phase, page) = cursor.split_once(':').ok_or_else(bad)?;
        let phase = match phase {
            "checkin" => Phase::CheckIn,
            "checkout" => Phase::CheckOut,
            _ => return Err(bad()),
        };
        let page = page.parse().ok().filter(|page| *page >= 1).ok_or_else(bad)?;
        Ok(Position { phase, page })
    }

    pub fn cursor(self) -> String {
        format!("{}:{}", self.phase.query_value(), self.page)
    }
}

/// One step of a sync pass.
pub fn sync(request: &SyncRequest, responses: &[ApiResponse]) -> Result<SyncOutcome, PluginError> {
    if request.mode != SyncMode::StayDateWindow {
        return Err(PluginError::UnsupportedEvent("Hospitable lists reservations by stay dates only (stay-date-window)".into()));
    }
    let position = Position::parse(request.cursor.as_deref())?;
    let (first, last) = window(request.since.as_deref(), request.until.as_deref())?;
    let properties = match configured_properties(&request.account.settings) {
        Some(properties) => properties,
        None => match api::response(responses, PROPERTIES) {
            None => return Ok(SyncOutcome::Fetch(vec![properties_request()])),
            Some(response) => property_ids(&api::successful(response).map_err(PluginError::BadPayload)?)?,
        },
    };
    if properties.is_empty() {
        return Ok(SyncOutcome::Page(SyncPage { events: Vec::new(), next_cursor: None, more: false }));
    }
    let Some(response) = api::response(responses, RESERVATIONS) else {
        return Ok(SyncOutcome::Fetch(vec![reservations_request(&properties, position, &first, &last)]));
    };
    let answer = api::successful(response).map_err(PluginError::BadPayload)?;
    page(&answer, position)
}

/// The UUIDs of the `properties` setting, if the account has it.
pub fn configured_properties(settings: &[(String, String)]) -> Option<Vec<String>> {
    let (_, value) = settings.iter().find(|(name, _)| name == PROPERTIES_SETTING)?;
    Some(value.split(',').map(str::trim).filter(|id| !id.is_empty()).map(String::from).collect())
}

/// `GET /v2/properties?per_page=100`.
pub fn properties_request() -> ApiRequest {
    let mut request = api::get(PROPERTIES, "/v2/properties");
    request.query.push(("per_page".into(), PAGE_SIZE.to_string()));
    request
}

/// The property UUIDs of a `GET /v2/properties` answer; refused when the account has more than
/// one page of them (the `properties` setting is then needed).
pub fn property_ids(answer: &Value) -> Result<Vec<String>, PluginError> {
    let rows = answer
        .get("data")
        .and_then(Value::as_array)
        .ok_or_else(|| PluginError::BadPayload("the properties answer has no `data` array".into()))?;
    let last_page = answer.get("meta").and_then(|meta| json::count(meta, "last_page")).unwrap_or(1);
    if last_page > 1 {
        return Err(PluginError::BadPayload(format!(
            "the account has more than {PAGE_SIZE} properties: list the ones to reconcile in the account setting `{PROPERTIES_SETTING}`"
        )));
    }
    Ok(rows.iter().filter_map(|row| json::string(row, "id")).collect())
}

/// The window's ends as Hospitable's dates, a day wider each side: `since` − 1 day and `until`
/// (the window's exclusive end, i.e. its last day + 1).
pub fn window(since: Option<&str>, until: Option<&str>) -> Result<(String, String), PluginError> {
    let first = since
        .and_then(time::date_part)
        .and_then(|since| time::add_days(since, -1))
        .ok_or_else(|| PluginError::BadPayload("a stay-date window needs `since`".into()))?;
    let last = until
        .and_then(time::date_part)
        .map(String::from)
        .ok_or_else(|| PluginError::BadPayload("a stay-date window needs `until`".into()))?;
    Ok((first, last))
}

/// `GET /v2/reservations?properties[]=...&date_query=...&start_date=...&end_date=...&include=...`.
pub fn reservations_request(properties: &[String], position: Position, first: &str, last: &str) -> ApiRequest {
    let mut request = api::get(RESERVATIONS, "/v2/reservations");
    request.query.extend(properties.iter().map(|id| ("properties[]".to_string(), id.clone())));
    request.query.extend(
        [
            ("date_query", position.phase.query_value().to_string()),
            ("start_date", first.to_string()),
            ("end_date", last.to_string()),
            ("include", "guest,financials,properties,listings".to_string()),
            ("per_page", PAGE_SIZE.to_string()),
            ("page", position.page.to_string()),
        ]
        .map(|(name, value)| (name.to_string(), value)),
    );
    request
}

/// One page of `{"data": [...], "links", "meta": {"current_page", "last_page", ...}}`. After the
/// last page of the check-in phase comes the check-out phase's first; after its last, the end.
pub fn page(answer: &Value, position: Position) -> Result<SyncOutcome, PluginError> {
    let rows = answer
        .get("data")
        .and_then(Value::as_array)
        .ok_or_else(|| PluginError::BadPayload("the reservations answer has no `data` array".into()))?;
    let events = rows.iter().map(|row| mapping::reservation(row).map(Event::ReservationUpserted)).collect::<Result<Vec<_>, _>>()?;
    let meta = answer.get("meta").cloned().unwrap_or(Value::Null);
    let phase_continues = match json::count(&meta, "last_page") {
        Some(last_page) => position.page < last_page,
        None => rows.len() >= PAGE_SIZE as usize,
    };
    let next = if phase_continues {
        Some(Position { page: position.page + 1, ..position })
    } else if position.phase == Phase::CheckIn {
        Some(Position { phase: Phase::CheckOut, page: 1 })
    } else {
        None
    };
    Ok(SyncOutcome::Page(SyncPage { events, more: next.is_some(), next_cursor: next.map(Position::cursor) }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use stayhook_plugin_sdk::testing::{self, answer, fetch, query_all, sync_request};

    fn request(cursor: Option<&str>, settings: Vec<(String, String)>) -> SyncRequest {
        sync_request(SyncMode::StayDateWindow).settings(settings).cursor(cursor).since("2026-12-01").until("2027-01-01").build()
    }

    #[test]
    fn properties_come_from_the_setting_or_the_api() {
        let set = vec![(PROPERTIES_SETTING.to_string(), "p1, p2".to_string())];
        let list = fetch(sync(&request(None, set), &[]).unwrap());
        assert_eq!(list.path, "/v2/reservations");
        assert_eq!(query_all(&list, "properties[]"), ["p1", "p2"]);
        assert_eq!(query_all(&list, "date_query"), ["checkin"]);
        assert_eq!(query_all(&list, "start_date"), ["2026-11-30"]);
        assert_eq!(query_all(&list, "end_date"), ["2027-01-01"]);
        assert_eq!(query_all(&list, "page"), ["1"]);
        let asked = fetch(sync(&request(None, Vec::new()), &[]).unwrap());
        assert_eq!(asked.path, "/v2/properties");
        let properties = answer(PROPERTIES, 200, json!({"data": [{"id": "u1"}, {"id": "u2"}], "meta": {"last_page": 1}}));
        let list = fetch(sync(&request(Some("checkout:2"), Vec::new()), &[properties]).unwrap());
        assert_eq!(query_all(&list, "properties[]"), ["u1", "u2"]);
        assert_eq!(query_all(&list, "date_query"), ["checkout"]);
        assert_eq!(query_all(&list, "page"), ["2"]);
        let many = answer(PROPERTIES, 200, json!({"data": [{"id": "u1"}], "meta": {"last_page": 3}}));
        assert!(
            matches!(sync(&request(None, Vec::new()), &[many]), Err(PluginError::BadPayload(message)) if message.contains("properties"))
        );
        let none = answer(PROPERTIES, 200, json!({"data": [], "meta": {"last_page": 1}}));
        assert!(!testing::page(sync(&request(None, Vec::new()), &[none]).unwrap()).more);
    }

    #[test]
    fn check_ins_then_check_outs_then_the_end() {
        let at = |phase, page| Position { phase, page };
        let more = testing::page(page(&json!({"data": [], "meta": {"current_page": 1, "last_page": 2}}), at(Phase::CheckIn, 1)).unwrap());
        assert_eq!(more.next_cursor.as_deref(), Some("checkin:2"));
        let switch = testing::page(page(&json!({"data": [], "meta": {"current_page": 2, "last_page": 2}}), at(Phase::CheckIn, 2)).unwrap());
        assert_eq!(switch.next_cursor.as_deref(), Some("checkout:1"));
        assert!(switch.more);
        let end = testing::page(page(&json!({"data": [], "meta": {"current_page": 1, "last_page": 1}}), at(Phase::CheckOut, 1)).unwrap());
        assert!(!end.more);
        assert_eq!(end.next_cursor, None);
        assert_eq!(Position::parse(Some("checkout:3")).unwrap(), at(Phase::CheckOut, 3));
        assert!(Position::parse(Some("checkout:0")).is_err());
        assert!(Position::parse(Some("7")).is_err());
    }

    #[test]
    fn refusals() {
        let set = vec![(PROPERTIES_SETTING.to_string(), "p1".to_string())];
        for status in [429, 500, 401] {
            let Err(PluginError::BadPayload(message)) = sync(&request(None, set.clone()), &[answer(RESERVATIONS, status, json!({}))])
            else {
                panic!("{status}")
            };
            assert!(message.contains(&format!("HTTP {status}")), "{message}");
        }
        let no_until = SyncRequest { until: None, ..request(None, set.clone()) };
        assert!(matches!(sync(&no_until, &[]), Err(PluginError::BadPayload(_))));
        let modified = SyncRequest { mode: SyncMode::ModifiedSince, ..request(None, set) };
        assert!(matches!(sync(&modified, &[]), Err(PluginError::UnsupportedEvent(_))));
    }
}
