//! The pruner: a background task that deletes what retention no longer keeps (`[retention]`).
//!
//! Every `prune_interval` it runs a pass: steps of [`crate::store::Retention::prune_blocking`] on a
//! blocking thread, each deleting at most `prune_budget` items, until the store says nothing more
//! is past the cutoffs. Between steps it yields a moment, so a backlog (the first start after an
//! upgrade, or a lowered retention) is worked off in small pieces instead of one long stall, and in
//! steady state it deletes about what arrived during the interval. Each pass also measures the
//! store (size, oldest event) for `/metrics` and `GET /v1/storage`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Retention;
use crate::metrics::{Metrics, PrunePass};
use crate::model::time::unix_ms;
use crate::store::Store;

/// What the pruner uses. Built by `run` (`src/lib.rs`).
pub struct PrunerContext {
    /// Storage.
    pub store: Store,
    /// The settings the pruner reads.
    pub settings: PrunerSettings,
    /// Counters (pruned items, the store's size).
    pub metrics: Arc<Metrics>,
}

/// The part of [`crate::config::Settings`] the pruner reads.
#[derive(Debug, Clone)]
pub struct PrunerSettings {
    /// What the store keeps and how the pruner deletes the rest.
    pub retention: Retention,
}

/// The pause between two steps of one pass.
const STEP_PAUSE: Duration = Duration::from_millis(20);

/// Run passes until the task is aborted (shutdown).
pub async fn run_pruner(daemon: Arc<PrunerContext>) {
    loop {
        if daemon.store.fault().reason().is_none() {
            let pass = prune_pass(&daemon).await;
            if let Some(error) = &pass.error {
                tracing::warn!(%error, "a pruning pass failed; the next one starts over");
            } else if pass.events + pass.inbox > 0 {
                tracing::info!(
                    events = pass.events,
                    deliveries = pass.deliveries,
                    inbox = pass.inbox,
                    bytes = pass.bytes_freed,
                    "retention pruned"
                );
            }
            daemon.metrics.prune_pass_ended(pass);
            measure(&daemon).await;
        }
        tokio::time::sleep(daemon.settings.retention.prune_interval).await;
    }
}

/// One pass: steps until nothing more is past the cutoffs.
async fn prune_pass(daemon: &Arc<PrunerContext>) -> PrunePass {
    let started = Instant::now();
    let mut pass = PrunePass { started_at_ms: unix_ms(), ..PrunePass::default() };
    loop {
        let cutoffs = daemon.settings.retention.cutoffs(unix_ms());
        let budget = daemon.settings.retention.prune_budget;
        let store = daemon.store.clone();
        let step = tokio::task::spawn_blocking(move || store.prune_blocking(&cutoffs, budget)).await;
        pass.steps += 1;
        let report = match step {
            Ok(Ok(report)) => report,
            Ok(Err(error)) => {
                pass.error = Some(error.to_string());
                break;
            }
            Err(error) => {
                pass.error = Some(error.to_string());
                break;
            }
        };
        daemon.metrics.pruned(&report);
        pass.events += report.events;
        pass.deliveries += report.deliveries;
        pass.inbox += report.inbox;
        pass.bytes_freed += report.bytes_freed;
        if !report.more {
            break;
        }
        tokio::time::sleep(STEP_PAUSE).await;
    }
    pass.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    pass
}

/// Measure the store's size and oldest event into the metrics.
pub async fn measure(daemon: &Arc<PrunerContext>) -> Option<crate::store::StorageStats> {
    let store = daemon.store.clone();
    match tokio::task::spawn_blocking(move || store.storage_stats()).await {
        Ok(Ok(stats)) => {
            daemon.metrics.storage_measured(stats.bytes_on_disk, stats.oldest_event_ms);
            Some(stats)
        }
        Ok(Err(error)) => {
            tracing::warn!(%error, "measuring the store failed");
            None
        }
        Err(_) => None,
    }
}
