//! Durability: what the listener acknowledged survives a SIGKILL, and is normalized and delivered
//! after the restart.

use std::time::Duration;

use serde_json::json;

use crate::support::{Daemon, DaemonOptions, Receiver, TestStore, hostaway_body, test_store};

#[tokio::test]
async fn acknowledged_then_killed_is_delivered_after_restart() {
    // The receiver fails everything while the first daemon runs, so no delivery can succeed
    // before the kill; the retry delay is long enough that the kill comes first.
    let receiver = Receiver::failing_first(usize::MAX).await;
    let mut daemon = Daemon::start(DaemonOptions::default().retry_schedule("2s,2s,2s")).await;
    let account = daemon.create_account(json!({"id": "durable", "workspaceId": "ws", "pms": "hostaway"})).await;
    assert_eq!(account["id"], "durable");
    daemon.subscribe("durable", &receiver.url).await;

    let mut inbox_ids = Vec::new();
    for case in ["reservation-created", "reservation-updated-dates-moved"] {
        let (status, answer) = daemon.post_webhook("durable", &hostaway_body(case), &[]).await;
        assert_eq!(status, 200, "{answer}");
        inbox_ids.push(answer["inboxId"].as_str().unwrap().to_string());
    }
    daemon.kill();
    receiver.fail_next(0);
    // Drain the refused attempts of the first daemon, if any were made.
    while let Some(received) = receiver.next_within(Duration::from_millis(200)).await {
        assert_eq!(received.answered, 500);
    }

    daemon.restart();
    // Both events of reservation 13 arrive, in order, whichever step the kill interrupted.
    let mut delivered = Vec::new();
    for _ in 0..2 {
        let envelope = receiver.next_success().await.json();
        assert_eq!(envelope["data"]["record"]["id"], "13");
        delivered.push(envelope["hook"]["eventType"].as_str().unwrap().to_string());
    }
    assert_eq!(delivered, ["reservation.created", "reservation.updated"]);
    for inbox_id in inbox_ids {
        assert_eq!(daemon.inbox_outcome(&inbox_id).await["status"], "done");
    }
}

/// The newest segment file of a data dir's store.
fn newest_segment(data_dir: &std::path::Path) -> std::path::PathBuf {
    let mut segments: Vec<_> = std::fs::read_dir(data_dir.join("store/segments"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "seg"))
        .collect();
    segments.sort();
    segments.pop().expect("a segment file")
}

#[tokio::test]
async fn a_torn_segment_tail_after_sigkill_is_cut_and_nothing_acknowledged_is_lost() {
    let receiver = Receiver::failing_first(usize::MAX).await;
    let mut daemon = Daemon::start(DaemonOptions::default().retry_schedule("2s,2s,2s")).await;
    daemon.create_account(json!({"id": "torn", "workspaceId": "ws", "pms": "hostaway"})).await;
    daemon.subscribe("torn", &receiver.url).await;
    for case in ["reservation-created", "reservation-updated-dates-moved"] {
        let (status, answer) = daemon.post_webhook("torn", &hostaway_body(case), &[]).await;
        assert_eq!(status, 200, "{answer}");
    }
    daemon.kill();
    receiver.fail_next(0);
    while let Some(received) = receiver.next_within(Duration::from_millis(200)).await {
        assert_eq!(received.answered, 500);
    }

    // What a write cut short leaves: a record header announcing 4,000 bytes and 1,000 of them.
    let segment = newest_segment(&daemon.data_dir());
    let intact = std::fs::metadata(&segment).unwrap().len();
    let mut torn = Vec::new();
    torn.extend_from_slice(&4_000u32.to_le_bytes());
    torn.extend_from_slice(&0xdead_beefu32.to_le_bytes());
    torn.extend_from_slice(&[b'{'; 1_000]);
    let mut file = std::fs::OpenOptions::new().append(true).open(&segment).unwrap();
    std::io::Write::write_all(&mut file, &torn).unwrap();
    drop(file);

    daemon.restart();
    let mut delivered = Vec::new();
    for _ in 0..2 {
        let envelope = receiver.next_success().await.json();
        assert_eq!(envelope["data"]["record"]["id"], "13");
        delivered.push(envelope["hook"]["eventType"].as_str().unwrap().to_string());
    }
    assert_eq!(delivered, ["reservation.created", "reservation.updated"]);
    assert!(daemon.log().contains("cutting a torn record"), "the cut is logged");
    assert!(std::fs::metadata(&segment).unwrap().len() >= intact, "the intact records stay");

    // New records go where the torn one was, and read back whole after another restart.
    let (status, answer) = daemon.post_webhook("torn", &hostaway_body("reservation-cancelled"), &[]).await;
    assert_eq!(status, 200, "{answer}");
    let inbox_id = answer["inboxId"].as_str().unwrap().to_string();
    assert_eq!(receiver.next_success().await.json()["data"]["record"]["cancelledAt"], "2017-07-01T00:00:00.000Z");
    assert!(daemon.terminate(), "SIGTERM ends the daemon with success");
    daemon.restart();
    let (status, entry) = daemon.admin("GET", &format!("/v1/inbox/{inbox_id}"), None).await;
    assert_eq!(status, 200, "{entry}");
    assert_eq!(entry["status"], "done", "{entry}");
    let (status, events) = daemon.admin("GET", "/v1/events?accountId=torn", None).await;
    assert_eq!(status, 200, "{events}");
    assert_eq!(events["events"].as_array().map(Vec::len), Some(3), "{events}");
}

