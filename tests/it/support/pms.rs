//! A real HTTP server playing a PMS's API for enrichment tests (the chaos plugin's API): an OAuth2
//! token endpoint, reservations that answer, rate-limit, or stay down, webhook registration, and
//! the list the chaos plugin's `sync` reads (`GET /reservations?page=&updatedSince=`: recorded
//! pages, which can be held, throttled once with 429, or down). Every request is recorded (list
//! requests apart, in `list_calls`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::extract::{Path, Query, State};
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
    listing: Listing,
}

/// What `GET /reservations` answers.
#[derive(Default)]
struct Listing {
    /// Page n (from 1) is `pages[n - 1]`; an empty list when there are none.
    pages: Vec<Vec<serde_json::Value>>,
    /// Pages from this one on wait until `release_list` (0: none held).
    hold_from: usize,
    /// The next this many list requests answer 429 with `Retry-After: 1`.
    n_throttled: usize,
    /// Every list request answers 503.
    down: bool,
    /// (page, when) of every list request.
    calls: Vec<(usize, Instant)>,
    released: Arc<tokio::sync::Notify>,
}

/// One list request: the page it asked for and when.
#[derive(Debug, Clone, Copy)]
pub struct ListCall {
    /// The `page` query parameter.
    pub page: usize,
    /// When it arrived.
    pub at: Instant,
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
            .route("/reservations", get(list))
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

    /// Serve these pages from `GET /reservations` (items `{"id", "arrivalDate", "updatedAt"?,
    /// "cancelled"?}`).
    pub fn set_pages(&self, pages: Vec<Vec<serde_json::Value>>) {
        self.recorded.lock().unwrap().listing.pages = pages;
    }

    /// Hold list requests for pages `from` and later until [`FakePms::release_list`].
    pub fn hold_list_from(&self, from: usize) {
        self.recorded.lock().unwrap().listing.hold_from = from;
    }

    /// Answer held list requests and hold no more.
    pub fn release_list(&self) {
        let mut recorded = self.recorded.lock().unwrap();
        recorded.listing.hold_from = 0;
        recorded.listing.released.notify_waiters();
    }

    /// Answer the next `n` list requests 429 with `Retry-After: 1`.
    pub fn throttle_list(&self, n: usize) {
        self.recorded.lock().unwrap().listing.n_throttled = n;
    }

    /// Answer every list request 503 (or stop doing so).
    pub fn list_down(&self, down: bool) {
        self.recorded.lock().unwrap().listing.down = down;
    }

    /// The list requests so far, in order.
    pub fn list_calls(&self) -> Vec<ListCall> {
        self.recorded.lock().unwrap().listing.calls.iter().map(|(page, at)| ListCall { page: *page, at: *at }).collect()
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

async fn list(State(recorded): State<Arc<Mutex<Recorded>>>, Query(query): Query<HashMap<String, String>>, headers: HeaderMap) -> Response {
    let authorized =
        headers.get("authorization").and_then(|value| value.to_str().ok()).is_some_and(|value| value.starts_with("Bearer token-"));
    if !authorized {
        return (StatusCode::UNAUTHORIZED, axum::Json(json!({"error": "unauthorized"}))).into_response();
    }
    let page: usize = query.get("page").and_then(|page| page.parse().ok()).unwrap_or(1);
    let held = {
        let mut recorded = recorded.lock().unwrap();
        let listing = &mut recorded.listing;
        listing.calls.push((page, Instant::now()));
        if listing.down {
            return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(json!({"error": "maintenance"}))).into_response();
        }
        if listing.n_throttled > 0 {
            listing.n_throttled -= 1;
            return (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")], axum::Json(json!({"error": "rate limited"}))).into_response();
        }
        (listing.hold_from > 0 && page >= listing.hold_from).then(|| listing.released.clone())
    };
    if let Some(released) = held {
        let notified = released.notified();
        // Released between the check and here: go on.
        if recorded.lock().unwrap().listing.hold_from != 0 {
            notified.await;
        }
    }
    let recorded = recorded.lock().unwrap();
    let pages = &recorded.listing.pages;
    let items = pages.get(page.wrapping_sub(1)).cloned().unwrap_or_default();
    let next = (page < pages.len()).then_some(page + 1);
    axum::Json(json!({"reservations": items, "nextPage": next})).into_response()
}

async fn register(State(recorded): State<Arc<Mutex<Recorded>>>, headers: HeaderMap, body: String) -> Response {
    record(&recorded, format!("POST /webhooks {body}"), &headers);
    (StatusCode::CREATED, axum::Json(json!({"id": "wh-1"}))).into_response()
}

async fn unregister(State(recorded): State<Arc<Mutex<Recorded>>>, Path(id): Path<String>, headers: HeaderMap) -> StatusCode {
    record(&recorded, format!("DELETE /webhooks/{id}"), &headers);
    StatusCode::NO_CONTENT
}
