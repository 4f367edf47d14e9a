//! Retention: the pruner deletes delivered events and raw webhooks past their retention (they
//! then answer 404 `expired`), keeps the records' state and anything still being delivered, shows
//! its work in `/metrics` and `GET /v1/storage`; deleting an account deletes its data.

use serde_json::{Value, json};

use crate::support::{Daemon, DaemonOptions, Receiver, hostaway_body};

/// A daemon that keeps delivered events and raw webhooks for one second and prunes often.
fn short_retention() -> DaemonOptions {
    DaemonOptions::default()
        .env("STAYHOOK_RETENTION_EVENTS", "1s")
        .env("STAYHOOK_RETENTION_INBOX", "1s")
        .env("STAYHOOK_RETENTION_PRUNE_INTERVAL_MS", "100")
        .env("STAYHOOK_RETENTION_PRUNE_BUDGET", "2")
}

async fn hostaway_account(daemon: &Daemon, receiver: &Receiver) -> String {
    let account = daemon.create_account(json!({"workspaceId": "ws-r", "pms": "hostaway"})).await;
    let account_id = account["id"].as_str().unwrap().to_string();
    daemon.subscribe(&account_id, &receiver.url).await;
    account_id
}

/// Post a webhook and return (inbox id, the first event id), once normalized.
async fn post_and_normalize(daemon: &Daemon, account_id: &str, body: &[u8]) -> (String, String) {
    let (status, answer) = daemon.post_webhook(account_id, body, &[]).await;
    assert_eq!(status, 200, "{answer}");
    let inbox_id = answer["inboxId"].as_str().unwrap().to_string();
    let entry = daemon.inbox_outcome(&inbox_id).await;
    let event_id = entry["outcome"]["eventIds"][0].as_str().unwrap_or_else(|| panic!("no event: {entry}")).to_string();
    (inbox_id, event_id)
}

async fn wait_expired(daemon: &Daemon, path: &str) {
    daemon
        .wait_for(&format!("{path} to expire"), async |daemon| {
            let (status, body) = daemon.admin("GET", path, None).await;
            (status == 404).then(|| assert_eq!(body["error"]["code"], "expired", "{path}: {body}"))
        })
        .await;
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

async fn metrics(daemon: &Daemon) -> String {
    let response = daemon.http.get(format!("{}/metrics", daemon.admin_url)).bearer_auth(&daemon.token).send().await.unwrap();
    response.text().await.unwrap()
}

#[tokio::test]
async fn a_delivered_event_past_retention_expires_and_the_record_state_stays() {
    let receiver = Receiver::start().await;
    let daemon = Daemon::start(short_retention()).await;
    let account_id = hostaway_account(&daemon, &receiver).await;

    let (inbox_id, event_id) = post_and_normalize(&daemon, &account_id, &hostaway_body("reservation-created")).await;
    let created = receiver.next_success().await;
    assert_eq!(created.header("webhook-id"), event_id);

    // Delivered, then past retention: the pruner deletes it and the raw webhook.
    wait_expired(&daemon, &format!("/v1/events/{event_id}")).await;
    for path in [format!("/v1/events/{event_id}/attempts"), format!("/v1/events/{event_id}/redeliver")] {
        let method = if path.ends_with("redeliver") { "POST" } else { "GET" };
        let (status, body) = daemon.admin(method, &path, None).await;
        assert_eq!((status, body["error"]["code"].as_str()), (404, Some("expired")), "{path}: {body}");
    }
    wait_expired(&daemon, &format!("/v1/inbox/{inbox_id}")).await;
    // An unknown id of a time retention still keeps (here: the far future) is just not found.
    let (status, body) = daemon.admin("GET", "/v1/events/ffffffff-ffff-7fff-bfff-ffffffffffff", None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("event_not_found")), "{body}");
    let (status, body) = daemon.admin("GET", "/v1/events/not-an-id", None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("event_not_found")), "{body}");

    // The record's state is kept: the next webhook of the reservation is an update with the
    // previous dates of the pruned creation.
    let (status, _) = daemon.post_webhook(&account_id, &hostaway_body("reservation-updated-dates-moved"), &[]).await;
    assert_eq!(status, 200);
    let updated = receiver.next_success().await.json();
    assert_eq!(updated["hook"]["eventType"], "reservation.updated");
    assert_eq!(updated["data"]["record"]["previousArrivalDate"], "2017-07-15T00:00:00.000Z");
    assert_eq!(updated["data"]["record"]["previousDepartureDate"], "2017-07-16T00:00:00.000Z");

    // The pruning shows in the metrics and the storage route.
    let text = metrics(&daemon).await;
    assert!(metric(&text, "stayhook_pruned_total{kind=\"event\"}") >= 1.0, "{text}");
    assert!(metric(&text, "stayhook_pruned_total{kind=\"delivery\"}") >= 1.0, "{text}");
    assert!(metric(&text, "stayhook_pruned_total{kind=\"inbox\"}") >= 1.0, "{text}");
    assert!(metric(&text, "stayhook_pruner_last_run_timestamp_seconds") > 0.0, "{text}");
    assert!(metric(&text, "stayhook_store_bytes") > 0.0, "{text}");
    let (status, storage) = daemon.admin("GET", "/v1/storage", None).await;
    assert_eq!(status, 200, "{storage}");
    assert_eq!(
        storage["retention"],
        json!({"events": "1s", "inbox": "1s", "deadLetters": "90d", "pruneIntervalMs": 100, "pruneBudget": 2})
    );
    assert!(storage["bytesOnDisk"].as_u64().unwrap() > 0, "{storage}");
    let pruner = &storage["pruner"];
    assert!(pruner["events"].as_u64().unwrap() >= 1 && pruner["inbox"].as_u64().unwrap() >= 1, "{storage}");
    assert!(pruner["passes"].as_u64().unwrap() >= 1 && pruner["lastPass"]["startedAt"].is_string(), "{storage}");
    assert!(pruner["bytesFreed"].as_u64().unwrap() > 0, "{storage}");
}

