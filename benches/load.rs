//! The load generator: drives the real daemon binary over loopback HTTP and measures it against
//! a no-op hyper server driven by the same generator in the same run.
//!
//! ```sh
//! cargo bench --bench load                       # every scenario
//! cargo bench --bench load -- accept e2e         # some of them
//! LOAD_SECS=5 GROWTH_EVENTS=200000 cargo bench --bench load -- growth
//! ```
//!
//! Scenarios (each starts its own daemon with a fresh data dir; everything is bounded in time
//! and count, and stays on 127.0.0.1):
//! - `accept`: closed loop, `LOAD_CONCURRENCY` (64) connections posting distinct Hostaway
//!   reservation webhooks for `LOAD_SECS` (10): requests/s of the durable 2xx against the no-op
//!   server's; then an open loop at half the daemon's own maximum, latency p50/p99/p99.9 (from the
//!   scheduled send time, so a stall is not hidden by the generator waiting).
//! - `e2e`: with 1 and with 5 subscriptions to a local receiver: events/s from the first post to
//!   the last receipt, then an open loop at 1,000 events/s: latency from the listener's 2xx to
//!   each receipt.
//! - `growth`: one subscription, `GROWTH_EVENTS` (1,000,000) events in windows of
//!   `GROWTH_WINDOW` (50,000): each window is posted in a closed loop and drained to the
//!   receiver before the next; per window the accept rate, the end-to-end rate (first post to
//!   last receipt), the daemon's peak resident memory and the data dir's size; then the
//!   start-up time with that store.
//! - `startup`: time from spawning the daemon to its first `/healthz` 200, with an empty
//!   compiled-plugin cache (cold) and with the cache warm; 5 runs each, median.
//! - `scale`: end to end with one subscription on the embedded store (the baseline), then on
//!   NATS JetStream (`store = "nats"`): one node on one server (R1), one node on a 3-server
//!   cluster (R3), three nodes on that cluster (posts spread over them). Per setup: events/s
//!   from the first post to the last receipt, and CPU time per event of the stayhook processes
//!   and of the NATS servers (from `/proc`), the figure that means something on a shared
//!   2-core machine. The servers come from `.ci/nats-server` (or `STAYHOOK_NATS_SERVER`).
//!
//! `LOAD_RECORDS=50000` posts updates of that many reservations in turn instead of a new
//! reservation each (the store's state then stays bounded, as an operator's does).
//! `LOAD_RETENTION=90s` runs the daemon with that retention for delivered events and raw webhooks,
//! and that duplicate-suppression window (the growth scenario then shows whether the data dir,
//! memory and start-up stay flat).
//!
//! `STAYHOOK_BIN=/path/to/stayhook` drives another build of the daemon (a before/after comparison
//! in one script); by default the bench drives the binary cargo built with it.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

const TOKEN: &str = "bench-token";

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|value| value.parse().ok()).unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let wanted: Vec<String> = std::env::args().skip(1).filter(|arg| !arg.starts_with('-')).collect();
    let runs = |name: &str| wanted.is_empty() || wanted.iter().any(|arg| arg == name);
    let settings = Settings {
        seconds: env_or("LOAD_SECS", 10.0),
        concurrency: env_or("LOAD_CONCURRENCY", 64),
        growth_events: env_or("GROWTH_EVENTS", 1_000_000),
        growth_window: env_or("GROWTH_WINDOW", 50_000),
    };
    println!("machine: {} cores, {}", std::thread::available_parallelism().map(usize::from).unwrap_or(0), cpu_model());
    println!(
        "settings: {}s per phase, {} connections, growth to {} events\n",
        settings.seconds, settings.concurrency, settings.growth_events
    );
    if runs("accept") {
        accept(&settings).await;
    }
    if runs("e2e") {
        for n_subscriptions in [1, 5] {
            end_to_end(&settings, n_subscriptions).await;
        }
    }
    if runs("startup") {
        startup().await;
    }
    if runs("growth") {
        growth(&settings).await;
    }
    // Not in the default run: it needs a NATS server (installed on first use).
    if wanted.iter().any(|arg| arg == "scale") {
        scale(&settings).await;
    }
}

struct Settings {
    seconds: f64,
    concurrency: usize,
    growth_events: u64,
    growth_window: u64,
}

// ---- the receiving side: a no-op hyper server that counts, and optionally reports record ids ---

