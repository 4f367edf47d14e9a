//! Initial sync and reconciliation (issue 13): a per-account scheduler that lists the PMS's
//! records through the plugin's `sync` export and feeds them into the normalizer's state decision.
//!
//! - **When.** [`run_scheduler`] looks at every account when the earliest pass is due, at least
//!   every [`SCAN_AT_LEAST_EVERY`], and when woken (an account created or changed, a pass ended): an
//!   account whose plugin declares sync modes gets a reconciliation pass every
//!   `reconcile_interval_secs` (the account's `reconcileIntervalSecs` overrides it, `0` is off),
//!   the first one an interval after the account was created (listing what changed since then).
//!   Creating an account starts an initial sync, and so does `POST /v1/accounts/{id}/sync`
//!   ([`Syncer::start_initial`]). One pass per account at a time (`Syncer::active`).
//! - **A pass** asks the plugin for one page at a time (the plugin's `sync`, on a blocking thread;
//!   its API calls through [`Enricher::perform_listing`], which keeps listing within half the
//!   account's rate limit and yields to waiting webhook enrichment, 429 and `Retry-After`
//!   honoured), renders the page's records and appends them to the inbox as one entry of method
//!   [`SYNC_METHOD`] (a [`ListedPage`]), which the store hands to the normalizer like a webhook. The
//!   normalizer decides it in order with the account's webhooks, against the same state. Once the
//!   entry's outcome is committed the pass stores its cursor ([`SyncStates::put_sync_state`]); a
//!   crash before that replays the entry (it is pending) and re-lists that one page, whose records
//!   the decision then drops as unchanged.
//! - **Watermark.** A reconciliation lists what changed since the watermark, the start of the last
//!   finished pass minus [`OVERLAP`] (clock skew between the PMS and the daemon, and records the
//!   PMS stamps late).
//! - **Failure.** A page that cannot be listed pauses the pass with its cursor and the reason
//!   (status `error`); it is resumed from that cursor after [`RETRY_AFTER_FAILURE`] (or the
//!   interval, when shorter). Webhooks are not affected.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::Settings;
use crate::metrics::Metrics;
use crate::model::{self, Normalized};
use crate::normalize::enrich::Enricher;
use crate::plugin::bindings::stayhook::plugin::types as wit;
use crate::plugin::{LoadedPlugin, PluginRegistry, PluginSession};
use crate::store::{Account, Appended, InboxEntry, ListedPage, PassKind, SYNC_METHOD, Store, StoreError, SyncPass, SyncState, SyncStates};

/// The scheduler looks at every account at least this often (a plugin reloaded with sync modes,
/// an account changed behind the API's back), besides when a pass is due or it is woken.
pub const SCAN_AT_LEAST_EVERY: Duration = Duration::from_secs(60);
/// A reconciliation starts this long before the last finished pass started.
pub const OVERLAP: Duration = Duration::from_secs(5 * 60);
/// A pass paused by an error is resumed after this long (or the account's interval, if shorter).
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(60);
/// How often a pass looks whether its page has been decided and committed.
const COMMIT_POLL: Duration = Duration::from_millis(10);
/// A page not decided within this long pauses the pass as failed (a normalizer commit that failed
/// leaves the entry pending until the next start; the pass must not wait for it forever).
const COMMIT_WAIT_MAX: Duration = Duration::from_secs(600);
/// Most records one page may hold.
const MAX_PAGE_EVENTS: usize = 1_000;
/// The stay-date window a `stay-date-window` pass lists: from this many days back...
const WINDOW_DAYS_BACK: i64 = 30;
/// ...to this many days ahead.
const WINDOW_DAYS_AHEAD: i64 = 365;

/// The part of [`Settings`] sync reads.
#[derive(Debug, Clone)]
pub struct SyncSettings {
    /// The daemon's reconciliation interval; `None`: off unless an account sets one.
    pub reconcile_interval: Option<Duration>,
    /// Whether a new account starts with an initial sync when it does not say.
    pub initial_sync: bool,
    /// Most rounds of API calls for one page (as for one webhook).
    pub max_rounds: u32,
    /// Most API calls in one round.
    pub max_requests: usize,
}

