//! `/v1/events`, `/v1/dead-letters` and `/v1/inbox`: the event log, delivery attempts, redelivery,
//! and the raw webhooks with what became of them.
//!
//! Lists page with `limit` and `after` and stay within a byte budget (`api::paging`); they show
//! excerpts of big fields, the single-item routes the whole item. The store lists dead letters
//! and inbox outcomes only from the newest, so their later pages re-read the newer entries, up
//! to [`DEEPEST_DEAD_LETTERS`] / [`DEEPEST_INBOX`] deep (400 `page_too_deep` beyond).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::ApiContext;
use super::paging::{self, Cursor, Page, PageQuery};
use crate::http::ApiError;
use crate::ingest::unix_ms;
use crate::model::{self, EventResult, EventType};
use crate::store::{Delivery, DeliveryStatus, EventFilter, InboxId, InboxStatus, StoredEvent};

/// Default and largest page of the event log.
const EVENT_LIMITS: paging::Limits = paging::Limits { default: 100, max: 1000 };
/// Default and largest page of an event's attempts.
const ATTEMPT_LIMITS: paging::Limits = paging::Limits { default: 100, max: 1000 };
/// Default and largest page of dead letters.
const DEAD_LETTER_LIMITS: paging::Limits = paging::Limits { default: 100, max: 1000 };
/// Default and largest page of inbox outcomes (each may hold a plugin's long error message).
const INBOX_LIMITS: paging::Limits = paging::Limits { default: 50, max: 200 };
/// How many of the newest dead letters paging can reach.
pub(super) const DEEPEST_DEAD_LETTERS: usize = 10_000;
/// How many of the newest inbox outcomes of one status paging can reach.
pub(super) const DEEPEST_INBOX: usize = 2_000;

