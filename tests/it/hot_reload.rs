//! Plugins replaced while the daemon runs: uploads, files dropped into the plugin directory,
//! refused broken uploads, and no event lost or normalized twice across a replacement.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Daemon, DaemonOptions, Receiver};

fn artifact(name: &str) -> Vec<u8> {
    std::fs::read(PathBuf::from(env!("PLUGIN_ARTIFACTS_DIR")).join(format!("stayhook_plugin_{name}.wasm"))).unwrap()
}

async fn listed(daemon: &Daemon) -> Value {
    let (status, listed) = daemon.admin("GET", "/v1/plugins", None).await;
    assert_eq!(status, 200, "{listed}");
    listed
}

fn plugin<'a>(listed: &'a Value, name: &str) -> Option<&'a Value> {
    listed["plugins"].as_array().unwrap().iter().find(|plugin| plugin["name"] == name)
}

#[tokio::test]
async fn broken_uploads_are_refused_with_the_reason_and_the_running_plugin_stays() {
    let receiver = Receiver::start().await;
    let daemon = Daemon::start(DaemonOptions::default().with_chaos()).await;
    let before = plugin(&listed(&daemon).await, "chaos").unwrap().clone();

    let (status, answer) = daemon.upload_plugin("chaos", Vec::new()).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (400, Some("empty_body")), "{answer}");
    let (status, answer) = daemon.upload_plugin("chaos", b"\0asm\x01\0\0\0 truncated".to_vec()).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (422, Some("invalid_plugin")), "{answer}");
    assert!(answer["error"]["message"].as_str().unwrap().contains("unchanged"), "{answer}");
    // A valid component uploaded under another name than it declares.
    let (status, answer) = daemon.upload_plugin("chaos", artifact("hostaway")).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (422, Some("plugin_name_mismatch")), "{answer}");
    assert!(answer["error"]["message"].as_str().unwrap().contains("hostaway"), "{answer}");

    let after = listed(&daemon).await;
    assert_eq!(plugin(&after, "chaos").unwrap()["sha256"], before["sha256"], "the running chaos plugin was replaced");
    assert_eq!(plugin(&after, "hostaway").unwrap()["source"], "built-in");
    // And it still works.
    let account = daemon.create_account(json!({"workspaceId": "ws", "pms": "chaos"})).await;
    let account_id = account["id"].as_str().unwrap();
    daemon.subscribe(account_id, &receiver.url).await;
    daemon.post_webhook(account_id, br#"{"behaviour": "ok", "id": "still-here"}"#, &[]).await;
    assert_eq!(receiver.next().await.json()["data"]["record"]["id"], "still-here");
}

#[tokio::test]
async fn a_file_dropped_into_the_plugin_dir_is_loaded_and_a_broken_one_reported() {
    let daemon = Daemon::start(DaemonOptions::default()).await;
    assert!(plugin(&listed(&daemon).await, "chaos").is_none());
    // An account cannot use a plugin that is not loaded.
    let (status, answer) = daemon.admin("POST", "/v1/accounts", Some(json!({"workspaceId": "ws", "pms": "chaos"}))).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (422, Some("unknown_plugin")), "{answer}");

    std::fs::write(daemon.plugin_dir().join("chaos.wasm"), artifact("chaos")).unwrap();
    let loaded = daemon.wait_for("the dropped plugin to load", async |daemon| plugin(&listed(daemon).await, "chaos").cloned()).await;
    assert_eq!(loaded["source"], "file");
    assert!(loaded["path"].as_str().unwrap().ends_with("chaos.wasm"), "{loaded}");
    daemon.create_account(json!({"workspaceId": "ws", "pms": "chaos"})).await;

    // Garbage over the same file: reported, and the loaded plugin stays.
    std::fs::write(daemon.plugin_dir().join("chaos.wasm"), b"not a component").unwrap();
    let errors = daemon
        .wait_for("the broken file to be reported", async |daemon| {
            let listed = listed(daemon).await;
            let errors = listed["loadErrors"].as_array().unwrap().clone();
            (!errors.is_empty()).then_some(errors)
        })
        .await;
    assert!(errors[0]["path"].as_str().unwrap().ends_with("chaos.wasm"), "{errors:?}");
    assert!(!errors[0]["error"].as_str().unwrap().is_empty());
    assert_eq!(plugin(&listed(&daemon).await, "chaos").unwrap()["sha256"], loaded["sha256"]);

    // Fixed again: the error goes away.
    std::fs::write(daemon.plugin_dir().join("chaos.wasm"), artifact("chaos")).unwrap();
    daemon
        .wait_for("the load error to clear", async |daemon| listed(daemon).await["loadErrors"].as_array().unwrap().is_empty().then_some(()))
        .await;
}

