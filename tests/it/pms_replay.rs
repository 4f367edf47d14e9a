//! Every golden case that calls a PMS API, replayed through the real daemon against a real local
//! HTTP server that plays the PMS's API with the case's recorded responses (taken from the PMS's
//! public documentation, including its error and rate-limit answers). The daemon must deliver
//! exactly the case's expected events: what the offline runner checks with the plugin alone, this
//! checks end to end (credentials, base URL, retries, rendering, state on an empty account).
//! A plugin whose scheme is Amazon SNS (Hostify) gets its case body as the `Message` of a signed SNS
//! notification, verified against the local certificate host of `sns.rs`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use stayhook::plugin::offline::{self, CaseRequest, ReplayedCall};
use stayhook::plugin::{PluginLimits, PluginRegistry};

use stayhook::plugin::bindings::stayhook::plugin::types::VerificationScheme;

use crate::sns::{SnsHost, TOPIC, signed, sns_notification};
use crate::support::{Daemon, DaemonOptions, Receiver, repo_root};

type Routes = Arc<HashMap<(String, String), ReplayedCall>>;

/// A server answering each recorded (method, path) with its recorded response, and any POST to an
/// OAuth2 token path with a token.
async fn replay_server(calls: Vec<ReplayedCall>) -> (String, tokio::task::JoinHandle<()>) {
    let routes: Routes = Arc::new(
        calls
            .into_iter()
            .map(|call| {
                let path = url::Url::parse(&call.path)
                    .map(|url| url.path().to_string())
                    .unwrap_or_else(|_| call.path.split('?').next().unwrap_or_default().to_string());
                ((call.method.to_ascii_uppercase(), path), call)
            })
            .collect(),
    );
    let router = Router::new().fallback(move |request: Request<Body>| {
        let routes = routes.clone();
        async move { answer(&routes, request) }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    (url, tokio::spawn(async move { axum::serve(listener, router).await.unwrap() }))
}

fn answer(routes: &Routes, request: Request<Body>) -> Response {
    let key = (request.method().as_str().to_string(), request.uri().path().to_string());
    if let Some(call) = routes.get(&key) {
        let mut response = Response::builder().status(call.status);
        for (name, value) in &call.headers {
            response = response.header(name, value);
        }
        return response.body(Body::from(call.body.clone())).unwrap();
    }
    if key.0 == "POST" && (key.1.contains("token") || key.1.contains("Token")) {
        return axum::Json(json!({"access_token": "replayed", "token_type": "Bearer", "expires_in": 86400})).into_response();
    }
    (StatusCode::NOT_FOUND, format!("nothing recorded for {} {}", key.0, key.1)).into_response()
}

fn sort_key(event: &Value) -> String {
    format!("{} {} {}", event["eventType"], event["record"]["id"], event["record"])
}

#[tokio::test]
async fn recorded_pms_apis_replayed_over_http_give_the_golden_events() {
    let limits = PluginLimits { memory_bytes: 64 << 20, timeout: Duration::from_secs(5), epoch_tick: Duration::from_millis(10) };
    let registry = PluginRegistry::new(limits, std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("plugin-cache")).unwrap();
    registry.load_all(None).unwrap();
    let receiver = Receiver::start().await;
    let sns_host = SnsHost::start().await;
    let daemon = Daemon::start(
        DaemonOptions::default().env("STAYHOOK_ENRICHMENT_RETRY_SCHEDULE", "10ms").env("STAYHOOK_SNS_CERTIFICATE_HOSTS", &sns_host.url),
    )
    .await;

    let mut n_replayed = 0;
    for plugin in registry.list() {
        let plugin_dir = repo_root().join("plugins").join(&plugin.info.name);
        // Sync cases (contract 0.2) list records; the golden runner checks them.
        for case_dir in offline::case_dirs(&plugin_dir).into_iter().filter(|dir| !dir.join("sync.json").exists()) {
            let request = CaseRequest::load(&case_dir).unwrap();
            let (expected, calls) = match offline::run_traced(&plugin, &request) {
                Ok(traced) => traced,
                // Refusals are checked by the golden runner (the case expects them).
                Err(offline::OfflineError::Refused(_)) => continue,
                Err(error) => panic!("{}: {error}", case_dir.display()),
            };
            // Cases without API calls are covered by the golden runner; a connection failure
            // (status 0) cannot be played by a server that answers.
            if calls.is_empty() || calls.iter().any(|call| call.status == 0) || expected.is_empty() {
                continue;
            }
            n_replayed += 1;
            let is_sns = matches!(plugin.info.verification, VerificationScheme::Sns);
            let (api_url, server) = replay_server(calls).await;
            let account_id = format!("replay-{n_replayed}");
            // No initial sync: the cases expect the state of an empty account (a listing through
            // the replay server could store the case's record first).
            let mut account = json!({
                "id": account_id, "workspaceId": "ws", "pms": plugin.info.name, "apiBaseUrl": api_url,
                "rateLimitPerSecond": 1000, "settings": request.settings, "initialSync": {"enabled": false},
                "credentials": {"clientId": "id", "clientSecret": "secret", "apiKey": "key", "token": "token", "username": "user", "password": "pass"},
            });
            if is_sns {
                account["verification"] = json!({"topicArn": TOPIC});
            }
            let account = daemon.create_account(account).await;
            daemon.subscribe(&account_id, &receiver.url).await;
            let mut listener_url = account["listenerUrl"].as_str().unwrap().to_string();
            if let Some(query) = request.query.as_deref().filter(|query| !query.is_empty()) {
                listener_url.push(if listener_url.contains('?') { '&' } else { '?' });
                listener_url.push_str(query);
            }
            let method = reqwest::Method::from_bytes(request.method.as_deref().unwrap_or("POST").as_bytes()).unwrap();
            let body = if is_sns {
                let message = String::from_utf8(request.body.clone()).unwrap();
                signed(sns_notification(&sns_host, &format!("replay-{n_replayed}"), &message, TOPIC))
            } else {
                request.body.clone()
            };
            let mut post = daemon.http.request(method, &listener_url).body(body);
            if let Some(content_type) = &request.content_type {
                post = post.header("content-type", content_type);
            }
            for (name, value) in &request.headers {
                post = post.header(name, value);
            }
            let answer = post.send().await.unwrap();
            assert!(answer.status().is_success(), "{}: {}", case_dir.display(), answer.text().await.unwrap_or_default());

            let mut delivered: Vec<Value> = Vec::new();
            for _ in 0..expected.len() {
                let envelope = receiver.next().await.json();
                assert_eq!(envelope["data"]["integrationAccountId"], account_id.as_str(), "{}", case_dir.display());
                delivered.push(json!({"eventType": envelope["hook"]["eventType"], "result": envelope["data"]["result"], "record": envelope["data"]["record"]}));
            }
            let mut expected = expected;
            expected.sort_by_key(sort_key);
            delivered.sort_by_key(sort_key);
            assert_eq!(delivered, expected, "{}: the daemon over HTTP differs from the golden run", case_dir.display());
            server.abort();
        }
    }
    receiver.expect_nothing(Duration::from_millis(200)).await;
    eprintln!("replayed {n_replayed} golden cases over HTTP");
    assert!(n_replayed >= 5, "the official plugins' API cases should be replayed, got {n_replayed}");
}