pub(super) fn routes() -> Router<Arc<ApiContext>> {
    Router::new()
        .route("/v1/events", get(list))
        .route("/v1/events/{event_id}", get(show))
        .route("/v1/events/{event_id}/attempts", get(attempts))
        .route("/v1/events/{event_id}/redeliver", post(redeliver))
        .route("/v1/dead-letters", get(dead_letters))
        .route("/v1/dead-letters/{delivery_id}", delete(discard_dead_letter))
        .route("/v1/inbox", get(inbox_list))
        .route("/v1/inbox/{inbox_id}", get(inbox_show))
        .route("/v1/inbox/{inbox_id}/renormalize", axum::routing::post(inbox_renormalize))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListQuery {
    account_id: Option<String>,
    event_type: Option<String>,
    record_id: Option<String>,
    result: Option<String>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<String>,
    after: Option<String>,
}

async fn list(State(daemon): State<Arc<ApiContext>>, Query(query): Query<ListQuery>) -> Result<Json<Value>, ApiError> {
    let event_type = match query.event_type.as_deref() {
        Some(name) => {
            Some(EventType::parse(name).ok_or_else(|| ApiError::bad_request("invalid_query", format!("unknown eventType {name:?}")))?)
        }
        None => None,
    };
    let limit = EVENT_LIMITS.parse(query.limit.as_deref())?;
    // One more than the page: whether the log goes on.
    let result = match query.result.as_deref() {
        None => None,
        Some("SUCCESS") => Some(EventResult::Success),
        Some("FAILURE") => Some(EventResult::Failure),
        Some(other) => return Err(ApiError::bad_request("invalid_query", format!("result {other:?} must be SUCCESS or FAILURE"))),
    };
    let filter = EventFilter {
        account_id: query.account_id,
        event_type,
        record_id: query.record_id,
        result,
        from: query.from.as_deref().map(|text| rendered_time("from", text)).transpose()?,
        to: query.to.as_deref().map(|text| rendered_time("to", text)).transpose()?,
        after: query.after,
        limit: limit + 1,
    };
    let mut page = Page::new(limit);
    for event in daemon.store.list_events(&filter)? {
        if !page.push(event_view(&event), Cursor::Text(event.id.clone())) {
            break;
        }
    }
    Ok(Json(page.finish("events")))
}

/// An RFC 3339 time from a query, rendered as events store their timestamps (so they compare).
fn rendered_time(name: &str, text: &str) -> Result<String, ApiError> {
    let time = chrono::DateTime::parse_from_rfc3339(text)
        .map_err(|error| ApiError::bad_request("invalid_query", format!("{name} {text:?} is not an RFC 3339 time: {error}")))?;
    Ok(time.with_timezone(&chrono::Utc).to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

async fn show(State(daemon): State<Arc<ApiContext>>, Path(event_id): Path<String>) -> Result<Json<Value>, ApiError> {
    let event = find_event(&daemon, &event_id)?;
    let mut view = event_view(&event);
    let mut deliveries = Vec::new();
    for delivery in daemon.store.deliveries_of_event(&event_id)? {
        let mut delivery_json = delivery_view(&delivery);
        delivery_json["heldBy"] = held_by(&daemon, &delivery)?.map_or(Value::Null, |dead_id| Value::String(dead_id.to_string()));
        deliveries.push(delivery_json);
    }
    view["deliveries"] = Value::Array(deliveries);
    Ok(Json(view))
}

/// `GET /v1/events/{eventId}/attempts?limit=&after=`: by delivery, then attempt number; the
/// cursor is `<deliveryId>.<attempt>`.
async fn attempts(
    State(daemon): State<Arc<ApiContext>>,
    Path(event_id): Path<String>,
    Query(query): Query<PageQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = ATTEMPT_LIMITS.parse(query.limit.as_deref())?;
    let after = match query.after.as_deref() {
        None => None,
        Some(text) => Some(attempt_position(text).ok_or_else(|| {
            ApiError::bad_request("invalid_query", format!("after {text:?} must be the `next` of a previous page (<deliveryId>.<attempt>)"))
        })?),
    };
    find_event(&daemon, &event_id)?;
    let mut attempts: Vec<((u64, u32), crate::store::Attempt)> = daemon
        .store
        .attempts_of_event(&event_id)?
        .into_iter()
        .map(|attempt| ((attempt.delivery_id.parse().unwrap_or(0), attempt.attempt), attempt))
        .filter(|(position, _)| after.is_none_or(|after| *position > after))
        .collect();
    attempts.sort_by_key(|(position, _)| *position);
    let mut page = Page::new(limit);
    for ((delivery_id, number), attempt) in attempts {
        let item = serde_json::to_value(&attempt).map_err(ApiError::internal)?;
        if !page.push(item, Cursor::Text(format!("{delivery_id}.{number}"))) {
            break;
        }
    }
    Ok(Json(page.finish("attempts")))
}

fn attempt_position(text: &str) -> Option<(u64, u32)> {
    let (delivery_id, attempt) = text.split_once('.')?;
    Some((delivery_id.parse().ok()?, attempt.parse().ok()?))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RedeliverBody {
    webhook_id: Option<String>,
}

/// Queue the event again for every subscription it went to (or one, by `webhookId`); without
/// earlier deliveries, for every enabled subscription that selects its type now. A dead letter is
/// revived in place: it keeps the head of its lane, so it is retried (with a fresh retry schedule)
/// before the later events of its record that it held back. Answers once the change is on disk.
async fn redeliver(
    State(daemon): State<Arc<ApiContext>>,
    Path(event_id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let event = find_event(&daemon, &event_id)?;
    let body: RedeliverBody = if body.iter().all(u8::is_ascii_whitespace) {
        RedeliverBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|error| match error.classify() {
            serde_json::error::Category::Data => ApiError::unprocessable("invalid_field", error.to_string()),
            _ => ApiError::bad_request("invalid_json", error.to_string()),
        })?
    };
    let webhook_id = body.webhook_id;
    let previous = daemon.store.deliveries_of_event(&event_id)?;
    let mut targets: Vec<String> = previous.iter().map(|delivery| delivery.subscription_id.clone()).collect();
    if targets.is_empty() {
        targets = daemon
            .store
            .list_subscriptions(&event.integration_account_id)?
            .into_iter()
            .filter(|subscription| subscription.enabled && subscription.event_types.contains(&event.event_type))
            .map(|subscription| subscription.id)
            .collect();
    }
    targets.sort();
    targets.dedup();
    if let Some(webhook_id) = &webhook_id {
        if daemon.store.get_subscription(&event.integration_account_id, webhook_id)?.is_none() {
            return Err(ApiError::not_found("webhook_not_found", format!("no webhook {webhook_id:?} in the event's account")));
        }
        targets = vec![webhook_id.clone()];
    }
    if targets.is_empty() {
        return Err(ApiError::new(StatusCode::CONFLICT, "conflict", "no subscription to redeliver to"));
    }
    let now_ms = unix_ms();
    let mut revived = Vec::new();
    let mut added = Vec::new();
    for subscription_id in targets {
        let dead = previous.iter().find(|delivery| delivery.subscription_id == subscription_id && delivery.status == DeliveryStatus::Dead);
        if let Some(dead) = dead {
            let mut delivery = dead.clone();
            delivery.status = DeliveryStatus::Pending;
            delivery.retry_base = delivery.attempts;
            delivery.next_attempt_at_ms = now_ms;
            delivery.updated_at_ms = now_ms;
            revived.push(delivery);
            continue;
        }
        added.push(Delivery {
            id: daemon.store.new_delivery_id()?,
            event_id: event.id.clone(),
            subscription_id,
            account_id: event.integration_account_id.clone(),
            lane: crate::normalize::lane(event.event_type, &event.record_id),
            attempts: 0,
            retry_base: 0,
            status: DeliveryStatus::Pending,
            next_attempt_at_ms: now_ms,
            last_error: None,
            created_at_ms: now_ms,
            updated_at_ms: now_ms,
        });
    }
    let deliveries: Vec<Value> = revived.iter().chain(&added).map(delivery_view).collect();
    daemon.store.redeliver(revived, added).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "deliveries": deliveries }))).into_response())
}

