//! Small HTTP glue shared by the public listener and the admin API: the one error shape, JSON
//! answers, and serving a router until shutdown.
//!
//! Every error either server answers is `{"error": {"code", "message"}}` with a status code, built
//! by [`ApiError`] and nowhere else; handlers return typed errors and convert them here.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An error as the client sees it.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code (`unknown_account`, `payload_too_large`, ...).
    pub code: &'static str,
    /// What happened, for a human.
    pub message: String,
    /// Seconds the client should wait before trying again (`Retry-After`), for 429 and 503.
    pub retry_after_secs: Option<u64>,
}

impl ApiError {
    /// An error with this status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), retry_after_secs: None }
    }

    /// Ask the client to wait `secs` seconds before trying again.
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    /// 503 `storage_unavailable`: nothing was stored; retry in a few seconds (the daemon restarts
    /// itself when its store failed).
    pub fn storage_unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "storage_unavailable", message).retry_after(STORAGE_RETRY_AFTER_SECS)
    }

    /// 400 with this code.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 404 `not_found`-style error.
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    /// 422 `invalid_field`-style error.
    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    /// 500 for a failure of the daemon itself; the detail is logged, the client gets a summary.
    pub fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!(%error, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("internal error: {error}"))
    }
}

/// `Retry-After` of a 503 `storage_unavailable`: long enough for a supervisor to restart the
/// daemon, short enough that a PMS's own retry schedule is not the one that waits.
const STORAGE_RETRY_AFTER_SECS: u64 = 5;

impl From<crate::store::StoreError> for ApiError {
    fn from(error: crate::store::StoreError) -> Self {
        match error {
            crate::store::StoreError::Unavailable(message) => {
                tracing::error!(%message, "store unavailable");
                ApiError::storage_unavailable(format!("could not store durably: {message}"))
            }
            crate::store::StoreError::Stopped => ApiError::storage_unavailable("the daemon is stopping"),
            other => ApiError::internal(other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": { "code": self.code, "message": self.message } });
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after_secs {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from(secs));
        }
        response
    }
}

/// Serve `router` on `listener` until `shutdown` resolves; in-flight requests finish first.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router).with_graceful_shutdown(shutdown).await
}
