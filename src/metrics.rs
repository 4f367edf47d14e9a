//! Prometheus metrics, served by the admin API at `/metrics`.
//!
//! Names: `stayhook_webhooks_accepted_total`, `stayhook_normalize_seconds`,
//! `stayhook_normalize_failures_total{kind}`, `stayhook_events_total`,
//! `stayhook_unchanged_updates_total`, `stayhook_delivery_attempts_total{outcome}`,
//! `stayhook_delivery_seconds`, `stayhook_api_requests_total`, and for retention
//! `stayhook_store_bytes`, `stayhook_store_oldest_event_timestamp_seconds` (0 while the log is
//! empty), `stayhook_pruned_total{kind}` (`event`, `delivery`, `inbox`),
//! `stayhook_pruned_bytes_total` and `stayhook_pruner_last_run_timestamp_seconds`, and for
//! initial sync and reconciliation `stayhook_reconcile_recovered_total{pms}` (changes a
//! reconciliation delivered that no webhook had: the measure of how unreliable a PMS's webhooks
//! are), `stayhook_sync_passes_total{kind,outcome}` (`initial-sync`/`reconciliation`,
//! `finished`/`failed`) and `stayhook_sync_pages_total{pms}`.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PmsLabel {
    pms: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PassLabel {
    kind: String,
    outcome: String,
}

/// The daemon's counters and histograms.
pub struct Metrics {
    registry: Registry,
    accepted: Counter,
    normalize_seconds: Histogram,
    normalize_failures: Family<KindLabel, Counter>,
    events: Counter,
    unchanged: Counter,
    delivery_attempts: Family<OutcomeLabel, Counter>,
    delivery_seconds: Histogram,
    api_requests: Counter,
    timeline: Mutex<Timeline>,
    accounts: Mutex<std::collections::HashMap<String, AccountCounts>>,
    recent: Mutex<std::collections::HashMap<String, VecDeque<RecentAttempt>>>,
    store_bytes: Gauge,
    oldest_event_seconds: Gauge,
    pruned: Family<KindLabel, Counter>,
    pruned_bytes: Counter,
    pruner_last_run_seconds: Gauge,
    pruner: Mutex<PrunerStatus>,
    reconcile_recovered: Family<PmsLabel, Counter>,
    sync_passes: Family<PassLabel, Counter>,
    sync_pages: Family<PmsLabel, Counter>,
}

/// What the pruner did since the daemon started (`GET /v1/storage`).
#[derive(Clone, Debug, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PrunerStatus {
    /// The last pass, once one ran.
    pub last_pass: Option<PrunePass>,
    /// Passes run.
    pub passes: u64,
    /// Events deleted.
    pub events: u64,
    /// Deliveries deleted.
    pub deliveries: u64,
    /// Inbox entries deleted.
    pub inbox: u64,
    /// Bytes of keys and values deleted.
    pub bytes_freed: u64,
}

/// One pruning pass (steps of at most `prune_budget` items until nothing more is due).
#[derive(Clone, Debug, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PrunePass {
    /// When it started (Unix ms).
    pub started_at_ms: u64,
    /// How long it took.
    pub duration_ms: u64,
    /// Steps (calls of the store's `prune_blocking`).
    pub steps: u64,
    /// Events deleted.
    pub events: u64,
    /// Deliveries deleted.
    pub deliveries: u64,
    /// Inbox entries deleted.
    pub inbox: u64,
    /// Bytes of keys and values deleted.
    pub bytes_freed: u64,
    /// Why it stopped early, if it failed.
    pub error: Option<String>,
}

/// Attempts remembered per subscription for its health sparkline.
pub const RECENT_ATTEMPTS: usize = 50;

/// One recent delivery attempt of a subscription (in memory, for the console's sparkline).
#[derive(Clone, Debug)]
pub struct RecentAttempt {
    /// Unix ms.
    pub at_ms: u64,
    /// 2xx.
    pub success: bool,
    /// Time to the answer or the error.
    pub latency_ms: u64,
}

