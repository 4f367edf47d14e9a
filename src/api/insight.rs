//! Routes the operator console needs, usable with curl like every other route:
//!
//! - `GET /v1/stats?window=1h|24h`: received, normalize failures, delivered and failed per minute
//!   (in memory since the daemon started), delivery latency p50/p99 over the window, the delivery
//!   backlog and the age of its oldest delivery, each account's counts since the daemon started
//!   (webhooks received, normalized, failed; delivery attempts delivered, failed), and the
//!   problems to look at first.
//! - `GET /v1/accounts/{accountId}/webhooks/{webhookId}/health`: the webhook's last attempts (for
//!   its sparkline), failing since, disabled and why.
//! - `POST /v1/accounts/{accountId}/webhooks/{webhookId}/rotate-secret`: a new signing secret,
//!   shown once.
//! - `POST /v1/accounts/{accountId}/webhooks/{webhookId}/test`: a signed sample event of a chosen
//!   type posted to the webhook's URL now (not stored, not retried), and the receiver's answer.
//! - `POST /v1/plugins/{name}/playground`: run a plugin on a pasted payload (and recorded API
//!   answers) without any account, and see its events or its error.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::ApiContext;
use super::JsonBody;
use super::accounts::find;
use crate::deliver::envelope;
use crate::http::ApiError;
use crate::ingest::unix_ms;
use crate::model::{self, EventType};
use crate::plugin::offline::{self, CaseRequest, OfflineError};
use crate::store::{InboxStatus, Subscription};

/// Largest playground request (payload and recorded answers), in bytes.
const MAX_PLAYGROUND_BYTES: usize = 4 * 1024 * 1024;
/// Deliveries counted for the backlog, and sampled for its oldest.
const BACKLOG_CAP: usize = 1_000_000;
const BACKLOG_SAMPLE: usize = 256;

pub(super) fn routes() -> Router<Arc<ApiContext>> {
    Router::new()
        .route("/v1/stats", get(stats))
        .route("/v1/accounts/{account_id}/webhooks/{webhook_id}/health", get(health))
        .route("/v1/accounts/{account_id}/webhooks/{webhook_id}/rotate-secret", post(rotate_secret))
        .route("/v1/accounts/{account_id}/webhooks/{webhook_id}/test", post(test_event))
        .route("/v1/plugins/{name}/playground", post(playground).layer(DefaultBodyLimit::max(MAX_PLAYGROUND_BYTES)))
}

#[derive(Deserialize)]
struct StatsQuery {
    window: Option<String>,
}

async fn stats(State(daemon): State<Arc<ApiContext>>, Query(query): Query<StatsQuery>) -> Result<Json<Value>, ApiError> {
    let minutes: u64 = match query.window.as_deref().unwrap_or("1h") {
        "1h" => 60,
        "24h" => 24 * 60,
        other => return Err(ApiError::bad_request("invalid_query", format!("window must be 1h or 24h, not {other:?}"))),
    };
    let now_ms = unix_ms();
    let now_minute = now_ms / 60_000;
    let since = now_minute + 1 - minutes;
    let recorded = daemon.metrics.timeline(since);
    let mut series = Vec::with_capacity(minutes as usize);
    let mut latencies: Vec<u32> = Vec::new();
    let (mut received, mut normalize_failed, mut delivered, mut failed) = (0, 0, 0, 0);
    let mut recorded = recorded.into_iter().peekable();
    for minute in since..=now_minute {
        let found = recorded.next_if(|entry| entry.minute == minute);
        let entry = found.unwrap_or_default();
        received += entry.received;
        normalize_failed += entry.normalize_failed;
        delivered += entry.delivered;
        failed += entry.failed;
        latencies.extend_from_slice(&entry.latencies_ms);
        series.push(json!([minute * 60_000, entry.received, entry.delivered, entry.failed, entry.normalize_failed]));
    }
    latencies.sort_unstable();
    let percentile =
        |p: f64| -> Option<u32> { (!latencies.is_empty()).then(|| latencies[((latencies.len() - 1) as f64 * p).round() as usize]) };
    let (backlog, oldest_ms) = daemon.store.delivery_backlog(BACKLOG_CAP, BACKLOG_SAMPLE)?;
    Ok(Json(json!({
        "window": query.window.as_deref().unwrap_or("1h"),
        "columns": ["minute", "received", "delivered", "failed", "normalizeFailed"],
        "minutes": series,
        "totals": {"received": received, "delivered": delivered, "failed": failed, "normalizeFailed": normalize_failed},
        "latencyMs": {"p50": percentile(0.5), "p99": percentile(0.99), "samples": latencies.len()},
        "backlog": {"deliveries": backlog, "oldestCreatedAt": oldest_ms.map(model::time::from_unix_ms),
                    "oldestAgeSecs": oldest_ms.map(|oldest| now_ms.saturating_sub(oldest) / 1000)},
        "accounts": account_counts(&daemon)?,
        "problems": problems(&daemon)?,
    })))
}