impl From<&Settings> for SyncSettings {
    fn from(settings: &Settings) -> Self {
        Self {
            reconcile_interval: settings.reconcile_interval,
            initial_sync: settings.initial_sync,
            max_rounds: settings.enrichment_max_rounds,
            max_requests: settings.enrichment_max_requests,
        }
    }
}

/// What the scheduler and the passes use. Built by `run` (`src/lib.rs`).
pub struct SyncContext {
    /// Accounts, sync states, the inbox (listed pages) and their outcomes.
    pub store: Store,
    /// The plugins whose `sync` runs.
    pub plugins: Arc<PluginRegistry>,
    /// The settings sync reads.
    pub settings: SyncSettings,
    /// Pass and page counters.
    pub metrics: Arc<Metrics>,
    /// Performs the plugin's API calls (the webhook enrichment client, its rate limits).
    pub enricher: Arc<Enricher>,
}

/// Why a pass cannot start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartError {
    /// A pass of this account is running.
    #[error("a sync of this account is running")]
    Running,
    /// The account's plugin lists nothing.
    #[error("{0}")]
    NotAvailable(String),
    /// The store failed.
    #[error("{0}")]
    Store(String),
}

/// The scheduler's handle: which accounts have a pass running, and how to start one. Shared by
/// the scheduler task and the admin API.
pub struct Syncer {
    ctx: SyncContext,
    active: Mutex<HashSet<String>>,
    /// The passes' tasks, aborted when the scheduler stops (each resumes from its stored cursor).
    passes: Mutex<tokio::task::JoinSet<()>>,
    /// Wakes the scheduler to look again (an account created or changed, a pass ended).
    wake: tokio::sync::Notify,
}

/// What the scheduler does for an account now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// Nothing yet; the next look is due at this time (Unix ms), if ever.
    Wait(Option<u64>),
    /// Go on with the stored pass (interrupted by a restart, or paused by an error).
    Resume,
    /// Start a new pass of this kind.
    Start(PassKind),
}

/// The account's interval: its own (`0`: off) or the daemon's.
pub(crate) fn interval_of(account: &Account, default: Option<Duration>) -> Option<Duration> {
    match account.reconcile_interval_secs {
        Some(0) => None,
        Some(secs) => Some(Duration::from_secs(secs)),
        None => default,
    }
}

fn ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The scheduler's rule, pure: what to do for an account with this state and interval at `now_ms`.
///
/// A stored pass that is not running here was interrupted (restart, SIGKILL) and resumes at once,
/// or failed and resumes after [`RETRY_AFTER_FAILURE`] (or the interval if shorter). Without an
/// interval nothing new starts. Otherwise a reconciliation is due an interval after the last pass
/// ended, or, for an account that never finished one, an interval after it was created
/// (`created_ms`; that first pass lists what changed since the account exists). An initial sync is
/// never started by the schedule: account creation and `POST .../sync` start those.
pub(crate) fn next(state: Option<&SyncState>, interval: Option<Duration>, created_ms: u64, now_ms: u64) -> Next {
    let state = state.cloned().unwrap_or_default();
    if state.running.is_some() {
        if state.last_error.is_none() {
            return Next::Resume;
        }
        let delay = interval.map_or(RETRY_AFTER_FAILURE, |interval| interval.min(RETRY_AFTER_FAILURE));
        let due = state.last_ended_at_ms.unwrap_or(0).saturating_add(ms(delay));
        return if now_ms >= due { Next::Resume } else { Next::Wait(Some(due)) };
    }
    let Some(interval) = interval else { return Next::Wait(None) };
    let due = state.last_ended_at_ms.unwrap_or(created_ms).saturating_add(ms(interval));
    if now_ms < due {
        return Next::Wait(Some(due));
    }
    Next::Start(PassKind::Reconciliation)
}

