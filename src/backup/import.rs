//! Reading an export into a store: [`validate`] reads the whole file and writes nothing, [`plan`]
//! finds the ids the store holds already, [`import_blocking`] reads the file again and writes.
//!
//! Imported webhooks are history by default: stored with their outcome and events, never
//! normalized or delivered again. With `replay` they are stored pending instead (and the file's
//! state and events are left out), so the next `serve` normalizes them in their original order
//! and delivers what they produce. Digests are restored either way, with their original times.

use std::collections::{HashMap, HashSet};
use std::io::BufRead;
use std::sync::Arc;

use super::{Counts, FORMAT, HEADER_TYPE, Header, Line, decode_base64};
use crate::store::{Backend, DigestRecord, Expected, InboxEntry, InboxId, Inserted, NormalizedBatch, StateWrite, StoreError, StoredEvent};

/// What an import does.
#[derive(Debug, Clone, Copy, Default)]
pub struct ImportOptions {
    /// Store webhooks pending (normalized and delivered by the next `serve`), without the file's
    /// state and events.
    pub replay: bool,
    /// Skip accounts and subscriptions whose ids the store holds already, with every line of a
    /// skipped account, instead of refusing the file.
    pub skip_existing: bool,
}

/// Why an import refused the file or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// A line is malformed or out of place (found by [`validate`]: nothing was written).
    #[error("line {line}: {message}")]
    Line {
        /// 1 for the first line.
        line: u64,
        /// What is wrong, naming the field.
        message: String,
    },
    /// Ids the store holds already (nothing was written).
    #[error("{0}")]
    Conflict(String),
    /// The store failed while writing: what was written so far stays.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Reading the file failed.
    #[error("reading the file: {0}")]
    Io(#[from] std::io::Error),
}

/// A file that passed [`validate`].
#[derive(Debug, Clone)]
pub struct Checked {
    /// Its header.
    pub header: Header,
    /// Its `end` line's counts (checked against the lines).
    pub counts: Counts,
    /// Lines, header and end included.
    pub lines: u64,
    accounts: Vec<String>,
    subscriptions: Vec<(String, String)>,
}

/// Read every line and check it: the header first (its format number this release's), each
/// line's shape and fields, every line's account declared by an `account` line before it, no id
/// twice, the `end` line last with the counts of the lines before it. Writes nothing. Memory:
/// the account and subscription ids.
pub fn validate(reader: &mut dyn BufRead, progress: &mut dyn FnMut(u64)) -> Result<Checked, ImportError> {
    let mut text = String::new();
    let mut number = 0u64;
    let mut header = None;
    let mut end: Option<Counts> = None;
    let mut counts = Counts::default();
    let mut accounts: Vec<String> = Vec::new();
    let mut account_set: HashSet<String> = HashSet::new();
    let mut subscriptions: HashSet<(String, String)> = HashSet::new();
    let mut subscription_ids: HashSet<String> = HashSet::new();
    loop {
        text.clear();
        if reader.read_line(&mut text)? == 0 {
            break;
        }
        number += 1;
        if number.is_multiple_of(10_000) {
            progress(number);
        }
        let failed = |message: String| ImportError::Line { line: number, message };
        let trimmed = text.strip_suffix('\n').unwrap_or(&text);
        let trimmed = trimmed.strip_suffix('\r').unwrap_or(trimmed);
        if end.is_some() {
            return Err(failed("a line after the `end` line".into()));
        }
        if number == 1 {
            header = Some(read_header(trimmed).map_err(failed)?);
            continue;
        }
        let line = Line::parse(trimmed).map_err(failed)?;
        if let Some(account_id) = line.account_id()
            && !matches!(line, Line::Account(_))
            && !account_set.contains(account_id)
        {
            return Err(failed(format!("account {account_id:?} has no `account` line before this one")));
        }
        match line {
            Line::Header(_) => return Err(failed("a second header".into())),
            Line::Account(account) => {
                if !account_set.insert(account.id.clone()) {
                    return Err(failed(format!("field `account.id`: account {:?} appears twice", account.id)));
                }
                accounts.push(account.id);
                counts.accounts += 1;
            }
            Line::Subscription(subscription) => {
                if !subscription_ids.insert(subscription.id.clone()) {
                    return Err(failed(format!("field `subscription.id`: subscription {:?} appears twice", subscription.id)));
                }
                subscriptions.insert((subscription.account_id, subscription.id));
                counts.subscriptions += 1;
            }
            Line::State(_) => counts.states += 1,
            Line::Webhook(webhook) => {
                counts.webhooks += 1;
                counts.events += webhook.events.len() as u64;
            }
            Line::Event(_) => counts.events += 1,
            Line::Digest(_) => counts.digests += 1,
            Line::End(expected) => {
                if expected != counts {
                    return Err(failed(format!("field `counts`: the file says {expected}, its lines hold {counts}")));
                }
                end = Some(expected);
            }
        }
    }
    let Some(header) = header else { return Err(ImportError::Line { line: 1, message: "the file is empty".into() }) };
    let Some(counts) = end else {
        return Err(ImportError::Line { line: number + 1, message: "the file ends without its `end` line (cut short?)".into() });
    };
    let mut subscriptions: Vec<(String, String)> = subscriptions.into_iter().collect();
    subscriptions.sort();
    Ok(Checked { header, counts, lines: number, accounts, subscriptions })
}