/// Accounts listed with their counts in `/v1/stats` (by id; beyond, see `GET /v1/accounts`).
const STATS_ACCOUNTS: usize = 1000;

/// Each account (the first [`STATS_ACCOUNTS`] by id) with its counts since the daemon started:
/// webhooks received, normalized and failed to normalize, delivery attempts delivered and failed.
fn account_counts(daemon: &ApiContext) -> Result<Vec<Value>, ApiError> {
    let accounts = daemon.store.list_accounts()?;
    Ok(accounts
        .iter()
        .take(STATS_ACCOUNTS)
        .map(|account| {
            let counts = daemon.metrics.account_counts(&account.id);
            json!({"id": account.id, "name": account.name, "pms": account.pms, "received": counts.received,
                   "normalized": counts.normalized, "normalizeFailed": counts.normalize_failed,
                   "delivered": counts.delivered, "failed": counts.failed})
        })
        .collect())
}

/// What the overview shows first: plugin load errors, disabled or failing webhooks, failed
/// normalizations, dead letters. Each names where to fix it (a console route).
fn problems(daemon: &ApiContext) -> Result<Vec<Value>, ApiError> {
    let mut found = Vec::new();
    for failure in daemon.plugins.failures().iter().take(20) {
        found.push(
            json!({"kind": "plugin_load_error", "message": format!("{}: {}", failure.path.display(), failure.error), "link": "#/plugins"}),
        );
    }
    for account in daemon.store.list_accounts()? {
        if daemon.plugins.get(&account.pms).is_none() {
            found.push(json!({"kind": "plugin_missing", "message": format!("account {} uses plugin {:?}, which is not loaded", account.id, account.pms), "link": "#/plugins"}));
        }
        for subscription in daemon.store.list_subscriptions(&account.id)? {
            let link = format!("#/accounts/{}", account.id);
            if let Some(reason) = &subscription.disabled_reason {
                found.push(json!({"kind": "webhook_disabled", "message": format!("webhook {:?} is disabled: {reason}", subscription.name), "link": link}));
            } else if let Some(since) = subscription.failing_since_ms {
                found.push(json!({"kind": "webhook_failing", "message": format!("webhook {:?} failing since {}", subscription.name, model::time::from_unix_ms(since)), "link": link}));
            }
        }
    }
    let failed = daemon.store.list_outcomes(InboxStatus::Failed, 1)?;
    if let Some((_, outcome)) = failed.first() {
        found.push(json!({"kind": "normalize_failed", "message": format!("webhooks failed to normalize (latest: {})", outcome.error.clone().unwrap_or_default()), "link": "#/inbox?status=failed"}));
    }
    if !daemon.store.dead_letters(1)?.is_empty() {
        found.push(json!({"kind": "dead_letters", "message": "there are dead letters", "link": "#/dead-letters"}));
    }
    Ok(found)
}

fn find_webhook(daemon: &ApiContext, account_id: &str, webhook_id: &str) -> Result<Subscription, ApiError> {
    find(daemon, account_id)?;
    daemon
        .store
        .get_subscription(account_id, webhook_id)?
        .ok_or_else(|| ApiError::not_found("webhook_not_found", format!("no webhook {webhook_id:?} in this account")))
}

