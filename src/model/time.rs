//! Timestamps in the forms the contract accepts, rendered the way the seed writes them.

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, Utc};

/// Render a contract `timestamp` as `YYYY-MM-DDTHH:MM:SS.sssZ`, or `None` if it is in no accepted
/// form. Instants with an offset are converted to UTC; dates become midnight; local date-times are
/// kept as written (the PMS's meaning), never shifted by the daemon's zone.
pub fn render(text: &str) -> Option<String> {
    let text = text.trim();
    if let Ok(instant) = DateTime::parse_from_rfc3339(text) {
        return Some(instant.with_timezone(&Utc).to_rfc3339_opts(SecondsFormat::Millis, true));
    }
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Some(format!("{}T00:00:00.000Z", date.format("%Y-%m-%d")));
    }
    for pattern in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M"] {
        if let Ok(local) = NaiveDateTime::parse_from_str(text, pattern) {
            return Some(local.and_utc().to_rfc3339_opts(SecondsFormat::Millis, true));
        }
    }
    None
}

/// The calendar date ("YYYY-MM-DD") of a rendered timestamp.
pub fn date_of(rendered: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(rendered.get(..10)?, "%Y-%m-%d").ok()
}

/// Now, rendered.
pub fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Unix time in milliseconds (0 before 1970, which a working clock never says).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A millisecond Unix time, rendered.
pub fn from_unix_ms(unix_ms: u64) -> String {
    DateTime::<Utc>::from_timestamp_millis(i64::try_from(unix_ms).unwrap_or(i64::MAX))
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::render;

    #[test]
    fn accepted_forms() {
        assert_eq!(render("2024-08-21T13:11:45Z").as_deref(), Some("2024-08-21T13:11:45.000Z"));
        assert_eq!(render("2024-08-21T15:11:45.5+02:00").as_deref(), Some("2024-08-21T13:11:45.500Z"));
        assert_eq!(render("2025-03-19").as_deref(), Some("2025-03-19T00:00:00.000Z"));
        assert_eq!(render("2020-10-07 16:34:07").as_deref(), Some("2020-10-07T16:34:07.000Z"));
        assert_eq!(render("2022-06-13T00:00:00").as_deref(), Some("2022-06-13T00:00:00.000Z"));
    }

    #[test]
    fn refused_forms() {
        for text in ["", "next tuesday", "2024-02-30", "19/03/2025", "2024-08-21T25:00:00"] {
            assert_eq!(render(text), None, "{text:?} should be refused");
        }
    }
}
