//! The line parser and the whole-file check, on text.

use std::io::Cursor;

use serde_json::json;

use super::import::{ImportError, validate};
use super::*;

fn header() -> String {
    json!({"type": "stayhook-export", "format": 1, "stayhookVersion": "0.1.0", "createdAt": "2026-12-07T00:00:00.000Z", "webhooks": true})
        .to_string()
}

fn account(id: &str) -> String {
    json!({"type": "account", "account": {"id": id, "workspaceId": "w1", "pms": "hostaway", "createdAt": "2026-01-01T00:00:00Z", "updatedAt": "2026-01-01T00:00:00Z"}})
        .to_string()
}

fn webhook(account: &str, body: &str) -> String {
    json!({
        "type": "webhook", "id": "7", "accountId": account, "receivedAtMs": 1_764_000_000_000u64, "method": "POST",
        "headers": [["content-type", "application/json"]], "body": body, "pending": false,
        "outcome": {"status": "skipped", "plugin": null, "pluginVersion": null, "errorKind": null, "error": "not handled", "eventIds": [], "nUnchanged": 0, "at": "2026-01-01T00:00:00Z"},
    })
    .to_string()
}

fn end(accounts: u64, webhooks: u64) -> String {
    json!({"type": "end", "counts": {"accounts": accounts, "subscriptions": 0, "states": 0, "webhooks": webhooks, "events": 0, "digests": 0}})
        .to_string()
}

fn check(lines: &[String]) -> Result<import::Checked, ImportError> {
    validate(&mut Cursor::new(lines.join("\n") + "\n"), &mut |_| {})
}

fn refusal(lines: &[String]) -> (u64, String) {
    match check(lines) {
        Err(ImportError::Line { line, message }) => (line, message),
        other => panic!("expected a line error, got {other:?}"),
    }
}

#[test]
fn every_line_type_parses_and_prints_back() {
    let lines = [
        header(),
        account("a1"),
        json!({"type": "subscription", "subscription": {"id": "s1", "accountId": "a1", "name": "n", "url": "https://x.example/", "enabled": true, "eventTypes": ["reservation.created"], "secret": "whsec_AAAA", "createdAt": "t", "updatedAt": "t"}}).to_string(),
        json!({"type": "state", "accountId": "a1", "kind": "reservation", "recordId": "r1", "record": {"id": "r1"}}).to_string(),
        webhook("a1", "AAEC/w=="),
        json!({"type": "digest", "accountId": "a1", "digest": "3q2+7w==", "seenAtMs": 5}).to_string(),
    ];
    for text in &lines {
        let line = Line::parse(text).unwrap_or_else(|error| panic!("{text}: {error}"));
        let printed = line.to_json();
        let reparsed = Line::parse(&printed.to_string()).unwrap();
        assert_eq!(reparsed.to_json(), printed, "a line prints back as it parsed");
    }
    let Line::Webhook(parsed) = Line::parse(&lines[4]).unwrap() else { panic!("a webhook line") };
    assert_eq!(decode_base64(&parsed.body).unwrap(), vec![0, 1, 2, 255], "bodies are bytes, not text");
}

#[test]
fn a_bad_field_is_named() {
    let missing = json!({"type": "account", "account": {"id": "a1", "pms": "hostaway", "createdAt": "t", "updatedAt": "t"}}).to_string();
    assert!(Line::parse(&missing).unwrap_err().contains("workspaceId"), "{}", Line::parse(&missing).unwrap_err());
    let wrong_type = json!({"type": "digest", "accountId": "a1", "digest": "AA==", "seenAtMs": "soon"}).to_string();
    let error = Line::parse(&wrong_type).unwrap_err();
    assert!(error.starts_with("field `seenAtMs`"), "{error}");
    let nested = webhook("a1", "AA==").replace("\"skipped\"", "\"maybe\"");
    let error = Line::parse(&nested).unwrap_err();
    assert!(error.starts_with("field `outcome.status`"), "{error}");
    assert!(Line::parse(&webhook("a1", "not base64!")).unwrap_err().starts_with("field `body`"));
    assert!(Line::parse(&webhook("a\u{0}1", "AA==")).unwrap_err().contains("NUL"));
    assert!(Line::parse(r#"{"type":"nonsense"}"#).unwrap_err().contains("unknown line type"));
    assert!(Line::parse(r#"{"kind":"account"}"#).unwrap_err().contains("`type`"));
    assert!(Line::parse("[1,2]").unwrap_err().contains("not a JSON object"));
    assert!(Line::parse("{\"type\":").unwrap_err().contains("not a JSON object"));
    let finished_without_outcome = webhook("a1", "AA==").replace("\"pending\":false", "\"pending\":false,\"x\":0").replace(
        r#""outcome":{"status":"skipped","plugin":null,"pluginVersion":null,"errorKind":null,"error":"not handled","eventIds":[],"nUnchanged":0,"at":"2026-01-01T00:00:00Z"}"#,
        r#""outcome":null"#,
    );
    assert!(Line::parse(&finished_without_outcome).unwrap_err().starts_with("field `outcome`"));
}

#[test]
fn a_whole_file_is_checked_before_anything_is_written() {
    let good = [header(), account("a1"), webhook("a1", "AA=="), end(1, 1)];
    let checked = check(&good).unwrap();
    assert_eq!((checked.lines, checked.counts.webhooks), (4, 1));

    let bad_middle = [header(), account("a1"), "{oops".to_string(), webhook("a1", "AA=="), end(1, 1)];
    assert_eq!(refusal(&bad_middle).0, 3, "the error names the line");

    let (line, message) = refusal(&[header(), webhook("a2", "AA=="), end(0, 1)]);
    assert_eq!(line, 2);
    assert!(message.contains("\"a2\""), "{message}");

    let (line, message) = refusal(&[header(), account("a1"), account("a1"), end(2, 0)]);
    assert_eq!(line, 3);
    assert!(message.contains("twice"), "{message}");

    let (line, message) = refusal(&[header(), account("a1"), webhook("a1", "AA==")]);
    assert_eq!(line, 4);
    assert!(message.contains("cut short"), "{message}");

    let (line, message) = refusal(&[header(), account("a1"), end(2, 0)]);
    assert_eq!(line, 3);
    assert!(message.contains("field `counts`"), "{message}");

    let (line, message) = refusal(&[header(), end(0, 0), account("a1")]);
    assert_eq!(line, 3);
    assert!(message.contains("after the `end`"), "{message}");

    let future = header().replace("\"format\":1", "\"format\":2");
    let (line, message) = refusal(&[future, end(0, 0)]);
    assert_eq!(line, 1);
    assert!(message.contains("format 2"), "{message}");

    let (line, message) = refusal(&[account("a1"), end(1, 0)]);
    assert_eq!(line, 1);
    assert!(message.contains("not a stayhook export"), "{message}");

    let (_, message) = refusal(&[header(), header(), end(0, 0)]);
    assert!(message.contains("second header"), "{message}");
}
