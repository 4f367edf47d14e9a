//! Guesty webhooks → unified events, in plain Rust (compiled natively for tests, and into the
//! component by `lib.rs`).
//!
//! Entry point: [`normalize`]. It is a pure function of (webhook, responses so far): every call
//! recomputes what is known and either asks for the requests still missing or answers the events.
//!
//! Fetch rounds of a reservation event (request ids in brackets):
//! 1. v2 events only: the reservation (`reservation`, `GET /v1/reservations/{id}`).
//! 2. The listing's calendar for the stay ± `calendarPaddingDays` (`calendar`), and the listing
//!    itself (`parent-listing`, `GET /v1/listings/{id}`) to learn whether it is a sub-unit of a
//!    multi-unit (`type` "MTL_CHILD", parent id in `mtl.p`), unless the reservation already embeds
//!    `listing.type`, or the account setting `subUnitLookup` is "false".
//! 3. For a sub-unit: the parent's calendar for the same dates (`parent-calendar`).

use serde_json::Value;
use stayhook_plugin_sdk::api;
use stayhook_plugin_sdk::json;
use stayhook_plugin_sdk::model::*;

use crate::{calendar, conversation, reservation};
use stayhook_plugin_sdk::json::path;

/// Inbound event names this plugin understands (Guesty's spelling).
pub const EVENTS: &[&str] = &[
    "reservation.new",
    "reservation.updated",
    "reservation.created.v2",
    "reservation.updated.v2",
    "reservation.messageReceived",
    "reservation.messageSent",
    "listing.calendar.updated",
];

/// Request id of the reservation fetch (v2 events).
pub const RESERVATION: &str = "reservation";
/// Request id of the stay's calendar.
pub const CALENDAR: &str = "calendar";
/// Request id of the listing lookup that tells whether the listing is a sub-unit.
pub const PARENT_LISTING: &str = "parent-listing";
/// Request id of the multi-unit parent's calendar.
pub const PARENT_CALENDAR: &str = "parent-calendar";
/// The account setting that turns the sub-unit lookup off ("false").
pub const SUB_UNIT_SETTING: &str = "subUnitLookup";

/// Turn one Guesty webhook into unified events, or ask for the API calls still missing.
pub fn normalize(inbound: &Inbound, responses: &[ApiResponse]) -> Result<Outcome, PluginError> {
    let body = stayhook_plugin_sdk::json_object_body(inbound)?;
    let event = json::string(&body, "event")
        .or_else(|| json::string(&body, "eventType"))
        .ok_or_else(|| PluginError::BadPayload("missing `event` in the webhook body".into()))?;
    let settings = &inbound.account.settings;
    match event.as_str() {
        "reservation.new" | "reservation.updated" => {
            let object = body
                .get("reservation")
                .filter(|object| object.is_object())
                .ok_or_else(|| PluginError::BadPayload(format!("{event}: `reservation` is missing or not an object")))?;
            let created = event == "reservation.new";
            Ok(stay(created, object, settings, responses)?)
        }
        "reservation.created.v2" | "reservation.updated.v2" => {
            let created = event == "reservation.created.v2";
            let id = v2_reservation_id(&body).ok_or_else(|| PluginError::BadPayload(format!("{event}: no reservation id in the body")))?;
            let Some(response) = api::response(responses, RESERVATION) else {
                return Ok(Outcome::Fetch(vec![reservation_request(&id)]));
            };
            match api::successful(response) {
                Ok(answer) => {
                    let object = reservation_in(&answer).ok_or_else(|| {
                        PluginError::BadPayload(format!("GET /v1/reservations/{id} answered without a reservation object"))
                    })?;
                    stay(created, object, settings, responses)
                }
                Err(reason) => {
                    let event_type = if created { EventType::ReservationCreated } else { EventType::ReservationUpdated };
                    Ok(Outcome::Done(vec![incomplete(event_type, &id, reason)]))
                }
            }
        }
        "listing.calendar.updated" => calendar_webhook(&body, settings, responses),
        "reservation.messageReceived" | "reservation.messageSent" => messages(&body, responses),
        other => Err(PluginError::UnsupportedEvent(other.to_string())),
    }
}

/// The reservation id of a v2 payload: `data.reservationId`, `data.reservation._id|id`, `data._id`,
/// top-level `reservationId`, `reservation._id|id` (Guesty publishes no sample; see the README).
pub fn v2_reservation_id(body: &Value) -> Option<String> {
    let data = body.get("data").filter(|data| data.is_object());
    let nested = |value: Option<&Value>| {
        value.and_then(|value| value.get("reservation")).and_then(|r| json::string(r, "_id").or_else(|| json::string(r, "id")))
    };
    data.and_then(|data| json::string(data, "reservationId"))
        .or_else(|| nested(data))
        .or_else(|| data.and_then(|data| json::string(data, "_id")))
        .or_else(|| json::string(body, "reservationId"))
        .or_else(|| nested(Some(body)))
}

