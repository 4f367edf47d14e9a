//! Export and import of a daemon's accounts, subscriptions, record state and webhooks: the
//! portable backup format of issue 14 (`docs/export-format.md`).
//!
//! One JSON object per line (NDJSON): a header, then `account`, `subscription`, `state`,
//! `webhook` (with the events its outcome lists), `event` (events no exported webhook carries),
//! `digest` lines, and an `end` line with the counts (a file without it was cut short and is
//! refused). Everything goes through the storage interfaces ([`crate::store::Backend`]), so any
//! backend can be exported and imported; [`export`] streams page by page in bounded memory,
//! [`import`] validates the whole file before it writes anything.
//!
//! The file holds secrets (account credentials and verification secrets, subscription signing
//! secrets): the CLI writes it with mode 0600.

pub mod export;
pub mod import;
pub mod offline;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::RecordKind;
use crate::store::{Account, InboxOutcome, StoredEvent, Subscription};

/// The format number this release writes and reads.
pub const FORMAT: u32 = 1;

/// The header line's `type`.
pub const HEADER_TYPE: &str = "stayhook-export";

/// The first line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Header {
    /// [`FORMAT`].
    pub format: u32,
    /// The release that wrote the file.
    pub stayhook_version: String,
    /// When the export started (RFC 3339).
    pub created_at: String,
    /// The accounts asked for (`null`: every account).
    #[serde(default)]
    pub accounts: Option<Vec<String>>,
    /// Whether webhooks, events and digests are in the file.
    pub webhooks: bool,
    /// Only webhooks, events and digests at or after this time (RFC 3339), when set.
    #[serde(default)]
    pub since: Option<String>,
}

/// A record's latest state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StateLine {
    /// The account.
    pub account_id: String,
    /// The record's kind.
    pub kind: RecordKind,
    /// The record id.
    pub record_id: String,
    /// The unified record, as the next event of this record compares against.
    pub record: Value,
}

/// A webhook as received, with what became of it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookLine {
    /// Its inbox id in the exporting store (events name it in `inboxId`); an import gives new ids.
    pub id: String,
    /// The account whose listener received it.
    pub account_id: String,
    /// Unix ms.
    pub received_at_ms: u64,
    /// The same instant, RFC 3339 (for people; `receivedAtMs` is authoritative).
    #[serde(default)]
    pub received_at: Option<String>,
    /// HTTP method (`SYNC` for a page a reconciliation or initial sync listed).
    pub method: String,
    /// Raw query string without `?`.
    #[serde(default)]
    pub query: String,
    /// Content-Type header.
    #[serde(default)]
    pub content_type: Option<String>,
    /// The headers the plugin saw, `[name, value]` pairs (secrets were never stored).
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// The raw body, standard base64 with padding, byte-exact.
    pub body: String,
    /// Still waiting for normalization when exported.
    #[serde(default)]
    pub pending: bool,
    /// What became of it (`null` while it was never normalized).
    #[serde(default)]
    pub outcome: Option<InboxOutcome>,
    /// The events its outcome lists, as stored (empty while pending).
    #[serde(default)]
    pub events: Vec<StoredEvent>,
}

/// A duplicate-suppression digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DigestLine {
    /// The account.
    pub account_id: String,
    /// The digest, standard base64 (opaque: what the listener computed).
    pub digest: String,
    /// When its webhook arrived (Unix ms); the window counts from here.
    pub seen_at_ms: u64,
}

/// How many lines of each kind (the `end` line; an import checks them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    /// `account` lines.
    pub accounts: u64,
    /// `subscription` lines.
    pub subscriptions: u64,
    /// `state` lines.
    pub states: u64,
    /// `webhook` lines.
    pub webhooks: u64,
    /// Events, inside `webhook` lines and in `event` lines.
    pub events: u64,
    /// `digest` lines.
    pub digests: u64,
}