/// What the receiver saw.
#[derive(Default)]
struct Receipts {
    count: AtomicU64,
    /// When set, each receipt's record id and time are kept (latency runs).
    track: AtomicBool,
    seen: Mutex<Vec<(String, Instant)>>,
}

/// Start a hyper HTTP/1 server on loopback that answers 200 `{}` to everything after reading the
/// body. Returns its base URL.
async fn noop_server(receipts: Arc<Receipts>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                // Out of file descriptors or a reset before accept: wait instead of spinning.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let _ = stream.set_nodelay(true);
            let receipts = receipts.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let receipts = receipts.clone();
                    async move {
                        let body = request.into_body().collect().await.map(|body| body.to_bytes()).unwrap_or_default();
                        let now = Instant::now();
                        receipts.count.fetch_add(1, Ordering::Relaxed);
                        if receipts.track.load(Ordering::Relaxed)
                            && let Some(id) = record_id(&body)
                        {
                            receipts.seen.lock().unwrap().push((id, now));
                        }
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"{}"))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    url
}

fn record_id(body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    value["data"]["record"]["id"].as_str().map(str::to_string)
}

// ---- the daemon ---------------------------------------------------------------------------------

struct Daemon {
    child: Child,
    ingest_url: String,
    admin_url: String,
    data_dir: PathBuf,
    http: reqwest::Client,
}

impl Daemon {
    /// Start `stayhook serve` on `data_dir` (kept: growth reuses it) with this plugin cache.
    async fn start(data_dir: &Path, cache_dir: &Path) -> (Daemon, Duration) {
        Self::start_with(data_dir, cache_dir, &[]).await
    }

    /// [`Daemon::start`] with more `STAYHOOK_*` variables.
    async fn start_with(data_dir: &Path, cache_dir: &Path, env: &[(&str, String)]) -> (Daemon, Duration) {
        let started = Instant::now();
        let binary = std::env::var_os("STAYHOOK_BIN").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_stayhook")));
        let mut command = Command::new(binary);
        command.envs(env.iter().map(|(name, value)| (*name, value.as_str())));
        // LOAD_RETENTION (e.g. "90s"): keep delivered events and raw webhooks that long, pruning
        // every second (the growth scenario with retention), and duplicate-suppression digests
        // as long: the scenario puts a day's webhooks into minutes, and digests kept their
        // default 24 hours would measure a dedup set of every webhook sent instead of history.
        if let Ok(retention) = std::env::var("LOAD_RETENTION") {
            let window = humantime::parse_duration(&retention).expect("LOAD_RETENTION is a duration such as 90s");
            command
                .env("STAYHOOK_DEDUP_WINDOW_SECS", window.as_secs().max(1).to_string())
                .env("STAYHOOK_RETENTION_EVENTS", &retention)
                .env("STAYHOOK_RETENTION_INBOX", &retention)
                .env("STAYHOOK_RETENTION_PRUNE_INTERVAL_MS", "1000")
                .env("STAYHOOK_RETENTION_PRUNE_BUDGET", "5000");
        }
        let mut child = command
            .arg("serve")
            .env("STAYHOOK_DATA_DIR", data_dir)
            .env("STAYHOOK_PLUGIN_CACHE_DIR", cache_dir)
            .env("STAYHOOK_LISTEN", "127.0.0.1:0")
            .env("STAYHOOK_ADMIN_LISTEN", "127.0.0.1:0")
            .env("STAYHOOK_ADMIN_TOKEN", TOKEN)
            .env("STAYHOOK_ALLOW_PRIVATE_DESTINATIONS", "true")
            .env("STAYHOOK_LOG", "warn")
            // One account takes the whole load: its listener limits (500 webhooks/s by default)
            // would measure the limiter, not the daemon.
            .env("STAYHOOK_LISTENER_REQUESTS_PER_SECOND", "1000000")
            .env("STAYHOOK_LISTENER_BYTES_PER_SECOND", "100000000000")
            .stdout(Stdio::piped())
            // The daemon's warnings and errors, beside its data dir (kept when a run goes wrong).
            .stderr(std::fs::File::create(data_dir.with_extension("log")).map(Stdio::from).unwrap_or_else(|_| Stdio::null()))
            .spawn()
            .expect("start the daemon");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut urls = Vec::new();
        while urls.len() < 2 {
            let line = lines.next().expect("daemon exited").unwrap();
            if let Some((_, url)) = line.split_once(" on ") {
                urls.push(url.to_string());
            }
        }
        let http = client(64);
        let admin_url = urls[1].clone();
        loop {
            if http.get(format!("{admin_url}/healthz")).send().await.is_ok_and(|response| response.status().is_success()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let ready = started.elapsed();
        (Daemon { child, ingest_url: urls[0].clone(), admin_url, data_dir: data_dir.to_path_buf(), http }, ready)
    }

    async fn admin(&self, path: &str, body: Value) -> Value {
        let response = self.http.post(format!("{}{path}", self.admin_url)).bearer_auth(TOKEN).json(&body).send().await.unwrap();
        assert!(response.status().is_success(), "{path}: {}", response.status());
        response.json().await.unwrap()
    }

    /// A Hostaway account with `n_subscriptions` subscriptions to `receiver_url`; its listener URL.
    async fn account(&self, receiver_url: &str, n_subscriptions: usize) -> String {
        self.admin("/v1/accounts", json!({"id": "bench", "workspaceId": "ws", "pms": "hostaway"})).await;
        for n in 0..n_subscriptions {
            let body = json!({"name": format!("bench {n}"), "url": format!("{receiver_url}/s{n}"), "eventTypes": ["reservation.created", "reservation.updated"]});
            self.admin("/v1/accounts/bench/webhooks", body).await;
        }
        format!("{}/listen/bench", self.ingest_url)
    }

    fn rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        let kib: f64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|number| number.parse().ok())
            .unwrap_or(0.0);
        kib / 1024.0
    }

