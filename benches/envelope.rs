//! Rendering the outgoing envelope of one reservation event (the seed's
//! `reservation.created` record) and signing it (Standard Webhooks HMAC-SHA256), against the
//! floor: serializing the record alone with serde_json.
//!
//! `cargo bench --bench envelope`

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::Value;
use stayhook::deliver::envelope;
use stayhook::model::{EventResult, EventType};
use stayhook::store::{StoredEvent, Subscription};

fn bench(c: &mut Criterion) {
    let seed: Value = serde_json::from_str(include_str!("../tests/fixtures/seed/reservation.created.json")).unwrap();
    let record = seed["data"]["record"].clone();
    let event = StoredEvent {
        id: "0193a0f2-7b1e-7c3d-9a51-3f0c2d1e4b5a".into(),
        event_type: EventType::ReservationCreated,
        timestamp: "2026-11-23T10:00:00.000Z".into(),
        integration_account_id: "acct-1".into(),
        workspace_id: "ws-1".into(),
        record_id: record["id"].as_str().unwrap_or("r1").into(),
        record,
        result: EventResult::Success,
        failure_reason: None,
        inbox_id: "1".into(),
    };
    let subscription = Subscription {
        id: "sub-1".into(),
        account_id: "acct-1".into(),
        name: "bench".into(),
        url: "https://hooks.example.com".into(),
        enabled: true,
        event_types: vec![EventType::ReservationCreated],
        secret: envelope::new_secret(),
        failing_since_ms: None,
        disabled_reason: None,
        created_at: String::new(),
        updated_at: String::new(),
    };
    let body = envelope::render(&event, &subscription);
    let mut group = c.benchmark_group("envelope");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("floor: serialize the record alone", |b| b.iter(|| serde_json::to_vec(std::hint::black_box(&event.record)).unwrap()));
    group.bench_function("render", |b| b.iter(|| envelope::render(std::hint::black_box(&event), &subscription)));
    group.bench_function("sign", |b| b.iter(|| envelope::sign(&subscription.secret, &event.id, 1_763_000_000, std::hint::black_box(&body))));
    group.bench_function("render + sign", |b| {
        b.iter(|| {
            let body = envelope::render(std::hint::black_box(&event), &subscription);
            envelope::sign(&subscription.secret, &event.id, 1_763_000_000, &body)
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
