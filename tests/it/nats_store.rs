//! The daemon on the NATS JetStream backend (`src/store/nats/`), one node against a real server:
//! what only NATS has (its state across a SIGKILL of its own, an account's state listed by its
//! keys, the body limit under `max_payload`). The shared modules run on NATS too (`on_nats`).

use serde_json::json;

use crate::support::{Daemon, DaemonOptions, NatsCluster, Receiver, hostaway_body};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_on_nats_delivers_created_then_updated_and_keeps_everything_across_a_sigkill() {
    let cluster = NatsCluster::single().await;
    let receiver = Receiver::start().await;
    let mut daemon = Daemon::start(DaemonOptions::default().on_nats(&cluster, 1)).await;
    let account = daemon.create_account(json!({"workspaceId": "ws-1", "pms": "hostaway"})).await;
    let account_id = account["id"].as_str().unwrap().to_string();
    daemon.subscribe(&account_id, &receiver.url).await;

    let (status, answer) = daemon.post_webhook(&account_id, &hostaway_body("reservation-created"), &[]).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("accepted")), "{answer}");
    let created = receiver.next().await;
    assert_eq!(created.json()["hook"]["eventType"], "reservation.created");
    let (status, again) = daemon.post_webhook(&account_id, &hostaway_body("reservation-created"), &[]).await;
    assert_eq!((status, again["status"].as_str()), (200, Some("duplicate")), "{again}");
    assert_eq!(again["inboxId"], answer["inboxId"], "a duplicate names the original");

    daemon.kill();
    daemon.start_again();
    let (status, _) = daemon.post_webhook(&account_id, &hostaway_body("reservation-updated-dates-moved"), &[]).await;
    assert_eq!(status, 200);
    // The creation may come again first: killed between the receiver's 2xx and recording it,
    // the delivery is attempted again (at least once), under the same event id.
    let updated = loop {
        let received = receiver.next().await;
        if received.header("webhook-id") != created.header("webhook-id") {
            break received.json();
        }
    };
    assert_eq!(updated["hook"]["eventType"], "reservation.updated", "the state survived the restart: {updated}");
    assert_eq!(updated["data"]["record"]["previousArrivalDate"], "2017-07-15T00:00:00.000Z");

    let (status, events) = daemon.admin("GET", &format!("/v1/events?accountId={account_id}"), None).await;
    assert_eq!(status, 200, "{events}");
    let types: Vec<&str> = events["events"].as_array().unwrap().iter().map(|event| event["eventType"].as_str().unwrap()).collect();
    assert_eq!(types, ["reservation.created", "reservation.updated"], "{events}");
    let (status, state) = daemon.admin("GET", &format!("/v1/accounts/{account_id}/reservations/13"), None).await;
    assert_eq!(status, 200, "{state}");
    assert_eq!(state["arrivalDate"], updated["data"]["record"]["arrivalDate"]);
    receiver.expect_nothing(std::time::Duration::from_millis(500)).await;

    // Another account with a record of the same id: an account's export lists its own state only
    // (the keys under its prefix, read without walking the bucket).
    let other = daemon.create_account(json!({"workspaceId": "ws-1", "pms": "hostaway"})).await;
    let other_id = other["id"].as_str().unwrap().to_string();
    let (status, answer) = daemon.post_webhook(&other_id, &hostaway_body("reservation-created"), &[]).await;
    assert_eq!(status, 200, "{answer}");
    daemon.inbox_outcome(answer["inboxId"].as_str().unwrap()).await;
    for (account, arrival) in [(&account_id, &updated["data"]["record"]["arrivalDate"]), (&other_id, &json!("2017-07-15T00:00:00.000Z"))] {
        let url = format!("{}/v1/export?account={account}&webhooks=false", daemon.admin_url);
        let export = daemon.http.get(url).bearer_auth(&daemon.token).send().await.unwrap().text().await.unwrap();
        let states: Vec<serde_json::Value> = export
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .filter(|line: &serde_json::Value| line["type"] == "state")
            .collect();
        assert_eq!(states.len(), 1, "{export}");
        assert_eq!((&states[0]["accountId"], &states[0]["recordId"]), (&json!(account), &json!("13")), "{export}");
        assert_eq!(&states[0]["record"]["arrivalDate"], arrival, "{export}");
    }
}

/// A raw webhook is one NATS message, so the listener's body limit (1 MiB by default) is lowered
/// to fit the server's `max_payload` (1 MB by default, less room for headers): a body over it gets
/// 413 naming the limit, not an append that fails; one under it is stored and delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_the_nats_server_cannot_store_is_refused_with_413() {
    let cluster = NatsCluster::single().await;
    let receiver = Receiver::start().await;
    let daemon = Daemon::start(DaemonOptions::default().on_nats(&cluster, 1)).await;
    assert!(daemon.log().contains("the listener's body limit is lowered"), "{}", daemon.log());
    let account = daemon.create_account(json!({"workspaceId": "ws-1", "pms": "hostaway"})).await;
    let account_id = account["id"].as_str().unwrap().to_string();
    daemon.subscribe(&account_id, &receiver.url).await;
    let padded = |bytes: usize| {
        let mut body: serde_json::Value = serde_json::from_slice(&hostaway_body("reservation-created")).unwrap();
        body["padding"] = json!("x".repeat(bytes));
        serde_json::to_vec(&body).unwrap()
    };

    let (status, answer) = daemon.post_webhook(&account_id, &padded(1_000_000), &[]).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (413, Some("payload_too_large")), "{answer}");
    let (status, answer) = daemon.post_webhook(&account_id, &padded(900_000), &[]).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("accepted")), "{answer}");
    assert_eq!(receiver.next().await.json()["hook"]["eventType"], "reservation.created");
}
