//! Reading the loosely typed JSON that PMSs send.
//!
//! PMSs send ids as numbers or strings, booleans as `0`/`1`, and empty strings for "unknown". These
//! accessors accept all of that and answer `None` for absent, null or empty values, so mapping code
//! reads as a list of field names.

use serde_json::Value;

/// A string field: strings as they are (empty ones are `None`), numbers and booleans as text.
pub fn string(value: &Value, key: &str) -> Option<String> {
    text(value.get(key)?)
}

/// The text of a scalar JSON value; `None` for null, empty strings, arrays and objects.
pub fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) if !text.trim().is_empty() => Some(text.trim().to_string()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        _ => None,
    }
}

/// A number field: numbers, and strings holding a number ("1113.50").
pub fn number(value: &Value, key: &str) -> Option<f64> {
    match value.get(key)? {
        Value::Number(number) => number.as_f64(),
        Value::String(text) => text.trim().parse().ok(),
        _ => None,
    }
}

/// A non-negative whole number field (guest counts, nights); negative or fractional values are `None`.
pub fn count(value: &Value, key: &str) -> Option<u32> {
    let number = number(value, key)?;
    if number >= 0.0 && number.fract() == 0.0 && number <= f64::from(u32::MAX) { Some(number as u32) } else { None }
}

/// A boolean field: `true`/`false`, `1`/`0`, and the strings "true", "false", "1", "0".
pub fn flag(value: &Value, key: &str) -> Option<bool> {
    match value.get(key)? {
        Value::Bool(flag) => Some(*flag),
        Value::Number(number) => number.as_f64().map(|n| n != 0.0),
        Value::String(text) => match text.trim() {
            "true" | "1" => Some(true),
            "false" | "0" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// The elements of an array field; empty when absent or not an array.
pub fn array<'a>(value: &'a Value, key: &str) -> &'a [Value] {
    value.get(key).and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
}

/// A timestamp field, if it holds an accepted form (else `None`, so the host never refuses the
/// output because of one odd value).
pub fn timestamp(value: &Value, key: &str) -> Option<String> {
    let text = string(value, key)?;
    crate::time::is_timestamp(&text).then_some(text)
}

/// A "YYYY-MM-DD" field holding a real date.
pub fn date(value: &Value, key: &str) -> Option<String> {
    let text = string(value, key)?;
    crate::time::parse_date(&text).map(|_| text)
}

/// Follow a path of object keys.
pub fn path<'a>(value: &'a Value, keys: &[&str]) -> Option<&'a Value> {
    keys.iter().try_fold(value, |value, key| value.get(*key)).filter(|value| !value.is_null())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ids_as_numbers_or_strings_read_as_text() {
        let value = json!({"a": 31696085, "b": "275807", "c": "", "d": null});
        assert_eq!(string(&value, "a").as_deref(), Some("31696085"));
        assert_eq!(string(&value, "b").as_deref(), Some("275807"));
        assert_eq!(string(&value, "c"), None);
        assert_eq!(string(&value, "d"), None);
        assert_eq!(string(&value, "missing"), None);
    }

    #[test]
    fn zero_one_flags_and_string_numbers() {
        let value = json!({"on": 1, "off": 0, "s": "1113.5", "neg": -1, "frac": 1.5});
        assert_eq!(flag(&value, "on"), Some(true));
        assert_eq!(flag(&value, "off"), Some(false));
        assert_eq!(number(&value, "s"), Some(1113.5));
        assert_eq!(count(&value, "neg"), None);
        assert_eq!(count(&value, "frac"), None);
    }
}