/// One account's counts since the daemon started (in memory, for the console's overview).
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountCounts {
    /// Webhooks stored and acknowledged.
    pub received: u64,
    /// Webhooks normalized into events (their outcome committed as done).
    pub normalized: u64,
    /// Webhooks whose normalization failed.
    pub normalize_failed: u64,
    /// Delivery attempts answered 2xx.
    pub delivered: u64,
    /// Delivery attempts that failed.
    pub failed: u64,
}

/// Minutes the timeline keeps (a day).
pub const TIMELINE_MINUTES: u64 = 24 * 60;
/// Delivery latencies kept per minute (a sample beyond: the first ones of the minute).
const LATENCY_SAMPLES_PER_MINUTE: usize = 512;

/// What happened in one minute, for the console's charts (`GET /v1/stats`).
#[derive(Clone, Default, Debug)]
pub struct Minute {
    /// Unix minute (ms / 60 000).
    pub minute: u64,
    /// Webhooks stored and acknowledged.
    pub received: u64,
    /// Webhooks whose normalization failed.
    pub normalize_failed: u64,
    /// Delivery attempts answered 2xx.
    pub delivered: u64,
    /// Delivery attempts that failed.
    pub failed: u64,
    /// Delivery latencies (ms), a sample.
    pub latencies_ms: Vec<u32>,
}

/// Per-minute counts of the last day, in memory (a restart starts them again).
#[derive(Default)]
struct Timeline {
    minutes: VecDeque<Minute>,
}

impl Timeline {
    fn current(&mut self) -> &mut Minute {
        let minute = crate::model::time::unix_ms() / 60_000;
        if self.minutes.back().is_none_or(|last| last.minute != minute) {
            self.minutes.push_back(Minute { minute, ..Minute::default() });
            while self.minutes.front().is_some_and(|first| first.minute + TIMELINE_MINUTES <= minute) {
                self.minutes.pop_front();
            }
        }
        self.minutes.back_mut().expect("just pushed")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("stayhook");
        let accepted = Counter::default();
        registry.register("webhooks_accepted", "Webhooks stored durably and acknowledged", accepted.clone());
        let normalize_seconds = Histogram::new(exponential_buckets(0.000_01, 4.0, 10));
        registry.register("normalize_seconds", "Time to normalize one stored webhook", normalize_seconds.clone());
        let normalize_failures = Family::<KindLabel, Counter>::default();
        registry.register("normalize_failures", "Webhooks whose normalization failed, by kind", normalize_failures.clone());
        let events = Counter::default();
        registry.register("events", "Unified events written to the log", events.clone());
        let unchanged = Counter::default();
        registry.register("unchanged_updates", "Updates dropped because they changed nothing", unchanged.clone());
        let delivery_attempts = Family::<OutcomeLabel, Counter>::default();
        registry.register("delivery_attempts", "Delivery attempts, by outcome", delivery_attempts.clone());
        let delivery_seconds = Histogram::new(exponential_buckets(0.000_1, 4.0, 10));
        registry.register("delivery_seconds", "Time of one delivery attempt", delivery_seconds.clone());
        let api_requests = Counter::default();
        registry.register("api_requests", "PMS API requests plugins asked for (enrichment)", api_requests.clone());
        let store_bytes = Gauge::default();
        registry.register("store_bytes", "What the store's files take on disk", store_bytes.clone());
        let oldest_event_seconds = Gauge::default();
        registry.register(
            "store_oldest_event_timestamp_seconds",
            "Time of the oldest event kept (Unix seconds; 0 while there is none)",
            oldest_event_seconds.clone(),
        );
        let pruned = Family::<KindLabel, Counter>::default();
        registry.register("pruned", "Items retention deleted, by kind (event, delivery, inbox)", pruned.clone());
        let pruned_bytes = Counter::default();
        registry.register("pruned_bytes", "Bytes of keys and values retention deleted", pruned_bytes.clone());
        let reconcile_recovered = Family::<PmsLabel, Counter>::default();
        registry.register(
            "reconcile_recovered",
            "Changes a reconciliation pass delivered that no webhook had announced, by PMS",
            reconcile_recovered.clone(),
        );
        let sync_passes = Family::<PassLabel, Counter>::default();
        registry.register("sync_passes", "Sync passes ended, by kind (initial-sync, reconciliation) and outcome", sync_passes.clone());
        let sync_pages = Family::<PmsLabel, Counter>::default();
        registry.register("sync_pages", "Pages of records listed by sync passes, by PMS", sync_pages.clone());
        let pruner_last_run_seconds = Gauge::default();
        registry.register(
            "pruner_last_run_timestamp_seconds",
            "When the last pruning pass ended (Unix seconds)",
            pruner_last_run_seconds.clone(),
        );
        Self {
            registry,
            store_bytes,
            oldest_event_seconds,
            pruned,
            pruned_bytes,
            pruner_last_run_seconds,
            pruner: Mutex::default(),
            reconcile_recovered,
            sync_passes,
            sync_pages,
            accepted,
            normalize_seconds,
            normalize_failures,
            events,
            unchanged,
            delivery_attempts,
            delivery_seconds,
            api_requests,
            timeline: Mutex::default(),
            accounts: Mutex::default(),
            recent: Mutex::default(),
        }
    }
}

