//! Backups and moving a daemon (`stayhook export` / `stayhook import`, `GET /v1/export`): real
//! binary, real ports, real sled files, the real Hostaway plugin.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Daemon, DaemonOptions, Receiver, hostaway_body};

/// `stayhook <args>` against `data_dir`, with `stdin` on standard input when given.
fn stayhook(data_dir: &Path, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_stayhook"));
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("STAYHOOK_DATA_DIR", data_dir)
        .env("STAYHOOK_LOG", "warn")
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    if let Some(bytes) = stdin {
        child.stdin.take().unwrap().write_all(bytes).unwrap();
    }
    child.wait_with_output().unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The export of a stopped daemon's data dir, as lines.
fn export_offline(data_dir: &Path, file: &Path) -> Vec<Value> {
    let output = stayhook(data_dir, &["export", "--out", file.to_str().unwrap()], None);
    assert!(output.status.success(), "{}", text(&output));
    lines(&std::fs::read(file).unwrap())
}

fn lines(bytes: &[u8]) -> Vec<Value> {
    String::from_utf8(bytes.to_vec()).unwrap().lines().map(|line| serde_json::from_str(line).unwrap()).collect()
}

/// An export without what differs between two exports of the same data: the header's time and,
/// with `new_ids`, the inbox ids an import gives anew.
fn comparable(lines: &[Value], new_ids: bool) -> Vec<Value> {
    lines
        .iter()
        .cloned()
        .map(|mut line| {
            if line["type"] == "stayhook-export" {
                line["createdAt"] = Value::Null;
            }
            if new_ids && line["type"] == "webhook" {
                line["id"] = Value::Null;
                for event in line["events"].as_array_mut().unwrap() {
                    event["inboxId"] = Value::Null;
                }
            }
            line
        })
        .collect()
}

async fn api_export(daemon: &Daemon, query: &str) -> (u16, String, String) {
    let response = daemon.http.get(format!("{}/v1/export{query}", daemon.admin_url)).bearer_auth(&daemon.token).send().await.unwrap();
    let status = response.status().as_u16();
    let content_type = response.headers().get("content-type").map(|value| value.to_str().unwrap().to_string()).unwrap_or_default();
    (status, content_type, response.text().await.unwrap())
}

async fn post(daemon: &Daemon, account: &str, body: &[u8], headers: &[(&str, &str)]) -> String {
    let (status, answer) = daemon.post_webhook(account, body, headers).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "accepted", "{answer}");
    let inbox_id = answer["inboxId"].as_str().unwrap().to_string();
    daemon.inbox_outcome(&inbox_id).await;
    inbox_id
}

async fn event_ids(daemon: &Daemon, account: &str) -> Vec<(String, String)> {
    let (status, events) = daemon.admin("GET", &format!("/v1/events?accountId={account}"), None).await;
    assert_eq!(status, 200, "{events}");
    events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| (event["id"].as_str().unwrap().to_string(), event["eventType"].as_str().unwrap().to_string()))
        .collect()
}

/// Not valid UTF-8, not JSON: stored as received, and the plugin fails on it.
const BINARY: &[u8] = &[0xff, 0x00, 0xfe, b'{', 0x80, b'\n'];

