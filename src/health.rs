//! What a running daemon says of its own health: `/healthz` and `/readyz`, answered the same on
//! both listeners. `run` (`src/lib.rs`) moves the [`Phase`]; the store's [`Fault`] says whether
//! it still takes writes.

use std::sync::atomic::{AtomicU8, Ordering};

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::http::ApiError;
use crate::store::Fault;

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

/// The daemon's phase and its store's fault, shared by both servers.
pub struct Health {
    fault: Fault,
    phase: AtomicU8,
}

impl Health {
    /// A starting daemon whose store reports its failures to `fault`.
    pub fn new(fault: Fault) -> Self {
        Self { fault, phase: AtomicU8::new(Phase::Starting as u8) }
    }

    /// Move to `phase`.
    pub fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::SeqCst);
    }

    /// `/healthz`: 200 while the process can do its job; 503 once the store has failed (the
    /// daemon is then about to exit so a supervisor restarts it).
    pub fn health(&self) -> Response {
        match self.fault.reason() {
            None => Json(json!({"status": "ok"})).into_response(),
            Some(reason) => unhealthy(&reason),
        }
    }

    /// `/readyz`: 200 only while serving with a working store; 503 while starting, stopping or failed.
    pub fn readiness(&self) -> Response {
        if let Some(reason) = self.fault.reason() {
            return unhealthy(&reason);
        }
        match self.phase.load(Ordering::SeqCst) {
            1 => Json(json!({"status": "ready"})).into_response(),
            0 => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "starting", "the daemon is starting").into_response(),
            _ => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "stopping", "the daemon is shutting down").into_response(),
        }
    }
}

fn unhealthy(reason: &str) -> Response {
    let message = format!("the store failed and refuses writes ({reason}); the daemon is exiting so it can be restarted");
    ApiError::storage_unavailable(message).into_response()
}
