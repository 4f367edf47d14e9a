//! A real HTTP server that plays the operator's endpoint and records what it gets.

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::Value;
use tokio::sync::{Mutex, mpsc};

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    /// Request headers.
    pub headers: HeaderMap,
    /// The raw body.
    pub body: Bytes,
    /// The status the receiver answered.
    pub answered: u16,
}

impl Received {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("delivered body is JSON")
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> String {
        self.headers.get(name).map(|value| value.to_str().unwrap().to_string()).unwrap_or_default()
    }
}

struct Behaviour {
    n_failures_left: AtomicUsize,
    failure_status: AtomicU16,
    answer_delay_ms: AtomicU64,
    sender: mpsc::UnboundedSender<Received>,
}

/// The receiver: `url` takes POSTs; `next` awaits the next one.
pub struct Receiver {
    /// Where to point a subscription.
    pub url: String,
    behaviour: Arc<Behaviour>,
    requests: Mutex<mpsc::UnboundedReceiver<Received>>,
    server: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// A receiver that answers 200.
    pub async fn start() -> Receiver {
        Self::failing_first(0).await
    }

    /// A receiver that answers 500 to the first `n` requests, then 200.
    pub async fn failing_first(n_failures: usize) -> Receiver {
        let (sender, requests) = mpsc::unbounded_channel();
        let behaviour = Arc::new(Behaviour {
            n_failures_left: AtomicUsize::new(n_failures),
            failure_status: AtomicU16::new(500),
            answer_delay_ms: AtomicU64::new(0),
            sender,
        });
        let router = Router::new().route("/hook", post(receive)).with_state(behaviour.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        Receiver { url, behaviour, requests: Mutex::new(requests), server }
    }

    /// Fail the next `n` requests (with 500, or the status set by `fail_with`).
    pub fn fail_next(&self, n: usize) {
        self.behaviour.n_failures_left.store(n, Ordering::SeqCst);
    }

    /// Answer failed requests with `status` (an outage: 503) instead of 500.
    pub fn fail_with(&self, status: u16) {
        self.behaviour.failure_status.store(status, Ordering::SeqCst);
    }

    /// Take each request at once (`next` sees it) but answer it only after `delay`.
    pub fn delay_answers(&self, delay: Duration) {
        self.behaviour.answer_delay_ms.store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// The next request, waiting at most `timeout`.
    pub async fn next_within(&self, timeout: Duration) -> Option<Received> {
        tokio::time::timeout(timeout, self.requests.lock().await.recv()).await.ok().flatten()
    }

    /// The next request (30 s at most, then the test fails).
    pub async fn next(&self) -> Received {
        self.next_within(Duration::from_secs(30)).await.expect("no delivery arrived within 30 s")
    }

    /// The next request answered 2xx, skipping failed ones.
    pub async fn next_success(&self) -> Received {
        loop {
            let received = self.next().await;
            if received.answered < 300 {
                return received;
            }
        }
    }

    /// Assert nothing arrives within `wait`.
    pub async fn expect_nothing(&self, wait: Duration) {
        if let Some(received) = self.next_within(wait).await {
            panic!("unexpected delivery: {}", String::from_utf8_lossy(&received.body));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn receive(State(behaviour): State<Arc<Behaviour>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let fail = behaviour.n_failures_left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| left.checked_sub(1)).is_ok();
    let status = if fail { StatusCode::from_u16(behaviour.failure_status.load(Ordering::SeqCst)).unwrap() } else { StatusCode::OK };
    let _ = behaviour.sender.send(Received { headers, body, answered: status.as_u16() });
    let delay_ms = behaviour.answer_delay_ms.load(Ordering::SeqCst);
    if delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
    }
    status
}
