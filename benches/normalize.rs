//! One `normalize` call on a realistic 4.3 KB Hostaway reservation webhook: the plugin in
//! WebAssembly (the built-in component, one reused instance, as a normalizer thread runs it)
//! against the very same mapping code compiled natively (`stayhook_plugin_hostaway::mapping`), so
//! the ratio is the cost of the sandbox and nothing else. Rendering the seed's JSON is host code
//! on both paths and is measured separately.
//!
//! `cargo bench --bench normalize`
//!
//! After criterion's wall-clock medians it runs an interleaved A/B: rounds of native calls and
//! wasm calls, alternating, each timed by this thread's CPU clock. Time the machine gives to
//! other processes is not counted, and alternation spreads drift over both paths; on a shared
//! machine this ratio is the steadier of the two (BENCHMARKS.md reports both).

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use stayhook::model;
use stayhook::plugin::bindings::stayhook::plugin::types as wit;
use stayhook::plugin::{PluginLimits, PluginRegistry};
use stayhook_plugin_sdk::model as sdk;

const BODY: &[u8] = include_bytes!("../plugins/hostaway/tests/cases/reservation-created/body.json");

fn bench(c: &mut Criterion) {
    let limits = PluginLimits { memory_bytes: 64 << 20, timeout: Duration::from_secs(2), epoch_tick: Duration::from_millis(10) };
    let cache = tempfile::tempdir().unwrap();
    let registry = PluginRegistry::new(limits, cache.path().to_path_buf()).unwrap();
    registry.load_all(None).unwrap();
    let plugin = registry.get("hostaway").unwrap();
    let mut session = plugin.session().unwrap();

    let host_inbound = wit::Inbound {
        account: wit::AccountContext { id: "bench".into(), workspace_id: "ws".into(), settings: Vec::new() },
        method: "POST".into(),
        query: String::new(),
        content_type: Some("application/json".into()),
        headers: Vec::new(),
        body: BODY.to_vec(),
        received_at: "2026-11-22T10:00:00Z".into(),
    };
    let native_inbound = sdk::Inbound {
        account: sdk::AccountContext { id: "bench".into(), workspace_id: "ws".into(), settings: Vec::new() },
        method: "POST".into(),
        query: String::new(),
        content_type: Some("application/json".into()),
        headers: Vec::new(),
        body: BODY.to_vec(),
        received_at: "2026-11-22T10:00:00Z".into(),
    };

    let mut group = c.benchmark_group("normalize_hostaway_reservation_4kb");
    group.bench_function("native", |b| {
        b.iter(|| stayhook_plugin_hostaway::mapping::normalize(std::hint::black_box(&native_inbound), &[]).unwrap())
    });
    group.bench_function("wasm_reused_instance", |b| {
        b.iter(|| session.normalize(std::hint::black_box(&host_inbound), &[]).unwrap().unwrap())
    });
    group.finish();

    let events = match session.normalize(&host_inbound, &[]).unwrap().unwrap() {
        wit::Outcome::Done(events) => events,
        wit::Outcome::Fetch(_) => panic!("the reservation webhook needs no API call"),
    };
    c.bench_function("render_seed_json", |b| b.iter(|| model::render_event(std::hint::black_box(&events[0])).unwrap()));

    let (mut native, mut wasm) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        native.push(cpu_time_per_call(|| {
            stayhook_plugin_hostaway::mapping::normalize(std::hint::black_box(&native_inbound), &[]).unwrap();
        }));
        wasm.push(cpu_time_per_call(|| {
            session.normalize(std::hint::black_box(&host_inbound), &[]).unwrap().unwrap();
        }));
    }
    let (native, wasm) = (median(native), median(wasm));
    println!(
        "thread CPU time per call, median of {ROUNDS} interleaved rounds of {CALLS_PER_ROUND}: native {:.1} µs, wasm {:.1} µs, ratio {:.2}; {:.0} reservations/s per core in wasm",
        native * 1e6,
        wasm * 1e6,
        wasm / native,
        1.0 / wasm
    );
}

const ROUNDS: usize = 15;
const CALLS_PER_ROUND: u32 = 2_000;

/// This thread's CPU seconds per call of `call`, over [`CALLS_PER_ROUND`] calls.
fn cpu_time_per_call(mut call: impl FnMut()) -> f64 {
    let started = thread_cpu_seconds();
    for _ in 0..CALLS_PER_ROUND {
        call();
    }
    (thread_cpu_seconds() - started) / f64::from(CALLS_PER_ROUND)
}

fn thread_cpu_seconds() -> f64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    let status = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    assert_eq!(status, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    now.tv_sec as f64 + now.tv_nsec as f64 * 1e-9
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

criterion_group!(benches, bench);
criterion_main!(benches);
