//! What every part of a running daemon shares, and what it says of its own health.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::config::Settings;
use crate::http::ApiError;
use crate::metrics::Metrics;
use crate::plugin::PluginRegistry;
use crate::plugin::bindings::stayhook::plugin::types::VerificationScheme;
use crate::store::{Account, Store};

/// The shared state of one running daemon. Several daemons may run in one process (tests do):
/// nothing here is global.
pub struct Daemon {
    /// Storage.
    pub store: Store,
    /// Loaded plugins.
    pub plugins: Arc<PluginRegistry>,
    /// Resolved configuration.
    pub settings: Settings,
    /// Base of listener URLs, without a trailing slash.
    pub public_url: String,
    /// The admin API's bearer token.
    pub admin_token: String,
    /// Hands stored webhooks to the normalizer threads.
    pub normalizer: crate::normalize::Submit,
    /// The HTTP client of deliveries (test events).
    pub http: crate::deliver::Client,
    /// Counters and histograms.
    pub metrics: Arc<Metrics>,
    /// Performs the API calls plugins ask for.
    pub enricher: Arc<crate::normalize::enrich::Enricher>,
    /// Bodies being stored right now (duplicate suppression waits for their flush).
    pub in_flight: crate::ingest::InFlight,
    /// Per-account limits of the listener.
    pub listener_limits: crate::ingest::ListenerLimits,
    /// Starting, serving or stopping (see [`Phase`]).
    pub phase: AtomicU8,
}

/// Where a daemon is in its life, as `/readyz` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Opening the store, loading plugins.
    Starting = 0,
    /// Serving.
    Ready = 1,
    /// Shutting down: finishing what is in flight.
    Stopping = 2,
}

impl Daemon {
    /// Move to `phase`.
    pub fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::SeqCst);
    }

    /// `/healthz`: 200 while the process can do its job; 503 once the store has failed (the
    /// daemon is then about to exit so a supervisor restarts it).
    pub fn health(&self) -> Response {
        match self.store.fault().reason() {
            None => Json(json!({"status": "ok"})).into_response(),
            Some(reason) => unhealthy(&reason),
        }
    }

    /// `/readyz`: 200 only while serving with a working store; 503 while starting, stopping or failed.
    pub fn readiness(&self) -> Response {
        if let Some(reason) = self.store.fault().reason() {
            return unhealthy(&reason);
        }
        match self.phase.load(Ordering::SeqCst) {
            1 => Json(json!({"status": "ready"})).into_response(),
            0 => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "starting", "the daemon is starting").into_response(),
            _ => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "stopping", "the daemon is shutting down").into_response(),
        }
    }

    /// The URL a PMS posts an account's webhooks to.
    pub fn listener_url(&self, account_id: &str) -> String {
        format!("{}/listen/{}", self.public_url, url_segment(account_id))
    }

    /// The listener URL to give the PMS: with the account's token when its plugin verifies by a
    /// token in the URL (the PMS then sends it back with every webhook).
    pub fn account_listener_url(&self, account: &Account) -> String {
        let url = self.listener_url(&account.id);
        let scheme = self.plugins.get(&account.pms).map(|plugin| plugin.info.verification.clone());
        match (scheme, account.verification.get("secret")) {
            (Some(VerificationScheme::UrlToken(parameter)), Some(secret)) => {
                let query: String = url::form_urlencoded::Serializer::new(String::new()).append_pair(&parameter, secret).finish();
                format!("{url}?{query}")
            }
            _ => url,
        }
    }
}

fn url_segment(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect::<String>().replace('+', "%20")
}

fn unhealthy(reason: &str) -> Response {
    let message = format!("the store failed and refuses writes ({reason}); the daemon is exiting so it can be restarted");
    ApiError::storage_unavailable(message).into_response()
}