/// When the account was created (Unix ms; 0 if its stamp does not parse).
fn created_ms(account: &Account) -> u64 {
    chrono::DateTime::parse_from_rfc3339(&account.created_at)
        .ok()
        .and_then(|created| u64::try_from(created.timestamp_millis()).ok())
        .unwrap_or(0)
}

/// The watermark a pass that started at `started_at_ms` leaves for the next reconciliation.
pub(crate) fn watermark_after(started_at_ms: u64) -> String {
    model::time::from_unix_ms(started_at_ms.saturating_sub(ms(OVERLAP)))
}

/// The spelling of a mode in the API and the stored pass.
pub fn mode_name(mode: wit::SyncMode) -> &'static str {
    match mode {
        wit::SyncMode::ModifiedSince => "modified-since",
        wit::SyncMode::NewestFirstScan => "newest-first-scan",
        wit::SyncMode::StayDateWindow => "stay-date-window",
    }
}

fn mode_named(name: &str) -> Option<wit::SyncMode> {
    [wit::SyncMode::ModifiedSince, wit::SyncMode::NewestFirstScan, wit::SyncMode::StayDateWindow]
        .into_iter()
        .find(|mode| mode_name(*mode) == name)
}

/// Why an account cannot be synced, if it cannot: no plugin, or a plugin that lists nothing.
pub fn unavailable_reason(plugins: &PluginRegistry, account: &Account) -> Option<String> {
    match plugins.get(&account.pms) {
        None => Some(format!("no plugin named {:?} is loaded", account.pms)),
        Some(plugin) if plugin.info.sync_modes.is_empty() => {
            Some(format!("reconciliation not available: the {} plugin declares no sync modes", plugin.info.name))
        }
        Some(_) => None,
    }
}

impl Syncer {
    /// A syncer with no pass running.
    pub fn new(ctx: SyncContext) -> Arc<Self> {
        Arc::new(Self {
            ctx,
            active: Mutex::new(HashSet::new()),
            passes: Mutex::new(tokio::task::JoinSet::new()),
            wake: tokio::sync::Notify::new(),
        })
    }

    /// Whether a new account starts with an initial sync when its `initialSync` does not say.
    pub fn initial_sync_by_default(&self) -> bool {
        self.ctx.settings.initial_sync
    }

    /// Make the scheduler look at every account again now (an account was created or changed).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Whether a pass of the account runs now.
    pub fn is_running(&self, account_id: &str) -> bool {
        self.active.lock().expect("sync set lock poisoned").contains(account_id)
    }

    /// The daemon's default reconciliation interval.
    pub fn default_interval(&self) -> Option<Duration> {
        self.ctx.settings.reconcile_interval
    }

    /// When the scheduler will next do something for this account (Unix ms), if it will.
    pub fn next_run_ms(&self, account: &Account, state: Option<&SyncState>) -> Option<u64> {
        if self.is_running(&account.id) || unavailable_reason(&self.ctx.plugins, account).is_some() {
            return None;
        }
        let now_ms = model::time::unix_ms();
        match next(state, interval_of(account, self.ctx.settings.reconcile_interval), created_ms(account), now_ms) {
            Next::Wait(due) => due,
            Next::Resume | Next::Start(_) => Some(now_ms),
        }
    }

