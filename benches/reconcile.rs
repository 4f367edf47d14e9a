//! The cost of a reconciliation pass over unchanged reservations (issue 13): the real daemon, the
//! chaos test plugin's `sync` (mode modified-since) and a local list server serving
//! `RECONCILE_RECORDS` (10,000) reservations in pages of `RECONCILE_PAGE` (100).
//!
//! ```sh
//! cargo bench --bench reconcile
//! RECONCILE_RECORDS=50000 RECONCILE_PAGE=500 cargo bench --bench reconcile
//! RECONCILE_RATE=1000 cargo bench --bench reconcile   # the account's rateLimitPerSecond
//! ```
//!
//! By default the account has the daemon's default API rate (5 calls per second, of which listing
//! takes at most half): a pass then takes about `pages / 2.5` seconds whatever the machine, the
//! budget by design. `RECONCILE_RATE` raises the account's rate to see the daemon's own cost.
//!
//! It creates the account (its initial sync stores the records, delivers nothing), subscribes a
//! counting receiver, then runs `RECONCILE_PASSES` (3) reconciliation passes of the same,
//! unchanged list, and prints per pass its time (`finishedAt - startedAt` as the daemon reports
//! it), the list requests the server got and the events delivered (expected: zero). Everything
//! stays on 127.0.0.1 and is bounded in time.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Query, State};
use axum::routing::{get, post};
use serde_json::{Value, json};

const TOKEN: &str = "bench-token";

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|value| value.parse().ok()).unwrap_or(default)
}

struct ListServer {
    n_records: usize,
    page_size: usize,
    n_list_calls: AtomicU64,
}

async fn list(State(server): State<Arc<ListServer>>, Query(query): Query<HashMap<String, String>>) -> axum::Json<Value> {
    server.n_list_calls.fetch_add(1, Ordering::SeqCst);
    let page: usize = query.get("page").and_then(|page| page.parse().ok()).unwrap_or(1).max(1);
    let first = (page - 1) * server.page_size;
    let items: Vec<Value> = (first..(first + server.page_size).min(server.n_records))
        .map(|n| json!({"id": format!("r-{n}"), "arrivalDate": "2026-09-01", "updatedAt": "2026-11-01T10:00:00Z"}))
        .collect();
    let next = (first + server.page_size < server.n_records).then_some(page + 1);
    axum::Json(json!({"reservations": items, "nextPage": next}))
}

async fn token() -> axum::Json<Value> {
    axum::Json(json!({"access_token": "token-1", "token_type": "Bearer", "expires_in": 86400}))
}

async fn receive(State(count): State<Arc<AtomicU64>>) -> &'static str {
    count.fetch_add(1, Ordering::SeqCst);
    "ok"
}

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    url
}