#[tokio::test]
async fn an_event_still_being_delivered_is_kept() {
    let down = Receiver::failing_first(usize::MAX).await;
    let up = Receiver::start().await;
    // Failed attempts retry in an hour: the delivery stays pending through the test.
    let daemon = Daemon::start(short_retention().retry_schedule("1h")).await;
    let waiting_account = hostaway_account(&daemon, &down).await;
    let other_account = hostaway_account(&daemon, &up).await;

    let (_, waiting) = post_and_normalize(&daemon, &waiting_account, &hostaway_body("reservation-created")).await;
    assert_eq!(down.next().await.answered, 500);
    // A later event, delivered: once it is pruned, the pruner has walked past the waiting one,
    // which is older.
    let (_, delivered) = post_and_normalize(&daemon, &other_account, &hostaway_body("reservation-created")).await;
    up.next_success().await;
    wait_expired(&daemon, &format!("/v1/events/{delivered}")).await;

    let (status, event) = daemon.admin("GET", &format!("/v1/events/{waiting}"), None).await;
    assert_eq!(status, 200, "{event}");
    assert_eq!(event["deliveries"][0]["status"], "pending", "{event}");
    assert_eq!(event["deliveries"][0]["attempts"], 1, "{event}");
    let (_, storage) = daemon.admin("GET", "/v1/storage", None).await;
    assert!(storage["oldestEventAt"].is_string(), "the waiting event is the oldest kept: {storage}");
}

#[tokio::test]
async fn deleting_an_account_deletes_its_events_and_webhooks() {
    let receiver = Receiver::start().await;
    let daemon = Daemon::start(DaemonOptions::default()).await;
    let kept_account = hostaway_account(&daemon, &receiver).await;
    let gone_account = hostaway_account(&daemon, &receiver).await;
    let (_, kept) = post_and_normalize(&daemon, &kept_account, &hostaway_body("reservation-created")).await;
    receiver.next_success().await;
    let (gone_inbox, gone) = post_and_normalize(&daemon, &gone_account, &hostaway_body("reservation-created")).await;
    receiver.next_success().await;
    daemon
        .wait_for("the delivery to be recorded", async |daemon| {
            let (_, event) = daemon.admin("GET", &format!("/v1/events/{gone}"), None).await;
            (event["deliveries"][0]["status"] == "delivered").then_some(())
        })
        .await;

    let (status, _) = daemon.admin("DELETE", &format!("/v1/accounts/{gone_account}"), None).await;
    assert_eq!(status, 204);
    let (status, body) = daemon.admin("GET", &format!("/v1/events/{gone}"), None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("event_not_found")), "{body}");
    let (status, body) = daemon.admin("GET", &format!("/v1/inbox/{gone_inbox}"), None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("inbox_not_found")), "{body}");
    let (_, listed) = daemon.admin("GET", &format!("/v1/events?accountId={gone_account}"), None).await;
    assert_eq!(listed["events"], json!([]), "{listed}");

    // The other account keeps everything.
    let (status, event) = daemon.admin("GET", &format!("/v1/events/{kept}"), None).await;
    assert_eq!(status, 200, "{event}");
    let (status, record) = daemon.admin("GET", &format!("/v1/accounts/{kept_account}/reservations/13"), None).await;
    assert_eq!(status, 200, "{record}");
    let _: &Value = &record;
}

