//! Retries: a failing receiver gets the event once it recovers, every attempt is logged, and a
//! receiver that never recovers ends in the dead letters, from where the event can be redelivered.

use serde_json::json;

use crate::support::{Daemon, DaemonOptions, Receiver};

#[tokio::test]
async fn three_failures_then_success_logs_four_attempts() {
    let receiver = Receiver::failing_first(3).await;
    let daemon = Daemon::start(DaemonOptions::default().retry_schedule("50ms,50ms,50ms,50ms").with_chaos()).await;
    let account = daemon.create_account(json!({"workspaceId": "ws", "pms": "chaos"})).await;
    let account_id = account["id"].as_str().unwrap();
    daemon.subscribe(account_id, &receiver.url).await;
    daemon.post_webhook(account_id, br#"{"behaviour": "ok", "id": "R1"}"#, &[]).await;

    let mut answered = Vec::new();
    let delivered = loop {
        let received = receiver.next().await;
        answered.push(received.answered);
        if received.answered == 200 {
            break received;
        }
    };
    assert_eq!(answered, [500, 500, 500, 200]);
    let event_id = delivered.header("webhook-id");
    let attempts = daemon
        .wait_for("the fourth attempt to be logged", async |daemon| {
            let (_, body) = daemon.admin("GET", &format!("/v1/events/{event_id}/attempts"), None).await;
            let attempts = body["attempts"].as_array().cloned().unwrap_or_default();
            (attempts.len() == 4).then_some(attempts)
        })
        .await;
    let codes: Vec<_> = attempts.iter().map(|attempt| attempt["statusCode"].as_u64().unwrap()).collect();
    assert_eq!(codes, [500, 500, 500, 200]);
    assert_eq!(attempts.iter().map(|attempt| attempt["attempt"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 2, 3, 4]);
    assert!(attempts[3]["success"].as_bool().unwrap());
    let (_, event) = daemon.admin("GET", &format!("/v1/events/{event_id}"), None).await;
    assert_eq!(event["deliveries"][0]["status"], "delivered");
    assert_eq!(event["deliveries"][0]["attempts"], 4);
}

#[tokio::test]
async fn exhausted_retries_dead_letter_and_redelivery_recovers() {
    let receiver = Receiver::failing_first(usize::MAX).await;
    let daemon = Daemon::start(DaemonOptions::default().retry_schedule("20ms,20ms").with_chaos()).await;
    let account = daemon.create_account(json!({"workspaceId": "ws", "pms": "chaos"})).await;
    let account_id = account["id"].as_str().unwrap();
    daemon.subscribe(account_id, &receiver.url).await;
    daemon.post_webhook(account_id, br#"{"behaviour": "ok", "id": "R2"}"#, &[]).await;

    let dead = daemon
        .wait_for("a dead letter", async |daemon| {
            let (_, body) = daemon.admin("GET", "/v1/dead-letters", None).await;
            body["deadLetters"].as_array().and_then(|dead| dead.first().cloned())
        })
        .await;
    assert_eq!(dead["attempts"], 3, "one attempt plus one per delay: {dead}");
    assert_eq!(dead["status"], "dead");
    assert_eq!(dead["lastError"], "HTTP 500");
    for _ in 0..3 {
        assert_eq!(receiver.next().await.answered, 500);
    }

    receiver.fail_next(0);
    let event_id = dead["eventId"].as_str().unwrap();
    let (status, answer) = daemon.admin("POST", &format!("/v1/events/{event_id}/redeliver"), None).await;
    assert_eq!(status, 202, "{answer}");
    let delivered = receiver.next().await;
    assert_eq!(delivered.answered, 200);
    assert_eq!(delivered.header("webhook-id"), event_id, "the same event, so receivers can deduplicate");
    let (_, after) = daemon.admin("GET", "/v1/dead-letters", None).await;
    assert_eq!(after["deadLetters"], json!([]), "redelivered events leave the dead letters");
}

#[tokio::test]
async fn an_endpoint_failing_for_too_long_is_disabled_and_says_so() {
    let receiver = Receiver::failing_first(usize::MAX).await;
    let daemon =
        Daemon::start(DaemonOptions::default().retry_schedule("10ms").with_chaos().env("STAYHOOK_DISABLE_AFTER_FAILING_SECS", "1")).await;
    let account = daemon.create_account(json!({"workspaceId": "ws", "pms": "chaos"})).await;
    let account_id = account["id"].as_str().unwrap();
    let webhook = daemon.subscribe(account_id, &receiver.url).await;
    let path = format!("/v1/accounts/{account_id}/webhooks/{}", webhook["id"].as_str().unwrap());

    daemon.post_webhook(account_id, br#"{"behaviour": "ok", "id": "F1"}"#, &[]).await;
    daemon
        .wait_for("the first dead letter", async |daemon| {
            daemon.admin("GET", "/v1/dead-letters", None).await.1["deadLetters"][0].as_object().cloned()
        })
        .await;
    let (_, shown) = daemon.admin("GET", &path, None).await;
    assert_eq!(shown["enabled"], true, "failing for less than the limit: still enabled: {shown}");
    assert!(shown["failingSince"].is_string());

    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    daemon.post_webhook(account_id, br#"{"behaviour": "ok", "id": "F2"}"#, &[]).await;
    let disabled = daemon
        .wait_for("the subscription to be disabled", async |daemon| {
            let (_, shown) = daemon.admin("GET", &path, None).await;
            (shown["enabled"] == false).then_some(shown)
        })
        .await;
    assert!(disabled["disabledReason"].as_str().unwrap().contains("every delivery has failed since"), "{disabled}");

    let (_, enabled) = daemon.admin("PATCH", &path, Some(json!({"enabled": true}))).await;
    assert_eq!(
        (enabled["enabled"].clone(), enabled["disabledReason"].clone(), enabled["failingSince"].clone()),
        (json!(true), json!(null), json!(null))
    );
}

/// Issue 10, item 5: dead-lettering released a record's lane, so its next event was delivered
/// before the dead-lettered one was redelivered. A dead letter now holds its lane until it is
/// redelivered (first) or discarded.
#[tokio::test]
async fn a_dead_letter_holds_back_its_record_until_redelivered_or_discarded() {
    let receiver = Receiver::failing_first(usize::MAX).await;
    let daemon = Daemon::start(DaemonOptions::default().retry_schedule("20ms,20ms").with_chaos()).await;
    let account = daemon.create_account(json!({"workspaceId": "ws", "pms": "chaos"})).await;
    let account_id = account["id"].as_str().unwrap();
    daemon.subscribe(account_id, &receiver.url).await;

    let mut dead_letters = Vec::new();
    for record_id in ["held-1", "held-2"] {
        daemon.post_webhook(account_id, format!(r#"{{"behaviour": "ok", "id": "{record_id}"}}"#).as_bytes(), &[]).await;
        let dead = daemon
            .wait_for("a dead letter", async |daemon| {
                let (_, body) = daemon.admin("GET", "/v1/dead-letters", None).await;
                for dead in body["deadLetters"].as_array()?.clone() {
                    let (_, event) = daemon.admin("GET", &format!("/v1/events/{}", dead["eventId"].as_str()?), None).await;
                    if event["recordId"] == record_id {
                        return Some(dead);
                    }
                }
                None
            })
            .await;
        for _ in 0..3 {
            assert_eq!(receiver.next().await.answered, 500);
        }
        dead_letters.push(dead);
    }
    receiver.fail_next(0);

    // The deletions are held behind the dead creations, and the API says by what.
    let mut deletions = Vec::new();
    for (record_id, dead) in ["held-1", "held-2"].iter().zip(&dead_letters) {
        let (_, answer) =
            daemon.post_webhook(account_id, format!(r#"{{"behaviour": "delete", "id": "{record_id}"}}"#).as_bytes(), &[]).await;
        let outcome = daemon.inbox_outcome(answer["inboxId"].as_str().unwrap()).await;
        let deletion_id = outcome["outcome"]["eventIds"][0].as_str().unwrap().to_string();
        let (_, deletion) = daemon.admin("GET", &format!("/v1/events/{deletion_id}"), None).await;
        assert_eq!(deletion["deliveries"][0]["status"], "pending", "{deletion}");
        assert_eq!(deletion["deliveries"][0]["heldBy"], dead["deliveryId"], "{deletion}");
        deletions.push(deletion_id);
    }
    receiver.expect_nothing(std::time::Duration::from_millis(300)).await;

    // Redelivered: the creation first, then the deletion it held back.
    let created_id = dead_letters[0]["eventId"].as_str().unwrap();
    let (status, _) = daemon.admin("POST", &format!("/v1/events/{created_id}/redeliver"), None).await;
    assert_eq!(status, 202);
    let first = receiver.next().await;
    assert_eq!(
        (first.header("webhook-id"), first.json()["hook"]["eventType"].clone()),
        (created_id.to_string(), json!("reservation.created"))
    );
    let second = receiver.next().await;
    assert_eq!(
        (second.header("webhook-id"), second.json()["hook"]["eventType"].clone()),
        (deletions[0].clone(), json!("reservation.deleted"))
    );

    // Discarded: the creation is given up, the deletion goes on.
    let discarded_id = dead_letters[1]["deliveryId"].as_str().unwrap();
    let (status, discarded) = daemon.admin("DELETE", &format!("/v1/dead-letters/{discarded_id}"), None).await;
    assert_eq!((status, discarded["status"].clone()), (200, json!("cancelled")), "{discarded}");
    let third = receiver.next().await;
    assert_eq!(third.header("webhook-id"), deletions[1]);
    let (_, after) = daemon.admin("GET", "/v1/dead-letters", None).await;
    assert_eq!(after["deadLetters"], json!([]));
    let (status, again) = daemon.admin("DELETE", &format!("/v1/dead-letters/{discarded_id}"), None).await;
    assert_eq!((status, again["error"]["code"].clone()), (404, json!("dead_letter_not_found")));
}
