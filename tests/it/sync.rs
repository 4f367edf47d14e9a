//! Initial sync and reconciliation (issue 13) on the real daemon: the chaos plugin's `sync` lists a
//! `FakePms` that serves recorded pages; what reaches a real receiver, the account's sync status,
//! the stored state and the list requests the fake PMS got are checked.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Daemon, DaemonOptions, FakePms, Receiver};

fn options() -> DaemonOptions {
    DaemonOptions::default()
        .with_chaos()
        .env("STAYHOOK_ENRICHMENT_RETRY_SCHEDULE", "50ms,50ms")
        .env("STAYHOOK_ENRICHMENT_RATE_PER_SECOND", "200")
}

/// A chaos account on the fake PMS, with an initial sync that stores state only (the test
/// daemons start none unless asked); `extra` adds fields (`initialSync`, `reconcileIntervalSecs`).
async fn account(daemon: &Daemon, pms: &FakePms, id: &str, extra: Value) {
    let mut body = json!({
        "id": id, "workspaceId": "ws", "pms": "chaos", "apiBaseUrl": pms.url,
        "credentials": {"clientId": "chaos-client", "clientSecret": "chaos-secret"},
        "initialSync": {"enabled": true, "deliver": false},
    });
    body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    daemon.create_account(body).await;
}

fn item(id: &str, arrival: &str, updated_at: &str) -> Value {
    json!({"id": id, "arrivalDate": arrival, "updatedAt": updated_at})
}

async fn sync_status(daemon: &Daemon, account_id: &str) -> Value {
    let (status, answer) = daemon.admin("GET", &format!("/v1/accounts/{account_id}/sync"), None).await;
    assert_eq!(status, 200, "{answer}");
    answer
}

/// Wait until the account's last finished pass is of `kind` and has `n_passes` or more ended (by
/// its `finishedAt` changing from `after`).
async fn wait_finished(daemon: &Daemon, account_id: &str, kind: &str, after: Option<&str>) -> Value {
    daemon
        .wait_for(&format!("a finished {kind} pass"), async |daemon| {
            let status = sync_status(daemon, account_id).await;
            let last = &status["lastPass"];
            let finished = last["finishedAt"].as_str();
            (status["status"] == "idle" && last["kind"] == kind && finished.is_some() && finished != after).then_some(status)
        })
        .await
}

async fn post_ok(daemon: &Daemon, account_id: &str, id: &str, arrival: &str, updated_at: &str) {
    let body = json!({"behaviour": "ok", "id": id, "arrivalDate": arrival, "updatedAt": updated_at}).to_string();
    let (status, answer) = daemon.post_webhook(account_id, body.as_bytes(), &[]).await;
    assert_eq!(status, 200, "{answer}");
}

fn metric(text: &str, line_start: &str) -> f64 {
    text.lines()
        .find(|line| line.starts_with(line_start))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0.0)
}

