//! Console sessions: `POST /v1/session` trades the admin token for an HttpOnly, SameSite=Strict
//! cookie (Secure when the request came over https through a proxy that says so), `GET
//! /v1/session` answers the session's CSRF token, `DELETE /v1/session` signs out.
//!
//! Cross-site protection (synchronizer token): a request authenticated by the cookie that changes
//! anything (any method but GET, HEAD, OPTIONS) must carry `X-Stayhook-Csrf` equal to its
//! session's token, and must not say `Sec-Fetch-Site: cross-site` / `same-site`. A cross-site HTML
//! form cannot set a header, and a cross-site script cannot set it without a CORS preflight the
//! daemon never grants, nor read the token (no CORS answer). SameSite=Strict already keeps the
//! cookie off cross-site requests in current browsers; the token covers older ones and sibling
//! subdomains (same-site but not same-origin). Requests with the bearer token need no token: a
//! browser never adds an `Authorization` header on its own.
//!
//! Sessions live in memory: a restart signs everyone out. The cookie holds 32 random bytes; the
//! map is keyed by their SHA-256, so a lookup never compares the secret itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::ApiContext;
use super::JsonBody;
use crate::http::ApiError;

/// The session cookie's name.
pub const COOKIE: &str = "stayhook_session";
/// The header that carries the session's CSRF token on state-changing requests.
pub const CSRF_HEADER: &str = "x-stayhook-csrf";
/// How long a session lasts without being used.
const IDLE: Duration = Duration::from_secs(12 * 3600);
/// Most sessions kept at once (the oldest go first beyond).
const MAX_SESSIONS: usize = 1024;

struct Session {
    csrf: String,
    last_used: Instant,
}

/// The signed-in browsers.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<[u8; 32], Session>>,
}

/// What authenticated a request.
enum Caller {
    Bearer,
    Session { csrf: String },
}

impl Sessions {
    fn open(&self) -> (String, String) {
        let id = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
        let csrf = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 24]>());
        let mut map = self.map.lock().expect("sessions lock poisoned");
        let now = Instant::now();
        map.retain(|_, session| now.duration_since(session.last_used) < IDLE);
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map.iter().min_by_key(|(_, session)| session.last_used).map(|(key, _)| *key)
        {
            map.remove(&oldest);
        }
        map.insert(digest(&id), Session { csrf: csrf.clone(), last_used: now });
        (id, csrf)
    }

    fn find(&self, id: &str) -> Option<String> {
        let mut map = self.map.lock().expect("sessions lock poisoned");
        let key = digest(id);
        let now = Instant::now();
        match map.get_mut(&key) {
            Some(session) if now.duration_since(session.last_used) < IDLE => {
                session.last_used = now;
                Some(session.csrf.clone())
            }
            Some(_) => {
                map.remove(&key);
                None
            }
            None => None,
        }
    }

    fn close(&self, id: &str) {
        self.map.lock().expect("sessions lock poisoned").remove(&digest(id));
    }
}

fn digest(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

/// The session cookie's value, if the request has one.
fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

fn bearer_ok(daemon: &ApiContext, headers: &HeaderMap) -> bool {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .unwrap_or_default()
        .trim();
    token_matches(daemon, presented)
}

fn token_matches(daemon: &ApiContext, presented: &str) -> bool {
    let expected = daemon.admin_token.as_bytes();
    presented.len() == expected.len() && bool::from(presented.as_bytes().ct_eq(expected))
}

fn caller(daemon: &ApiContext, sessions: &Sessions, headers: &HeaderMap) -> Result<Caller, ApiError> {
    if bearer_ok(daemon, headers) {
        return Ok(Caller::Bearer);
    }
    if let Some(csrf) = cookie(headers).and_then(|id| sessions.find(id)) {
        return Ok(Caller::Session { csrf });
    }
    Err(ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "missing or wrong bearer token (or no console session: sign in)"))
}

