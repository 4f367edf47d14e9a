//! Normalizer workers: OS threads that run plugins on stored webhooks and commit the results.
//!
//! Plugin calls are CPU-bound and bounded only by the plugin's time limit, so they never run on
//! the tokio runtime: a slow plugin would stall the listener. Each worker is an OS thread that
//! keeps one [`PluginSession`] per plugin (one store, reused call after call, rebuilt after a trap
//! or a plugin replacement).
//!
//! Work waits in one queue per account ([`Dispatch`]); accounts with work wait in one ready list,
//! in turn. A worker takes a run: the ready accounts at the front of the list with their queued
//! webhooks (at most [`MAX_RUN`] in all), and holds each account it took until the run is
//! committed, so no other worker can take that account's next webhook and an account's webhooks
//! are decided in arrival order (created vs updated, previous dates are never raced). It decides
//! each webhook against the stored state and the decisions before it in the run, then commits the
//! whole run (events, new state, deliveries, inbox outcomes) in one transaction through the
//! store's writer. Under load one transaction covers many webhooks; alone, a webhook is committed
//! on its own at once. A run stops early once it has taken [`RUN_BUDGET`]: what it has not
//! started goes back to the front of its account's queue and the account to the back of the
//! ready list, so a slow plugin delays other accounts by at most one call, never by its backlog.
//!
//! Enrichment does not block a worker: when a plugin asks for API calls, the worker hands them to
//! the [`enrich::Enricher`] on the tokio runtime and parks the webhook; its account stays held
//! (later webhooks of the account wait behind it, their order matters), other accounts go on. The
//! answers come back to the front of the account's queue and any worker continues the call. A
//! parked webhook is still in the store's `pending` tree, so a crash replays it from the start.
//!
//! Event ids are derived, not drawn: [`event_id`] hashes the inbox entry, the generation of its
//! normalization and the event's place in the plugin's output, so a crash that replays a webhook
//! reproduces the `webhook-id` receivers may already have seen.
//!
//! On shutdown the workers finish the webhook in hand and stop; what is left stays pending and is
//! dispatched again at the next start.

pub mod enrich;
mod state;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::Settings;
use crate::metrics::Metrics;
use crate::model::{self, Normalized};
use crate::plugin::bindings::stayhook::plugin::types as wit;
use crate::plugin::{CallError, PluginRegistry, PluginSession};
use crate::store::{
    Account, Delivery, DeliveryStatus, InboxEntry, InboxId, InboxOutcome, InboxStatus, ListedPage, NormalizedBatch, Origin, SYNC_METHOD,
    Store, StoreError, StoredEvent,
};

/// What the workers use. Built by `run` (`src/lib.rs`); work arrives through a [`Submit`] handle,
/// and what the workers commit reaches the delivery scheduler through the store.
pub struct NormalizeContext {
    /// Storage: inbox entries, accounts, subscriptions, state; normalized runs are committed here.
    pub store: Store,
    /// Loaded plugins.
    pub plugins: Arc<PluginRegistry>,
    /// The settings normalization reads.
    pub settings: NormalizeSettings,
    /// Counters and histograms.
    pub metrics: Arc<Metrics>,
    /// Performs the API calls plugins ask for.
    pub enricher: Arc<enrich::Enricher>,
    /// The tokio runtime, for the enrichment started from worker threads.
    pub runtime: tokio::runtime::Handle,
}

/// The part of [`Settings`] normalization reads.
#[derive(Debug, Clone)]
pub struct NormalizeSettings {
    /// Whether an update that changes nothing of the record is dropped.
    pub drop_unchanged_updates: bool,
    /// Most rounds of API calls for one webhook.
    pub enrichment_max_rounds: u32,
    /// Most API calls in one round.
    pub enrichment_max_requests: usize,
}

impl From<&Settings> for NormalizeSettings {
    fn from(settings: &Settings) -> Self {
        Self {
            drop_unchanged_updates: settings.drop_unchanged_updates,
            enrichment_max_rounds: settings.enrichment_max_rounds,
            enrichment_max_requests: settings.enrichment_max_requests,
        }
    }
}

/// Most events one webhook may produce.
const MAX_EVENTS_PER_CALL: usize = 1_000;
/// Largest rendered output of one webhook, in bytes.
const MAX_OUTPUT_BYTES: usize = 8 * 1024 * 1024;
/// Most queued webhooks a worker normalizes before it commits them together.
const MAX_RUN: usize = 64;
/// A run starts no new webhook after this long; the rest go back to their accounts' queues.
const RUN_BUDGET: Duration = Duration::from_millis(50);
/// Longest plugin-supplied message kept with an inbox outcome (plugins may echo input).
const MAX_MESSAGE_CHARS: usize = 1_000;