    /// CPU time the daemon has used so far (user + system, from `/proc/<pid>/stat`).
    fn cpu(&self) -> Duration {
        process_cpu(self.child.id())
    }

    fn stop(mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }
}

/// A daemon left running by a scenario that panicked is killed, not left delivering to a port
/// the next run's receiver may get (and taking the machine's CPU from it).
impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU time a process has used so far (user + system, from `/proc/<pid>/stat`).
fn process_cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name (which may hold spaces) start at its closing paren.
    let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks: u64 = [11, 12].iter().filter_map(|index| fields.get(*index).and_then(|field| field.parse::<u64>().ok())).sum();
    // SAFETY: sysconf reads a constant of the running system.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_micros(ticks * 1_000_000 / per_second)
}

fn client(pool: usize) -> reqwest::Client {
    reqwest::Client::builder().pool_max_idle_per_host(pool).tcp_nodelay(true).timeout(Duration::from_secs(30)).build().unwrap()
}

fn dir_size_mib(path: &Path) -> f64 {
    fn walk(path: &Path) -> u64 {
        std::fs::read_dir(path)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|entry| match entry.metadata() {
                        Ok(meta) if meta.is_dir() => walk(&entry.path()),
                        Ok(meta) => meta.len(),
                        Err(_) => 0,
                    })
                    .sum()
            })
            .unwrap_or(0)
    }
    walk(path) as f64 / (1024.0 * 1024.0)
}

// ---- the generator ------------------------------------------------------------------------------

/// Distinct Hostaway reservation webhooks (the golden case's body with a new reservation id; with
/// `LOAD_RECORDS=N`, N reservations updated in turn, each body with a new price).
struct Bodies {
    template: Value,
    next: AtomicU64,
    records: Option<u64>,
}

impl Bodies {
    fn new() -> Self {
        let text = std::fs::read("plugins/hostaway/tests/cases/reservation-created/body.json").expect("run from the repository root");
        let records = std::env::var("LOAD_RECORDS").ok().and_then(|value| value.parse().ok()).filter(|records| *records > 0);
        Self { template: serde_json::from_slice(&text).unwrap(), next: AtomicU64::new(10_000_000), records }
    }

    /// The next body and its reservation id.
    fn next(&self) -> (String, Bytes) {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let mut body = self.template.clone();
        let id = match self.records {
            Some(records) => {
                body["data"]["totalPrice"] = json!(n);
                n % records
            }
            None => n,
        };
        body["data"]["id"] = json!(id);
        (id.to_string(), Bytes::from(serde_json::to_vec(&body).unwrap()))
    }
}