/// `GET /v1/reservations/{id}`.
pub fn reservation_request(id: &str) -> ApiRequest {
    ApiRequest {
        id: RESERVATION.into(),
        method: "GET".into(),
        path: format!("/v1/reservations/{id}"),
        query: Vec::new(),
        headers: vec![("accept".into(), "application/json".into())],
        body: None,
    }
}

/// `GET /v1/listings/{id}`, asking only for the fields the sub-unit check needs.
pub fn listing_request(id: &str) -> ApiRequest {
    listing_request_as(PARENT_LISTING, id)
}

/// [`listing_request`] under another request id (one per listing of a calendar webhook).
fn listing_request_as(request_id: &str, id: &str) -> ApiRequest {
    ApiRequest {
        id: request_id.into(),
        method: "GET".into(),
        path: format!("/v1/listings/{id}"),
        query: vec![("fields".into(), "_id type mtl".into())],
        headers: vec![("accept".into(), "application/json".into())],
        body: None,
    }
}

/// The reservation object of an API answer: the body itself, or its `data`/`result`.
fn reservation_in(answer: &Value) -> Option<&Value> {
    [Some(answer), answer.get("data"), answer.get("result")].into_iter().flatten().find(|value| reservation::id(value).is_some())
}

/// The parent of a sub-unit listing object (`type` "MTL_CHILD", parent in `mtl.p`): `Some(Some(id))`;
/// `Some(None)` when the object says it is not a sub-unit; `None` when it does not say.
pub fn parent_of(listing: &Value) -> Option<Option<String>> {
    let kind = json::string(listing, "type")?;
    if !kind.eq_ignore_ascii_case("MTL_CHILD") {
        return Some(None);
    }
    Some(path(listing, &["mtl", "p"]).and_then(json::text))
}

fn incomplete(event_type: EventType, record_id: &str, reason: String) -> Event {
    Event::Incomplete(Incomplete { event_type, record_id: record_id.into(), reason })
}

fn setting_off(settings: &[(String, String)], name: &str) -> bool {
    settings.iter().any(|(key, value)| key == name && matches!(value.trim().to_ascii_lowercase().as_str(), "false" | "0" | "no" | "off"))
}

/// A full reservation object → the reservation event, then its calendars (fetched in rounds).
fn stay(created: bool, object: &Value, settings: &[(String, String)], responses: &[ApiResponse]) -> Result<Outcome, PluginError> {
    let unified = reservation::reservation(object)?;
    let mut events = vec![if created { Event::ReservationCreated(unified) } else { Event::ReservationUpdated(unified) }];
    let (Some(listing_id), Some((arrival, departure))) = (reservation::listing_id(object), reservation::stay_dates(object)) else {
        stayhook_plugin_sdk::log(LogLevel::Info, "reservation without listing or stay dates: no calendar fetched");
        return Ok(Outcome::Done(events));
    };
    let padding = calendar::padding_days(settings);
    let Some((start, end)) = calendar::stay_window(&arrival, &departure, padding) else {
        return Ok(Outcome::Done(events));
    };

    // What the reservation itself says about the listing; else ask the listings API.
    let embedded = object.get("listing").filter(|listing| listing.is_object()).and_then(parent_of);
    let lookup = embedded.is_none() && !setting_off(settings, SUB_UNIT_SETTING);
    let mut missing = Vec::new();
    if api::response(responses, CALENDAR).is_none() {
        missing.push(calendar::request(CALENDAR, &listing_id, &start, &end));
    }
    if lookup && api::response(responses, PARENT_LISTING).is_none() {
        missing.push(listing_request(&listing_id));
    }
    if !missing.is_empty() {
        return Ok(Outcome::Fetch(missing));
    }

    events.push(calendar_event(responses, CALENDAR, &listing_id));
    let parent = match embedded {
        Some(parent) => parent,
        None if !lookup => None,
        None => match api::response(responses, PARENT_LISTING).map(api::successful) {
            Some(Ok(answer)) => parent_of(answer.get("data").filter(|data| data.is_object()).unwrap_or(&answer)).flatten(),
            Some(Err(reason)) => {
                stayhook_plugin_sdk::log(LogLevel::Warn, &format!("sub-unit check skipped: {reason}"));
                None
            }
            None => None,
        },
    };
    if let Some(parent) = parent.filter(|parent| *parent != listing_id) {
        if api::response(responses, PARENT_CALENDAR).is_none() {
            return Ok(Outcome::Fetch(vec![calendar::request(PARENT_CALENDAR, &parent, &start, &end)]));
        }
        events.push(calendar_event(responses, PARENT_CALENDAR, &parent));
    }
    Ok(Outcome::Done(events))
}

