//! The public listener: `/listen/{accountId}` takes a PMS's webhook, checks it, and stores it
//! durably before answering 2xx.
//!
//! It owns no threads of its own; it runs on the tokio runtime and hands stored entries to the
//! normalizer by id. It never calls a plugin (the plugin's declared verification scheme is read
//! from the registry, the check itself is the host's). Invariant: nothing is acknowledged before
//! the store says it is durable, and neither is a copy of it: the store checks and records the
//! digest with the entry ([`crate::store::Inbox::append_inbox`]), so a retry racing its original
//! is answered `duplicate` only once the original is durable. A request that fails before that
//! gets an error and the PMS retries.
//!
//! Duplicate suppression covers what the signature covers ([`replay_digest`]): for a signed
//! account the body (and the Standard Webhooks message id), so a signed body replayed with another
//! query string is still a duplicate; for an unsigned one everything the plugin sees.
//!
//! Errors, each with `{"error": {"code", "message"}}`: 404 `unknown_account`, 413
//! `payload_too_large`, 401 `verification_failed`, 400 `invalid_json` (a body declared as JSON
//! that does not parse), 429 `rate_limited` (per-account limits, with `Retry-After`), 503
//! `storage_unavailable` (with `Retry-After`).

mod sns;
pub mod verify;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::config::Settings;
use crate::health::Health;
use crate::http::ApiError;
use crate::metrics::Metrics;
use crate::plugin::PluginRegistry;
use crate::plugin::bindings::stayhook::plugin::types::VerificationScheme;
use crate::store::{Account, Appended, Dedup, InboxEntry, Store};

/// Headers never handed to a plugin: they carry credentials.
const WITHHELD_HEADERS: &[&str] = &["authorization", "proxy-authorization", "cookie"];

/// What the listener uses. Built by `run` (`src/lib.rs`); a stored webhook goes on to the
/// normalizer through the store's feed: the listener knows nothing of normalization.
pub struct IngestContext {
    /// Storage: accounts, the inbox, duplicate digests.
    pub store: Store,
    /// Loaded plugins (their declared verification scheme; no plugin code runs here).
    pub plugins: Arc<PluginRegistry>,
    /// The settings the listener reads.
    pub settings: IngestSettings,
    /// Counters and histograms.
    pub metrics: Arc<Metrics>,
    /// Per-account limits of the listener.
    pub listener_limits: ListenerLimits,
    /// `/healthz` and `/readyz`.
    pub health: Arc<Health>,
}

/// The part of [`Settings`] the listener reads.
#[derive(Debug, Clone)]
pub struct IngestSettings {
    /// Largest body accepted.
    pub body_limit_bytes: usize,
    /// Where SNS signing certificates may come from.
    pub sns_certificate_hosts: Vec<String>,
    /// How long a body's digest suppresses its duplicates.
    pub dedup_window: Duration,
}

impl From<&Settings> for IngestSettings {
    fn from(settings: &Settings) -> Self {
        Self {
            body_limit_bytes: settings.body_limit_bytes,
            sns_certificate_hosts: settings.sns_certificate_hosts.clone(),
            dedup_window: settings.dedup_window,
        }
    }
}

/// The public router.
pub fn router(ctx: Arc<IngestContext>) -> Router {
    Router::new()
        .route("/listen/{account_id}", any(receive))
        .route("/healthz", any(|State(ctx): State<Arc<IngestContext>>| async move { ctx.health.health() }))
        .route("/readyz", any(|State(ctx): State<Arc<IngestContext>>| async move { ctx.health.readiness() }))
        .fallback(|| async { ApiError::not_found("not_found", "no such route; webhooks go to /listen/{accountId}") })
        .with_state(ctx)
}

/// The listener's address as PMSs reach it: the base of every account's webhook URL.
#[derive(Debug, Clone)]
pub struct ListenerUrls {
    /// Without a trailing slash.
    public_url: String,
}

impl ListenerUrls {
    /// From `public_url` when it is set, else from the address the listener is bound to (with a
    /// warning: PMSs outside this machine cannot reach a loopback address).
    pub fn new(public_url: Option<&str>, bound: std::net::SocketAddr) -> Self {
        let public_url = match public_url {
            Some(url) => url.to_string(),
            None => {
                let host = if bound.ip().is_unspecified() { "127.0.0.1".to_string() } else { bound.ip().to_string() };
                tracing::warn!(
                    "public_url is not set: listener URLs use http://{host}:{}; set STAYHOOK_PUBLIC_URL to the address PMSs reach",
                    bound.port()
                );
                format!("http://{host}:{}", bound.port())
            }
        };
        Self { public_url }
    }