/// What a worker is asked to do, for one inbox entry.
pub(crate) enum Work {
    /// Normalize a stored webhook as its `generation`th normalization.
    Normalize { inbox_id: InboxId, generation: u32 },
    /// Normalize again a webhook whose commit found a record changed by another writer. It goes
    /// ahead of everything of its account, a parked webhook's answers included: that webhook
    /// arrived after it.
    Redecide { inbox_id: InboxId, generation: u32 },
    /// Continue a parked webhook with the answers to its API calls.
    Resume { inbox_id: InboxId, generation: u32, responses: Vec<wit::ApiResponse>, n_rounds: u32 },
    /// A parked webhook's API calls could not be made at all.
    FetchFailed { inbox_id: InboxId, generation: u32, plugin: PluginIdent, kind: &'static str, message: String },
}

impl Work {
    /// The inbox entry and the generation this work is of.
    fn entry(&self) -> (InboxId, u32) {
        match self {
            Work::Normalize { inbox_id, generation }
            | Work::Redecide { inbox_id, generation }
            | Work::Resume { inbox_id, generation, .. }
            | Work::FetchFailed { inbox_id, generation, .. } => (*inbox_id, *generation),
        }
    }
}

/// How long a worker waits before deciding again a webhook whose store read found the store
/// unavailable.
const UNAVAILABLE_PAUSE: Duration = Duration::from_millis(250);

/// The queues between the listener (and the enrichment tasks) and the workers.
#[derive(Default)]
pub(crate) struct Dispatch {
    queues: Mutex<Queues>,
    available: Condvar,
    /// Entries the store handed over as resumed: a run of each may have stopped midway (see
    /// `Commits::add`). Taken when the entry is decided or fails.
    resumed: Mutex<HashSet<InboxId>>,
}

#[derive(Default)]
struct Queues {
    /// Accounts with queued work that no worker holds, in the order they became ready.
    ready: VecDeque<String>,
    /// Each account's queued work, in arrival order (a resumed call goes first).
    waiting: HashMap<String, VecDeque<Work>>,
    /// Accounts a worker holds: in a run, or with a webhook parked for API answers.
    held: HashMap<String, Hold>,
    stopping: bool,
}

/// Why an account is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hold {
    /// A worker's run has it.
    Running,
    /// Its webhook waits for API answers; the answers release it.
    Parked,
    /// The answers came back before the run that parked the webhook was committed: the run's
    /// release hands the account on (the answers must see that run's state).
    AnsweredWhileRunning,
}

impl Queues {
    /// Make `account_id` ready if it has work and nobody holds it.
    fn wake(&mut self, account_id: &str) -> bool {
        let has_work = self.waiting.get(account_id).is_some_and(|queue| !queue.is_empty());
        if has_work && !self.held.contains_key(account_id) {
            self.ready.push_back(account_id.to_string());
            return true;
        }
        false
    }
}