/// Webhooks keep arriving while the plugin is replaced over and over: every one is delivered
/// exactly once and none fails.
#[tokio::test]
async fn replacing_a_plugin_under_load_loses_and_repeats_nothing() {
    let receiver = Receiver::start().await;
    let daemon = Daemon::start(DaemonOptions::default().with_chaos()).await;
    let account = daemon.create_account(json!({"workspaceId": "ws", "pms": "chaos"})).await;
    let account_id = account["id"].as_str().unwrap().to_string();
    daemon.subscribe(&account_id, &receiver.url).await;

    const N_EVENTS: usize = 60;
    let sender = async {
        for n in 0..N_EVENTS {
            let body = json!({"behaviour": "ok", "id": format!("r{n}")}).to_string();
            let (status, answer) = daemon.post_webhook(&account_id, body.as_bytes(), &[]).await;
            assert_eq!(status, 200, "{answer}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let uploader = async {
        let mut generations = BTreeSet::new();
        for _ in 0..4 {
            let (status, answer) = daemon.upload_plugin("chaos", artifact("chaos")).await;
            assert_eq!(status, 200, "{answer}");
            generations.insert(answer["loadedAt"].to_string());
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
    };
    tokio::join!(sender, uploader);

    let mut ids = BTreeSet::new();
    for _ in 0..N_EVENTS {
        let received = receiver.next().await.json();
        assert!(ids.insert(received["data"]["record"]["id"].as_str().unwrap().to_string()), "delivered twice: {received}");
    }
    assert_eq!(ids.len(), N_EVENTS);
    receiver.expect_nothing(Duration::from_millis(300)).await;
    let (_, failed) = daemon.admin("GET", "/v1/inbox?status=failed", None).await;
    assert!(failed["inbox"].as_array().unwrap().is_empty(), "{failed}");
}

#[tokio::test]
async fn renormalize_names_bad_input() {
    let daemon = Daemon::start(DaemonOptions::default()).await;
    let (status, answer) = daemon.admin("POST", "/v1/accounts/nobody/renormalize", None).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (404, Some("account_not_found")), "{answer}");
    let account = daemon.create_account(json!({"workspaceId": "ws", "pms": "hostaway"})).await;
    let path = format!("/v1/accounts/{}/renormalize", account["id"].as_str().unwrap());
    let (status, answer) = daemon.admin("POST", &path, Some(json!({"from": "yesterday"}))).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (422, Some("invalid_field")), "{answer}");
    assert!(answer["error"]["message"].as_str().unwrap().contains("from"), "{answer}");
    let (status, answer) = daemon.admin("POST", &path, Some(json!({"since": "2026-01-01T00:00:00Z"}))).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (422, Some("invalid_field")), "{answer}");
    let (status, answer) = daemon.admin("POST", &path, None).await;
    assert_eq!((status, answer["queued"].as_u64()), (202, Some(0)), "{answer}");
}

#[tokio::test]
async fn one_stored_webhook_is_normalized_again_alone() {
    let receiver = Receiver::start().await;
    let daemon = Daemon::start(DaemonOptions::default()).await;
    daemon.create_account(json!({"id": "again", "workspaceId": "ws", "pms": "hostaway"})).await;
    daemon.subscribe("again", &receiver.url).await;
    let mut inbox_ids = Vec::new();
    for case in ["reservation-created", "reservation-updated-dates-moved"] {
        let (status, answer) = daemon.post_webhook("again", &crate::support::hostaway_body(case), &[]).await;
        assert_eq!(status, 200, "{answer}");
        inbox_ids.push(answer["inboxId"].as_str().unwrap().to_string());
    }
    for inbox_id in &inbox_ids {
        assert_eq!(daemon.inbox_outcome(inbox_id).await["outcome"]["generation"], 0);
    }
    let first_events = daemon.inbox_outcome(&inbox_ids[0]).await["outcome"]["eventIds"].clone();
    for _ in 0..2 {
        receiver.next_success().await;
    }

    let (status, answer) = daemon.admin("POST", &format!("/v1/inbox/{}/renormalize", inbox_ids[0]), None).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!((answer["queued"].as_bool(), answer["generation"].as_u64()), (Some(true), Some(1)), "{answer}");
    let outcome = daemon
        .wait_for("the webhook's second run", async |daemon| {
            let (_, entry) = daemon.admin("GET", &format!("/v1/inbox/{}", inbox_ids[0]), None).await;
            (entry["status"] != "pending" && entry["outcome"]["generation"] == 1).then_some(entry["outcome"].clone())
        })
        .await;
    assert_ne!(outcome["eventIds"], first_events, "a second run gets new event ids: {outcome}");
    // Only that webhook ran again; its neighbour kept its first run.
    let (_, other) = daemon.admin("GET", &format!("/v1/inbox/{}", inbox_ids[1]), None).await;
    assert_eq!(other["outcome"]["generation"], 0, "{other}");
    // State decides again: the replayed creation, after the dates moved, moves them back (an
    // update with the moved dates as previous ones), under the second run's event id.
    let replayed = receiver.next_success().await;
    assert_eq!(replayed.header("webhook-id"), outcome["eventIds"][0].as_str().unwrap());
    let envelope = replayed.json();
    assert_eq!(envelope["hook"]["eventType"], "reservation.updated");
    assert_eq!(envelope["data"]["record"]["arrivalDate"], "2017-07-15T00:00:00.000Z");
    assert_eq!(envelope["data"]["record"]["previousArrivalDate"], "2017-07-20T00:00:00.000Z");
    receiver.expect_nothing(Duration::from_millis(300)).await;

    let (status, answer) = daemon.admin("POST", "/v1/inbox/999999999/renormalize", None).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (404, Some("inbox_not_found")), "{answer}");
    let (status, answer) = daemon.admin("POST", "/v1/inbox/not-a-number/renormalize", None).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (404, Some("inbox_not_found")), "{answer}");
}
