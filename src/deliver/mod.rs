//! Delivery: unified events to the operator's subscriptions, signed, retried, dead-lettered.
//!
//! The scheduler is one tokio task. It asks the store for due deliveries (earliest first, answered
//! from an in-memory mirror of the `due` index), starts each attempt as its own task (at most
//! `delivery_concurrency` at once), and sleeps until the next due time, a wake-up from a normalizer
//! or a finished attempt, or shutdown. An attempt borrows the record's stored JSON text into the
//! envelope rather than parsing it (see [`envelope::EventView`]). An attempt records its
//! outcome and moves the delivery on in one store transaction: delivered, retried later per the
//! [`RetryPolicy`], or dead after the last delay. The delivery leaves the in-flight set only once
//! that outcome is on disk; an outcome that cannot be recorded keeps its place for
//! [`RECORD_ERROR_PAUSE`] (never a tight loop of resends), and once the store has failed the
//! scheduler dispatches nothing more (the daemon is stopping to be restarted).
//!
//! Ordering: deliveries of one record to one subscription form a lane; only a lane's head is ever
//! due, so events of a record arrive in order. A failing record holds back only its own lane: other
//! records' lanes go on. A dead letter keeps holding its lane (unless `dead_letters_hold_lane` is
//! off) until it is redelivered, which retries it first, or discarded. A delivery stays in `due`
//! while its attempt runs, so a crash mid-attempt repeats it at the next start (at least once,
//! never lost, under the same `webhook-id`).

pub mod envelope;
pub mod retry;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

pub use retry::RetryPolicy;

use crate::config::Settings;
use crate::http::destination;
use crate::metrics::Metrics;
use crate::model;
use crate::model::time::unix_ms;
use crate::store::{Attempt, DeliveryStatus, Leased, Origin, Store};

/// Longest response body kept in the attempt log.
const RESPONSE_EXCERPT_BYTES: usize = 1024;

/// What the scheduler and its attempts use. Built by `run` (`src/lib.rs`); deliveries reach the
/// scheduler through the store (the normalizer's commits and the API's redeliveries wake it via
/// `DeliveryQueue::due_changed`), never through another stage.
pub struct DeliverContext {
    /// Storage: due deliveries, events, subscriptions, attempts.
    pub store: Store,
    /// The settings deliveries read.
    pub settings: DeliverSettings,
    /// Wakes the scheduler when an attempt frees its slot.
    pub scheduler_wakeup: Notify,
    /// The retry schedule.
    pub retry_policy: RetryPolicy,
    /// The HTTP client of deliveries, behind the destination policy.
    pub http: Client,
    /// Counters and histograms.
    pub metrics: Arc<Metrics>,
}

/// The part of [`Settings`] deliveries read.
#[derive(Debug, Clone)]
pub struct DeliverSettings {
    /// Most attempts in flight at once.
    pub delivery_concurrency: usize,
    /// One attempt's time limit (also bounds how long shutdown waits for attempts in flight).
    pub delivery_timeout: Duration,
    /// Whether a dead letter holds back the later deliveries of its lane.
    pub dead_letters_hold_lane: bool,
    /// How long a subscription may fail before a dead letter disables it.
    pub disable_after_failing: Option<Duration>,
}

impl From<&Settings> for DeliverSettings {
    fn from(settings: &Settings) -> Self {
        Self {
            delivery_concurrency: settings.delivery_concurrency,
            delivery_timeout: settings.delivery_timeout,
            dead_letters_hold_lane: settings.dead_letters_hold_lane,
            disable_after_failing: settings.disable_after_failing,
        }
    }
}

