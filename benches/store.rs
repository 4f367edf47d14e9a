//! Durable append of raw webhooks at 1, 16 and 256 concurrent writers: the store's group commit
//! (one flush acknowledges every append made before it, `src/store/sled_backend/commit.rs`) against a flush per
//! append (each writer makes its own append durable, which is what the listener would do without
//! group commit). Both on a real sled store in a temp dir on this machine's disk.
//!
//! `cargo bench --bench store`

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use stayhook::store::{InboxEntry, Store};

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

criterion_group!(benches, bench);
criterion_main!(benches);