async fn health(
    State(daemon): State<Arc<ApiContext>>,
    Path((account_id, webhook_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let subscription = find_webhook(&daemon, &account_id, &webhook_id)?;
    let recent: Vec<Value> = daemon
        .metrics
        .recent_attempts(&subscription.id)
        .iter()
        .map(|attempt| json!({"at": model::time::from_unix_ms(attempt.at_ms), "success": attempt.success, "latencyMs": attempt.latency_ms}))
        .collect();
    Ok(Json(json!({
        "enabled": subscription.enabled,
        "failingSince": subscription.failing_since_ms.map(model::time::from_unix_ms),
        "disabledReason": subscription.disabled_reason,
        "recentAttempts": recent,
    })))
}

async fn rotate_secret(
    State(daemon): State<Arc<ApiContext>>,
    Path((account_id, webhook_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let mut subscription = find_webhook(&daemon, &account_id, &webhook_id)?;
    subscription.secret = envelope::new_secret();
    subscription.updated_at = model::time::now();
    daemon.store.put_subscription(&subscription).await?;
    tracing::info!(subscription_id = %subscription.id, "webhook signing secret rotated");
    Ok(Json(json!({"id": subscription.id, "secret": subscription.secret, "updatedAt": subscription.updated_at})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct TestEvent {
    event_type: String,
}

/// The seed's example of each event type: the record a test event carries.
fn sample(event_type: EventType) -> &'static str {
    match event_type {
        EventType::ReservationCreated => include_str!("../../tests/fixtures/seed/reservation.created.json"),
        EventType::ReservationUpdated => include_str!("../../tests/fixtures/seed/reservation.updated.json"),
        EventType::ReservationDeleted => include_str!("../../tests/fixtures/seed/reservation.deleted.json"),
        EventType::ConversationUpdated => include_str!("../../tests/fixtures/seed/conversation.updated.json"),
        EventType::CalendarUpdated => include_str!("../../tests/fixtures/seed/listing.calendar.updated.json"),
    }
}

async fn test_event(
    State(daemon): State<Arc<ApiContext>>,
    Path((account_id, webhook_id)): Path<(String, String)>,
    JsonBody(body): JsonBody<TestEvent>,
) -> Result<Json<Value>, ApiError> {
    let subscription = find_webhook(&daemon, &account_id, &webhook_id)?;
    let account = find(&daemon, &account_id)?;
    let event_type = EventType::parse(&body.event_type)
        .ok_or_else(|| ApiError::unprocessable("unknown_event_type", format!("unknown event type {:?}", body.event_type)))?;
    let mut envelope: Value = serde_json::from_str(sample(event_type)).map_err(ApiError::internal)?;
    let now = model::time::now();
    envelope["hook"]["id"] = Value::String(subscription.id.clone());
    envelope["hook"]["timestamp"] = Value::String(now);
    envelope["data"]["integrationAccountId"] = Value::String(account.id.clone());
    envelope["data"]["workspaceId"] = Value::String(account.workspace_id.clone());
    let body = serde_json::to_vec(&envelope).map_err(ApiError::internal)?;
    let webhook_id = format!("test_{}", uuid::Uuid::now_v7());
    let timestamp_secs = i64::try_from(unix_ms() / 1000).unwrap_or(i64::MAX);
    let signature = envelope::sign(&subscription.secret, &webhook_id, timestamp_secs, &body);
    let started = Instant::now();
    let outcome = daemon.http.post(&subscription.url, &webhook_id, timestamp_secs, &signature, body, crate::store::Origin::Webhook).await;
    Ok(Json(json!({
        "webhookId": webhook_id,
        "eventType": event_type.as_str(),
        "success": outcome.success,
        "statusCode": outcome.status_code,
        "latencyMs": u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        "response": outcome.response,
        "error": outcome.error,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Playground {
    /// The webhook body, as the PMS would post it.
    body: String,
    content_type: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    query: Option<String>,
    #[serde(default)]
    settings: BTreeMap<String, String>,
    /// Recorded API answers by request id: `{status, headers?, body? | bodyText? | error?}`.
    #[serde(default)]
    responses: BTreeMap<String, Value>,
}

async fn playground(
    State(daemon): State<Arc<ApiContext>>,
    Path(name): Path<String>,
    JsonBody(input): JsonBody<Playground>,
) -> Result<Json<Value>, ApiError> {
    let plugin =
        daemon.plugins.get(&name).ok_or_else(|| ApiError::not_found("plugin_not_found", format!("no plugin named {name:?} is loaded")))?;
    // Recorded answers go where the offline runner reads them: a private folder of this run.
    let responses_dir = if input.responses.is_empty() {
        None
    } else {
        let dir = daemon.settings.data_dir.join(format!("playground-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).map_err(ApiError::internal)?;
        for (id, answer) in &input.responses {
            if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.') || id.starts_with('.') {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(ApiError::unprocessable("invalid_field", format!("response id {id:?}: letters, digits, '-', '_', '.' only")));
            }
            std::fs::write(dir.join(format!("{id}.json")), answer.to_string()).map_err(ApiError::internal)?;
        }
        Some(dir)
    };
    let request = CaseRequest {
        content_type: Some(input.content_type.unwrap_or_else(|| "application/json".into())),
        headers: input.headers,
        query: input.query,
        settings: input.settings,
        body: input.body.into_bytes(),
        responses_dir: responses_dir.clone(),
        ..CaseRequest::default()
    };
    let ran = tokio::task::spawn_blocking(move || offline::run_traced(&plugin, &request)).await.map_err(ApiError::internal);
    if let Some(dir) = responses_dir {
        let _ = std::fs::remove_dir_all(dir);
    }
    match ran? {
        Ok((events, calls)) => {
            let calls: Vec<Value> =
                calls.iter().map(|call| json!({"method": call.method, "path": call.path, "status": call.status})).collect();
            Ok(Json(json!({"events": events, "apiCalls": calls})))
        }
        Err(error) => {
            let code = match error {
                OfflineError::Refused(_) => "plugin_refused",
                OfflineError::MissingResponse(_) => "missing_response",
                OfflineError::Invalid(_) => "invalid_output",
                _ => "plugin_failed",
            };
            Err(ApiError::unprocessable(code, error.to_string()))
        }
    }
}
