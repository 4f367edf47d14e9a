//! Reconciliation by stay dates (stay-date-window): Uplisting has no "changed since" filter and
//! lists bookings per property, `GET /bookings/{property_id}?from=<date>&to=<date>&page=<n>`
//! (third-party clients of the API; Uplisting's public documentation,
//! https://documenter.getpostman.com/view/1320372/SWTBfdW6, describes the API as a "snapshot" to
//! be kept current by webhooks).
//!
//! A pass first lists the account's properties, `GET /properties?page=<n>` (Pipedream's Uplisting
//! app reads `data[].id`), page after page until an empty `data` (no end marker is documented),
//! then each property's bookings in the window, page after page while `meta.total_pages` says
//! more follow (or, without it, until an empty page). Each sync page is one API call, which keeps
//! within Uplisting's 15 requests a minute per property. The cursor carries the step and the ids
//! still to read: `properties:<page>:<ids found>` or `bookings:<page>:<property id>,<ids after it>`.

use serde_json::Value;
use stayhook_plugin_sdk::model::*;
use stayhook_plugin_sdk::{api, json, log, time};

use crate::mapping;

/// Request id of the property list.
pub const PROPERTIES: &str = "properties";
/// Request id of a property's booking list.
pub const BOOKINGS: &str = "bookings";

/// Where a pass stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Listing the properties: the page to ask for and the property ids found so far.
    Properties { page: u64, ids: Vec<String> },
    /// Listing the bookings of `ids[0]`: the page to ask for, and the properties still to read.
    Bookings { page: u64, ids: Vec<String> },
}

impl Step {
    /// The opaque cursor of this step.
    pub fn cursor(&self) -> String {
        match self {
            Step::Properties { page, ids } => format!("properties:{page}:{}", ids.join(",")),
            Step::Bookings { page, ids } => format!("bookings:{page}:{}", ids.join(",")),
        }
    }

    /// The step a cursor names (none: the start of a pass).
    pub fn parse(cursor: Option<&str>) -> Result<Self, PluginError> {
        let Some(cursor) = cursor else { return Ok(Step::Properties { page: 1, ids: Vec::new() }) };
        let bad = || PluginError::BadPayload(format!("sync cursor {cursor:?} is not an Uplisting pass position"));
        let mut parts = cursor.splitn(3, ':');
        let (kind, page, ids) = (parts.next().ok_or_else(bad)?, parts.next().ok_or_else(bad)?, parts.next().ok_or_else(bad)?);
        let page = page.parse().ok().filter(|page| *page >= 1).ok_or_else(bad)?;
        let ids: Vec<String> = ids.split(',').filter(|id| !id.is_empty()).map(str::to_string).collect();
        match kind {
            "properties" => Ok(Step::Properties { page, ids }),
            "bookings" if !ids.is_empty() => Ok(Step::Bookings { page, ids }),
            _ => Err(bad()),
        }
    }
}

/// One page of a stay-date-window pass.
pub fn sync(request: &SyncRequest, responses: &[ApiResponse]) -> Result<SyncOutcome, PluginError> {
    if request.mode != SyncMode::StayDateWindow {
        return Err(PluginError::UnsupportedEvent(format!("sync mode {:?}: Uplisting lists bookings by stay dates only", request.mode)));
    }
    let (from, to) = window(request)?;
    match Step::parse(request.cursor.as_deref())? {
        Step::Properties { page, mut ids } => {
            let Some(answer) = api::response(responses, PROPERTIES) else {
                return Ok(SyncOutcome::Fetch(vec![ApiRequest {
                    query: vec![("page".into(), page.to_string())],
                    ..api::get(PROPERTIES, "/properties")
                }]));
            };
            let body = api::successful(answer).map_err(PluginError::BadPayload)?;
            let found = body
                .get("data")
                .and_then(Value::as_array)
                .ok_or_else(|| PluginError::BadPayload("the property list has no `data` array".into()))?;
            let next = if found.is_empty() {
                // The list is over: read the first property's bookings, or end a pass with none.
                (!ids.is_empty()).then_some(Step::Bookings { page: 1, ids })
            } else {
                ids.extend(found.iter().filter_map(|property| json::string(property, "id")).filter(|id| !id.contains([',', ':', '/'])));
                Some(Step::Properties { page: page + 1, ids })
            };
            Ok(page_of(Vec::new(), next))
        }
        Step::Bookings { page, ids } => {
            let Some(answer) = api::response(responses, BOOKINGS) else {
                let query = vec![("from".into(), from), ("to".into(), to), ("page".into(), page.to_string())];
                return Ok(SyncOutcome::Fetch(vec![ApiRequest { query, ..api::get(BOOKINGS, format!("/bookings/{}", ids[0])) }]));
            };
            let body = api::successful(answer).map_err(PluginError::BadPayload)?;
            let bookings = body
                .get("bookings")
                .and_then(Value::as_array)
                .ok_or_else(|| PluginError::BadPayload(format!("the bookings of property {} have no `bookings` array", ids[0])))?;
            let mut events = Vec::new();
            for booking in bookings {
                match json::string(booking, "id") {
                    Some(id) => events.push(Event::ReservationUpserted(mapping::reservation(id, booking))),
                    None => log(LogLevel::Warn, "booking list: a booking without `id` left out"),
                }
            }
            let more_pages = match json::path(&body, &["meta", "total_pages"]).and_then(Value::as_u64) {
                Some(total) => page < total,
                None => !bookings.is_empty(),
            };
            let next = if more_pages {
                Some(Step::Bookings { page: page + 1, ids })
            } else {
                let rest = ids[1..].to_vec();
                (!rest.is_empty()).then_some(Step::Bookings { page: 1, ids: rest })
            };
            Ok(page_of(events, next))
        }
    }
}