    /// The URL a PMS posts an account's webhooks to.
    pub fn listener_url(&self, account_id: &str) -> String {
        format!("{}/listen/{}", self.public_url, url_segment(account_id))
    }

    /// The listener URL to give the PMS: with the account's token when its plugin (`scheme`)
    /// verifies by a token in the URL (the PMS then sends it back with every webhook).
    pub fn account_listener_url(&self, account: &Account, scheme: Option<&VerificationScheme>) -> String {
        let url = self.listener_url(&account.id);
        match (scheme, account.verification.get("secret")) {
            (Some(VerificationScheme::UrlToken(parameter)), Some(secret)) => {
                let query: String = url::form_urlencoded::Serializer::new(String::new()).append_pair(parameter, secret).finish();
                format!("{url}?{query}")
            }
            _ => url,
        }
    }
}

fn url_segment(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect::<String>().replace('+', "%20")
}

/// Per-account limits of the listener: webhooks per second and body KiB per second.
pub struct ListenerLimits {
    requests: Option<DefaultKeyedRateLimiter<String>>,
    kib: Option<DefaultKeyedRateLimiter<String>>,
    clock: DefaultClock,
}

impl ListenerLimits {
    /// Limits of `requests_per_second` and `kib_per_second` per account, each with a burst of
    /// twice the rate; the byte burst holds at least one body of `body_limit_bytes`.
    pub fn new(requests_per_second: Option<NonZeroU32>, kib_per_second: Option<NonZeroU32>, body_limit_bytes: usize) -> Self {
        let quota = |per_second: NonZeroU32, at_least: u32| {
            let burst = per_second.saturating_mul(NonZeroU32::new(2).unwrap_or(NonZeroU32::MIN));
            Quota::per_second(per_second).allow_burst(burst.max(NonZeroU32::new(at_least).unwrap_or(NonZeroU32::MIN)))
        };
        let body_limit_kib = u32::try_from(body_limit_bytes.div_ceil(1024)).unwrap_or(u32::MAX);
        Self {
            requests: requests_per_second.map(|limit| RateLimiter::keyed(quota(limit, 1))),
            kib: kib_per_second.map(|limit| RateLimiter::keyed(quota(limit, body_limit_kib))),
            clock: DefaultClock::default(),
        }
    }

    /// Take one webhook of `n_bytes` from `account_id`'s allowance, or say how long to wait.
    fn check(&self, account_id: &str, n_bytes: usize) -> Result<(), ApiError> {
        let key = account_id.to_string();
        if let Some(requests) = &self.requests
            && let Err(not_until) = requests.check_key(&key)
        {
            let wait = not_until.wait_time_from(self.clock.now());
            return Err(rate_limited(wait, "webhooks per second"));
        }
        if let Some(kib) = &self.kib {
            let n_kib = NonZeroU32::new(u32::try_from(n_bytes.div_ceil(1024)).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN);
            match kib.check_key_n(&key, n_kib) {
                Ok(Ok(())) => {}
                Ok(Err(not_until)) => return Err(rate_limited(not_until.wait_time_from(self.clock.now()), "body bytes per second")),
                // Larger than the burst: cannot pass even after waiting (bodies are capped below it).
                Err(_) => return Err(rate_limited(Duration::from_secs(1), "body bytes per second")),
            }
        }
        Ok(())
    }
}

fn rate_limited(wait: Duration, what: &str) -> ApiError {
    let retry_after_secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", format!("this account is over its limit of {what}; retry later"))
        .retry_after(retry_after_secs.max(1))
}

