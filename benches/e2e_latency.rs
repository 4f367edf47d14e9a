//! End-to-end latency of the real daemon on loopback: from the listener's 2xx to the receiver's
//! receipt, and the listener's own round trip, against a baseline measured in the same run (the
//! same client posting to a no-op receiver). Bounded: a fixed number of sequential requests.
//!
//! `cargo bench --bench e2e_latency` (set `N_EVENTS` to change the count; default 2000).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::post;
use serde_json::{Value, json};
use tokio::sync::mpsc;

const TOKEN: &str = "bench-token";

#[tokio::main]
async fn main() {
    let n_events: usize = std::env::var("N_EVENTS").ok().and_then(|n| n.parse().ok()).unwrap_or(2000);
    let (receipts, mut received) = mpsc::unbounded_channel::<Instant>();
    let receiver = Router::new().route(
        "/hook",
        post(move || {
            let receipts = receipts.clone();
            async move {
                let _ = receipts.send(Instant::now());
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let receiver_url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, receiver).await.unwrap() });
    let http = reqwest::Client::new();

    // Baseline: the same client, the same loopback, a server that does nothing.
    let mut baseline = Vec::with_capacity(n_events);
    for _ in 0..n_events {
        let started = Instant::now();
        http.post(&receiver_url).body("{}").send().await.unwrap();
        baseline.push(started.elapsed());
        received.recv().await.unwrap();
    }

    let data_dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_stayhook"))
        .arg("serve")
        .env("STAYHOOK_DATA_DIR", data_dir.path())
        .env("STAYHOOK_LISTEN", "127.0.0.1:0")
        .env("STAYHOOK_ADMIN_LISTEN", "127.0.0.1:0")
        .env("STAYHOOK_ADMIN_TOKEN", TOKEN)
        .env("STAYHOOK_ALLOW_PRIVATE_DESTINATIONS", "true")
        .env("STAYHOOK_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut urls = Vec::new();
    while urls.len() < 2 {
        let line = lines.next().unwrap().unwrap();
        if let Some((_, url)) = line.split_once(" on ") {
            urls.push(url.to_string());
        }
    }
    let (ingest_url, admin_url) = (urls[0].clone(), urls[1].clone());
    let admin = |path: &str, body: Value| http.post(format!("{admin_url}{path}")).bearer_auth(TOKEN).json(&body).send();
    admin("/v1/accounts", json!({"id": "bench", "workspaceId": "ws", "pms": "hostaway"})).await.unwrap();
    admin("/v1/accounts/bench/webhooks", json!({"name": "bench", "url": receiver_url, "eventTypes": ["reservation.created"]}))
        .await
        .unwrap();

    let template: Value =
        serde_json::from_slice(&std::fs::read("plugins/hostaway/tests/cases/reservation-created/body.json").unwrap()).unwrap();
    let mut accept = Vec::with_capacity(n_events);
    let mut to_receipt = Vec::with_capacity(n_events);
    for idx in 0..n_events {
        let mut body = template.clone();
        body["data"]["id"] = json!(1_000_000 + idx);
        let started = Instant::now();
        let response = http
            .post(format!("{ingest_url}/listen/bench"))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
        let acknowledged = Instant::now();
        accept.push(acknowledged - started);
        let receipt = tokio::time::timeout(Duration::from_secs(30), received.recv()).await.unwrap().unwrap();
        to_receipt.push(receipt.saturating_duration_since(acknowledged));
    }
    child.kill().unwrap();
    child.wait().unwrap();

    println!(
        "machine: {} CPUs; {n_events} sequential events; times in microseconds",
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    report("baseline: POST to a no-op receiver", &mut baseline);
    report("listener: POST to 2xx (durable)", &mut accept);
    report("pipeline: 2xx to receiver receipt", &mut to_receipt);
}

fn report(label: &str, samples: &mut [Duration]) {
    samples.sort();
    let at = |quantile: f64| samples[((samples.len() as f64 * quantile) as usize).min(samples.len() - 1)].as_micros();
    println!("{label:40} p50 {:>7}  p99 {:>7}  p99.9 {:>7}", at(0.50), at(0.99), at(0.999));
}