struct Daemon {
    child: Child,
    admin_url: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    fn start() -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let plugin_dir = dir.path().join("plugins.d");
        std::fs::create_dir_all(&plugin_dir).unwrap();
        std::fs::copy(PathBuf::from(env!("PLUGIN_ARTIFACTS_DIR")).join("stayhook_plugin_chaos.wasm"), plugin_dir.join("chaos.wasm"))
            .unwrap();
        let bin = std::env::var("STAYHOOK_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_stayhook").to_string());
        let mut child = Command::new(bin)
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("STAYHOOK_DATA_DIR", dir.path().join("data"))
            .env("STAYHOOK_LISTEN", "127.0.0.1:0")
            .env("STAYHOOK_ADMIN_LISTEN", "127.0.0.1:0")
            .env("STAYHOOK_ADMIN_TOKEN", TOKEN)
            .env("STAYHOOK_ALLOW_PRIVATE_DESTINATIONS", "true")
            .env("STAYHOOK_PLUGIN_DIR", &plugin_dir)
            .env("STAYHOOK_RECONCILE_INTERVAL_SECS", "0")
            .env("STAYHOOK_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start stayhook");
        let stdout = child.stdout.take().unwrap();
        let (sender, receiver) = std::sync::mpsc::channel();
        // Keep reading: a closed pipe would make the daemon's next line fail.
        std::thread::spawn(move || {
            for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("stayhook: admin API on ") {
                    let _ = sender.send(url.to_string());
                }
            }
        });
        let admin_url = receiver.recv_timeout(Duration::from_secs(120)).ok();
        Daemon {
            child,
            admin_url: admin_url.expect("the daemon printed its admin address"),
            http: reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap(),
            _dir: dir,
        }
    }

    async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self
            .http
            .request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), format!("{}{path}", self.admin_url))
            .bearer_auth(TOKEN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Wait (at most ten minutes) for a finished pass of `kind` other than the one finished at `after`.
    async fn finished(&self, kind: &str, after: Option<String>) -> Value {
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let (_, status) = self.admin("GET", "/v1/accounts/bench/sync", None).await;
            let last = &status["lastPass"];
            if status["status"] == "idle"
                && last["kind"] == kind
                && last["finishedAt"].is_string()
                && last["finishedAt"].as_str().map(str::to_owned) != after
            {
                return last.clone();
            }
            assert!(Instant::now() < deadline, "no finished {kind} pass: {status}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn pass_ms(pass: &Value) -> i64 {
    let at = |key: &str| chrono::DateTime::parse_from_rfc3339(pass[key].as_str().unwrap()).unwrap().timestamp_millis();
    at("finishedAt") - at("startedAt")
}

#[tokio::main]
async fn main() {
    let n_records: usize = env_or("RECONCILE_RECORDS", 10_000);
    let page_size: usize = env_or("RECONCILE_PAGE", 100);
    let n_passes: usize = env_or("RECONCILE_PASSES", 3);
    let rate: Option<u32> = std::env::var("RECONCILE_RATE").ok().and_then(|rate| rate.parse().ok());
    let server = Arc::new(ListServer { n_records, page_size, n_list_calls: AtomicU64::new(0) });
    let pms_url =
        serve(Router::new().route("/reservations", get(list)).route("/oauth/token", post(token)).with_state(server.clone())).await;
    let delivered = Arc::new(AtomicU64::new(0));
    let receiver_url = serve(Router::new().route("/", post(receive)).with_state(delivered.clone())).await;

    let daemon = Daemon::start();
    let started = Instant::now();
    let (status, account) = daemon
        .admin(
            "POST",
            "/v1/accounts",
            Some(json!({"id": "bench", "workspaceId": "ws", "pms": "chaos", "apiBaseUrl": pms_url,
                "credentials": {"clientId": "chaos-client", "clientSecret": "chaos-secret"}, "rateLimitPerSecond": rate})),
        )
        .await;
    assert_eq!(status, 201, "{account}");
    let initial = daemon.finished("initial-sync", None).await;
    println!(
        "initial sync: {} records in {} pages, {} ms (pass), {} ms (from account creation), {} list requests",
        initial["recordsSeen"],
        initial["pagesDone"],
        pass_ms(&initial),
        started.elapsed().as_millis(),
        server.n_list_calls.load(Ordering::SeqCst)
    );
    let body = json!({"name": "bench", "url": format!("{receiver_url}/"), "enabled": true,
        "eventTypes": ["reservation.created", "reservation.updated", "reservation.deleted"]});
    let (status, webhook) = daemon.admin("POST", "/v1/accounts/bench/webhooks", Some(body)).await;
    assert_eq!(status, 201, "{webhook}");

    let mut after = None;
    for pass_idx in 0..n_passes {
        let calls_before = server.n_list_calls.load(Ordering::SeqCst);
        daemon.admin("PATCH", "/v1/accounts/bench", Some(json!({"reconcileIntervalSecs": 1}))).await;
        let pass = daemon.finished("reconciliation", after.clone()).await;
        daemon.admin("PATCH", "/v1/accounts/bench", Some(json!({"reconcileIntervalSecs": 0}))).await;
        after = pass["finishedAt"].as_str().map(str::to_owned);
        // Give a wrongly produced event time to arrive before counting.
        tokio::time::sleep(Duration::from_millis(500)).await;
        println!(
            "reconciliation {}: {} unchanged records in {} pages, {} ms, {} list requests, {} events produced, {} delivered",
            pass_idx + 1,
            pass["recordsSeen"],
            pass["pagesDone"],
            pass_ms(&pass),
            server.n_list_calls.load(Ordering::SeqCst) - calls_before,
            pass["recoveredChanges"],
            delivered.load(Ordering::SeqCst)
        );
    }
}
