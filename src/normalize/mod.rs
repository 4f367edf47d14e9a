//! Normalizer workers: OS threads that run plugins on stored webhooks and commit the results.
//!
//! Plugin calls are CPU-bound and bounded only by the plugin's time limit, so they never run on
//! the tokio runtime: a slow plugin would stall the listener. Each worker is an OS thread fed by
//! its own crossbeam channel of inbox ids and keeps one [`PluginSession`] per plugin (one store,
//! reused call after call, rebuilt after a trap or a plugin replacement). Webhooks of one account
//! always go to the same worker, in arrival order, so state decisions (created vs updated,
//! previous dates) for an account are never raced. A worker commits the events, the new state,
//! the deliveries and the inbox outcome in one transaction, then wakes the delivery scheduler.
//!
//! On shutdown the workers finish the entry in hand and stop; what is left stays in the store's
//! `pending` tree and is dispatched again at the next start.

mod state;

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, unbounded};

use crate::daemon::Daemon;
use crate::model::{self, Normalized};
use crate::plugin::bindings::stayhook::plugin::types as wit;
use crate::plugin::{CallError, PluginSession};
use crate::store::{Delivery, DeliveryStatus, InboxEntry, InboxId, InboxOutcome, InboxStatus, NormalizedBatch, StoredEvent};

/// Most events one webhook may produce.
const MAX_EVENTS_PER_CALL: usize = 1_000;
/// Largest rendered output of one webhook, in bytes.
const MAX_OUTPUT_BYTES: usize = 8 * 1024 * 1024;

/// The handle the listener uses to hand work to the workers.
pub struct Normalizer {
    senders: Vec<Sender<InboxId>>,
    stopping: Arc<AtomicBool>,
    threads: std::sync::Mutex<Vec<JoinHandle<()>>>,
}

impl Normalizer {
    /// Start `n_threads` workers. They wait until [`Normalizer::attach`] gives them the daemon.
    pub fn start(n_threads: usize) -> (Self, Vec<Receiver<InboxId>>) {
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..n_threads.max(1)).map(|_| unbounded()).unzip();
        (Self { senders, stopping: Arc::new(AtomicBool::new(false)), threads: std::sync::Mutex::new(Vec::new()) }, receivers)
    }

    /// Spawn the worker threads on `receivers`, working for `daemon`.
    pub fn attach(&self, daemon: &Arc<Daemon>, receivers: Vec<Receiver<InboxId>>) -> std::io::Result<()> {
        let mut threads = self.threads.lock().expect("normalizer thread list lock poisoned");
        for (worker_idx, receiver) in receivers.into_iter().enumerate() {
            let daemon = Arc::downgrade(daemon);
            let stopping = self.stopping.clone();
            let thread = std::thread::Builder::new()
                .name(format!("stayhook-normalize-{worker_idx}"))
                .spawn(move || worker(daemon, receiver, stopping))?;
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
        let _ = self.senders[worker_idx].send(inbox_id);
    }

    /// Stop the workers after the entry each has in hand, and wait for them.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        let threads: Vec<_> = self.threads.lock().expect("normalizer thread list lock poisoned").drain(..).collect();
        for sender in &self.senders {
            // Wake idle workers so they notice the flag; a closed channel is fine.
            let _ = sender.send(InboxId(u64::MAX));
        }
        for thread in threads {
            let _ = thread.join();
        }
    }
}

fn worker(daemon: std::sync::Weak<Daemon>, receiver: Receiver<InboxId>, stopping: Arc<AtomicBool>) {
    let mut sessions: HashMap<String, (u64, PluginSession)> = HashMap::new();
    while let Ok(inbox_id) = receiver.recv() {
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        let Some(daemon) = daemon.upgrade() else { return };
        if let Err(error) = normalize_one(&daemon, &mut sessions, inbox_id) {
            // A store failure: the entry stays pending and is retried at the next start.
            tracing::error!(inbox_id = %inbox_id, %error, "normalization could not be committed");
        }
    }
}

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

fn normalize_one(
    daemon: &Daemon,
    sessions: &mut HashMap<String, (u64, PluginSession)>,
    inbox_id: InboxId,
) -> Result<(), crate::store::StoreError> {
    let Some(entry) = daemon.store.get_inbox(inbox_id)? else {
        tracing::warn!(%inbox_id, "dispatched inbox entry does not exist");
        return Ok(());
    };
    let started = std::time::Instant::now();
    let mut plugin_ident = (None, None);
    let outcome = run_plugin(daemon, sessions, &entry, &mut plugin_ident);
    let (plugin, plugin_version) = plugin_ident;
    let result = match outcome {
        Ok((account, events)) => commit(daemon, inbox_id, &account, events, plugin, plugin_version),
        Err(failure) => {
            if failure.status == InboxStatus::Failed {
                tracing::warn!(%inbox_id, account = %entry.account_id, kind = failure.kind, error = %failure.message, "normalization failed");
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
    };
    daemon.metrics.normalized(started.elapsed());
    result
}

/// Run the account's plugin on one entry; the rendered events, or why there are none.
fn run_plugin(
    daemon: &Daemon,
    sessions: &mut HashMap<String, (u64, PluginSession)>,
    entry: &InboxEntry,
    plugin_ident: &mut (Option<String>, Option<String>),
) -> Result<(crate::store::Account, Vec<Normalized>), Failure> {
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
    let session = match sessions.get_mut(&plugin.info.name) {
        Some((generation, session)) if *generation == plugin.generation => session,
        _ => {
            let session = plugin.session().map_err(|error| Failure::failed("instantiate", error.to_string()))?;
            sessions.insert(plugin.info.name.clone(), (plugin.generation, session));
            &mut sessions.get_mut(&plugin.info.name).expect("inserted just above").1
        }
    };
    let inbound = wit::Inbound {
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
    };
    let outcome = session.normalize(&inbound, &[]).map_err(|error| {
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
        Ok(wit::Outcome::Fetch(requests)) => {
            return Err(Failure::failed(
                "enrichment_unavailable",
                format!("the plugin asked for {} API call(s); this daemon does not perform enrichment yet", requests.len()),
            ));
        }
        Ok(wit::Outcome::Done(events)) => events,
    };
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
    Ok((account, rendered))
}

fn commit(
    daemon: &Daemon,
    inbox_id: InboxId,
    account: &crate::store::Account,
    events: Vec<Normalized>,
    plugin: Option<String>,
    plugin_version: Option<String>,
) -> Result<(), crate::store::StoreError> {
    let decided = state::decide(&daemon.store, &account.id, events, daemon.settings.drop_unchanged_updates)?;
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
                lane: format!("{}\u{1}{}", event.event_type.record_kind().as_str(), event.record_id),
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
    let n_events = stored_events.len();
    let n_deliveries = deliveries.len();
    let batch = NormalizedBatch {
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
    };
    daemon.store.commit_normalized(&batch)?;
    daemon.metrics.events_emitted(n_events, decided.n_unchanged as usize);
    tracing::debug!(%inbox_id, n_events, n_deliveries, n_unchanged = decided.n_unchanged, "normalized");
    if n_deliveries > 0 {
        daemon.scheduler_wakeup.notify_one();
    }
    Ok(())
}
