//! Small HTTP glue shared by the public listener and the admin API: the one error shape, JSON
//! answers, and serving a router until shutdown with the limits that keep slow or idle clients
//! from exhausting the daemon.
//!
//! Every error either server answers is `{"error": {"code", "message"}}` with a status code, built
//! by [`ApiError`]: handlers return typed errors and convert them here, and [`serve`] rewrites the
//! few error answers that do not come from a handler (the router's 405, axum's extractor
//! rejections, a panicking handler) into the same shape. Only malformed HTTP that hyper refuses
//! before any routing (a broken request line or header, headers over hyper's size limit) gets a
//! bare status line.
//!
//! [`serve`] is a small accept loop around hyper's HTTP/1 connection: each server has its own cap
//! on open connections (a semaphore; at the cap it stops accepting and new connections wait in
//! the kernel's accept queue, see [`ServeLimits::max_connections`]), and each connection has a
//! header timeout, a whole-body timeout (408 `request_timeout`) and an idle timeout.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;

use crate::config::Settings;

pub mod destination;

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

/// The limits one server applies to its connections.
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    /// The server's name in logs (`webhooks`, `admin`).
    pub name: &'static str,
    /// A complete request head must arrive within this time of the connection's opening or of the
    /// end of the previous answer; otherwise the connection is closed.
    pub header_timeout: Duration,
    /// A request body must arrive in full within this time of its head; otherwise 408
    /// `request_timeout` and the connection is closed.
    pub body_timeout: Duration,
    /// A connection on which no byte moves for this long, while no handler works on one of its
    /// requests, is closed.
    pub idle_timeout: Duration,
    /// Connections served at once. At the cap the server stops accepting: new connections wait in
    /// the kernel's accept queue (they are not refused) and are served as soon as one closes, which
    /// the timeouts above guarantee happens. Waiting rather than closing keeps a burst of honest
    /// PMS deliveries from being turned into errors, and keeps the descriptors the waiting
    /// connections would take out of the process.
    pub max_connections: usize,
    /// At shutdown, how long in-flight requests may take before their connections are closed.
    pub shutdown_timeout: Duration,
}

impl ServeLimits {
    /// The public listener's limits.
    pub fn public(settings: &Settings) -> Self {
        Self { name: "webhooks", max_connections: settings.max_connections, ..Self::admin(settings) }
    }

    /// The admin API's limits: the same timeouts, its own connection cap.
    pub fn admin(settings: &Settings) -> Self {
        Self {
            name: "admin",
            header_timeout: settings.header_timeout,
            body_timeout: settings.body_timeout,
            idle_timeout: settings.idle_timeout,
            max_connections: settings.admin_max_connections,
            shutdown_timeout: settings.shutdown_timeout,
        }
    }
}

/// Where a server is in its life; connections watch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Serving,
    /// Finish the request in hand, then close.
    Draining,
    /// Close now.
    Closing,
}

/// How often at most the "connection cap reached" warning is logged, per server.
const CAP_WARNING_INTERVAL: Duration = Duration::from_secs(60);

/// Serve `router` on `listener` until `shutdown` resolves, within `limits`. At shutdown the
/// listener is closed, in-flight requests finish (kept-alive connections close after their
/// current request), and connections still open after `limits.shutdown_timeout` are closed.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    limits: ServeLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let total_permits = u32::try_from(limits.max_connections)
        .ok()
        .filter(|&n| n > 0 && usize::try_from(n).is_ok_and(|n| n <= Semaphore::MAX_PERMITS))
        .ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("max_connections {} is out of range", limits.max_connections))
        })?;
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let (phase, phase_watch) = watch::channel(Phase::Serving);
    let service = TowerToHyperService::new(router);
    let mut shutdown = pin!(shutdown);
    let mut cap_warned_at: Option<Instant> = None;
    loop {
        let permit = match permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if cap_warned_at.is_none_or(|at| at.elapsed() >= CAP_WARNING_INTERVAL) {
                    tracing::warn!(
                        server = limits.name,
                        max_connections = limits.max_connections,
                        "connection cap reached: new connections wait until one closes"
                    );
                    cap_warned_at = Some(Instant::now());
                }
                tokio::select! {
                    biased;
                    () = &mut shutdown => break,
                    permit = permits.clone().acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => break,
                    },
                }
            }
        };
        let stream = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _remote)) => stream,
                Err(error) if is_connection_error(&error) => continue,
                Err(error) => {
                    // Out of descriptors or memory: wait a moment instead of spinning.
                    tracing::warn!(server = limits.name, %error, "accepting a connection failed");
                    tokio::select! {
                        () = &mut shutdown => break,
                        () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            },
        };
        let connection = Connection { service: service.clone(), limits, activity: Arc::new(Activity::new()) };
        let phase_watch = phase_watch.clone();
        tokio::spawn(async move {
            connection.run(stream, phase_watch).await;
            drop(permit);
        });
    }
    drop(listener);
    let _ = phase.send(Phase::Draining);
    if tokio::time::timeout(limits.shutdown_timeout, permits.acquire_many(total_permits)).await.is_err() {
        let n_open = limits.max_connections.saturating_sub(permits.available_permits());
        tracing::warn!(server = limits.name, n_open, "connections still busy after the shutdown timeout are closed");
        let _ = phase.send(Phase::Closing);
        let _ = tokio::time::timeout(Duration::from_secs(1), permits.acquire_many(total_permits)).await;
    }
    Ok(())
}

