//! Durability: what the listener acknowledged survives a SIGKILL, and is normalized and delivered
//! after the restart.

use std::time::Duration;

use serde_json::json;

use crate::support::{Daemon, DaemonOptions, Receiver, hostaway_body};

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
