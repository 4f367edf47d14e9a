//! The console's weight and speed: the bytes of a first page load, and the time from navigating
//! to the event log to its first rendered row in headless Chromium with `CONSOLE_EVENTS`
//! (100,000) events stored.
//!
//! ```sh
//! cargo bench --bench console                    # needs chromium and chromedriver (Debian packages)
//! CONSOLE_EVENTS=10000 cargo bench --bench console
//! ```
//!
//! It starts the real daemon on a fresh data dir, posts that many distinct Hostaway reservation
//! webhooks (64 connections), waits until every event is in the log, signs in through the form,
//! then navigates between the overview and the event log `CONSOLE_RUNS` (7) times and reports the
//! median and the worst time to the first row (measured in the page with `performance.now()`
//! from the route change to the table in the DOM, and from outside as a full WebDriver round).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fantoccini::{ClientBuilder, Locator};
use serde_json::{Value, json};

const TOKEN: &str = "bench-token";

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|value| value.parse().ok()).unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let n_events: u64 = env_or("CONSOLE_EVENTS", 100_000);
    let runs: usize = env_or("CONSOLE_RUNS", 7);
    let data_dir = tempfile::Builder::new().prefix("stayhook-bench-console").tempdir().unwrap();
    let (mut child, ingest_url, admin_url) = start_daemon(&data_dir.path().join("data"));
    let http = reqwest::Client::builder().pool_max_idle_per_host(64).timeout(Duration::from_secs(60)).build().unwrap();
    wait_healthy(&http, &admin_url).await;

    // Page weight: everything a first load fetches (the page, its script and its style sheet).
    let mut weight = 0;
    for path in ["/", "/console/app.js", "/console/app.css"] {
        weight += http.get(format!("{admin_url}{path}")).send().await.unwrap().bytes().await.unwrap().len();
    }
    println!("page weight: {weight} bytes ({:.1} KiB) in 3 requests, uncompressed; no other request", weight as f64 / 1024.0);

    let created = http
        .post(format!("{admin_url}/v1/accounts"))
        .bearer_auth(TOKEN)
        .json(&json!({"id": "bench", "workspaceId": "ws", "pms": "hostaway"}))
        .send()
        .await
        .unwrap();
    assert!(created.status().is_success());
    let template: Value = serde_json::from_slice(
        &std::fs::read("plugins/hostaway/tests/cases/reservation-created/body.json").expect("run from the repository root"),
    )
    .unwrap();
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (http, url, template, next) = (http.clone(), format!("{ingest_url}/listen/bench"), template.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= n_events {
                    break;
                }
                let mut body = template.clone();
                body["data"]["id"] = json!(20_000_000 + n);
                let response = http
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(serde_json::to_vec(&body).unwrap())
                    .send()
                    .await
                    .unwrap();
                assert!(response.status().is_success(), "{}", response.status());
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    loop {
        let metrics = http.get(format!("{admin_url}/metrics")).bearer_auth(TOKEN).send().await.unwrap().text().await.unwrap();
        let events: f64 =
            metrics.lines().find_map(|line| line.strip_prefix("stayhook_events_total ")).and_then(|n| n.trim().parse().ok()).unwrap_or(0.0);
        if events as u64 >= n_events {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("stored {n_events} events in {:.1} s", started.elapsed().as_secs_f64());

    let (browser, mut driver) = browser().await;
    browser.goto(&format!("{admin_url}/")).await.unwrap();
    let token = browser.wait().for_element(Locator::Css("#token")).await.unwrap();
    token.send_keys(TOKEN).await.unwrap();
    browser.find(Locator::Css("#signin-button")).await.unwrap().click().await.unwrap();
    browser.wait().for_element(Locator::Css(".cards")).await.unwrap();

    let mut in_page = Vec::new();
    let mut round = Vec::new();
    for _ in 0..runs {
        browser.goto(&format!("{admin_url}/#/overview")).await.unwrap();
        browser.wait().for_element(Locator::Css(".cards")).await.unwrap();
        let outside = Instant::now();
        let measured = browser
            .execute_async(
                "const done = arguments[0]; const t0 = performance.now(); location.hash = '#/events';
                 const poll = () => document.querySelector('#events-table tr:nth-child(2)') ? done(performance.now() - t0) : requestAnimationFrame(poll);
                 poll();",
                vec![],
            )
            .await
            .unwrap();
        round.push(outside.elapsed().as_secs_f64() * 1000.0);
        in_page.push(measured.as_f64().unwrap());
    }
    in_page.sort_by(f64::total_cmp);
    round.sort_by(f64::total_cmp);
    println!(
        "event log, first row rendered with {n_events} events stored ({runs} runs): in page median {:.1} ms, worst {:.1} ms; WebDriver round median {:.1} ms",
        in_page[runs / 2],
        in_page[runs - 1],
        round[runs / 2]
    );
    let _ = browser.close().await;
    let _ = driver.kill();
    let _ = child.kill();
    let _ = child.wait();
}

fn start_daemon(data_dir: &std::path::Path) -> (Child, String, String) {
    let binary = std::env::var_os("STAYHOOK_BIN").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_stayhook")));
    let mut child = Command::new(binary)
        .arg("serve")
        .env("STAYHOOK_DATA_DIR", data_dir)
        .env("STAYHOOK_LISTEN", "127.0.0.1:0")
        .env("STAYHOOK_ADMIN_LISTEN", "127.0.0.1:0")
        .env("STAYHOOK_ADMIN_TOKEN", TOKEN)
        .env("STAYHOOK_LOG", "warn")
        .env("STAYHOOK_LISTENER_REQUESTS_PER_SECOND", "0")
        .env("STAYHOOK_LISTENER_BYTES_PER_SECOND", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the daemon");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut ingest, mut admin) = (None, None);
    while ingest.is_none() || admin.is_none() {
        let line = lines.next().expect("daemon exited").unwrap();
        if let Some(url) = line.strip_prefix("stayhook: webhooks on ") {
            ingest = Some(url.to_string());
        }
        if let Some(url) = line.strip_prefix("stayhook: admin API on ") {
            admin = Some(url.to_string());
        }
    }
    (child, ingest.unwrap(), admin.unwrap())
}

async fn wait_healthy(http: &reqwest::Client, admin_url: &str) {
    while !http.get(format!("{admin_url}/healthz")).send().await.is_ok_and(|response| response.status().is_success()) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn browser() -> (fantoccini::Client, Child) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let driver = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver (apt-get install chromium chromium-driver)");
    let profile = std::env::temp_dir().join(format!("stayhook-bench-chromium-{}", std::process::id()));
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({"args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", format!("--user-data-dir={}", profile.display())]}),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector).capabilities(capabilities.clone()).connect(&format!("http://127.0.0.1:{port}")).await {
            Ok(client) => return (client, driver),
            Err(error) if Instant::now() > deadline => panic!("no WebDriver session: {error}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