impl std::fmt::Display for Counts {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "{} accounts, {} subscriptions, {} states, {} webhooks, {} events, {} digests",
            self.accounts, self.subscriptions, self.states, self.webhooks, self.events, self.digests
        )
    }
}

/// One line of the file.
#[derive(Debug, Clone)]
pub enum Line {
    /// `{"type":"stayhook-export", ...}`.
    Header(Header),
    /// `{"type":"account","account":{...}}`.
    Account(Box<Account>),
    /// `{"type":"subscription","subscription":{...}}`.
    Subscription(Box<Subscription>),
    /// `{"type":"state", ...}`.
    State(Box<StateLine>),
    /// `{"type":"webhook", ...}`.
    Webhook(Box<WebhookLine>),
    /// `{"type":"event","event":{...}}`.
    Event(Box<StoredEvent>),
    /// `{"type":"digest", ...}`.
    Digest(DigestLine),
    /// `{"type":"end","counts":{...}}`.
    End(Counts),
}

#[derive(Deserialize)]
struct AccountBody {
    account: Account,
}

#[derive(Deserialize)]
struct SubscriptionBody {
    subscription: Subscription,
}

#[derive(Deserialize)]
struct EventBody {
    event: StoredEvent,
}

#[derive(Deserialize)]
struct EndBody {
    counts: Counts,
}

/// A line on the wire: its `type` first, then the fields of what it carries.
#[derive(Serialize)]
struct Tagged<'a, T: Serialize> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(flatten)]
    fields: &'a T,
}

#[derive(Serialize)]
struct AccountRef<'a> {
    account: &'a Account,
}

#[derive(Serialize)]
struct SubscriptionRef<'a> {
    subscription: &'a Subscription,
}

#[derive(Serialize)]
struct EventRef<'a> {
    event: &'a StoredEvent,
}

#[derive(Serialize)]
struct EndRef<'a> {
    counts: &'a Counts,
}

/// Written straight to the output, without building a JSON value first.
impl Serialize for Line {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Line::Header(header) => Tagged { kind: HEADER_TYPE, fields: header }.serialize(serializer),
            Line::Account(account) => Tagged { kind: "account", fields: &AccountRef { account } }.serialize(serializer),
            Line::Subscription(subscription) => {
                Tagged { kind: "subscription", fields: &SubscriptionRef { subscription } }.serialize(serializer)
            }
            Line::State(state) => Tagged { kind: "state", fields: state.as_ref() }.serialize(serializer),
            Line::Webhook(webhook) => Tagged { kind: "webhook", fields: webhook.as_ref() }.serialize(serializer),
            Line::Event(event) => Tagged { kind: "event", fields: &EventRef { event } }.serialize(serializer),
            Line::Digest(digest) => Tagged { kind: "digest", fields: digest }.serialize(serializer),
            Line::End(counts) => Tagged { kind: "end", fields: &EndRef { counts } }.serialize(serializer),
        }
    }
}

#[derive(Deserialize)]
struct Peek<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<std::borrow::Cow<'a, str>>,
}

