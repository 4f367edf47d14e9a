//! Clean-up of the contact details PMSs send: e-mail addresses and phone numbers.

/// A trimmed, lower-cased e-mail address, or `None` when the text is not one (empty, no `@`, no
/// dot in the domain, spaces inside). PMSs send placeholders such as "" or "n/a"; those vanish.
pub fn email(text: &str) -> Option<String> {
    let text = text.trim().trim_start_matches("mailto:");
    let (local, domain) = text.rsplit_once('@')?;
    let valid = !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !text.chars().any(|character| character.is_whitespace() || character == ',' || character == ';');
    valid.then(|| text.to_ascii_lowercase())
}

/// A phone number with only its digits and a leading `+` (an international `00` prefix becomes
/// `+`), or `None` when fewer than 5 digits remain. Separators (spaces, dots, dashes, brackets)
/// go; an extension after `x`/`ext` is dropped.
pub fn phone(text: &str) -> Option<String> {
    let lowered = text.trim().to_ascii_lowercase();
    let main = lowered.split(['x', '#']).next().unwrap_or_default().trim_start_matches("tel:");
    let plus = main.trim_start().starts_with('+');
    let digits: String = main.chars().filter(char::is_ascii_digit).collect();
    if digits.len() < 5 {
        return None;
    }
    Some(match (plus, digits.strip_prefix("00")) {
        (true, _) => format!("+{digits}"),
        (false, Some(rest)) => format!("+{rest}"),
        (false, None) => digits,
    })
}

/// Every usable address among `texts`, cleaned, without repeats, in order.
pub fn emails<'a>(texts: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    dedup(texts.into_iter().filter_map(email))
}

/// Every usable phone number among `texts`, cleaned, without repeats, in order.
pub fn phones<'a>(texts: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    dedup(texts.into_iter().filter_map(phone))
}

fn dedup(values: impl Iterator<Item = String>) -> Vec<String> {
    let mut kept: Vec<String> = Vec::new();
    for value in values {
        if !kept.contains(&value) {
            kept.push(value);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_trimmed_lowercased_and_placeholders_dropped() {
        assert_eq!(email("  Jane.Doe@Example.COM "), Some("jane.doe@example.com".into()));
        assert_eq!(email("mailto:a@b.io"), Some("a@b.io".into()));
        for bad in ["", "n/a", "jane@", "@example.com", "jane@localhost", "a b@c.de", "a@b.com, c@d.com"] {
            assert_eq!(email(bad), None, "{bad:?}");
        }
        assert_eq!(emails(["A@b.co", "a@b.co", "x"]), vec!["a@b.co".to_string()]);
    }

    #[test]
    fn phones_keep_digits_and_a_leading_plus() {
        assert_eq!(phone("+1 (555) 010-0199"), Some("+15550100199".into()));
        assert_eq!(phone("0044 20 7946 0958"), Some("+442079460958".into()));
        assert_eq!(phone("020.7946.0958 ext 12"), Some("02079460958".into()));
        assert_eq!(phone("tel:+34600000000"), Some("+34600000000".into()));
        for bad in ["", "-", "n/a", "12 34"] {
            assert_eq!(phone(bad), None, "{bad:?}");
        }
        assert_eq!(phones(["+1 555 0100", "+15550100", ""]), vec!["+15550100".to_string()]);
    }
}
