//! Retention on JetStream: the same contract as the embedded store's
//! ([`crate::store::Retention::prune_blocking`]), so a delivered event is gone after
//! `retention.events`, an event with a pending delivery stays, a dead letter goes after
//! `retention.dead_letters` and its lane goes on, and a normalized raw webhook goes after
//! `retention.inbox`.
//!
//! Each node's pruner walks its own read model and deletes in the engine what is past the
//! cutoffs: an event's dead letter still at its lane's head is discarded first, then its
//! delivery records, its attempts and the event itself (purges by subject), then the read model
//! forgets it. Every step is idempotent: the nodes prune the same items (each keeps its own read
//! model in step that way, and none needs to know the others), and a purge of what another node
//! purged first deletes nothing. The streams' `max_age` stays as a backstop at the longest period.

use std::collections::HashSet;

use async_nats::jetstream;

use super::engine::{ATTEMPTS_STREAM, EVENTS_STREAM, INBOX_STREAM, classify, jetstream_code, subject_token};
use super::ledger::event_subject;
use super::store::NatsStore;
use crate::store::*;

impl NatsStore {
    /// One step of a pruning pass (see the module docs).
    pub(super) async fn prune(&self, cutoffs: &RetentionCutoffs, budget: usize) -> Result<PruneReport, StoreError> {
        let budget = budget as u64;
        let mut report = PruneReport::default();
        let events = self.stream(EVENTS_STREAM).await?;
        let attempts = self.stream(ATTEMPTS_STREAM).await?;
        for (event_id, account_id, size) in self.view.events_before(cutoffs.events_before_ms) {
            let Some(time_ms) = event_time_ms(&event_id) else { continue };
            let deliveries = self.view.deliveries_of_event(&event_id);
            if !event_is_prunable(time_ms, &deliveries, cutoffs) {
                continue;
            }
            if report.events >= budget {
                report.more = true;
                break;
            }
            report.bytes_freed += self.work.prune(&deliveries).await?;
            let what = format!("pruning event {event_id}");
            let account = subject_token(&account_id);
            let filter = format!("sh.att.{account}.{}", subject_token(&event_id));
            attempts.purge().filter(filter).await.map_err(|error| classify(&what, &error))?;
            events.purge().filter(event_subject(&account_id, &event_id)).await.map_err(|error| classify(&what, &error))?;
            self.view.forget_event(&event_id);
            report.events += 1;
            report.deliveries += deliveries.len() as u64;
            report.bytes_freed += size as u64;
        }
        let inbox = self.stream(INBOX_STREAM).await?;
        let held: HashSet<u64> = self.held.lock().expect("held entries lock poisoned").keys().copied().collect();
        for inbox_id in self.view.inbox_before(cutoffs.inbox_before_ms) {
            // Pending (no outcome yet) or being normalized here again: the normalizer needs it.
            if self.view.outcome(inbox_id).is_none() || held.contains(&inbox_id) {
                continue;
            }
            if report.inbox >= budget {
                report.more = true;
                break;
            }
            let what = format!("pruning inbox entry {inbox_id}");
            match inbox.delete_message(inbox_id).await {
                Ok(_) => {}
                Err(error)
                    if jetstream_code(&error).is_some_and(|code| {
                        code == jetstream::ErrorCode::NO_MESSAGE_FOUND || code == jetstream::ErrorCode::STREAM_MESSAGE_DELETE_FAILED
                    }) => {}
                Err(error) => return Err(classify(&what, &error).into()),
            }
            let key = inbox_id.to_string();
            self.outcomes.purge(&key).await.map_err(|error| classify(&what, &error))?;
            self.view.forget_inbox(inbox_id);
            report.bytes_freed += key.len() as u64;
            report.inbox += 1;
        }
        Ok(report)
    }

    async fn stream(&self, name: &str) -> Result<jetstream::stream::Stream<()>, StoreError> {
        let stream = self.engine.jetstream().get_stream_no_info(name).await;
        stream.map_err(|error| classify(&format!("opening {name}"), &error).into())
    }
}