    /// Start an initial sync of the account now (`deliver`: its records are delivered as
    /// `initial-sync` events; otherwise only stored). Replaces a pass paused by an error.
    pub async fn start_initial(self: &Arc<Self>, account: &Account, deliver: bool) -> Result<(), StartError> {
        if let Some(reason) = unavailable_reason(&self.ctx.plugins, account) {
            return Err(StartError::NotAvailable(reason));
        }
        if !self.claim(&account.id) {
            return Err(StartError::Running);
        }
        let previous = match self.ctx.store.get_sync_state(&account.id) {
            Ok(state) => state,
            Err(error) => {
                self.release(&account.id);
                return Err(StartError::Store(error.to_string()));
            }
        };
        let mut state = previous.clone().unwrap_or_default();
        let Some(pass) = self.new_pass(account, PassKind::InitialSync, deliver, None) else {
            self.release(&account.id);
            return Err(StartError::NotAvailable("the plugin declares no sync modes".into()));
        };
        state.running = Some(pass);
        state.last_error = None;
        match self.ctx.store.put_sync_state(&account.id, previous.as_ref(), &state).await {
            Ok(true) => {}
            // Another writer (a pass elsewhere) changed the state since it was read.
            Ok(false) => {
                self.release(&account.id);
                return Err(StartError::Running);
            }
            Err(error) => {
                self.release(&account.id);
                return Err(StartError::Store(error.to_string()));
            }
        }
        self.spawn_pass(account.id.clone(), state);
        Ok(())
    }

    fn spawn_pass(self: &Arc<Self>, account_id: String, state: SyncState) {
        let mut passes = self.passes.lock().expect("sync task set lock poisoned");
        while passes.try_join_next().is_some() {}
        passes.spawn(self.clone().run_pass(account_id, state));
    }

    fn claim(&self, account_id: &str) -> bool {
        self.active.lock().expect("sync set lock poisoned").insert(account_id.to_string())
    }

    fn release(&self, account_id: &str) {
        self.active.lock().expect("sync set lock poisoned").remove(account_id);
    }

    /// A new pass of the plugin's best mode.
    /// A new pass: an initial sync lists with the plugin's best mode (everything it can list); a
    /// reconciliation with every mode the plugin declares, best first, one after the other.
    fn new_pass(&self, account: &Account, kind: PassKind, deliver: bool, since: Option<String>) -> Option<SyncPass> {
        let plugin = self.ctx.plugins.get(&account.pms)?;
        let now_ms = model::time::unix_ms();
        let since_of = |mode: wit::SyncMode| match (mode, kind) {
            (wit::SyncMode::StayDateWindow, _) => Some(window_day(now_ms, -WINDOW_DAYS_BACK)),
            (_, PassKind::InitialSync) => None,
            (_, PassKind::Reconciliation) => since.clone(),
        };
        let mut modes = plugin.info.sync_modes.iter().map(|mode| (mode_name(*mode).to_string(), since_of(*mode)));
        let (mode, since) = modes.next()?;
        let modes_left = if kind == PassKind::Reconciliation { modes.collect() } else { Vec::new() };
        Some(SyncPass {
            kind,
            mode,
            modes_left,
            deliver,
            cursor: None,
            since,
            started_at: model::time::from_unix_ms(now_ms),
            started_at_ms: now_ms,
            finished_at: None,
            pages_done: 0,
            records_seen: 0,
            recovered: 0,
            errors: 0,
            last_error: None,
        })
    }

    /// One look at every account: start or resume what is due. Returns when the earliest pass
    /// not started now is due (Unix ms), if any.
    async fn scan(self: &Arc<Self>) -> Result<Option<u64>, StoreError> {
        let now_ms = model::time::unix_ms();
        let mut earliest: Option<u64> = None;
        for account in self.ctx.store.list_accounts()? {
            if self.is_running(&account.id) || unavailable_reason(&self.ctx.plugins, &account).is_some() {
                continue;
            }
            let state = self.ctx.store.get_sync_state(&account.id)?;
            let previous = state.clone();
            let created = created_ms(&account);
            let mut state = match next(state.as_ref(), interval_of(&account, self.ctx.settings.reconcile_interval), created, now_ms) {
                Next::Wait(due) => {
                    earliest = match (earliest, due) {
                        (Some(known), Some(due)) => Some(known.min(due)),
                        (known, due) => known.or(due),
                    };
                    continue;
                }
                Next::Resume => state.unwrap_or_default(),
                Next::Start(kind) => {
                    let mut state = state.unwrap_or_default();
                    // Never synced: what changed since the account exists (its webhooks should have said).
                    let since = state.watermark.clone().unwrap_or_else(|| watermark_after(created));
                    let Some(pass) = self.new_pass(&account, kind, kind == PassKind::Reconciliation, Some(since)) else {
                        continue;
                    };
                    state.running = Some(pass);
                    state
                }
            };
            if !self.claim(&account.id) {
                continue;
            }
            state.last_error = None;
            match self.ctx.store.put_sync_state(&account.id, previous.as_ref(), &state).await {
                Ok(true) => self.spawn_pass(account.id.clone(), state),
                // Another writer (a pass elsewhere) changed the state since it was read.
                Ok(false) => self.release(&account.id),
                Err(error) => {
                    self.release(&account.id);
                    return Err(error);
                }
            }
        }
        Ok(earliest)
    }

