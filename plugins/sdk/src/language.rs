//! Language names for `preferred-language`.
//!
//! The seed renders `{"code": "en", "name": "ENGLISH"}`; PMSs mostly send only a code or a locale
//! ("en", "en-US", "pt_BR"). This table covers the languages vacation-rental channels offer.

use crate::model::Language;

const NAMES: &[(&str, &str)] = &[
    ("ar", "ARABIC"),
    ("bg", "BULGARIAN"),
    ("ca", "CATALAN"),
    ("cs", "CZECH"),
    ("da", "DANISH"),
    ("de", "GERMAN"),
    ("el", "GREEK"),
    ("en", "ENGLISH"),
    ("es", "SPANISH"),
    ("et", "ESTONIAN"),
    ("fi", "FINNISH"),
    ("fr", "FRENCH"),
    ("he", "HEBREW"),
    ("hi", "HINDI"),
    ("hr", "CROATIAN"),
    ("hu", "HUNGARIAN"),
    ("id", "INDONESIAN"),
    ("is", "ICELANDIC"),
    ("it", "ITALIAN"),
    ("ja", "JAPANESE"),
    ("ko", "KOREAN"),
    ("lt", "LITHUANIAN"),
    ("lv", "LATVIAN"),
    ("ms", "MALAY"),
    ("nl", "DUTCH"),
    ("no", "NORWEGIAN"),
    ("nb", "NORWEGIAN"),
    ("pl", "POLISH"),
    ("pt", "PORTUGUESE"),
    ("ro", "ROMANIAN"),
    ("ru", "RUSSIAN"),
    ("sk", "SLOVAK"),
    ("sl", "SLOVENIAN"),
    ("sr", "SERBIAN"),
    ("sv", "SWEDISH"),
    ("th", "THAI"),
    ("tr", "TURKISH"),
    ("uk", "UKRAINIAN"),
    ("vi", "VIETNAMESE"),
    ("zh", "CHINESE"),
];

/// The language of a code or locale as the PMS wrote it; the code is kept as written, the name
/// looked up from its first two letters.
pub fn from_code(code: &str) -> Option<Language> {
    let code = code.trim();
    if code.is_empty() {
        return None;
    }
    let primary = code.get(..2).unwrap_or(code).to_ascii_lowercase();
    let name = NAMES.iter().find(|(known, _)| *known == primary).map(|(_, name)| name.to_string());
    Some(Language { code: code.to_string(), name })
}

#[cfg(test)]
mod tests {
    #[test]
    fn locales_resolve_by_primary_subtag() {
        let language = super::from_code("pt_BR").unwrap();
        assert_eq!(language.code, "pt_BR");
        assert_eq!(language.name.as_deref(), Some("PORTUGUESE"));
        assert_eq!(super::from_code("xx").unwrap().name, None);
        assert!(super::from_code(" ").is_none());
    }
}
