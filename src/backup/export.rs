//! Writing the export: page by page through the storage interfaces, one line at a time, so memory
//! stays bounded by a page (and the set of pending inbox entries) whatever the store holds.

use std::collections::HashSet;
use std::io::Write;

use super::{Counts, DigestLine, FORMAT, Header, Line, StateLine, WebhookLine, encode_base64};
use crate::model::time::from_unix_ms;
use crate::store::{Backend, EventFilter, InboxId, StoreError, event_time_ms};

/// Items read per storage call.
const PAGE: usize = 256;

/// What to export.
#[derive(Debug, Clone, Default)]
pub struct ExportOptions {
    /// Only these accounts (every account when empty).
    pub accounts: Vec<String>,
    /// Webhooks, events and digests too (else accounts, subscriptions and state only).
    pub webhooks: bool,
    /// Only webhooks, events and digests at or after this Unix ms time.
    pub since_ms: Option<u64>,
}

/// Why an export stopped.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// An account asked for does not exist.
    #[error("no account {0:?}")]
    UnknownAccount(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The output failed (a full disk, a closed pipe, a client that went away).
    #[error("writing the export: {0}")]
    Io(#[from] std::io::Error),
}

/// Refuse accounts that do not exist (before anything is written, so the API can answer 404).
pub fn check_accounts(store: &dyn Backend, accounts: &[String]) -> Result<(), ExportError> {
    for account in accounts {
        if store.get_account(account)?.is_none() {
            return Err(ExportError::UnknownAccount(account.clone()));
        }
    }
    Ok(())
}

/// Write the export of `store` to `out`, calling `progress` every few hundred lines. Blocks:
/// call it off the runtime. Returns what was written (the `end` line's counts).
pub fn export_blocking(
    store: &dyn Backend,
    options: &ExportOptions,
    out: &mut dyn Write,
    progress: &mut dyn FnMut(&Counts),
) -> Result<Counts, ExportError> {
    check_accounts(store, &options.accounts)?;
    let mut writer = LineWriter { out, counts: Counts::default(), progress, lines: 0 };
    let header = Header {
        format: FORMAT,
        stayhook_version: env!("CARGO_PKG_VERSION").into(),
        created_at: crate::model::time::now(),
        accounts: (!options.accounts.is_empty()).then(|| options.accounts.clone()),
        webhooks: options.webhooks,
        since: options.since_ms.map(from_unix_ms),
    };
    writer.write(&Line::Header(header))?;
    let wanted: Option<HashSet<&str>> = (!options.accounts.is_empty()).then(|| options.accounts.iter().map(String::as_str).collect());
    let is_wanted = |account_id: &str| wanted.as_ref().is_none_or(|wanted| wanted.contains(account_id));
    let accounts: Vec<_> = store.list_accounts()?.into_iter().filter(|account| is_wanted(&account.id)).collect();
    for account in &accounts {
        writer.counts.accounts += 1;
        writer.write(&Line::Account(Box::new(account.clone())))?;
    }
    for account in &accounts {
        for subscription in store.list_subscriptions(&account.id)? {
            writer.counts.subscriptions += 1;
            writer.write(&Line::Subscription(Box::new(subscription)))?;
        }
    }
    for account in &accounts {
        let mut after: Option<(crate::model::RecordKind, String)> = None;
        loop {
            let page = store.list_state(&account.id, after.as_ref().map(|(kind, id)| (*kind, id.as_str())), PAGE)?;
            let Some(last) = page.last() else { break };
            after = Some((last.kind, last.record_id.clone()));
            for state in page {
                writer.counts.states += 1;
                let line = StateLine { account_id: account.id.clone(), kind: state.kind, record_id: state.record_id, record: state.record };
                writer.write(&Line::State(Box::new(line)))?;
            }
        }
    }
    if options.webhooks {
        let account_ids: HashSet<&str> = accounts.iter().map(|account| account.id.as_str()).collect();
        let since_ms = options.since_ms.unwrap_or(0);
        // Pending entries are few (the backlog); their events are not yet written.
        let pending: HashSet<u64> = store.pending_inbox()?.into_iter().map(|(id, _)| id.0).collect();
        export_webhooks(store, &mut writer, &account_ids, since_ms, &pending)?;
        export_other_events(store, &mut writer, &account_ids, since_ms, &pending)?;
        export_digests(store, &mut writer, &account_ids, since_ms)?;
    }
    let counts = writer.counts.clone();
    writer.write(&Line::End(counts.clone()))?;
    writer.out.flush()?;
    Ok(counts)
}

fn export_webhooks(
    store: &dyn Backend,
    writer: &mut LineWriter<'_>,
    accounts: &HashSet<&str>,
    since_ms: u64,
    pending: &HashSet<u64>,
) -> Result<(), ExportError> {
    let mut after = None;
    loop {
        let page = store.list_inbox(after, PAGE)?;
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        for listing in page {
            if !accounts.contains(listing.account_id.as_str()) || listing.received_at_ms < since_ms {
                continue;
            }
            // Retention may delete it between the two reads of a running daemon: then it is not exported.
            let Some(entry) = store.get_inbox(listing.id)? else { continue };
            let is_pending = pending.contains(&listing.id.0);
            let outcome = store.inbox_outcome(listing.id)?;
            let mut events = Vec::new();
            if !is_pending && let Some(outcome) = &outcome {
                for event_id in &outcome.event_ids {
                    if let Some(event) = store.get_event(event_id)? {
                        events.push(event);
                    }
                }
            }
            // A pending entry that ran before (requeued) keeps its earlier outcome: it is exported
            // pending, and that outcome's events as `event` lines.
            let outcome = if is_pending { None } else { outcome };
            if !is_pending && outcome.is_none() {
                continue;
            }
            writer.counts.webhooks += 1;
            writer.counts.events += events.len() as u64;
            let line = WebhookLine {
                id: listing.id.to_string(),
                account_id: entry.account_id,
                received_at_ms: entry.received_at_ms,
                received_at: Some(from_unix_ms(entry.received_at_ms)),
                method: entry.method,
                query: entry.query,
                content_type: entry.content_type,
                headers: entry.headers,
                body: encode_base64(&entry.body),
                pending: is_pending,
                outcome,
                events,
            };
            writer.write(&Line::Webhook(Box::new(line)))?;
        }
    }
    Ok(())
}

/// Events no `webhook` line carried: their webhook was deleted by retention (events may be kept
/// longer), or they belong to an earlier normalization of a webhook renormalized since.
fn export_other_events(
    store: &dyn Backend,
    writer: &mut LineWriter<'_>,
    accounts: &HashSet<&str>,
    since_ms: u64,
    pending: &HashSet<u64>,
) -> Result<(), ExportError> {
    let mut after: Option<String> = None;
    loop {
        let page = store.list_events(&EventFilter { after: after.clone(), limit: PAGE, ..EventFilter::default() })?;
        let Some(last) = page.last() else { break };
        after = Some(last.id.clone());
        for event in page {
            if !accounts.contains(event.integration_account_id.as_str())
                || event_time_ms(&event.id).is_some_and(|time_ms| time_ms < since_ms)
            {
                continue;
            }
            let carried = match event.inbox_id.parse::<u64>() {
                Ok(inbox_id) if !pending.contains(&inbox_id) => {
                    store.inbox_outcome(InboxId(inbox_id))?.is_some_and(|outcome| outcome.event_ids.contains(&event.id))
                        && store
                            .list_inbox(inbox_id.checked_sub(1).map(InboxId), 1)?
                            .first()
                            .is_some_and(|listing| listing.id.0 == inbox_id && listing.received_at_ms >= since_ms)
                }
                _ => false,
            };
            if carried {
                continue;
            }
            writer.counts.events += 1;
            writer.write(&Line::Event(Box::new(event)))?;
        }
    }
    Ok(())
}

fn export_digests(store: &dyn Backend, writer: &mut LineWriter<'_>, accounts: &HashSet<&str>, since_ms: u64) -> Result<(), ExportError> {
    let mut after: Option<(String, Vec<u8>)> = None;
    loop {
        let page = store.list_digests(after.as_ref().map(|(account, digest)| (account.as_str(), digest.as_slice())), PAGE)?;
        let Some(last) = page.last() else { break };
        after = Some((last.account_id.clone(), last.digest.clone()));
        for digest in page {
            if !accounts.contains(digest.account_id.as_str()) || digest.seen_ms < since_ms {
                continue;
            }
            writer.counts.digests += 1;
            let line = DigestLine { account_id: digest.account_id, digest: encode_base64(&digest.digest), seen_at_ms: digest.seen_ms };
            writer.write(&Line::Digest(line))?;
        }
    }
    Ok(())
}

struct LineWriter<'a> {
    out: &'a mut dyn Write,
    counts: Counts,
    progress: &'a mut dyn FnMut(&Counts),
    lines: u64,
}

impl LineWriter<'_> {
    fn write(&mut self, line: &Line) -> Result<(), ExportError> {
        serde_json::to_writer(&mut *self.out, line).map_err(std::io::Error::from)?;
        self.out.write_all(b"\n")?;
        self.lines += 1;
        if self.lines.is_multiple_of(256) {
            (self.progress)(&self.counts);
        }
        Ok(())
    }
}
