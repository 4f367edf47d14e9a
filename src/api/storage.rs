//! `GET /v1/storage`: the store's size and reach, the retention settings and what the pruner did.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::ApiContext;
use crate::http::ApiError;
use crate::model::time::from_unix_ms;

pub(super) fn routes() -> Router<Arc<ApiContext>> {
    Router::new().route("/v1/storage", get(show))
}

async fn show(State(daemon): State<Arc<ApiContext>>) -> Result<Json<Value>, ApiError> {
    let store = daemon.store.clone();
    let stats = tokio::task::spawn_blocking(move || store.storage_stats()).await.map_err(ApiError::internal)??;
    daemon.metrics.storage_measured(stats.bytes_on_disk, stats.oldest_event_ms);
    let retention = &daemon.settings.retention;
    let pruner = daemon.metrics.pruner_status();
    let last_pass = pruner.last_pass.as_ref().map(|pass| {
        json!({
            "startedAt": from_unix_ms(pass.started_at_ms),
            "durationMs": pass.duration_ms,
            "steps": pass.steps,
            "events": pass.events,
            "deliveries": pass.deliveries,
            "inbox": pass.inbox,
            "bytesFreed": pass.bytes_freed,
            "error": pass.error,
        })
    });
    Ok(Json(json!({
        "bytesOnDisk": stats.bytes_on_disk,
        "oldestEventAt": stats.oldest_event_ms.map(from_unix_ms),
        "oldestInboxAt": stats.oldest_inbox_ms.map(from_unix_ms),
        "oldestInboxId": stats.oldest_inbox_id.map(|id| id.to_string()),
        "retention": {
            "events": retention.events.describe(),
            "inbox": retention.inbox.describe(),
            "deadLetters": retention.dead_letters.describe(),
            "pruneIntervalMs": u64::try_from(retention.prune_interval.as_millis()).unwrap_or(u64::MAX),
            "pruneBudget": retention.prune_budget,
        },
        "pruner": {
            "lastPass": last_pass,
            "passes": pruner.passes,
            "events": pruner.events,
            "deliveries": pruner.deliveries,
            "inbox": pruner.inbox,
            "bytesFreed": pruner.bytes_freed,
        },
    })))
}