/// Give up on a dead letter: it is cancelled, and the later events of its record that it held
/// back go on. Answers once the change is on disk.
async fn discard_dead_letter(State(daemon): State<Arc<ApiContext>>, Path(delivery_id): Path<String>) -> Result<Json<Value>, ApiError> {
    let not_found = || ApiError::not_found("dead_letter_not_found", format!("no dead letter {delivery_id:?}"));
    let id: u64 = delivery_id.parse().map_err(|_| not_found())?;
    let delivery = daemon.store.get_delivery(id)?.filter(|delivery| delivery.status == DeliveryStatus::Dead).ok_or_else(not_found)?;
    let now_ms = unix_ms();
    let mut discarded = delivery;
    discarded.status = DeliveryStatus::Cancelled;
    discarded.last_error = Some(format!(
        "discarded from the dead letters at {}; last error: {}",
        model::time::from_unix_ms(now_ms),
        discarded.last_error.as_deref().unwrap_or("none")
    ));
    discarded.updated_at_ms = now_ms;
    let view = delivery_view(&discarded);
    daemon.store.discard_dead_letter(discarded, now_ms).await?;
    Ok(Json(view))
}

/// The dead letter that holds back a pending delivery, if its lane's head is one.
fn held_by(daemon: &ApiContext, delivery: &Delivery) -> Result<Option<u64>, ApiError> {
    if delivery.status != DeliveryStatus::Pending {
        return Ok(None);
    }
    let Some(head_id) = daemon.store.lane_head(&delivery.subscription_id, &delivery.lane)? else { return Ok(None) };
    if head_id == delivery.id {
        return Ok(None);
    }
    Ok(daemon.store.get_delivery(head_id)?.filter(|head| head.status == DeliveryStatus::Dead).map(|head| head.id))
}