impl Metrics {
    /// Count something of an account.
    fn count(&self, account_id: &str, add: impl FnOnce(&mut AccountCounts)) {
        let mut accounts = self.accounts.lock().expect("account counts lock poisoned");
        match accounts.get_mut(account_id) {
            Some(counts) => add(counts),
            None => add(accounts.entry(account_id.to_string()).or_default()),
        }
    }

    pub(crate) fn accepted(&self, account_id: &str) {
        self.accepted.inc();
        self.timeline.lock().expect("timeline lock poisoned").current().received += 1;
        self.count(account_id, |counts| counts.received += 1);
    }

    pub(crate) fn normalized(&self, elapsed: Duration) {
        self.normalize_seconds.observe(elapsed.as_secs_f64());
    }

    /// Webhooks of an account whose events were committed.
    pub(crate) fn normalized_webhooks(&self, account_id: &str, n_webhooks: u64) {
        self.count(account_id, |counts| counts.normalized += n_webhooks);
    }

    pub(crate) fn normalize_failed(&self, account_id: &str, kind: &str) {
        self.normalize_failures.get_or_create(&KindLabel { kind: kind.to_string() }).inc();
        self.timeline.lock().expect("timeline lock poisoned").current().normalize_failed += 1;
        self.count(account_id, |counts| counts.normalize_failed += 1);
    }

    pub(crate) fn events_emitted(&self, n_events: usize, n_unchanged: usize) {
        self.events.inc_by(n_events as u64);
        self.unchanged.inc_by(n_unchanged as u64);
    }

    pub(crate) fn delivery_attempted(&self, account_id: &str, success: bool, elapsed: Duration) {
        self.count(account_id, |counts| if success { counts.delivered += 1 } else { counts.failed += 1 });
        let outcome = if success { "delivered" } else { "failed" };
        self.delivery_attempts.get_or_create(&OutcomeLabel { outcome: outcome.into() }).inc();
        self.delivery_seconds.observe(elapsed.as_secs_f64());
        let mut timeline = self.timeline.lock().expect("timeline lock poisoned");
        let minute = timeline.current();
        if success {
            minute.delivered += 1;
        } else {
            minute.failed += 1;
        }
        if minute.latencies_ms.len() < LATENCY_SAMPLES_PER_MINUTE {
            minute.latencies_ms.push(u32::try_from(elapsed.as_millis()).unwrap_or(u32::MAX));
        }
    }

    pub(crate) fn api_requests(&self, n_requests: usize) {
        self.api_requests.inc_by(n_requests as u64);
    }

