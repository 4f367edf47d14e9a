//! Status vocabularies: a PMS's status words mapped to the unified reservation status.

use crate::model::ReservationStatus;

/// A PMS's status vocabulary: its words (any case, `-`, `_` and spaces alike) and what each means.
pub type Vocabulary = &'static [(&'static str, ReservationStatus)];

/// The unified status of `word` in `vocabulary`; `Unknown` for a word the table does not know,
/// so a new PMS status never fails a webhook.
pub fn lookup(vocabulary: Vocabulary, word: &str) -> ReservationStatus {
    let wanted = fold(word);
    vocabulary.iter().find(|(known, _)| fold(known) == wanted).map(|(_, status)| *status).unwrap_or(ReservationStatus::Unknown)
}

fn fold(word: &str) -> String {
    word.trim().chars().filter(|character| !matches!(character, '-' | '_' | ' ')).flat_map(char::to_lowercase).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: Vocabulary = &[("booked", ReservationStatus::Confirmed), ("CANCELLED_BY_GUEST", ReservationStatus::Cancelled)];

    #[test]
    fn words_match_ignoring_case_and_separators() {
        assert_eq!(lookup(TABLE, "Booked"), ReservationStatus::Confirmed);
        assert_eq!(lookup(TABLE, "cancelled-by-guest"), ReservationStatus::Cancelled);
        assert_eq!(lookup(TABLE, "Cancelled by guest"), ReservationStatus::Cancelled);
        assert_eq!(lookup(TABLE, "archived"), ReservationStatus::Unknown);
    }
}
