//! The public listener: every refusal is a status and a JSON error naming the problem, and
//! nothing already accepted is lost because of it.

use base64::Engine as _;
use serde_json::{Value, json};

use crate::support::{Daemon, DaemonOptions, Receiver, hostaway_body};

#[track_caller]
fn assert_error(answer: &(u16, Value), status: u16, code: &str) {
    assert_eq!(answer.0, status, "{}", answer.1);
    assert_eq!(answer.1["error"]["code"], code, "{}", answer.1);
    assert!(answer.1["error"]["message"].as_str().is_some_and(|message| !message.is_empty()), "{}", answer.1);
}

#[tokio::test]
async fn bad_requests_get_clear_errors_and_accepted_events_still_arrive() {
    let receiver = Receiver::start().await;
    let daemon = Daemon::start(DaemonOptions::default().env("STAYHOOK_BODY_LIMIT_BYTES", "16384")).await;
    let account = daemon
        .create_account(json!({
            "id": "hostaway-main", "workspaceId": "ws", "pms": "hostaway",
            "verification": {"username": "stay", "password": "hook"},
        }))
        .await;
    assert_eq!(account["verification"], json!({"scheme": "basic-auth", "configured": true}));
    assert!(account.get("password").is_none() && !account.to_string().contains("hook\""), "secrets never shown: {account}");
    daemon.subscribe("hostaway-main", &receiver.url).await;
    let good_auth = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("stay:hook"));
    let bad_auth = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("stay:nope"));

    // Accepted first, so we can check it survives everything below.
    let accepted = daemon.post_webhook("hostaway-main", &hostaway_body("reservation-created"), &[("authorization", &good_auth)]).await;
    assert_eq!(accepted.0, 200, "{}", accepted.1);

    assert_error(&daemon.post_webhook("no-such-account", b"{}", &[]).await, 404, "unknown_account");
    assert_error(&daemon.post_webhook("hostaway-main", &hostaway_body("reservation-created"), &[]).await, 401, "verification_failed");
    assert_error(
        &daemon.post_webhook("hostaway-main", &hostaway_body("reservation-created"), &[("authorization", &bad_auth)]).await,
        401,
        "verification_failed",
    );
    assert_error(
        &daemon.post_webhook("hostaway-main", b"{\"object\": \"reservation\",", &[("authorization", &good_auth)]).await,
        400,
        "invalid_json",
    );
    let oversize = format!("{{\"padding\": \"{}\"}}", "x".repeat(20_000));
    assert_error(
        &daemon.post_webhook("hostaway-main", oversize.as_bytes(), &[("authorization", &good_auth)]).await,
        413,
        "payload_too_large",
    );
    let response = daemon.http.delete(format!("{}/listen/hostaway-main", daemon.ingest_url)).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 405);

    let delivered = receiver.next().await.json();
    assert_eq!(delivered["data"]["record"]["id"], "13");
    assert_eq!(delivered["hook"]["eventType"], "reservation.created");

    // The daemon keeps serving.
    let (status, _) = daemon.post_webhook("hostaway-main", &hostaway_body("reservation-cancelled"), &[("authorization", &good_auth)]).await;
    assert_eq!(status, 200);
    let cancelled = receiver.next().await.json();
    assert_eq!(cancelled["hook"]["eventType"], "reservation.updated");
    assert_eq!(cancelled["data"]["record"]["status"], "CANCELLED");
}

#[tokio::test]
async fn the_plugin_sees_no_credentials() {
    let daemon = Daemon::start(DaemonOptions::default()).await;
    daemon
        .create_account(json!({"id": "a1", "workspaceId": "ws", "pms": "hostaway", "verification": {"username": "u", "password": "p"}}))
        .await;
    let auth = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("u:p"));
    let (status, answer) = daemon.post_webhook("a1", &hostaway_body("ping"), &[("authorization", &auth), ("x-extra", "kept")]).await;
    assert_eq!(status, 200);
    let (_, entry) = daemon.admin("GET", &format!("/v1/inbox/{}", answer["inboxId"].as_str().unwrap()), None).await;
    let headers = entry["headers"].to_string();
    assert!(!headers.contains("authorization"), "{headers}");
    assert!(headers.contains("x-extra"), "{headers}");
}

#[tokio::test]
async fn guesty_webhooks_are_verified_with_their_svix_signature() {
    let receiver = Receiver::start().await;
    let daemon = Daemon::start(DaemonOptions::default()).await;
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    // No API credentials here: the sub-unit lookup (tested with the golden cases) is turned off.
    let settings = json!({"subUnitLookup": "false"});
    daemon
        .create_account(
            json!({"id": "guesty", "workspaceId": "ws", "pms": "guesty", "verification": {"secret": secret}, "settings": settings}),
        )
        .await;
    daemon.subscribe("guesty", &receiver.url).await;
    let body = std::fs::read(crate::support::repo_root().join("tests/fixtures/seed/listing.calendar.updated.json")).unwrap();
    let timestamp = chrono::Utc::now().timestamp();
    let signature = standardwebhooks::Webhook::new(secret).unwrap().sign("msg_2x", timestamp, &body).unwrap();
    let timestamp = timestamp.to_string();

    let unsigned = daemon.post_webhook("guesty", &body, &[]).await;
    assert_error(&unsigned, 401, "verification_failed");
    let forged = daemon
        .post_webhook("guesty", &body, &[("svix-id", "msg_2x"), ("svix-timestamp", &timestamp), ("svix-signature", "v1,Zm9yZ2Vk")])
        .await;
    assert_error(&forged, 401, "verification_failed");
    let signed = daemon
        .post_webhook("guesty", &body, &[("svix-id", "msg_2x"), ("svix-timestamp", &timestamp), ("svix-signature", &signature)])
        .await;
    assert_eq!(signed.0, 200, "{}", signed.1);

    let envelope = receiver.next().await.json();
    assert_eq!(envelope["hook"]["eventType"], "calendar.updated");
    assert_eq!(envelope["data"]["record"]["propertyId"], "5faa154685cfc0002f7bbd1d");
    assert_eq!(envelope["data"]["record"]["dateWiseAvailability"][0]["date"], "2022-08-30");
}

