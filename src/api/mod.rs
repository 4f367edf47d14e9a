//! The admin API: accounts, subscriptions, the event log, attempts, dead letters, the inbox,
//! plugins, state queries and metrics, on its own listener, every route but `/healthz` and `/readyz` behind
//! `Authorization: Bearer <token>`.
//!
//! Handlers validate input and call the store; they never build error bodies themselves (they
//! return [`ApiError`]) and never run plugin code (listing plugins reads what `describe` returned
//! at load). Errors: 400 `invalid_json`, 401 `unauthorized`, 404 `*_not_found`, 409 `conflict`,
//! 422 `invalid_field` / `unknown_plugin` / `unknown_event_type`.

mod accounts;
mod events;
mod export;
mod insight;
mod paging;
mod plugins;
mod registration;
pub mod session;
mod storage;
mod sync;
mod webhooks;

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::config::Settings;
use crate::health::Health;
use crate::http::ApiError;
use crate::ingest::ListenerUrls;
use crate::metrics::Metrics;
use crate::normalize::enrich::Enricher;
use crate::plugin::PluginRegistry;
use crate::store::{Account, Store};

/// What the admin API (and the console it serves) uses. Built by `run` (`src/lib.rs`). It reaches
/// the stages only through their handles (a requeued webhook reaches the normalizer through the
/// store's feed): the [`Enricher`] for registration's API calls, the delivery [`crate::deliver::Client`] for test
/// events; redeliveries and discards go through the store, which wakes the delivery scheduler.
/// Handlers call it `daemon`: the daemon as the API sees it.
pub struct ApiContext {
    /// Storage.
    pub store: Store,
    /// Loaded plugins (listed, inspected, uploaded; run for registration and the playground).
    pub plugins: Arc<PluginRegistry>,
    /// The settings the API reads.
    pub settings: ApiSettings,
    /// Counters and histograms (`/metrics`, `/v1/stats`).
    pub metrics: Arc<Metrics>,
    /// The admin API's bearer token.
    pub admin_token: String,
    /// Performs the API calls of automatic registration.
    pub enricher: Arc<Enricher>,
    /// The HTTP client of deliveries (test events).
    pub http: crate::deliver::Client,
    /// Where PMSs post webhooks.
    pub listener_urls: ListenerUrls,
    /// `/healthz` and `/readyz`.
    pub health: Arc<Health>,
    /// Initial syncs and reconciliation: starts passes, knows which run.
    pub syncer: Arc<crate::sync::Syncer>,
}

/// The part of [`Settings`] the API reads.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// Whether webhook URLs and `apiBaseUrl`s may be private addresses.
    pub allow_private_destinations: bool,
    /// Most rounds of API calls (registration).
    pub enrichment_max_rounds: u32,
    /// Most API calls in one round (registration).
    pub enrichment_max_requests: usize,
    /// Where uploaded plugins are written.
    pub plugin_dir: PathBuf,
    /// The data dir (the playground's temporary folders).
    pub data_dir: PathBuf,
    /// What the store keeps (`GET /v1/storage`, `expired` answers).
    pub retention: crate::config::Retention,
}

impl From<&Settings> for ApiSettings {
    fn from(settings: &Settings) -> Self {
        Self {
            allow_private_destinations: settings.allow_private_destinations,
            enrichment_max_rounds: settings.enrichment_max_rounds,
            enrichment_max_requests: settings.enrichment_max_requests,
            plugin_dir: settings.plugin_dir.clone(),
            data_dir: settings.data_dir.clone(),
            retention: settings.retention.clone(),
        }
    }
}

impl ApiContext {
    /// The listener URL to give the PMS for `account` (with its token when its plugin verifies
    /// by a token in the URL).
    pub fn account_listener_url(&self, account: &Account) -> String {
        let scheme = self.plugins.get(&account.pms).map(|plugin| plugin.info.verification.clone());
        self.listener_urls.account_listener_url(account, scheme.as_ref())
    }
}

/// The OpenAPI document of this API, kept true by `tests/it/admin_api.rs`.
const OPENAPI: &str = include_str!("../../docs/openapi.json");

/// The admin router, with the console's pages (`crate::console`) and its sign-in.
pub fn router(daemon: Arc<ApiContext>) -> Router {
    let sessions = Arc::new(session::Sessions::default());
    let protected = Router::new()
        .merge(accounts::routes())
        .merge(webhooks::routes())
        .merge(events::routes())
        .merge(registration::routes())
        .merge(plugins::routes())
        .merge(insight::routes())
        .merge(storage::routes())
        .merge(export::routes())
        .merge(sync::routes())
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(|| async { ([(header::CONTENT_TYPE, "application/json")], OPENAPI) }))
        .route_layer(middleware::from_fn_with_state((daemon.clone(), sessions.clone()), session::require_auth));
    Router::new()
        .route("/healthz", get(|State(daemon): State<Arc<ApiContext>>| async move { daemon.health.health() }))
        .route("/readyz", get(|State(daemon): State<Arc<ApiContext>>| async move { daemon.health.readiness() }))
        .merge(protected)
        .fallback(|| async { ApiError::not_found("not_found", "no such route") })
        .with_state(daemon.clone())
        .merge(session::routes(daemon, sessions))
        .merge(crate::console::routes())
}

/// A JSON request body whose rejections are the API's own errors: 400 for a body that is not
/// JSON, 413 for one over the route's body limit, 415 without a JSON content type, 422 for JSON of
/// the wrong shape (naming the field serde complains about).
pub(crate) struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(JsonBody(value)),
            Err(JsonRejection::JsonDataError(error)) => Err(ApiError::unprocessable("invalid_field", error.body_text())),
            Err(JsonRejection::MissingJsonContentType(_)) => {
                Err(ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", "send Content-Type: application/json"))
            }
            Err(other) if other.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", other.body_text()))
            }
            Err(other) => Err(ApiError::bad_request("invalid_json", other.body_text())),
        }
    }
}

/// 201 with a JSON body.
pub(crate) fn created(value: Value) -> Response {
    (StatusCode::CREATED, Json(value)).into_response()
}

async fn metrics(State(daemon): State<Arc<ApiContext>>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], daemon.metrics.render()).into_response()
}