/// Closed loop: `concurrency` tasks post back to back until `duration` has passed (or `limit`
/// posts were made). Returns (successful posts, elapsed, latency histogram in µs).
async fn closed_loop(
    http: &reqwest::Client,
    url: &str,
    bodies: &Arc<Bodies>,
    concurrency: usize,
    duration: Duration,
    limit: u64,
) -> (u64, Duration, Histogram<u64>) {
    let started = Instant::now();
    let deadline = started + duration;
    let sent = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (http, url, bodies, sent) = (http.clone(), url.to_string(), bodies.clone(), sent.clone());
            tokio::spawn(async move {
                let mut histogram = Histogram::<u64>::new(3).unwrap();
                let mut n_ok = 0u64;
                while Instant::now() < deadline && sent.fetch_add(1, Ordering::Relaxed) < limit {
                    let (_, body) = bodies.next();
                    let posted = Instant::now();
                    let response = http.post(&url).header("content-type", "application/json").body(body).send().await;
                    if response.is_ok_and(|response| response.status().is_success()) {
                        n_ok += 1;
                        histogram.record(posted.elapsed().as_micros() as u64).unwrap();
                    }
                }
                (n_ok, histogram)
            })
        })
        .collect();
    let mut histogram = Histogram::<u64>::new(3).unwrap();
    let mut n_ok = 0;
    // Every request is bounded by the client's 30 s timeout, so a task still running a minute past
    // the deadline is a hang of the generator itself: say so and end instead of waiting forever.
    let watchdog = deadline + Duration::from_secs(60);
    for task in tasks {
        let Ok(joined) = tokio::time::timeout_at(watchdog.into(), task).await else {
            panic!("the load generator's closed loop against {url} did not finish a minute past its deadline");
        };
        let (ok, part) = joined.unwrap();
        n_ok += ok;
        histogram.add(part).unwrap();
    }
    (n_ok, started.elapsed(), histogram)
}

/// Open loop: one post every 1/`rate` s for `duration`, each on its own task, latency measured
/// from when it was due. Returns the latency histogram (µs) and, per reservation id, when its
/// 2xx arrived.
async fn open_loop(
    http: &reqwest::Client,
    url: &str,
    bodies: &Arc<Bodies>,
    rate: f64,
    duration: Duration,
) -> (Histogram<u64>, HashMap<String, Instant>) {
    let interval = Duration::from_secs_f64(1.0 / rate);
    let n_posts = (rate * duration.as_secs_f64()) as u64;
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(n_posts as usize);
    for n in 0..n_posts {
        let due = started + interval.mul_f64(n as f64);
        tokio::time::sleep_until(due.into()).await;
        let (http, url) = (http.clone(), url.to_string());
        let (id, body) = bodies.next();
        tasks.push(tokio::spawn(async move {
            let response = http.post(&url).header("content-type", "application/json").body(body).send().await;
            let acknowledged = Instant::now();
            response.is_ok_and(|response| response.status().is_success()).then_some((id, due, acknowledged))
        }));
    }
    let mut histogram = Histogram::<u64>::new(3).unwrap();
    let mut acknowledged_at = HashMap::new();
    for task in tasks {
        if let Some((id, due, acknowledged)) = task.await.unwrap() {
            histogram.record((acknowledged - due).as_micros() as u64).unwrap();
            acknowledged_at.insert(id, acknowledged);
        }
    }
    (histogram, acknowledged_at)
}

fn percentiles(histogram: &Histogram<u64>) -> String {
    let ms = |quantile: f64| histogram.value_at_quantile(quantile) as f64 / 1000.0;
    format!("p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms", ms(0.5), ms(0.99), ms(0.999), histogram.max() as f64 / 1000.0)
}

fn bench_dir() -> tempfile::TempDir {
    let parent = std::env::var_os("BENCH_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    std::fs::create_dir_all(&parent).unwrap();
    tempfile::tempdir_in(parent).unwrap()
}

/// A compiled-plugin cache shared by the runs that want it warm.
fn warm_cache() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-plugin-cache")
}

// ---- scenarios ----------------------------------------------------------------------------------

