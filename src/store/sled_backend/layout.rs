//! The index records sled keeps in storage format 2 (postcard; every one is small: the large
//! values live in segment files and are pointed at by a [`Loc`]). postcard writes every field in
//! order and reads them back the same way, so these types change only with a new format number
//! (and a migration); `#[serde(default)]` here documents intent, it does not make a field optional.

use serde::{Deserialize, Serialize};

use super::segments::Loc;
use crate::model::{EventResult, EventType};
use crate::store::{Attempt, Delivery, InboxOutcome};

/// The storage format this backend writes, kept in `meta` under [`FORMAT_KEY`]. Format 3 is
/// format 2 plus [`Fate::Normalized`] (a new enum variant: every format-2 record reads as
/// before), so a format-2 store is opened in place and marked 3.
pub(crate) const FORMAT: &str = "3";
/// The earlier format this release opens in place (see [`FORMAT`]).
pub(crate) const FORMAT_OPENED_IN_PLACE: &str = "2";
pub(crate) const FORMAT_KEY: &str = "storage_format";
/// Added to sled's id generator (a data dir migrated from format 1 starts above its ids).
pub(crate) const ID_BASE_KEY: &str = "id_base";
/// Every inbox entry below this id is finished (start-up reads the inbox from here).
pub(crate) const INBOX_FLOOR_KEY: &str = "inbox_floor";
/// Every delivery below this id is finished or dead (start-up reads deliveries from here).
pub(crate) const DELIVERY_FLOOR_KEY: &str = "delivery_floor";
/// Every inbox entry below this id holds no unwritten delivery (see [`Fate::Normalized`]);
/// start-up reads the inbox from the lower of this and [`INBOX_FLOOR_KEY`]. Absent: none.
pub(crate) const UNWRITTEN_FLOOR_KEY: &str = "unwritten_floor";

/// `inbox` tree: a raw webhook's place, account, arrival and fate.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct InboxRecord {
    pub(crate) account_id: String,
    pub(crate) received_at_ms: u64,
    pub(crate) loc: Loc,
    pub(crate) fate: Fate,
}

/// Whether an inbox entry waits for normalization, and what became of it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) enum Fate {
    /// To be normalized as `generation`; `previous` is the outcome of the run before (requeued).
    Pending { generation: u32, previous: Option<InboxOutcome> },
    /// Normalized, skipped or failed.
    Finished(InboxOutcome),
    /// Normalized into events with deliveries. The deliveries are written here, as they were
    /// created, and nowhere else until their first attempt (or any other change) writes their
    /// own `deliveries` record: one sled write per event and subscription fewer on the hot path.
    /// Start-up finds the unwritten ones from [`UNWRITTEN_FLOOR_KEY`]. Appended last, so records
    /// of format 2 decode unchanged.
    Normalized { outcome: InboxOutcome, deliveries: Vec<Delivery> },
}

impl Fate {
    pub(crate) fn outcome(&self) -> Option<&InboxOutcome> {
        match self {
            Fate::Pending { previous, .. } => previous.as_ref(),
            Fate::Finished(outcome) | Fate::Normalized { outcome, .. } => Some(outcome),
        }
    }
}

/// `events` tree: what the log's filters read without opening the body, the body's place, and
/// the event's deliveries.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct EventRecord {
    pub(crate) loc: Loc,
    /// The inbox entry it came from.
    pub(crate) inbox_id: u64,
    pub(crate) account_id: String,
    pub(crate) event_type: EventType,
    pub(crate) record_id: String,
    pub(crate) result: EventResult,
    pub(crate) timestamp: String,
    #[serde(default)]
    pub(crate) deliveries: Vec<u64>,
}

/// `deliveries` tree: a delivery, its attempts, and its place in its lane.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct DeliveryRecord {
    pub(crate) delivery: Delivery,
    #[serde(default)]
    pub(crate) attempts: Vec<Attempt>,
    /// Order within the lane: the id, or a later id for a dead letter revived at the lane's tail.
    pub(crate) seq: u64,
}

impl DeliveryRecord {
    /// A new delivery's record: no attempts yet, ordered by its id.
    pub(crate) fn new(delivery: Delivery) -> Self {
        Self { seq: delivery.id, delivery, attempts: Vec::new() }
    }
}

/// `dead` tree value: whether the dead letter holds the head of its lane.
pub(crate) fn dead_value(holds_lane: bool) -> [u8; 1] {
    [u8::from(holds_lane)]
}