/// Run the scheduler until `shutdown` is notified.
pub async fn run_scheduler(daemon: Arc<DeliverContext>, shutdown: Arc<Notify>) {
    let n_in_flight = Arc::new(AtomicUsize::new(0));
    let capacity = daemon.settings.delivery_concurrency;
    loop {
        if daemon.store.fault().reason().is_some() {
            // The store refuses writes: an attempt could not record its outcome. Dispatch
            // nothing; the daemon is stopping so a supervisor restarts it.
            shutdown.notified().await;
            return finish_in_flight(&daemon, &n_in_flight).await;
        }
        let free = capacity.saturating_sub(n_in_flight.load(Ordering::Acquire));
        let (leased, next_due_ms) = match daemon.store.next_work(unix_ms(), free) {
            Ok(work) => work,
            Err(error) => {
                tracing::error!(%error, "reading due deliveries failed");
                (Vec::new(), Some(unix_ms().saturating_add(1_000)))
            }
        };
        for leased in leased {
            n_in_flight.fetch_add(1, Ordering::AcqRel);
            let slot = Slot { daemon: daemon.clone(), n_in_flight: n_in_flight.clone(), leased: Some(leased) };
            let daemon = daemon.clone();
            tokio::spawn(async move { attempt(&daemon, slot).await });
        }
        // Due now but every slot taken: a finishing attempt wakes us. Otherwise sleep until the
        // next retry is due (a normalizer or a redelivery wakes us for new work).
        let sleep_for = next_due_ms.map_or(Duration::from_secs(5), |due_ms| Duration::from_millis(due_ms.saturating_sub(unix_ms()).max(1)));
        let fault = daemon.store.fault();
        tokio::select! {
            _ = daemon.scheduler_wakeup.notified() => {}
            _ = daemon.store.due_changed().notified() => {}
            _ = tokio::time::sleep(sleep_for) => {}
            _ = fault.wait() => {}
            _ = shutdown.notified() => return finish_in_flight(&daemon, &n_in_flight).await,
        }
    }
}

/// On shutdown: start nothing new, and wait (at most one delivery timeout and a second) for the
/// attempts in flight to record their outcome, so a graceful restart does not send again what
/// the receivers already have. What is still in flight after that is repeated at the next start.
async fn finish_in_flight(daemon: &DeliverContext, n_in_flight: &AtomicUsize) {
    let deadline = tokio::time::Instant::now() + daemon.settings.delivery_timeout + Duration::from_secs(1);
    loop {
        let n_in_flight = n_in_flight.load(Ordering::Acquire);
        if n_in_flight == 0 {
            return;
        }
        tokio::select! {
            _ = daemon.scheduler_wakeup.notified() => {}
            _ = tokio::time::sleep_until(deadline) => {
                return tracing::warn!(n_in_flight, "stopping with deliveries in flight; they will be repeated at the next start");
            }
        }
    }
}

/// A leased delivery's place among the attempts in flight. Dropping it gives the lease back, then
/// frees the place and wakes the scheduler; an attempt drops it once its outcome is recorded and
/// on disk (the delivery has then left `due` or moved in it, also in the store's in-memory mirror).
struct Slot {
    daemon: Arc<DeliverContext>,
    n_in_flight: Arc<AtomicUsize>,
    /// Always set until dropped.
    leased: Option<Leased>,
}

impl Slot {
    fn leased(&self) -> &Leased {
        self.leased.as_ref().expect("a slot holds its lease until dropped")
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        // The lease first: the scheduler this wakes must find the delivery free.
        drop(self.leased.take());
        self.n_in_flight.fetch_sub(1, Ordering::AcqRel);
        self.daemon.scheduler_wakeup.notify_one();
    }
}

/// How long a delivery waits after its subscription or event could not be read (a storage
/// error), before the scheduler tries it again.
const READ_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// How long a delivery keeps its place after its outcome could not be recorded, before the
/// scheduler may try it again: the receiver may already have it, so it is not sent again at once.
const RECORD_ERROR_PAUSE: Duration = Duration::from_secs(5);