/// `listing.calendar.updated`: the changed days as they are, and, per the seed ("To properly
/// ascertain the availability of a multi-unit upon the receipt of this webhook for changes to a
/// sub-unit, ... retrieve the calendar information for the same dates on the multi-unit itself"),
/// for a sub-unit the parent's calendar over the same dates. One listing lookup per listing in the
/// payload (`parent-listing-<id>`), then the parents' calendars (`parent-calendar-<id>`); the
/// lookup is skipped with the setting `subUnitLookup=false`. A failed lookup only loses the
/// parent's calendar, never the sub-unit's days.
fn calendar_webhook(body: &Value, settings: &[(String, String)], responses: &[ApiResponse]) -> Result<Outcome, PluginError> {
    let calendars = calendar::calendars(json::array(body, "calendar"), None);
    let mut events: Vec<Event> = calendars.iter().cloned().map(Event::CalendarUpdated).collect();
    if setting_off(settings, SUB_UNIT_SETTING) {
        return Ok(Outcome::Done(events));
    }
    let lookups: Vec<ApiRequest> = calendars
        .iter()
        .map(|calendar| listing_request_as(&format!("{PARENT_LISTING}-{}", calendar.property_id), &calendar.property_id))
        .filter(|request| api::response(responses, &request.id).is_none())
        .collect();
    if !lookups.is_empty() {
        return Ok(Outcome::Fetch(lookups));
    }
    let mut missing = Vec::new();
    for changed in &calendars {
        let parent = match api::response(responses, &format!("{PARENT_LISTING}-{}", changed.property_id)).map(api::successful) {
            Some(Ok(answer)) => parent_of(answer.get("data").filter(|data| data.is_object()).unwrap_or(&answer)).flatten(),
            Some(Err(reason)) => {
                stayhook_plugin_sdk::log(LogLevel::Warn, &format!("sub-unit check skipped: {reason}"));
                None
            }
            None => None,
        };
        let Some(parent) = parent.filter(|parent| *parent != changed.property_id) else { continue };
        let (Some(start), Some(end)) = (changed.days.iter().map(|day| &day.date).min(), changed.days.iter().map(|day| &day.date).max())
        else {
            continue;
        };
        let request_id = format!("{PARENT_CALENDAR}-{}", changed.property_id);
        if api::response(responses, &request_id).is_none() {
            missing.push(calendar::request(&request_id, &parent, start, end));
        } else {
            events.push(calendar_event(responses, &request_id, &parent));
        }
    }
    if missing.is_empty() { Ok(Outcome::Done(events)) } else { Ok(Outcome::Fetch(missing)) }
}

/// The calendar of `listing_id` from the answer to request `id`, or an incomplete calendar event.
fn calendar_event(responses: &[ApiResponse], id: &str, listing_id: &str) -> Event {
    let answer = api::response(responses, id).map(api::successful).unwrap_or_else(|| Err(format!("{id} was not answered")));
    match answer {
        Ok(body) => Event::CalendarUpdated(calendar::from_api(&body, listing_id)),
        Err(reason) => incomplete(EventType::CalendarUpdated, listing_id, reason),
    }
}

/// A message webhook → the whole conversation, fetched with its posts.
fn messages(body: &Value, responses: &[ApiResponse]) -> Result<Outcome, PluginError> {
    let id =
        conversation::conversation_id(body).ok_or_else(|| PluginError::BadPayload("message webhook without `conversation._id`".into()))?;
    let mut missing = Vec::new();
    if api::response(responses, conversation::CONVERSATION).is_none() {
        missing.push(conversation::conversation_request(&id));
    }
    if api::response(responses, conversation::POSTS).is_none() {
        missing.push(conversation::posts_request(&id, 1, None));
    }
    if !missing.is_empty() {
        return Ok(Outcome::Fetch(missing));
    }

    let mut posts: Vec<Value> = Vec::new();
    for page in 1..=conversation::MAX_POST_PAGES {
        let Some(response) = api::response(responses, &conversation::posts_id(page)) else { break };
        let answer = match api::successful(response) {
            Ok(answer) => answer,
            Err(reason) if page == 1 => return Ok(Outcome::Done(vec![incomplete(EventType::ConversationUpdated, &id, reason)])),
            Err(reason) => {
                stayhook_plugin_sdk::log(LogLevel::Warn, &format!("older posts not read: {reason}"));
                break;
            }
        };
        posts.extend(conversation::page_posts(&answer).iter().cloned());
        if let Some(cursor) = conversation::next_cursor(&answer)
            && page < conversation::MAX_POST_PAGES
            && api::response(responses, &conversation::posts_id(page + 1)).is_none()
        {
            return Ok(Outcome::Fetch(vec![conversation::posts_request(&id, page + 1, Some(&cursor))]));
        }
    }
    let fetched = match api::response(responses, conversation::CONVERSATION).map(api::successful) {
        Some(Ok(answer)) => answer.get("data").cloned().filter(Value::is_object).or(Some(answer)),
        Some(Err(reason)) => {
            stayhook_plugin_sdk::log(LogLevel::Warn, &format!("conversation details from the webhook only: {reason}"));
            None
        }
        None => None,
    };
    Ok(Outcome::Done(vec![Event::ConversationUpdated(conversation::conversation(&id, body, fetched.as_ref(), &posts))]))
}
