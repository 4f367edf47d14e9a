//! SIGTERM: graceful stops in the middle of load and of deliveries in flight must lose nothing and
//! deliver nothing twice; readiness on both listeners.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rand::Rng;
use serde_json::Value;

use super::{
    Account, Load, Seen, blocking, check_answers, check_ids_stable, check_nothing_lost, check_record_order, options, scaled, seeded_rng,
    summary,
};
use crate::support::{Daemon, DaemonOptions, Receiver};

const SCHEDULE: &str = "100ms,500ms,1s,2s,5s";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_loses_nothing_and_delivers_nothing_twice() {
    const TEST: &str = "sigterm-under-load";
    let mut rng = seeded_rng(TEST);
    let n_stops = scaled(3);
    let receiver = Receiver::start().await;
    // Deliveries take a moment, so some are in flight when SIGTERM comes.
    receiver.delay_answers(Duration::from_millis(20));
    let mut daemon = Daemon::start(options(SCHEDULE)).await;
    let account = Account::create(&daemon, "sigterm", &receiver.url).await;
    let load = Load::new(account);
    let mut seen = Seen::default();
    let mut exits = Vec::new();

    for _ in 0..n_stops {
        load.allow(u64::try_from(scaled(400)).unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let clients = load.spawn_clients(&daemon.ingest_url, 4, stop.clone());
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..700))).await;
        daemon.sigterm();
        // The clients go on until the listener stops answering.
        let exit = daemon.wait_exit(Duration::from_secs(60)).await;
        stop.store(true, Ordering::SeqCst);
        for client in clients {
            client.await.unwrap();
        }
        exits.push(exit);
        assert!(exit.is_some_and(|status| status.success()), "{TEST}: SIGTERM did not end the daemon with success: {exit:?}");
        seen.drain(&receiver, Duration::ZERO).await;
        blocking(|| daemon.start_again());
    }
    let stop = Arc::new(AtomicBool::new(false));
    for client in load.spawn_clients(&daemon.ingest_url, 4, stop) {
        client.await.unwrap();
    }
    // The clients are done: the ledger is final.
    let ledger = std::mem::take(&mut *load.ledger.lock().unwrap());
    let all_arrived = seen.collect_until(&receiver, Duration::from_secs(90), |seen| seen.missing(&ledger.acknowledged).is_empty()).await;
    seen.drain(&receiver, Duration::from_secs(1)).await;
    summary(TEST, &format!("stops={n_stops} all_arrived={all_arrived}"), &ledger, &seen);

    // While stopping, the listener may refuse with 503 (the PMS retries).
    check_answers(TEST, &ledger, &[(503, "*")]);
    check_nothing_lost(TEST, &ledger, &seen);
    check_ids_stable(TEST, &seen);
    check_record_order(TEST, &seen);
    assert_eq!(seen.redelivered_same_id(), 0, "{TEST}: a graceful stop delivered an event twice");
}

/// `GET path` on `base` without credentials: (status, JSON body or Null), `None` without answer.
pub async fn probe(http: &reqwest::Client, base: &str, path: &str) -> Option<(u16, Value)> {
    let response = http.get(format!("{base}{path}")).send().await.ok()?;
    let status = response.status().as_u16();
    let text = response.text().await.ok()?;
    Some((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

#[tokio::test]
async fn readiness_and_health_are_answered_on_both_listeners_once_started() {
    let daemon = Daemon::start(DaemonOptions::default()).await;
    // The harness returns as soon as the daemon printed its addresses: it must answer by then.
    for base in [&daemon.ingest_url, &daemon.admin_url] {
        let ready = probe(&daemon.http, base, "/readyz").await;
        assert_eq!(ready, Some((200, serde_json::json!({"status": "ready"}))), "/readyz on {base}");
        let health = probe(&daemon.http, base, "/healthz").await;
        assert_eq!(health.map(|(status, _)| status), Some(200), "/healthz on {base}");
    }
}