/// Issue 10, item 13: bodies declared as JSON that are not JSON were answered 200.
#[tokio::test]
async fn bodies_that_are_not_json_are_refused_whatever_the_trick() {
    let daemon = Daemon::start(DaemonOptions::default()).await;
    daemon.create_account(json!({"id": "open", "workspaceId": "ws", "pms": "hostaway"})).await;
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let cases: [(&str, Vec<u8>); 4] = [
        ("invalid UTF-8 inside a string", b"{\"name\": \"\xff\xfe\"}".to_vec()),
        ("invalid UTF-8 outside strings", b"{\"a\": 1}\xff".to_vec()),
        ("100,000-deep nesting", deep.into_bytes()),
        ("a number out of range", b"{\"amount\": 1e999}".to_vec()),
    ];
    for (what, body) in cases {
        let answer = daemon.post_webhook("open", &body, &[]).await;
        assert_eq!(answer.0, 400, "{what}: {}", answer.1);
        assert_eq!(answer.1["error"]["code"], "invalid_json", "{what}: {}", answer.1);
    }
    let (_, stored) = daemon.admin("GET", "/v1/inbox?status=done", None).await;
    assert_eq!(stored["inbox"], json!([]), "nothing was stored");
}

/// Issue 10, item 11: for HMAC accounts the digest covered the query but the signature did not,
/// so a signed body replayed with an extra query parameter was accepted again.
#[tokio::test]
async fn a_signed_body_replayed_with_another_query_string_is_a_duplicate() {
    use hmac::Mac as _;
    let daemon = Daemon::start(DaemonOptions::default()).await;
    let secret = "a-lodgify-webhook-secret-of-some-length";
    daemon.create_account(json!({"id": "lodgify", "workspaceId": "ws", "pms": "lodgify", "verification": {"secret": secret}})).await;
    let body = br#"{"action": "booking_change", "booking": {"id": 1}}"#;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let headers = [("ms-signature", signature.as_str())];

    let first = daemon.post_webhook("lodgify", body, &headers).await;
    assert_eq!(first.1["status"], "accepted", "{}", first.1);
    for replay in ["lodgify?x=1", "lodgify?x=2&y=3", "lodgify?"] {
        let answer = daemon.post_webhook(replay, body, &headers).await;
        assert_eq!(answer, (200, json!({"status": "duplicate", "inboxId": first.1["inboxId"]})), "{replay}");
    }
}

/// Issue 10, item 12: an account's listener URL accepted bodies without limit.
#[tokio::test]
async fn an_account_over_its_listener_limits_gets_429_and_other_accounts_do_not() {
    let daemon = Daemon::start(
        DaemonOptions::default()
            .env("STAYHOOK_LISTENER_REQUESTS_PER_SECOND", "1")
            .env("STAYHOOK_BODY_LIMIT_BYTES", "16384")
            .env("STAYHOOK_LISTENER_BYTES_PER_SECOND", "1024"),
    )
    .await;
    for id in ["busy", "quiet", "large"] {
        daemon.create_account(json!({"id": id, "workspaceId": "ws", "pms": "hostaway"})).await;
    }
    // A burst of two webhooks per account, then 429 until the allowance refills (1/s).
    for n in 0..2 {
        let answer = daemon.post_webhook("busy", format!("{{\"n\": {n}}}").as_bytes(), &[]).await;
        assert_eq!(answer.1["status"], "accepted", "{}", answer.1);
    }
    let response = daemon.http.post(format!("{}/listen/busy", daemon.ingest_url)).body("{\"n\": 2}").send().await.unwrap();
    assert_eq!(response.status().as_u16(), 429);
    let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["error"]["code"], "rate_limited", "{answer}");
    assert_eq!(daemon.post_webhook("quiet", b"{\"n\": 0}", &[]).await.1["status"], "accepted", "another account is not limited");

    // Bytes: the burst holds one body of the size limit (16 KiB), so a second large body waits.
    let large = format!("{{\"padding\": \"{}\"}}", "x".repeat(12_000));
    assert_eq!(daemon.post_webhook("large", large.as_bytes(), &[]).await.1["status"], "accepted");
    let refused = daemon.post_webhook("large", format!("{large} ").as_bytes(), &[]).await;
    assert_eq!(refused.0, 429, "{}", refused.1);
    assert!(refused.1["error"]["message"].as_str().unwrap().contains("bytes"), "{}", refused.1);
}

/// Issue 10, item 13: `/readyz` on both listeners once the daemon answers.
#[tokio::test]
async fn readiness_and_health_answer_on_both_listeners() {
    let daemon = Daemon::start(DaemonOptions::default()).await;
    for base in [&daemon.ingest_url, &daemon.admin_url] {
        let ready = daemon.http.get(format!("{base}/readyz")).send().await.unwrap();
        assert_eq!(ready.status().as_u16(), 200);
        assert_eq!(ready.json::<Value>().await.unwrap(), json!({"status": "ready"}));
        let health = daemon.http.get(format!("{base}/healthz")).send().await.unwrap();
        assert_eq!(health.json::<Value>().await.unwrap(), json!({"status": "ok"}));
    }
}
