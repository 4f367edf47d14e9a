//! Upgrade: a data dir written by an earlier release opens in this one with everything in it.
//!
//! `tests/fixtures/datadir-v1/` was written by the release at commit 94b8f7c (storage format 1:
//! fifteen sled trees, see its README) and `tests/fixtures/datadir-v2/` by the release at commit
//! b8ea0bd (storage format 2: segments and small index records), both with `write_fixture` below;
//! the tests open a copy of each and check what an operator would: accounts, webhooks, the event log, inbox outcomes, the
//! record state (an update of a stored reservation is `reservation.updated` with its previous
//! dates), and the delivery still owed to a receiver that was down.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::support::{Daemon, DaemonOptions, Receiver, hostaway_body, repo_root};

fn fixture(format: u32) -> PathBuf {
    repo_root().join(format!("tests/fixtures/datadir-v{format}"))
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else if entry.file_name() != "README.md" {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// The receiver that was down when the fixture was written: nothing listens on the discard port.
const DOWN: &str = "http://127.0.0.1:9/down";

/// Writes `tests/fixtures/datadir-v1` with the build under test. Run by hand, only with the
/// release whose format the fixture is to hold (94b8f7c): `cargo test --release --test it --
/// --ignored write_the_v1_fixture`.
#[tokio::test]
#[ignore = "writes the fixture; run by hand with the release whose format it holds"]
async fn write_the_v1_fixture() {
    write_fixture(fixture(1)).await;
}

/// Writes `tests/fixtures/datadir-v2` the same way, with the release whose format it holds
/// (b8ea0bd).
#[tokio::test]
#[ignore = "writes the fixture; run by hand with the release whose format it holds"]
async fn write_the_v2_fixture() {
    write_fixture(fixture(2)).await;
}

async fn write_fixture(dir: PathBuf) {
    let readme = std::fs::read_to_string(dir.join("README.md")).ok();
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let receiver = Receiver::start().await;
    let mut daemon = Daemon::start(DaemonOptions::default().retry_schedule("1h,1h").store_dir(dir.clone())).await;
    daemon.create_account(json!({"id": "upgraded", "workspaceId": "ws-1", "pms": "hostaway", "name": "Beach houses"})).await;
    daemon.create_account(json!({"id": "quiet", "workspaceId": "ws-2", "pms": "smoobu"})).await;
    let up = daemon.subscribe("upgraded", &receiver.url).await;
    daemon.subscribe("upgraded", DOWN).await;
    let (status, answer) = daemon.post_webhook("upgraded", &hostaway_body("reservation-created"), &[]).await;
    assert_eq!(status, 200, "{answer}");
    daemon.inbox_outcome(answer["inboxId"].as_str().unwrap()).await;
    assert_eq!(receiver.next().await.json()["hook"]["id"], up["id"]);
    let (status, answer) = daemon.post_webhook("upgraded", br#"{"not": "hostaway"}"#, &[]).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(daemon.inbox_outcome(answer["inboxId"].as_str().unwrap()).await["status"], "failed");
    // The delivery to the receiver that is down has had its first attempt and waits an hour.
    daemon
        .wait_for("the first attempt to the receiver that is down", async |daemon| {
            let (_, events) = daemon.admin("GET", "/v1/events?accountId=upgraded", None).await;
            let event_id = events["events"][0]["id"].as_str()?.to_string();
            let (_, event) = daemon.admin("GET", &format!("/v1/events/{event_id}"), None).await;
            event["deliveries"]
                .as_array()?
                .iter()
                .any(|delivery| delivery["attempts"] == 1 && delivery["status"] == "pending")
                .then_some(())
        })
        .await;
    assert!(daemon.terminate(), "SIGTERM ends the daemon with success");
    if let Some(readme) = readme {
        std::fs::write(dir.join("README.md"), readme).unwrap();
    }
}

#[tokio::test]
async fn a_data_dir_of_storage_format_1_is_migrated_with_everything_in_it() {
    let copy = tempfile::tempdir().unwrap();
    copy_dir(&fixture(1), copy.path());
    let receiver = Receiver::start().await;
    let daemon = Daemon::start(DaemonOptions::default().retry_schedule("1h,1h").store_dir(copy.path().to_path_buf())).await;

    // Migrated once to the current storage format; the format-1 database kept as the backup.
    assert!(copy.path().join("store/index").is_dir() && copy.path().join("store/segments").is_dir());
    assert!(copy.path().join("db.format1/conf").is_file(), "the old database is kept");
    assert!(!copy.path().join("db").exists());
    assert!(daemon.log().contains("migrated to storage format 3"), "the migration is logged");
    everything_is_there(&daemon, &receiver).await;
}

#[tokio::test]
async fn a_store_of_format_2_opens_in_place_with_everything_in_it() {
    let copy = tempfile::tempdir().unwrap();
    copy_dir(&fixture(2), copy.path());
    let receiver = Receiver::start().await;
    let mut daemon = Daemon::start(DaemonOptions::default().retry_schedule("1h,1h").store_dir(copy.path().to_path_buf())).await;
    assert!(daemon.log().contains("marking the store with the new storage format"), "the new format is logged");
    assert!(!copy.path().join("store.migrating").exists() && !copy.path().join("db.format1").exists(), "nothing was copied");
    everything_is_there(&daemon, &receiver).await;

    // Marked once: the next start opens it as its own.
    assert!(daemon.terminate(), "SIGTERM ends the daemon with success");
    daemon.restart();
    let (status, events) = daemon.admin("GET", "/v1/events?accountId=upgraded", None).await;
    assert_eq!(status, 200, "{events}");
    assert_eq!(events["events"].as_array().map(Vec::len), Some(2), "{events}");
    assert_eq!(daemon.log().matches("marking the store with the new storage format").count(), 1);
}

/// What the fixture holds, as the API shows it, and its state at work (an update of the stored
/// reservation is `reservation.updated` with its previous dates).
async fn everything_is_there(daemon: &Daemon, receiver: &Receiver) {
    let (status, accounts) = daemon.admin("GET", "/v1/accounts", None).await;
    assert_eq!(status, 200, "{accounts}");
    let ids: Vec<&str> = accounts["accounts"].as_array().unwrap().iter().filter_map(|account| account["id"].as_str()).collect();
    assert_eq!(ids, ["quiet", "upgraded"]);
    assert_eq!(accounts["accounts"][1]["name"], "Beach houses");

    let (status, webhooks) = daemon.admin("GET", "/v1/accounts/upgraded/webhooks", None).await;
    assert_eq!(status, 200, "{webhooks}");
    let webhooks = webhooks["webhooks"].as_array().unwrap().clone();
    assert_eq!(webhooks.len(), 2);
    let down = webhooks.iter().find(|webhook| webhook["url"] == DOWN).expect("the webhook to the receiver that is down");
    let up = webhooks.iter().find(|webhook| webhook["url"] != DOWN).unwrap();

    let (status, events) = daemon.admin("GET", "/v1/events?accountId=upgraded", None).await;
    assert_eq!(status, 200, "{events}");
    let events = events["events"].as_array().unwrap().clone();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["eventType"], "reservation.created");
    let event_id = events[0]["id"].as_str().unwrap();
    let (status, event) = daemon.admin("GET", &format!("/v1/events/{event_id}"), None).await;
    assert_eq!(status, 200, "{event}");
    let deliveries = event["deliveries"].as_array().unwrap().clone();
    let to = |webhook: &Value| deliveries.iter().find(|delivery| delivery["webhookId"] == webhook["id"]).cloned().unwrap();
    assert_eq!(to(up)["status"], "delivered");
    assert_eq!(to(down)["status"], "pending", "the delivery owed to the receiver that was down is still owed");
    // Its second attempt was due an hour after the fixture was written, so this daemon may
    // already have made it (and failed: nothing listens there).
    let attempts = to(down)["attempts"].as_u64().unwrap();
    assert!((1..=2).contains(&attempts), "attempts to the receiver that is down: {attempts}");
    let (status, log) = daemon.admin("GET", &format!("/v1/events/{event_id}/attempts"), None).await;
    assert_eq!(status, 200, "{log}");
    let log = log["attempts"].as_array().unwrap().clone();
    assert!(log.iter().any(|attempt| attempt["success"] == true), "the delivered attempt was migrated: {log:?}");
    assert!(log.iter().any(|attempt| attempt["url"] == DOWN && attempt["success"] == false), "the failed attempt was migrated: {log:?}");

    let (status, failed) = daemon.admin("GET", "/v1/inbox?status=failed", None).await;
    assert_eq!(status, 200, "{failed}");
    assert_eq!(failed["inbox"].as_array().map(Vec::len), Some(1), "{failed}");

    // State survived: the same reservation with moved dates is an update with previous dates.
    let webhook_id = up["id"].as_str().unwrap();
    let (status, updated) =
        daemon.admin("PATCH", &format!("/v1/accounts/upgraded/webhooks/{webhook_id}"), Some(json!({"url": receiver.url}))).await;
    assert_eq!(status, 200, "{updated}");
    let (status, answer) = daemon.post_webhook("upgraded", &hostaway_body("reservation-updated-dates-moved"), &[]).await;
    assert_eq!(status, 200, "{answer}");
    let envelope = receiver.next().await.json();
    assert_eq!(envelope["hook"]["eventType"], "reservation.updated");
    assert_eq!(envelope["hook"]["id"], up["id"]);
    assert_eq!(envelope["data"]["record"]["previousArrivalDate"], "2017-07-15T00:00:00.000Z");
}

#[tokio::test]
async fn stayhook_migrate_moves_a_data_dir_of_the_previous_release_offline() {
    let copy = tempfile::tempdir().unwrap();
    copy_dir(&fixture(1), copy.path());
    let migrate = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_stayhook"))
            .arg("migrate")
            .env("STAYHOOK_DATA_DIR", copy.path())
            .env_remove("STAYHOOK_CONFIG")
            .output()
            .unwrap()
    };
    let output = migrate();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("migrated 2 inbox entries, 1 events, 2 deliveries"), "{stdout}");
    assert!(stdout.contains("db.format1"), "the backup is named: {stdout}");
    let again = migrate();
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("already holds a store of format 2 or later"));

    let daemon = Daemon::start(DaemonOptions::default().retry_schedule("1h,1h").store_dir(copy.path().to_path_buf())).await;
    assert!(!daemon.log().contains("migrating the store"), "nothing is left to migrate at start");
    let (status, events) = daemon.admin("GET", "/v1/events?accountId=upgraded", None).await;
    assert_eq!(status, 200, "{events}");
    assert_eq!(events["events"].as_array().map(Vec::len), Some(1), "{events}");
}
