//! Money as PMSs send it: numbers, numeric strings, currency codes.

use serde_json::Value;

/// An amount from a JSON number or a numeric string ("1250.5", "1,250.50", " 99 "), or `None`
/// for anything else (null, "", "N/A"). A comma is read as a thousands separator only when a dot
/// follows it ("1,250.50"); "12,50" (decimal comma) is read as 12.5.
pub fn amount(value: &Value) -> Option<f64> {
    match value {
        Value::Number(number) => number.as_f64(),
        Value::String(text) => parse_amount(text),
        _ => None,
    }
}

/// [`amount`] of `value[key]`.
pub fn amount_at(value: &Value, key: &str) -> Option<f64> {
    value.get(key).and_then(amount)
}

fn parse_amount(text: &str) -> Option<f64> {
    let text: String = text.trim().chars().filter(|character| !character.is_whitespace()).collect();
    let normalized = match (text.rfind(','), text.rfind('.')) {
        (Some(comma), Some(dot)) if comma < dot => text.replace(',', ""),
        (Some(_), None) if text.matches(',').count() == 1 && text.rsplit(',').next().is_some_and(|tail| tail.len() <= 2) => {
            text.replace(',', ".")
        }
        (Some(_), _) => return None,
        _ => text,
    };
    normalized.parse::<f64>().ok().filter(|number| number.is_finite())
}

/// An ISO 4217 code, upper-cased, or `None` when the text is not three letters.
pub fn currency(text: &str) -> Option<String> {
    let text = text.trim();
    (text.len() == 3 && text.bytes().all(|byte| byte.is_ascii_alphabetic())).then(|| text.to_ascii_uppercase())
}

/// Round to cents, so sums of floating-point parts compare equal to the PMS's total.
pub fn cents(amount: f64) -> f64 {
    (amount * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn amounts_from_numbers_and_strings() {
        assert_eq!(amount(&json!(1250.5)), Some(1250.5));
        assert_eq!(amount(&json!("1250.5")), Some(1250.5));
        assert_eq!(amount(&json!("1,250.50")), Some(1250.5));
        assert_eq!(amount(&json!("12,50")), Some(12.5));
        assert_eq!(amount(&json!(" 99 ")), Some(99.0));
        for bad in [json!(null), json!(""), json!("N/A"), json!(true), json!("1,2,3")] {
            assert_eq!(amount(&bad), None, "{bad}");
        }
        assert_eq!(amount_at(&json!({"total": "10"}), "total"), Some(10.0));
    }

    #[test]
    fn currencies_and_cents() {
        assert_eq!(currency(" eur "), Some("EUR".into()));
        assert_eq!(currency("euro"), None);
        assert_eq!(currency("€"), None);
        assert_eq!(cents(0.1 + 0.2), 0.3);
    }
}