async fn accept(settings: &Settings) {
    println!("== (1) durable accept: the listener's 2xx against a no-op hyper server ==");
    let duration = Duration::from_secs_f64(settings.seconds);
    let bodies = Arc::new(Bodies::new());
    let http = client(settings.concurrency);
    let receipts = Arc::new(Receipts::default());
    let noop_url = noop_server(receipts.clone()).await + "/noop";
    let (n_noop, noop_elapsed, noop_latency) = closed_loop(&http, &noop_url, &bodies, settings.concurrency, duration, u64::MAX).await;
    let noop_rps = n_noop as f64 / noop_elapsed.as_secs_f64();
    println!("no-op server, closed loop:  {noop_rps:>8.0} req/s  ({})", percentiles(&noop_latency));

    let dir = bench_dir();
    let (daemon, _) = Daemon::start(&dir.path().join("data"), &warm_cache()).await;
    let listener = daemon.account(&noop_url, 0).await;
    let (n_daemon, daemon_elapsed, daemon_latency) = closed_loop(&http, &listener, &bodies, settings.concurrency, duration, u64::MAX).await;
    let daemon_rps = n_daemon as f64 / daemon_elapsed.as_secs_f64();
    println!("daemon, closed loop:        {daemon_rps:>8.0} req/s  ({})", percentiles(&daemon_latency));
    println!("ratio: {:.2} of the no-op server (target at least 0.50)", daemon_rps / noop_rps);

    let half = daemon_rps / 2.0;
    let (noop_open, _) = open_loop(&http, &noop_url, &bodies, half, duration).await;
    let (daemon_open, _) = open_loop(&http, &listener, &bodies, half, duration).await;
    println!("open loop at {half:.0} req/s (half the daemon's maximum):");
    println!("  no-op server: {}", percentiles(&noop_open));
    println!("  daemon:       {}  (target p99 under 5 ms)\n", percentiles(&daemon_open));
    daemon.stop();
}

async fn end_to_end(settings: &Settings, n_subscriptions: usize) {
    println!("== (2) end to end with {n_subscriptions} subscription(s): listener to receiver ==");
    let duration = Duration::from_secs_f64(settings.seconds);
    let bodies = Arc::new(Bodies::new());
    let http = client(settings.concurrency);
    let receipts = Arc::new(Receipts::default());
    let receiver_url = noop_server(receipts.clone()).await;
    let (n_noop, noop_elapsed, _) =
        closed_loop(&http, &format!("{receiver_url}/noop"), &bodies, settings.concurrency, duration, u64::MAX).await;
    let noop_rps = n_noop as f64 / noop_elapsed.as_secs_f64();
    receipts.count.store(0, Ordering::Relaxed);

    let dir = bench_dir();
    let (daemon, _) = Daemon::start(&dir.path().join("data"), &warm_cache()).await;
    let listener = daemon.account(&receiver_url, n_subscriptions).await;
    let cpu_before = daemon.cpu();
    let started = Instant::now();
    let (n_posted, post_elapsed, _) = closed_loop(&http, &listener, &bodies, settings.concurrency, duration, u64::MAX).await;
    let expected = n_posted * n_subscriptions as u64;
    let drain_deadline = Instant::now() + Duration::from_secs(300);
    while receipts.count.load(Ordering::Relaxed) < expected && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let all_delivered = started.elapsed();
    let daemon_cpu = daemon.cpu().saturating_sub(cpu_before);
    let delivered = receipts.count.load(Ordering::Relaxed);
    let events_per_second = n_posted as f64 / all_delivered.as_secs_f64();
    println!("no-op server, closed loop:  {noop_rps:>8.0} req/s");
    println!(
        "daemon: {n_posted} events accepted in {:.1}s ({:.0}/s); all {delivered}/{expected} deliveries received after {:.1}s",
        post_elapsed.as_secs_f64(),
        n_posted as f64 / post_elapsed.as_secs_f64(),
        all_delivered.as_secs_f64()
    );
    println!(
        "end to end: {events_per_second:.0} events/s ({:.0} deliveries/s), {:.2} of the no-op server (target at least 10,000 events/s with one subscription)",
        events_per_second * n_subscriptions as f64,
        events_per_second / noop_rps
    );
    println!(
        "daemon CPU: {:.1} s over the load, {:.0} µs per event (target at most 250 with one subscription)",
        daemon_cpu.as_secs_f64(),
        daemon_cpu.as_secs_f64() * 1e6 / n_posted.max(1) as f64
    );

    // Latency at 1,000 events per second: 2xx to each receipt.
    receipts.seen.lock().unwrap().clear();
    receipts.track.store(true, Ordering::Relaxed);
    let before = receipts.count.load(Ordering::Relaxed);
    let (_, acknowledged) = open_loop(&http, &listener, &bodies, 1000.0, duration).await;
    let expected = before + acknowledged.len() as u64 * n_subscriptions as u64;
    let drain_deadline = Instant::now() + Duration::from_secs(60);
    while receipts.count.load(Ordering::Relaxed) < expected && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    receipts.track.store(false, Ordering::Relaxed);
    let mut histogram = Histogram::<u64>::new(3).unwrap();
    for (id, received) in receipts.seen.lock().unwrap().iter() {
        if let Some(acknowledged) = acknowledged.get(id) {
            histogram.record(received.saturating_duration_since(*acknowledged).as_micros() as u64).unwrap();
        }
    }
    println!(
        "at 1,000 events/s, 2xx to receipt over {} deliveries: {}  (target p99 under 20 ms)\n",
        histogram.len(),
        percentiles(&histogram)
    );
    daemon.stop();
}

