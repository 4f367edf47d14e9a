//! State: what the daemon already knows decides what is delivered.
//!
//! For each rendered event this compares the record with the stored one: a reservation the
//! daemon has never seen is `reservation.created` (unless the PMS said "updated": then it stays an
//! update, as the PMS knows better than a daemon that started late); one it has seen is
//! `reservation.updated`, with `previousArrivalDate`/`previousDepartureDate` set when the dates
//! moved. An update that changes nothing in the unified record (ignoring `updatedAt`) is dropped
//! when `drop_unchanged_updates` is on. Calendars are kept per day, and only changed days are
//! delivered. Events of one webhook see each other's effects, in order.

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::model::{EventResult, EventType, Normalized, RecordKind, Statement};
use crate::store::{StateWrite, Store, StoreError};

/// A decided event, ready for the log.
pub(super) struct Decision {
    /// The event's place in the plugin's output (its id derives from it).
    pub(super) position: usize,
    pub(super) event_type: EventType,
    pub(super) record_id: String,
    pub(super) record: Map<String, Value>,
    pub(super) result: EventResult,
    pub(super) failure_reason: Option<String>,
}

/// Everything decided for one webhook.
pub(super) struct Decided {
    pub(super) events: Vec<Decision>,
    pub(super) state: Vec<StateWrite>,
    pub(super) n_unchanged: u32,
}

/// Keys ignored when deciding whether an update changed anything.
const VOLATILE_KEYS: &[&str] = &["updatedAt", "previousArrivalDate", "previousDepartureDate"];

/// State written by decisions not yet committed: `(account, kind, record id)` to the record (or
/// `None`, removed). A worker decides a run of webhooks before it commits them together, so each
/// decision must see the ones before it.
pub(super) type Overlay = HashMap<(String, RecordKind, String), Option<Value>>;

pub(super) fn decide(
    store: &Store,
    account_id: &str,
    events: Vec<Normalized>,
    drop_unchanged: bool,
    overlay: &mut Overlay,
) -> Result<Decided, StoreError> {
    let mut decided = Decided { events: Vec::new(), state: Vec::new(), n_unchanged: 0 };
    let key = |kind: RecordKind, record_id: &str| (account_id.to_string(), kind, record_id.to_string());
    let stored = |kind: RecordKind, record_id: &str, overlay: &Overlay| -> Result<Option<Value>, StoreError> {
        match overlay.get(&key(kind, record_id)) {
            Some(value) => Ok(value.clone()),
            None => store.get_state(account_id, kind, record_id),
        }
    };
    for (position, event) in events.into_iter().enumerate() {
        if event.result == EventResult::Failure {
            decided.events.push(Decision {
                position,
                event_type: event.event_type,
                record_id: event.record_id,
                record: event.record,
                result: event.result,
                failure_reason: event.failure_reason,
            });
            continue;
        }
        let kind = event.record_kind();
        match event.event_type {
            EventType::ReservationDeleted => {
                overlay.insert(key(kind, &event.record_id), None);
                decided.state.push(StateWrite { account_id: account_id.into(), kind, record_id: event.record_id.clone(), record: None });
                decided.events.push(plain(position, event));
            }
            EventType::CalendarUpdated => {
                let mut record = event.record;
                let days = match record.get_mut("dateWiseAvailability") {
                    Some(Value::Array(days)) => std::mem::take(days),
                    _ => Vec::new(),
                };
                let mut changed = Vec::new();
                for day in days {
                    let date = day.get("date").and_then(Value::as_str).unwrap_or_default().to_string();
                    let day_id = format!("{}/{date}", event.record_id);
                    let previous = stored(kind, &day_id, overlay)?;
                    if drop_unchanged && previous.as_ref() == Some(&day) {
                        continue;
                    }
                    overlay.insert(key(kind, &day_id), Some(day.clone()));
                    decided.state.push(StateWrite { account_id: account_id.into(), kind, record_id: day_id, record: Some(day.clone()) });
                    changed.push(day);
                }
                if changed.is_empty() {
                    decided.n_unchanged += 1;
                    continue;
                }
                record.insert("dateWiseAvailability".into(), Value::Array(changed));
                decided.events.push(Decision {
                    position,
                    event_type: EventType::CalendarUpdated,
                    record_id: event.record_id,
                    record,
                    result: EventResult::Success,
                    failure_reason: None,
                });
            }
            EventType::ReservationCreated | EventType::ReservationUpdated | EventType::ConversationUpdated => {
                let previous = stored(kind, &event.record_id, overlay)?;
                if drop_unchanged && previous.as_ref().is_some_and(|previous| same_record(previous, &event.record)) {
                    decided.n_unchanged += 1;
                    continue;
                }
                let mut record = event.record;
                let event_type = match (kind, &previous, event.statement) {
                    (RecordKind::Reservation, None, Statement::Updated) => EventType::ReservationUpdated,
                    (RecordKind::Reservation, None, _) => EventType::ReservationCreated,
                    (RecordKind::Reservation, Some(previous), _) => {
                        fill_previous(&mut record, previous, "arrivalDate", "previousArrivalDate");
                        fill_previous(&mut record, previous, "departureDate", "previousDepartureDate");
                        EventType::ReservationUpdated
                    }
                    _ => event.event_type,
                };
                let mut to_store = record.clone();
                for key in ["previousArrivalDate", "previousDepartureDate"] {
                    if to_store.contains_key(key) {
                        to_store.insert(key.into(), Value::String(String::new()));
                    }
                }
                let to_store = Value::Object(to_store);
                overlay.insert(key(kind, &event.record_id), Some(to_store.clone()));
                decided.state.push(StateWrite {
                    account_id: account_id.into(),
                    kind,
                    record_id: event.record_id.clone(),
                    record: Some(to_store),
                });
                decided.events.push(Decision {
                    position,
                    event_type,
                    record_id: event.record_id,
                    record,
                    result: EventResult::Success,
                    failure_reason: None,
                });
            }
        }
    }
    Ok(decided)
}

fn plain(position: usize, event: Normalized) -> Decision {
    Decision {
        position,
        event_type: event.event_type,
        record_id: event.record_id,
        record: event.record,
        result: event.result,
        failure_reason: event.failure_reason,
    }
}

/// Whether two records are the same but for volatile keys.
fn same_record(previous: &Value, current: &Map<String, Value>) -> bool {
    let Value::Object(previous) = previous else { return false };
    let significant = |map: &Map<String, Value>| {
        map.iter()
            .filter(|(key, _)| !VOLATILE_KEYS.contains(&key.as_str()))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect::<Map<_, _>>()
    };
    significant(previous) == significant(current)
}

/// Set `previous_key` to the stored value of `key` when it differs from the new one.
fn fill_previous(record: &mut Map<String, Value>, previous: &Value, key: &str, previous_key: &str) {
    let before = previous.get(key).cloned().unwrap_or(Value::Null);
    let now = record.get(key).cloned().unwrap_or(Value::Null);
    if before != now {
        let text = before.as_str().unwrap_or_default().to_string();
        record.insert(previous_key.into(), Value::String(text));
    }
}