/// The header, with a clear word for a file that is not an export or is of another format.
fn read_header(text: &str) -> Result<Header, String> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|error| format!("not a JSON object: {error}"))?;
    if value.get("type").and_then(|kind| kind.as_str()) != Some(HEADER_TYPE) {
        return Err(format!("not a stayhook export: the first line's field `type` is not {HEADER_TYPE:?}"));
    }
    match value.get("format").and_then(serde_json::Value::as_u64) {
        Some(format) if format == u64::from(FORMAT) => {}
        Some(format) => return Err(format!("field `format`: format {format} is not readable by this release (it reads format {FORMAT})")),
        None => return Err("field `format`: missing or not a number".into()),
    }
    match Line::parse(text)? {
        Line::Header(header) => Ok(header),
        _ => Err("not a header".into()),
    }
}

/// Which of the file's ids the store holds already.
#[derive(Debug, Default, Clone)]
pub struct Plan {
    /// Accounts the store holds (skipped with every line of theirs).
    pub existing_accounts: Vec<String>,
    /// Subscriptions whose id the store holds, as (account, subscription).
    pub existing_subscriptions: Vec<(String, String)>,
}

/// Find the file's accounts and subscriptions the store holds already; unless `skip_existing`,
/// any is an error naming them (and nothing is written).
pub fn plan(store: &dyn Backend, checked: &Checked, options: &ImportOptions) -> Result<Plan, ImportError> {
    let mut plan = Plan::default();
    for account_id in &checked.accounts {
        if store.get_account(account_id)?.is_some() {
            plan.existing_accounts.push(account_id.clone());
        }
    }
    // Subscription ids name delivery lanes across accounts: they must be new in the whole store.
    let mut held: HashSet<String> = HashSet::new();
    for account in store.list_accounts()? {
        held.extend(store.list_subscriptions(&account.id)?.into_iter().map(|subscription| subscription.id));
    }
    plan.existing_subscriptions = checked.subscriptions.iter().filter(|(_, id)| held.contains(id)).cloned().collect();
    if !options.skip_existing && (!plan.existing_accounts.is_empty() || !plan.existing_subscriptions.is_empty()) {
        let mut parts = Vec::new();
        if !plan.existing_accounts.is_empty() {
            parts.push(format!("accounts {}", plan.existing_accounts.join(", ")));
        }
        if !plan.existing_subscriptions.is_empty() {
            let ids: Vec<&str> = plan.existing_subscriptions.iter().map(|(_, id)| id.as_str()).collect();
            parts.push(format!("subscriptions {}", ids.join(", ")));
        }
        return Err(ImportError::Conflict(format!(
            "the store holds {} already; nothing was imported (--skip-existing imports the rest)",
            parts.join(" and ")
        )));
    }
    Ok(plan)
}

/// What an import wrote and left out.
#[derive(Debug, Default, Clone)]
pub struct ImportReport {
    /// Written.
    pub imported: Counts,
    /// Left out: lines of existing accounts and subscriptions, and with `replay` the state and events.
    pub skipped: Counts,
    /// Webhooks stored pending (all of them with `replay`; else those pending when exported).
    pub pending: u64,
}

/// Webhooks committed per storage call.
const WEBHOOK_BATCH: usize = 128;
/// State records or events written per storage call.
const RECORD_BATCH: usize = 512;

