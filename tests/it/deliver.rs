//! Delivery of unified events: the seed's envelope, signatures, created/updated/deleted, previous
//! dates, unchanged updates, and per-record ordering.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Daemon, DaemonOptions, Receiver, hostaway_body, seed_example};

/// An account on the Hostaway plugin with one subscription to `receiver`; returns (account id,
/// subscription).
async fn hostaway_account(daemon: &Daemon, receiver: &Receiver) -> (String, Value) {
    let account = daemon.create_account(json!({"workspaceId": "ws-1", "pms": "hostaway", "name": "Hostaway test"})).await;
    let account_id = account["id"].as_str().unwrap().to_string();
    let webhook = daemon.subscribe(&account_id, &receiver.url).await;
    (account_id, webhook)
}

#[tokio::test]
async fn reservation_created_then_updated_matches_the_seed_and_verifies() {
    let receiver = Receiver::start().await;
    let daemon = Daemon::start(DaemonOptions::default()).await;
    let (account_id, webhook) = hostaway_account(&daemon, &receiver).await;

    let (status, answer) = daemon.post_webhook(&account_id, &hostaway_body("reservation-created"), &[]).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("accepted")), "{answer}");
    let created = receiver.next().await;
    verify_signature(&created, webhook["secret"].as_str().unwrap());
    let envelope = created.json();
    assert_eq!(envelope["hook"]["eventType"], "reservation.created");
    assert_eq!(envelope["hook"]["id"], webhook["id"], "hook.id is the subscription's id");
    assert_eq!(envelope["hook"]["source"], "PMS_WEBHOOK");
    assert_eq!(envelope["data"]["integrationAccountId"], account_id.as_str());
    assert_eq!(envelope["data"]["workspaceId"], "ws-1");
    assert_eq!(envelope["data"]["result"], "SUCCESS");
    assert_eq!(envelope["data"]["record"]["id"], "13");
    assert_eq!(envelope["data"]["record"]["previousArrivalDate"], "");
    assert_matches_seed_shape(&envelope);

    // The event id travels in webhook-id and is the event log's id.
    let event_id = created.header("webhook-id");
    let event = daemon
        .wait_for("the delivery to be recorded", async |daemon| {
            let (status, event) = daemon.admin("GET", &format!("/v1/events/{event_id}"), None).await;
            assert_eq!(status, 200, "{event}");
            (event["deliveries"][0]["status"] == "delivered").then_some(event)
        })
        .await;
    assert_eq!(event["eventType"], "reservation.created");

    // Same reservation, later dates: an update with the previous dates filled.
    let (status, _) = daemon.post_webhook(&account_id, &hostaway_body("reservation-updated-dates-moved"), &[]).await;
    assert_eq!(status, 200);
    let updated = receiver.next().await;
    verify_signature(&updated, webhook["secret"].as_str().unwrap());
    let envelope = updated.json();
    let record = &envelope["data"]["record"];
    assert_eq!(envelope["hook"]["eventType"], "reservation.updated");
    assert_eq!(record["id"], "13");
    assert_eq!(record["previousArrivalDate"], "2017-07-15T00:00:00.000Z");
    assert_eq!(record["previousDepartureDate"], "2017-07-16T00:00:00.000Z");
    assert_ne!(record["arrivalDate"], record["previousArrivalDate"]);
    assert_matches_seed_shape(&envelope);
    assert_has_seed_keys(&envelope, &seed_example("reservation.updated.json"));

    // The current state answers queries, without previous dates.
    let (status, state) = daemon.admin("GET", &format!("/v1/accounts/{account_id}/reservations/13"), None).await;
    assert_eq!(status, 200);
    assert_eq!(state["arrivalDate"], record["arrivalDate"]);
    assert_eq!(state["previousArrivalDate"], "");
}

