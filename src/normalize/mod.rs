//! Normalizer workers: OS threads that run plugins on stored webhooks and commit the results.
//!
//! Plugin calls are CPU-bound and bounded only by the plugin's time limit, so they never run on
//! the tokio runtime: a slow plugin would stall the listener. Each worker is an OS thread fed by
//! its own crossbeam channel and keeps one [`PluginSession`] per plugin (one store, reused call
//! after call, rebuilt after a trap or a plugin replacement). Webhooks of one account always go to
//! the same worker, in arrival order, so state decisions (created vs updated, previous dates) for
//! an account are never raced. A worker takes the webhooks already queued for it (a run of at
//! most [`MAX_RUN`]), decides each against the stored state and the decisions before it in the
//! run, then commits the whole run (events, new state, deliveries, inbox outcomes) in one
//! transaction through the store's writer, and wakes the delivery scheduler. Under load, one
//! transaction covers many webhooks; alone, a webhook is committed on its own at once.
//!
//! Enrichment does not block a worker: when a plugin asks for API calls, the worker hands them to
//! the [`enrich::Enricher`] on the tokio runtime and parks the webhook; later webhooks of the same
//! account wait behind it (their order matters), other accounts go on. The answers come back
//! through the worker's own channel and the plugin is called again. A parked webhook is still in
//! the store's `pending` tree, so a crash replays it from the start.
//!
//! On shutdown the workers finish the entry in hand and stop; what is left stays pending and is
//! dispatched again at the next start.

pub mod enrich;
mod state;

use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, unbounded};

use crate::daemon::Daemon;
use crate::model::{self, Normalized};
use crate::plugin::bindings::stayhook::plugin::types as wit;
use crate::plugin::{CallError, PluginSession};
use crate::store::{
    Account, Delivery, DeliveryStatus, InboxEntry, InboxId, InboxOutcome, InboxStatus, NormalizedBatch, StoreError, StoredEvent,
};

/// Most events one webhook may produce.
const MAX_EVENTS_PER_CALL: usize = 1_000;
/// Largest rendered output of one webhook, in bytes.
const MAX_OUTPUT_BYTES: usize = 8 * 1024 * 1024;
/// Most queued webhooks a worker normalizes before it commits them together.
const MAX_RUN: usize = 64;

/// What a worker is asked to do.
pub(crate) enum Work {
    /// Normalize a stored webhook.
    Normalize(InboxId),
    /// Continue a parked webhook with the answers to its API calls.
    Resume { inbox_id: InboxId, responses: Vec<wit::ApiResponse>, n_rounds: u32 },
    /// A parked webhook's API calls could not be made at all.
    FetchFailed { inbox_id: InboxId, plugin: PluginIdent, kind: &'static str, message: String },
    /// Wake up and notice the stop flag.
    Wake,
}

/// The handle the listener uses to hand work to the workers.
pub struct Normalizer {
    senders: Vec<Sender<Work>>,
    stopping: Arc<AtomicBool>,
    threads: std::sync::Mutex<Vec<JoinHandle<()>>>,
}

/// The receiving ends, handed to [`Normalizer::attach`].
pub struct WorkQueues(Vec<Receiver<Work>>);

impl Normalizer {
    /// Channels for `n_threads` workers; [`Normalizer::attach`] starts them.
    pub fn start(n_threads: usize) -> (Self, WorkQueues) {
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..n_threads.max(1)).map(|_| unbounded()).unzip();
        (Self { senders, stopping: Arc::new(AtomicBool::new(false)), threads: std::sync::Mutex::new(Vec::new()) }, WorkQueues(receivers))
    }

    /// Spawn the worker threads, working for `daemon`.
    pub fn attach(&self, daemon: &Arc<Daemon>, queues: WorkQueues) -> std::io::Result<()> {
        let mut threads = self.threads.lock().expect("normalizer thread list lock poisoned");
        for (worker_idx, receiver) in queues.0.into_iter().enumerate() {
            let worker = Worker {
                daemon: Arc::downgrade(daemon),
                own_queue: self.senders[worker_idx].clone(),
                stopping: self.stopping.clone(),
                sessions: HashMap::new(),
                parked: HashMap::new(),
            };
            let thread =
                std::thread::Builder::new().name(format!("stayhook-normalize-{worker_idx}")).spawn(move || worker.run(receiver))?;
            threads.push(thread);
        }
        Ok(())
    }

