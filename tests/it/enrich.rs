//! Enrichment: thin webhooks completed through a (fake, real-HTTP) PMS API, with OAuth2 tokens
//! cached across restarts, 429 and outages handled, undeclared hosts refused, and automatic
//! webhook registration.

use serde_json::json;

use crate::support::{Daemon, DaemonOptions, FakePms, Receiver};

fn options() -> DaemonOptions {
    DaemonOptions::default()
        .with_chaos()
        .env("STAYHOOK_ENRICHMENT_RETRY_SCHEDULE", "50ms,50ms")
        .env("STAYHOOK_ENRICHMENT_RATE_PER_SECOND", "50")
}

async fn chaos_account(daemon: &Daemon, pms: &FakePms, id: &str, receiver: Option<&Receiver>) {
    daemon
        .create_account(json!({
            "id": id, "workspaceId": "ws", "pms": "chaos", "apiBaseUrl": pms.url,
            "credentials": {"clientId": "chaos-client", "clientSecret": "chaos-secret"},
        }))
        .await;
    if let Some(receiver) = receiver {
        daemon.subscribe(id, &receiver.url).await;
    }
}

async fn post(daemon: &Daemon, account_id: &str, behaviour: &str, id: &str) -> String {
    let body = json!({"behaviour": behaviour, "id": id}).to_string();
    let (status, answer) = daemon.post_webhook(account_id, body.as_bytes(), &[]).await;
    assert_eq!(status, 200, "{answer}");
    answer["inboxId"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn thin_webhooks_are_completed_rate_limits_waited_out_and_outages_reported() {
    let receiver = Receiver::start().await;
    let pms = FakePms::start().await;
    let daemon = Daemon::start(options()).await;
    chaos_account(&daemon, &pms, "acc", Some(&receiver)).await;

    post(&daemon, "acc", "fetch", "ok-1").await;
    let completed = receiver.next().await.json();
    assert_eq!(completed["data"]["result"], "SUCCESS");
    assert_eq!(completed["data"]["record"]["arrivalDate"], "2025-03-19T00:00:00.000Z", "taken from the API's answer");
    let call = &pms.calls()[0];
    assert_eq!(call.line, "GET /reservations/ok-1");
    assert_eq!(call.authorization, "Bearer token-1", "the host adds the account's OAuth2 token");

    post(&daemon, "acc", "fetch", "busy-1").await;
    let after_429 = receiver.next().await.json();
    assert_eq!((after_429["data"]["record"]["id"].as_str(), after_429["data"]["result"].as_str()), (Some("busy-1"), Some("SUCCESS")));
    assert_eq!(pms.calls().iter().filter(|call| call.line == "GET /reservations/busy-1").count(), 2, "429, then a retry after Retry-After");

    let inbox_id = post(&daemon, "acc", "fetch", "down-1").await;
    let failed = receiver.next().await.json();
    assert_eq!(failed["hook"]["eventType"], "reservation.updated");
    assert_eq!(failed["data"]["result"], "FAILURE");
    assert_eq!(failed["data"]["record"], json!({"id": "down-1"}));
    assert_eq!(pms.calls().iter().filter(|call| call.line == "GET /reservations/down-1").count(), 3, "one try and two retries");
    let entry = daemon.inbox_outcome(&inbox_id).await;
    assert_eq!(entry["status"], "done", "the webhook itself is not lost: {entry}");
    assert_eq!(pms.n_tokens(), 1, "one token for all of it");
}

#[tokio::test]
async fn the_oauth_token_is_reused_across_a_restart() {
    let receiver = Receiver::start().await;
    let pms = FakePms::start().await;
    let mut daemon = Daemon::start(options()).await;
    chaos_account(&daemon, &pms, "acc", Some(&receiver)).await;
    post(&daemon, "acc", "fetch", "ok-1").await;
    receiver.next().await;
    daemon.restart();
    post(&daemon, "acc", "fetch", "ok-2").await;
    // Delivery is at least once: the kill may make ok-1 arrive again before ok-2.
    while receiver.next().await.json()["data"]["record"]["id"] != "ok-2" {}
    assert_eq!(pms.n_tokens(), 1, "the cached token survived the restart");
    assert!(pms.calls().iter().all(|call| call.authorization == "Bearer token-1"));
}

#[tokio::test]
async fn undeclared_hosts_and_endless_rounds_fail_the_webhook_only() {
    let pms = FakePms::start().await;
    let daemon = Daemon::start(options()).await;
    chaos_account(&daemon, &pms, "acc", None).await;

    let refused = daemon.inbox_outcome(&post(&daemon, "acc", "fetch-foreign", "x").await).await;
    assert_eq!(
        (refused["status"].as_str(), refused["outcome"]["errorKind"].as_str()),
        (Some("failed"), Some("enrichment_refused")),
        "{refused}"
    );
    assert!(refused["outcome"]["error"].as_str().unwrap().contains("evil.example.com"));

    let endless = daemon.inbox_outcome(&post(&daemon, "acc", "fetch-forever", "ok-9").await).await;
    assert_eq!(endless["outcome"]["errorKind"], "enrichment_limit", "{endless}");
    assert_eq!(pms.calls().len(), 4, "four rounds were performed, the fifth refused");

    let (_, plain) = daemon
        .admin("POST", "/v1/accounts", Some(json!({"id": "nocreds", "workspaceId": "ws", "pms": "chaos", "apiBaseUrl": pms.url})))
        .await;
    assert_eq!(plain["id"], "nocreds");
    let missing = daemon.inbox_outcome(&post(&daemon, "nocreds", "fetch", "ok-3").await).await;
    assert_eq!(missing["outcome"]["errorKind"], "enrichment_unavailable");
    assert!(missing["outcome"]["error"].as_str().unwrap().contains("clientId"), "{missing}");
}

#[tokio::test]
async fn a_webhook_waiting_for_the_api_holds_back_its_account_only() {
    let receiver = Receiver::start().await;
    let pms = FakePms::start().await;
    let daemon = Daemon::start(options().env("STAYHOOK_NORMALIZER_THREADS", "1")).await;
    chaos_account(&daemon, &pms, "slow", Some(&receiver)).await;
    chaos_account(&daemon, &pms, "other", Some(&receiver)).await;

    // busy-2 waits a second for Retry-After; the next webhook of its account waits behind it,
    // the other account's webhook (on the same single worker) does not.
    let busy = post(&daemon, "slow", "fetch", "busy-2").await;
    let after_busy = post(&daemon, "slow", "ok", "after-busy").await;
    let unrelated = post(&daemon, "other", "ok", "unrelated").await;
    // The first delivery is the other account's; then the order of normalization (the time
    // each webhook's outcome was recorded) is the order of arrival within the slow account.
    assert_eq!(receiver.next().await.json()["data"]["record"]["id"], "unrelated");
    let mut normalized_at = Vec::new();
    for inbox_id in [&unrelated, &busy, &after_busy] {
        normalized_at.push(daemon.inbox_outcome(inbox_id).await["outcome"]["at"].as_str().unwrap().to_string());
    }
    assert!(normalized_at[0] < normalized_at[1] && normalized_at[1] <= normalized_at[2], "{normalized_at:?}");
}

#[tokio::test]
async fn automatic_and_manual_webhook_registration() {
    let pms = FakePms::start().await;
    let daemon = Daemon::start(options()).await;
    chaos_account(&daemon, &pms, "auto", None).await;

    let (status, registered) = daemon.admin("POST", "/v1/accounts/auto/pms-webhooks", None).await;
    assert_eq!(status, 201, "{registered}");
    assert_eq!(registered["mode"], "automatic");
    assert_eq!(registered["registration"], json!({"webhookId": "wh-1"}));
    let listener_url = format!("{}/listen/auto", daemon.ingest_url);
    assert_eq!(pms.calls()[0].line, format!("POST /webhooks {}", json!({"url": listener_url})), "the listener URL was registered");
    let (_, account) = daemon.admin("GET", "/v1/accounts/auto", None).await;
    assert_eq!(account["registration"]["webhookId"], "wh-1");

    let (status, removed) = daemon.admin("DELETE", "/v1/accounts/auto/pms-webhooks", None).await;
    assert_eq!(status, 200, "{removed}");
    assert_eq!(removed["registration"], json!({}));
    assert_eq!(pms.calls()[1].line, "DELETE /webhooks/wh-1");

    daemon.create_account(json!({"id": "by-hand", "workspaceId": "ws", "pms": "chaos", "settings": {"manual": "yes"}})).await;
    let (status, manual) = daemon.admin("POST", "/v1/accounts/by-hand/pms-webhooks", None).await;
    assert_eq!(status, 200, "{manual}");
    assert_eq!(manual["mode"], "manual");
    assert_eq!(manual["listenerUrl"], format!("{}/listen/by-hand", daemon.ingest_url));
    assert!(manual["instructions"].as_str().unwrap().contains("/listen/by-hand"));
}

/// An account stored while private destinations were allowed, pointing its API at a name that
/// resolves to loopback: once the daemon runs without `allow_private_destinations`, enrichment,
/// the OAuth2 token request and registration are refused at request time, and not one request
/// (so not one credential) reaches the server behind it.
#[tokio::test]
async fn a_loopback_api_base_is_refused_at_request_time_and_no_credential_leaves() {
    let pms = FakePms::start().await;
    let mut daemon = Daemon::start(options()).await;
    let on_loopback = pms.url.replace("127.0.0.1", "localhost");
    // No initial sync: it would list the PMS (and fetch a token) while private destinations are
    // still allowed, before the restart this test is about.
    daemon
        .create_account(json!({
            "id": "acc", "workspaceId": "ws", "pms": "chaos", "apiBaseUrl": on_loopback,
            "credentials": {"clientId": "chaos-client", "clientSecret": "chaos-secret"},
            "initialSync": {"enabled": false},
        }))
        .await;
    daemon.set_env("STAYHOOK_ALLOW_PRIVATE_DESTINATIONS", "false");
    daemon.restart();

    let refused = daemon.inbox_outcome(&post(&daemon, "acc", "fetch", "ok-1").await).await;
    assert_eq!(
        (refused["status"].as_str(), refused["outcome"]["errorKind"].as_str()),
        (Some("failed"), Some("enrichment_refused")),
        "{refused}"
    );
    assert!(refused["outcome"]["error"].as_str().unwrap().contains("apiBaseUrl"), "{refused}");
    let (status, registration) = daemon.admin("POST", "/v1/accounts/acc/pms-webhooks", None).await;
    assert_eq!((status, registration["error"]["code"].as_str()), (502, Some("pms_api_failed")), "{registration}");
    assert!(pms.calls().is_empty(), "no API call reached the loopback server: {:?}", pms.calls());
    assert_eq!(pms.n_tokens(), 0, "no token request either");
}