#[tokio::test]
async fn a_dead_letter_past_its_retention_is_discarded_and_its_lane_goes_on() {
    let receiver = Receiver::failing_first(usize::MAX).await;
    // Two attempts, then dead; delivered events go after a second, dead letters after five.
    let daemon = Daemon::start(short_retention().retry_schedule("100ms").env("STAYHOOK_RETENTION_DEAD_LETTERS", "5s")).await;
    let account_id = hostaway_account(&daemon, &receiver).await;

    let (_, created) = post_and_normalize(&daemon, &account_id, &hostaway_body("reservation-created")).await;
    let dead_id = daemon
        .wait_for("the delivery to die", async |daemon| {
            let (_, event) = daemon.admin("GET", &format!("/v1/events/{created}"), None).await;
            (event["deliveries"][0]["status"] == "dead").then(|| event["deliveries"][0]["deliveryId"].clone())
        })
        .await;
    // The record's next event waits behind the dead letter (it holds the lane).
    let (_, updated) = post_and_normalize(&daemon, &account_id, &hostaway_body("reservation-updated-dates-moved")).await;
    let (_, event) = daemon.admin("GET", &format!("/v1/events/{updated}"), None).await;
    assert_eq!(event["deliveries"][0]["heldBy"], dead_id, "{event}");
    receiver.fail_next(0);

    // Past its retention the dead letter is discarded (the held event goes out) and deleted.
    let delivered = loop {
        let received = receiver.next().await;
        if received.answered == 200 {
            break received.json();
        }
    };
    assert_eq!(delivered["hook"]["eventType"], "reservation.updated");
    wait_expired(&daemon, &format!("/v1/events/{created}")).await;
    let (_, dead_letters) = daemon.admin("GET", "/v1/dead-letters", None).await;
    assert_eq!(dead_letters["deadLetters"], json!([]), "{dead_letters}");
}

fn segment_files(daemon: &Daemon) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(daemon.data_dir().join("store/segments"))
        .unwrap()
        .filter_map(|entry| entry.ok().map(|entry| entry.file_name().to_string_lossy().into_owned()))
        .filter(|name| name.ends_with(".seg"))
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn retention_deletes_whole_segment_files_and_the_store_shrinks() {
    let receiver = Receiver::start().await;
    // 64 KiB segments: a few webhooks and their events fill one.
    let daemon =
        Daemon::start(short_retention().env("STAYHOOK_RETENTION_PRUNE_BUDGET", "100").env("STAYHOOK_STORE_SEGMENT_KB", "64")).await;
    let account_id = hostaway_account(&daemon, &receiver).await;
    let body: Value = serde_json::from_slice(&hostaway_body("reservation-created")).unwrap();
    let mut last_event = String::new();
    // Retention is a second, so on a slow machine pruning may begin while these are posted: what
    // the store held is the most seen along the way, not a count taken after.
    let (mut seen, mut most_files, mut bytes_before) = (std::collections::BTreeSet::new(), 0, 0);
    for n in 0..80 {
        let mut body = body.clone();
        body["data"]["id"] = json!(1000 + n);
        let (_, event_id) = post_and_normalize(&daemon, &account_id, &serde_json::to_vec(&body).unwrap()).await;
        last_event = event_id;
        let files = segment_files(&daemon);
        most_files = most_files.max(files.len());
        seen.extend(files);
        if n % 10 == 9 {
            let (_, storage) = daemon.admin("GET", "/v1/storage", None).await;
            bytes_before = bytes_before.max(storage["bytesOnDisk"].as_u64().unwrap_or_else(|| panic!("{storage}")));
        }
    }
    for _ in 0..80 {
        receiver.next_success().await;
    }
    let before: Vec<_> = seen.into_iter().collect();
    assert!(before.len() >= 3, "80 webhooks and events fill several 64 KiB segments: {before:?} (at most {most_files} at once)");

    // Past retention, every closed segment goes; the active one stays.
    wait_expired(&daemon, &format!("/v1/events/{last_event}")).await;
    let after = daemon
        .wait_for("the closed segments to be deleted", async |daemon| {
            let files = segment_files(daemon);
            (files.len() == 1).then_some(files)
        })
        .await;
    assert_eq!(after.last(), before.last(), "the active segment is kept: {before:?} {after:?}");
    let (_, storage) = daemon.admin("GET", "/v1/storage", None).await;
    let bytes_after = storage["bytesOnDisk"].as_u64().unwrap();
    assert!(bytes_after < bytes_before, "the store shrinks: {bytes_before} then {bytes_after}");
    assert!(daemon.log().contains("retention deleted a segment file"));
}