#[tokio::test]
async fn an_update_that_changes_nothing_is_not_delivered_again() {
    let receiver = Receiver::start().await;
    let daemon = Daemon::start(DaemonOptions::default()).await;
    let (account_id, _) = hostaway_account(&daemon, &receiver).await;
    let body = hostaway_body("reservation-created");
    daemon.post_webhook(&account_id, &body, &[]).await;
    receiver.next().await;

    // An exact duplicate is acknowledged and dropped at the door.
    let (status, answer) = daemon.post_webhook(&account_id, &body, &[]).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("duplicate")));

    // The same reservation re-sent as an update with different bytes but the same content.
    let mut resent: Value = serde_json::from_slice(&body).unwrap();
    resent["event"] = json!("reservation.updated");
    let (status, answer) = daemon.post_webhook(&account_id, resent.to_string().as_bytes(), &[]).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("accepted")));
    let outcome = daemon.inbox_outcome(answer["inboxId"].as_str().unwrap()).await;
    assert_eq!(outcome["outcome"]["status"], "done");
    assert_eq!(outcome["outcome"]["nUnchanged"], 1);
    assert_eq!(outcome["outcome"]["eventIds"], json!([]));
    receiver.expect_nothing(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn reservation_deleted_carries_only_the_id() {
    let receiver = Receiver::start().await;
    let daemon = Daemon::start(DaemonOptions::default().with_chaos()).await;
    let account = daemon.create_account(json!({"workspaceId": "ws-2", "pms": "chaos"})).await;
    let account_id = account["id"].as_str().unwrap();
    let webhook = daemon.subscribe(account_id, &receiver.url).await;

    daemon.post_webhook(account_id, br#"{"behaviour": "delete", "id": 98765432}"#, &[]).await;
    let deleted = receiver.next().await;
    verify_signature(&deleted, webhook["secret"].as_str().unwrap());
    let envelope = deleted.json();
    assert_eq!(envelope["hook"]["eventType"], "reservation.deleted");
    assert_eq!(envelope["data"]["record"], json!({"id": "98765432"}), "ids are strings (seeds/README.md)");
    let seed = seed_example("reservation.deleted.json");
    assert_eq!(key_paths(&envelope), key_paths(&seed), "exactly the seed's keys");
}

#[tokio::test]
async fn events_of_one_record_arrive_in_order_while_other_records_go_on() {
    // The first attempt of record A fails; A's second event must wait for it, record B must not.
    let receiver = Receiver::failing_first(1).await;
    let daemon = Daemon::start(DaemonOptions::default().retry_schedule("2s").with_chaos()).await;
    let account = daemon.create_account(json!({"workspaceId": "ws-3", "pms": "chaos"})).await;
    let account_id = account["id"].as_str().unwrap();
    daemon.subscribe(account_id, &receiver.url).await;

    daemon.post_webhook(account_id, br#"{"behaviour": "ok", "id": "A"}"#, &[]).await;
    let first = receiver.next().await;
    assert_eq!((first.answered, first.json()["hook"]["eventType"].clone()), (500, json!("reservation.created")));
    daemon.post_webhook(account_id, br#"{"behaviour": "delete", "id": "A"}"#, &[]).await;
    daemon.post_webhook(account_id, br#"{"behaviour": "ok", "id": "B"}"#, &[]).await;

    let mut order = Vec::new();
    for _ in 0..3 {
        let received = receiver.next_success().await.json();
        order.push(format!("{} {}", received["hook"]["eventType"].as_str().unwrap(), received["data"]["record"]["id"].as_str().unwrap()));
    }
    assert_eq!(order[0], "reservation.created B", "B is not held back by A's retry: {order:?}");
    assert_eq!(order[1..], ["reservation.created A", "reservation.deleted A"], "A's events stay in order: {order:?}");
}

/// Verify a delivery with the Standard Webhooks reference library.
fn verify_signature(received: &crate::support::Received, secret: &str) {
    assert!(secret.starts_with("whsec_"), "{secret}");
    let webhook = standardwebhooks::Webhook::new(secret).expect("a valid whsec_ secret");
    webhook.verify(&received.body, &received.headers).expect("the signature verifies per Standard Webhooks");
    let tampered = [received.body.as_ref(), b" "].concat();
    assert!(webhook.verify(&tampered, &received.headers).is_err(), "a changed body must not verify");
}

/// Every key path of a JSON value ("data.record.primaryGuest.name"), array items merged as "[]".
fn key_paths(value: &Value) -> BTreeSet<String> {
    fn walk(value: &Value, path: &str, paths: &mut BTreeSet<String>) {
        match value {
            Value::Object(map) => {
                for (key, child) in map {
                    let child_path = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
                    paths.insert(child_path.clone());
                    walk(child, &child_path, paths);
                }
            }
            Value::Array(items) => items.iter().for_each(|item| walk(item, &format!("{path}[]"), paths)),
            _ => {}
        }
    }
    let mut paths = BTreeSet::new();
    walk(value, "", &mut paths);
    paths
}

/// JSON types seen at each path ("string", "number", ...); nulls are not recorded.
fn types_by_path(value: &Value) -> BTreeMap<String, BTreeSet<&'static str>> {
    fn walk(value: &Value, path: String, types: &mut BTreeMap<String, BTreeSet<&'static str>>) {
        let kind = match value {
            Value::Null => return,
            Value::Bool(_) => "boolean",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(items) => {
                items.iter().for_each(|item| walk(item, format!("{path}[]"), types));
                "array"
            }
            Value::Object(map) => {
                map.iter().for_each(|(key, child)| walk(child, if path.is_empty() { key.clone() } else { format!("{path}.{key}") }, types));
                "object"
            }
        };
        types.entry(path).or_default().insert(kind);
    }
    let mut types = BTreeMap::new();
    walk(value, String::new(), &mut types);
    types
}

/// The seed's reservation envelopes (created and updated) define the keys and types of the
/// reservation envelope: every object we send has exactly the keys the seed shows at that path
/// (array items of the two examples merged), and every non-null value has a type the seed uses
/// there. Ids are strings (seeds/README.md), so `customFields[].id` may be a string.
fn assert_matches_seed_shape(envelope: &Value) {
    let created = seed_example("reservation.created.json");
    let updated = seed_example("reservation.updated.json");
    let seed_paths: BTreeSet<String> = key_paths(&created).union(&key_paths(&updated)).cloned().collect();
    let ours = key_paths(envelope);
    let missing: Vec<_> = seed_paths.iter().filter(|path| !ours.contains(*path) && !path.contains("[]")).collect();
    let extra: Vec<_> = ours.difference(&seed_paths).collect();
    assert!(missing.is_empty(), "keys of the seed missing from the envelope: {missing:?}");
    assert!(extra.is_empty(), "keys the seed does not have: {extra:?}");
    let mut seed_types = types_by_path(&created);
    for (path, kinds) in types_by_path(&updated) {
        seed_types.entry(path).or_default().extend(kinds);
    }
    seed_types.entry("data.record.customFields[].id".into()).or_default().insert("string");
    for (path, kinds) in types_by_path(envelope) {
        if let Some(seed_kinds) = seed_types.get(&path) {
            assert!(kinds.is_subset(seed_kinds), "{path}: we send {kinds:?}, the seed has {seed_kinds:?}");
        }
    }
}

/// Every key path of a seed example appears in the envelope.
fn assert_has_seed_keys(envelope: &Value, seed: &Value) {
    let ours = key_paths(envelope);
    let missing: Vec<_> = key_paths(seed).into_iter().filter(|path| !ours.contains(path) && !path.contains("[]")).collect();
    assert!(missing.is_empty(), "seed keys missing: {missing:?}");
}
