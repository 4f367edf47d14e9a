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
//! - `growth`: the store alone growing past its retention window (see [`growth`]); run only when
//!   named, it takes minutes.
//!
//! `cargo bench --bench store`, or `cargo bench --bench store -- hot_path` for one of them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use serde_json::json;
use stayhook::model::{EventResult, EventType, RecordKind};
use stayhook::store::memory::MemoryStore;
use stayhook::store::{
    Appended, Attempt, Dedup, Delivery, DeliveryStatus, Expected, InboxEntry, InboxOutcome, InboxStatus, Leased, NormalizedBatch,
    StateWrite, Store, StoredEvent,
};

// The daemon's allocator, so the store's costs are measured as the daemon pays them.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const BODY: &[u8] = include_bytes!("../plugins/hostaway/tests/cases/reservation-created/body.json");
const EXPECTED: &[u8] = include_bytes!("../plugins/hostaway/tests/cases/reservation-created/expected.json");

/// The hot path's fixed arrival time.
const T0_MS: u64 = 1_763_000_000_000;

fn entry() -> InboxEntry {
    entry_at(T0_MS)
}

fn entry_at(received_at_ms: u64) -> InboxEntry {
    InboxEntry {
        account_id: "bench".into(),
        received_at_ms,
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
                    if group_commit {
                        store.append_inbox(&entry, None).await.unwrap();
                    } else {
                        store.import_inbox(&entry).unwrap();
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
    one_event_of(store, T0_MS, n, format!("r{n}"), record).await;
}

/// [`one_event`] for record `record_id`, arriving at `received_at_ms` with its digest remembered
/// (as the listener does), its event id a UUID v7 of that time (as the normalizer makes it).
async fn one_event_of(store: &Store, received_at_ms: u64, n: u64, record_id: String, record: &serde_json::Value) {
    let mut digest = [0u8; 32];
    digest[..8].copy_from_slice(&n.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes());
    let entry = entry_at(received_at_ms);
    let Appended::New(inbox_id) = store.append_inbox(&entry, Some(Dedup { digest: &digest, window_ms: u64::MAX })).await.unwrap() else {
        panic!("webhook {n} taken for a duplicate");
    };
    // The normalizer's read of the record, which its write then expects.
    let expected = match store.get_state("bench", RecordKind::Reservation, &record_id).unwrap() {
        Some((_, revision)) => Expected::At(revision),
        None => Expected::Absent,
    };
    let delivery_id = store.new_delivery_id().unwrap();
    let event_id = format!("{:08x}-{:04x}-7000-8000-{n:012x}", received_at_ms >> 16, received_at_ms & 0xffff);
    let delivery = Delivery {
        id: delivery_id,
        event_id: event_id.clone(),
        subscription_id: "sub".into(),
        account_id: "bench".into(),
        lane: record_id.clone(),
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
            record_id: record_id.clone(),
            record: record.clone(),
            result: EventResult::Success,
            failure_reason: None,
            inbox_id: inbox_id.to_string(),
            origin: stayhook::store::Origin::Webhook,
        }],
        state: vec![StateWrite {
            account_id: "bench".into(),
            kind: RecordKind::Reservation,
            record_id,
            record: Some(Arc::new(record.clone())),
            expected,
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
    // A lease of the bench's own (writers run concurrently, each attempting its own delivery; the
    // scheduler's leasing is bookkeeping in memory, not a write).
    let leased = Leased::new(delivery, || {});
    store.record_attempt(&leased, &delivered, Some(&attempt), 0, true).await.unwrap();
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

/// Resident memory of this process, in bytes.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

/// The store alone growing past its retention window: `STORE_GROWTH_EVENTS` (300,000) events on
/// `STORE_RECORDS` (50,000) reservations updated in turn, in rounds of 5,000 from 64 writers, one
/// arriving at the wall-clock time of their round; after each round a retention pass keeps the last `STORE_WINDOW`
/// (60,000) events and raw webhooks and the digests of that window (as the daemon's pruner and
/// digest expiry do). Printed every 50,000 events: sled's index and the segments on disk, RSS, CPU
/// per event; at the end the time to open the store again (start-up's storage part).
/// `STORE_CACHE_MB` (32, the daemon's default) sets sled's page cache.
fn growth() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().max_blocking_threads(512).build().unwrap();
    let events = env_number("STORE_GROWTH_EVENTS", 300_000);
    let records = env_number("STORE_RECORDS", 50_000).max(1);
    let window = env_number("STORE_WINDOW", 60_000);
    let cache_bytes = env_number("STORE_CACHE_MB", 32) << 20;
    let (round, writers) = (5_000, 64);
    let base = std::env::var_os("BENCH_DIR").unwrap_or_else(|| env!("CARGO_TARGET_TMPDIR").into());
    let dir = tempfile::tempdir_in(&base).unwrap();
    let path = dir.path().join("data");
    println!(
        "growth: {events} events on {records} records, the last {window} kept, pruned every {round}, sled cache {} MiB",
        cache_bytes >> 20
    );
    println!("{:>9} {:>10} {:>13} {:>8} {:>13}", "events", "index MiB", "segments MiB", "RSS MiB", "CPU µs/event");
    // The unified record the Hostaway plugin renders for BODY (what the daemon stores as state).
    let expected: serde_json::Value = serde_json::from_slice(EXPECTED).unwrap();
    let record = expected[0]["record"].clone();
    let mib = |bytes: u64| bytes as f64 / (1 << 20) as f64;
    {
        let store = stayhook::store::open_data_dir(&path, cache_bytes, 16 << 20).unwrap();
        let (mut cpu, mut printed) = (cpu_time(), 0);
        // Each round's events arrive at the wall-clock time the round starts (as the listener
        // stamps them, so segment files' ages compare with the cutoffs as in the daemon).
        let mut round_started_ms = Vec::new();
        // STORE_PRUNE_CONCURRENT=1: prune from a thread of its own every second while the
        // writers go on, as the daemon's pruner does, instead of between rounds.
        let pruner = (env_number("STORE_PRUNE_CONCURRENT", 0) == 1).then(|| {
            let latest = Arc::new(std::sync::Mutex::new(None::<u64>));
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let (store, seen, stopped) = (store.clone(), latest.clone(), stop.clone());
            let thread = std::thread::spawn(move || {
                while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_secs(1));
                    let Some(cutoff) = *seen.lock().unwrap() else { continue };
                    let now_ms = stayhook::model::time::unix_ms();
                    let cutoffs = stayhook::store::RetentionCutoffs {
                        events_before_ms: cutoff,
                        inbox_before_ms: cutoff,
                        dead_letters_before_ms: cutoff,
                        now_ms,
                    };
                    while store.prune_blocking(&cutoffs, 5_000).unwrap().more {}
                    store.expire_digests_blocking(now_ms, now_ms - cutoff).unwrap();
                }
            });
            (latest, (stop, thread))
        });
        for start in (0..events).step_by(round as usize) {
            let end = (start + round).min(events);
            let round_ms = stayhook::model::time::unix_ms().max(round_started_ms.last().map_or(0, |last| last + 1));
            round_started_ms.push(round_ms);
            runtime.block_on(async {
                let tasks: Vec<_> = (0..writers)
                    .map(|writer| {
                        let (store, record) = (store.clone(), record.clone());
                        tokio::spawn(async move {
                            for n in (start + writer..end).step_by(writers as usize) {
                                one_event_of(&store, round_ms, n, format!("r{}", n % records), &record).await;
                            }
                        })
                    })
                    .collect();
                for task in tasks {
                    task.await.unwrap();
                }
            });
            // Keep the rounds holding the last `window` events: the cutoff is the arrival time of
            // the oldest round kept.
            let now_ms = stayhook::model::time::unix_ms();
            let first_kept = (end.saturating_sub(window) / round) as usize;
            let cutoff = round_started_ms[first_kept.min(round_started_ms.len() - 1)];
            let cutoffs = stayhook::store::RetentionCutoffs {
                events_before_ms: cutoff,
                inbox_before_ms: cutoff,
                dead_letters_before_ms: cutoff,
                now_ms,
            };
            match &pruner {
                Some((latest, _)) => *latest.lock().unwrap() = Some(cutoff),
                None => {
                    while store.prune_blocking(&cutoffs, 10_000).unwrap().more {}
                    store.expire_digests_blocking(now_ms, now_ms - cutoff).unwrap();
                }
            }
            if end % 50_000 == 0 || end == events {
                let spent = cpu_time() - cpu;
                cpu = cpu_time();
                println!(
                    "{end:>9} {:>10.0} {:>13.0} {:>8.0} {:>13.1}",
                    mib(dir_size(&path.join("store").join("index"))),
                    mib(dir_size(&path.join("store").join("segments"))),
                    mib(rss_bytes()),
                    spent.as_secs_f64() * 1e6 / (end - printed) as f64
                );
                printed = end;
            }
        }
        if let Some((_, (stop, thread))) = pruner {
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            thread.join().unwrap();
        }
        store.flush_blocking().unwrap();
    }
    // The writer thread lets go of sled's lock once it sees the last handle gone.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (reopened, took) = loop {
        let started = Instant::now();
        match stayhook::store::open_data_dir(&path, cache_bytes, 16 << 20) {
            Ok(store) => break (store, started.elapsed()),
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(error) => panic!("the store does not open again: {error}"),
        }
    };
    println!("open again: {} ms", took.as_millis());
    drop(reopened);
}

fn main() {
    let wanted: Vec<String> = std::env::args().skip(1).filter(|arg| !arg.starts_with('-')).collect();
    let runs = |name: &str| wanted.is_empty() || wanted.iter().any(|filter| name.contains(filter.as_str()));
    if runs("hot_path") {
        hot_path();
    }
    // Not part of a plain run: it takes minutes.
    if wanted.iter().any(|filter| filter == "growth") {
        growth();
    }
    if runs("durable_append") {
        let mut criterion = Criterion::default().configure_from_args();
        bench(&mut criterion);
        criterion.final_summary();
    }
}
