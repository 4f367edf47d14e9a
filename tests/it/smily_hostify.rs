//! Smily and Hostify through the real daemon.
//!
//! Smily signs with HMAC-SHA1 over Ruby's Base64 of the body (contract v0.2's
//! `hmac-sha1-base64-body`): the test signs the plugin's golden bodies itself (Base64 wrapped at 60
//! characters, as Ruby's `Base64.encode64` writes it) and checks that only the right signature is
//! stored and delivered. Hostify comes through Amazon SNS: a local certificate host (the one of
//! `sns.rs`) serves the signing certificate and counts confirmation visits, a local server plays
//! the Hostify API with the golden case's recorded answer, and a signed SNS notification carrying a
//! Hostify `new_reservation` message ends at a real receiver as `reservation.created`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::routing::get;
use base64::Engine as _;
use serde_json::{Value, json};

use crate::sns::{SnsHost, TOPIC, signed, sns_notification};
use crate::support::{Daemon, DaemonOptions, Receiver, repo_root};

fn case_file(plugin: &str, case: &str, file: &str) -> Vec<u8> {
    std::fs::read(repo_root().join("plugins").join(plugin).join("tests/cases").join(case).join(file)).unwrap()
}

/// Smily's `X-Content-Signature`: hex HMAC-SHA1 over the Base64 of the body with a line break after
/// every 60 characters and at the end (https://github.com/BookingSync/bookingsync-api-docs, guide
/// `webhook-subscriptions.md`). Written here from the guide, not taken from the daemon.
fn smily_signature(secret: &str, body: &[u8]) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(body);
    let wrapped: String = encoded.as_bytes().chunks(60).map(|line| format!("{}\n", String::from_utf8_lossy(line))).collect();
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret.as_bytes());
    ring::hmac::sign(&key, wrapped.as_bytes()).as_ref().iter().map(|byte| format!("{byte:02x}")).collect()
}

async fn stored_outcome(daemon: &Daemon, answer: &Value) -> Value {
    daemon.inbox_outcome(answer["inboxId"].as_str().unwrap_or_else(|| panic!("not stored: {answer}"))).await
}

#[tokio::test]
async fn smily_checks_the_signature_over_rubys_base64_and_refuses_what_is_not_smily() {
    let receiver = Receiver::start().await;
    let daemon = Daemon::start(DaemonOptions::default()).await;
    let secret = "smily-application-secret";
    daemon.create_account(json!({"id": "smily", "workspaceId": "ws", "pms": "smily", "verification": {"secret": secret}})).await;
    daemon.subscribe("smily", &receiver.url).await;
    let created = case_file("smily", "booking-created", "body.json");
    let signature = smily_signature(secret, &created);

    // Refused before storage: no signature, another secret, the HMAC of the raw body (no Base64),
    // the Base64 without Ruby's line breaks.
    let unwrapped = {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret.as_bytes());
        let encoded = base64::engine::general_purpose::STANDARD.encode(&created);
        ring::hmac::sign(&key, encoded.as_bytes()).as_ref().iter().map(|byte| format!("{byte:02x}")).collect::<String>()
    };
    let over_raw = {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret.as_bytes());
        ring::hmac::sign(&key, &created).as_ref().iter().map(|byte| format!("{byte:02x}")).collect::<String>()
    };
    let other_secret = smily_signature("another-secret", &created);
    for headers in [
        vec![],
        vec![("x-content-signature", other_secret.as_str())],
        vec![("x-content-signature", over_raw.as_str())],
        vec![("x-content-signature", unwrapped.as_str())],
    ] {
        let (status, answer) = daemon.post_webhook("smily", &created, &headers).await;
        assert_eq!((status, answer["error"]["code"].as_str()), (401, Some("verification_failed")), "{headers:?}: {answer}");
    }
    // A truncated body, even correctly signed, is not JSON: 400 at the listener.
    let truncated = &created[..created.len() / 2];
    let (status, answer) = daemon.post_webhook("smily", truncated, &[("x-content-signature", &smily_signature(secret, truncated))]).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (400, Some("invalid_json")), "{answer}");
    // Another PMS's body signed with the secret: stored, then failed with the plugin's reason.
    let hostaway = case_file("hostaway", "reservation-created", "body.json");
    let (status, answer) = daemon.post_webhook("smily", &hostaway, &[("x-content-signature", &smily_signature(secret, &hostaway))]).await;
    assert_eq!(status, 200, "{answer}");
    let entry = stored_outcome(&daemon, &answer).await;
    assert_eq!(entry["status"], "failed", "{entry}");
    assert!(entry.to_string().contains("not a Smily webhook"), "{entry}");

    // The signed booking is delivered; then its destruction as a deletion.
    let (status, answer) = daemon.post_webhook("smily", &created, &[("x-content-signature", &signature)]).await;
    assert_eq!(status, 200, "{answer}");
    let delivered = receiver.next().await.json();
    assert_eq!(delivered["hook"]["eventType"], "reservation.created", "{delivered}");
    assert_eq!(delivered["data"]["record"]["id"], "80");
    assert_eq!(delivered["data"]["record"]["status"], "CONFIRMED");
    let destroyed = case_file("smily", "booking-destroyed", "body.json");
    let (status, answer) = daemon.post_webhook("smily", &destroyed, &[("x-content-signature", &smily_signature(secret, &destroyed))]).await;
    assert_eq!(status, 200, "{answer}");
    let delivered = receiver.next().await.json();
    assert_eq!(
        (delivered["hook"]["eventType"].as_str(), delivered["data"]["record"]["id"].as_str()),
        (Some("reservation.deleted"), Some("80"))
    );
    receiver.expect_nothing(Duration::from_millis(300)).await;
}

