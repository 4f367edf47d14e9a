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
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::model::{EventResult, EventType, Normalized, RecordKind, Statement};
use crate::store::{Expected, Revision, StateWrite, StoreError};

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

/// A record: `(account, kind, record id)`.
type Key = (String, RecordKind, String);

/// What the decisions of a run not yet committed know. A worker decides a run of webhooks before
/// it commits them together, so each decision must see the ones before it.
#[derive(Default)]
pub(super) struct Overlay {
    /// State written by the run: the record, or `None` (removed).
    written: HashMap<Key, Option<Arc<Value>>>,
    /// What the run read from the store, as the first write of each record expects to find it
    /// (compare-and-set: a record another writer changed meanwhile fails the commit).
    read: HashMap<Key, Expected>,
}

impl Overlay {
    /// Write a record in the run; what the write expects of the store. Only a record's first
    /// write checks: the store checks writes in order, and a later one follows the first.
    fn write(&mut self, key: Key, record: Option<Arc<Value>>) -> Expected {
        let expected = if self.written.contains_key(&key) { Expected::Any } else { self.read.get(&key).copied().unwrap_or_default() };
        self.written.insert(key, record);
        expected
    }
}

/// Reads a record's committed state: (kind, record id) to the record and its revision, if stored.
pub(super) type StateLookup<'a> = dyn FnMut(RecordKind, &str) -> Result<Option<(Value, Revision)>, StoreError> + 'a;