#[derive(Deserialize)]
struct InboxQuery {
    limit: Option<String>,
    after: Option<String>,
    status: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeadLetterQuery {
    limit: Option<String>,
    after: Option<String>,
    webhook_id: Option<String>,
}

/// `GET /v1/dead-letters?webhookId=&limit=&after=`: newest (highest delivery id) first; with
/// `webhookId`, only that webhook's (among the newest [`DEEPEST_DEAD_LETTERS`]; an unknown id
/// lists none).
async fn dead_letters(State(daemon): State<Arc<ApiContext>>, Query(query): Query<DeadLetterQuery>) -> Result<Json<Value>, ApiError> {
    let limit = DEAD_LETTER_LIMITS.parse(query.limit.as_deref())?;
    let after = numeric_cursor(query.after.as_deref())?;
    let webhook_id = query.webhook_id;
    if webhook_id.as_deref().is_some_and(|id| id.is_empty() || id.len() > 200) {
        return Err(ApiError::bad_request("invalid_query", "webhookId must be a webhook's id (1 to 200 characters)"));
    }
    let keep = |delivery: &Delivery| webhook_id.as_deref().is_none_or(|id| delivery.subscription_id == id);
    let store = daemon.store.clone();
    let (found, cut_short) =
        newest_after_filtered(after, limit + 1, DEEPEST_DEAD_LETTERS, "dead letters", webhook_id.is_some(), keep, |scan| {
            Ok(store.dead_letters(scan)?.into_iter().map(|delivery| (delivery.id, delivery)).collect())
        })?;
    let mut page = Page::new(limit);
    for (delivery_id, delivery) in found {
        if !page.push(delivery_view(&delivery), Cursor::Number(delivery_id)) {
            break;
        }
    }
    if cut_short {
        page.set_more();
    }
    Ok(Json(page.finish("deadLetters")))
}

/// `GET /v1/inbox?status=&limit=&after=`: outcomes of one status, newest first.
async fn inbox_list(State(daemon): State<Arc<ApiContext>>, Query(query): Query<InboxQuery>) -> Result<Json<Value>, ApiError> {
    let limit = INBOX_LIMITS.parse(query.limit.as_deref())?;
    let after = numeric_cursor(query.after.as_deref())?;
    let status = match query.status.as_deref().unwrap_or("failed") {
        "failed" => InboxStatus::Failed,
        "skipped" => InboxStatus::Skipped,
        "done" => InboxStatus::Done,
        other => return Err(ApiError::bad_request("invalid_query", format!("status {other:?} must be failed, skipped or done"))),
    };
    let store = daemon.store.clone();
    let (found, cut_short) = newest_after(after, limit + 1, DEEPEST_INBOX, "inbox entries", |scan| {
        Ok(store.list_outcomes(status, scan)?.into_iter().map(|(inbox_id, outcome)| (inbox_id.0, outcome)).collect())
    })?;
    let mut page = Page::new(limit);
    for (inbox_id, outcome) in found {
        if !page.push(json!({ "inboxId": inbox_id.to_string(), "outcome": outcome }), Cursor::Number(inbox_id)) {
            break;
        }
    }
    if cut_short {
        page.set_more();
    }
    Ok(Json(page.finish("inbox")))
}

fn numeric_cursor(after: Option<&str>) -> Result<Option<u64>, ApiError> {
    after
        .map(|text| {
            text.parse::<u64>().map_err(|_| {
                ApiError::bad_request("invalid_query", format!("after {text:?} must be the `next` of a previous page (a number)"))
            })
        })
        .transpose()
}

/// Up to `want` items with ids below `after` from a source listed newest (highest id) first that
/// can only be read from its newest item (`list(n)`: the newest `n`). Reads at most `deepest`
/// items; also says whether the source went on past what was read (so a short page still gets a
/// `next`). Without `after`, one read of `want`.
///
/// The store has no "older than" range for dead letters and inbox outcomes yet; with one, this
/// becomes a single read of `want` items.
fn newest_after<T>(
    after: Option<u64>,
    want: usize,
    deepest: usize,
    what: &str,
    list: impl FnMut(usize) -> Result<Vec<(u64, T)>, ApiError>,
) -> Result<(Vec<(u64, T)>, bool), ApiError> {
    newest_after_filtered(after, want, deepest, what, false, |_| true, list)
}

/// [`newest_after`] keeping only the items `keep` accepts (`filtered` says whether it may refuse
/// any): the source is read deeper until `want` are kept, the source ends, or `deepest` items were
/// read. A first page that finds none within `deepest` is empty, not an error.
fn newest_after_filtered<T>(
    after: Option<u64>,
    want: usize,
    deepest: usize,
    what: &str,
    filtered: bool,
    keep: impl Fn(&T) -> bool,
    mut list: impl FnMut(usize) -> Result<Vec<(u64, T)>, ApiError>,
) -> Result<(Vec<(u64, T)>, bool), ApiError> {
    if after.is_none() && !filtered {
        return Ok((list(want)?, false));
    }
    let mut scan = want.saturating_mul(4).max(256).min(deepest);
    loop {
        let read = list(scan)?;
        let exhausted = read.len() < scan;
        let older: Vec<(u64, T)> =
            read.into_iter().filter(|(id, item)| after.is_none_or(|after| *id < after) && keep(item)).take(want).collect();
        if older.len() >= want || exhausted {
            return Ok((older, false));
        }
        if scan >= deepest {
            let Some(after) = after else {
                let found_some = !older.is_empty();
                return Ok((older, found_some));
            };
            if older.is_empty() {
                return Err(ApiError::bad_request(
                    "page_too_deep",
                    format!("paging reaches only the newest {deepest} {what}; nothing older than {after} among them"),
                ));
            }
            return Ok((older, true));
        }
        scan = scan.saturating_mul(4).min(deepest);
    }
}

/// The stored raw webhook, or 404: `expired` when retention deleted it, `inbox_not_found` otherwise.
fn find_inbox(daemon: &ApiContext, inbox_id: &str) -> Result<(InboxId, crate::store::InboxEntry), ApiError> {
    let not_found = || ApiError::not_found("inbox_not_found", format!("no inbox entry {inbox_id:?}"));
    let id = InboxId(inbox_id.parse().map_err(|_| not_found())?);
    let Some(entry) = daemon.store.get_inbox(id)? else {
        // Entries are numbered in arrival order: one below the oldest kept, or at most the last
        // one retention deleted, was deleted.
        let stats = daemon.store.storage_stats()?;
        if stats.oldest_inbox_id.is_some_and(|oldest| id < oldest) || stats.inbox_pruned_through.is_some_and(|pruned| id <= pruned) {
            return Err(ApiError::not_found("expired", format!("inbox entry {inbox_id:?} is older than what retention keeps")));
        }
        return Err(not_found());
    };
    Ok((id, entry))
}

/// Normalize one stored webhook again with the plugin loaded now (after a plugin fix), as its
/// next generation: 202, or `queued: false` when it is pending already (it runs once, then).
async fn inbox_renormalize(State(daemon): State<Arc<ApiContext>>, Path(inbox_id): Path<String>) -> Result<Response, ApiError> {
    let (id, entry) = find_inbox(&daemon, &inbox_id)?;
    let account = super::accounts::find(&daemon, &entry.account_id)?;
    if daemon.plugins.get(&account.pms).is_none() {
        return Err(ApiError::unprocessable("unknown_plugin", format!("no plugin named {:?} is loaded", account.pms)));
    }
    // A requeued entry goes to the normalizer through the store's feed.
    let generation = daemon.store.requeue_inbox(id)?;
    tracing::info!(inbox_id = %id, account = %account.id, queued = generation.is_some(), "renormalizing one stored webhook");
    let body = json!({"inboxId": id.to_string(), "accountId": account.id, "queued": generation.is_some(), "generation": generation});
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

async fn inbox_show(State(daemon): State<Arc<ApiContext>>, Path(inbox_id): Path<String>) -> Result<Json<Value>, ApiError> {
    let (id, entry) = find_inbox(&daemon, &inbox_id)?;
    let outcome = daemon.store.inbox_outcome(id)?;
    Ok(Json(json!({
        "inboxId": id.to_string(),
        "accountId": entry.account_id,
        "receivedAt": model::time::from_unix_ms(entry.received_at_ms),
        "method": entry.method,
        "query": entry.query,
        "contentType": entry.content_type,
        "headers": entry.headers,
        "body": String::from_utf8_lossy(&entry.body),
        "status": outcome.as_ref().map_or(InboxStatus::Pending, |outcome| outcome.status),
        "outcome": outcome,
    })))
}

/// The event, or 404: `expired` when its id's time (UUID v7) is before what retention keeps (the
/// events cutoff, or the oldest event kept), `event_not_found` otherwise.
fn find_event(daemon: &ApiContext, event_id: &str) -> Result<StoredEvent, ApiError> {
    if let Some(event) = daemon.store.get_event(event_id)? {
        return Ok(event);
    }
    if let Some(time_ms) = crate::store::event_time_ms(event_id) {
        let cutoff_ms = daemon.settings.retention.cutoffs(unix_ms()).events_before_ms;
        let oldest_ms = daemon.store.storage_stats()?.oldest_event_ms;
        if time_ms < cutoff_ms || oldest_ms.is_some_and(|oldest_ms| time_ms < oldest_ms) {
            return Err(ApiError::not_found(
                "expired",
                format!(
                    "event {event_id:?} (of {}) is older than what retention keeps (events: {})",
                    model::time::from_unix_ms(time_ms),
                    daemon.settings.retention.events.describe()
                ),
            ));
        }
    }
    Err(ApiError::not_found("event_not_found", format!("no event {event_id:?}")))
}

fn event_view(event: &StoredEvent) -> Value {
    json!({
        "id": event.id,
        "eventType": event.event_type,
        "timestamp": event.timestamp,
        "integrationAccountId": event.integration_account_id,
        "workspaceId": event.workspace_id,
        "recordId": event.record_id,
        "result": event.result,
        "failureReason": event.failure_reason,
        "inboxId": event.inbox_id,
        "origin": event.origin.as_str(),
        "record": event.record,
    })
}

fn delivery_view(delivery: &Delivery) -> Value {
    json!({
        "deliveryId": delivery.id.to_string(),
        "eventId": delivery.event_id,
        "webhookId": delivery.subscription_id,
        "accountId": delivery.account_id,
        "status": delivery.status,
        "attempts": delivery.attempts,
        "nextAttemptAt": (delivery.status == DeliveryStatus::Pending).then(|| model::time::from_unix_ms(delivery.next_attempt_at_ms)),
        "lastError": delivery.last_error,
        "createdAt": model::time::from_unix_ms(delivery.created_at_ms),
        "updatedAt": model::time::from_unix_ms(delivery.updated_at_ms),
    })
}