fn is_connection_error(error: &io::Error) -> bool {
    matches!(error.kind(), io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset)
}

/// When a connection last moved a byte, and how many of its requests are in a handler.
struct Activity {
    opened: Instant,
    last_ms: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    fn new() -> Self {
        Self { opened: Instant::now(), last_ms: AtomicU64::new(0), in_flight: AtomicUsize::new(0) }
    }

    fn touch(&self) {
        let elapsed_ms = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(elapsed_ms, Ordering::Relaxed);
    }

    /// When the connection counts as idle if nothing happens until then.
    fn idle_at(&self, idle_timeout: Duration) -> Instant {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return Instant::now() + idle_timeout;
        }
        self.opened + Duration::from_millis(self.last_ms.load(Ordering::Relaxed)) + idle_timeout
    }
}

/// Counts a request as in a handler while alive.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn enter(activity: &Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        Self(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A TCP stream that records when a byte moves.
struct Tracked {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Tracked {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(poll, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        poll
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.stream).poll_write(cx, buf);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        poll
    }

    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// One accepted connection: hyper's HTTP/1 state machine plus the idle timeout and shutdown.
struct Connection {
    service: TowerToHyperService<axum::Router>,
    limits: ServeLimits,
    activity: Arc<Activity>,
}

impl Connection {
    async fn run(self, stream: TcpStream, mut phase: watch::Receiver<Phase>) {
        let io = TokioIo::new(Tracked { stream, activity: self.activity.clone() });
        let handler = Handler { service: self.service, body_timeout: self.limits.body_timeout, activity: self.activity.clone() };
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder.timer(TokioTimer::new()).header_read_timeout(self.limits.header_timeout).keep_alive(true);
        let mut connection = pin!(builder.serve_connection(io, handler));
        let mut draining = false;
        loop {
            let idle_at = self.activity.idle_at(self.limits.idle_timeout);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!(server = self.limits.name, %error, "connection ended with an error");
                    }
                    return;
                }
                changed = phase.changed() => {
                    let now = match changed {
                        Ok(()) => *phase.borrow_and_update(),
                        Err(_) => Phase::Closing,
                    };
                    match now {
                        Phase::Serving => {}
                        Phase::Draining if !draining => {
                            draining = true;
                            connection.as_mut().graceful_shutdown();
                        }
                        Phase::Draining => {}
                        Phase::Closing => return,
                    }
                }
                () = tokio::time::sleep_until(idle_at) => {
                    if self.activity.idle_at(self.limits.idle_timeout) <= Instant::now() {
                        tracing::debug!(server = self.limits.name, "closing an idle connection");
                        return;
                    }
                }
            }
        }
    }
}

/// Calls the router for one request: body timeout, JSON errors, panics answered as 500.
#[derive(Clone)]
struct Handler {
    service: TowerToHyperService<axum::Router>,
    body_timeout: Duration,
    activity: Arc<Activity>,
}

impl hyper::service::Service<Request<Incoming>> for Handler {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let in_flight = InFlight::enter(&self.activity);
        let method = request.method().clone();
        let (parts, body) = request.into_parts();
        let received = Arc::new(AtomicBool::new(body.is_end_stream()));
        let body = Body::new(Watched { inner: body, received: received.clone() });
        let answer = hyper::service::Service::call(&self.service, Request::from_parts(parts, body));
        let body_timeout = self.body_timeout;
        Box::pin(async move {
            let _in_flight = in_flight;
            let mut answer = CatchPanic(Box::pin(answer));
            let early = tokio::select! {
                answer = &mut answer => Some(answer),
                () = tokio::time::sleep(body_timeout) => None,
            };
            let answer = match early {
                Some(answer) => answer,
                // The body is in; the handler may be waiting for the disk: let it finish.
                None if received.load(Ordering::Acquire) => answer.await,
                None => return Ok(request_timeout(body_timeout)),
            };
            let response = match answer {
                Ok(Ok(response)) => response,
                Ok(Err(never)) => match never {},
                Err(()) => ApiError::internal("a request handler panicked").into_response(),
            };
            Ok(json_error(response, &method).await)
        })
    }
}