/// Decide what `events` (one webhook's plugin output, in order) mean against what is stored.
///
/// `listed`: the events come from a listing of the PMS's records (an initial sync or a
/// reconciliation), not a webhook. A listed deletion of a record the daemon does not hold is then
/// dropped: the record was deleted before (its webhook was delivered, or an earlier pass saw it),
/// or never seen at all, and a listing re-reads the same cancelled records pass after pass.
///
/// Pure but for `stored`, which reads a record's committed state (the store, or a table in the
/// tests): decisions of the same run are read from `overlay` first and written to it, so each
/// sees the ones before it. Nothing is written anywhere else; the caller commits `state`.
pub(super) fn decide(
    account_id: &str,
    events: Vec<Normalized>,
    drop_unchanged: bool,
    listed: bool,
    overlay: &mut Overlay,
    stored: &mut StateLookup<'_>,
) -> Result<Decided, StoreError> {
    let mut decided = Decided { events: Vec::new(), state: Vec::new(), n_unchanged: 0 };
    let key = |kind: RecordKind, record_id: &str| (account_id.to_string(), kind, record_id.to_string());
    let mut stored = |kind: RecordKind, record_id: &str, overlay: &mut Overlay| -> Result<Option<Arc<Value>>, StoreError> {
        let key = key(kind, record_id);
        if let Some(value) = overlay.written.get(&key) {
            return Ok(value.clone());
        }
        let found = stored(kind, record_id)?;
        overlay.read.insert(key, found.as_ref().map_or(Expected::Absent, |(_, revision)| Expected::At(*revision)));
        Ok(found.map(|(value, _)| Arc::new(value)))
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
                if listed && stored(kind, &event.record_id, overlay)?.is_none() {
                    decided.n_unchanged += 1;
                    continue;
                }
                let expected = overlay.write(key(kind, &event.record_id), None);
                decided.state.push(StateWrite {
                    account_id: account_id.into(),
                    kind,
                    record_id: event.record_id.clone(),
                    record: None,
                    expected,
                });
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
                    if drop_unchanged && previous.as_deref() == Some(&day) {
                        continue;
                    }
                    changed.push(day.clone());
                    let day = Arc::new(day);
                    let expected = overlay.write(key(kind, &day_id), Some(day.clone()));
                    decided.state.push(StateWrite { account_id: account_id.into(), kind, record_id: day_id, record: Some(day), expected });
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
                // An update older than the state (a PMS retry or a reordered delivery arriving
                // after a newer version) would take receivers back in time: it is dropped and
                // the newer state kept.
                if previous.as_ref().is_some_and(|previous| is_older(&event.record, previous)) {
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
                let to_store = Arc::new(Value::Object(to_store));
                let expected = overlay.write(key(kind, &event.record_id), Some(to_store.clone()));
                decided.state.push(StateWrite {
                    account_id: account_id.into(),
                    kind,
                    record_id: event.record_id.clone(),
                    record: Some(to_store),
                    expected,
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

/// Whether `record` says it was last updated strictly before `previous` did. Both are rendered
/// records, whose `updatedAt` is `YYYY-MM-DDTHH:MM:SS.sssZ` (`model::time::render`), so the text
/// orders as the time does; a record without one is never older.
fn is_older(record: &Map<String, Value>, previous: &Value) -> bool {
    let updated_at = |value: Option<&Value>| value.and_then(Value::as_str).filter(|text| !text.is_empty()).map(str::to_owned);
    match (updated_at(record.get("updatedAt")), updated_at(previous.get("updatedAt"))) {
        (Some(now), Some(before)) => now.len() == before.len() && now < before,
        _ => false,
    }
}

/// Whether two records are the same but for volatile keys.
fn same_record(previous: &Value, current: &Map<String, Value>) -> bool {
    let Value::Object(previous) = previous else { return false };
    let significant = |map: &'_ Map<String, Value>| map.iter().filter(|(key, _)| !VOLATILE_KEYS.contains(&key.as_str())).count();
    // Maps compare as sets of keys (as `Map`'s own equality does), without copying either.
    significant(previous) == significant(current)
        && current.iter().filter(|(key, _)| !VOLATILE_KEYS.contains(&key.as_str())).all(|(key, value)| previous.get(key) == Some(value))
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A reservation as a plugin's rendered output would carry it.
    fn reservation(event_type: EventType, statement: Statement, id: &str, arrival: &str, updated_at: &str, guests: u32) -> Normalized {
        let record = json!({
            "id": id, "arrivalDate": arrival, "departureDate": "2026-07-10", "guests": guests,
            "updatedAt": updated_at, "previousArrivalDate": "", "previousDepartureDate": "",
        });
        Normalized {
            event_type,
            statement,
            record_id: id.into(),
            record: record.as_object().cloned().unwrap(),
            result: EventResult::Success,
            failure_reason: None,
        }
    }

    fn upsert(id: &str, arrival: &str, updated_at: &str, guests: u32) -> Normalized {
        reservation(EventType::ReservationCreated, Statement::Upserted, id, arrival, updated_at, guests)
    }

    fn calendar(property: &str, days: &[(&str, bool)]) -> Normalized {
        let days: Vec<Value> = days.iter().map(|(date, available)| json!({"date": date, "available": available})).collect();
        let record = json!({"propertyId": property, "dateWiseAvailability": days});
        Normalized {
            event_type: EventType::CalendarUpdated,
            statement: Statement::NotApplicable,
            record_id: property.into(),
            record: record.as_object().cloned().unwrap(),
            result: EventResult::Success,
            failure_reason: None,
        }
    }

    /// What one row expects of one delivered event.
    #[derive(Debug, PartialEq)]
    struct Seen {
        event_type: EventType,
        record_id: String,
        previous_arrival: Option<String>,
    }

    fn seen(event_type: EventType, record_id: &str, previous_arrival: Option<&str>) -> Seen {
        Seen { event_type, record_id: record_id.into(), previous_arrival: previous_arrival.map(str::to_owned) }
    }

    struct Row {
        name: &'static str,
        /// Committed state before the webhook: (kind, record id, record).
        stored: Vec<(RecordKind, &'static str, Value)>,
        events: Vec<Normalized>,
        drop_unchanged: bool,
        expected: Vec<Seen>,
        n_unchanged: u32,
        /// Record ids whose state is written (`Some`: set, `None`: removed), in order.
        state: Vec<(&'static str, bool)>,
    }

    fn stored_reservation(arrival: &str, updated_at: &str, guests: u32) -> Value {
        Value::Object(upsert("r1", arrival, updated_at, guests).record)
    }

    #[test]
    fn the_rules_of_created_updated_unchanged_and_deleted() {
        use EventType::*;
        let t0 = "2026-05-01T10:00:00.000Z";
        let t1 = "2026-05-01T11:00:00.000Z";
        let rows = vec![
            Row {
                name: "a record never seen is created",
                stored: vec![],
                events: vec![upsert("r1", "2026-07-01", t0, 2)],
                drop_unchanged: true,
                expected: vec![seen(ReservationCreated, "r1", None)],
                n_unchanged: 0,
                state: vec![("r1", true)],
            },
            Row {
                name: "a PMS that says updated is believed when the daemon has no state",
                stored: vec![],
                events: vec![reservation(ReservationUpdated, Statement::Updated, "r1", "2026-07-01", t0, 2)],
                drop_unchanged: true,
                expected: vec![seen(ReservationUpdated, "r1", None)],
                n_unchanged: 0,
                state: vec![("r1", true)],
            },
            Row {
                name: "a record seen before is updated, even when the PMS says created",
                stored: vec![(RecordKind::Reservation, "r1", stored_reservation("2026-07-01", t0, 2))],
                events: vec![reservation(ReservationCreated, Statement::Created, "r1", "2026-07-01", t1, 3)],
                drop_unchanged: true,
                expected: vec![seen(ReservationUpdated, "r1", None)],
                n_unchanged: 0,
                state: vec![("r1", true)],
            },
            Row {
                name: "moved dates fill the previous dates",
                stored: vec![(RecordKind::Reservation, "r1", stored_reservation("2026-07-01", t0, 2))],
                events: vec![upsert("r1", "2026-07-03", t1, 2)],
                drop_unchanged: true,
                expected: vec![seen(ReservationUpdated, "r1", Some("2026-07-01"))],
                n_unchanged: 0,
                state: vec![("r1", true)],
            },
            Row {
                name: "an update that changes nothing but updatedAt is dropped",
                stored: vec![(RecordKind::Reservation, "r1", stored_reservation("2026-07-01", t0, 2))],
                events: vec![upsert("r1", "2026-07-01", t1, 2)],
                drop_unchanged: true,
                expected: vec![],
                n_unchanged: 1,
                state: vec![],
            },
            Row {
                name: "the same update is delivered when dropping is off",
                stored: vec![(RecordKind::Reservation, "r1", stored_reservation("2026-07-01", t0, 2))],
                events: vec![upsert("r1", "2026-07-01", t1, 2)],
                drop_unchanged: false,
                expected: vec![seen(ReservationUpdated, "r1", None)],
                n_unchanged: 0,
                state: vec![("r1", true)],
            },
            Row {
                name: "an update older than the state is dropped and the state kept",
                stored: vec![(RecordKind::Reservation, "r1", stored_reservation("2026-07-03", t1, 4))],
                events: vec![upsert("r1", "2026-07-01", t0, 2)],
                drop_unchanged: false,
                expected: vec![],
                n_unchanged: 1,
                state: vec![],
            },
            Row {
                name: "deleted removes the state, and the next upsert of the same webhook is created",
                stored: vec![(RecordKind::Reservation, "r1", stored_reservation("2026-07-01", t0, 2))],
                events: vec![
                    reservation(ReservationDeleted, Statement::NotApplicable, "r1", "2026-07-01", t0, 2),
                    upsert("r1", "2026-07-05", t1, 2),
                ],
                drop_unchanged: true,
                expected: vec![seen(ReservationDeleted, "r1", None), seen(ReservationCreated, "r1", None)],
                n_unchanged: 0,
                state: vec![("r1", false), ("r1", true)],
            },
            Row {
                name: "events of one webhook see each other: created then updated with previous dates",
                stored: vec![],
                events: vec![upsert("r1", "2026-07-01", t0, 2), upsert("r1", "2026-07-02", t1, 2)],
                drop_unchanged: true,
                expected: vec![seen(ReservationCreated, "r1", None), seen(ReservationUpdated, "r1", Some("2026-07-01"))],
                n_unchanged: 0,
                state: vec![("r1", true), ("r1", true)],
            },
            Row {
                name: "a calendar delivers only its changed days",
                stored: vec![(RecordKind::Calendar, "p1/2026-07-01", json!({"date": "2026-07-01", "available": true}))],
                events: vec![calendar("p1", &[("2026-07-01", true), ("2026-07-02", false)])],
                drop_unchanged: true,
                expected: vec![seen(CalendarUpdated, "p1", None)],
                n_unchanged: 0,
                state: vec![("p1/2026-07-02", true)],
            },
            Row {
                name: "a calendar whose days are all known is unchanged",
                stored: vec![(RecordKind::Calendar, "p1/2026-07-01", json!({"date": "2026-07-01", "available": true}))],
                events: vec![calendar("p1", &[("2026-07-01", true)])],
                drop_unchanged: true,
                expected: vec![],
                n_unchanged: 1,
                state: vec![],
            },
            Row {
                name: "an incomplete record is delivered as it came and writes no state",
                stored: vec![],
                events: vec![Normalized {
                    result: EventResult::Failure,
                    failure_reason: Some("PMS API down".into()),
                    ..upsert("r1", "2026-07-01", t0, 2)
                }],
                drop_unchanged: true,
                expected: vec![seen(ReservationCreated, "r1", None)],
                n_unchanged: 0,
                state: vec![],
            },
        ];
        for row in rows {
            let table: HashMap<(RecordKind, String), Value> =
                row.stored.iter().map(|(kind, id, record)| ((*kind, id.to_string()), record.clone())).collect();
            let mut overlay = Overlay::default();
            let decided = decide("acc", row.events, row.drop_unchanged, false, &mut overlay, &mut |kind, id| {
                Ok(table.get(&(kind, id.to_string())).cloned().map(|record| (record, Revision(7))))
            })
            .unwrap();
            let got: Vec<Seen> = decided
                .events
                .iter()
                .map(|decision| Seen {
                    event_type: decision.event_type,
                    record_id: decision.record_id.clone(),
                    previous_arrival: decision
                        .record
                        .get("previousArrivalDate")
                        .and_then(Value::as_str)
                        .filter(|text| !text.is_empty())
                        .map(str::to_owned),
                })
                .collect();
            assert_eq!(got, row.expected, "{}", row.name);
            assert_eq!(decided.n_unchanged, row.n_unchanged, "{}: unchanged", row.name);
            let writes: Vec<(&str, bool)> = decided.state.iter().map(|write| (write.record_id.as_str(), write.record.is_some())).collect();
            assert_eq!(writes, row.state, "{}: state writes", row.name);
            for write in &decided.state {
                if let Some(Value::Object(record)) = write.record.as_deref() {
                    assert_eq!(
                        record.get("previousArrivalDate").and_then(Value::as_str).unwrap_or(""),
                        "",
                        "{}: stored previous dates",
                        row.name
                    );
                }
            }
        }
    }

    /// A listing (initial sync, reconciliation) goes through the same rules as a webhook, and a
    /// listed deletion of a record the daemon does not hold is dropped (re-listed cancellations).
    #[test]
    fn a_listing_is_decided_like_a_webhook_and_never_deletes_twice() {
        let (t0, t1) = ("2026-06-01T10:00:00.000Z", "2026-06-02T10:00:00.000Z");
        let table: HashMap<(RecordKind, String), Value> = [
            ((RecordKind::Reservation, "known".to_string()), json!({"id": "known", "arrivalDate": "2026-07-01", "departureDate": "2026-07-10", "guests": 2, "updatedAt": t1, "previousArrivalDate": "", "previousDepartureDate": ""})),
        ]
        .into_iter()
        .collect();
        let deleted = |id: &str| reservation(EventType::ReservationDeleted, Statement::NotApplicable, id, "2026-07-01", t0, 2);
        let run = |events: Vec<Normalized>| {
            let mut overlay = Overlay::default();
            let decided = decide("acc", events, true, true, &mut overlay, &mut |kind, id| {
                Ok(table.get(&(kind, id.to_string())).cloned().map(|record| (record, Revision(7))))
            })
            .unwrap();
            decided.events.iter().map(|decision| (decision.event_type, decision.record_id.clone())).collect::<Vec<_>>()
        };
        assert_eq!(run(vec![upsert("known", "2026-07-01", t1, 2)]), vec![], "equal to the state: nothing");
        assert_eq!(run(vec![upsert("known", "2026-07-05", t0, 2)]), vec![], "older than the state: never replaces it");
        assert_eq!(run(vec![upsert("known", "2026-07-05", t1, 3)]), vec![(EventType::ReservationUpdated, "known".to_string())]);
        assert_eq!(run(vec![upsert("new", "2026-07-05", t1, 3)]), vec![(EventType::ReservationCreated, "new".to_string())]);
        assert_eq!(run(vec![deleted("known")]), vec![(EventType::ReservationDeleted, "known".to_string())]);
        assert_eq!(run(vec![deleted("gone")]), vec![], "a deletion of a record not held is not delivered again");
    }

    /// Compare-and-set: the first write of a record expects what the run read of it, a later
    /// write of the same record follows the first, and a webhook's deletion read nothing.
    #[test]
    fn a_first_write_expects_what_the_run_read_and_a_later_one_follows_it() {
        let (t0, t1) = ("2026-06-01T10:00:00.000Z", "2026-06-02T10:00:00.000Z");
        let deleted = reservation(EventType::ReservationDeleted, Statement::NotApplicable, "gone", "2026-07-01", t0, 2);
        let events =
            vec![upsert("known", "2026-07-01", t1, 3), upsert("new", "2026-07-01", t0, 2), upsert("new", "2026-07-02", t1, 2), deleted];
        let mut overlay = Overlay::default();
        let decided = decide("acc", events, true, false, &mut overlay, &mut |kind, id| {
            Ok((kind == RecordKind::Reservation && id == "known").then(|| (stored_reservation("2026-07-01", t0, 2), Revision(5))))
        })
        .unwrap();
        let expected: Vec<(&str, Expected)> = decided.state.iter().map(|write| (write.record_id.as_str(), write.expected)).collect();
        assert_eq!(
            expected,
            vec![("known", Expected::At(Revision(5))), ("new", Expected::Absent), ("new", Expected::Any), ("gone", Expected::Any)]
        );
    }
}
