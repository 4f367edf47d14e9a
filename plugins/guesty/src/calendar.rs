//! Guesty calendar days → unified calendars.
//!
//! The same day object comes in the `listing.calendar.updated` webhook (`calendar[]`) and in the
//! Calendar API's answer (`GET /v1/availability-pricing/api/calendar/listings/{id}` →
//! `{"status": 200, "data": {"days": [...]}, "message": "OK"}`).

use serde_json::Value;
use stayhook_plugin_sdk::json;
use stayhook_plugin_sdk::model::*;
use stayhook_plugin_sdk::time;

use stayhook_plugin_sdk::json::path;

/// The account setting holding the days fetched around a stay (advance notice, preparation time).
pub const PADDING_SETTING: &str = "calendarPaddingDays";
/// Days fetched before arrival and after departure when the setting is absent.
pub const DEFAULT_PADDING_DAYS: u32 = 2;
/// Largest padding accepted.
pub const MAX_PADDING_DAYS: u32 = 30;

/// The padding from the account settings; absent or unreadable → the default, above the maximum
/// → the maximum.
pub fn padding_days(settings: &[(String, String)]) -> u32 {
    match settings.iter().find(|(name, _)| name == PADDING_SETTING) {
        None => DEFAULT_PADDING_DAYS,
        Some((_, value)) => match value.trim().parse::<u32>() {
            Ok(days) => days.min(MAX_PADDING_DAYS),
            Err(_) => {
                stayhook_plugin_sdk::log(LogLevel::Warn, &format!("{PADDING_SETTING} {value:?} is not a number of days; using 2"));
                DEFAULT_PADDING_DAYS
            }
        },
    }
}

/// The dates to fetch for a stay: arrival − padding to departure + padding (Guesty's `endDate` is
/// inclusive; the departure day itself is included, as the turnover day).
pub fn stay_window(arrival: &str, departure: &str, padding: u32) -> Option<(String, String)> {
    Some((time::add_days(arrival, -i64::from(padding))?, time::add_days(departure, i64::from(padding))?))
}

/// The path of the Calendar API for a listing.
pub fn api_path(listing_id: &str) -> String {
    format!("/v1/availability-pricing/api/calendar/listings/{listing_id}")
}

/// The request for a listing's calendar between two dates (both included).
pub fn request(id: &str, listing_id: &str, start: &str, end: &str) -> ApiRequest {
    ApiRequest {
        id: id.into(),
        method: "GET".into(),
        path: api_path(listing_id),
        query: vec![("startDate".into(), start.into()), ("endDate".into(), end.into())],
        headers: vec![("accept".into(), "application/json".into())],
        body: None,
    }
}

/// The day objects of a Calendar API answer: `data.days`, else `days`, else `data` as an array, else
/// the body as an array.
pub fn api_days(body: &Value) -> &[Value] {
    [path(body, &["data", "days"]), body.get("days"), body.get("data")]
        .into_iter()
        .flatten()
        .find_map(Value::as_array)
        .or_else(|| body.as_array())
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// The listing a day object belongs to: `listingId`, else `listing._id`.
pub fn day_listing(day: &Value) -> Option<String> {
    json::string(day, "listingId").or_else(|| day.get("listing").and_then(|listing| json::string(listing, "_id")))
}

/// One Guesty day as a unified day; `None` without a real date.
///
/// Availability follows Guesty's rule for multi-units: with a numeric `allotment`, available when it
/// is above 0; otherwise available when `status` is "available" (unavailable, booked, reserved → not).
pub fn day(day: &Value) -> Option<CalendarDay> {
    let date = json::date(day, "date")?;
    let allotment = json::number(day, "allotment");
    let available = match allotment {
        Some(units) => units > 0.0,
        None => json::string(day, "status").is_some_and(|status| status.eq_ignore_ascii_case("available")),
    };
    Some(CalendarDay {
        date,
        status: if available { DayStatus::Available } else { DayStatus::NotAvailable },
        units_available: json::count(day, "allotment"),
        price: json::number(day, "price"),
        currency: json::string(day, "currency").or_else(|| path(day, &["listing", "prices", "currency"]).and_then(json::text)),
        minimum_nights: json::count(day, "minNights"),
        maximum_nights: json::count(day, "maxNights"),
        reservation_ids: reservation_ids(day),
    })
}

/// `reservationId`, `reservation._id` and the `reservationId` of each `blockRefs` entry, without
/// repeats (`blockRefs` entries may also be bare block ids, which are not reservations).
pub fn reservation_ids(day: &Value) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    let mut push = |id: Option<String>| {
        if let Some(id) = id
            && !ids.contains(&id)
        {
            ids.push(id);
        }
    };
    push(json::string(day, "reservationId"));
    push(day.get("reservation").and_then(|reservation| json::string(reservation, "_id")));
    for block in json::array(day, "blockRefs") {
        push(json::string(block, "reservationId"));
    }
    ids
}