async fn startup() {
    println!("== (5) start-up: spawn to the first /healthz 200 ==");
    let mut cold = Vec::new();
    let mut warm = Vec::new();
    for _ in 0..5 {
        let dir = bench_dir();
        let cache = dir.path().join("cache");
        let (daemon, ready) = Daemon::start(&dir.path().join("data"), &cache).await;
        cold.push(ready);
        daemon.stop();
        let (daemon, ready) = Daemon::start(&dir.path().join("data"), &cache).await;
        warm.push(ready);
        daemon.stop();
    }
    cold.sort();
    warm.sort();
    println!("cold (empty compiled-plugin cache): median {:.0} ms (min {:.0}, max {:.0})", ms(cold[2]), ms(cold[0]), ms(cold[4]));
    println!(
        "warm (cache filled by the cold run): median {:.0} ms (min {:.0}, max {:.0})  (target under 300 ms)\n",
        ms(warm[2]),
        ms(warm[0]),
        ms(warm[4])
    );
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

async fn growth(settings: &Settings) {
    println!("== (3, 4) the store growing to {} events: throughput, memory, size ==", settings.growth_events);
    let bodies = Arc::new(Bodies::new());
    let http = client(settings.concurrency);
    let receipts = Arc::new(Receipts::default());
    let receiver_url = noop_server(receipts.clone()).await;
    let dir = bench_dir();
    let (daemon, _) = Daemon::start(&dir.path().join("data"), &warm_cache()).await;
    let listener = daemon.account(&receiver_url, 1).await;
    println!("{:>9} {:>11} {:>13} {:>9} {:>9}", "events", "accepted/s", "end to end/s", "RSS MiB", "disk MiB");
    let mut total = 0u64;
    let mut first_rate = None;
    let mut last_rate = 0.0;
    let mut peak_rss = 0.0f64;
    while total < settings.growth_events {
        // One window: post it in a closed loop, then wait until every event of it has reached
        // the receiver. The window's events per second from its first post to its last receipt
        // is the end-to-end rate at this store size, and the backlog never outgrows a window.
        let window = settings.growth_window.min(settings.growth_events - total);
        let started = Instant::now();
        let (n_posted, accept_elapsed, _) =
            closed_loop(&http, &listener, &bodies, settings.concurrency, Duration::from_secs(3600), window).await;
        total += n_posted;
        let mut rss = daemon.rss_mib();
        let drain_deadline = Instant::now() + Duration::from_secs(600);
        while receipts.count.load(Ordering::Relaxed) < total && Instant::now() < drain_deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
            rss = rss.max(daemon.rss_mib());
        }
        peak_rss = peak_rss.max(rss);
        let accept_rate = n_posted as f64 / accept_elapsed.as_secs_f64();
        let rate = n_posted as f64 / started.elapsed().as_secs_f64();
        first_rate.get_or_insert(rate);
        last_rate = rate;
        println!("{total:>9} {accept_rate:>11.0} {rate:>13.0} {rss:>9.0} {:>9.0}", dir_size_mib(&daemon.data_dir));
    }
    println!(
        "delivered: {} of {total}; peak RSS {peak_rss:.0} MiB, RSS now {:.0} MiB (target under 200), data dir {:.0} MiB",
        receipts.count.load(Ordering::Relaxed),
        daemon.rss_mib(),
        dir_size_mib(&daemon.data_dir)
    );
    let first_rate = first_rate.unwrap_or(0.0);
    println!("end-to-end rate of the last window against the first (empty store): {:.2} (target at least 0.90)", last_rate / first_rate);
    let data_dir = daemon.data_dir.clone();
    daemon.stop();
    // Right after the run the OS is still writing the stopped daemon's files back, and the new
    // one's first flush waits for that; a second restart shows the store's own start-up.
    let (daemon, ready) = Daemon::start(&data_dir, &warm_cache()).await;
    println!("start-up with this store, cache warm, right after the run: {:.0} ms; RSS after start {:.0} MiB", ms(ready), daemon.rss_mib());
    daemon.stop();
    let (daemon, ready) = Daemon::start(&data_dir, &warm_cache()).await;
    println!("start-up with this store, cache warm, restarted again: {:.0} ms; RSS after start {:.0} MiB\n", ms(ready), daemon.rss_mib());
    daemon.stop();
}

