//! Cloudbeds and Hostex through the real daemon: each verification scheme refuses a wrong or
//! missing secret, a truncated body is refused at the listener, another PMS's body is stored and
//! recorded as failed (never delivered as an event), and Cloudbeds registers its subscriptions
//! through a local server playing the Cloudbeds API.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::routing::{delete, get, post};
use serde_json::{Value, json};

use crate::support::{Daemon, DaemonOptions, Receiver, repo_root};

fn case_body(plugin: &str, case: &str) -> Vec<u8> {
    std::fs::read(repo_root().join("plugins").join(plugin).join("tests/cases").join(case).join("body.json")).unwrap()
}

/// A webhook that passed verification and was stored: its inbox outcome once processed.
async fn stored_outcome(daemon: &Daemon, answer: &Value) -> Value {
    daemon.inbox_outcome(answer["inboxId"].as_str().unwrap_or_else(|| panic!("not stored: {answer}"))).await
}

#[tokio::test]
async fn hostex_checks_its_secret_header_and_refuses_what_is_not_hostex() {
    let receiver = Receiver::start().await;
    let daemon = Daemon::start(DaemonOptions::default()).await;
    let secret = "hostex-webhook-secret-0123456789";
    daemon.create_account(json!({"id": "hx", "workspaceId": "ws", "pms": "hostex", "verification": {"secret": secret}})).await;
    daemon.subscribe("hx", &receiver.url).await;
    let body = case_body("hostex", "property-availability-updated");

    for headers in [vec![], vec![("hostex-webhook-secret-token", "not-the-secret")]] {
        let (status, answer) = daemon.post_webhook("hx", &body, &headers).await;
        assert_eq!((status, answer["error"]["code"].as_str()), (401, Some("verification_failed")), "{answer}");
    }
    let header = [("hostex-webhook-secret-token", secret)];
    let (status, answer) = daemon.post_webhook("hx", &body[..body.len() / 2], &header).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (400, Some("invalid_json")), "{answer}");

    // Cloudbeds' body with Hostex's secret: stored, then failed with the plugin's reason.
    let (status, answer) = daemon.post_webhook("hx", &case_body("cloudbeds", "reservation-created"), &header).await;
    assert_eq!(status, 200, "{answer}");
    let entry = stored_outcome(&daemon, &answer).await;
    assert_eq!(entry["status"], "failed", "{entry}");
    assert!(entry.to_string().contains("is not a Hostex event name"), "{entry}");

    // The real thing goes through, and only it is delivered.
    let (status, answer) = daemon.post_webhook("hx", &body, &header).await;
    assert_eq!(status, 200, "{answer}");
    let delivered = receiver.next().await.json();
    assert_eq!(delivered["hook"]["eventType"], "calendar.updated");
    assert_eq!(delivered["data"]["record"]["propertyId"], "10000");
    receiver.expect_nothing(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn cloudbeds_checks_its_listener_token_and_refuses_what_is_not_cloudbeds() {
    let receiver = Receiver::start().await;
    let daemon = Daemon::start(DaemonOptions::default()).await;
    let account = daemon.create_account(json!({"id": "cb", "workspaceId": "ws", "pms": "cloudbeds"})).await;
    daemon.subscribe("cb", &receiver.url).await;
    let listener_url = account["listenerUrl"].as_str().unwrap().to_string();
    assert!(listener_url.contains("?token="), "Cloudbeds signs nothing: the listener URL carries a token: {listener_url}");
    let post = async |url: &str, body: Vec<u8>| {
        let response = daemon.http.post(url).header("content-type", "application/json").body(body).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json::<Value>().await.unwrap_or(Value::Null))
    };
    let deleted = case_body("cloudbeds", "reservation-deleted");

    for url in [format!("{}/listen/cb", daemon.ingest_url), format!("{}/listen/cb?token=wrong", daemon.ingest_url)] {
        let (status, answer) = post(&url, deleted.clone()).await;
        assert_eq!((status, answer["error"]["code"].as_str()), (401, Some("verification_failed")), "{answer}");
    }
    let (status, answer) = post(&listener_url, deleted[..deleted.len() - 10].to_vec()).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (400, Some("invalid_json")), "{answer}");

    // Hostex's body with Cloudbeds' token: stored, then failed with the plugin's reason.
    let (status, answer) = post(&listener_url, case_body("hostex", "reservation-created")).await;
    assert_eq!(status, 200, "{answer}");
    let entry = stored_outcome(&daemon, &answer).await;
    assert_eq!(entry["status"], "failed", "{entry}");
    assert!(entry.to_string().contains("is not Cloudbeds' object/action"), "{entry}");

    // A true deletion needs no API call.
    let (status, answer) = post(&listener_url, deleted).await;
    assert_eq!(status, 200, "{answer}");
    let delivered = receiver.next().await.json();
    assert_eq!(delivered["hook"]["eventType"], "reservation.deleted");
    assert_eq!(delivered["data"]["record"]["id"], "31415926");
    receiver.expect_nothing(Duration::from_millis(300)).await;
}

