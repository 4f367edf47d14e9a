//! Per-account sync state (issue 13): where reconciliation stands, the pass in progress and the
//! last finished one, and the inbox form of a listed page.
//!
//! [`SyncStates`] is implemented once for every [`Catalog`] (both backends): a state is one small
//! JSON value under the daemon-wide key `sync/<account id>`, written through the catalog's durable
//! `insert_meta`. It is written once per page and once per pass, never on the webhook path, so it
//! needs no tree of its own; the model test checks both backends answer the same after restarts.

use serde::{Deserialize, Serialize};

use super::{Catalog, StoreError, StoreFuture};
use crate::model::Normalized;
use crate::store::records::Origin;

/// The method of an inbox entry that holds a listed page (a webhook's method is an HTTP method).
pub const SYNC_METHOD: &str = "SYNC";

/// The body of a [`SYNC_METHOD`] inbox entry: one page a plugin listed, rendered, waiting for the
/// normalizer to decide it in order with the account's webhooks. Kept in the inbox like a webhook,
/// so a crash before it is decided replays it from the store.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListedPage {
    /// Reconciliation or initial sync (the events' origin).
    pub origin: Origin,
    /// Whether the decided events are delivered; `false` stores state only (an initial sync by
    /// default).
    pub deliver: bool,
    /// The page's records, rendered.
    pub events: Vec<Normalized>,
}

/// What kind of pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PassKind {
    /// Everything the PMS lists (no `since`), after an account is created or on demand.
    InitialSync,
    /// What changed since the watermark, on schedule.
    Reconciliation,
}

impl PassKind {
    /// The origin of the events a pass of this kind delivers.
    pub fn origin(self) -> Origin {
        match self {
            PassKind::InitialSync => Origin::InitialSync,
            PassKind::Reconciliation => Origin::Reconciliation,
        }
    }

    /// The API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PassKind::InitialSync => "initial-sync",
            PassKind::Reconciliation => "reconciliation",
        }
    }
}

/// One pass: in progress, or the last finished.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncPass {
    /// Initial sync or reconciliation.
    pub kind: PassKind,
    /// The sync mode used (`modified-since`, `newest-first-scan`, `stay-date-window`).
    pub mode: String,
    /// Whether its events are delivered.
    pub deliver: bool,
    /// The plugin's cursor after the last page whose records are committed (none: the first page
    /// is next). A restarted pass goes on from here.
    pub cursor: Option<String>,
    /// Records changed at or after this instant (RFC 3339); none for an initial sync.
    pub since: Option<String>,
    /// When the pass started (RFC 3339, and Unix ms).
    pub started_at: String,
    /// When the pass started, Unix ms (the next watermark derives from it).
    pub started_at_ms: u64,
    /// When it finished (RFC 3339); none while running.
    #[serde(default)]
    pub finished_at: Option<String>,
    /// Pages whose records are committed.
    pub pages_done: u64,
    /// Records listed on those pages.
    pub records_seen: u64,
    /// Events the pass produced (for a reconciliation: changes no webhook had announced).
    pub recovered: u64,
    /// Pages or calls that failed.
    pub errors: u64,
    /// Why the last one failed.
    #[serde(default)]
    pub last_error: Option<String>,
    /// The modes still to list after this one, each with its `since` (a reconciliation lists with
    /// every mode the plugin declares, best first: one plugin may need a newest-first scan for new
    /// records and a stay-date window for edits).
    #[serde(default)]
    pub modes_left: Vec<(String, Option<String>)>,
}

/// An account's sync state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncState {
    /// Where the next reconciliation starts (RFC 3339): the start of the last finished pass minus
    /// the overlap. None until a pass finished.
    #[serde(default)]
    pub watermark: Option<String>,
    /// The pass in progress (also one interrupted by a restart, resumed from its cursor).
    #[serde(default)]
    pub running: Option<SyncPass>,
    /// The last pass that finished (successfully or not).
    #[serde(default)]
    pub last_pass: Option<SyncPass>,
    /// The last error of any pass, with when (RFC 3339); cleared by a pass that succeeds.
    #[serde(default)]
    pub last_error: Option<(String, String)>,
    /// When the last pass ended, Unix ms (the next one is due an interval later).
    #[serde(default)]
    pub last_ended_at_ms: Option<u64>,
}

/// Per-account sync state, durable, behind the same signatures as the rest of the store: a plain
/// `fn` reads, a [`StoreFuture`] resolves once the write is durable.
pub trait SyncStates {
    /// The account's sync state, if any pass ever started.
    fn get_sync_state(&self, account_id: &str) -> Result<Option<SyncState>, StoreError>;
    /// Replace the account's sync state if it is still `previous` (what this pass read or last
    /// wrote; `None`: none), compare-and-set; whether it was. `false` means another writer (a
    /// pass on another node) changed it: this pass stops. Resolves once durable.
    fn put_sync_state<'a>(&'a self, account_id: &'a str, previous: Option<&'a SyncState>, state: &'a SyncState) -> StoreFuture<'a, bool>;
    /// Forget the account's sync state (the account is deleted).
    fn remove_sync_state<'a>(&'a self, account_id: &'a str) -> StoreFuture<'a, ()>;
}

fn parse(text: &str) -> Result<SyncState, StoreError> {
    serde_json::from_str(text).map_err(|error| StoreError::Codec { tree: "meta", message: error.to_string() })
}

fn key(account_id: &str) -> String {
    format!("sync/{account_id}")
}

impl<T: Catalog + ?Sized> SyncStates for T {
    fn get_sync_state(&self, account_id: &str) -> Result<Option<SyncState>, StoreError> {
        self.get_meta(&key(account_id))?.as_deref().map(parse).transpose()
    }

    /// Compares the stored state with `previous` as values (a text an older release wrote may
    /// differ in form), then swaps against the stored text, so a write in between still fails.
    fn put_sync_state<'a>(&'a self, account_id: &'a str, previous: Option<&'a SyncState>, state: &'a SyncState) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let key = key(account_id);
            let stored = self.get_meta_latest(&key).await?;
            let current = stored.as_deref().map(parse).transpose()?;
            if current.as_ref() != previous {
                return Ok(false);
            }
            let text = serde_json::to_string(state).map_err(|error| StoreError::Backend(error.to_string()))?;
            self.swap_meta(&key, stored.as_deref(), Some(&text)).await
        })
    }

    fn remove_sync_state<'a>(&'a self, account_id: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move { self.remove_meta(&key(account_id)).await })
    }
}