/// Refuse a cookie-authenticated state-changing request without the session's CSRF token, or one
/// a browser marks as cross-site.
fn check_csrf(method: &Method, headers: &HeaderMap, csrf: &str) -> Result<(), ApiError> {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    let refused = |message: &str| ApiError::new(StatusCode::FORBIDDEN, "csrf_refused", message.to_string());
    if let Some(site) = headers.get("sec-fetch-site").and_then(|value| value.to_str().ok())
        && (site == "cross-site" || site == "same-site")
    {
        return Err(refused("cross-site request refused"));
    }
    let presented = headers.get(CSRF_HEADER).and_then(|value| value.to_str().ok()).unwrap_or_default();
    if presented.len() != csrf.len() || !bool::from(presented.as_bytes().ct_eq(csrf.as_bytes())) {
        return Err(refused("missing or wrong X-Stayhook-Csrf header (the console sends the session's token)"));
    }
    Ok(())
}

/// The admin API's gate: the bearer token, or a console session (with its CSRF token when the
/// request changes anything).
pub(super) async fn require_auth(
    State((daemon, sessions)): State<(Arc<ApiContext>, Arc<Sessions>)>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    match caller(&daemon, &sessions, request.headers())? {
        Caller::Bearer => {}
        Caller::Session { csrf } => check_csrf(request.method(), request.headers(), &csrf)?,
    }
    Ok(next.run(request).await)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignIn {
    token: String,
}

/// `/v1/session`: sign in (public), the current session, sign out.
pub(super) fn routes(daemon: Arc<ApiContext>, sessions: Arc<Sessions>) -> Router {
    Router::new().route("/v1/session", post(sign_in).get(current).delete(sign_out)).with_state((daemon, sessions))
}

async fn sign_in(
    State((daemon, sessions)): State<(Arc<ApiContext>, Arc<Sessions>)>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<SignIn>,
) -> Result<Response, ApiError> {
    if !token_matches(&daemon, body.token.trim()) {
        tracing::info!("console sign-in refused: wrong admin token");
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, "wrong_token", "that is not the admin token"));
    }
    let (id, csrf) = sessions.open();
    let secure = if over_https(&headers) { "; Secure" } else { "" };
    let cookie = format!("{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}", IDLE.as_secs());
    let mut response = (StatusCode::CREATED, Json(json!({"csrfToken": csrf}))).into_response();
    response.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&cookie).map_err(ApiError::internal)?);
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

async fn current(State((daemon, sessions)): State<(Arc<ApiContext>, Arc<Sessions>)>, headers: HeaderMap) -> Result<Response, ApiError> {
    match caller(&daemon, &sessions, &headers)? {
        Caller::Bearer => Ok(Json(json!({"via": "bearer", "csrfToken": null})).into_response()),
        Caller::Session { csrf } => {
            let mut response = Json(json!({"via": "session", "csrfToken": csrf})).into_response();
            response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            Ok(response)
        }
    }
}

async fn sign_out(
    State((daemon, sessions)): State<(Arc<ApiContext>, Arc<Sessions>)>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if let Caller::Session { csrf } = caller(&daemon, &sessions, &headers)? {
        check_csrf(&method, &headers, &csrf)?;
        if let Some(id) = cookie(&headers) {
            sessions.close(id);
        }
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")).map_err(ApiError::internal)?,
    );
    Ok(response)
}

/// Whether a TLS-terminating proxy in front says the browser used https.
fn over_https(headers: &HeaderMap) -> bool {
    let forwarded_proto =
        headers.get("x-forwarded-proto").and_then(|value| value.to_str().ok()).is_some_and(|value| value.eq_ignore_ascii_case("https"));
    let forwarded = headers
        .get(header::FORWARDED)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.to_ascii_lowercase().contains("proto=https"));
    forwarded_proto || forwarded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_static("a=1; stayhook_session=abc; b=2"));
        assert_eq!(cookie(&headers), Some("abc"));
    }

    #[test]
    fn state_changing_requests_need_the_token_and_not_cross_site() {
        let mut headers = HeaderMap::new();
        assert!(check_csrf(&Method::GET, &headers, "t").is_ok());
        assert!(check_csrf(&Method::POST, &headers, "t").is_err());
        headers.insert(CSRF_HEADER, HeaderValue::from_static("t"));
        assert!(check_csrf(&Method::POST, &headers, "t").is_ok());
        headers.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(check_csrf(&Method::DELETE, &headers, "t").is_err());
    }

    #[test]
    fn a_closed_session_is_gone() {
        let sessions = Sessions::default();
        let (id, csrf) = sessions.open();
        assert_eq!(sessions.find(&id), Some(csrf));
        sessions.close(&id);
        assert_eq!(sessions.find(&id), None);
    }
}