async fn receive(
    State(ctx): State<Arc<IngestContext>>,
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
    if let Some(reason) = ctx.store.fault().reason() {
        return Err(ApiError::storage_unavailable(format!("the store failed ({reason}); the ctx is restarting")));
    }
    let account = ctx
        .store
        .get_account(&account_id)?
        .ok_or_else(|| ApiError::not_found("unknown_account", format!("no integration account {account_id:?}")))?;
    let limit = ctx.settings.body_limit_bytes;
    let declared_length = headers.get(header::CONTENT_LENGTH).and_then(|value| value.to_str().ok()?.parse::<usize>().ok());
    if let Some(length) = declared_length.filter(|length| *length > limit) {
        if length <= DRAIN_LIMIT_BYTES {
            drain(body).await;
        }
        return Err(too_large(limit));
    }
    let body = axum::body::to_bytes(body, limit).await.map_err(|_| too_large(limit))?;

    let query = query.unwrap_or_default();
    let query_pairs: Vec<(String, String)> = form_pairs(&query);
    let scheme = ctx.plugins.get(&account.pms).map(|plugin| plugin.info.verification.clone()).unwrap_or(VerificationScheme::None);
    // Amazon SNS: verified with its signing certificate; confirmations are answered here, a
    // notification goes on with its `Message` as the body and the envelope as `x-stayhook-sns-*`.
    let (body, headers) = if matches!(scheme, VerificationScheme::Sns) {
        let topic_arn = account.verification.get("topicArn").map(String::as_str);
        match sns::receive(&body, &ctx.settings.sns_certificate_hosts, topic_arn).await? {
            sns::SnsDelivery::Answered(response) => return Ok(response),
            sns::SnsDelivery::Notification { body, headers: envelope } => {
                let mut merged = headers;
                let forged: Vec<_> = merged.keys().filter(|name| name.as_str().starts_with("x-stayhook-sns-")).cloned().collect();
                for name in forged {
                    merged.remove(name);
                }
                for (name, value) in &envelope {
                    merged.insert(name.clone(), value.clone());
                }
                (body, merged)
            }
        }
    } else {
        (body, headers)
    };
    let header_text = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    if !matches!(scheme, VerificationScheme::Sns) {
        // Scoped: the presented proof borrows a non-Send closure and must not live across an await.
        let presented =
            verify::Presented { header: &header_text, query: &query_pairs, body: &body, now_secs: chrono::Utc::now().timestamp() };
        verify::verify(&scheme, &account.verification, &presented).map_err(|error| {
            ApiError::new(StatusCode::UNAUTHORIZED, "verification_failed", format!("webhook verification failed: {error}"))
        })?;
    }
    let content_type = header_text(header::CONTENT_TYPE.as_str()).map(str::to_string);
    if content_type.as_deref().is_some_and(is_json)
        && let Err(error) = check_json(&body)
    {
        return Err(ApiError::bad_request("invalid_json", format!("the body is declared as JSON but is not: {error}")));
    }
    // After verification, so forged requests never spend a real PMS's allowance.
    ctx.listener_limits.check(&account.id, body.len())?;

    let withheld = verify::scheme_headers(&scheme);
    let plugin_headers: Vec<(String, String)> = headers
        .iter()
        .filter(|(name, _)| !WITHHELD_HEADERS.contains(&name.as_str()) && !withheld.iter().any(|hidden| hidden == name.as_str()))
        .filter_map(|(name, value)| Some((name.as_str().to_string(), value.to_str().ok()?.to_string())))
        .collect();
    let plugin_query = match &scheme {
        VerificationScheme::UrlToken(parameter) => strip_parameter(&query, parameter),
        _ => query.clone(),
    };
    let signed = verify::is_configured(&scheme, &account.verification);
    let digest = replay_digest(&scheme, signed, &method, &plugin_query, &header_text, &body);

    let entry = InboxEntry {
        account_id: account.id.clone(),
        received_at_ms: unix_ms(),
        method: method.as_str().to_string(),
        query: plugin_query,
        content_type,
        headers: plugin_headers,
        body: body.to_vec(),
    };
    // Stored in a task of its own: a client that hangs up must not cut the append between its
    // write and its end (a copy of the webhook waits on that flush, and the store hands the
    // durable entry to the normalizer only at the end of the append).
    let stored = tokio::spawn(store(ctx.clone(), entry, digest)).await.map_err(ApiError::internal)?;
    match stored? {
        Appended::New(inbox_id) => {
            Ok((StatusCode::OK, axum::Json(json!({"status": "accepted", "inboxId": inbox_id.to_string()}))).into_response())
        }
        Appended::Duplicate(original) => {
            let mut body = json!({"status": "duplicate"});
            if let Some(original) = original {
                body["inboxId"] = json!(original.to_string());
            }
            Ok((StatusCode::OK, axum::Json(body)).into_response())
        }
    }
}

/// Append `entry` unless it is a duplicate and wait until it is durable (the store then hands it
/// to the normalizer).
async fn store(ctx: Arc<IngestContext>, entry: InboxEntry, digest: [u8; 32]) -> Result<Appended, ApiError> {
    let window_ms = u64::try_from(ctx.settings.dedup_window.as_millis()).unwrap_or(u64::MAX);
    let appended = ctx.store.append_inbox(&entry, Some(Dedup { digest: &digest, window_ms })).await?;
    if let Appended::New(_) = appended {
        ctx.metrics.accepted(&entry.account_id);
    }
    Ok(appended)
}