/// A change whose webhook was dropped is delivered once, as the right type, marked
/// `reconciliation`; one that arrived by webhook produces nothing more; an older listed version
/// never replaces a newer webhook's; a listed cancellation is delivered once.
#[tokio::test(flavor = "multi_thread")]
async fn reconciliation_delivers_each_missed_change_once_and_nothing_twice() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let pms = FakePms::start().await;
        pms.set_pages(vec![vec![item("old-1", "2026-07-01", "2026-11-01T10:00:00Z"), item("old-2", "2026-07-02", "2026-11-01T10:00:00Z")]]);
        let daemon = Daemon::start(options()).await;
        let receiver = Receiver::start().await;
        account(&daemon, &pms, "acc", json!({})).await;
        daemon.subscribe("acc", &receiver.url).await;
        let initial = wait_finished(&daemon, "acc", "initial-sync", None).await;
        assert_eq!(
            (initial["lastPass"]["recordsSeen"].as_u64(), initial["lastPass"]["recoveredChanges"].as_u64()),
            (Some(2), Some(0)),
            "{initial}"
        );
        receiver.expect_nothing(Duration::from_millis(300)).await;

        // A webhook arrives and is delivered as usual.
        post_ok(&daemon, "acc", "web-1", "2026-08-01", "2026-12-01T10:00:00Z").await;
        let webhook = receiver.next().await;
        assert_eq!(webhook.json()["hook"]["eventType"], "reservation.created");
        assert_eq!(webhook.header("stayhook-origin"), "webhook");

        // The PMS's list now also shows: the webhook's record as it was (nothing to do), an older
        // version of it (never replaces the newer one), a reservation whose webhook was dropped,
        // old-1 moved, old-2 cancelled.
        pms.set_pages(vec![
            vec![item("web-1", "2026-08-01", "2026-12-01T10:00:00Z"), item("lost-1", "2026-09-01", "2026-12-01T11:00:00Z")],
            vec![
                item("web-1", "2026-07-15", "2026-11-20T10:00:00Z"),
                item("old-1", "2026-07-03", "2026-12-01T12:00:00Z"),
                json!({"id": "old-2", "cancelled": true}),
            ],
        ]);
        let (status, patched) = daemon.admin("PATCH", "/v1/accounts/acc", Some(json!({"reconcileIntervalSecs": 1}))).await;
        assert_eq!(status, 200, "{patched}");
        let mut recovered = Vec::new();
        for _ in 0..3 {
            let delivery = receiver.next().await;
            assert_eq!(delivery.header("stayhook-origin"), "reconciliation", "{}", delivery.json());
            let body = delivery.json();
            recovered.push((
                body["data"]["record"]["id"].as_str().unwrap().to_string(),
                body["hook"]["eventType"].as_str().unwrap().to_string(),
                body["data"]["record"]["previousArrivalDate"].clone(),
            ));
        }
        recovered.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            recovered,
            vec![
                ("lost-1".to_string(), "reservation.created".to_string(), json!("")),
                ("old-1".to_string(), "reservation.updated".to_string(), json!("2026-07-01T00:00:00.000Z")),
                ("old-2".to_string(), "reservation.deleted".to_string(), Value::Null),
            ]
        );
        // More passes of the same list (every second) deliver nothing more.
        let first = wait_finished(&daemon, "acc", "reconciliation", None).await;
        wait_finished(&daemon, "acc", "reconciliation", first["lastPass"]["finishedAt"].as_str()).await;
        receiver.expect_nothing(Duration::from_millis(1500)).await;
        let (_, web) = daemon.admin("GET", "/v1/accounts/acc/reservations/web-1", None).await;
        assert_eq!(web["arrivalDate"], "2026-08-01T00:00:00.000Z", "the older listed version did not replace the webhook's");

        // The admin API's event view says where an event came from.
        let (_, events) = daemon.admin("GET", "/v1/events?recordId=lost-1", None).await;
        assert_eq!(events["events"][0]["origin"], "reconciliation", "{events}");
        let (_, events) = daemon.admin("GET", "/v1/events?recordId=web-1", None).await;
        assert_eq!(events["events"][0]["origin"], "webhook", "{events}");
        let status = sync_status(&daemon, "acc").await;
        assert_eq!(status["modes"], json!(["modified-since"]));
        assert!(status["watermark"].is_string() && status["nextRunAt"].is_string(), "{status}");
        let text =
            daemon.http.get(format!("{}/metrics", daemon.admin_url)).bearer_auth(&daemon.token).send().await.unwrap().text().await.unwrap();
        assert_eq!(metric(&text, "stayhook_reconcile_recovered_total{pms=\"chaos\"}"), 3.0, "{text}");
        assert!(metric(&text, "stayhook_sync_passes_total{kind=\"reconciliation\",outcome=\"finished\"}") >= 2.0, "{text}");
    })
    .await
    .expect("the test ran past its bound");
}

