//! Bounded list answers: every list route of the admin API pages with `limit` and `after`, and no
//! answer grows past a byte budget however large the stored items are.
//!
//! A route parses `limit` with its [`Limits`] (400 `invalid_limit` when it is not a number from 1
//! to the route's maximum), walks its items in list order and [`Page::push`]es each with the
//! cursor that continues after it, until `push` says the page is full: `limit` items, or
//! [`PAGE_BUDGET_BYTES`] of serialized items. [`Page::finish`] answers `{"<items>": [...], "next":
//! <cursor> | null}`; `next` is set whenever the route stopped before the end of the list, and the
//! client passes it back as `after`.
//!
//! Listed items are excerpts: a long string is cut to [`MAX_STRING_BYTES`], a long array or nested
//! object to its first [`MAX_ENTRIES`] entries, and an item still larger than
//! [`ITEM_BUDGET_BYTES`] is cut harder; such an item carries `"truncated": true` and its
//! single-item route (`GET /v1/events/{id}`, `GET /v1/inbox/{id}`, ...) returns it whole.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::http::ApiError;

/// Largest sum of serialized items in one list answer.
pub(super) const PAGE_BUDGET_BYTES: usize = 4 << 20;
/// Largest serialized item in a list answer (so the first item of a page always fits).
pub(super) const ITEM_BUDGET_BYTES: usize = 256 << 10;
/// Longest string of a listed item, in bytes.
pub(super) const MAX_STRING_BYTES: usize = 8 << 10;
/// Most elements of an array (or entries of a nested object) in a listed item.
pub(super) const MAX_ENTRIES: usize = 200;
/// The harder cut for items still over [`ITEM_BUDGET_BYTES`].
const STRICT_STRING_BYTES: usize = 256;
const STRICT_ENTRIES: usize = 16;

/// The paging parameters every list route takes (route-specific filters are parsed beside them).
#[derive(Debug, Default, Deserialize)]
pub(super) struct PageQuery {
    /// Items per page, as sent (validated by [`Limits::parse`]).
    pub limit: Option<String>,
    /// The previous page's `next`.
    pub after: Option<String>,
}

/// A route's default and largest `limit`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    /// Items per page without `limit`.
    pub default: usize,
    /// Largest `limit` accepted.
    pub max: usize,
}

impl Limits {
    /// The page size asked for, or 400 `invalid_limit`.
    pub fn parse(&self, limit: Option<&str>) -> Result<usize, ApiError> {
        let Some(text) = limit else { return Ok(self.default) };
        match text.trim().parse::<usize>() {
            Ok(limit) if (1..=self.max).contains(&limit) => Ok(limit),
            _ => Err(ApiError::bad_request("invalid_limit", format!("limit {text:?} must be a number from 1 to {}", self.max))),
        }
    }
}

/// What continues a list after an item.
#[derive(Debug, Clone)]
pub(super) enum Cursor {
    /// An id that sorts as text (account, webhook, event, plugin name).
    Text(String),
    /// A numeric id (delivery, inbox entry).
    Number(u64),
}

/// One page being filled.
#[derive(Debug)]
pub(super) struct Page {
    items: Vec<Value>,
    bytes: usize,
    limit: usize,
    last: Option<Cursor>,
    more: bool,
}

impl Page {
    /// An empty page of at most `limit` items.
    pub fn new(limit: usize) -> Self {
        Self { items: Vec::new(), bytes: 0, limit, last: None, more: false }
    }

    /// Add an item (as an excerpt, see the module header) that `cursor` continues after. `false`
    /// when the page is full and the item was not added: stop walking, the answer gets a `next`.
    pub fn push(&mut self, mut item: Value, cursor: Cursor) -> bool {
        if self.items.len() >= self.limit {
            self.more = true;
            return false;
        }
        let size = excerpt(&mut item);
        if !self.items.is_empty() && self.bytes + size + 1 > PAGE_BUDGET_BYTES {
            self.more = true;
            return false;
        }
        self.bytes += size + 1;
        self.items.push(item);
        self.last = Some(cursor);
        true
    }

    /// Say that the list goes on after the last item added even though the walk ended (the
    /// source was cut short by the route's own scan limit).
    pub fn set_more(&mut self) {
        self.more = true;
    }

    /// `{"<key>": [items], "next": cursor | null}`.
    pub fn finish(self, key: &str) -> Value {
        let next = match (self.more, self.last) {
            (true, Some(Cursor::Text(text))) => Value::String(text),
            (true, Some(Cursor::Number(number))) => Value::String(number.to_string()),
            _ => Value::Null,
        };
        let mut answer = Map::new();
        answer.insert(key.to_string(), Value::Array(self.items));
        answer.insert("next".into(), next);
        Value::Object(answer)
    }
}

