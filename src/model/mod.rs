//! The unified model as the host sees it: event types, ids, and the JSON of the seed.
//!
//! Plugins hand the host typed WIT records (`plugin::bindings`); this module validates them and
//! renders the seed's JSON: camelCase keys in the seed's order, `null` where a value is absent,
//! ids as strings, timestamps as `YYYY-MM-DDTHH:MM:SS.sssZ`. The three spellings of a field (WIT
//! kebab-case, Rust snake_case, JSON camelCase) meet only here. The model knows nothing of HTTP or
//! of storage.

mod render;
pub mod time;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use render::{InvalidOutput, Normalized, Statement, render_event};

/// The unified event types a subscription can select (the seed's `hook.eventType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventType {
    /// A reservation seen for the first time.
    #[serde(rename = "reservation.created")]
    ReservationCreated,
    /// A known reservation changed (a cancellation is an update with status `CANCELLED`).
    #[serde(rename = "reservation.updated")]
    ReservationUpdated,
    /// The PMS removed the reservation.
    #[serde(rename = "reservation.deleted")]
    ReservationDeleted,
    /// A conversation got a new or changed message.
    #[serde(rename = "conversation.updated")]
    ConversationUpdated,
    /// Days of a property's calendar changed.
    #[serde(rename = "calendar.updated")]
    CalendarUpdated,
}

impl EventType {
    /// Every event type, in the order the docs list them.
    pub const ALL: [EventType; 5] = [
        EventType::ReservationCreated,
        EventType::ReservationUpdated,
        EventType::ReservationDeleted,
        EventType::ConversationUpdated,
        EventType::CalendarUpdated,
    ];

    /// The wire name ("reservation.created").
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::ReservationCreated => "reservation.created",
            EventType::ReservationUpdated => "reservation.updated",
            EventType::ReservationDeleted => "reservation.deleted",
            EventType::ConversationUpdated => "conversation.updated",
            EventType::CalendarUpdated => "calendar.updated",
        }
    }

    /// The event type with this wire name.
    pub fn parse(name: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|event_type| event_type.as_str() == name)
    }

    /// The kind of record the event carries.
    pub fn record_kind(self) -> RecordKind {
        match self {
            EventType::ReservationCreated | EventType::ReservationUpdated | EventType::ReservationDeleted => RecordKind::Reservation,
            EventType::ConversationUpdated => RecordKind::Conversation,
            EventType::CalendarUpdated => RecordKind::Calendar,
        }
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// The kinds of record the daemon keeps state for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordKind {
    /// A reservation.
    Reservation,
    /// A conversation with its messages.
    Conversation,
    /// One property's calendar (state is kept per day).
    Calendar,
}

impl RecordKind {
    /// The name used in storage keys and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Reservation => "reservation",
            RecordKind::Conversation => "conversation",
            RecordKind::Calendar => "calendar",
        }
    }
}

/// The seed's `data.result`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum EventResult {
    /// The record is complete.
    Success,
    /// The record could not be completed; it holds at least its id.
    Failure,
}

/// `text` cut to at most `max_chars` characters (with a marker saying so), for strings a plugin
/// supplies that the daemon keeps: a plugin may echo its whole input into an error message.
pub fn truncate_chars(text: String, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        None => text,
        Some((cut_idx, _)) => format!("{}… ({} more bytes)", &text[..cut_idx], text.len() - cut_idx),
    }
}