/// The digest duplicate suppression compares: what the account's verification covers. For a
/// signed account (HMAC, Standard Webhooks) that is the body and, for Standard Webhooks, the
/// message id: a query string or header the signature does not cover cannot make a replay new.
/// For an unsigned account it is everything the plugin sees (method, query, body): Beds24's
/// classic webhook, for one, carries its ids in the query string.
pub(crate) fn replay_digest<'a>(
    scheme: &VerificationScheme,
    signed: bool,
    method: &Method,
    plugin_query: &str,
    header: &dyn Fn(&str) -> Option<&'a str>,
    body: &[u8],
) -> [u8; 32] {
    let digest = match scheme {
        VerificationScheme::HmacSha256(_) | VerificationScheme::HmacSha1Base64Body(_) if signed => {
            Sha256::new().chain_update(b"hmac\0").chain_update(body)
        }
        // SNS redelivers with the same MessageId; two messages with the same text are two events.
        VerificationScheme::Sns => {
            let message_id = header("x-stayhook-sns-message-id").unwrap_or_default();
            Sha256::new().chain_update(b"sns\0").chain_update(message_id).chain_update([0]).chain_update(body)
        }
        VerificationScheme::StandardWebhooks if signed => {
            let message_id = header("webhook-id").or_else(|| header("svix-id")).unwrap_or_default();
            Sha256::new().chain_update(b"standard-webhooks\0").chain_update(message_id).chain_update([0]).chain_update(body)
        }
        _ => Sha256::new().chain_update(method.as_str()).chain_update([0]).chain_update(plugin_query).chain_update([0]).chain_update(body),
    };
    digest.finalize().into()
}

/// Whether `body` is one JSON value: UTF-8 (also inside strings), nesting within serde_json's
/// limit, numbers in range (`1e999` is refused). Checked as a plugin would parse it, without
/// building the value (this runs for every webhook, before the 2xx).
fn check_json(body: &[u8]) -> Result<(), String> {
    let text = std::str::from_utf8(body).map_err(|error| format!("not UTF-8: {error}"))?;
    serde_json::from_str::<CheckedJson>(text).map(|_| ()).map_err(|error| error.to_string())
}

/// Any JSON value, read and dropped: numbers are parsed (so out-of-range ones are refused, which
/// serde's `IgnoredAny` would let through) and nothing is kept.
struct CheckedJson;

impl<'de> serde::Deserialize<'de> for CheckedJson {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(CheckedJson)
    }
}

impl<'de> serde::de::Visitor<'de> for CheckedJson {
    type Value = CheckedJson;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self, E> {
        Ok(self)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self, E> {
        Ok(self)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self, E> {
        Ok(self)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self, E> {
        Ok(self)
    }

    fn visit_str<E>(self, _: &str) -> Result<Self, E> {
        Ok(self)
    }

    fn visit_unit<E>(self) -> Result<Self, E> {
        Ok(self)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut items: A) -> Result<Self, A::Error> {
        while items.next_element::<CheckedJson>()?.is_some() {}
        Ok(self)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut entries: A) -> Result<Self, A::Error> {
        while entries.next_entry::<CheckedJson, CheckedJson>()?.is_some() {}
        Ok(self)
    }
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", format!("the body is larger than {limit} bytes"))
}

/// An over-limit body up to this size is read and discarded before the 413 is sent: a server
/// that answers and closes while the client is still sending resets the connection, and the
/// client (the PMS) then sees a broken pipe instead of the answer. Larger ones are answered at
/// once. The server's body timeout bounds the time a drain takes, its connection cap how many run.
const DRAIN_LIMIT_BYTES: usize = 16 << 20;

/// Read `body` to its end (or its first error), keeping none of it.
async fn drain(body: Body) {
    use http_body_util::BodyExt;
    let mut body = body;
    while let Some(Ok(_)) = body.frame().await {}
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

/// Unix time in milliseconds (kept at this path for the api's callers; it lives in the model).
pub(crate) use crate::model::time::unix_ms;

#[cfg(test)]
mod tests {
    use super::*;

    /// The check accepts exactly what parsing into a value accepts.
    #[test]
    fn checking_json_agrees_with_parsing_it() {
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let cases: Vec<&[u8]> = vec![
            br#"{"a": [1, -2, 3.5, true, null, "x\u00e9\n"], "b": {"c": {}}}"#,
            b"1e999",
            br#"{"n": [1e400]}"#,
            br#"{"a": 1,}"#,
            br#"{"\ud800": 1}"#,
            br#"["\ud800"]"#,
            b"{\"a\": \"\xff\"}",
            b"[1] [2]",
            b"",
            b"  \"text\"  ",
            b"18446744073709551616",
            deep.as_bytes(),
        ];
        for body in cases {
            let parsed = std::str::from_utf8(body).ok().map(|text| serde_json::from_str::<serde_json::Value>(text).is_ok());
            assert_eq!(check_json(body).is_ok(), parsed == Some(true), "{}", String::from_utf8_lossy(body));
        }
    }
}