/// Cut `item` down to a list excerpt in place; its serialized size afterwards.
pub(super) fn excerpt(item: &mut Value) -> usize {
    let mut truncated = cut(item, MAX_STRING_BYTES, MAX_ENTRIES, 0);
    let mut size = serialized_len(item);
    if size > ITEM_BUDGET_BYTES {
        truncated |= cut(item, STRICT_STRING_BYTES, STRICT_ENTRIES, 0);
        size = serialized_len(item);
    }
    if size > ITEM_BUDGET_BYTES
        && let Value::Object(fields) = item
    {
        // Still too large: keep the top-level scalars (ids, statuses, times), drop the rest.
        for value in fields.values_mut() {
            if value.is_array() || value.is_object() {
                *value = Value::Null;
            }
        }
        truncated = true;
    }
    if truncated && let Value::Object(fields) = item {
        fields.insert("truncated".into(), json!(true));
        size = serialized_len(item);
    }
    size
}

fn serialized_len(value: &Value) -> usize {
    serde_json::to_vec(value).map_or(usize::MAX, |bytes| bytes.len())
}

/// Cut strings longer than `max_string` bytes and arrays and nested objects longer than
/// `max_entries`; the top-level object (the item's own fields) keeps every field. Whether
/// anything was cut.
fn cut(value: &mut Value, max_string: usize, max_entries: usize, depth: usize) -> bool {
    match value {
        Value::String(text) if text.len() > max_string => {
            let mut end = max_string;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
            true
        }
        Value::Array(elements) => {
            let mut truncated = elements.len() > max_entries;
            elements.truncate(max_entries);
            for element in elements.iter_mut() {
                truncated |= cut(element, max_string, max_entries, depth + 1);
            }
            truncated
        }
        Value::Object(fields) => {
            let mut truncated = false;
            if depth > 0 && fields.len() > max_entries {
                let kept: Map<String, Value> = std::mem::take(fields).into_iter().take(max_entries).collect();
                *fields = kept;
                truncated = true;
            }
            for field in fields.values_mut() {
                truncated |= cut(field, max_string, max_entries, depth + 1);
            }
            truncated
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_numbers_within_the_route_maximum() {
        let limits = Limits { default: 100, max: 1000 };
        assert_eq!(limits.parse(None).unwrap(), 100);
        assert_eq!(limits.parse(Some("1000")).unwrap(), 1000);
        for bad in ["0", "1001", "-1", "ten", "", "1e3", "18446744073709551616"] {
            let error = limits.parse(Some(bad)).unwrap_err();
            assert_eq!((error.status.as_u16(), error.code), (400, "invalid_limit"), "{bad:?}");
        }
    }

    #[test]
    fn big_items_are_excerpted_and_marked() {
        let mut small = json!({"id": "a", "record": {"name": "short"}});
        let size = excerpt(&mut small);
        assert_eq!(small, json!({"id": "a", "record": {"name": "short"}}), "small items are untouched");
        assert_eq!(size, serde_json::to_vec(&small).unwrap().len());

        let mut long = json!({"id": "b", "error": "é".repeat(10_000), "eventIds": (0..1000).collect::<Vec<_>>()});
        excerpt(&mut long);
        assert!(long["error"].as_str().unwrap().len() <= MAX_STRING_BYTES, "cut on a character boundary");
        assert_eq!(long["eventIds"].as_array().unwrap().len(), MAX_ENTRIES);
        assert_eq!((long["id"].as_str(), long["truncated"].as_bool()), (Some("b"), Some(true)));

        // Many medium strings: the first cut leaves too much, the strict one fits.
        let mut wide = json!({"id": "c", "record": {"lines": vec!["x".repeat(MAX_STRING_BYTES); MAX_ENTRIES]}});
        assert!(excerpt(&mut wide) <= ITEM_BUDGET_BYTES);
        assert_eq!(wide["truncated"], true);
    }

    #[test]
    fn pages_stop_at_the_limit_or_the_byte_budget_and_say_where_to_go_on() {
        let mut page = Page::new(2);
        assert!(page.push(json!({"id": "a"}), Cursor::Text("a".into())));
        assert!(page.push(json!({"id": "b"}), Cursor::Text("b".into())));
        assert!(!page.push(json!({"id": "c"}), Cursor::Text("c".into())));
        assert_eq!(page.finish("items"), json!({"items": [{"id": "a"}, {"id": "b"}], "next": "b"}));

        let mut page = Page::new(2);
        assert!(page.push(json!({"id": 7}), Cursor::Number(7)));
        assert_eq!(page.finish("items"), json!({"items": [{"id": 7}], "next": null}), "the end of the list");

        let big = json!({"blob": vec!["y".repeat(MAX_STRING_BYTES - 100); 30]});
        let mut page = Page::new(1000);
        let mut pushed = 0;
        while page.push(big.clone(), Cursor::Number(pushed)) {
            pushed += 1;
        }
        assert!(pushed > 1 && (pushed as usize) * serialized_len(&big) <= PAGE_BUDGET_BYTES, "{pushed}");
        assert_eq!(page.finish("items")["next"], json!((pushed - 1).to_string()));
    }
}