impl Line {
    /// The line as JSON (without its newline).
    pub fn to_json(&self) -> Value {
        // These types serialize to JSON objects whatever their content.
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// Parse one line. The error names the field (`account.createdAt`, `body`) and what is wrong
    /// with it; it does not know the line number.
    pub fn parse(text: &str) -> Result<Line, String> {
        let peek: Peek<'_> = serde_json::from_str(text).map_err(|error| format!("not a JSON object: {error}"))?;
        let Some(kind) = peek.kind else { return Err("field `type`: missing".into()) };
        let line = match kind.as_ref() {
            HEADER_TYPE => Line::Header(typed(text)?),
            "account" => Line::Account(Box::new(typed::<AccountBody>(text)?.account)),
            "subscription" => Line::Subscription(Box::new(typed::<SubscriptionBody>(text)?.subscription)),
            "state" => Line::State(Box::new(typed(text)?)),
            "webhook" => Line::Webhook(Box::new(typed(text)?)),
            "event" => Line::Event(Box::new(typed::<EventBody>(text)?.event)),
            "digest" => Line::Digest(typed(text)?),
            "end" => Line::End(typed::<EndBody>(text)?.counts),
            other => return Err(format!("field `type`: unknown line type {other:?}")),
        };
        line.check()?;
        Ok(line)
    }

    /// What the types alone do not say: ids the store can key by, base64 that decodes, an
    /// outcome for a finished webhook, events of the webhook's account.
    fn check(&self) -> Result<(), String> {
        match self {
            Line::Header(_) | Line::End(_) => Ok(()),
            Line::Account(account) => {
                check_id("account.id", &account.id)?;
                check_id("account.workspaceId", &account.workspace_id)
            }
            Line::Subscription(subscription) => {
                check_id("subscription.id", &subscription.id)?;
                check_id("subscription.accountId", &subscription.account_id)
            }
            Line::State(state) => {
                check_id("accountId", &state.account_id)?;
                check_id("recordId", &state.record_id)
            }
            Line::Webhook(webhook) => {
                check_id("accountId", &webhook.account_id)?;
                decode_base64(&webhook.body).map_err(|error| format!("field `body`: not base64: {error}"))?;
                match (&webhook.outcome, webhook.pending) {
                    (None, false) => return Err("field `outcome`: missing for a webhook that is not pending".into()),
                    (Some(outcome), false) if outcome.status == crate::store::InboxStatus::Pending => {
                        return Err("field `outcome.status`: \"pending\" for a webhook that is not pending".into());
                    }
                    _ => {}
                }
                if webhook.pending && !webhook.events.is_empty() {
                    return Err("field `events`: a pending webhook carries no events".into());
                }
                for (index, event) in webhook.events.iter().enumerate() {
                    check_id(&format!("events[{index}].id"), &event.id)?;
                    if event.integration_account_id != webhook.account_id {
                        return Err(format!(
                            "field `events[{index}].integrationAccountId`: not the webhook's account {:?}",
                            webhook.account_id
                        ));
                    }
                }
                Ok(())
            }
            Line::Event(event) => {
                check_id("event.id", &event.id)?;
                check_id("event.integrationAccountId", &event.integration_account_id)
            }
            Line::Digest(digest) => {
                check_id("accountId", &digest.account_id)?;
                match decode_base64(&digest.digest) {
                    Ok(bytes) if !bytes.is_empty() => Ok(()),
                    Ok(_) => Err("field `digest`: empty".into()),
                    Err(error) => Err(format!("field `digest`: not base64: {error}")),
                }
            }
        }
    }

    /// The account a line belongs to (none for the header and the end).
    pub fn account_id(&self) -> Option<&str> {
        match self {
            Line::Header(_) | Line::End(_) => None,
            Line::Account(account) => Some(&account.id),
            Line::Subscription(subscription) => Some(&subscription.account_id),
            Line::State(state) => Some(&state.account_id),
            Line::Webhook(webhook) => Some(&webhook.account_id),
            Line::Event(event) => Some(&event.integration_account_id),
            Line::Digest(digest) => Some(&digest.account_id),
        }
    }
}

/// Parse `text` as `T`, naming the field path on error.
fn typed<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
    serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_str(text)).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        if path == "." { format!("{inner}") } else { format!("field `{path}`: {inner}") }
    })
}

/// Store keys separate their parts with NUL, so an id must be non-empty and free of it.
fn check_id(field: &str, id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err(format!("field `{field}`: empty"));
    }
    if id.contains('\0') {
        return Err(format!("field `{field}`: contains a NUL character"));
    }
    Ok(())
}

/// Standard base64 with padding, the only encoding of bytes in the file.
pub fn encode_base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Decode [`encode_base64`].
pub fn decode_base64(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(text)
}

#[cfg(test)]
mod tests;