/// 408 for a body that did not arrive in time; the connection is closed after it.
fn request_timeout(body_timeout: Duration) -> Response {
    let message = format!("the request body did not arrive within {} ms", body_timeout.as_millis());
    let mut response = ApiError::new(StatusCode::REQUEST_TIMEOUT, "request_timeout", message).into_response();
    response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// A request body that records when it has arrived in full.
struct Watched {
    inner: Incoming,
    received: Arc<AtomicBool>,
}

impl hyper::body::Body for Watched {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let poll = Pin::new(&mut self.inner).poll_frame(cx);
        let finished = match &poll {
            Poll::Ready(None) => true,
            Poll::Ready(Some(Ok(_))) => self.inner.is_end_stream(),
            _ => false,
        };
        if finished {
            self.received.store(true, Ordering::Release);
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A future whose panic becomes `Err(())` (so the client gets a 500, not a dropped connection).
struct CatchPanic<F>(F);

impl<F: Future + Unpin> Future for CatchPanic<F> {
    type Output = Result<F::Output, ()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = Pin::new(&mut self.0);
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(_) => Poll::Ready(Err(())),
        }
    }
}

/// Longest text of a non-JSON error answer carried over into its JSON message.
const MAX_ERROR_TEXT_BYTES: usize = 4096;

/// An error answer that is not JSON (the router's 405, an extractor's rejection) rewritten as
/// `{"error": {"code", "message"}}` with the same status and headers; other answers unchanged.
async fn json_error(response: Response, method: &Method) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.split(';').next().unwrap_or_default().trim().eq_ignore_ascii_case("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = match axum::body::to_bytes(body, MAX_ERROR_TEXT_BYTES).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_string(),
        Err(_) => String::new(),
    };
    let code = error_code(status, &text);
    let message = match (status, text.is_empty()) {
        (StatusCode::METHOD_NOT_ALLOWED, _) => format!("{method} is not allowed on this route (see the Allow header)"),
        (_, false) => text,
        (_, true) => status.canonical_reason().unwrap_or("error").to_string(),
    };
    parts.headers.remove(header::CONTENT_TYPE);
    parts.headers.remove(header::CONTENT_LENGTH);
    let mut rewritten = ApiError::new(status, code, message).into_response();
    rewritten.headers_mut().extend(parts.headers);
    rewritten
}

/// The error code of a status (and of axum's rejection texts where they say more).
fn error_code(status: StatusCode, text: &str) -> &'static str {
    if status == StatusCode::BAD_REQUEST {
        if text.starts_with("Failed to deserialize query string") {
            return "invalid_query";
        }
        if text.starts_with("Invalid URL") || text.starts_with("Wrong number of path arguments") {
            return "invalid_path";
        }
    }
    match status.as_u16() {
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        406 => "not_acceptable",
        408 => "request_timeout",
        409 => "conflict",
        411 => "length_required",
        413 => "payload_too_large",
        414 => "uri_too_long",
        415 => "unsupported_media_type",
        422 => "invalid_field",
        429 => "too_many_requests",
        431 => "headers_too_large",
        503 => "service_unavailable",
        500..=599 => "internal",
        _ => "bad_request",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn rewrite(response: Response) -> (StatusCode, Option<String>, serde_json::Value) {
        let response = json_error(response, &Method::DELETE).await;
        let status = response.status();
        let allow = response.headers().get(header::ALLOW).map(|value| value.to_str().unwrap().to_string());
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        (status, allow, serde_json::from_slice(&bytes).unwrap_or_default())
    }

    #[tokio::test]
    async fn plain_errors_become_json_and_keep_their_headers() {
        let plain = (StatusCode::METHOD_NOT_ALLOWED, [(header::ALLOW, "GET,HEAD")], "").into_response();
        let (status, allow, body) = rewrite(plain).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(allow.as_deref(), Some("GET,HEAD"));
        assert_eq!(body["error"]["code"], "method_not_allowed");
        assert!(body["error"]["message"].as_str().unwrap().contains("DELETE"), "{body}");

        let rejection = (StatusCode::BAD_REQUEST, "Failed to deserialize query string: invalid digit").into_response();
        let (_, _, body) = rewrite(rejection).await;
        assert_eq!(body["error"]["code"], "invalid_query");
        assert_eq!(body["error"]["message"], "Failed to deserialize query string: invalid digit");

        let (_, _, body) = rewrite(StatusCode::PAYLOAD_TOO_LARGE.into_response()).await;
        assert_eq!(body["error"]["code"], "payload_too_large");
        assert_eq!(body["error"]["message"], "Payload Too Large");
    }

    #[tokio::test]
    async fn json_errors_and_successes_are_left_alone() {
        let (_, _, body) = rewrite(ApiError::not_found("unknown_account", "no such account").into_response()).await;
        assert_eq!(body["error"]["code"], "unknown_account");
        let ok = json_error((StatusCode::OK, "plain text").into_response(), &Method::GET).await;
        let bytes = axum::body::to_bytes(ok.into_body(), usize::MAX).await.unwrap();
        assert_eq!(&bytes[..], b"plain text");
    }

    #[tokio::test]
    async fn a_panicking_future_is_caught() {
        let caught = CatchPanic(Box::pin(async {
            if std::hint::black_box(true) {
                panic!("boom");
            }
        }))
        .await;
        assert!(caught.is_err());
    }
}