#[tokio::test]
async fn a_daemon_moves_to_a_fresh_data_dir_with_its_history_and_nothing_is_sent_twice() {
    let receiver = Receiver::start().await;
    let mut source = Daemon::start(DaemonOptions::default().retry_schedule("1h,1h")).await;
    for id in ["alpha", "beta"] {
        source.create_account(json!({"id": id, "workspaceId": "ws-1", "pms": "hostaway", "name": format!("{id} houses")})).await;
        source.subscribe(id, &receiver.url).await;
    }
    post(&source, "alpha", &hostaway_body("reservation-created"), &[]).await;
    post(&source, "alpha", &hostaway_body("reservation-updated-dates-moved"), &[]).await;
    post(&source, "beta", &hostaway_body("reservation-created"), &[]).await;
    let binary = post(&source, "beta", BINARY, &[("content-type", "application/octet-stream")]).await;
    assert_eq!(source.inbox_outcome(&binary).await["status"], "failed");
    let mut delivered = Vec::new();
    for _ in 0..3 {
        let envelope = receiver.next_success().await.json();
        delivered.push((
            envelope["data"]["integrationAccountId"].as_str().unwrap_or_default().to_string(),
            envelope["hook"]["eventType"].as_str().unwrap().to_string(),
        ));
    }
    receiver.expect_nothing(Duration::from_millis(300)).await;
    let alpha_events = event_ids(&source, "alpha").await;
    let beta_events = event_ids(&source, "beta").await;
    assert_eq!(alpha_events.len(), 2);
    assert_eq!(beta_events.len(), 1);

    // Offline while the daemon holds the data dir: a clear refusal.
    let scratch = tempfile::tempdir().unwrap();
    let locked = stayhook(&source.data_dir(), &["export", "--out", scratch.path().join("x.ndjson").to_str().unwrap()], None);
    assert!(!locked.status.success(), "{}", text(&locked));
    assert!(String::from_utf8_lossy(&locked.stderr).contains("running daemon"), "{}", text(&locked));

    // The running daemon's export; its parameters are checked.
    let (status, content_type, body) = api_export(&source, "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(content_type, "application/x-ndjson");
    let from_api = lines(body.as_bytes());
    assert_eq!((status, api_export(&source, "?account=nobody").await.0), (200, 404));
    assert_eq!(api_export(&source, "?since=yesterday").await.0, 400);
    assert_eq!(api_export(&source, "?webhooks=maybe").await.0, 400);
    let (_, _, only_alpha) = api_export(&source, "?account=alpha&webhooks=false").await;
    let kinds: Vec<String> = lines(only_alpha.as_bytes()).iter().map(|line| line["type"].as_str().unwrap().to_string()).collect();
    assert_eq!(kinds, ["stayhook-export", "account", "subscription", "state", "end"], "{only_alpha}");

    assert!(source.terminate(), "SIGTERM ends the daemon with success");
    let file = scratch.path().join("backup.ndjson");
    let exported = export_offline(&source.data_dir(), &file);
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600, "the file holds secrets");
    }
    assert_eq!(comparable(&exported, false), comparable(&from_api, false), "the API's export is the offline export");
    let count = |kind: &str| exported.iter().filter(|line| line["type"] == kind).count();
    assert_eq!((count("account"), count("subscription"), count("webhook"), count("digest")), (2, 2, 4, 4));
    assert!(count("state") >= 2, "each account's reservation state is in the file");
    let binary_line = exported.iter().find(|line| line["type"] == "webhook" && line["outcome"]["status"] == "failed").unwrap();
    use base64::Engine as _;
    assert_eq!(base64::engine::general_purpose::STANDARD.decode(binary_line["body"].as_str().unwrap()).unwrap(), BINARY);
    assert!(
        exported.iter().any(|line| line["type"] == "account" && line["account"]["verification"].is_object()),
        "secrets are in the file"
    );

    // History: imported into a fresh data dir, everything is there and nothing is delivered again.
    let moved_dir = tempfile::tempdir().unwrap();
    let imported = stayhook(moved_dir.path(), &["import", file.to_str().unwrap()], None);
    assert!(imported.status.success(), "{}", text(&imported));
    let stdout = String::from_utf8_lossy(&imported.stdout);
    assert!(stdout.contains("imported 2 accounts, 2 subscriptions") && stdout.contains("4 webhooks, 3 events, 4 digests"), "{stdout}");
    let mut moved = Daemon::start(DaemonOptions::default().retry_schedule("1h,1h").store_dir(moved_dir.path().to_path_buf())).await;
    let (_, accounts) = moved.admin("GET", "/v1/accounts", None).await;
    let names: Vec<&str> = accounts["accounts"].as_array().unwrap().iter().map(|account| account["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["alpha houses", "beta houses"]);
    assert_eq!(event_ids(&moved, "alpha").await, alpha_events, "the event log is as before");
    assert_eq!(event_ids(&moved, "beta").await, beta_events);
    let (_, failed) = moved.admin("GET", "/v1/inbox?status=failed", None).await;
    assert_eq!(failed["inbox"].as_array().map(Vec::len), Some(1), "outcomes are as before: {failed}");
    receiver.expect_nothing(Duration::from_secs(2)).await;
    let (_, _, again) = api_export(&moved, "").await;
    assert_eq!(
        comparable(&lines(again.as_bytes()), true),
        comparable(&exported, true),
        "bodies, outcomes, events, state and digests are as exported"
    );

    // The PMS retries a webhook it sent before the move: still a duplicate.
    let (status, answer) = moved.post_webhook("beta", &hostaway_body("reservation-created"), &[]).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("duplicate")), "{answer}");
    // The state moved too: an update of an exported reservation is an update with its previous dates.
    post(&moved, "beta", &hostaway_body("reservation-updated-dates-moved"), &[]).await;
    let envelope = receiver.next_success().await.json();
    assert_eq!(envelope["hook"]["eventType"], "reservation.updated", "{envelope}");
    assert_eq!(envelope["data"]["integrationAccountId"], "beta");
    assert_eq!(envelope["data"]["record"]["previousArrivalDate"], "2017-07-15T00:00:00.000Z");
    assert!(moved.terminate());

    // Replay: into another fresh data dir, each webhook normalized again and its events delivered
    // once, in the order the webhooks arrived.
    let replay_dir = tempfile::tempdir().unwrap();
    let replayed = stayhook(replay_dir.path(), &["import", file.to_str().unwrap(), "--replay"], None);
    assert!(replayed.status.success(), "{}", text(&replayed));
    assert!(String::from_utf8_lossy(&replayed.stdout).contains("4 webhooks are pending"), "{}", text(&replayed));
    let _replay = Daemon::start(DaemonOptions::default().retry_schedule("1h,1h").store_dir(replay_dir.path().to_path_buf())).await;
    let mut again = Vec::new();
    for _ in 0..3 {
        let envelope = receiver.next_success().await.json();
        again.push((
            envelope["data"]["integrationAccountId"].as_str().unwrap_or_default().to_string(),
            envelope["hook"]["eventType"].as_str().unwrap().to_string(),
        ));
    }
    receiver.expect_nothing(Duration::from_secs(2)).await;
    let of = |list: &[(String, String)], account: &str| {
        list.iter().filter(|(id, _)| id == account).map(|(_, kind)| kind.clone()).collect::<Vec<_>>()
    };
    assert_eq!(of(&again, "alpha"), ["reservation.created", "reservation.updated"], "in order: {again:?}");
    assert_eq!(of(&again, "alpha"), of(&delivered, "alpha"));
    assert_eq!(of(&again, "beta"), of(&delivered, "beta"));
}

