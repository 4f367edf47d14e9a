//! The store alone, without HTTP or plugins.
//!
//! - `hot_path`: what the daemon asks of storage per event, through the storage interfaces, from
//!   `STORE_WRITERS` (64) concurrent writers, `STORE_EVENTS` (20,000) events: append the raw
//!   webhook and await durability (the listener), commit a normalized run of one event with its
//!   state and one delivery on a blocking thread (a normalizer), await its deliveries being due,
//!   record a delivered attempt (the scheduler). Reported: process CPU time per event, bytes the
//!   process wrote to disk per event (`/proc/self/io`), the data dir's size per event; for the sled
//!   backend and, as the same-run baseline, the in-memory backend (the harness and interface cost
//!   without a disk).
//! - `durable_append`: durable append of raw webhooks at 1, 16 and 256 concurrent writers: the
//!   group commit (one flush acknowledges every append made before it,
//!   `src/store/sled_backend/commit.rs`) against a flush per append. Criterion.
//!
//! `cargo bench --bench store`, or `cargo bench --bench store -- hot_path` for one of them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use serde_json::json;
use stayhook::model::{EventResult, EventType, RecordKind};
use stayhook::store::memory::MemoryStore;
use stayhook::store::{
    Attempt, Delivery, DeliveryStatus, InboxEntry, InboxId, InboxOutcome, InboxStatus, NormalizedBatch, StateWrite, Store, StoredEvent,
};

// The daemon's allocator, so the store's costs are measured as the daemon pays them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BODY: &[u8] = include_bytes!("../plugins/hostaway/tests/cases/reservation-created/body.json");

fn entry() -> InboxEntry {
    InboxEntry {
        account_id: "bench".into(),
        received_at_ms: 1_763_000_000_000,
        method: "POST".into(),
        query: String::new(),
        content_type: Some("application/json".into()),
        headers: vec![("content-type".into(), "application/json".into()), ("user-agent".into(), "bench".into())],
        body: BODY.to_vec(),
    }
}

