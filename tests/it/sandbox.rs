//! The plugin sandbox against hostile components (issue 10, items 6 and 7): a component whose
//! start function never returns, and components whose memories are each under the memory cap but
//! together far over it.
//!
//! The hostile components are built here the way real plugins are: a core module (WAT text below)
//! implements the `plugin` world of `wit/v0.1` with the canonical ABI, and wit-component wraps it
//! into a component with the contract's own metadata. So each one passes the contract-version
//! check and the export type check and reaches instantiation, where its start function runs. Its
//! `describe` returns a valid plugin-info from a data segment: a component that got through
//! instantiation would be accepted, as the `roomy` control shows.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{Daemon, DaemonOptions, Receiver, repo_root};

/// How long any one step may take before the test gives up: far above the plugin time limit,
/// only there so a hang fails the test instead of stalling the suite.
const BOUND: Duration = Duration::from_secs(60);
const WASM_PAGE_BYTES: u64 = 64 * 1024;
const MIB: u64 = 1024 * 1024;

/// A component implementing the plugin world whose core module has memories of `memory_pages`
/// pages (the first one exported as the canonical ABI's memory) and runs `start` as its start
/// function. `describe` answers `{name, version "0.0.1", pms, no events, no verification, no API}`.
fn hostile_plugin(name: &str, memory_pages: &[u64], start: &str) -> Vec<u8> {
    let mut wat = String::from("(module\n");
    for (index, pages) in memory_pages.iter().enumerate() {
        let export = if index == 0 { r#"(export "memory")"# } else { "" };
        writeln!(wat, "  (memory $m{index} {export} {pages})").unwrap();
    }
    // plugin-info at 1024, laid out per the canonical ABI: name, version, pms as (pointer, length),
    // events as an empty list, then the verification variant and the api option, both case 0
    // (`none`), which the zeroed memory already holds.
    let strings = [(1200u32, name), (1280, "0.0.1"), (1296, "hostile test component")];
    let mut record = String::new();
    for (pointer, text) in strings {
        for byte in pointer.to_le_bytes().into_iter().chain(u32::try_from(text.len()).unwrap().to_le_bytes()) {
            write!(record, "\\{byte:02x}").unwrap();
        }
    }
    writeln!(wat, r#"  (data (memory $m0) (i32.const 1024) "{record}")"#).unwrap();
    for (pointer, text) in strings {
        writeln!(wat, r#"  (data (memory $m0) (i32.const {pointer}) "{text}")"#).unwrap();
    }
    wat.push_str(
        r#"  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) unreachable)
  (func (export "describe") (result i32) i32.const 1024)
  (func (export "normalize") (param i32) (result i32) unreachable)
  (func (export "subscribe") (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32) unreachable)
"#,
    );
    writeln!(wat, "  (func $start {start})\n  (start $start)\n)").unwrap();

    let mut module = wat::parse_str(&wat).unwrap_or_else(|error| panic!("{error}\n{wat}"));
    let mut resolve = wit_parser::Resolve::default();
    let (package, _) = resolve.push_dir(repo_root().join("wit/v0.1")).expect("the plugin contract");
    let world = resolve.select_world(&[package], Some("plugin")).expect("the plugin world");
    wit_component::embed_component_metadata(&mut module, &resolve, world, wit_component::StringEncoding::UTF8).unwrap();
    wit_component::ComponentEncoder::default().module(&module).unwrap().validate(true).encode().unwrap()
}

/// A start function that never returns.
fn spinning_plugin() -> Vec<u8> {
    hostile_plugin("spin", &[1], "(loop $forever (br $forever))")
}

/// `count` memories of `pages` pages each, every byte past the first 4 KiB (where `describe`'s
/// answer lives) written by the start function, so each one really costs resident memory.
fn hoarding_plugin(name: &str, count: usize, pages: u64) -> Vec<u8> {
    let bytes = pages * WASM_PAGE_BYTES;
    let start: String =
        (0..count).map(|index| format!("(memory.fill $m{index} (i32.const 4096) (i32.const 171) (i32.const {}))", bytes - 4096)).collect();
    hostile_plugin(name, &vec![pages; count], &start)
}

fn artifact(name: &str) -> Vec<u8> {
    std::fs::read(PathBuf::from(env!("PLUGIN_ARTIFACTS_DIR")).join(format!("stayhook_plugin_{name}.wasm"))).unwrap()
}

async fn listed(daemon: &Daemon) -> Value {
    let (status, listed) = daemon.admin("GET", "/v1/plugins", None).await;
    assert_eq!(status, 200, "{listed}");
    listed
}

fn is_loaded(listed: &Value, name: &str) -> bool {
    listed["plugins"].as_array().unwrap().iter().any(|plugin| plugin["name"] == name)
}

/// The load error recorded for a plugin file whose name ends with `file_name`.
fn load_error(listed: &Value, file_name: &str) -> Option<String> {
    let errors = listed["loadErrors"].as_array().unwrap();
    errors
        .iter()
        .find(|error| error["path"].as_str().unwrap().ends_with(file_name))
        .map(|error| error["error"].as_str().unwrap().to_string())
}

async fn upload(daemon: &Daemon, name: &str, wasm: Vec<u8>) -> (u16, Value) {
    tokio::time::timeout(BOUND, daemon.upload_plugin(name, wasm))
        .await
        .unwrap_or_else(|_| panic!("PUT /v1/plugins/{name} did not answer; log:\n{}", daemon.log()))
}

async fn healthy(daemon: &Daemon) -> bool {
    let answer = tokio::time::timeout(BOUND, daemon.http.get(format!("{}/healthz", daemon.admin_url)).send()).await;
    matches!(answer, Ok(Ok(response)) if response.status().is_success())
}

/// Peak resident memory of the daemon so far, in bytes (`VmHWM`).
fn peak_rss_bytes(daemon: &Daemon) -> u64 {
    let pid = daemon.pid().expect("the daemon runs");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|line| line.starts_with("VmHWM:")).expect("VmHWM in /proc/<pid>/status");
    let kib: u64 = line.trim_start_matches("VmHWM:").trim().trim_end_matches("kB").trim().parse().unwrap();
    kib * 1024
}

#[tokio::test]
async fn a_start_function_that_never_returns_is_refused_and_hot_reload_goes_on() {
    let receiver = Receiver::start().await;
    let mut daemon = Daemon::start(DaemonOptions::default().env("STAYHOOK_PLUGIN_TIMEOUT_MS", "500")).await;
    let spin = spinning_plugin();

    // Uploaded: a prompt 422 that names the timeout, and nothing installed.
    let (status, answer) = upload(&daemon, "spin", spin.clone()).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (422, Some("plugin_timeout")), "{answer}");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(message.contains("timed out after 500 ms") && message.contains("unchanged"), "{message}");
    assert!(healthy(&daemon).await);
    assert!(!is_loaded(&listed(&daemon).await, "spin"));
    assert!(!daemon.plugin_dir().join("spin.wasm").exists(), "a refused upload was written to the plugin dir");

    // Dropped into the plugin dir: a load error, and the watcher is not stuck on it.
    std::fs::write(daemon.plugin_dir().join("spin.wasm"), &spin).unwrap();
    let error = daemon.wait_for("the spinning file's load error", async |daemon| load_error(&listed(daemon).await, "spin.wasm")).await;
    assert!(error.contains("timed out"), "{error}");
    std::fs::write(daemon.plugin_dir().join("chaos.wasm"), artifact("chaos")).unwrap();
    daemon
        .wait_for("a good plugin dropped afterwards to load", async |daemon| is_loaded(&listed(daemon).await, "chaos").then_some(()))
        .await;

    // The good plugin does its work.
    let account = daemon.create_account(json!({"workspaceId": "ws", "pms": "chaos"})).await;
    let account_id = account["id"].as_str().unwrap();
    daemon.subscribe(account_id, &receiver.url).await;
    let (status, _) = daemon.post_webhook(account_id, br#"{"behaviour": "ok", "id": "after-the-spin"}"#, &[]).await;
    assert_eq!(status, 200);
    assert_eq!(receiver.next().await.json()["data"]["record"]["id"], "after-the-spin");

    // A start-up with the file still there is not held by it.
    daemon.restart();
    let listed = listed(&daemon).await;
    assert!(is_loaded(&listed, "chaos"), "{listed}");
    assert!(load_error(&listed, "spin.wasm").is_some_and(|error| error.contains("timed out")), "{listed}");
    assert!(daemon.terminate_within(BOUND).is_some(), "the daemon did not stop on SIGTERM");
}

#[tokio::test]
async fn sigterm_stops_the_daemon_while_a_hostile_upload_is_in_flight() {
    let mut daemon = Daemon::start(DaemonOptions::default()).await;
    let request = daemon
        .http
        .put(format!("{}/v1/plugins/spin", daemon.admin_url))
        .bearer_auth(&daemon.token)
        .header("content-type", "application/wasm")
        .body(spinning_plugin());
    let in_flight = tokio::spawn(request.send());
    let deadline = Instant::now() + BOUND;
    while !daemon.log().contains("plugin upload received") {
        assert!(Instant::now() < deadline, "the upload never reached the daemon; log:\n{}", daemon.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stopped = daemon.terminate_within(BOUND);
    assert_eq!(stopped, Some(true), "SIGTERM did not stop the daemon cleanly while it loaded a spinning plugin; log:\n{}", daemon.log());
    // The upload was answered (refused) before the daemon went, or its connection closed.
    if let Ok(Ok(response)) = tokio::time::timeout(BOUND, in_flight).await.expect("the upload task ended") {
        assert_eq!(response.status().as_u16(), 422);
    }
}

#[tokio::test]
async fn memories_under_the_cap_one_by_one_but_over_it_together_are_refused() {
    let daemon = Daemon::start(DaemonOptions::default()).await;
    let cap_bytes = 64 * MIB;

    // Control: the same shell with one touched memory under the cap loads, so the refusals
    // below are the budget's doing, not a broken component.
    let (status, answer) = upload(&daemon, "roomy", hoarding_plugin("roomy", 1, 256)).await;
    assert_eq!(status, 201, "{answer}");

    // Six memories of 60 MiB (each under the 64 MiB cap, 360 MiB together), all filled by the
    // start function: refused before the start function runs, so none of it becomes resident.
    let before_bytes = peak_rss_bytes(&daemon);
    let (count, pages) = (6, 960);
    let sum_bytes = count * pages * WASM_PAGE_BYTES;
    assert!(pages * WASM_PAGE_BYTES < cap_bytes && sum_bytes > cap_bytes);
    let (status, answer) = upload(&daemon, "hoard", hoarding_plugin("hoard", usize::try_from(count).unwrap(), pages)).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (422, Some("plugin_memory_limit")), "{answer}");
    assert!(answer["error"]["message"].as_str().unwrap().contains("memory limit"), "{answer}");
    let grown_bytes = peak_rss_bytes(&daemon).saturating_sub(before_bytes);
    assert!(grown_bytes < sum_bytes / 2, "peak RSS grew by {} MiB for a refused plugin", grown_bytes / MIB);

    // The component of the report: sixteen memories of 62.5 MiB (1,000 MiB), refused by count.
    let before_bytes = peak_rss_bytes(&daemon);
    let (count, pages) = (16, 1000);
    let sum_bytes = count * pages * WASM_PAGE_BYTES;
    let (status, answer) = upload(&daemon, "hoard", hoarding_plugin("hoard", usize::try_from(count).unwrap(), pages)).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (422, Some("invalid_plugin")), "{answer}");
    assert!(answer["error"]["message"].as_str().unwrap().contains("memory count"), "{answer}");
    let grown_bytes = peak_rss_bytes(&daemon).saturating_sub(before_bytes);
    assert!(grown_bytes < sum_bytes / 2, "peak RSS grew by {} MiB for a refused plugin", grown_bytes / MIB);

    let listed = listed(&daemon).await;
    assert!(is_loaded(&listed, "roomy") && !is_loaded(&listed, "hoard"), "{listed}");
    assert!(healthy(&daemon).await);
}

#[test]
fn plugin_run_refuses_a_component_that_never_finishes_instantiating() {
    let dir = tempfile::tempdir().unwrap();
    let component = dir.path().join("spin.wasm");
    std::fs::write(&component, spinning_plugin()).unwrap();
    let payload = dir.path().join("payload.json");
    std::fs::write(&payload, b"{}").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_stayhook"))
        .args(["plugin", "run"])
        .arg(&component)
        .arg(&payload)
        .env("STAYHOOK_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + BOUND;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("`stayhook plugin run` did not return on a component whose start function never returns");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success());
    assert!(stderr.contains("timed out"), "{stderr}");
}