    /// Run the state's pass to its end or its first failure; the account is claimed.
    async fn run_pass(self: Arc<Self>, account_id: String, mut state: SyncState) {
        let Some(mut pass) = state.running.clone() else { return self.release(&account_id) };
        // What this pass wrote last: each write expects it (compare-and-set), so a pass another
        // writer took over stops here.
        let mut written = state.clone();
        tracing::info!(%account_id, kind = pass.kind.as_str(), mode = %pass.mode, cursor = ?pass.cursor, "sync pass");
        let mut session: Option<(u64, PluginSession)> = None;
        let ended = loop {
            let page = match self.one_page(&account_id, &pass, &mut session).await {
                Ok(Some(page)) => page,
                // The account was deleted: its state goes with it.
                Ok(None) => {
                    let _ = self.ctx.store.remove_sync_state(&account_id).await;
                    return self.release(&account_id);
                }
                Err(reason) => break Err(reason),
            };
            pass.pages_done += 1;
            pass.records_seen += page.n_records;
            pass.recovered += page.n_events;
            pass.cursor = page.next_cursor.clone();
            self.ctx.metrics.sync_page(&page.pms, if pass.kind == PassKind::Reconciliation { page.n_events } else { 0 });
            if !page.more || page.next_cursor.is_none() {
                if pass.modes_left.is_empty() {
                    break Ok(());
                }
                // This mode is done: the next one starts at its first page.
                let (mode, since) = pass.modes_left.remove(0);
                pass.mode = mode;
                pass.since = since;
                pass.cursor = None;
            }
            state.running = Some(pass.clone());
            match self.ctx.store.put_sync_state(&account_id, Some(&written), &state).await {
                Ok(true) => written = state.clone(),
                Ok(false) => {
                    tracing::warn!(%account_id, "the account's sync state changed under this pass (another writer); it stops here");
                    return self.release(&account_id);
                }
                Err(error) => break Err(format!("storing the cursor: {error}")),
            }
        };
        let now_ms = model::time::unix_ms();
        state.last_ended_at_ms = Some(now_ms);
        match ended {
            Ok(()) => {
                pass.finished_at = Some(model::time::from_unix_ms(now_ms));
                state.watermark = Some(watermark_after(pass.started_at_ms));
                state.running = None;
                state.last_error = None;
                tracing::info!(%account_id, kind = pass.kind.as_str(), pages = pass.pages_done, records = pass.records_seen, recovered = pass.recovered, "sync pass finished");
                self.ctx.metrics.sync_pass(pass.kind.as_str(), "finished");
                state.last_pass = Some(pass);
            }
            Err(reason) => {
                tracing::warn!(%account_id, kind = pass.kind.as_str(), %reason, "sync pass failed; it resumes from its cursor later");
                pass.errors += 1;
                pass.last_error = Some(reason.clone());
                state.last_error = Some((reason, model::time::from_unix_ms(now_ms)));
                self.ctx.metrics.sync_pass(pass.kind.as_str(), "failed");
                state.running = Some(pass);
            }
        }
        // The account may have been deleted meanwhile: then its state is not written back.
        if matches!(self.ctx.store.get_account(&account_id), Ok(Some(_))) {
            match self.ctx.store.put_sync_state(&account_id, Some(&written), &state).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(%account_id, "the account's sync state changed under this pass (another writer); its end is not stored")
                }
                Err(error) => tracing::error!(%account_id, %error, "storing the sync state failed"),
            }
        }
        self.release(&account_id);
        // Its next pass is due an interval from now (or a retry): the scheduler computes when.
        self.wake();
    }

    /// List one page, hand it to the normalizer and wait until it is committed. `None`: the
    /// account no longer exists.
    async fn one_page(
        &self,
        account_id: &str,
        pass: &SyncPass,
        session: &mut Option<(u64, PluginSession)>,
    ) -> Result<Option<Page>, String> {
        let store = &self.ctx.store;
        let Some(account) = store.get_account(account_id).map_err(|error| error.to_string())? else { return Ok(None) };
        let plugin = self.ctx.plugins.get(&account.pms).ok_or_else(|| format!("no plugin named {:?} is loaded", account.pms))?;
        let mode = mode_named(&pass.mode).ok_or_else(|| format!("unknown sync mode {:?}", pass.mode))?;
        let request = wit::SyncRequest {
            account: wit::AccountContext {
                id: account.id.clone(),
                workspace_id: account.workspace_id.clone(),
                settings: account.settings.iter().map(|(name, value)| (name.clone(), value.clone())).collect(),
            },
            mode,
            cursor: pass.cursor.clone(),
            since: pass.since.clone(),
            until: (mode == wit::SyncMode::StayDateWindow).then(|| window_day(pass.started_at_ms, WINDOW_DAYS_AHEAD)),
            now: pass.started_at.clone(),
        };
        let listed = self.list_page(&account, &plugin, request, session).await?;
        if listed.events.len() > MAX_PAGE_EVENTS {
            return Err(format!("the plugin listed {} records on one page; at most {MAX_PAGE_EVENTS}", listed.events.len()));
        }
        let events: Vec<Normalized> = listed
            .events
            .iter()
            .map(model::render_event)
            .collect::<Result<_, _>>()
            .map_err(|error| format!("the plugin listed an invalid record: {}", error.0))?;
        let n_records = u64::try_from(events.len()).unwrap_or(u64::MAX);
        let mut n_events = 0;
        if !events.is_empty() {
            let body = ListedPage { origin: pass.kind.origin(), deliver: pass.deliver, events };
            let entry = InboxEntry {
                account_id: account.id.clone(),
                received_at_ms: model::time::unix_ms(),
                method: SYNC_METHOD.into(),
                query: String::new(),
                content_type: Some("application/json".into()),
                headers: vec![("stayhook-origin".into(), pass.kind.as_str().into())],
                body: serde_json::to_vec(&body).map_err(|error| error.to_string())?,
            };
            let Appended::New(inbox_id) = store.append_inbox(&entry, None).await.map_err(|error| error.to_string())? else {
                return Err("the store took a listed page for a duplicate, without duplicate suppression".into());
            };
            let waiting_since = std::time::Instant::now();
            let outcome = loop {
                if let Some(outcome) = store.inbox_outcome(inbox_id).map_err(|error| error.to_string())? {
                    break outcome;
                }
                if waiting_since.elapsed() > COMMIT_WAIT_MAX {
                    return Err(format!("the listed page (inbox entry {inbox_id}) was not decided within {} s", COMMIT_WAIT_MAX.as_secs()));
                }
                tokio::time::sleep(COMMIT_POLL).await;
            };
            if let Some(error) = outcome.error {
                return Err(format!("the page could not be decided: {error}"));
            }
            n_events = u64::try_from(outcome.event_ids.len()).unwrap_or(u64::MAX);
        }
        Ok(Some(Page { pms: account.pms.clone(), n_records, n_events, next_cursor: listed.next_cursor, more: listed.more }))
    }

    /// Call the plugin's `sync` until it answers a page, performing the API calls it asks for.
    async fn list_page(
        &self,
        account: &Account,
        plugin: &Arc<LoadedPlugin>,
        request: wit::SyncRequest,
        session: &mut Option<(u64, PluginSession)>,
    ) -> Result<wit::SyncPage, String> {
        let mut responses: Vec<wit::ApiResponse> = Vec::new();
        for round in 0..=self.ctx.settings.max_rounds {
            let mut current = match session.take() {
                Some((generation, session)) if generation == plugin.generation => session,
                _ => plugin.session().map_err(|error| error.to_string())?,
            };
            let (request_copy, responses_copy) = (request.clone(), responses.clone());
            let (current, outcome) = tokio::task::spawn_blocking(move || {
                let outcome = current.sync(&request_copy, &responses_copy);
                (current, outcome)
            })
            .await
            .map_err(|error| format!("the plugin's sync call failed: {error}"))?;
            *session = Some((plugin.generation, current));
            let requests = match outcome {
                Err(error) => return Err(error.to_string()),
                Ok(Err(wit::PluginError::BadPayload(message) | wit::PluginError::UnsupportedEvent(message))) => {
                    return Err(format!("the plugin refused: {message}"));
                }
                Ok(Ok(wit::SyncOutcome::Page(page))) => return Ok(page),
                Ok(Ok(wit::SyncOutcome::Fetch(requests))) => requests,
            };
            if round >= self.ctx.settings.max_rounds || requests.is_empty() || requests.len() > self.ctx.settings.max_requests {
                return Err(format!(
                    "the plugin asked for {} API call(s) in round {}; at most {} per round and {} rounds",
                    requests.len(),
                    round + 1,
                    self.ctx.settings.max_requests,
                    self.ctx.settings.max_rounds
                ));
            }
            self.ctx.metrics.api_requests(requests.len());
            let answers =
                self.ctx.enricher.perform_listing(account, plugin.info.api.as_ref(), requests).await.map_err(|error| error.to_string())?;
            responses.extend(answers);
        }
        Err("the plugin never answered a page".into())
    }
}