/// Make one attempt of the slot's delivery and record it.
async fn attempt(daemon: &DeliverContext, slot: Slot) {
    let leased = slot.leased();
    let delivery = &leased.delivery;
    let now_ms = unix_ms();
    let subscription = match daemon.store.get_subscription(&delivery.account_id, &delivery.subscription_id) {
        Ok(subscription) => subscription,
        Err(error) => {
            tracing::error!(%error, "reading a subscription failed");
            return tokio::time::sleep(READ_ERROR_PAUSE).await;
        }
    };
    let stored = match daemon.store.get_event_bytes(&delivery.event_id) {
        Ok(stored) => stored,
        Err(error) => {
            tracing::error!(%error, "reading an event failed");
            return tokio::time::sleep(READ_ERROR_PAUSE).await;
        }
    };
    let event = match stored.as_deref().map(envelope::EventView::parse).transpose() {
        Ok(event) => event,
        Err(error) => {
            tracing::error!(%error, event_id = %delivery.event_id, "a stored event does not decode");
            return tokio::time::sleep(READ_ERROR_PAUSE).await;
        }
    };
    let (Some(subscription), Some(event)) = (subscription.filter(|subscription| subscription.enabled), event) else {
        let mut next = delivery.clone();
        next.status = DeliveryStatus::Cancelled;
        next.last_error = Some("the subscription was deleted or disabled".into());
        next.updated_at_ms = now_ms;
        if let Err(error) = daemon.store.record_attempt(leased, &next, None, now_ms, daemon.settings.dead_letters_hold_lane).await {
            tracing::error!(%error, "recording a cancelled delivery failed");
            tokio::time::sleep(RECORD_ERROR_PAUSE).await;
        }
        return;
    };

    let body = envelope::render(&event, &subscription.id);
    let timestamp_secs = chrono::Utc::now().timestamp();
    let signature = envelope::sign(&subscription.secret, &event.id, timestamp_secs, &body);
    let attempt_number = delivery.attempts + 1;
    let started_at = model::time::now();
    let started = Instant::now();
    let outcome = daemon.http.post(&subscription.url, &event.id, timestamp_secs, &signature, body, event.origin).await;
    let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    daemon.metrics.delivery_attempted(&delivery.account_id, outcome.success, started.elapsed());
    daemon.metrics.subscription_attempted(&subscription.id, outcome.success, latency_ms);

    let mut next = delivery.clone();
    next.attempts = attempt_number;
    next.updated_at_ms = unix_ms();
    next.last_error =
        outcome.error.clone().or_else(|| (!outcome.success).then(|| format!("HTTP {}", outcome.status_code.unwrap_or_default())));
    if outcome.success {
        next.status = DeliveryStatus::Delivered;
        next.last_error = None;
    } else {
        match daemon.retry_policy.delay_after(attempt_number.saturating_sub(delivery.retry_base)) {
            Some(delay) => {
                next.next_attempt_at_ms = next.updated_at_ms.saturating_add(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX));
            }
            None => {
                next.status = DeliveryStatus::Dead;
                tracing::warn!(event_id = %event.id, subscription_id = %subscription.id, attempts = attempt_number, "delivery dead-lettered");
            }
        }
    }
    let record = Attempt {
        delivery_id: delivery.id.to_string(),
        subscription_id: subscription.id.clone(),
        attempt: attempt_number,
        at: started_at,
        url: subscription.url.clone(),
        status_code: outcome.status_code,
        latency_ms,
        error: outcome.error,
        response: outcome.response,
        success: outcome.success,
    };
    let hold_lane = daemon.settings.dead_letters_hold_lane;
    if let Err(error) = daemon.store.record_attempt(leased, &next, Some(&record), unix_ms(), hold_lane).await {
        tracing::error!(%error, delivery_id = delivery.id, "recording a delivery attempt failed; it will be repeated later");
        tokio::time::sleep(RECORD_ERROR_PAUSE).await;
        return;
    }
    drop(slot);
    if let Err(error) = track_health(daemon, subscription, outcome.success, next.status == DeliveryStatus::Dead).await {
        tracing::warn!(%error, "updating a subscription's health failed");
    }
}

