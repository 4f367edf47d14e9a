//! Misbehaving plugins fail their own events, recorded with the reason, and nothing else: the
//! daemon keeps serving and the next event of the same plugin is delivered.

use serde_json::json;

use crate::support::{Daemon, DaemonOptions, Receiver};

#[tokio::test]
async fn trap_loop_memory_and_invalid_output_fail_only_their_events() {
    let receiver = Receiver::start().await;
    let daemon = Daemon::start(
        DaemonOptions::default().with_chaos().env("STAYHOOK_PLUGIN_TIMEOUT_MS", "300").env("STAYHOOK_PLUGIN_MEMORY_BYTES", "16777216"),
    )
    .await;
    let account = daemon.create_account(json!({"workspaceId": "ws", "pms": "chaos"})).await;
    let account_id = account["id"].as_str().unwrap();
    daemon.subscribe(account_id, &receiver.url).await;

    let cases = [
        ("trap", "failed", "trap"),
        ("loop", "failed", "timeout"),
        ("oom", "failed", "memory_limit"),
        ("invalid", "failed", "invalid_output"),
        ("bad-payload", "failed", "bad_payload"),
        ("fetch", "failed", "enrichment_unavailable"),
        ("not-a-behaviour", "skipped", "unsupported_event"),
    ];
    for (behaviour, status, kind) in cases {
        let body = json!({"behaviour": behaviour, "id": behaviour}).to_string();
        let (code, answer) = daemon.post_webhook(account_id, body.as_bytes(), &[]).await;
        assert_eq!(code, 200, "{answer}");
        let entry = daemon.inbox_outcome(answer["inboxId"].as_str().unwrap()).await;
        assert_eq!(entry["status"], status, "{behaviour}: {entry}");
        assert_eq!(entry["outcome"]["errorKind"], kind, "{behaviour}: {entry}");
        assert_eq!(entry["outcome"]["plugin"], "chaos");
        assert!(entry["outcome"]["error"].as_str().is_some_and(|error| !error.is_empty()));
    }

    let (_, failed) = daemon.admin("GET", "/v1/inbox?status=failed", None).await;
    assert_eq!(failed["inbox"].as_array().unwrap().len(), 6, "{failed}");

    // The same plugin, the same worker, right after: works.
    daemon.post_webhook(account_id, br#"{"behaviour": "ok", "id": "after-the-chaos"}"#, &[]).await;
    let delivered = receiver.next().await.json();
    assert_eq!(delivered["data"]["record"]["id"], "after-the-chaos");
    // And nothing from the failed ones was delivered before it.
    assert_eq!(delivered["hook"]["eventType"], "reservation.created");
}

#[tokio::test]
async fn a_broken_plugin_file_is_reported_and_the_rest_load() {
    let plugin_dir = tempfile::tempdir().unwrap();
    std::fs::write(plugin_dir.path().join("broken.wasm"), b"\0asm not really").unwrap();
    // A daemon whose plugin dir holds garbage still starts with its built-in plugins.
    let daemon = Daemon::start(DaemonOptions::default().env("STAYHOOK_PLUGIN_DIR", plugin_dir.path().to_str().unwrap())).await;
    let (_, listed) = daemon.admin("GET", "/v1/plugins", None).await;
    assert!(listed["plugins"].as_array().unwrap().iter().any(|plugin| plugin["name"] == "hostaway"));
    let errors = listed["loadErrors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{listed}");
    assert!(errors[0]["path"].as_str().unwrap().ends_with("broken.wasm"));
}

/// Issue 10, item 13: one account's slow plugin delayed another account's webhooks by 16 s,
/// because accounts shared a worker's queue by hash. Now accounts take turns: a slow plugin
/// delays the others by at most the call in hand, never by its backlog.
#[tokio::test]
async fn a_slow_plugin_does_not_hold_back_other_accounts() {
    let receiver = Receiver::start().await;
    let daemon = Daemon::start(
        DaemonOptions::default().with_chaos().env("STAYHOOK_NORMALIZER_THREADS", "1").env("STAYHOOK_PLUGIN_TIMEOUT_MS", "300"),
    )
    .await;
    daemon.create_account(json!({"id": "slow", "workspaceId": "ws", "pms": "chaos"})).await;
    daemon.create_account(json!({"id": "fast", "workspaceId": "ws", "pms": "hostaway"})).await;
    daemon.subscribe("fast", &receiver.url).await;

    // Eight webhooks that each spin until the plugin's time limit, all on the one worker.
    let n_slow = 8;
    for n in 0..n_slow {
        let (status, _) =
            daemon.post_webhook("slow", json!({"behaviour": "loop", "id": format!("L{n}")}).to_string().as_bytes(), &[]).await;
        assert_eq!(status, 200);
    }
    let (status, _) = daemon.post_webhook("fast", &crate::support::hostaway_body("reservation-created"), &[]).await;
    assert_eq!(status, 200);
    assert_eq!(receiver.next().await.json()["data"]["integrationAccountId"], "fast");

    let (_, failed) = daemon.admin("GET", "/v1/inbox?status=failed", None).await;
    let n_timed_out = failed["inbox"].as_array().unwrap().len();
    assert!(n_timed_out < n_slow / 2, "the fast account waited for {n_timed_out} of the slow account's {n_slow} calls");
}