// ---- scale-out: NATS JetStream servers and several nodes -----------------------------------------

/// NATS servers on loopback (one, or a cluster), killed on drop.
struct NatsServers {
    children: Vec<Child>,
    urls: Vec<String>,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|listener| listener.local_addr()).map(|address| address.port()).unwrap()
}

impl NatsServers {
    /// `size` servers with JetStream (a cluster when more than one), healthy when this returns.
    async fn start(size: usize) -> NatsServers {
        let binary = match std::env::var_os("STAYHOOK_NATS_SERVER") {
            Some(binary) => PathBuf::from(binary),
            None => {
                let output = Command::new(".ci/nats-server").stderr(Stdio::inherit()).output().expect("run .ci/nats-server");
                assert!(output.status.success(), ".ci/nats-server failed: no NATS server for the scale scenario");
                PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
            }
        };
        let dir = bench_dir();
        let routes: Vec<u16> = (0..size).map(|_| free_port()).collect();
        let route_list = routes.iter().map(|port| format!("nats://127.0.0.1:{port}")).collect::<Vec<_>>().join(",");
        let cluster_name = format!("bench-{}", std::process::id());
        let (mut children, mut urls, mut monitors) = (Vec::new(), Vec::new(), Vec::new());
        for (index, route) in routes.iter().enumerate() {
            let (client_port, monitor_port) = (free_port(), free_port());
            let mut command = Command::new(&binary);
            command
                .args(["-n", &format!("n{index}"), "-a", "127.0.0.1", "-p", &client_port.to_string(), "-m", &monitor_port.to_string()])
                .args(["-js", "-sd"])
                .arg(dir.path().join(format!("n{index}")));
            if size > 1 {
                command.args(["--cluster_name", &cluster_name, "--cluster", &format!("nats://127.0.0.1:{route}"), "--routes", &route_list]);
            }
            let log = std::fs::File::create(dir.path().join(format!("n{index}.log"))).unwrap();
            children.push(command.stdout(Stdio::null()).stderr(log).spawn().expect("start nats-server"));
            urls.push(format!("nats://127.0.0.1:{client_port}"));
            monitors.push(format!("http://127.0.0.1:{monitor_port}/healthz"));
        }
        let http = client(4);
        let deadline = Instant::now() + Duration::from_secs(60);
        for monitor in monitors {
            while !http.get(&monitor).send().await.is_ok_and(|response| response.status().is_success()) {
                assert!(Instant::now() < deadline, "NATS servers not healthy within 60 s (logs in {})", dir.path().display());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        NatsServers { children, urls, _dir: dir }
    }

    fn cpu(&self) -> Duration {
        self.children.iter().map(|child| process_cpu(child.id())).sum()
    }
}

impl Drop for NatsServers {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One setup of the scale scenario: events/s and CPU per event.
struct Scaled {
    /// Webhooks acknowledged per second while posting (the listener's 2xx).
    accepted_per_second: f64,
    events_per_second: f64,
    stayhook_cpu_us: f64,
    nats_cpu_us: f64,
}

/// End to end with one subscription on `n_nodes` daemons (`store = "nats"` when `nats` is given,
/// else the embedded store), posts spread over the nodes.
async fn scale_run(settings: &Settings, n_nodes: usize, nats: Option<(&NatsServers, usize)>) -> Scaled {
    let duration = Duration::from_secs_f64(settings.seconds);
    let bodies = Arc::new(Bodies::new());
    let http = client(settings.concurrency);
    let receipts = Arc::new(Receipts::default());
    let receiver_url = noop_server(receipts.clone()).await;
    let dir = bench_dir();
    // A delivery that fails under the load (the receiver on the same two cores) is retried
    // within seconds, not after the default schedule's five minutes.
    let mut env: Vec<(&str, String)> = vec![("STAYHOOK_RETRY_SCHEDULE", "1s,2s,5s,10s,30s".into())];
    if let Some((servers, replicas)) = nats {
        env.push(("STAYHOOK_STORE", "nats".into()));
        env.push(("STAYHOOK_NATS_URLS", servers.urls.join(",")));
        env.push(("STAYHOOK_NATS_REPLICAS", replicas.to_string()));
    }
    let mut nodes = Vec::new();
    for node in 0..n_nodes {
        nodes.push(Daemon::start_with(&dir.path().join(format!("node{node}")), &warm_cache(), &env).await.0);
    }
    let listener = nodes[0].account(&receiver_url, 1).await;
    let listeners: Vec<String> = nodes.iter().map(|node| format!("{}/listen/bench", node.ingest_url)).collect();
    assert_eq!(listeners[0], listener);
    // Every node must know the account before the load (the catalog follows the bucket).
    for node in &nodes {
        while node
            .http
            .get(format!("{}/v1/accounts/bench", node.admin_url))
            .bearer_auth(TOKEN)
            .send()
            .await
            .map(|r| r.status().as_u16())
            .ok()
            != Some(200)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let cpu = |nodes: &[Daemon]| -> (Duration, Duration) {
        (nodes.iter().map(Daemon::cpu).sum(), nats.map_or(Duration::ZERO, |(servers, _)| servers.cpu()))
    };
    let (stayhook_before, nats_before) = cpu(&nodes);
    let started = Instant::now();
    let per_node = (settings.concurrency / n_nodes).max(1);
    let loops = listeners.iter().map(|url| closed_loop(&http, url, &bodies, per_node, duration, u64::MAX));
    let n_posted: u64 = futures_util::future::join_all(loops).await.into_iter().map(|(n, _, _)| n).sum();
    let accepted_per_second = n_posted as f64 / started.elapsed().as_secs_f64();
    let drain_deadline = Instant::now() + Duration::from_secs(300);
    while receipts.count.load(Ordering::Relaxed) < n_posted && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();
    let delivered = receipts.count.load(Ordering::Relaxed);
    if delivered < n_posted {
        for path in ["/v1/dead-letters", "/v1/inbox?status=failed", "/v1/stats", "/metrics"] {
            let answer =
                nodes[0].http.get(format!("{}{path}", nodes[0].admin_url)).bearer_auth(TOKEN).send().await.unwrap().text().await.unwrap();
            println!("{path}: {}", answer.chars().take(6000).collect::<String>());
        }
    }
    assert!(delivered >= n_posted, "only {delivered} of {n_posted} events delivered within 300 s");
    let (stayhook_after, nats_after) = cpu(&nodes);
    for node in nodes {
        node.stop();
    }
    let per_event = |cpu: Duration| cpu.as_secs_f64() * 1e6 / n_posted.max(1) as f64;
    Scaled {
        accepted_per_second,
        events_per_second: n_posted as f64 / elapsed.as_secs_f64(),
        stayhook_cpu_us: per_event(stayhook_after.saturating_sub(stayhook_before)),
        nats_cpu_us: per_event(nats_after.saturating_sub(nats_before)),
    }
}

async fn scale(settings: &Settings) {
    println!("== (6) scale-out: the embedded store against NATS JetStream, one subscription ==");
    println!("| setup | accepted/s | events/s | stayhook CPU per event | NATS CPU per event | total CPU per event | total against sled |");
    println!("|---|---|---|---|---|---|---|");
    let row = |name: &str, run: &Scaled, baseline: f64| {
        let total = run.stayhook_cpu_us + run.nats_cpu_us;
        println!(
            "| {name} | {:.0} | {:.0} | {:.0} µs | {:.0} µs | {total:.0} µs | {:.2}x |",
            run.accepted_per_second,
            run.events_per_second,
            run.stayhook_cpu_us,
            run.nats_cpu_us,
            total / baseline
        );
    };
    let baseline = scale_run(settings, 1, None).await;
    let sled_total = baseline.stayhook_cpu_us;
    row("sled, 1 node (baseline)", &baseline, sled_total);
    // Each setup on servers of its own (the account and its streams start empty).
    for (name, servers, replicas, nodes) in [("nats R1, 1 node", 1, 1, 1), ("nats R3, 1 node", 3, 3, 1), ("nats R3, 3 nodes", 3, 3, 3)] {
        let cluster = NatsServers::start(servers).await;
        let run = scale_run(settings, nodes, Some((&cluster, replicas))).await;
        row(name, &run, sled_total);
    }
    println!();
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines().find_map(|line| line.strip_prefix("model name").map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_string()))
        })
        .unwrap_or_else(|| "unknown CPU".into())
}