type Calls = Arc<Mutex<Vec<String>>>;

/// Cloudbeds' webhook calls as the OpenAPI describes them; each request is recorded as
/// "METHOD /path?query body (x-api-key)".
async fn cloudbeds_api() -> (String, Calls) {
    fn record(calls: &Calls, line: String, headers: &HeaderMap) {
        let key = headers.get("x-api-key").and_then(|value| value.to_str().ok()).unwrap_or("none").to_string();
        calls.lock().unwrap().push(format!("{line} (x-api-key {key})"));
    }
    let calls: Calls = Arc::default();
    let router = Router::new()
        .route(
            "/getWebhooks",
            get(async |State(calls): State<Calls>, RawQuery(query): RawQuery, headers: HeaderMap| {
                record(&calls, format!("GET /getWebhooks?{}", query.unwrap_or_default()), &headers);
                axum::Json(json!({"success": true, "data": [
                    {"id": "existing", "key": {"type": "property", "id": "318267"}, "event": {"entity": "reservation", "action": "deleted"},
                     "owner": {"type": "client", "id": "1"}, "subscriptionType": "webhook", "subscriptionData": {"endpoint": "https://elsewhere.example/hook"}}
                ]}))
            }),
        )
        .route(
            "/postWebhook",
            post(async |State(calls): State<Calls>, headers: HeaderMap, body: Bytes| {
                let n = calls.lock().unwrap().len();
                record(&calls, format!("POST /postWebhook {}", String::from_utf8_lossy(&body)), &headers);
                axum::Json(json!({"success": true, "data": {"subscriptionID": format!("sub-{n}")}}))
            }),
        )
        .route(
            "/deleteWebhook",
            delete(async |State(calls): State<Calls>, RawQuery(query): RawQuery, headers: HeaderMap| {
                record(&calls, format!("DELETE /deleteWebhook?{}", query.unwrap_or_default()), &headers);
                axum::Json(json!({"success": true}))
            }),
        )
        .with_state(calls.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (url, calls)
}

#[tokio::test]
async fn cloudbeds_registers_one_subscription_per_event_and_removes_them() {
    let (api_url, calls) = cloudbeds_api().await;
    let daemon = Daemon::start(DaemonOptions::default()).await;
    let account = daemon
        .create_account(json!({"id": "cb", "workspaceId": "ws", "pms": "cloudbeds", "apiBaseUrl": api_url,
                               "settings": {"propertyID": "318267"}, "credentials": {"apiKey": "cb-key"}}))
        .await;
    let listener_url = account["listenerUrl"].as_str().unwrap().to_string();

    let (status, registered) = daemon.admin("POST", "/v1/accounts/cb/pms-webhooks", None).await;
    assert_eq!(status, 201, "{registered}");
    assert_eq!(registered["mode"], "automatic");
    let stored = registered["registration"].as_object().unwrap().clone();
    assert_eq!(stored.len(), 4, "{registered}");
    let calls_made = calls.lock().unwrap().clone();
    assert_eq!(calls_made[0], "GET /getWebhooks?propertyID=318267 (x-api-key cb-key)");
    let encoded: String = url::form_urlencoded::byte_serialize(listener_url.as_bytes()).collect();
    let posts: Vec<&String> = calls_made.iter().filter(|line| line.starts_with("POST /postWebhook")).collect();
    assert_eq!(posts.len(), 4, "the subscription for another endpoint is not ours: {calls_made:#?}");
    for action in ["created", "status_changed", "dates_changed", "deleted"] {
        let line =
            format!("POST /postWebhook propertyID=318267&object=reservation&action={action}&endpointUrl={encoded} (x-api-key cb-key)");
        assert!(calls_made.contains(&line), "{line} not in {calls_made:#?}");
        assert!(stored.contains_key(&format!("subscription-reservation/{action}")), "{registered}");
    }

    let (status, removed) = daemon.admin("DELETE", "/v1/accounts/cb/pms-webhooks", None).await;
    assert_eq!(status, 200, "{removed}");
    let deletes: Vec<String> = calls.lock().unwrap().iter().filter(|line| line.starts_with("DELETE")).cloned().collect();
    assert_eq!(deletes.len(), 4, "{deletes:#?}");
    for id in stored.values() {
        let line = format!("DELETE /deleteWebhook?subscriptionID={}&propertyIDs=318267 (x-api-key cb-key)", id.as_str().unwrap());
        assert!(deletes.contains(&line), "{line} not in {deletes:#?}");
    }
}