    /// Queue an inbox entry for normalization by its account's worker.
    pub fn dispatch(&self, account_id: &str, inbox_id: InboxId) {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        account_id.hash(&mut hasher);
        let worker_idx = (hasher.finish() % self.senders.len() as u64) as usize;
        // A send fails only when the worker is gone (shutdown); the entry stays pending in the store.
        let _ = self.senders[worker_idx].send(Work::Normalize(inbox_id));
    }

    /// Stop the workers after the entry each has in hand, and wait for them.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        let threads: Vec<_> = self.threads.lock().expect("normalizer thread list lock poisoned").drain(..).collect();
        for sender in &self.senders {
            let _ = sender.send(Work::Wake);
        }
        for thread in threads {
            let _ = thread.join();
        }
    }
}

/// The plugin that ran (name, version), for the inbox outcome.
type PluginIdent = (Option<String>, Option<String>);

/// Why an inbox entry produced no events.
struct Failure {
    status: InboxStatus,
    kind: &'static str,
    message: String,
}

impl Failure {
    fn failed(kind: &'static str, message: impl Into<String>) -> Self {
        Self { status: InboxStatus::Failed, kind, message: message.into() }
    }
}

/// Where one webhook stands after a step.
enum Step {
    /// Committed, skipped or failed: the account's next webhook may go.
    Finished,
    /// Waiting for API answers.
    Parked,
}

/// What the plugin produced in one call.
enum PluginStep {
    Events(Account, Vec<Normalized>),
    Fetch(Account, Option<wit::ApiInfo>, Vec<wit::ApiRequest>),
}

/// A webhook between two rounds of API calls.
struct Round {
    inbox_id: InboxId,
    plugin: PluginIdent,
    responses: Vec<wit::ApiResponse>,
    n_rounds: u32,
}

struct Worker {
    daemon: std::sync::Weak<Daemon>,
    own_queue: Sender<Work>,
    stopping: Arc<AtomicBool>,
    sessions: HashMap<String, (u64, PluginSession)>,
    /// Accounts with a webhook waiting for API answers, and their webhooks queued behind it.
    parked: HashMap<String, VecDeque<InboxId>>,
}