fn page_of(events: Vec<Event>, next: Option<Step>) -> SyncOutcome {
    SyncOutcome::Page(SyncPage { events, more: next.is_some(), next_cursor: next.as_ref().map(Step::cursor) })
}

/// The window's `from` and `to` dates: `since`'s day and `until`'s day (the window's end is
/// exclusive; whether Uplisting's `to` is inclusive is not documented, so the answer may hold a
/// few bookings more, never fewer).
fn window(request: &SyncRequest) -> Result<(String, String), PluginError> {
    let day = |name: &str, value: Option<&str>| {
        value
            .and_then(time::date_part)
            .map(str::to_string)
            .ok_or_else(|| PluginError::BadPayload(format!("stay-date-window needs `{name}` as a date or timestamp")))
    };
    Ok((day("since", request.since.as_deref())?, day("until", request.until.as_deref())?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use stayhook_plugin_sdk::testing::{answer, fetch, page, sync_request};

    fn request(cursor: Option<&str>) -> SyncRequest {
        sync_request(SyncMode::StayDateWindow).cursor(cursor).since("2021-12-01T00:00:00Z").until("2022-01-01T00:00:00Z").build()
    }

    #[test]
    fn cursors_round_trip() {
        for step in [
            Step::Properties { page: 1, ids: Vec::new() },
            Step::Properties { page: 3, ids: vec!["2".into(), "7".into()] },
            Step::Bookings { page: 2, ids: vec!["7".into()] },
        ] {
            assert_eq!(Step::parse(Some(&step.cursor())).unwrap(), step);
        }
        assert_eq!(Step::parse(None).unwrap(), Step::Properties { page: 1, ids: Vec::new() });
        for bad in ["", "bookings:1:", "bookings:0:2", "pages:1:2", "properties:x:"] {
            assert!(Step::parse(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_pass_lists_properties_until_an_empty_page() {
        let first = fetch(sync(&request(None), &[]).unwrap());
        assert_eq!((first.path.as_str(), first.query.clone()), ("/properties", vec![("page".into(), "1".into())]));
        let found = page(sync(&request(None), &[answer(PROPERTIES, 200, json!({"data": [{"id": "2"}, {"id": 7}]}))]).unwrap());
        assert!(found.events.is_empty());
        assert_eq!(found.next_cursor.as_deref(), Some("properties:2:2,7"));
        let over = page(sync(&request(Some("properties:2:2,7")), &[answer(PROPERTIES, 200, json!({"data": []}))]).unwrap());
        assert_eq!(over.next_cursor.as_deref(), Some("bookings:1:2,7"));
        let none = page(sync(&request(None), &[answer(PROPERTIES, 200, json!({"data": []}))]).unwrap());
        assert!(!none.more, "an account without properties has nothing to list");
    }

    #[test]
    fn bookings_are_read_property_after_property_page_after_page() {
        let asked = fetch(sync(&request(Some("bookings:1:2,7")), &[]).unwrap());
        assert_eq!(asked.path, "/bookings/2");
        assert_eq!(
            asked.query,
            vec![("from".into(), "2021-12-01".into()), ("to".into(), "2022-01-01".into()), ("page".into(), "1".into())]
        );
        let body = json!({"bookings": [{"id": 1, "status": "confirmed", "check_in": "2021-12-03"}], "meta": {"total_pages": 2}});
        let first = page(sync(&request(Some("bookings:1:2,7")), &[answer(BOOKINGS, 200, body)]).unwrap());
        assert_eq!(first.events.len(), 1);
        assert_eq!(first.next_cursor.as_deref(), Some("bookings:2:2,7"));
        let body = json!({"bookings": [{"id": 3}], "meta": {"total_pages": 2}});
        let second = page(sync(&request(Some("bookings:2:2,7")), &[answer(BOOKINGS, 200, body)]).unwrap());
        assert_eq!(second.next_cursor.as_deref(), Some("bookings:1:7"), "next property");
        let body = json!({"bookings": [], "meta": {"total_pages": 1}});
        let last = page(sync(&request(Some("bookings:1:7")), &[answer(BOOKINGS, 200, body)]).unwrap());
        assert!(!last.more);
        assert_eq!(last.next_cursor, None);
        // Without `meta.total_pages`, an empty page ends a property.
        let body = json!({"bookings": [{"id": 4}]});
        assert_eq!(
            page(sync(&request(Some("bookings:1:7")), &[answer(BOOKINGS, 200, body)]).unwrap()).next_cursor.as_deref(),
            Some("bookings:2:7")
        );
    }

    #[test]
    fn failures_and_bad_requests_are_refused() {
        let Err(PluginError::BadPayload(message)) = sync(&request(Some("bookings:1:2")), &[answer(BOOKINGS, 429, json!({}))]) else {
            panic!()
        };
        assert!(message.contains("429"), "{message}");
        let mut no_window = request(None);
        no_window.until = None;
        assert!(matches!(sync(&no_window, &[]), Err(PluginError::BadPayload(_))));
        let mut other_mode = request(None);
        other_mode.mode = SyncMode::ModifiedSince;
        assert!(matches!(sync(&other_mode, &[]), Err(PluginError::UnsupportedEvent(_))));
    }
}