/// An initial sync of 1,000 reservations across 10 pages stores them and delivers nothing; a
/// webhook for one of them is then an update. A second start while it runs is refused (409).
#[tokio::test(flavor = "multi_thread")]
async fn an_initial_sync_stores_state_silently_and_later_webhooks_are_updates() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let pms = FakePms::start().await;
        let pages: Vec<Vec<Value>> = (0..10)
            .map(|page| (0..100).map(|n| item(&format!("i-{}", page * 100 + n), "2026-09-01", "2026-11-01T10:00:00Z")).collect())
            .collect();
        pms.set_pages(pages);
        let daemon = Daemon::start(options()).await;
        let receiver = Receiver::start().await;
        account(&daemon, &pms, "acc", json!({"initialSync": {"enabled": false}, "reconcileIntervalSecs": 0})).await;
        daemon.subscribe("acc", &receiver.url).await;
        assert_eq!(sync_status(&daemon, "acc").await["status"], "idle", "no initial sync when the account asked for none");

        pms.hold_list_from(2);
        let (status, started) = daemon.admin("POST", "/v1/accounts/acc/sync", None).await;
        assert_eq!((status, started["status"].as_str()), (202, Some("running")), "{started}");
        let (status, refused) = daemon.admin("POST", "/v1/accounts/acc/sync", Some(json!({"deliver": true}))).await;
        assert_eq!((status, refused["error"]["code"].as_str()), (409, Some("sync_running")), "{refused}");
        pms.release_list();

        let done = wait_finished(&daemon, "acc", "initial-sync", None).await;
        let last = &done["lastPass"];
        assert_eq!(
            (last["pagesDone"].as_u64(), last["recordsSeen"].as_u64(), last["recoveredChanges"].as_u64()),
            (Some(10), Some(1000), Some(0)),
            "{done}"
        );
        assert_eq!(pms.list_calls().len(), 10, "one request per page");
        receiver.expect_nothing(Duration::from_millis(500)).await;
        let (status, stored) = daemon.admin("GET", "/v1/accounts/acc/reservations/i-999", None).await;
        assert_eq!((status, stored["arrivalDate"].as_str()), (200, Some("2026-09-01T00:00:00.000Z")), "{stored}");
        let (_, events) = daemon.admin("GET", "/v1/events?accountId=acc", None).await;
        assert_eq!(events["events"], json!([]), "no event in the log either");

        post_ok(&daemon, "acc", "i-500", "2026-09-03", "2026-12-01T10:00:00Z").await;
        let update = receiver.next().await.json();
        assert_eq!(update["hook"]["eventType"], "reservation.updated", "{update}");
        assert_eq!(update["data"]["record"]["previousArrivalDate"], "2026-09-01T00:00:00.000Z");
    })
    .await
    .expect("the test ran past its bound");
}

/// With `deliver: true` an initial sync delivers what it lists, marked `initial-sync`.
#[tokio::test(flavor = "multi_thread")]
async fn an_initial_sync_can_deliver_its_records_marked_as_such() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let pms = FakePms::start().await;
        pms.set_pages(vec![vec![item("b-1", "2026-09-01", "2026-11-01T10:00:00Z")]]);
        let daemon = Daemon::start(options()).await;
        let receiver = Receiver::start().await;
        account(&daemon, &pms, "acc", json!({"initialSync": {"enabled": false}})).await;
        daemon.subscribe("acc", &receiver.url).await;
        let (status, started) = daemon.admin("POST", "/v1/accounts/acc/sync", Some(json!({"deliver": true}))).await;
        assert_eq!(status, 202, "{started}");
        let delivered = receiver.next().await;
        assert_eq!(delivered.header("stayhook-origin"), "initial-sync");
        assert_eq!(delivered.json()["hook"]["eventType"], "reservation.created");
        let (status, refused) = daemon.admin("POST", "/v1/accounts/acc/sync", Some(json!({"deliver": "yes"}))).await;
        assert_eq!((status, refused["error"]["code"].as_str()), (422, Some("invalid_field")), "{refused}");
    })
    .await
    .expect("the test ran past its bound");
}

