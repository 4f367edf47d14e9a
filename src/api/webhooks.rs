//! `/v1/accounts/{accountId}/webhooks`: subscriptions (the seed's "webhooks"): name, URL, enabled,
//! event types, and a signing secret shown once, at creation. URLs pass the destination policy
//! (`http::destination`); the list pages like every list (`api::paging`).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::ApiContext;
use super::accounts::find;
use super::paging::{self, Cursor, Page, PageQuery};
use super::{JsonBody, created};
use crate::deliver::envelope;
use crate::http::ApiError;
use crate::http::destination;
use crate::model::{self, EventType};
use crate::store::Subscription;

/// Default and largest page of an account's webhooks.
const LIST_LIMITS: paging::Limits = paging::Limits { default: 100, max: 1000 };
/// Longest webhook URL, in bytes.
const MAX_URL_BYTES: usize = 2048;

pub(super) fn routes() -> Router<Arc<ApiContext>> {
    Router::new()
        .route("/v1/accounts/{account_id}/webhooks", get(list).post(create))
        .route("/v1/accounts/{account_id}/webhooks/{webhook_id}", get(show).patch(update).delete(remove))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct CreateWebhook {
    name: String,
    url: String,
    #[serde(default = "enabled_by_default")]
    enabled: bool,
    event_types: Vec<String>,
}

fn enabled_by_default() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct UpdateWebhook {
    name: Option<String>,
    url: Option<String>,
    enabled: Option<bool>,
    event_types: Option<Vec<String>>,
}

async fn create(
    State(daemon): State<Arc<ApiContext>>,
    Path(account_id): Path<String>,
    JsonBody(body): JsonBody<CreateWebhook>,
) -> Result<Response, ApiError> {
    find(&daemon, &account_id)?;
    let now = model::time::now();
    let subscription = Subscription {
        id: uuid::Uuid::new_v4().to_string(),
        account_id,
        name: checked_name(body.name)?,
        url: checked_url(&daemon, body.url)?,
        enabled: body.enabled,
        event_types: event_types(&body.event_types)?,
        secret: envelope::new_secret(),
        failing_since_ms: None,
        disabled_reason: None,
        created_at: now.clone(),
        updated_at: now,
    };
    daemon.store.put_subscription(&subscription).await?;
    let mut shown = view(&subscription);
    shown["secret"] = Value::String(subscription.secret.clone());
    Ok(created(shown))
}

/// `GET /v1/accounts/{accountId}/webhooks?limit=&after=`: by id, a page at a time.
async fn list(
    State(daemon): State<Arc<ApiContext>>,
    Path(account_id): Path<String>,
    Query(query): Query<PageQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = LIST_LIMITS.parse(query.limit.as_deref())?;
    find(&daemon, &account_id)?;
    let mut page = Page::new(limit);
    let subscriptions = daemon.store.list_subscriptions(&account_id)?;
    for subscription in
        subscriptions.iter().filter(|subscription| query.after.as_deref().is_none_or(|after| subscription.id.as_str() > after))
    {
        if !page.push(view(subscription), Cursor::Text(subscription.id.clone())) {
            break;
        }
    }
    Ok(Json(page.finish("webhooks")))
}

async fn show(
    State(daemon): State<Arc<ApiContext>>,
    Path((account_id, webhook_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(view(&find_webhook(&daemon, &account_id, &webhook_id)?)))
}

async fn update(
    State(daemon): State<Arc<ApiContext>>,
    Path((account_id, webhook_id)): Path<(String, String)>,
    JsonBody(body): JsonBody<UpdateWebhook>,
) -> Result<Json<Value>, ApiError> {
    let mut subscription = find_webhook(&daemon, &account_id, &webhook_id)?;
    if let Some(name) = body.name {
        subscription.name = checked_name(name)?;
    }
    if let Some(url) = body.url {
        subscription.url = checked_url(&daemon, url)?;
    }
    if let Some(enabled) = body.enabled {
        subscription.enabled = enabled;
        if enabled {
            subscription.disabled_reason = None;
            subscription.failing_since_ms = None;
        }
    }
    if let Some(names) = body.event_types {
        subscription.event_types = event_types(&names)?;
    }
    subscription.updated_at = model::time::now();
    daemon.store.put_subscription(&subscription).await?;
    Ok(Json(view(&subscription)))
}

async fn remove(
    State(daemon): State<Arc<ApiContext>>,
    Path((account_id, webhook_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    find(&daemon, &account_id)?;
    if daemon.store.remove_subscription(&account_id, &webhook_id).await? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(not_found(&webhook_id))
    }
}

fn find_webhook(daemon: &ApiContext, account_id: &str, webhook_id: &str) -> Result<Subscription, ApiError> {
    find(daemon, account_id)?;
    daemon.store.get_subscription(account_id, webhook_id)?.ok_or_else(|| not_found(webhook_id))
}

fn not_found(webhook_id: &str) -> ApiError {
    ApiError::not_found("webhook_not_found", format!("no webhook {webhook_id:?} in this account"))
}

fn checked_name(name: String) -> Result<String, ApiError> {
    if name.trim().is_empty() || name.len() > 256 {
        return Err(ApiError::unprocessable("invalid_field", "name must be 1 to 256 characters"));
    }
    Ok(name)
}

fn checked_url(daemon: &ApiContext, url: String) -> Result<String, ApiError> {
    if url.len() > MAX_URL_BYTES {
        return Err(ApiError::unprocessable("invalid_url", format!("url must be at most {MAX_URL_BYTES} bytes")));
    }
    destination::check_url(&url, daemon.settings.allow_private_destinations)
        .map_err(|message| ApiError::unprocessable("invalid_url", message))?;
    Ok(url)
}

fn event_types(names: &[String]) -> Result<Vec<EventType>, ApiError> {
    if names.is_empty() {
        return Err(ApiError::unprocessable("invalid_field", "eventTypes must name at least one event type"));
    }
    let mut types = Vec::new();
    for name in names {
        let event_type = EventType::parse(name).ok_or_else(|| {
            let known: Vec<&str> = EventType::ALL.iter().map(|event_type| event_type.as_str()).collect();
            ApiError::unprocessable("unknown_event_type", format!("unknown event type {name:?}; known: {}", known.join(", ")))
        })?;
        if !types.contains(&event_type) {
            types.push(event_type);
        }
    }
    Ok(types)
}

/// A subscription as the API shows it after creation: without its secret.
fn view(subscription: &Subscription) -> Value {
    json!({
        "id": subscription.id,
        "name": subscription.name,
        "url": subscription.url,
        "enabled": subscription.enabled,
        "eventTypes": subscription.event_types,
        "failingSince": subscription.failing_since_ms.map(model::time::from_unix_ms),
        "disabledReason": subscription.disabled_reason,
        "createdAt": subscription.created_at,
        "updatedAt": subscription.updated_at,
    })
}