#[tokio::test]
async fn an_import_refuses_a_bad_line_and_existing_ids_and_writes_nothing() {
    let mut source = Daemon::start(DaemonOptions::default()).await;
    source.create_account(json!({"id": "gamma", "workspaceId": "ws-1", "pms": "hostaway"})).await;
    source.create_account(json!({"id": "delta", "workspaceId": "ws-1", "pms": "hostaway"})).await;
    source.subscribe("delta", "http://127.0.0.1:9/down").await;
    assert!(source.terminate());
    let scratch = tempfile::tempdir().unwrap();
    let file = scratch.path().join("backup.ndjson");
    let exported = export_offline(&source.data_dir(), &file);
    assert_eq!(exported.len(), 5, "header, two accounts, a subscription, end: {exported:?}");

    // Into a data dir that has them: refused, naming the ids.
    let target = tempfile::tempdir().unwrap();
    let first = stayhook(target.path(), &["import", file.to_str().unwrap()], None);
    assert!(first.status.success(), "{}", text(&first));
    let before = export_offline(target.path(), &scratch.path().join("before.ndjson"));
    let again = stayhook(target.path(), &["import", file.to_str().unwrap()], None);
    assert!(!again.status.success(), "{}", text(&again));
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("gamma") && stderr.contains("delta") && stderr.contains("--skip-existing"), "{stderr}");

    // A bad line in the middle: refused naming the line and the field, nothing written.
    let mut bad: Vec<String> = std::fs::read_to_string(&file).unwrap().lines().map(String::from).collect();
    let mut account = exported[1].clone();
    account["account"]["id"] = json!("epsilon");
    account["account"].as_object_mut().unwrap().remove("workspaceId");
    bad[1] = account.to_string();
    let bad_file = scratch.path().join("bad.ndjson");
    std::fs::write(&bad_file, bad.join("\n") + "\n").unwrap();
    let refused = stayhook(target.path(), &["import", bad_file.to_str().unwrap(), "--skip-existing"], None);
    assert!(!refused.status.success(), "{}", text(&refused));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("line 2") && stderr.contains("workspaceId") && stderr.contains("nothing was imported"), "{stderr}");
    // Cut short (no `end` line): refused too.
    let cut = scratch.path().join("cut.ndjson");
    let good: Vec<String> = std::fs::read_to_string(&file).unwrap().lines().map(String::from).collect();
    std::fs::write(&cut, good[..3].join("\n") + "\n").unwrap();
    let refused = stayhook(target.path(), &["import", cut.to_str().unwrap()], None);
    assert!(!refused.status.success() && String::from_utf8_lossy(&refused.stderr).contains("cut short"), "{}", text(&refused));
    let after = export_offline(target.path(), &scratch.path().join("after.ndjson"));
    assert_eq!(comparable(&after, false), comparable(&before, false), "the refused imports changed nothing");

    // --skip-existing, from standard input: the new account goes in, the existing ones are skipped.
    let mut with_new: Vec<Value> = exported.clone();
    let mut epsilon = exported[1].clone();
    epsilon["account"]["id"] = json!("epsilon");
    with_new.insert(1, epsilon);
    with_new.last_mut().unwrap()["counts"]["accounts"] = json!(3);
    let input: String = with_new.iter().map(|line| line.to_string() + "\n").collect();
    let skipped = stayhook(target.path(), &["import", "-", "--skip-existing"], Some(input.as_bytes()));
    assert!(skipped.status.success(), "{}", text(&skipped));
    let stdout = String::from_utf8_lossy(&skipped.stdout);
    assert!(stdout.contains("imported 1 accounts, 0 subscriptions") && stdout.contains("skipped 2 accounts, 1 subscriptions"), "{stdout}");
    let accounts: Vec<String> = export_offline(target.path(), &scratch.path().join("last.ndjson"))
        .iter()
        .filter(|line| line["type"] == "account")
        .map(|line| line["account"]["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(accounts, ["delta", "epsilon", "gamma"]);
    assert!(
        std::fs::read_dir(target.path()).unwrap().all(|entry| !entry.unwrap().file_name().to_string_lossy().starts_with("import-")),
        "the copy of standard input is removed"
    );
}