/// What one committed page did.
struct Page {
    pms: String,
    n_records: u64,
    n_events: u64,
    next_cursor: Option<String>,
    more: bool,
}

/// The date `days` from `now_ms` ("YYYY-MM-DD").
fn window_day(now_ms: u64, days: i64) -> String {
    let now = chrono::DateTime::from_timestamp_millis(i64::try_from(now_ms).unwrap_or(i64::MAX)).unwrap_or_default();
    (now + chrono::Duration::days(days)).format("%Y-%m-%d").to_string()
}

/// Start and resume passes when they are due (looking again when woken, and at least every
/// [`SCAN_AT_LEAST_EVERY`]) until `stop` is notified; then the passes in progress are stopped where
/// they are (each resumes from its stored cursor at the next start).
pub async fn run_scheduler(syncer: Arc<Syncer>, stop: Arc<tokio::sync::Notify>) {
    loop {
        let wait = match syncer.scan().await {
            Ok(earliest) => {
                let until_due = earliest.map(|due| Duration::from_millis(due.saturating_sub(model::time::unix_ms())));
                until_due.map_or(SCAN_AT_LEAST_EVERY, |until_due| until_due.min(SCAN_AT_LEAST_EVERY))
            }
            Err(error) => {
                tracing::warn!(%error, "the sync scheduler could not read or write the store");
                Duration::from_secs(1)
            }
        };
        tokio::select! {
            () = stop.notified() => break,
            () = syncer.wake.notified() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
    let mut passes = std::mem::take(&mut *syncer.passes.lock().expect("sync task set lock poisoned"));
    passes.abort_all();
    while passes.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: u64 = 60_000;

    fn finished(ended_ms: u64) -> SyncState {
        SyncState { watermark: Some("2026-12-06T00:00:00.000Z".into()), last_ended_at_ms: Some(ended_ms), ..SyncState::default() }
    }

    fn paused(ended_ms: u64, error: Option<&str>) -> SyncState {
        SyncState {
            running: Some(SyncPass {
                kind: PassKind::Reconciliation,
                mode: "modified-since".into(),
                deliver: true,
                cursor: Some("3".into()),
                since: None,
                started_at: String::new(),
                started_at_ms: 0,
                finished_at: None,
                pages_done: 2,
                records_seen: 200,
                recovered: 0,
                errors: u64::from(error.is_some()),
                last_error: error.map(str::to_owned),
                modes_left: Vec::new(),
            }),
            last_error: error.map(|error| (error.to_string(), String::new())),
            last_ended_at_ms: Some(ended_ms),
            ..SyncState::default()
        }
    }

    #[test]
    fn the_scheduler_starts_resumes_and_waits_by_the_rules() {
        let interval = Some(Duration::from_secs(15 * 60));
        let now = 100 * MINUTE;
        // Never synced: the first reconciliation an interval after the account was created;
        // without an interval, nothing.
        assert_eq!(next(None, interval, now - 20 * MINUTE, now), Next::Start(PassKind::Reconciliation));
        assert_eq!(next(None, interval, now - 5 * MINUTE, now), Next::Wait(Some(now + 10 * MINUTE)));
        assert_eq!(next(None, None, 0, now), Next::Wait(None));
        // A finished pass: the next reconciliation an interval after it ended.
        assert_eq!(next(Some(&finished(now - 5 * MINUTE)), interval, 0, now), Next::Wait(Some(now + 10 * MINUTE)));
        assert_eq!(next(Some(&finished(now - 15 * MINUTE)), interval, 0, now), Next::Start(PassKind::Reconciliation));
        assert_eq!(next(Some(&finished(now - 15 * MINUTE)), None, 0, now), Next::Wait(None), "off: nothing new");
        // Interrupted by a restart: resumed at once, interval or not.
        assert_eq!(next(Some(&paused(now, None)), interval, 0, now), Next::Resume);
        assert_eq!(next(Some(&paused(now, None)), None, 0, now), Next::Resume);
        // Paused by an error: resumed after the retry delay, or the interval when shorter.
        assert_eq!(next(Some(&paused(now, Some("HTTP 503"))), interval, 0, now), Next::Wait(Some(now + MINUTE)));
        assert_eq!(next(Some(&paused(now - MINUTE, Some("HTTP 503"))), interval, 0, now), Next::Resume);
        assert_eq!(next(Some(&paused(now, Some("HTTP 503"))), Some(Duration::from_secs(2)), 0, now), Next::Wait(Some(now + 2_000)));
    }

    #[test]
    fn an_account_overrides_the_interval_or_turns_it_off() {
        let mut account = Account {
            id: "a".into(),
            workspace_id: "w".into(),
            pms: "chaos".into(),
            name: None,
            credentials: Default::default(),
            verification: Default::default(),
            settings: Default::default(),
            api_base_url: None,
            rate_limit_per_second: None,
            registration: Default::default(),
            reconcile_interval_secs: None,
            created_at: String::new(),
            updated_at: String::new(),
        };
        let default = Some(Duration::from_secs(900));
        assert_eq!(interval_of(&account, default), default);
        account.reconcile_interval_secs = Some(60);
        assert_eq!(interval_of(&account, default), Some(Duration::from_secs(60)));
        account.reconcile_interval_secs = Some(0);
        assert_eq!(interval_of(&account, default), None);
    }

    #[test]
    fn the_watermark_is_the_pass_start_minus_the_overlap() {
        assert_eq!(watermark_after(1_764_979_200_000), "2025-12-05T23:55:00.000Z");
        assert_eq!(window_day(1_764_979_200_000, -30), "2025-11-06");
    }
}
