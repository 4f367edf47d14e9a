//! `/v1/accounts/{id}/sync`: an account's initial sync and reconciliation, seen and started.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::ApiContext;
use super::accounts::find;
use crate::http::ApiError;
use crate::model;
use crate::store::{SyncPass, SyncState, SyncStates};
use crate::sync::{self, StartError};

pub(super) fn routes() -> Router<Arc<ApiContext>> {
    Router::new().route("/v1/accounts/{account_id}/sync", get(status).post(start))
}

/// The optional body of `POST /v1/accounts/{id}/sync`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct StartSync {
    /// Deliver what the initial sync lists as `initial-sync` events (default: store state only).
    #[serde(default)]
    deliver: bool,
}

/// `GET /v1/accounts/{id}/sync`.
async fn status(State(daemon): State<Arc<ApiContext>>, Path(account_id): Path<String>) -> Result<Json<Value>, ApiError> {
    let account = find(&daemon, &account_id)?;
    let state = daemon.store.get_sync_state(&account.id)?;
    Ok(Json(view(&daemon, &account, state.as_ref())))
}

/// `POST /v1/accounts/{id}/sync`: start an initial sync now; 409 while a pass runs.
async fn start(State(daemon): State<Arc<ApiContext>>, Path(account_id): Path<String>, body: Bytes) -> Result<Response, ApiError> {
    let account = find(&daemon, &account_id)?;
    let options: StartSync = if body.iter().all(u8::is_ascii_whitespace) {
        StartSync::default()
    } else {
        serde_json::from_slice(&body).map_err(|error| match error.classify() {
            serde_json::error::Category::Data => ApiError::unprocessable("invalid_field", error.to_string()),
            _ => ApiError::bad_request("invalid_json", error.to_string()),
        })?
    };
    match daemon.syncer.start_initial(&account, options.deliver).await {
        Ok(()) => {
            let state = daemon.store.get_sync_state(&account.id)?;
            Ok((StatusCode::ACCEPTED, Json(view(&daemon, &account, state.as_ref()))).into_response())
        }
        Err(StartError::Running) => {
            Err(ApiError::new(StatusCode::CONFLICT, "sync_running", "a sync of this account is running; see GET .../sync"))
        }
        Err(StartError::NotAvailable(reason)) => Err(ApiError::unprocessable("sync_not_available", reason)),
        Err(StartError::Store(reason)) => Err(ApiError::internal(reason)),
    }
}

fn pass_view(pass: &SyncPass) -> Value {
    json!({
        "kind": pass.kind.as_str(),
        "mode": pass.mode,
        "modesLeft": pass.modes_left.iter().map(|(mode, _)| mode.as_str()).collect::<Vec<_>>(),
        "deliver": pass.deliver,
        "since": pass.since,
        "startedAt": pass.started_at,
        "finishedAt": pass.finished_at,
        "pagesDone": pass.pages_done,
        "recordsSeen": pass.records_seen,
        "recoveredChanges": pass.recovered,
        "errors": pass.errors,
        "lastError": pass.last_error,
    })
}

/// The status of an account's sync: `idle`, `running`, `error` (a pass paused by an error, resumed
/// from its cursor at `nextRunAt`) or `unavailable` (with the reason).
pub(super) fn view(daemon: &ApiContext, account: &crate::store::Account, state: Option<&SyncState>) -> Value {
    let unavailable = sync::unavailable_reason(&daemon.plugins, account);
    let running = daemon.syncer.is_running(&account.id);
    let status = match (&unavailable, running, state.and_then(|state| state.last_error.as_ref())) {
        (Some(_), _, _) => "unavailable",
        (None, true, _) => "running",
        (None, false, Some(_)) => "error",
        (None, false, None) => "idle",
    };
    let modes: Vec<&str> = daemon
        .plugins
        .get(&account.pms)
        .map(|plugin| plugin.info.sync_modes.iter().map(|mode| sync::mode_name(*mode)).collect())
        .unwrap_or_default();
    let interval = sync::interval_of(account, daemon.syncer.default_interval());
    let next_run = daemon.syncer.next_run_ms(account, state).map(model::time::from_unix_ms);
    json!({
        "accountId": account.id,
        "status": status,
        "reason": unavailable,
        "modes": modes,
        "reconcileIntervalSecs": interval.map(|interval| interval.as_secs()),
        "watermark": state.and_then(|state| state.watermark.clone()),
        "current": state.and_then(|state| state.running.as_ref()).map(pass_view),
        "lastPass": state.and_then(|state| state.last_pass.as_ref()).map(pass_view),
        "lastError": state.and_then(|state| state.last_error.as_ref()).map(|(reason, at)| json!({"reason": reason, "at": at})),
        "nextRunAt": next_run,
    })
}
