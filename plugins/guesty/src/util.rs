//! Small helpers the Guesty mapping needs and the SDK does not have (yet): day arithmetic on
//! "YYYY-MM-DD" dates, a check for the timestamp forms the host accepts, and reading API responses.
//!
//! `add_days` and `is_timestamp` are general; they would fit in `stayhook_plugin_sdk::time` (see
//! the crate README).

use serde_json::Value;
use stayhook_plugin_sdk::model::ApiResponse;
use stayhook_plugin_sdk::time;

/// `date` ("YYYY-MM-DD") moved by `days` (negative: earlier). `None` when `date` is not a real date.
pub fn add_days(date: &str, days: i64) -> Option<String> {
    let (year, month, day) = time::parse_date(time::date_part(date)?)?;
    let (year, month, day) = civil_from_days(days_from_civil(year, month, day) + days);
    Some(format!("{year:04}-{month:02}-{day:02}"))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i32, month: u32, day: u32) -> i64 {
    let year = i64::from(year) - i64::from(month <= 2);
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let day_of_year = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The date of a day count since 1970-01-01 (inverse of [`days_from_civil`]).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Whether `text` is one of the timestamp forms the host accepts: "YYYY-MM-DD", or a date with
/// "T"/" " and "HH:MM[:SS[.fff]]", optionally followed by "Z" or "±HH:MM". Guesty writes instants
/// as "2017-10-01T16:13:25.711Z".
pub fn is_timestamp(text: &str) -> bool {
    let Some(date) = time::date_part(text) else { return false };
    let rest = &text[date.len()..];
    if rest.is_empty() {
        return true;
    }
    let Some(clock) = rest.strip_prefix('T').or_else(|| rest.strip_prefix(' ')) else { return false };
    let (clock, zone) = split_zone(clock);
    if let Some(zone) = zone
        && !(zone == "Z" || is_offset(zone))
    {
        return false;
    }
    let (clock, fraction) = clock.split_once('.').unwrap_or((clock, ""));
    if !fraction.chars().all(|c| c.is_ascii_digit()) {
        return false;
    }
    let parts: Vec<&str> = clock.split(':').collect();
    if !(2..=3).contains(&parts.len()) || (parts.len() == 2 && !fraction.is_empty()) {
        return false;
    }
    parts
        .iter()
        .zip([24u32, 60, 60])
        .all(|(part, limit)| part.len() == 2 && part.chars().all(|c| c.is_ascii_digit()) && part.parse::<u32>().is_ok_and(|n| n < limit))
}

fn split_zone(clock: &str) -> (&str, Option<&str>) {
    if let Some(stripped) = clock.strip_suffix('Z') {
        return (stripped, Some("Z"));
    }
    match clock.rfind(['+', '-']) {
        Some(at) => (&clock[..at], Some(&clock[at..])),
        None => (clock, None),
    }
}

fn is_offset(zone: &str) -> bool {
    let bytes = zone.as_bytes();
    bytes.len() == 6
        && (bytes[0] == b'+' || bytes[0] == b'-')
        && bytes[3] == b':'
        && [1, 2, 4, 5].iter().all(|&i| bytes[i].is_ascii_digit())
        && zone[1..3].parse::<u32>().is_ok_and(|h| h < 24)
        && zone[4..6].parse::<u32>().is_ok_and(|m| m < 60)
}

/// A timestamp field, if it holds an accepted form (else `None`, so the host never refuses the
/// output because of one odd value).
pub fn timestamp(value: &Value, key: &str) -> Option<String> {
    let text = stayhook_plugin_sdk::json::string(value, key)?;
    is_timestamp(&text).then_some(text)
}

/// A "YYYY-MM-DD" field holding a real date.
pub fn date(value: &Value, key: &str) -> Option<String> {
    let text = stayhook_plugin_sdk::json::string(value, key)?;
    time::parse_date(&text).map(|_| text)
}

/// Follow a path of object keys.
pub fn path<'a>(value: &'a Value, keys: &[&str]) -> Option<&'a Value> {
    keys.iter().try_fold(value, |value, key| value.get(*key)).filter(|value| !value.is_null())
}

/// The response with this request id, if the host already answered it.
pub fn response<'a>(responses: &'a [ApiResponse], id: &str) -> Option<&'a ApiResponse> {
    responses.iter().find(|response| response.id == id)
}

/// The JSON body of a successful (2xx) response, or why it failed for good. The host already
/// retried 429, 5xx and connection errors: what reaches the plugin is final.
pub fn successful(response: &ApiResponse) -> Result<Value, String> {
    if let Some(error) = &response.error {
        return Err(format!("{} failed: {error}", response.id));
    }
    if !(200..300).contains(&response.status) {
        let text = String::from_utf8_lossy(&response.body);
        let excerpt: String = text.chars().take(200).collect();
        return Err(format!("{} answered HTTP {}: {excerpt}", response.id, response.status));
    }
    serde_json::from_slice(&response.body).map_err(|error| format!("{} answered a body that is not JSON: {error}", response.id))
}

/// Like [`successful`], for answers whose body does not matter (a DELETE may answer 204 with none).
pub fn successful_or_empty(response: &ApiResponse) -> Result<(), String> {
    if let Some(error) = &response.error {
        return Err(format!("{} failed: {error}", response.id));
    }
    if !(200..300).contains(&response.status) {
        let text = String::from_utf8_lossy(&response.body);
        let excerpt: String = text.chars().take(200).collect();
        return Err(format!("{} answered HTTP {}: {excerpt}", response.id, response.status));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_move_across_months_years_and_leap_days() {
        assert_eq!(add_days("2017-10-04", -2).as_deref(), Some("2017-10-02"));
        assert_eq!(add_days("2021-01-01", -2).as_deref(), Some("2020-12-30"));
        assert_eq!(add_days("2024-02-28", 2).as_deref(), Some("2024-03-01"));
        assert_eq!(add_days("2023-12-31", 1).as_deref(), Some("2024-01-01"));
        assert_eq!(add_days("2024-03-01", -1).as_deref(), Some("2024-02-29"));
        assert_eq!(add_days("2022-08-30", 0).as_deref(), Some("2022-08-30"));
        assert_eq!(add_days("2022-02-30", 1), None);
    }

    #[test]
    fn timestamp_forms() {
        assert!(is_timestamp("2017-10-01T16:13:25.711Z"));
        assert!(is_timestamp("2020-12-30T13:00:00.000Z"));
        assert!(is_timestamp("2023-01-30T10:00:00+02:00"));
        assert!(is_timestamp("2017-10-04"));
        assert!(is_timestamp("2017-10-04T15:00"));
        assert!(!is_timestamp("2017-10-04T25:00"));
        assert!(!is_timestamp("2017-10-04T10:00:00+2"));
        assert!(!is_timestamp("yesterday"));
    }
}