#[tokio::test]
async fn graceful_stop_and_restart_keeps_accounts_and_state() {
    let receiver = Receiver::start().await;
    let mut daemon = Daemon::start(DaemonOptions::default()).await;
    daemon.create_account(json!({"id": "kept", "workspaceId": "ws", "pms": "hostaway"})).await;
    daemon.subscribe("kept", &receiver.url).await;
    daemon.post_webhook("kept", &hostaway_body("reservation-created"), &[]).await;
    assert_eq!(receiver.next().await.json()["hook"]["eventType"], "reservation.created");
    assert!(daemon.terminate(), "SIGTERM ends the daemon with success");

    daemon.restart();
    // State survived: the same reservation with moved dates is an update, not a creation.
    daemon.post_webhook("kept", &hostaway_body("reservation-updated-dates-moved"), &[]).await;
    let envelope = receiver.next().await.json();
    assert_eq!(envelope["hook"]["eventType"], "reservation.updated");
    assert_eq!(envelope["data"]["record"]["previousArrivalDate"], "2017-07-15T00:00:00.000Z");
}

// Multi-threaded: `terminate` blocks this thread until the daemon exits, and the receiver must
// go on answering meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_waits_for_the_delivery_in_flight_and_does_not_send_it_again() {
    let receiver = Receiver::start().await;
    let mut daemon = Daemon::start(DaemonOptions::default()).await;
    daemon.create_account(json!({"id": "inflight", "workspaceId": "ws", "pms": "hostaway"})).await;
    daemon.subscribe("inflight", &receiver.url).await;
    // The receiver takes the delivery at once but answers only after a while: SIGTERM arrives
    // while the attempt is in flight.
    receiver.delay_answers(Duration::from_millis(1500));
    daemon.post_webhook("inflight", &hostaway_body("reservation-created"), &[]).await;
    let first = receiver.next().await;
    assert_eq!(first.json()["hook"]["eventType"], "reservation.created");
    assert!(daemon.terminate(), "SIGTERM ends the daemon with success");

    // The stop waited for the answer and recorded it: the restarted daemon does not send the
    // event again, and says it was delivered, once.
    receiver.delay_answers(Duration::ZERO);
    daemon.restart();
    receiver.expect_nothing(Duration::from_secs(2)).await;
    let event_id = first.header("webhook-id");
    let (status, attempts) = daemon.admin("GET", &format!("/v1/events/{event_id}/attempts"), None).await;
    assert_eq!(status, 200, "{attempts}");
    let attempts = attempts["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    assert_eq!(attempts[0]["success"], true);
}

