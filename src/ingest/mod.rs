//! The public listener: `/listen/{accountId}` takes a PMS's webhook, checks it, and stores it
//! durably before answering 2xx.
//!
//! It owns no threads of its own; it runs on the tokio runtime and hands stored entries to the
//! normalizer by id. It never calls a plugin (the plugin's declared verification scheme is read
//! from the registry, the check itself is the host's). Invariant: nothing is acknowledged before
//! the group commit that covers it has flushed; a request that fails before that gets an error and
//! the PMS retries.
//!
//! Errors, each with `{"error": {"code", "message"}}`: 404 `unknown_account`, 413
//! `payload_too_large`, 401 `verification_failed`, 400 `invalid_json` (a body declared as JSON
//! that does not parse), 503 `storage_unavailable`.

pub mod verify;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::daemon::Daemon;
use crate::http::ApiError;
use crate::plugin::bindings::stayhook::plugin::types::VerificationScheme;
use crate::store::InboxEntry;

/// Headers never handed to a plugin: they carry credentials.
const WITHHELD_HEADERS: &[&str] = &["authorization", "proxy-authorization", "cookie"];

/// The public router.
pub fn router(daemon: Arc<Daemon>) -> Router {
    Router::new()
        .route("/listen/{account_id}", any(receive))
        .route("/healthz", any(|| async { axum::Json(json!({"status": "ok"})) }))
        .fallback(|| async { ApiError::not_found("not_found", "no such route; webhooks go to /listen/{accountId}") })
        .with_state(daemon)
}

async fn receive(
    State(daemon): State<Arc<Daemon>>,
    Path(account_id): Path<String>,
    method: Method,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    if !matches!(method, Method::POST | Method::PUT | Method::GET) {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{method} is not accepted; PMSs post webhooks"),
        ));
    }
    let account = daemon
        .store
        .get_account(&account_id)?
        .ok_or_else(|| ApiError::not_found("unknown_account", format!("no integration account {account_id:?}")))?;
    let limit = daemon.settings.body_limit_bytes;
    let declared_length = headers.get(header::CONTENT_LENGTH).and_then(|value| value.to_str().ok()?.parse::<usize>().ok());
    if declared_length.is_some_and(|length| length > limit) {
        return Err(too_large(limit));
    }
    let body = axum::body::to_bytes(body, limit).await.map_err(|_| too_large(limit))?;

    let query = query.unwrap_or_default();
    let query_pairs: Vec<(String, String)> = form_pairs(&query);
    let scheme = daemon.plugins.get(&account.pms).map(|plugin| plugin.info.verification.clone()).unwrap_or(VerificationScheme::None);
    let header_text = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    {
        // Scoped: the presented proof borrows a non-Send closure and must not live across an await.
        let presented =
            verify::Presented { header: &header_text, query: &query_pairs, body: &body, now_secs: chrono::Utc::now().timestamp() };
        verify::verify(&scheme, &account.verification, &presented).map_err(|error| {
            ApiError::new(StatusCode::UNAUTHORIZED, "verification_failed", format!("webhook verification failed: {error}"))
        })?;
    }
    let content_type = header_text(header::CONTENT_TYPE.as_str()).map(str::to_string);
    if content_type.as_deref().is_some_and(is_json) && serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_err() {
        let error = serde_json::from_slice::<serde::de::IgnoredAny>(&body).err().map(|error| error.to_string()).unwrap_or_default();
        return Err(ApiError::bad_request("invalid_json", format!("the body is declared as JSON but does not parse: {error}")));
    }

    let now_ms = unix_ms();
    let digest =
        Sha256::new().chain_update(method.as_str()).chain_update([0]).chain_update(&query).chain_update([0]).chain_update(&body).finalize();
    let window_ms = u64::try_from(daemon.settings.dedup_window.as_millis()).unwrap_or(u64::MAX);
    if daemon.store.is_duplicate(&account.id, &digest, now_ms, window_ms)? {
        return Ok((StatusCode::OK, axum::Json(json!({"status": "duplicate"}))).into_response());
    }

    let withheld = verify::scheme_headers(&scheme);
    let plugin_headers = headers
        .iter()
        .filter(|(name, _)| !WITHHELD_HEADERS.contains(&name.as_str()) && !withheld.iter().any(|hidden| hidden == name.as_str()))
        .filter_map(|(name, value)| Some((name.as_str().to_string(), value.to_str().ok()?.to_string())))
        .collect();
    let plugin_query = match &scheme {
        VerificationScheme::UrlToken(parameter) => strip_parameter(&query, parameter),
        _ => query.clone(),
    };
    let entry = InboxEntry {
        account_id: account.id.clone(),
        received_at_ms: now_ms,
        method: method.as_str().to_string(),
        query: plugin_query,
        content_type,
        headers: plugin_headers,
        body: body.to_vec(),
    };
    let inbox_id = daemon.store.append_inbox(&entry)?;
    daemon.store.remember_digest(&account.id, &digest, now_ms)?;
    daemon.store.durable().await?;
    daemon.metrics.accepted();
    daemon.normalizer.dispatch(&account.id, inbox_id);
    Ok((StatusCode::OK, axum::Json(json!({"status": "accepted", "inboxId": inbox_id.to_string()}))).into_response())
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", format!("the body is larger than {limit} bytes"))
}

fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/json" || essence.ends_with("+json")
}

fn form_pairs(query: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(query.as_bytes()).map(|(name, value)| (name.into_owned(), value.into_owned())).collect()
}

fn strip_parameter(query: &str, parameter: &str) -> String {
    let kept = url::form_urlencoded::parse(query.as_bytes()).filter(|(name, _)| name != parameter);
    url::form_urlencoded::Serializer::new(String::new()).extend_pairs(kept).finish()
}

/// Unix time in milliseconds.
pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|elapsed| elapsed.as_millis() as u64).unwrap_or(0)
}