/// Remember when a subscription started failing; disable it when it has failed for longer than
/// `disable_after_failing` and another delivery is dead-lettered. Written only when the state
/// changes, not on every attempt.
async fn track_health(
    daemon: &DeliverContext,
    mut subscription: crate::store::Subscription,
    success: bool,
    dead: bool,
) -> Result<(), crate::store::StoreError> {
    let now_ms = unix_ms();
    let changed = match (success, subscription.failing_since_ms) {
        (true, Some(_)) => {
            subscription.failing_since_ms = None;
            true
        }
        (false, None) => {
            subscription.failing_since_ms = Some(now_ms);
            true
        }
        _ => false,
    };
    let mut disabled = false;
    if let (true, Some(since_ms), Some(limit)) = (dead, subscription.failing_since_ms, daemon.settings.disable_after_failing)
        && now_ms.saturating_sub(since_ms) >= limit.as_millis() as u64
        && subscription.enabled
    {
        subscription.enabled = false;
        subscription.disabled_reason = Some(format!(
            "disabled by stayhook at {}: every delivery has failed since {} and deliveries are being dead-lettered; fix the endpoint, then set enabled to true and redeliver the dead letters",
            model::time::from_unix_ms(now_ms),
            model::time::from_unix_ms(since_ms)
        ));
        disabled = true;
    }
    if !(changed || disabled) {
        return Ok(());
    }
    // Re-read and change only the health fields, so an operator's concurrent edit is kept.
    let Some(mut current) = daemon.store.get_subscription(&subscription.account_id, &subscription.id)? else { return Ok(()) };
    current.failing_since_ms = subscription.failing_since_ms;
    if disabled {
        tracing::warn!(subscription_id = %current.id, url = %current.url, "subscription disabled after failing for too long");
        current.enabled = false;
        current.disabled_reason = subscription.disabled_reason;
    }
    daemon.store.put_subscription(&current).await
}

/// What one POST to a receiver came to.
pub(crate) struct PostOutcome {
    pub(crate) success: bool,
    pub(crate) status_code: Option<u16>,
    pub(crate) error: Option<String>,
    pub(crate) response: Option<String>,
}

/// The HTTP client of deliveries (and of the API's test events): the delivery timeout, no
/// redirects, and the destination policy on URLs and on resolved addresses.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    allow_private_destinations: bool,
}

impl Client {
    /// A client whose requests time out after `timeout`; private destinations only if `allow_private`.
    pub fn new(allow_private: bool, timeout: Duration) -> reqwest::Result<Self> {
        Ok(Self { http: http_client(allow_private, timeout)?, allow_private_destinations: allow_private })
    }

    /// POST a signed body to a receiver under the destination policy (deliveries, test events).
    /// `origin` goes in the `stayhook-origin` header (outside the signed envelope, which stays the
    /// seed's): `webhook`, `reconciliation` or `initial-sync`.
    pub(crate) async fn post(
        &self,
        url: &str,
        webhook_id: &str,
        timestamp_secs: i64,
        signature: &str,
        body: Vec<u8>,
        origin: Origin,
    ) -> PostOutcome {
        post(self, url, webhook_id, timestamp_secs, signature, body, origin).await
    }
}

async fn post(
    client: &Client,
    url: &str,
    webhook_id: &str,
    timestamp_secs: i64,
    signature: &str,
    body: Vec<u8>,
    origin: Origin,
) -> PostOutcome {
    if let Err(error) = destination::check_url(url, client.allow_private_destinations) {
        return PostOutcome { success: false, status_code: None, error: Some(error), response: None };
    }
    let request = client
        .http
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", webhook_id)
        .header("webhook-timestamp", timestamp_secs.to_string())
        .header("webhook-signature", signature)
        .header("stayhook-origin", origin.as_str())
        .body(body);
    match request.send().await {
        Ok(response) => {
            let status = response.status();
            let text = response.bytes().await.map(|bytes| excerpt(&bytes)).unwrap_or_default();
            PostOutcome { success: status.is_success(), status_code: Some(status.as_u16()), error: None, response: Some(text) }
        }
        Err(error) => {
            let message = if error.is_timeout() { "timed out".to_string() } else { error_chain(&error) };
            PostOutcome { success: false, status_code: None, error: Some(message), response: None }
        }
    }
}

fn excerpt(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(RESPONSE_EXCERPT_BYTES)]);
    text.into_owned()
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// The HTTP client deliveries use.
fn http_client(allow_private: bool, timeout: Duration) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("stayhook/", env!("CARGO_PKG_VERSION")))
        .dns_resolver(Arc::new(destination::GuardedResolver { allow_private }))
        .build()
}