/// A delivery behind a failing one in its lane is never attempted, so its only record is its
/// webhook's inbox entry (storage format 3 writes no record of its own until something changes
/// it). Killed then, the restarted daemon finds it there and delivers it after the head, in order.
#[tokio::test]
async fn a_delivery_never_attempted_before_sigkill_is_found_after_restart_and_delivered_in_order() {
    let receiver = Receiver::failing_first(usize::MAX).await;
    let mut daemon = Daemon::start(DaemonOptions::default().retry_schedule("2s,2s,2s,2s,2s,2s,2s,2s")).await;
    daemon.create_account(json!({"id": "lanes", "workspaceId": "ws", "pms": "hostaway"})).await;
    daemon.subscribe("lanes", &receiver.url).await;

    let (status, answer) = daemon.post_webhook("lanes", &hostaway_body("reservation-created"), &[]).await;
    assert_eq!(status, 200, "{answer}");
    daemon.inbox_outcome(answer["inboxId"].as_str().unwrap()).await;
    assert_eq!(receiver.next().await.answered, 500, "the head's first attempt fails");
    let (status, answer) = daemon.post_webhook("lanes", &hostaway_body("reservation-updated-dates-moved"), &[]).await;
    assert_eq!(status, 200, "{answer}");
    let outcome = daemon.inbox_outcome(answer["inboxId"].as_str().unwrap()).await;
    let behind = outcome["outcome"]["eventIds"][0].as_str().expect("the update made an event").to_string();
    let (status, event) = daemon.admin("GET", &format!("/v1/events/{behind}"), None).await;
    assert_eq!(status, 200, "{event}");
    assert_eq!(event["deliveries"][0]["status"], "pending", "{event}");
    assert_eq!(event["deliveries"][0]["attempts"], 0, "waiting behind the head, never attempted: {event}");
    // Normalized runs are made durable by the next flush (a crash before it replays them), and a
    // webhook's acceptance is one: after it, the run above is on disk.
    let (status, answer) = daemon.post_webhook("lanes", br#"{"not": "hostaway"}"#, &[]).await;
    assert_eq!(status, 200, "{answer}");

    daemon.kill();
    receiver.fail_next(0);
    daemon.restart();
    if test_store() == TestStore::Sled {
        // The embedded store's recovery finds it in the inbox entry (on NATS the delivery is a
        // work message of its own from the start).
        daemon
            .wait_for("the store's recovery to report the unwritten delivery", async |daemon| {
                daemon.log().contains("n_unwritten=1").then_some(())
            })
            .await;
    }
    let mut delivered = Vec::new();
    while delivered.len() < 2 {
        let received = receiver.next().await;
        if received.answered == 200 {
            delivered.push(received.json()["hook"]["eventType"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(delivered, ["reservation.created", "reservation.updated"]);
    let delivery = daemon
        .wait_for("the delivery's attempt to be recorded", async |daemon| {
            let (_, event) = daemon.admin("GET", &format!("/v1/events/{behind}"), None).await;
            (event["deliveries"][0]["status"] == "delivered").then(|| event["deliveries"][0].clone())
        })
        .await;
    assert_eq!(delivery["attempts"], 1, "{delivery}");
}

/// The window a crash or a full disk can stop a commit in: the run's events and state are on
/// disk, its webhook is still pending. The next start runs the webhook again under the same ids;
/// its decision finds the state the stopped run wrote (so the record looks unchanged), and the
/// event that run wrote is delivered all the same, once.
#[tokio::test]
async fn a_run_stopped_after_its_state_was_written_delivers_its_event_once_after_restart() {
    let receiver = Receiver::start().await;
    let mut daemon = Daemon::start(DaemonOptions::default()).await;
    daemon.create_account(json!({"id": "window", "workspaceId": "ws", "pms": "hostaway"})).await;
    daemon.subscribe("window", &receiver.url).await;
    daemon.set_env("STAYHOOK_TEST_ABORT_AFTER_STATE", "1");
    daemon.restart();

    let (status, answer) = daemon.post_webhook("window", &hostaway_body("reservation-created"), &[]).await;
    assert_eq!(status, 200, "{answer}");
    let inbox_id = answer["inboxId"].as_str().unwrap().to_string();
    let exit = daemon.wait_exit(Duration::from_secs(30)).await;
    assert!(exit.is_some_and(|status| !status.success()), "the daemon aborted inside the commit: {exit:?}");
    assert!(daemon.log().contains("aborting with this run's events and state on disk"));

    daemon.remove_env("STAYHOOK_TEST_ABORT_AFTER_STATE");
    daemon.restart();
    let envelope = receiver.next_success().await.json();
    assert_eq!(envelope["hook"]["eventType"], "reservation.created");
    assert_eq!(envelope["data"]["record"]["id"], "13");
    let outcome = daemon.inbox_outcome(&inbox_id).await;
    assert_eq!(outcome["status"], "done", "{outcome}");
    assert_eq!(outcome["outcome"]["nUnchanged"], 0, "{outcome}");
    let event_ids = outcome["outcome"]["eventIds"].as_array().cloned().unwrap_or_default();
    assert_eq!(event_ids.len(), 1, "the outcome names the event: {outcome}");
    let delivery = daemon
        .wait_for("the delivery's attempt to be recorded", async |daemon| {
            let (_, event) = daemon.admin("GET", &format!("/v1/events/{}", event_ids[0].as_str()?), None).await;
            (event["deliveries"][0]["status"] == "delivered").then(|| event["deliveries"].clone())
        })
        .await;
    assert_eq!(delivery.as_array().map(Vec::len), Some(1), "{delivery}");
    assert!(daemon.log().contains("a repeated run takes again the events its stopped run wrote"));
    assert!(receiver.next_within(Duration::from_millis(500)).await.is_none(), "delivered once");
}

/// Compare-and-set on state: a record another writer changes between the normalizer's decision
/// and its commit (a second node committing the same reservation; `STAYHOOK_TEST_CONFLICT_ONCE`
/// writes that change inside the real commit path) fails the commit, and the webhook is decided
/// again against the new state: an update of the other writer's version, never a second
/// `created`, delivered once.
#[tokio::test]
async fn a_record_changed_by_another_writer_before_the_commit_is_decided_again_against_the_new_state() {
    let receiver = Receiver::start().await;
    let daemon = Daemon::start(DaemonOptions::default().env("STAYHOOK_TEST_CONFLICT_ONCE", "1")).await;
    daemon.create_account(json!({"id": "raced", "workspaceId": "ws", "pms": "hostaway"})).await;
    daemon.subscribe("raced", &receiver.url).await;

    let (status, answer) = daemon.post_webhook("raced", &hostaway_body("reservation-created"), &[]).await;
    assert_eq!(status, 200, "{answer}");
    let inbox_id = answer["inboxId"].as_str().unwrap().to_string();
    let envelope = receiver.next_success().await.json();
    assert_eq!(envelope["hook"]["eventType"], "reservation.updated", "decided against the other writer's version: {envelope}");
    assert_eq!(envelope["data"]["record"]["id"], "13");
    assert_eq!(envelope["data"]["record"]["previousArrivalDate"], "2000-01-01", "{envelope}");
    assert_ne!(envelope["data"]["record"]["arrivalDate"], "2000-01-01", "{envelope}");
    let log = daemon.log();
    assert!(log.contains("another writer changes the record before the commit"), "the hook ran");
    assert!(log.contains("deciding them again"), "the commit failed on the changed record");
    let outcome = daemon.inbox_outcome(&inbox_id).await;
    assert_eq!(outcome["status"], "done", "{outcome}");
    assert_eq!(outcome["outcome"]["eventIds"].as_array().map(Vec::len), Some(1), "{outcome}");
    assert!(receiver.next_within(Duration::from_millis(500)).await.is_none(), "delivered once");
}