/// Read the (validated) file again and write it. Blocks: call it off the runtime. `progress`
/// gets the lines done every few thousand lines. A failure of the store stops the import with
/// what was written so far kept (import into a fresh data dir and delete it on failure).
pub fn import_blocking(
    store: &dyn Backend,
    reader: &mut dyn BufRead,
    plan: &Plan,
    options: &ImportOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<ImportReport, ImportError> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let skip_accounts: HashSet<&str> = plan.existing_accounts.iter().map(String::as_str).collect();
    let skip_subscriptions: HashSet<&str> = plan.existing_subscriptions.iter().map(|(_, id)| id.as_str()).collect();
    let mut report = ImportReport::default();
    let mut batches: Vec<NormalizedBatch> = Vec::new();
    let mut states: Vec<StateWrite> = Vec::new();
    let mut events: Vec<StoredEvent> = Vec::new();
    // The exporting store's inbox ids to this store's, for `event` lines that name their webhook.
    let mut inbox_ids: HashMap<u64, u64> = HashMap::new();
    let mut text = String::new();
    let mut number = 0u64;
    loop {
        text.clear();
        if reader.read_line(&mut text)? == 0 {
            break;
        }
        number += 1;
        if number.is_multiple_of(5_000) {
            progress(number);
        }
        let trimmed = text.strip_suffix('\n').unwrap_or(&text);
        let trimmed = trimmed.strip_suffix('\r').unwrap_or(trimmed);
        let line = Line::parse(trimmed).map_err(|message| ImportError::Line { line: number, message })?;
        let skipped = line.account_id().is_some_and(|account_id| skip_accounts.contains(account_id));
        match line {
            Line::Header(_) | Line::End(_) => {}
            Line::Account(account) => {
                if skipped {
                    report.skipped.accounts += 1;
                    continue;
                }
                if runtime.block_on(store.insert_account(&account))? == Inserted::AlreadyExists {
                    return Err(ImportError::Conflict(format!("account {:?} appeared in the store during the import", account.id)));
                }
                report.imported.accounts += 1;
            }
            Line::Subscription(subscription) => {
                if skipped || skip_subscriptions.contains(subscription.id.as_str()) {
                    report.skipped.subscriptions += 1;
                    continue;
                }
                runtime.block_on(store.put_subscription(&subscription))?;
                report.imported.subscriptions += 1;
            }
            Line::State(state) => {
                if skipped || options.replay {
                    report.skipped.states += 1;
                    continue;
                }
                states.push(StateWrite {
                    account_id: state.account_id,
                    kind: state.kind,
                    record_id: state.record_id,
                    record: Some(Arc::new(state.record)),
                    expected: Expected::Any,
                });
                report.imported.states += 1;
                if states.len() >= RECORD_BATCH {
                    store.put_state_blocking(std::mem::take(&mut states))?;
                }
            }
            Line::Webhook(webhook) => {
                let webhook = *webhook;
                if skipped {
                    report.skipped.webhooks += 1;
                    report.skipped.events += webhook.events.len() as u64;
                    continue;
                }
                let body = decode_base64(&webhook.body)
                    .map_err(|error| ImportError::Line { line: number, message: format!("field `body`: {error}") })?;
                let entry = InboxEntry {
                    account_id: webhook.account_id,
                    received_at_ms: webhook.received_at_ms,
                    method: webhook.method,
                    query: webhook.query,
                    content_type: webhook.content_type,
                    headers: webhook.headers,
                    body,
                };
                let inbox_id = store.import_inbox(&entry)?;
                if let Ok(old) = webhook.id.parse::<u64>() {
                    inbox_ids.insert(old, inbox_id.0);
                }
                report.imported.webhooks += 1;
                match webhook.outcome {
                    Some(outcome) if !options.replay && !webhook.pending => {
                        report.imported.events += webhook.events.len() as u64;
                        let events = webhook
                            .events
                            .into_iter()
                            .map(|mut event| {
                                event.inbox_id = inbox_id.to_string();
                                event
                            })
                            .collect();
                        batches.push(NormalizedBatch { inbox_id, outcome, events, state: Vec::new(), deliveries: Vec::new() });
                        if batches.len() >= WEBHOOK_BATCH {
                            store.commit_normalized_blocking(std::mem::take(&mut batches))?;
                        }
                    }
                    _ => {
                        report.skipped.events += webhook.events.len() as u64;
                        report.pending += 1;
                    }
                }
            }
            Line::Event(mut event) => {
                if skipped || options.replay {
                    report.skipped.events += 1;
                    continue;
                }
                event.inbox_id = event
                    .inbox_id
                    .parse::<u64>()
                    .ok()
                    .and_then(|old| inbox_ids.get(&old))
                    .map_or_else(String::new, |id| InboxId(*id).to_string());
                events.push(*event);
                report.imported.events += 1;
                if events.len() >= RECORD_BATCH {
                    store.put_events_blocking(std::mem::take(&mut events))?;
                }
            }
            Line::Digest(digest) => {
                if skipped {
                    report.skipped.digests += 1;
                    continue;
                }
                let bytes = decode_base64(&digest.digest)
                    .map_err(|error| ImportError::Line { line: number, message: format!("field `digest`: {error}") })?;
                store.import_digest(&DigestRecord { account_id: digest.account_id, digest: bytes, seen_ms: digest.seen_at_ms })?;
                report.imported.digests += 1;
            }
        }
    }
    if !batches.is_empty() {
        store.commit_normalized_blocking(batches)?;
    }
    if !states.is_empty() {
        store.put_state_blocking(states)?;
    }
    if !events.is_empty() {
        store.put_events_blocking(events)?;
    }
    runtime.block_on(store.durable())?;
    store.flush_blocking()?;
    Ok(report)
}