impl Worker {
    fn run(mut self, receiver: Receiver<Work>) {
        let mut stashed: Option<Work> = None;
        loop {
            let work = match stashed.take() {
                Some(work) => work,
                None => match receiver.recv() {
                    Ok(work) => work,
                    Err(_) => return,
                },
            };
            if self.stopping.load(Ordering::SeqCst) {
                return;
            }
            let Some(daemon) = self.daemon.upgrade() else { return };
            let mut commits = Commits::default();
            match work {
                Work::Normalize(first) => {
                    // Take the webhooks already queued behind this one (a run): they are decided
                    // one after another and committed together, in one transaction.
                    let mut run = vec![first];
                    while run.len() < MAX_RUN {
                        match receiver.try_recv() {
                            Ok(Work::Normalize(inbox_id)) => run.push(inbox_id),
                            Ok(other) => {
                                stashed = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    for inbox_id in run {
                        let outcome = self.normalize(&daemon, inbox_id, &mut commits);
                        self.after(&daemon, outcome, &mut commits);
                    }
                }
                Work::Resume { inbox_id, responses, n_rounds } => {
                    let outcome = self.step(&daemon, inbox_id, responses, n_rounds, &mut commits).map(|step| (inbox_id, step));
                    self.after(&daemon, outcome, &mut commits);
                }
                Work::FetchFailed { inbox_id, plugin, kind, message } => {
                    let outcome =
                        self.finish_failed(&daemon, inbox_id, plugin, Failure::failed(kind, message)).map(|()| (inbox_id, Step::Finished));
                    self.after(&daemon, outcome, &mut commits);
                }
                Work::Wake => continue,
            }
            commits.commit(&daemon);
        }
    }

    fn after(&mut self, daemon: &Daemon, outcome: Result<(InboxId, Step), StoreError>, commits: &mut Commits) {
        match outcome {
            Ok((inbox_id, Step::Finished)) => self.unpark_after(daemon, inbox_id, commits),
            Ok((_, Step::Parked)) => {}
            // A store failure: the entry stays pending and is retried at the next start.
            Err(error) => tracing::error!(%error, "normalization could not be committed"),
        }
    }

    /// A new webhook: run it now, or queue it behind its account's parked one.
    fn normalize(&mut self, daemon: &Daemon, inbox_id: InboxId, commits: &mut Commits) -> Result<(InboxId, Step), StoreError> {
        if !self.parked.is_empty() {
            let account_id = daemon.store.get_inbox(inbox_id)?.map(|entry| entry.account_id).unwrap_or_default();
            if let Some(queue) = self.parked.get_mut(&account_id) {
                queue.push_back(inbox_id);
                return Ok((inbox_id, Step::Parked));
            }
        }
        Ok((inbox_id, self.step(daemon, inbox_id, Vec::new(), 0, commits)?))
    }

    /// After a webhook finished, run its account's queued webhooks until one parks again.
    fn unpark_after(&mut self, daemon: &Daemon, finished: InboxId, commits: &mut Commits) {
        if self.parked.is_empty() {
            return;
        }
        let Ok(Some(entry)) = daemon.store.get_inbox(finished) else { return };
        let account_id = entry.account_id;
        while let Some(queue) = self.parked.get_mut(&account_id) {
            let Some(next) = queue.pop_front() else {
                self.parked.remove(&account_id);
                return;
            };
            match self.step(daemon, next, Vec::new(), 0, commits) {
                Ok(Step::Finished) => continue,
                Ok(Step::Parked) => return,
                Err(error) => tracing::error!(%error, inbox_id = %next, "normalization could not be committed"),
            }
        }
    }

    /// One plugin call for a webhook, and what follows from it.
    fn step(
        &mut self,
        daemon: &Daemon,
        inbox_id: InboxId,
        responses: Vec<wit::ApiResponse>,
        n_rounds: u32,
        commits: &mut Commits,
    ) -> Result<Step, StoreError> {
        let Some(entry) = daemon.store.get_inbox(inbox_id)? else {
            tracing::warn!(%inbox_id, "dispatched inbox entry does not exist");
            return Ok(Step::Finished);
        };
        let started = std::time::Instant::now();
        let mut plugin_ident = (None, None);
        let outcome = self.run_plugin(daemon, &entry, &responses, &mut plugin_ident);
        daemon.metrics.normalized(started.elapsed());
        match outcome {
            Ok(PluginStep::Events(account, events)) => {
                commits.add(daemon, inbox_id, &account, events, plugin_ident)?;
                Ok(Step::Finished)
            }
            Ok(PluginStep::Fetch(account, api, requests)) => {
                let limits = &daemon.settings;
                if n_rounds >= limits.enrichment_max_rounds || requests.len() > limits.enrichment_max_requests || requests.is_empty() {
                    let message = format!(
                        "the plugin asked for {} API call(s) in round {}; at most {} per round and {} rounds",
                        requests.len(),
                        n_rounds + 1,
                        limits.enrichment_max_requests,
                        limits.enrichment_max_rounds
                    );
                    self.finish_failed(daemon, inbox_id, plugin_ident, Failure::failed("enrichment_limit", message))?;
                    return Ok(Step::Finished);
                }
                self.parked.entry(account.id.clone()).or_default();
                let round = Round { inbox_id, plugin: plugin_ident, responses, n_rounds };
                self.fetch(daemon, round, account, api, requests);
                Ok(Step::Parked)
            }
            Err(failure) => {
                self.finish_failed(daemon, inbox_id, plugin_ident, failure)?;
                Ok(Step::Finished)
            }
        }
    }

    /// Perform the requests on the tokio runtime; the answer comes back through this worker's queue.
    fn fetch(&self, daemon: &Daemon, round: Round, account: Account, api: Option<wit::ApiInfo>, requests: Vec<wit::ApiRequest>) {
        let Round { inbox_id, plugin, mut responses, n_rounds } = round;
        let enricher = daemon.enricher.clone();
        let own_queue = self.own_queue.clone();
        daemon.metrics.api_requests(requests.len());
        daemon.runtime.spawn(async move {
            let work = match enricher.perform(&account, api.as_ref(), requests).await {
                Ok(new_responses) => {
                    responses.extend(new_responses);
                    Work::Resume { inbox_id, responses, n_rounds: n_rounds + 1 }
                }
                Err(error) => {
                    let kind = match error {
                        enrich::EnrichError::Refused(_) => "enrichment_refused",
                        _ => "enrichment_unavailable",
                    };
                    Work::FetchFailed { inbox_id, plugin, kind, message: error.to_string() }
                }
            };
            let _ = own_queue.send(work);
        });
    }

    fn finish_failed(&self, daemon: &Daemon, inbox_id: InboxId, plugin_ident: PluginIdent, failure: Failure) -> Result<(), StoreError> {
        let (plugin, plugin_version) = plugin_ident;
        if failure.status == InboxStatus::Failed {
            tracing::warn!(%inbox_id, kind = failure.kind, error = %failure.message, "normalization failed");
            daemon.metrics.normalize_failed(failure.kind);
        }
        let outcome = InboxOutcome {
            status: failure.status,
            plugin,
            plugin_version,
            error_kind: Some(failure.kind.to_string()),
            error: Some(failure.message),
            event_ids: Vec::new(),
            n_unchanged: 0,
            at: model::time::now(),
        };
        daemon.store.finish_inbox(inbox_id, &outcome)
    }

    /// Run the account's plugin on one entry: rendered events, API requests, or why neither.
    fn run_plugin(
        &mut self,
        daemon: &Daemon,
        entry: &InboxEntry,
        responses: &[wit::ApiResponse],
        plugin_ident: &mut PluginIdent,
    ) -> Result<PluginStep, Failure> {
        let account = daemon
            .store
            .get_account(&entry.account_id)
            .map_err(|error| Failure::failed("storage", error.to_string()))?
            .ok_or_else(|| Failure::failed("unknown_account", format!("account {:?} was deleted", entry.account_id)))?;
        let plugin = daemon
            .plugins
            .get(&account.pms)
            .ok_or_else(|| Failure::failed("unknown_plugin", format!("no plugin named {:?} is loaded", account.pms)))?;
        *plugin_ident = (Some(plugin.info.name.clone()), Some(plugin.info.version.clone()));
        let session = match self.sessions.get_mut(&plugin.info.name) {
            Some((generation, session)) if *generation == plugin.generation => session,
            _ => {
                let session = plugin.session().map_err(|error| Failure::failed("instantiate", error.to_string()))?;
                &mut self.sessions.entry(plugin.info.name.clone()).insert_entry((plugin.generation, session)).into_mut().1
            }
        };
        let inbound = inbound(&account, entry);
        let outcome = session.normalize(&inbound, responses).map_err(|error| {
            let kind = match error {
                CallError::Timeout(_) => "timeout",
                CallError::MemoryLimit(_) => "memory_limit",
                CallError::Trap(_) => "trap",
                CallError::Instantiate(_) => "instantiate",
            };
            Failure::failed(kind, error.to_string())
        })?;
        let events = match outcome {
            Err(wit::PluginError::BadPayload(message)) => return Err(Failure::failed("bad_payload", message)),
            Err(wit::PluginError::UnsupportedEvent(message)) => {
                return Err(Failure { status: InboxStatus::Skipped, kind: "unsupported_event", message });
            }
            Ok(wit::Outcome::Fetch(requests)) => return Ok(PluginStep::Fetch(account, plugin.info.api.clone(), requests)),
            Ok(wit::Outcome::Done(events)) => events,
        };
        Ok(PluginStep::Events(account, render_all(&events)?))
    }
}

/// The plugin's view of a stored webhook.
fn inbound(account: &Account, entry: &InboxEntry) -> wit::Inbound {
    wit::Inbound {
        account: wit::AccountContext {
            id: account.id.clone(),
            workspace_id: account.workspace_id.clone(),
            settings: account.settings.iter().map(|(name, value)| (name.clone(), value.clone())).collect(),
        },
        method: entry.method.clone(),
        query: entry.query.clone(),
        content_type: entry.content_type.clone(),
        headers: entry.headers.clone(),
        body: entry.body.clone(),
        received_at: model::time::from_unix_ms(entry.received_at_ms),
    }
}

/// Validate and render a plugin's events, all or nothing.
fn render_all(events: &[wit::Event]) -> Result<Vec<Normalized>, Failure> {
    if events.len() > MAX_EVENTS_PER_CALL {
        return Err(Failure::failed("invalid_output", format!("{} events from one webhook; at most {MAX_EVENTS_PER_CALL}", events.len())));
    }
    let rendered = events
        .iter()
        .map(model::render_event)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| Failure::failed("invalid_output", error.0))?;
    let n_output_bytes: usize = rendered.iter().map(|event| serde_json::to_vec(&event.record).map_or(0, |bytes| bytes.len())).sum();
    if n_output_bytes > MAX_OUTPUT_BYTES {
        return Err(Failure::failed("invalid_output", format!("{n_output_bytes} bytes of output; at most {MAX_OUTPUT_BYTES}")));
    }
    Ok(rendered)
}

/// Normalized webhooks decided but not yet committed, with the state they wrote.
#[derive(Default)]
struct Commits {
    batches: Vec<NormalizedBatch>,
    overlay: state::Overlay,
    n_events: usize,
    n_unchanged: usize,
    n_deliveries: usize,
}

impl Commits {
    /// Decide one webhook's events against the stored state and the decisions before it.
    fn add(
        &mut self,
        daemon: &Daemon,
        inbox_id: InboxId,
        account: &Account,
        events: Vec<Normalized>,
        plugin_ident: PluginIdent,
    ) -> Result<(), StoreError> {
        let decided = state::decide(&daemon.store, &account.id, events, daemon.settings.drop_unchanged_updates, &mut self.overlay)?;
        let subscriptions = daemon.store.list_subscriptions(&account.id)?;
        let now_ms = crate::ingest::unix_ms();
        let mut stored_events = Vec::with_capacity(decided.events.len());
        let mut deliveries = Vec::new();
        for event in decided.events {
            let event_id = uuid::Uuid::now_v7().to_string();
            for subscription in
                subscriptions.iter().filter(|subscription| subscription.enabled && subscription.event_types.contains(&event.event_type))
            {
                deliveries.push(Delivery {
                    id: daemon.store.new_delivery_id()?,
                    event_id: event_id.clone(),
                    subscription_id: subscription.id.clone(),
                    account_id: account.id.clone(),
                    lane: lane(event.event_type, &event.record_id),
                    attempts: 0,
                    status: DeliveryStatus::Pending,
                    next_attempt_at_ms: now_ms,
                    last_error: None,
                    created_at_ms: now_ms,
                    updated_at_ms: now_ms,
                });
            }
            stored_events.push(StoredEvent {
                id: event_id,
                event_type: event.event_type,
                timestamp: model::time::from_unix_ms(now_ms),
                integration_account_id: account.id.clone(),
                workspace_id: account.workspace_id.clone(),
                record_id: event.record_id,
                record: serde_json::Value::Object(event.record),
                result: event.result,
                failure_reason: event.failure_reason,
                inbox_id: inbox_id.to_string(),
            });
        }
        self.n_events += stored_events.len();
        self.n_unchanged += decided.n_unchanged as usize;
        self.n_deliveries += deliveries.len();
        tracing::debug!(%inbox_id, n_events = stored_events.len(), n_deliveries = deliveries.len(), n_unchanged = decided.n_unchanged, "normalized");
        let (plugin, plugin_version) = plugin_ident;
        self.batches.push(NormalizedBatch {
            inbox_id,
            outcome: InboxOutcome {
                status: InboxStatus::Done,
                plugin,
                plugin_version,
                error_kind: None,
                error: None,
                event_ids: stored_events.iter().map(|event| event.id.clone()).collect(),
                n_unchanged: decided.n_unchanged,
                at: model::time::now(),
            },
            events: stored_events,
            state: decided.state,
            deliveries,
        });
        Ok(())
    }

    /// Commit everything decided, in one transaction, and wake the delivery scheduler.
    fn commit(self, daemon: &Daemon) {
        if self.batches.is_empty() {
            return;
        }
        let n_webhooks = self.batches.len();
        if let Err(error) = daemon.store.commit_normalized(self.batches) {
            // The entries stay pending and are normalized again at the next start.
            return tracing::error!(%error, n_webhooks, "normalization could not be committed");
        }
        daemon.metrics.events_emitted(self.n_events, self.n_unchanged);
        if self.n_deliveries > 0 {
            daemon.scheduler_wakeup.notify_one();
        }
    }
}

/// The ordering lane of a record: its deliveries to one subscription go one after another.
pub(crate) fn lane(event_type: crate::model::EventType, record_id: &str) -> String {
    format!("{}\u{1}{record_id}", event_type.record_kind().as_str())
}
