//! A real HTTP server playing a PMS's API for enrichment tests (the chaos plugin's API): an OAuth2
//! token endpoint, reservations that answer, rate-limit, or stay down, and webhook registration.
//! Every request is recorded.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde_json::json;

/// One request the fake API got.
#[derive(Debug, Clone)]
pub struct ApiCall {
    /// "GET /reservations/ok-1".
    pub line: String,
    /// The Authorization header.
    pub authorization: String,
}

#[derive(Default)]
struct Recorded {
    calls: Vec<ApiCall>,
    n_tokens: usize,
}

/// The fake API; `url` is what an account's `apiBaseUrl` points at.
pub struct FakePms {
    /// Base URL.
    pub url: String,
    recorded: Arc<Mutex<Recorded>>,
    server: tokio::task::JoinHandle<()>,
}

impl FakePms {
    /// Start on a free loopback port.
    pub async fn start() -> FakePms {
        let recorded = Arc::new(Mutex::new(Recorded::default()));
        let router = Router::new()
            .route("/oauth/token", post(token))
            .route("/reservations/{id}", get(reservation))
            .route("/webhooks", post(register))
            .route("/webhooks/{id}", delete(unregister))
            .with_state(recorded.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        FakePms { url, recorded, server }
    }

    /// Requests other than token requests, in order.
    pub fn calls(&self) -> Vec<ApiCall> {
        self.recorded.lock().unwrap().calls.clone()
    }

    /// How many tokens were handed out.
    pub fn n_tokens(&self) -> usize {
        self.recorded.lock().unwrap().n_tokens
    }
}

impl Drop for FakePms {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn record(recorded: &Mutex<Recorded>, line: String, headers: &HeaderMap) -> usize {
    let authorization = headers.get("authorization").and_then(|value| value.to_str().ok()).unwrap_or_default().to_string();
    let mut recorded = recorded.lock().unwrap();
    recorded.calls.push(ApiCall { line: line.clone(), authorization });
    recorded.calls.iter().filter(|call| call.line == line).count()
}

async fn token(State(recorded): State<Arc<Mutex<Recorded>>>, body: String) -> Response {
    let form: Vec<(String, String)> = url::form_urlencoded::parse(body.as_bytes()).into_owned().collect();
    let field = |name: &str| form.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str()).unwrap_or_default();
    if field("grant_type") != "client_credentials" || field("client_id") != "chaos-client" || field("client_secret") != "chaos-secret" {
        return (StatusCode::UNAUTHORIZED, axum::Json(json!({"error": "invalid_client"}))).into_response();
    }
    let mut recorded = recorded.lock().unwrap();
    recorded.n_tokens += 1;
    axum::Json(json!({"access_token": format!("token-{}", recorded.n_tokens), "token_type": "Bearer", "expires_in": 86400})).into_response()
}

async fn reservation(State(recorded): State<Arc<Mutex<Recorded>>>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let n_seen = record(&recorded, format!("GET /reservations/{id}"), &headers);
    let authorized =
        headers.get("authorization").and_then(|value| value.to_str().ok()).is_some_and(|value| value.starts_with("Bearer token-"));
    if !authorized {
        return (StatusCode::UNAUTHORIZED, axum::Json(json!({"error": "unauthorized"}))).into_response();
    }
    if id.starts_with("down") {
        return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(json!({"error": "maintenance"}))).into_response();
    }
    if id.starts_with("busy") && n_seen == 1 {
        return (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")], axum::Json(json!({"error": "rate limited"}))).into_response();
    }
    axum::Json(json!({"id": id, "arrivalDate": "2025-03-19"})).into_response()
}

async fn register(State(recorded): State<Arc<Mutex<Recorded>>>, headers: HeaderMap, body: String) -> Response {
    record(&recorded, format!("POST /webhooks {body}"), &headers);
    (StatusCode::CREATED, axum::Json(json!({"id": "wh-1"}))).into_response()
}

async fn unregister(State(recorded): State<Arc<Mutex<Recorded>>>, Path(id): Path<String>, headers: HeaderMap) -> StatusCode {
    record(&recorded, format!("DELETE /webhooks/{id}"), &headers);
    StatusCode::NO_CONTENT
}