    /// Remember an attempt of `subscription_id` for its health (the last [`RECENT_ATTEMPTS`]).
    pub(crate) fn subscription_attempted(&self, subscription_id: &str, success: bool, latency_ms: u64) {
        let mut recent = self.recent.lock().expect("recent attempts lock poisoned");
        let attempts = recent.entry(subscription_id.to_string()).or_default();
        if attempts.len() == RECENT_ATTEMPTS {
            attempts.pop_front();
        }
        attempts.push_back(RecentAttempt { at_ms: crate::model::time::unix_ms(), success, latency_ms });
    }

    /// The last attempts of a subscription since the daemon started, oldest first.
    pub fn recent_attempts(&self, subscription_id: &str) -> Vec<RecentAttempt> {
        let recent = self.recent.lock().expect("recent attempts lock poisoned");
        recent.get(subscription_id).map(|attempts| attempts.iter().cloned().collect()).unwrap_or_default()
    }

    /// An account's counts since the daemon started (zero for one that saw nothing).
    pub fn account_counts(&self, account_id: &str) -> AccountCounts {
        self.accounts.lock().expect("account counts lock poisoned").get(account_id).copied().unwrap_or_default()
    }

    /// The minutes since `since_minute` (Unix minutes) that saw anything, oldest first.
    pub fn timeline(&self, since_minute: u64) -> Vec<Minute> {
        let timeline = self.timeline.lock().expect("timeline lock poisoned");
        timeline.minutes.iter().filter(|minute| minute.minute >= since_minute).cloned().collect()
    }

    /// The store's size and its oldest event (Unix ms), as last measured.
    pub(crate) fn storage_measured(&self, bytes_on_disk: u64, oldest_event_ms: Option<u64>) {
        self.store_bytes.set(i64::try_from(bytes_on_disk).unwrap_or(i64::MAX));
        self.oldest_event_seconds.set(oldest_event_ms.map_or(0, |ms| i64::try_from(ms / 1000).unwrap_or(i64::MAX)));
    }

    /// One pruning step's deletions, counted as they happen.
    pub(crate) fn pruned(&self, report: &crate::store::PruneReport) {
        for (kind, n) in [("event", report.events), ("delivery", report.deliveries), ("inbox", report.inbox)] {
            self.pruned.get_or_create(&KindLabel { kind: kind.into() }).inc_by(n);
        }
        self.pruned_bytes.inc_by(report.bytes_freed);
    }

    /// A pruning pass ended.
    pub(crate) fn prune_pass_ended(&self, pass: PrunePass) {
        self.pruner_last_run_seconds.set(i64::try_from((pass.started_at_ms + pass.duration_ms) / 1000).unwrap_or(i64::MAX));
        let mut status = self.pruner.lock().expect("pruner status lock poisoned");
        status.passes += 1;
        status.events += pass.events;
        status.deliveries += pass.deliveries;
        status.inbox += pass.inbox;
        status.bytes_freed += pass.bytes_freed;
        status.last_pass = Some(pass);
    }

    /// A sync page of a `pms` account was committed; `recovered` changes of a reconciliation
    /// in it were delivered.
    pub fn sync_page(&self, pms: &str, recovered: u64) {
        self.sync_pages.get_or_create(&PmsLabel { pms: pms.to_string() }).inc();
        if recovered > 0 {
            self.reconcile_recovered.get_or_create(&PmsLabel { pms: pms.to_string() }).inc_by(recovered);
        }
    }

    /// A sync pass of `kind` ended (`outcome`: `finished` or `failed`).
    pub fn sync_pass(&self, kind: &str, outcome: &str) {
        self.sync_passes.get_or_create(&PassLabel { kind: kind.to_string(), outcome: outcome.to_string() }).inc();
    }

    /// What the pruner did since the daemon started.
    pub fn pruner_status(&self) -> PrunerStatus {
        self.pruner.lock().expect("pruner status lock poisoned").clone()
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}