/// `total` appends spread over `writers` tasks; each task waits for durability before its next.
async fn run(store: &Store, writers: usize, total: u64, group_commit: bool) -> Duration {
    let per_writer = total.div_ceil(writers as u64);
    let started = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let entry = entry();
                for _ in 0..per_writer {
                    store.append_inbox(&entry).unwrap();
                    if group_commit {
                        store.durable().await.unwrap();
                    } else {
                        let store = store.clone();
                        tokio::task::spawn_blocking(move || store.flush_blocking().unwrap()).await.unwrap();
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    started.elapsed().mul_f64(total as f64 / (per_writer * writers as u64) as f64)
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().max_blocking_threads(512).build().unwrap();
    let dir = tempfile::tempdir_in(std::env::var_os("BENCH_DIR").unwrap_or_else(|| env!("CARGO_TARGET_TMPDIR").into())).unwrap();
    let store = stayhook::store::open(&dir.path().join("db"), 64 << 20).unwrap();
    let mut group = c.benchmark_group("durable_append");
    group.throughput(Throughput::Elements(1)).sample_size(10).measurement_time(Duration::from_secs(8));
    for writers in [1usize, 16, 256] {
        for (name, group_commit) in [("group_commit", true), ("flush_per_append", false)] {
            group.bench_with_input(BenchmarkId::new(name, writers), &writers, |b, &writers| {
                b.iter_custom(|iters| runtime.block_on(run(&store, writers, iters, group_commit)));
            });
        }
    }
    group.finish();
}

/// Process CPU time (user + system) so far.
fn cpu_time() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given; RUSAGE_SELF is always valid.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// Bytes this process has caused to be written to storage so far.
fn written_bytes() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    io.lines().find_map(|line| line.strip_prefix("write_bytes: ")).and_then(|value| value.trim().parse().ok()).unwrap_or(0)
}

fn dir_size(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => dir_size(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}

/// One event's way through storage, as the daemon's stages make it.
async fn one_event(store: &Store, n: u64, record: &serde_json::Value) {
    let inbox_id: InboxId = store.append_inbox(&entry()).unwrap();
    store.durable().await.unwrap();
    let delivery_id = store.new_delivery_id().unwrap();
    let event_id = format!("0193b0c0-0000-7000-8000-{n:012x}");
    let delivery = Delivery {
        id: delivery_id,
        event_id: event_id.clone(),
        subscription_id: "sub".into(),
        account_id: "bench".into(),
        lane: format!("r{n}"),
        attempts: 0,
        retry_base: 0,
        status: DeliveryStatus::Pending,
        next_attempt_at_ms: 0,
        last_error: None,
        created_at_ms: 0,
        updated_at_ms: 0,
    };
    let batch = NormalizedBatch {
        inbox_id,
        outcome: InboxOutcome {
            status: InboxStatus::Done,
            plugin: Some("hostaway".into()),
            plugin_version: Some("0.1.0".into()),
            error_kind: None,
            error: None,
            event_ids: vec![event_id.clone()],
            n_unchanged: 0,
            generation: 0,
            at: "2026-12-06T00:00:00Z".into(),
        },
        events: vec![StoredEvent {
            id: event_id.clone(),
            event_type: EventType::ReservationCreated,
            timestamp: "2026-12-06T00:00:00.000Z".into(),
            integration_account_id: "bench".into(),
            workspace_id: "ws".into(),
            record_id: format!("r{n}"),
            record: record.clone(),
            result: EventResult::Success,
            failure_reason: None,
            inbox_id: inbox_id.to_string(),
            origin: stayhook::store::Origin::Webhook,
        }],
        state: vec![StateWrite {
            account_id: "bench".into(),
            kind: RecordKind::Reservation,
            record_id: format!("r{n}"),
            record: Some(std::sync::Arc::new(record.clone())),
        }],
        deliveries: vec![delivery.clone()],
    };
    let committer = store.clone();
    tokio::task::spawn_blocking(move || committer.commit_normalized_blocking(vec![batch])).await.unwrap().unwrap();
    store.durable().await.unwrap();
    let mut delivered = delivery.clone();
    delivered.attempts = 1;
    delivered.status = DeliveryStatus::Delivered;
    let attempt = Attempt {
        delivery_id: delivery_id.to_string(),
        subscription_id: "sub".into(),
        attempt: 1,
        at: "2026-12-06T00:00:00Z".into(),
        url: "http://receiver.test/".into(),
        status_code: Some(200),
        latency_ms: 2,
        error: None,
        response: Some("ok".into()),
        success: true,
    };
    store.record_attempt(&delivery, &delivered, Some(&attempt), 0, true).await.unwrap();
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|value| value.parse().ok()).unwrap_or(default)
}

/// Run `events` events from `writers` tasks; CPU per event, bytes written per event.
fn hot_path_run(runtime: &tokio::runtime::Runtime, store: &Store, writers: u64, events: u64) -> (Duration, Duration, u64) {
    let record = json!({"reservation": serde_json::from_slice::<serde_json::Value>(BODY).unwrap(), "previousArrivalDate": ""});
    let (cpu, wall, bytes) = (cpu_time(), Instant::now(), written_bytes());
    runtime.block_on(async {
        let tasks: Vec<_> = (0..writers)
            .map(|writer| {
                let store = store.clone();
                let record = record.clone();
                tokio::spawn(async move {
                    for n in (writer..events).step_by(writers as usize) {
                        one_event(&store, n, &record).await;
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
    });
    (cpu_time() - cpu, wall.elapsed(), written_bytes().saturating_sub(bytes))
}

fn hot_path() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().max_blocking_threads(512).build().unwrap();
    let writers = env_number("STORE_WRITERS", 64);
    let events = env_number("STORE_EVENTS", 20_000);
    let base = std::env::var_os("BENCH_DIR").unwrap_or_else(|| env!("CARGO_TARGET_TMPDIR").into());
    println!(
        "hot_path: {events} events from {writers} writers (append + durable, commit one event with state and one delivery, delivered attempt)"
    );
    println!("{:<10} {:>14} {:>12} {:>16} {:>16}", "backend", "CPU µs/event", "events/s", "written B/event", "kept B/event");
    let memory: Store = Arc::new(MemoryStore::new());
    let (cpu, wall, bytes) = hot_path_run(&runtime, &memory, writers, events);
    let per = |total: Duration| total.as_secs_f64() * 1e6 / events as f64;
    println!("{:<10} {:>14.1} {:>12.0} {:>16} {:>16}", "memory", per(cpu), events as f64 / wall.as_secs_f64(), bytes / events, 0);
    let dir = tempfile::tempdir_in(&base).unwrap();
    let sled = stayhook::store::open(&dir.path().join("db"), 64 << 20).unwrap();
    let (cpu, wall, bytes) = hot_path_run(&runtime, &sled, writers, events);
    sled.flush_blocking().unwrap();
    let kept = dir_size(dir.path());
    println!("{:<10} {:>14.1} {:>12.0} {:>16} {:>16}", "sled", per(cpu), events as f64 / wall.as_secs_f64(), bytes / events, kept / events);
}

fn main() {
    let wanted: Vec<String> = std::env::args().skip(1).filter(|arg| !arg.starts_with('-')).collect();
    let runs = |name: &str| wanted.is_empty() || wanted.iter().any(|filter| name.contains(filter.as_str()));
    if runs("hot_path") {
        hot_path();
    }
    if runs("durable_append") {
        let mut criterion = Criterion::default().configure_from_args();
        bench(&mut criterion);
        criterion.final_summary();
    }
}