/// SIGKILL in the middle of an initial sync: after the restart the pass goes on from the stored
/// cursor (page 5), not from page 1, and ends with every page stored.
#[tokio::test(flavor = "multi_thread")]
async fn a_sync_resumes_at_its_stored_cursor_after_sigkill() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let pms = FakePms::start().await;
        let pages: Vec<Vec<Value>> = (0..10)
            .map(|page| (0..10).map(|n| item(&format!("k-{}", page * 10 + n), "2026-09-01", "2026-11-01T10:00:00Z")).collect())
            .collect();
        pms.set_pages(pages);
        pms.hold_list_from(5);
        let mut daemon = Daemon::start(options()).await;
        account(&daemon, &pms, "acc", json!({})).await;
        daemon.wait_for("the request for page 5", async |_| pms.list_calls().iter().any(|call| call.page == 5).then_some(())).await;
        let running = sync_status(&daemon, "acc").await;
        assert_eq!((running["status"].as_str(), running["current"]["pagesDone"].as_u64()), (Some("running"), Some(4)), "{running}");
        daemon.kill();
        pms.release_list();
        daemon.start_again();

        let done = wait_finished(&daemon, "acc", "initial-sync", None).await;
        assert_eq!((done["lastPass"]["pagesDone"].as_u64(), done["lastPass"]["recordsSeen"].as_u64()), (Some(10), Some(100)), "{done}");
        let pages: Vec<usize> = pms.list_calls().iter().map(|call| call.page).collect();
        assert_eq!(pages, vec![1, 2, 3, 4, 5, 5, 6, 7, 8, 9, 10], "resumed at the stored cursor");
        for id in ["k-0", "k-45", "k-99"] {
            let (status, _) = daemon.admin("GET", &format!("/v1/accounts/acc/reservations/{id}"), None).await;
            assert_eq!(status, 200, "{id} stored");
        }
    })
    .await
    .expect("the test ran past its bound");
}

/// A 429 from the list API is waited out as its Retry-After says, and the pass goes on.
#[tokio::test(flavor = "multi_thread")]
async fn a_429_from_the_list_api_is_honoured() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let pms = FakePms::start().await;
        pms.set_pages(vec![vec![item("t-1", "2026-09-01", "2026-11-01T10:00:00Z")]]);
        pms.throttle_list(1);
        let daemon = Daemon::start(options()).await;
        account(&daemon, &pms, "acc", json!({})).await;
        let done = wait_finished(&daemon, "acc", "initial-sync", None).await;
        assert_eq!((done["lastPass"]["recordsSeen"].as_u64(), done["lastPass"]["errors"].as_u64()), (Some(1), Some(0)), "{done}");
        let calls = pms.list_calls();
        assert_eq!(calls.len(), 2, "{calls:?}");
        assert!(calls[1].at.duration_since(calls[0].at) >= Duration::from_secs(1), "the retry waited for Retry-After: {calls:?}");
    })
    .await
    .expect("the test ran past its bound");
}

/// A list API that stays down leaves the sync status in error with the reason, while webhooks
/// keep flowing; a plugin that lists nothing says reconciliation is not available.
#[tokio::test(flavor = "multi_thread")]
async fn a_list_api_that_stays_down_is_an_error_and_webhooks_keep_flowing() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let pms = FakePms::start().await;
        pms.list_down(true);
        let daemon = Daemon::start(options()).await;
        let receiver = Receiver::start().await;
        account(&daemon, &pms, "acc", json!({})).await;
        daemon.subscribe("acc", &receiver.url).await;
        let failed = daemon
            .wait_for("the sync to fail", async |daemon| {
                let status = sync_status(daemon, "acc").await;
                (status["status"] == "error").then_some(status)
            })
            .await;
        let reason = failed["lastError"]["reason"].as_str().unwrap();
        assert!(reason.contains("503"), "{failed}");
        assert_eq!(failed["current"]["errors"], 1, "{failed}");
        assert!(failed["nextRunAt"].is_string(), "a retry is scheduled: {failed}");

        post_ok(&daemon, "acc", "w-1", "2026-09-01", "2026-12-01T10:00:00Z").await;
        let delivered = receiver.next().await;
        assert_eq!((delivered.json()["data"]["record"]["id"].as_str(), delivered.header("stayhook-origin").as_str()), (Some("w-1"), "webhook"));
        assert_eq!(sync_status(&daemon, "acc").await["status"], "error");

        // A plugin without sync modes.
        let wasm = std::fs::read(std::path::PathBuf::from(env!("PLUGIN_ARTIFACTS_DIR")).join("stayhook_plugin_sns_probe.wasm")).unwrap();
        let (status, answer) = daemon.upload_plugin("sns-probe", wasm).await;
        assert!(status == 200 || status == 201, "{answer}");
        daemon.create_account(json!({"id": "nosync", "workspaceId": "ws", "pms": "sns-probe", "verification": {"topicArn": "arn:aws:sns:eu-west-1:123456789012:stayhook"}})).await;
        let status = sync_status(&daemon, "nosync").await;
        assert_eq!(status["status"], "unavailable", "{status}");
        assert!(status["reason"].as_str().unwrap().starts_with("reconciliation not available"), "{status}");
        let (code, refused) = daemon.admin("POST", "/v1/accounts/nosync/sync", None).await;
        assert_eq!((code, refused["error"]["code"].as_str()), (422, Some("sync_not_available")), "{refused}");
    })
    .await
    .expect("the test ran past its bound");
}

