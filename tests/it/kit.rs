//! The plugin authors' kit end to end, the way an integration author uses it: `plugin new`
//! writes a plugin, `plugin test` builds it and runs its case (and shows a diff once the mapping
//! changes), the built component is uploaded to a running daemon, which normalizes the plugin's
//! first webhook without a rebuild or restart; a second upload replaces it and `renormalize`
//! replays the stored webhook through the replacement.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use crate::support::{Daemon, DaemonOptions, Receiver, repo_root};

fn stayhook(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stayhook")).args(args).env("STAYHOOK_LOG", "warn").output().expect("run stayhook")
}

/// A target dir that outlives the test, so a second run builds the plugin's dependencies once.
fn kit_target_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("plugin-kit")
}

fn plugin_test(dir: &Path, extra: &[&str]) -> (bool, String) {
    let target = kit_target_dir();
    let mut args = vec!["plugin", "test", dir.to_str().unwrap(), "--target-dir", target.to_str().unwrap()];
    args.extend_from_slice(extra);
    let output = stayhook(&args);
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    (output.status.success(), format!("{stdout}\n{}", String::from_utf8_lossy(&output.stderr)))
}

fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[tokio::test]
async fn a_new_plugin_is_written_tested_uploaded_and_normalizes_its_first_webhook() {
    let workspace = tempfile::tempdir().unwrap();
    let created = stayhook(&["plugin", "new", "acme", "--pms", "Acme Rentals", "--dir", workspace.path().to_str().unwrap()]);
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let dir = workspace.path().join("acme");
    assert!(dir.join("sdk/wit/stayhook.wit").exists(), "a standalone plugin carries the SDK and the contract");

    // The template builds and its sample case passes.
    let (passed, output) = plugin_test(&dir, &[]);
    assert!(passed && output.contains("ok      sample") && output.contains("1 passed, 0 failed"), "{output}");
    let component = kit_target_dir().join("wasm32-wasip2/release/stayhook_plugin_acme.wasm");
    let template_build = std::fs::read(&component).unwrap();

    // Fill it in: this PMS's channel names become upper case. The case now fails, with a diff
    // naming the field; blessing rewrites expected.json and it passes.
    let mapping_path = dir.join("src/mapping.rs");
    let mapping = std::fs::read_to_string(&mapping_path).unwrap();
    let filled = mapping.replace(
        r#"reservation.source = json::string(booking, "channel");"#,
        r#"reservation.source = json::string(booking, "channel").map(|channel| channel.to_uppercase());"#,
    );
    assert_ne!(filled, mapping, "the template's mapping changed; update this test");
    std::fs::write(&mapping_path, filled).unwrap();
    let (passed, output) = plugin_test(&dir, &[]);
    assert!(!passed, "{output}");
    assert!(output.contains("FAIL    sample") && output.contains(r#"$[0].record.source: expected "direct", got "DIRECT""#), "{output}");
    let (passed, output) = plugin_test(&dir, &["--bless"]);
    assert!(passed && output.contains("blessed sample"), "{output}");
    let (passed, output) = plugin_test(&dir, &[]);
    assert!(passed, "{output}");

    // Bad input is a case too: it expects a refusal whose reason contains the given text.
    let refused = dir.join("tests/cases/no-booking");
    std::fs::create_dir_all(&refused).unwrap();
    std::fs::write(refused.join("body.json"), r#"{"event": "booking.created"}"#).unwrap();
    std::fs::write(refused.join("case.json"), r#"{"source": "https://example.invalid/docs", "note": "no booking object"}"#).unwrap();
    std::fs::write(refused.join("expected.json"), r#"{"refused": "no `booking` object"}"#).unwrap();
    let (passed, output) = plugin_test(&dir, &[]);
    assert!(passed && output.contains("ok      no-booking") && output.contains("2 passed, 0 failed"), "{output}");
    std::fs::write(refused.join("expected.json"), r#"{"refused": "unsupported event"}"#).unwrap();
    let (passed, output) = plugin_test(&dir, &["--case", "no-booking"]);
    assert!(
        !passed
            && output.contains(r#"$.refused: expected a refusal containing "unsupported event", got "bad payload: no `booking` object""#),
        "{output}"
    );
    std::fs::remove_dir_all(&refused).unwrap();
    let filled_build = std::fs::read(&component).unwrap();

    // A running daemon that has never heard of the plugin.
    let receiver = Receiver::start().await;
    let daemon = Daemon::start(DaemonOptions::default()).await;
    let (status, answer) = daemon.admin("POST", "/v1/accounts", Some(json!({"workspaceId": "ws", "pms": "acme"}))).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (422, Some("unknown_plugin")), "{answer}");
    let (status, uploaded) = daemon.upload_plugin("acme", filled_build).await;
    assert_eq!(status, 201, "{uploaded}");
    assert_eq!((uploaded["pms"].as_str(), uploaded["source"].as_str()), (Some("Acme Rentals"), Some("file")), "{uploaded}");
    assert_eq!(uploaded["verification"], "hmac-sha256");

    let account =
        daemon.create_account(json!({"workspaceId": "ws", "pms": "acme", "verification": {"secret": "s3cret-of-20-bytes!"}})).await;
    let account_id = account["id"].as_str().unwrap();
    daemon.subscribe(account_id, &receiver.url).await;
    let body = std::fs::read(dir.join("tests/cases/sample/body.json")).unwrap();
    let (status, answer) = daemon.post_webhook(account_id, &body, &[("x-signature", &sign("wrong", &body))]).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (401, Some("verification_failed")), "{answer}");
    let (status, answer) = daemon.post_webhook(account_id, &body, &[("x-signature", &sign("s3cret-of-20-bytes!", &body))]).await;
    assert_eq!(status, 200, "{answer}");
    let first = receiver.next().await.json();
    assert_eq!(first["hook"]["eventType"], "reservation.created");
    assert_eq!(first["data"]["record"]["id"], "B-1001");
    assert_eq!(first["data"]["record"]["source"], "DIRECT");
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("tests/cases/sample/expected.json")).unwrap()).unwrap();
    assert_eq!(first["data"]["record"], expected[0]["record"], "the daemon and `plugin test` disagree");

    // Roll back to the template's build and replay: the record changed, so an update goes out.
    let (status, replaced) = daemon.upload_plugin("acme", template_build).await;
    assert_eq!(status, 200, "{replaced}");
    assert_ne!(replaced["sha256"], uploaded["sha256"]);
    let (status, answer) = daemon.admin("POST", &format!("/v1/accounts/{account_id}/renormalize"), Some(json!({}))).await;
    assert_eq!((status, answer["queued"].as_u64()), (202, Some(1)), "{answer}");
    let replayed = receiver.next().await.json();
    assert_eq!(replayed["hook"]["eventType"], "reservation.updated");
    assert_eq!(replayed["data"]["record"]["source"], "direct");
    // Replaying again changes nothing, so nothing is delivered.
    let (status, answer) =
        daemon.admin("POST", &format!("/v1/accounts/{account_id}/renormalize"), Some(json!({"from": "2020-01-01T00:00:00Z"}))).await;
    assert_eq!((status, answer["queued"].as_u64()), (202, Some(1)), "{answer}");
    receiver.expect_nothing(std::time::Duration::from_millis(500)).await;
    // A window before the webhook arrived replays nothing.
    let (_, answer) =
        daemon.admin("POST", &format!("/v1/accounts/{account_id}/renormalize"), Some(json!({"to": "2020-01-01T00:00:00Z"}))).await;
    assert_eq!(answer["queued"], 0, "{answer}");
}

/// Inside stayhook's own plugin workspace, `plugin new` adds a member that uses the workspace's SDK.
#[test]
fn inside_the_plugin_workspace_a_new_plugin_becomes_a_member() {
    let workspace = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(workspace.path().join("sdk")).unwrap();
    std::fs::copy(repo_root().join("plugins/sdk/Cargo.toml"), workspace.path().join("sdk/Cargo.toml")).unwrap();
    std::fs::write(workspace.path().join("Cargo.toml"), "[workspace]\nmembers = [\"sdk\"]\n").unwrap();
    let created = stayhook(&["plugin", "new", "acme", "--dir", workspace.path().to_str().unwrap()]);
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let manifest = std::fs::read_to_string(workspace.path().join("Cargo.toml")).unwrap();
    assert!(manifest.contains(r#"members = ["sdk", "acme"]"#), "{manifest}");
    let member = std::fs::read_to_string(workspace.path().join("acme/Cargo.toml")).unwrap();
    assert!(member.contains("stayhook-plugin-sdk.workspace = true"), "{member}");
    assert!(!workspace.path().join("acme/sdk").exists());
    // Writing over an existing plugin is refused.
    let again = stayhook(&["plugin", "new", "acme", "--dir", workspace.path().to_str().unwrap()]);
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("already exists"));
}

/// From the root of a checkout (a folder whose `plugins/` is the plugin workspace), `plugin new`
/// writes into `plugins/` as a member, as docs/writing-a-plugin.md shows; it used to write a
/// standalone crate with a vendored SDK beside the checkout's sources.
#[test]
fn from_a_checkout_root_a_new_plugin_joins_its_plugins_workspace() {
    let checkout = tempfile::tempdir().unwrap();
    let plugins = checkout.path().join("plugins");
    std::fs::create_dir_all(plugins.join("sdk")).unwrap();
    std::fs::copy(repo_root().join("plugins/sdk/Cargo.toml"), plugins.join("sdk/Cargo.toml")).unwrap();
    std::fs::write(plugins.join("Cargo.toml"), "[workspace]\nmembers = [\"sdk\"]\n").unwrap();
    let created = stayhook(&["plugin", "new", "acme", "--dir", checkout.path().to_str().unwrap()]);
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    assert!(String::from_utf8_lossy(&created.stdout).contains("a member of the plugin workspace"));
    assert!(!checkout.path().join("acme").exists());
    let manifest = std::fs::read_to_string(plugins.join("Cargo.toml")).unwrap();
    assert!(manifest.contains(r#"members = ["sdk", "acme"]"#), "{manifest}");
    assert!(std::fs::read_to_string(plugins.join("acme/Cargo.toml")).unwrap().contains("stayhook-plugin-sdk.workspace = true"));
    assert!(!plugins.join("acme/sdk").exists());
    // The README asks for what an official plugin's README must state.
    let readme = std::fs::read_to_string(plugins.join("acme/README.md")).unwrap();
    for heading in ["**Confidence:**", "## Verification and registration", "## API calls", "## Sources and open points"] {
        assert!(readme.contains(heading), "{heading}: {readme}");
    }
}

/// The written plugin's `describe` names every verification scheme of the contract its SDK targets
/// (`wit/v0.2`), so an author finds Smily's HMAC-SHA1-over-Base64 and Amazon SNS there too (the
/// template listed only the 0.1 schemes when the Smily and Hostify plugins were written).
#[test]
fn a_new_plugin_names_every_verification_scheme_of_the_contract() {
    let wit = std::fs::read_to_string(repo_root().join("wit/v0.2/stayhook.wit")).unwrap();
    let variant = wit.split("variant verification-scheme {").nth(1).and_then(|rest| rest.split('}').next()).expect("the variant");
    let schemes: Vec<String> = variant
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with("//"))
        .map(|line| {
            let name = line.split(['(', ',']).next().unwrap_or_default();
            name.split('-').map(|word| word[..1].to_uppercase() + &word[1..]).collect()
        })
        .collect();
    assert!(schemes.len() >= 8 && schemes.contains(&"HmacSha1Base64Body".to_string()), "{schemes:?}");
    let workspace = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(workspace.path().join("sdk")).unwrap();
    std::fs::copy(repo_root().join("plugins/sdk/Cargo.toml"), workspace.path().join("sdk/Cargo.toml")).unwrap();
    std::fs::write(workspace.path().join("Cargo.toml"), "[workspace]\nmembers = [\"sdk\"]\n").unwrap();
    let created = stayhook(&["plugin", "new", "acme", "--dir", workspace.path().to_str().unwrap()]);
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let lib = std::fs::read_to_string(workspace.path().join("acme/src/lib.rs")).unwrap();
    // `None` is the absence of a scheme; the template says "when the PMS signs nothing".
    for scheme in schemes.iter().filter(|scheme| *scheme != "None") {
        assert!(lib.contains(scheme.as_str()), "the template's describe does not name {scheme}:\n{lib}");
    }
}