impl Dispatch {
    /// Whether `inbox_id` was handed over as resumed; forgets it.
    fn take_resumed(&self, inbox_id: InboxId) -> bool {
        self.resumed.lock().expect("resumed set lock poisoned").remove(&inbox_id)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queues> {
        self.queues.lock().expect("normalizer queue lock poisoned")
    }

    /// Queue work for an account, behind its earlier work.
    fn push(&self, account_id: &str, work: Work) {
        let mut queues = self.lock();
        let queue = queues.waiting.entry(account_id.to_string()).or_default();
        queue.push_back(work);
        let became_ready = queue.len() == 1 && queues.wake(account_id);
        drop(queues);
        if became_ready {
            self.available.notify_one();
        }
    }

    /// A parked webhook's answers: they go first (after webhooks to decide again, which arrived
    /// before it), and the account is no longer held (or, if the run that parked it is not
    /// committed yet, it will be let go when that run is).
    fn resume(&self, account_id: &str, work: Work) {
        let mut queues = self.lock();
        let queue = queues.waiting.entry(account_id.to_string()).or_default();
        let n_redecided = queue.iter().take_while(|work| matches!(work, Work::Redecide { .. })).count();
        queue.insert(n_redecided, work);
        if queues.held.get(account_id) == Some(&Hold::Running) {
            queues.held.insert(account_id.to_string(), Hold::AnsweredWhileRunning);
            return;
        }
        queues.held.remove(account_id);
        let became_ready = queues.wake(account_id);
        drop(queues);
        if became_ready {
            self.available.notify_one();
        }
    }

    /// Wait for a run: ready accounts with their queued work, each now held. `None` on stop.
    fn take(&self) -> Option<Vec<(String, VecDeque<Work>)>> {
        let mut queues = self.lock();
        loop {
            if queues.stopping {
                return None;
            }
            if !queues.ready.is_empty() {
                break;
            }
            queues = self.available.wait(queues).expect("normalizer queue lock poisoned");
        }
        let mut run = Vec::new();
        let mut n_taken = 0;
        while n_taken < MAX_RUN {
            let Some(account_id) = queues.ready.pop_front() else { break };
            let queue = queues.waiting.entry(account_id.clone()).or_default();
            let n_wanted = (MAX_RUN - n_taken).min(queue.len());
            let taken: VecDeque<Work> = queue.drain(..n_wanted).collect();
            if queue.is_empty() {
                queues.waiting.remove(&account_id);
            }
            n_taken += taken.len();
            queues.held.insert(account_id.clone(), Hold::Running);
            run.push((account_id, taken));
        }
        Some(run)
    }

    /// A run is committed: put back what it did not start (first in its account's queue), and
    /// let go of each account, except one whose webhook is parked.
    fn release(&self, account_id: &str, unstarted: VecDeque<Work>, parked: bool) {
        let mut queues = self.lock();
        let hold = queues.held.get(account_id).copied();
        let queue = queues.waiting.entry(account_id.to_string()).or_default();
        // The answers of a webhook parked in this run, if already back, stay ahead of the
        // webhooks that arrived after it; webhooks to decide again go ahead of everything.
        let n_redecided = unstarted.iter().take_while(|work| matches!(work, Work::Redecide { .. })).count();
        let n_ahead = usize::from(hold == Some(Hold::AnsweredWhileRunning));
        for (position, work) in unstarted.into_iter().enumerate().rev() {
            let at = if position < n_redecided { 0 } else { n_ahead.min(queue.len()) };
            queue.insert(at, work);
        }
        if queue.is_empty() {
            queues.waiting.remove(account_id);
        }
        if parked && hold == Some(Hold::Running) {
            queues.held.insert(account_id.to_string(), Hold::Parked);
            return;
        }
        queues.held.remove(account_id);
        let became_ready = queues.wake(account_id);
        drop(queues);
        if became_ready {
            self.available.notify_one();
        }
    }

    fn stop(&self) {
        self.lock().stopping = true;
        self.available.notify_all();
    }
}

/// The running workers. `run` owns it and stops it; the other stages get a [`Submit`] handle.
pub struct Normalizer {
    dispatch: Arc<Dispatch>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Normalizer {
    /// Start `n_threads` workers (at least one) working with `ctx`.
    pub fn start(ctx: Arc<NormalizeContext>, n_threads: usize) -> std::io::Result<Self> {
        let normalizer = Self { dispatch: Arc::new(Dispatch::default()), threads: Mutex::new(Vec::new()) };
        for worker_idx in 0..n_threads.max(1) {
            let worker =
                Worker { ctx: ctx.clone(), dispatch: normalizer.dispatch.clone(), sessions: HashMap::new(), account_id: String::new() };
            // On an error, dropping `normalizer` stops the workers already started.
            let thread = std::thread::Builder::new().name(format!("stayhook-normalize-{worker_idx}")).spawn(move || worker.run())?;
            normalizer.threads.lock().expect("normalizer thread list lock poisoned").push(thread);
        }
        Ok(normalizer)
    }

    /// The handle that queues stored webhooks for these workers.
    pub fn submit(&self) -> Submit {
        Submit(self.dispatch.clone())
    }

    /// Stop the workers after the webhook each has in hand, and wait for them.
    pub fn stop(&self) {
        self.dispatch.stop();
        let threads: Vec<_> = self.threads.lock().expect("normalizer thread list lock poisoned").drain(..).collect();
        for thread in threads {
            let _ = thread.join();
        }
    }
}

impl Drop for Normalizer {
    /// Tell the workers to stop (without waiting for them): a `run` that fails half-way started
    /// leaves no worker behind.
    fn drop(&mut self) {
        self.dispatch.stop();
    }
}

/// The one way into normalization: the store's feed ([`crate::store::Inbox::feed`]) hands it
/// each entry to normalize (appended, requeued, or pending at start). Cheap to clone.
#[derive(Clone)]
pub struct Submit(Arc<Dispatch>);

impl crate::store::Feed for Submit {
    /// Queue an inbox entry for normalization (as its `generation`th normalization), behind its
    /// account's earlier entries.
    fn dispatch(&self, account_id: &str, inbox_id: InboxId, generation: u32, resumed: bool) {
        if resumed {
            self.0.resumed.lock().expect("resumed set lock poisoned").insert(inbox_id);
        }
        self.0.push(account_id, Work::Normalize { inbox_id, generation });
    }
}

/// The id of the `position`th event in the output of an inbox entry's `generation`th
/// normalization: a UUIDv7 whose time is the entry's arrival and whose 74 other bits are the low
/// 32 bits of the inbox id, the generation and the position (under `MAX_EVENTS_PER_CALL`, 10
/// bits). So a replay reproduces the id, two events never share one (inbox ids arriving in the
/// same millisecond differ in their low bits), and the event log keeps arrival order, also within
/// one millisecond (inbox ids grow with arrival).
pub(crate) fn event_id(inbox_id: InboxId, received_at_ms: u64, generation: u32, position: usize) -> String {
    const _: () = assert!(MAX_EVENTS_PER_CALL <= 1 << 10, "the position takes 10 bits of the id");
    let position = u128::try_from(position).unwrap_or(u128::MAX) & 0x3ff;
    let sequence = (u128::from(inbox_id.0 & 0xffff_ffff) << 42) | (u128::from(generation) << 10) | position;
    let millis = u128::from(received_at_ms & 0xffff_ffff_ffff);
    let rand_a = sequence >> 62; // 12 bits
    let rand_b = sequence & ((1 << 62) - 1);
    let bits = (millis << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b;
    uuid::Uuid::from_u128(bits).to_string()
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

/// Which normalization of which entry produced something.
#[derive(Clone, Copy)]
struct Source {
    inbox_id: InboxId,
    received_at_ms: u64,
    generation: u32,
    /// The store handed it over as resumed (a run of it may have stopped midway).
    resumed: bool,
}

/// A webhook that produced no events, and the plugin that ran.
struct Failed {
    inbox_id: InboxId,
    generation: u32,
    plugin: PluginIdent,
}

/// A webhook between two rounds of API calls.
struct Round {
    inbox_id: InboxId,
    generation: u32,
    plugin: PluginIdent,
    responses: Vec<wit::ApiResponse>,
    n_rounds: u32,
}

struct Worker {
    ctx: Arc<NormalizeContext>,
    dispatch: Arc<Dispatch>,
    sessions: HashMap<String, (u64, PluginSession)>,
    /// The account whose webhook is being worked on (for its counts in `Metrics`).
    account_id: String,
}

impl Worker {
    fn run(mut self) {
        while let Some(run) = self.dispatch.take() {
            let ctx = self.ctx.clone();
            let started = Instant::now();
            let mut commits = Commits::default();
            let mut releases = Vec::with_capacity(run.len());
            let mut n_started = 0;
            for (account_id, mut queue) in run {
                let mut parked = false;
                // The first webhook always runs, so every run makes progress.
                while n_started == 0 || started.elapsed() < RUN_BUDGET {
                    let Some(work) = queue.pop_front() else { break };
                    n_started += 1;
                    self.account_id.clone_from(&account_id);
                    let (inbox_id, generation) = work.entry();
                    match self.work(&ctx, work, &mut commits) {
                        Ok(Step::Finished) => {}
                        Ok(Step::Parked) => {
                            parked = true;
                            break;
                        }
                        // The store cannot be reached for now (a clustered store electing a
                        // leader): the webhook is decided again, first of its account, after a
                        // pause, so none of the account's later webhooks overtakes it.
                        Err(StoreError::Unavailable(reason)) => {
                            tracing::warn!(%inbox_id, %reason, "the store is unavailable; deciding the webhook again shortly");
                            queue.push_front(Work::Redecide { inbox_id, generation });
                            std::thread::sleep(UNAVAILABLE_PAUSE);
                            break;
                        }
                        // A store failure: the entry stays pending and is replayed at the next start.
                        Err(error) => tracing::error!(%error, "normalization could not be recorded"),
                    }
                }
                releases.push((account_id, queue, parked));
            }
            // Commit before letting go of the accounts: their next webhooks must see this state.
            let mut again = commits.commit(&ctx);
            for (account_id, mut unstarted, parked) in releases {
                // Entries decided on stale state go first, in their order, before the account's
                // later ones.
                for (inbox_id, generation) in again.remove(&account_id).unwrap_or_default().into_iter().rev() {
                    // As resumed: on a store whose commit is not atomic (a clustered one), the
                    // conflict may be with this run's own write, whose answer was lost (a leader
                    // change); deciding it again then finds its own state and takes its events
                    // again instead of dropping them as unchanged.
                    self.dispatch.resumed.lock().expect("resumed set lock poisoned").insert(inbox_id);
                    unstarted.push_front(Work::Redecide { inbox_id, generation });
                }
                self.dispatch.release(&account_id, unstarted, parked);
            }
        }
    }

    /// One piece of work for one webhook.
    fn work(&mut self, ctx: &NormalizeContext, work: Work, commits: &mut Commits) -> Result<Step, StoreError> {
        match work {
            Work::Normalize { inbox_id, generation } | Work::Redecide { inbox_id, generation } => {
                self.step(ctx, inbox_id, generation, Vec::new(), 0, commits)
            }
            Work::Resume { inbox_id, generation, responses, n_rounds } => {
                self.step(ctx, inbox_id, generation, responses, n_rounds, commits)
            }
            Work::FetchFailed { inbox_id, generation, plugin, kind, message } => {
                let failed = Failed { inbox_id, generation, plugin };
                self.finish_failed(ctx, failed, Failure::failed(kind, message)).map(|()| Step::Finished)
            }
        }
    }

    /// One plugin call for a webhook, and what follows from it.
    fn step(
        &mut self,
        ctx: &NormalizeContext,
        inbox_id: InboxId,
        generation: u32,
        responses: Vec<wit::ApiResponse>,
        n_rounds: u32,
        commits: &mut Commits,
    ) -> Result<Step, StoreError> {
        let Some(entry) = ctx.store.get_inbox(inbox_id)? else {
            tracing::warn!(%inbox_id, "dispatched inbox entry does not exist");
            return Ok(Step::Finished);
        };
        if entry.method == SYNC_METHOD {
            return self.listed(ctx, inbox_id, &entry, generation, commits).map(|()| Step::Finished);
        }
        let started = std::time::Instant::now();
        let mut plugin_ident = (None, None);
        let outcome = self.run_plugin(ctx, &entry, &responses, &mut plugin_ident);
        ctx.metrics.normalized(started.elapsed());
        match outcome {
            Ok(PluginStep::Events(account, events)) => {
                let resumed = self.dispatch.take_resumed(inbox_id);
                let source = Source { inbox_id, received_at_ms: entry.received_at_ms, generation, resumed };
                commits.add(ctx, source, &account, events, plugin_ident, None)?;
                Ok(Step::Finished)
            }
            Ok(PluginStep::Fetch(account, api, requests)) => {
                let limits = &ctx.settings;
                if n_rounds >= limits.enrichment_max_rounds || requests.len() > limits.enrichment_max_requests || requests.is_empty() {
                    let message = format!(
                        "the plugin asked for {} API call(s) in round {}; at most {} per round and {} rounds",
                        requests.len(),
                        n_rounds + 1,
                        limits.enrichment_max_requests,
                        limits.enrichment_max_rounds
                    );
                    let failed = Failed { inbox_id, generation, plugin: plugin_ident };
                    self.finish_failed(ctx, failed, Failure::failed("enrichment_limit", message))?;
                    return Ok(Step::Finished);
                }
                let round = Round { inbox_id, generation, plugin: plugin_ident, responses, n_rounds };
                self.fetch(ctx, round, account, api, requests);
                Ok(Step::Parked)
            }
            Err(failure) => {
                self.finish_failed(ctx, Failed { inbox_id, generation, plugin: plugin_ident }, failure)?;
                Ok(Step::Finished)
            }
        }
    }

    /// Perform the requests on the tokio runtime; the answer goes to the front of the account's queue.
    fn fetch(&self, ctx: &NormalizeContext, round: Round, account: Account, api: Option<wit::ApiInfo>, requests: Vec<wit::ApiRequest>) {
        let Round { inbox_id, generation, plugin, mut responses, n_rounds } = round;
        let enricher = ctx.enricher.clone();
        let dispatch = self.dispatch.clone();
        ctx.metrics.api_requests(requests.len());
        ctx.runtime.spawn(async move {
            let work = match enricher.perform(&account, api.as_ref(), requests).await {
                Ok(new_responses) => {
                    responses.extend(new_responses);
                    Work::Resume { inbox_id, generation, responses, n_rounds: n_rounds + 1 }
                }
                Err(error) => {
                    let kind = match error {
                        enrich::EnrichError::Refused(_) => "enrichment_refused",
                        _ => "enrichment_unavailable",
                    };
                    Work::FetchFailed { inbox_id, generation, plugin, kind, message: error.to_string() }
                }
            };
            dispatch.resume(&account.id, work);
        });
    }

    /// A page listed by a sync pass (`src/sync/`), waiting in the inbox like a webhook: its
    /// rendered records are decided here, in order with the account's webhooks (the account is
    /// held by this run), against the same state.
    fn listed(
        &mut self,
        ctx: &NormalizeContext,
        inbox_id: InboxId,
        entry: &InboxEntry,
        generation: u32,
        commits: &mut Commits,
    ) -> Result<(), StoreError> {
        let failed = Failed { inbox_id, generation, plugin: (None, None) };
        let page: ListedPage = match serde_json::from_slice(&entry.body) {
            Ok(page) => page,
            Err(error) => return self.finish_failed(ctx, failed, Failure::failed("bad_payload", format!("a listed page: {error}"))),
        };
        let Some(account) = ctx.store.get_account(&entry.account_id)? else {
            let message = format!("account {:?} was deleted", entry.account_id);
            return self.finish_failed(ctx, failed, Failure::failed("unknown_account", message));
        };
        let resumed = self.dispatch.take_resumed(inbox_id);
        let source = Source { inbox_id, received_at_ms: entry.received_at_ms, generation, resumed };
        let listing = Listing { origin: page.origin, deliver: page.deliver };
        commits.add(ctx, source, &account, page.events, (None, None), Some(listing))
    }

    fn finish_failed(&self, ctx: &NormalizeContext, failed: Failed, failure: Failure) -> Result<(), StoreError> {
        let Failed { inbox_id, generation, plugin: (plugin, plugin_version) } = failed;
        self.dispatch.take_resumed(inbox_id);
        if failure.status == InboxStatus::Failed {
            tracing::warn!(%inbox_id, kind = failure.kind, error = %failure.message, "normalization failed");
            ctx.metrics.normalize_failed(&self.account_id, failure.kind);
        }
        let outcome = InboxOutcome {
            status: failure.status,
            plugin: plugin.map(|name| model::truncate_chars(name, MAX_MESSAGE_CHARS)),
            plugin_version: plugin_version.map(|version| model::truncate_chars(version, MAX_MESSAGE_CHARS)),
            error_kind: Some(failure.kind.to_string()),
            error: Some(model::truncate_chars(failure.message, MAX_MESSAGE_CHARS)),
            event_ids: Vec::new(),
            n_unchanged: 0,
            generation,
            at: model::time::now(),
        };
        ctx.store.finish_inbox(inbox_id, &outcome)
    }

    /// Run the account's plugin on one entry: rendered events, API requests, or why neither.
    fn run_plugin(
        &mut self,
        ctx: &NormalizeContext,
        entry: &InboxEntry,
        responses: &[wit::ApiResponse],
        plugin_ident: &mut PluginIdent,
    ) -> Result<PluginStep, Failure> {
        let account = ctx
            .store
            .get_account(&entry.account_id)
            .map_err(|error| Failure::failed("storage", error.to_string()))?
            .ok_or_else(|| Failure::failed("unknown_account", format!("account {:?} was deleted", entry.account_id)))?;
        let plugin = ctx
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
    let n_output_bytes: usize = rendered.iter().map(|event| json_len(&event.record)).sum();
    if n_output_bytes > MAX_OUTPUT_BYTES {
        return Err(Failure::failed("invalid_output", format!("{n_output_bytes} bytes of output; at most {MAX_OUTPUT_BYTES}")));
    }
    Ok(rendered)
}

/// The length of a value's JSON text, counted as it is written: nothing is kept (the record is
/// serialized for real once, when its event is stored).
fn json_len(value: &impl serde::Serialize) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // A JSON map with string keys cannot fail to serialize, and the sink never fails.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

/// Where listed records come from and whether their events are delivered.
#[derive(Clone, Copy)]
struct Listing {
    origin: Origin,
    deliver: bool,
}

/// Normalized webhooks decided but not yet committed, with the state they wrote.
#[derive(Default)]
struct Commits {
    batches: Vec<NormalizedBatch>,
    /// Per batch: its account and generation (to decide it again after a conflict).
    sources: Vec<(String, InboxId, u32)>,
    overlay: state::Overlay,
    n_events: usize,
    n_unchanged: usize,
    /// Webhooks decided per account (counted once committed).
    n_webhooks: HashMap<String, u64>,
}

impl Commits {
    /// Decide one webhook's events against the stored state and the decisions before it.
    fn add(
        &mut self,
        ctx: &NormalizeContext,
        source: Source,
        account: &Account,
        events: Vec<Normalized>,
        plugin_ident: PluginIdent,
        listing: Option<Listing>,
    ) -> Result<(), StoreError> {
        let Source { inbox_id, received_at_ms, generation, resumed } = source;
        let store = &ctx.store;
        // A listing re-reads records that did not change: those never produce an event, whatever
        // `drop_unchanged_updates` says of webhooks.
        let drop_unchanged = ctx.settings.drop_unchanged_updates || listing.is_some();
        let n_output = events.len();
        let mut decided =
            state::decide(&account.id, events, drop_unchanged, listing.is_some(), &mut self.overlay, &mut |kind, record_id| {
                store.get_state(&account.id, kind, record_id)
            })?;
        if listing.is_some_and(|listing| !listing.deliver) {
            // An initial sync that stores state only: the state is written, no event is.
            decided.events.clear();
        }
        // A run that stopped after its events and state were written, before its entry left
        // pending (a crash, a full disk), runs again under the same ids, and its decisions now
        // find the state it wrote: its events come out unchanged. They are in the log already
        // (the store writes a run's events before its state), so they are taken again with new
        // deliveries, as the stopped run would have delivered them. A later generation has ids
        // of its own, so only a repeated run finds any; and a stopped run stays pending until the
        // next start, so only entries the store hands over as resumed are looked up (no read on
        // the hot path).
        let mut repeated = Vec::new();
        if resumed && decided.events.len() < n_output && listing.is_none_or(|listing| listing.deliver) {
            let kept: HashSet<usize> = decided.events.iter().map(|event| event.position).collect();
            for position in (0..n_output).filter(|position| !kept.contains(position)) {
                if let Some(event) = store.get_event(&event_id(inbox_id, received_at_ms, generation, position))? {
                    repeated.push((position, event));
                }
            }
            if !repeated.is_empty() {
                tracing::info!(%inbox_id, n_events = repeated.len(), "a repeated run takes again the events its stopped run wrote");
                decided.n_unchanged = decided.n_unchanged.saturating_sub(u32::try_from(repeated.len()).unwrap_or(u32::MAX));
            }
        }
        let origin = listing.map_or(Origin::Webhook, |listing| listing.origin);
        let subscriptions = ctx.store.list_subscriptions(&account.id)?;
        let now_ms = model::time::unix_ms();
        let mut stored_events = Vec::with_capacity(decided.events.len() + repeated.len());
        let mut deliveries = Vec::new();
        let mut deliver = |event_id: &str, event_type: crate::model::EventType, record_id: &str| -> Result<(), StoreError> {
            for subscription in
                subscriptions.iter().filter(|subscription| subscription.enabled && subscription.event_types.contains(&event_type))
            {
                deliveries.push(Delivery {
                    id: ctx.store.delivery_id(event_id, &subscription.id)?,
                    event_id: event_id.to_string(),
                    subscription_id: subscription.id.clone(),
                    account_id: account.id.clone(),
                    lane: lane(event_type, record_id),
                    attempts: 0,
                    retry_base: 0,
                    status: DeliveryStatus::Pending,
                    next_attempt_at_ms: now_ms,
                    last_error: None,
                    created_at_ms: now_ms,
                    updated_at_ms: now_ms,
                });
            }
            Ok(())
        };
        // In the plugin's order, repeated events among the decided ones.
        let mut repeated = repeated.into_iter().peekable();
        for event in decided.events {
            while let Some((_, repeat)) = repeated.next_if(|(position, _)| *position < event.position) {
                deliver(&repeat.id, repeat.event_type, &repeat.record_id)?;
                stored_events.push(repeat);
            }
            let event_id = event_id(inbox_id, received_at_ms, generation, event.position);
            deliver(&event_id, event.event_type, &event.record_id)?;
            stored_events.push(StoredEvent {
                id: event_id,
                event_type: event.event_type,
                timestamp: model::time::from_unix_ms(now_ms),
                integration_account_id: account.id.clone(),
                workspace_id: account.workspace_id.clone(),
                record_id: event.record_id,
                record: serde_json::Value::Object(event.record),
                result: event.result,
                failure_reason: event.failure_reason.map(|reason| model::truncate_chars(reason, MAX_MESSAGE_CHARS)),
                inbox_id: inbox_id.to_string(),
                origin,
            });
        }
        for (_, repeat) in repeated {
            deliver(&repeat.id, repeat.event_type, &repeat.record_id)?;
            stored_events.push(repeat);
        }
        self.n_events += stored_events.len();
        self.n_unchanged += decided.n_unchanged as usize;
        *self.n_webhooks.entry(account.id.clone()).or_default() += 1;
        tracing::debug!(%inbox_id, n_events = stored_events.len(), n_deliveries = deliveries.len(), n_unchanged = decided.n_unchanged, "normalized");
        let (plugin, plugin_version) = plugin_ident;
        self.sources.push((account.id.clone(), inbox_id, generation));
        self.batches.push(NormalizedBatch {
            inbox_id,
            outcome: InboxOutcome {
                status: InboxStatus::Done,
                plugin: plugin.map(|name| model::truncate_chars(name, MAX_MESSAGE_CHARS)),
                plugin_version: plugin_version.map(|version| model::truncate_chars(version, MAX_MESSAGE_CHARS)),
                error_kind: None,
                error: None,
                event_ids: stored_events.iter().map(|event| event.id.clone()).collect(),
                n_unchanged: decided.n_unchanged,
                generation,
                at: model::time::now(),
            },
            events: stored_events,
            state: decided.state,
            deliveries,
        });
        Ok(())
    }

    /// Commit everything decided, in one transaction. The store wakes the delivery scheduler
    /// once the flush covering it is done (nothing is delivered before it is durable).
    ///
    /// A conflict (another writer changed a record these decisions read) writes nothing: the
    /// entries are returned, by account in order, to be decided again from the new state.
    fn commit(self, ctx: &NormalizeContext) -> HashMap<String, Vec<(InboxId, u32)>> {
        let mut again: HashMap<String, Vec<(InboxId, u32)>> = HashMap::new();
        if self.batches.is_empty() {
            return again;
        }
        let n_webhooks = self.batches.len();
        match ctx.store.commit_normalized_blocking(self.batches) {
            Ok(()) => {}
            Err(StoreError::Conflict { record }) => {
                tracing::warn!(%record, n_webhooks, "a record changed while its webhooks were decided; deciding them again");
                for (account_id, inbox_id, generation) in self.sources {
                    again.entry(account_id).or_default().push((inbox_id, generation));
                }
                return again;
            }
            Err(error) => {
                // The entries stay pending and are normalized again at the next start.
                tracing::error!(%error, n_webhooks, "normalization could not be committed");
                return again;
            }
        }
        ctx.metrics.events_emitted(self.n_events, self.n_unchanged);
        for (account_id, n_webhooks) in &self.n_webhooks {
            ctx.metrics.normalized_webhooks(account_id, *n_webhooks);
        }
        again
    }
}

/// The ordering lane of a record: its deliveries to one subscription go one after another.
pub(crate) fn lane(event_type: crate::model::EventType, record_id: &str) -> String {
    format!("{}\u{1}{record_id}", event_type.record_kind().as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_output_size_is_the_length_of_the_json_text() {
        let record = serde_json::json!({"id": "r-1", "guest": {"name": "Zoë \"Q\"", "n": [1, 2.5, null]}, "note": "line\nbreak"});
        assert_eq!(json_len(&record), serde_json::to_vec(&record).unwrap().len());
        assert_eq!(json_len(&serde_json::json!({})), 2);
    }

    #[test]
    fn event_ids_are_reproducible_per_entry_generation_and_position() {
        let id = event_id(InboxId(7), 1_764_000_000_000, 0, 0);
        assert_eq!(id, event_id(InboxId(7), 1_764_000_000_000, 0, 0), "a replay reproduces the id");
        let others = [
            event_id(InboxId(8), 1_764_000_000_000, 0, 0),
            event_id(InboxId(7), 1_764_000_000_000, 1, 0),
            event_id(InboxId(7), 1_764_000_000_000, 0, 1),
        ];
        assert!(others.iter().all(|other| *other != id), "{id} vs {others:?}");
        let uuid = uuid::Uuid::parse_str(&id).unwrap();
        assert_eq!(uuid.get_version_num(), 7, "still a time-ordered UUID");
        assert_eq!(uuid.get_timestamp().map(|timestamp| timestamp.to_unix().0), Some(1_764_000_000), "the entry's arrival time");
        assert!(event_id(InboxId(9), 1_764_000_000_001, 0, 0) > id, "later arrivals sort later");
        assert_eq!(uuid.get_variant(), uuid::Variant::RFC4122);
        // Within one millisecond: by inbox id (arrival), then generation, then position.
        let ordered = [
            event_id(InboxId(7), 1_764_000_000_000, 0, 999),
            event_id(InboxId(7), 1_764_000_000_000, 1, 0),
            event_id(InboxId(8), 1_764_000_000_000, 0, 0),
            event_id(InboxId(8), 1_764_000_000_000, 0, 1),
            event_id(InboxId(0xffff_ffff), 1_764_000_000_000, u32::MAX, 0),
        ];
        assert!(id < ordered[0] && ordered.windows(2).all(|pair| pair[0] < pair[1]), "{id} {ordered:#?}");
    }

    /// The inbox ids of a run, by account, with `R` marking resumed work.
    fn ids(run: &[(String, VecDeque<Work>)]) -> Vec<(String, Vec<String>)> {
        run.iter()
            .map(|(account_id, works)| {
                let ids = works
                    .iter()
                    .map(|work| match work {
                        Work::Normalize { inbox_id, .. } => inbox_id.to_string(),
                        Work::Redecide { inbox_id, .. } => format!("D{inbox_id}"),
                        Work::Resume { inbox_id, .. } => format!("R{inbox_id}"),
                        Work::FetchFailed { inbox_id, .. } => format!("F{inbox_id}"),
                    })
                    .collect();
                (account_id.clone(), ids)
            })
            .collect()
    }

    fn normalize(inbox_id: u64) -> Work {
        Work::Normalize { inbox_id: InboxId(inbox_id), generation: 0 }
    }

    fn resumed(inbox_id: u64) -> Work {
        Work::Resume { inbox_id: InboxId(inbox_id), generation: 0, responses: Vec::new(), n_rounds: 1 }
    }

    #[track_caller]
    fn check_run(dispatch: &Dispatch, expected: &[(&str, &[&str])]) -> Vec<(String, VecDeque<Work>)> {
        let run = dispatch.take().expect("a run");
        let expected: Vec<(String, Vec<String>)> =
            expected.iter().map(|(account, ids)| (account.to_string(), ids.iter().map(|id| id.to_string()).collect())).collect();
        assert_eq!(ids(&run), expected);
        run
    }

    #[test]
    fn accounts_take_turns_and_a_parked_webhook_keeps_its_place() {
        let dispatch = Dispatch::default();
        for inbox_id in [1, 2, 3] {
            dispatch.push("a", normalize(inbox_id));
        }
        dispatch.push("b", normalize(4));
        let mut run = check_run(&dispatch, &[("a", &["1", "2", "3"]), ("b", &["4"])]);
        // While the run holds them, new work waits and nobody else can take the accounts.
        dispatch.push("a", normalize(5));
        // Webhook 1 parks; its answers come back before the run is committed.
        let (_, queue_a) = &mut run[0];
        queue_a.pop_front();
        dispatch.resume("a", resumed(1));
        dispatch.release("a", std::mem::take(queue_a), true);
        dispatch.release("b", VecDeque::new(), false);
        // The answers go first, then what the run did not start, then what came meanwhile.
        let mut run = check_run(&dispatch, &[("a", &["R1", "2", "3", "5"])]);
        // Webhook 1 parks again (a second round), answered after the release: the account
        // waits for the answers.
        let (_, queue_a) = &mut run[0];
        queue_a.pop_front();
        dispatch.release("a", std::mem::take(queue_a), true);
        dispatch.push("a", normalize(6));
        dispatch.push("c", normalize(7));
        check_run(&dispatch, &[("c", &["7"])]);
        dispatch.release("c", VecDeque::new(), false);
        dispatch.resume("a", resumed(1));
        check_run(&dispatch, &[("a", &["R1", "2", "3", "5", "6"])]);
    }

    /// Webhooks whose commit met a changed record are decided again before anything of their
    /// account, a webhook parked in the same run included (it arrived after them), whether its
    /// answers come back before or after the run is let go.
    #[test]
    fn webhooks_decided_again_go_ahead_of_a_parked_webhooks_answers() {
        let redecide = |inbox_id: u64| Work::Redecide { inbox_id: InboxId(inbox_id), generation: 0 };
        for answered_while_running in [false, true] {
            let dispatch = Dispatch::default();
            for inbox_id in [1, 2, 3] {
                dispatch.push("a", normalize(inbox_id));
            }
            check_run(&dispatch, &[("a", &["1", "2", "3"])]);
            dispatch.push("a", normalize(4));
            // 1 and 2 were decided and their commit conflicted; 3 parked.
            if answered_while_running {
                dispatch.resume("a", resumed(3));
            }
            dispatch.release("a", VecDeque::from([redecide(1), redecide(2)]), true);
            if !answered_while_running {
                dispatch.resume("a", resumed(3));
            }
            check_run(&dispatch, &[("a", &["D1", "D2", "R3", "4"])]);
        }
    }

    #[test]
    fn truncation_keeps_short_messages_and_marks_cut_ones() {
        assert_eq!(model::truncate_chars("short".into(), 10), "short");
        let cut = model::truncate_chars("é".repeat(2_000), MAX_MESSAGE_CHARS);
        assert!(cut.starts_with(&"é".repeat(MAX_MESSAGE_CHARS)) && cut.ends_with("(2000 more bytes)"), "{cut}");
    }
}
