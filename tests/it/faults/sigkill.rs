//! SIGKILL: under concurrent load with racing retries, right after a `duplicate` answer, and in
//! the middle of a receiver outage. The kill is a real SIGKILL of the daemon's process: no
//! shutdown, no flush; the restart runs on the same data dir.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rand::Rng;

use super::{
    Account, Bodies, Load, Seen, Stage, attempts_of, blocking, check_answers, check_ids_stable, check_no_tight_loop, check_nothing_lost,
    check_record_order, options, scaled, seeded_rng, summary,
};
use crate::support::{Daemon, Receiver};

/// Long enough that a delivery is never dead-lettered while the receiver answers 200.
const SCHEDULE: &str = "100ms,500ms,1s,2s,5s";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_sigkill_under_load_with_racing_retries_loses_nothing_and_keeps_ids() {
    const TEST: &str = "sigkill-under-load";
    let mut rng = seeded_rng(TEST);
    let n_kills = scaled(10);
    let records_per_round = u64::try_from(scaled(400)).unwrap();
    let receiver = Receiver::start().await;
    let mut daemon = Daemon::start(options(SCHEDULE)).await;
    let account = Account::create(&daemon, "sigkill", &receiver.url).await;
    let load = Load::new(account);
    let mut seen = Seen::default();

    for _ in 0..n_kills {
        load.allow(records_per_round);
        let stop = Arc::new(AtomicBool::new(false));
        let clients = load.spawn_clients(&daemon.ingest_url, 4, stop.clone());
        // A random moment under load; the clients keep posting until the kill cuts them off.
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..800))).await;
        daemon.kill();
        stop.store(true, Ordering::SeqCst);
        for client in clients {
            client.await.unwrap();
        }
        seen.drain(&receiver, Duration::ZERO).await;
        blocking(|| daemon.start_again());
    }
    // The last daemon runs on: the PMS's pending retries are posted, then everything acknowledged
    // must arrive.
    let stop = Arc::new(AtomicBool::new(false));
    for client in load.spawn_clients(&daemon.ingest_url, 4, stop) {
        client.await.unwrap();
    }
    // The clients are done: the ledger is final.
    let ledger = std::mem::take(&mut *load.ledger.lock().unwrap());
    let all_arrived = seen.collect_until(&receiver, Duration::from_secs(120), |seen| seen.missing(&ledger.acknowledged).is_empty()).await;
    // Late repeats of the same ids, if any, are counted too.
    seen.drain(&receiver, Duration::from_millis(500)).await;
    summary(TEST, &format!("kills={n_kills} minted={} all_arrived={all_arrived}", load.minted()), &ledger, &seen);

    check_answers(TEST, &ledger, &[]);
    assert!(ledger.acknowledged.len() >= n_kills, "{TEST}: too little load to mean anything: {}", ledger.acknowledged.len());
    check_nothing_lost(TEST, &ledger, &seen);
    check_ids_stable(TEST, &seen);
    check_record_order(TEST, &seen);
    check_no_tight_loop(TEST, &seen, attempts_of(SCHEDULE) + n_kills);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_right_after_a_duplicate_answer_loses_nothing() {
    const TEST: &str = "sigkill-after-duplicate";
    const STREAMS: u64 = 6;
    let n_kills = scaled(12);
    let receiver = Receiver::start().await;
    let mut daemon = Daemon::start(options(SCHEDULE)).await;
    let account = Account::create(&daemon, "after-duplicate", &receiver.url).await;
    let bodies = Arc::new(Bodies::load());
    let mut seen = Seen::default();
    let mut acknowledged = std::collections::BTreeMap::new();
    let (mut kills_after_duplicate, mut duplicates_answered) = (0, 0);

    for round in 0..u64::try_from(n_kills).unwrap() {
        // Several bodies at once, each posted once and then again and again until an answer says
        // `duplicate`; that stream SIGKILLs the daemon at once, from its own task.
        let pid = libc::pid_t::try_from(daemon.pid().unwrap()).unwrap();
        let killed = Arc::new(AtomicBool::new(false));
        let url = format!("{}/listen/{}", daemon.ingest_url, account.id);
        let mut streams = Vec::new();
        for stream in 0..STREAMS {
            let record = round * STREAMS + stream + 1;
            let body = bodies.body(record, Stage::Created);
            let (url, authorization, killed) = (url.clone(), account.authorization.clone(), killed.clone());
            streams.push(tokio::spawn(async move {
                let http = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap();
                let post = || {
                    http.post(&url)
                        .header("content-type", "application/json")
                        .header("authorization", &authorization)
                        .body(body.clone())
                        .send()
                };
                let original = tokio::spawn(post());
                let mut answers = Vec::new();
                for _ in 0..200 {
                    if killed.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(response) = post().await else { break };
                    let status = response.status().as_u16();
                    let Ok(answer) = response.json::<serde_json::Value>().await else { break };
                    answers.push((status, answer["status"].as_str().unwrap_or_default().to_string()));
                    if status == 200 && answer["status"] == "duplicate" {
                        if !killed.swap(true, Ordering::SeqCst) {
                            // SAFETY: kill(2) on the daemon's pid, a child of this test process
                            // that is not reaped until `Daemon::kill` waits for it.
                            unsafe { libc::kill(pid, libc::SIGKILL) };
                        }
                        break;
                    }
                }
                if let Ok(Ok(response)) = original.await {
                    let status = response.status().as_u16();
                    if let Ok(answer) = response.json::<serde_json::Value>().await {
                        answers.push((status, answer["status"].as_str().unwrap_or_default().to_string()));
                    }
                }
                (record, answers)
            }));
        }
        for stream in streams {
            let (record, answers) = stream.await.unwrap();
            duplicates_answered += answers.iter().filter(|(_, status)| status == "duplicate").count();
            let acked: Vec<String> = answers.into_iter().filter(|(status, _)| *status == 200).map(|(_, status)| status).collect();
            if !acked.is_empty() {
                acknowledged.insert((record, Stage::Created), acked);
            }
        }
        kills_after_duplicate += usize::from(killed.load(Ordering::SeqCst));
        daemon.kill();
        seen.drain(&receiver, Duration::ZERO).await;
        blocking(|| daemon.start_again());
    }
    let ledger = super::Ledger { acknowledged, ..Default::default() };
    let all_arrived = seen.collect_until(&receiver, Duration::from_secs(90), |seen| seen.missing(&ledger.acknowledged).is_empty()).await;
    summary(
        TEST,
        &format!(
            "kills={n_kills} kills_right_after_duplicate={kills_after_duplicate} duplicate_answers={duplicates_answered} all_arrived={all_arrived}"
        ),
        &ledger,
        &seen,
    );
    assert!(kills_after_duplicate > 0, "{TEST}: no kill came right after a duplicate answer; the test proved nothing");
    check_nothing_lost(TEST, &ledger, &seen);
    check_ids_stable(TEST, &seen);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_outage_across_a_sigkill_delivers_everything_in_order_without_a_tight_loop() {
    const TEST: &str = "outage-across-sigkill";
    // Long enough to outlast the outage (about 4 s and a restart) without a dead letter.
    const OUTAGE_SCHEDULE: &str = "100ms,200ms,400ms,800ms,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s";
    let n_records = u64::try_from(scaled(20)).unwrap();
    let receiver = Receiver::start().await;
    receiver.fail_with(503);
    receiver.fail_next(usize::MAX);
    let mut daemon = Daemon::start(options(OUTAGE_SCHEDULE)).await;
    let account = Account::create(&daemon, "outage", &receiver.url).await;
    let load = Load::new(account);
    load.allow(n_records);
    for client in load.spawn_clients(&daemon.ingest_url, 2, Arc::new(AtomicBool::new(false))) {
        client.await.unwrap();
    }
    // Then a few creations alone: no later webhook's flush covers their normalized events.
    load.updates.store(false, std::sync::atomic::Ordering::SeqCst);
    load.allow(5);
    for client in load.spawn_clients(&daemon.ingest_url, 5, Arc::new(AtomicBool::new(false))) {
        client.await.unwrap();
    }
    assert_eq!(load.backlog(), 0, "{TEST}: the listener refused bodies: {:?}", load.ledger.lock().unwrap().answer_counts());

    // The receiver is down; kill the daemon as soon as the first attempt of one of the last
    // creations reaches it, whether or not what led to it was flushed yet.
    let mut seen = Seen::default();
    let last: Vec<String> = (n_records + 1..=n_records + 5).map(|record| record.to_string()).collect();
    let attempted =
        seen.collect_until(&receiver, Duration::from_secs(30), |seen| seen.posts.iter().any(|post| last.contains(&post.record))).await;
    assert!(attempted, "{TEST}: no attempt of reservations {last:?} during the outage");
    daemon.kill();
    seen.drain(&receiver, Duration::ZERO).await;
    blocking(|| daemon.start_again());
    // Still down for a while after the restart, then back.
    seen.collect_until(&receiver, Duration::from_secs(2), |_| false).await;
    receiver.fail_next(0);

    // The clients are done: the ledger is final.
    let ledger = std::mem::take(&mut *load.ledger.lock().unwrap());
    let all_arrived = seen.collect_until(&receiver, Duration::from_secs(60), |seen| seen.missing(&ledger.acknowledged).is_empty()).await;
    seen.drain(&receiver, Duration::from_millis(500)).await;
    let failed_attempts = seen.posts.iter().filter(|post| post.answered >= 300).count();
    summary(TEST, &format!("kills=1 failed_attempts={failed_attempts} all_arrived={all_arrived}"), &ledger, &seen);
    check_nothing_lost(TEST, &ledger, &seen);
    check_ids_stable(TEST, &seen);
    check_record_order(TEST, &seen);
    // Every attempt of the schedule, one more for the restart, one for the kill mid-attempt.
    check_no_tight_loop(TEST, &seen, attempts_of(OUTAGE_SCHEDULE) + 2);
}
