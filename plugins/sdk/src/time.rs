//! Dates as PMSs write them, in the forms the contract's `timestamp` accepts.
//!
//! The host validates and renders timestamps; plugins only need to pick the right part of what the
//! PMS sent and, for nights, count days between two calendar dates. No clock is used: plugins have
//! none.

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
