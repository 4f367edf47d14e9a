//! Amazon SNS end to end (contract v0.2's `sns` scheme) through the real daemon: a local server
//! plays the SNS certificate host (allowed with `STAYHOOK_SNS_CERTIFICATE_HOSTS`, the default is
//! AWS only), messages are signed with a test key (SignatureVersion 2; version 1 is covered by the
//! unit vectors in `ingest/verify.rs`), and the test-only `sns-probe` plugin maps the unwrapped
//! Message. The key and certificate in `tests/fixtures/sns/` were made for these tests with
//! `openssl genpkey -algorithm RSA` and `openssl req -x509`.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde_json::{Value, json};

use crate::support::{Daemon, DaemonOptions, Receiver};

pub(crate) const TOPIC: &str = "arn:aws:sns:us-west-2:123456789012:stayhook-test";

/// The fake SNS host: serves the certificate and counts confirmation visits (shared with the
/// Hostify and golden-replay tests).
pub(crate) struct SnsHost {
    pub(crate) url: String,
    pub(crate) confirmations: Arc<Mutex<usize>>,
    server: tokio::task::JoinHandle<()>,
}

impl SnsHost {
    pub(crate) async fn start() -> SnsHost {
        let confirmations = Arc::new(Mutex::new(0));
        let router = Router::new()
            .route("/SimpleNotificationService-test.pem", get(|| async { include_str!("../fixtures/sns/sns-test-cert.pem") }))
            .route(
                "/confirm",
                get(|State(count): State<Arc<Mutex<usize>>>| async move {
                    *count.lock().unwrap() += 1;
                    "<ConfirmSubscriptionResponse/>"
                }),
            )
            .with_state(confirmations.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        SnsHost { url, confirmations, server }
    }
}

impl Drop for SnsHost {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A message signed as SNS does (SignatureVersion 2), per
/// https://docs.aws.amazon.com/sns/latest/dg/sns-verify-signature-of-message-verify-message-signature.html
pub(crate) fn signed(mut message: Value) -> Vec<u8> {
    let field = |name: &str| message.get(name).and_then(Value::as_str).map(str::to_string);
    let names: &[&str] = if field("Type").as_deref() == Some("Notification") {
        &["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"]
    } else {
        &["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"]
    };
    let mut text = String::new();
    for name in names {
        if let Some(value) = field(name) {
            text.push_str(&format!("{name}\n{value}\n"));
        }
    }
    let key = ring::signature::RsaKeyPair::from_pkcs8(include_bytes!("../fixtures/sns/sns-test-key.pk8")).unwrap();
    let mut signature = vec![0; key.public().modulus_len()];
    key.sign(&ring::signature::RSA_PKCS1_SHA256, &ring::rand::SystemRandom::new(), text.as_bytes(), &mut signature).unwrap();
    use base64::Engine as _;
    message["SignatureVersion"] = json!("2");
    message["Signature"] = json!(base64::engine::general_purpose::STANDARD.encode(signature));
    message.to_string().into_bytes()
}

fn notification(host: &SnsHost, id: &str, topic: &str) -> Value {
    sns_notification(host, &format!("msg-{id}"), &json!({"id": id}).to_string(), topic)
}

/// An SNS notification (unsigned) carrying `message` from `topic`, its certificate on `host`.
pub(crate) fn sns_notification(host: &SnsHost, message_id: &str, message: &str, topic: &str) -> Value {
    json!({
        "Type": "Notification",
        "MessageId": message_id,
        "TopicArn": topic,
        "Subject": "reservation",
        "Message": message,
        "Timestamp": "2026-12-06T10:00:00.000Z",
        "SigningCertURL": format!("{}/SimpleNotificationService-test.pem", host.url),
        "UnsubscribeURL": format!("{}/unsubscribe", host.url),
    })
}

#[tokio::test]
async fn sns_messages_are_verified_confirmed_and_unwrapped() {
    let host = SnsHost::start().await;
    let receiver = Receiver::start().await;
    let daemon = Daemon::start(DaemonOptions::default().env("STAYHOOK_SNS_CERTIFICATE_HOSTS", &host.url)).await;
    let wasm = std::fs::read(PathBuf::from(env!("PLUGIN_ARTIFACTS_DIR")).join("stayhook_plugin_sns_probe.wasm")).unwrap();
    let (status, answer) = daemon.upload_plugin("sns-probe", wasm).await;
    assert_eq!((status, answer["verification"].as_str()), (201, Some("sns")), "{answer}");
    daemon.create_account(json!({"id": "sns", "workspaceId": "ws", "pms": "sns-probe", "verification": {"topicArn": TOPIC}})).await;
    daemon.subscribe("sns", &receiver.url).await;

    // The handshake: verified, then confirmed by one visit of the SubscribeURL; nothing stored.
    let confirmation = signed(json!({
        "Type": "SubscriptionConfirmation",
        "MessageId": "confirm-1",
        "Token": "t0k3n",
        "TopicArn": TOPIC,
        "Message": "You have chosen to subscribe to the topic.",
        "SubscribeURL": format!("{}/confirm", host.url),
        "Timestamp": "2026-12-06T09:59:00.000Z",
        "SigningCertURL": format!("{}/SimpleNotificationService-test.pem", host.url),
    }));
    let (status, answer) = daemon.post_webhook("sns", &confirmation, &[("content-type", "text/plain; charset=UTF-8")]).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("sns-subscription-confirmed")), "{answer}");
    assert_eq!(*host.confirmations.lock().unwrap(), 1);

    // A notification: the plugin sees the Message as the body and the topic as a header.
    let (status, answer) = daemon.post_webhook("sns", &signed(notification(&host, "r-9", TOPIC)), &[]).await;
    assert_eq!(status, 200, "{answer}");
    let event = receiver.next().await.json();
    assert_eq!(event["data"]["record"]["id"], "r-9", "{event}");
    assert_eq!(event["data"]["record"]["notes"], TOPIC, "{event}");

    // Refused with 401: a changed message, another topic, a certificate the body points elsewhere,
    // a body that is not SNS at all, a truncated one.
    let mut tampered: Value = serde_json::from_slice(&signed(notification(&host, "r-10", TOPIC))).unwrap();
    tampered["Message"] = json!({"id": "r-666"}).to_string().into();
    let mut other_cert = notification(&host, "r-11", TOPIC);
    other_cert["SigningCertURL"] = json!("https://evil.example/SimpleNotificationService-test.pem");
    let good = signed(notification(&host, "r-12", TOPIC));
    for (what, body) in [
        ("tampered", tampered.to_string().into_bytes()),
        ("another topic", signed(notification(&host, "r-13", "arn:aws:sns:us-west-2:999999999999:other"))),
        ("certificate elsewhere", signed(other_cert)),
        ("not SNS", br#"{"id":"r-14"}"#.to_vec()),
        ("truncated", good[..good.len() / 2].to_vec()),
    ] {
        let (status, answer) = daemon.post_webhook("sns", &body, &[]).await;
        assert_eq!(status, 401, "{what}: {answer}");
        assert_eq!(answer["error"]["code"], "verification_failed", "{what}: {answer}");
    }
    receiver.expect_nothing(std::time::Duration::from_millis(300)).await;
    assert_eq!(*host.confirmations.lock().unwrap(), 1);
}