/// What the fake Hostify API saw: (path, query, x-api-key).
type Calls = Arc<Mutex<Vec<(String, String, String)>>>;

/// A local server playing `GET /reservations/{id}` with the `new-reservation` golden case's
/// recorded answer for 12345, and 404 for any other id.
async fn hostify_api() -> (String, Calls, tokio::task::JoinHandle<()>) {
    let calls: Calls = Arc::new(Mutex::new(Vec::new()));
    let recorded: Value = serde_json::from_slice(&case_file("hostify", "new-reservation", "responses/reservation.json")).unwrap();
    let answer = recorded["body"].clone();
    let router = Router::new()
        .route(
            "/reservations/{id}",
            get(move |State(calls): State<Calls>, Path(id): Path<String>, RawQuery(query): RawQuery, headers: HeaderMap| {
                let answer = answer.clone();
                async move {
                    let key = headers.get("x-api-key").and_then(|value| value.to_str().ok()).unwrap_or_default().to_string();
                    calls.lock().unwrap().push((format!("/reservations/{id}"), query.unwrap_or_default(), key));
                    if id == "12345" {
                        (axum::http::StatusCode::OK, axum::Json(answer))
                    } else {
                        (axum::http::StatusCode::NOT_FOUND, axum::Json(json!({"success": false, "error": "Reservation not found"})))
                    }
                }
            }),
        )
        .with_state(calls.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    (url, calls, tokio::spawn(async move { axum::serve(listener, router).await.unwrap() }))
}

#[tokio::test]
async fn a_hostify_reservation_arrives_through_sns_and_is_completed_through_the_api() {
    let host = SnsHost::start().await;
    let (api_url, calls, api) = hostify_api().await;
    let receiver = Receiver::start().await;
    let daemon = Daemon::start(DaemonOptions::default().env("STAYHOOK_SNS_CERTIFICATE_HOSTS", &host.url)).await;
    daemon
        .create_account(json!({"id": "hostify", "workspaceId": "ws", "pms": "hostify", "apiBaseUrl": api_url,
                               "credentials": {"apiKey": "hostify-key"}, "verification": {"topicArn": TOPIC}}))
        .await;
    daemon.subscribe("hostify", &receiver.url).await;

    // The handshake Hostify's help article describes: SNS posts a SubscriptionConfirmation, the
    // daemon verifies it and visits the SubscribeURL once; nothing is stored or delivered.
    let confirmation = signed(json!({
        "Type": "SubscriptionConfirmation",
        "MessageId": "abc123",
        "Token": "XYZTOKEN",
        "TopicArn": TOPIC,
        "Message": "You have chosen to subscribe to the topic.",
        "SubscribeURL": format!("{}/confirm", host.url),
        "Timestamp": "2022-11-10T07:00:36.034Z",
        "SigningCertURL": format!("{}/SimpleNotificationService-test.pem", host.url),
    }));
    let (status, answer) = daemon.post_webhook("hostify", &confirmation, &[("content-type", "text/plain; charset=UTF-8")]).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("sns-subscription-confirmed")), "{answer}");
    assert_eq!(*host.confirmations.lock().unwrap(), 1);

    // A signed notification whose Message is Hostify's new_reservation: fetched, then delivered.
    let message = String::from_utf8(case_file("hostify", "new-reservation", "body.json")).unwrap();
    let (status, answer) = daemon.post_webhook("hostify", &signed(sns_notification(&host, "msg-1", &message, TOPIC)), &[]).await;
    assert_eq!(status, 200, "{answer}");
    let delivered = receiver.next().await.json();
    assert_eq!(delivered["hook"]["eventType"], "reservation.created", "{delivered}");
    let record = &delivered["data"]["record"];
    assert_eq!(
        (record["id"].as_str(), record["propertyId"].as_str(), record["status"].as_str()),
        (Some("12345"), Some("1000"), Some("CONFIRMED"))
    );
    assert_eq!(record["arrivalDate"], "2025-07-20T00:00:00.000Z");
    assert_eq!(
        calls.lock().unwrap().as_slice(),
        [("/reservations/12345".to_string(), "include_related_objects=1".to_string(), "hostify-key".to_string())]
    );

    // Refused with 401 before the plugin: a changed Message, another topic, a body that is not
    // SNS (Cloudbeds' webhook posted as it is), a truncated envelope.
    let mut tampered: Value = serde_json::from_slice(&signed(sns_notification(&host, "msg-2", &message, TOPIC))).unwrap();
    tampered["Message"] = json!({"type": "new_reservation", "reservation_id": 666}).to_string().into();
    let good = signed(sns_notification(&host, "msg-3", &message, TOPIC));
    for (what, body) in [
        ("wrong signature", tampered.to_string().into_bytes()),
        ("another topic", signed(sns_notification(&host, "msg-4", &message, "arn:aws:sns:eu-central-1:999999999999:Other"))),
        ("not SNS", case_file("cloudbeds", "reservation-created", "body.json")),
        ("truncated", good[..good.len() / 2].to_vec()),
    ] {
        let (status, answer) = daemon.post_webhook("hostify", &body, &[]).await;
        assert_eq!((status, answer["error"]["code"].as_str()), (401, Some("verification_failed")), "{what}: {answer}");
    }
    // A genuine SNS notification carrying another PMS's body: stored, failed with the plugin's
    // reason, never delivered.
    let cloudbeds = String::from_utf8(case_file("cloudbeds", "reservation-created", "body.json")).unwrap();
    let (status, answer) = daemon.post_webhook("hostify", &signed(sns_notification(&host, "msg-5", &cloudbeds, TOPIC)), &[]).await;
    assert_eq!(status, 200, "{answer}");
    let entry = stored_outcome(&daemon, &answer).await;
    assert_eq!(entry["status"], "failed", "{entry}");
    assert!(entry.to_string().contains("not a Hostify notification"), "{entry}");
    receiver.expect_nothing(Duration::from_millis(300)).await;
    assert_eq!(calls.lock().unwrap().len(), 1, "no API call for refused input");
    assert_eq!(*host.confirmations.lock().unwrap(), 1);
    api.abort();
}
