//! The command line as an integration author uses it.

use std::process::Command;

use serde_json::Value;

use crate::support::repo_root;

#[test]
fn plugin_run_prints_the_unified_events() {
    let case = repo_root().join("plugins/hostaway/tests/cases/reservation-created");
    let output = Command::new(env!("CARGO_BIN_EXE_stayhook"))
        .args(["plugin", "run", "hostaway"])
        .arg(case.join("body.json"))
        .env("STAYHOOK_LOG", "warn")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let printed: Value = serde_json::from_slice(&output.stdout).unwrap();
    let expected: Value = serde_json::from_str(&std::fs::read_to_string(case.join("expected.json")).unwrap()).unwrap();
    assert_eq!(printed, expected);
}

#[test]
fn plugin_run_explains_a_refusal_and_an_unknown_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let payload = dir.path().join("payload.json");
    std::fs::write(&payload, br#"{"object": "reservation", "event": "reservation.created"}"#).unwrap();
    let refused = Command::new(env!("CARGO_BIN_EXE_stayhook")).args(["plugin", "run", "hostaway"]).arg(&payload).output().unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("bad payload"), "{}", String::from_utf8_lossy(&refused.stderr));

    let unknown = Command::new(env!("CARGO_BIN_EXE_stayhook")).args(["plugin", "run", "nosuchpms"]).arg(&payload).output().unwrap();
    assert!(!unknown.status.success());
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert!(stderr.contains("no plugin named \"nosuchpms\"") && stderr.contains("hostaway"), "{stderr}");
}

#[test]
fn plugin_run_answers_api_calls_from_recorded_responses() {
    let case = repo_root().join("plugins/guesty/tests/cases/reservation-updated-v2");
    let run = |responses: Option<&std::path::Path>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_stayhook"));
        command.args(["plugin", "run", "guesty"]).arg(case.join("body.json")).env("STAYHOOK_LOG", "warn");
        let settings: Value = serde_json::from_str(&std::fs::read_to_string(case.join("case.json")).unwrap()).unwrap();
        for (name, value) in settings["settings"].as_object().into_iter().flatten() {
            command.arg("--setting").arg(format!("{name}={}", value.as_str().unwrap()));
        }
        if let Some(responses) = responses {
            command.arg("--responses").arg(responses);
        }
        command.output().unwrap()
    };
    let without = run(None);
    assert!(!without.status.success());
    let stderr = String::from_utf8_lossy(&without.stderr);
    assert!(stderr.contains("GET /v1/reservations/") && stderr.contains("no recorded response"), "{stderr}");

    let with = run(Some(&case.join("responses")));
    assert!(with.status.success(), "{}", String::from_utf8_lossy(&with.stderr));
    let printed: Value = serde_json::from_slice(&with.stdout).unwrap();
    let expected: Value = serde_json::from_str(&std::fs::read_to_string(case.join("expected.json")).unwrap()).unwrap();
    assert_eq!(printed, expected);
}