/// Days grouped by listing, in order of first appearance: one calendar per listing. Days without a
/// listing are attributed to `fallback_listing` (the listing the API was asked about), or dropped.
pub fn calendars(days: &[Value], fallback_listing: Option<&str>) -> Vec<Calendar> {
    let mut calendars: Vec<Calendar> = Vec::new();
    for raw in days {
        let Some(listing) = day_listing(raw).or_else(|| fallback_listing.map(str::to_string)) else { continue };
        let Some(mapped) = day(raw) else { continue };
        match calendars.iter_mut().find(|calendar| calendar.property_id == listing) {
            Some(calendar) => calendar.days.push(mapped),
            None => calendars.push(Calendar { property_id: listing, room_type_id: None, days: vec![mapped] }),
        }
    }
    calendars
}

/// The calendar of one listing from a Calendar API answer (days of other listings, if any, are
/// ignored; the answer is about `listing_id`).
pub fn from_api(body: &Value, listing_id: &str) -> Calendar {
    let days = api_days(body).iter().filter(|raw| day_listing(raw).is_none_or(|listing| listing == listing_id)).filter_map(day).collect();
    Calendar { property_id: listing_id.into(), room_type_id: None, days }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn allotment_decides_for_multi_units() {
        let full = day(&json!({"date": "2024-01-01", "status": "available", "allotment": 0})).unwrap();
        assert_eq!(full.status, DayStatus::NotAvailable);
        assert_eq!(full.units_available, Some(0));
        let free = day(&json!({"date": "2024-01-01", "status": "unavailable", "allotment": 3})).unwrap();
        assert_eq!(free.status, DayStatus::Available);
        assert_eq!(free.units_available, Some(3));
        let booked = day(&json!({"date": "2024-01-01", "status": "booked"})).unwrap();
        assert_eq!(booked.status, DayStatus::NotAvailable);
        assert_eq!(booked.units_available, None);
        assert!(day(&json!({"date": "someday"})).is_none());
    }

    #[test]
    fn reservation_ids_from_every_place() {
        let raw = json!({"date": "2024-01-01", "reservationId": "a", "reservation": {"_id": "a"},
            "blockRefs": [{"reservationId": "b"}, "5d6e7a7ebf8e3800207735ad", {"_id": "x"}]});
        assert_eq!(reservation_ids(&raw), vec!["a".to_string(), "b".to_string()]);
    }

    #[test]
    fn window_and_padding() {
        assert_eq!(stay_window("2017-10-04", "2017-10-08", 2), Some(("2017-10-02".into(), "2017-10-10".into())));
        assert_eq!(padding_days(&[]), 2);
        assert_eq!(padding_days(&[(PADDING_SETTING.into(), "5".into())]), 5);
        assert_eq!(padding_days(&[(PADDING_SETTING.into(), "500".into())]), MAX_PADDING_DAYS);
        assert_eq!(padding_days(&[(PADDING_SETTING.into(), "two".into())]), 2);
    }

    #[test]
    fn webhook_days_grouped_per_listing() {
        let days = vec![
            json!({"date": "2024-01-01", "listingId": "L1", "status": "available", "price": 10, "currency": "EUR"}),
            json!({"date": "2024-01-01", "listingId": "L2", "status": "available"}),
            json!({"date": "2024-01-02", "listingId": "L1", "status": "unavailable"}),
        ];
        let calendars = calendars(&days, None);
        assert_eq!(calendars.len(), 2);
        assert_eq!(calendars[0].property_id, "L1");
        assert_eq!(calendars[0].days.len(), 2);
        assert_eq!(calendars[1].property_id, "L2");
    }
}
