//! Prometheus metrics, served by the admin API at `/metrics`.
//!
//! Names: `stayhook_webhooks_accepted_total`, `stayhook_normalize_seconds`,
//! `stayhook_normalize_failures_total{kind}`, `stayhook_events_total`,
//! `stayhook_unchanged_updates_total`, `stayhook_delivery_attempts_total{outcome}`,
//! `stayhook_delivery_seconds`, `stayhook_api_requests_total`.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
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
        Self {
            registry,
            accepted,
            normalize_seconds,
            normalize_failures,
            events,
            unchanged,
            delivery_attempts,
            delivery_seconds,
            api_requests,
        }
    }
}

impl Metrics {
    pub(crate) fn accepted(&self) {
        self.accepted.inc();
    }

    pub(crate) fn normalized(&self, elapsed: Duration) {
        self.normalize_seconds.observe(elapsed.as_secs_f64());
    }

    pub(crate) fn normalize_failed(&self, kind: &str) {
        self.normalize_failures.get_or_create(&KindLabel { kind: kind.to_string() }).inc();
    }

    pub(crate) fn events_emitted(&self, n_events: usize, n_unchanged: usize) {
        self.events.inc_by(n_events as u64);
        self.unchanged.inc_by(n_unchanged as u64);
    }

    pub(crate) fn delivery_attempted(&self, success: bool, elapsed: Duration) {
        let outcome = if success { "delivered" } else { "failed" };
        self.delivery_attempts.get_or_create(&OutcomeLabel { outcome: outcome.into() }).inc();
        self.delivery_seconds.observe(elapsed.as_secs_f64());
    }

    pub(crate) fn api_requests(&self, n_requests: usize) {
        self.api_requests.inc_by(n_requests as u64);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}