/// Listing never starves webhook enrichment: with the account's API rate at one call per second a
/// sync of eight pages takes about sixteen seconds (listing gets half the rate), and a webhook that
/// needs an API call in the middle of it is completed and delivered while the sync still runs.
#[tokio::test(flavor = "multi_thread")]
async fn webhook_enrichment_goes_ahead_of_a_running_sync() {
    tokio::time::timeout(Duration::from_secs(90), async {
        let pms = FakePms::start().await;
        pms.set_pages((0..8).map(|page| vec![item(&format!("s-{page}"), "2026-09-01", "2026-11-01T10:00:00Z")]).collect());
        let daemon = Daemon::start(options()).await;
        let receiver = Receiver::start().await;
        account(&daemon, &pms, "acc", json!({"initialSync": {"enabled": false}, "rateLimitPerSecond": 1})).await;
        daemon.subscribe("acc", &receiver.url).await;
        let (status, started) = daemon.admin("POST", "/v1/accounts/acc/sync", None).await;
        assert_eq!(status, 202, "{started}");
        daemon.wait_for("the second page's request", async |_| pms.list_calls().iter().any(|call| call.page == 2).then_some(())).await;

        let body = json!({"behaviour": "fetch", "id": "ok-1"}).to_string();
        let (status, answer) = daemon.post_webhook("acc", body.as_bytes(), &[]).await;
        assert_eq!(status, 200, "{answer}");
        let delivered = receiver.next().await.json();
        assert_eq!((delivered["data"]["record"]["id"].as_str(), delivered["data"]["result"].as_str()), (Some("ok-1"), Some("SUCCESS")));
        let during = sync_status(&daemon, "acc").await;
        assert_eq!(during["status"], "running", "the webhook did not wait for the sync: {during}");
        assert!(during["current"]["pagesDone"].as_u64().unwrap() < 8, "{during}");

        let done = wait_finished(&daemon, "acc", "initial-sync", None).await;
        assert_eq!(done["lastPass"]["pagesDone"], 8, "{done}");
    })
    .await
    .expect("the test ran past its bound");
}

/// `initial_sync` decides for an account whose `initialSync` does not say: off (as the test
/// daemons run), no listing; on, the account starts knowing what the PMS lists.
#[tokio::test]
async fn the_daemon_default_decides_an_initial_sync_the_account_does_not_ask_for() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let pms = FakePms::start().await;
        pms.set_pages(vec![vec![item("d-1", "2026-10-01", "2026-11-01T10:00:00Z")]]);
        let body = |id: &str| {
            json!({"id": id, "workspaceId": "ws", "pms": "chaos", "apiBaseUrl": pms.url, "reconcileIntervalSecs": 0,
                   "credentials": {"clientId": "chaos-client", "clientSecret": "chaos-secret"}})
        };

        let off = Daemon::start(options()).await;
        off.create_account(body("quiet")).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(sync_status(&off, "quiet").await["status"], "idle");
        assert!(pms.list_calls().is_empty(), "no listing: {:?}", pms.list_calls().len());
        drop(off);

        let on = Daemon::start(options().env("STAYHOOK_INITIAL_SYNC", "true")).await;
        on.create_account(body("eager")).await;
        let done = wait_finished(&on, "eager", "initial-sync", None).await;
        assert_eq!(done["lastPass"]["recordsSeen"].as_u64(), Some(1), "{done}");
        let (status, stored) = on.admin("GET", "/v1/accounts/eager/reservations/d-1", None).await;
        assert_eq!(status, 200, "{stored}");
    })
    .await
    .expect("bounded");
}
