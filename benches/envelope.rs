//! Rendering the outgoing envelope of one reservation event (the seed's `reservation.created`
//! record) from the event's stored bytes, and signing it (Standard Webhooks HMAC-SHA256).
//!
//! The baseline is the way the daemon rendered envelopes before: decode the stored event into a
//! `serde_json::Value` tree and build the envelope with `json!` (which clones the record), then
//! serialize. The daemon now borrows the record's raw text from the stored bytes and copies it.
//!
//! `cargo bench --bench envelope`

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::{Value, json};
use stayhook::deliver::envelope::{self, EventView};
use stayhook::model::{EventResult, EventType};
use stayhook::store::StoredEvent;

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
        origin: stayhook::store::Origin::Webhook,
    };
    let stored = serde_json::to_vec(&event).unwrap();
    let secret = envelope::new_secret();
    let body = envelope::render(&EventView::parse(&stored).unwrap(), "sub-1");
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap(), tree_render(&stored, "sub-1").1, "both ways render the same envelope");

    let mut group = c.benchmark_group("envelope");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("baseline: decode to a tree, json!, serialize", |b| {
        b.iter(|| tree_render(std::hint::black_box(&stored), "sub-1").0)
    });
    group.bench_function("render from stored bytes", |b| {
        b.iter(|| envelope::render(&EventView::parse(std::hint::black_box(&stored)).unwrap(), "sub-1"))
    });
    group.bench_function("sign", |b| b.iter(|| envelope::sign(&secret, &event.id, 1_763_000_000, std::hint::black_box(&body))));
    group.bench_function("render from stored bytes + sign", |b| {
        b.iter(|| {
            let body = envelope::render(&EventView::parse(std::hint::black_box(&stored)).unwrap(), "sub-1");
            envelope::sign(&secret, &event.id, 1_763_000_000, &body)
        })
    });
    group.finish();
}

/// The previous renderer, kept here as the baseline.
fn tree_render(stored: &[u8], subscription_id: &str) -> (Vec<u8>, Value) {
    let event: StoredEvent = serde_json::from_slice(stored).unwrap();
    let envelope = json!({
        "hook": {"id": subscription_id, "eventType": event.event_type.as_str(), "timestamp": event.timestamp, "source": envelope::SOURCE},
        "data": {
            "integrationAccountId": event.integration_account_id,
            "workspaceId": event.workspace_id,
            "record": event.record,
            "result": event.result,
        },
    });
    (serde_json::to_vec(&envelope).unwrap(), envelope)
}

criterion_group!(benches, bench);
criterion_main!(benches);
