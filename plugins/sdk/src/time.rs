//! Dates as PMSs write them, in the forms the contract's `timestamp` accepts.
//!
//! The host validates and renders timestamps; plugins pick the right part of what the PMS sent,
//! count nights between two calendar dates, move dates by days (calendar windows), and check that a
//! value is in a form the host accepts before passing it on. No clock is used: plugins have none.

/// The calendar date part ("YYYY-MM-DD") of a date or date-time string, if it starts with one.
pub fn date_part(text: &str) -> Option<&str> {
    let date = text.get(..10)?;
    parse_date(date).map(|_| date)
}

/// Parse "YYYY-MM-DD" into (year, month, day), checking the day exists.
pub fn parse_date(text: &str) -> Option<(i32, u32, u32)> {
    let bytes = text.as_bytes();
    if bytes.len() != 10 || bytes[4] != b'-' || bytes[7] != b'-' {
        return None;
    }
    let year: i32 = text[..4].parse().ok()?;
    let month: u32 = text[5..7].parse().ok()?;
    let day: u32 = text[8..10].parse().ok()?;
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    Some((year, month, day))
}

/// Whole days from `from` to `to` (both "YYYY-MM-DD..."), if both are dates and `to` is not earlier.
pub fn nights_between(from: &str, to: &str) -> Option<u32> {
    let (y1, m1, d1) = parse_date(date_part(from)?)?;
    let (y2, m2, d2) = parse_date(date_part(to)?)?;
    let days = days_from_civil(y2, m2, d2) - days_from_civil(y1, m1, d1);
    u32::try_from(days).ok()
}

/// A local date-time "YYYY-MM-DDTHH:00:00" from a date and an hour of the day (0 to 23), the way
/// PMSs give check-in and check-out times. `None` when the date or the hour is not valid.
pub fn date_at_hour(date: &str, hour: u32) -> Option<String> {
    let date = date_part(date)?;
    (hour < 24).then(|| format!("{date}T{hour:02}:00:00"))
}

/// `date` ("YYYY-MM-DD") moved by `days` (negative: earlier). `None` when `date` is not a real date.
pub fn add_days(date: &str, days: i64) -> Option<String> {
    let (year, month, day) = parse_date(date_part(date)?)?;
    let (year, month, day) = civil_from_days(days_from_civil(year, month, day) + days);
    Some(format!("{year:04}-{month:02}-{day:02}"))
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

/// Seconds since 1970 of "YYYY-MM-DD[THH:MM[:SS[.fff]]][Z|±HH:MM]" (no zone: UTC), to compare
/// instants a PMS writes in different offsets (a listing's stop at a watermark).
pub fn epoch_seconds(text: &str) -> Option<i64> {
    let date = date_part(text)?;
    let (year, month, day) = parse_date(date)?;
    let rest = &text[date.len()..];
    let (clock, zone) = match rest.strip_prefix('T').or_else(|| rest.strip_prefix(' ')) {
        None if rest.is_empty() => ("", ""),
        None => return None,
        Some(rest) => match rest.find(['Z', '+', '-']) {
            Some(at) => rest.split_at(at),
            None => (rest, ""),
        },
    };
    let mut parts = clock.split('.').next().unwrap_or("").split(':').filter(|part| !part.is_empty());
    let mut next = || parts.next().map(|part| part.parse::<i64>().ok()).unwrap_or(Some(0));
    let (hours, minutes, seconds) = (next()?, next()?, next()?);
    let offset = match zone {
        "" | "Z" => 0,
        _ => {
            let sign = if zone.starts_with('-') { -1 } else { 1 };
            let (zone_hours, zone_minutes) = zone[1..].split_once(':').unwrap_or((&zone[1..], "0"));
            sign * (zone_hours.parse::<i64>().ok()? * 3600 + zone_minutes.parse::<i64>().ok()? * 60)
        }
    };
    Some(days_from_civil(year, month, day) * 86_400 + hours * 3600 + minutes * 60 + seconds - offset)
}

/// Whether `text` is one of the timestamp forms the host accepts: "YYYY-MM-DD", or a date with
/// "T"/" " and "HH:MM[:SS[.fff]]", optionally followed by "Z" or "±HH:MM". Guesty writes instants
/// as "2017-10-01T16:13:25.711Z".
pub fn is_timestamp(text: &str) -> bool {
    let Some(date) = date_part(text) else { return false };
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

fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        _ => 28,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_in_seconds() {
        assert_eq!(epoch_seconds("1970-01-02T00:00:00Z"), Some(86_400));
        assert_eq!(epoch_seconds("2026-05-22T02:50:00+00:00"), epoch_seconds("2026-05-22T04:50:00+02:00"));
        assert_eq!(epoch_seconds("2026-05-22"), epoch_seconds("2026-05-22T00:00:00Z"));
        assert_eq!(epoch_seconds("2024-03-01T00:00:00Z").unwrap() - epoch_seconds("2024-02-28T00:00:00Z").unwrap(), 2 * 86_400);
        assert_eq!(epoch_seconds("not a time"), None);
    }

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
    #[test]
    fn nights_across_months_and_leap_years() {
        assert_eq!(nights_between("2025-03-19", "2025-03-26"), Some(7));
        assert_eq!(nights_between("2024-02-28", "2024-03-01"), Some(2));
        assert_eq!(nights_between("2023-12-31 10:00:00", "2024-01-02"), Some(2));
        assert_eq!(nights_between("2024-03-02", "2024-03-01"), None);
        assert_eq!(nights_between("2024-02-30", "2024-03-01"), None);
    }

    #[test]
    fn check_in_hours() {
        assert_eq!(date_at_hour("2025-03-19", 16).as_deref(), Some("2025-03-19T16:00:00"));
        assert_eq!(date_at_hour("2025-03-19", 24), None);
        assert_eq!(date_at_hour("19/03/2025", 10), None);
    }
}
