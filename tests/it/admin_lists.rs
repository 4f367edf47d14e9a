//! Bounded list answers: every list route of the admin API pages with `limit` and `after`, refuses
//! a `limit` outside its range, stops within its byte budget with a `next` to page on, and lists
//! excerpts of big items whose single-item route still answers them whole.

use serde_json::{Value, json};

use crate::support::{Daemon, DaemonOptions, Receiver};

/// The byte budget of one list answer's items (`api::paging::PAGE_BUDGET_BYTES`), plus room for
/// the envelope.
const PAGE_BUDGET_BYTES: usize = 4 << 20;
/// The longest string of a listed item (`api::paging::MAX_STRING_BYTES`).
const MAX_STRING_BYTES: usize = 8 << 10;

#[track_caller]
fn assert_error(answer: &(u16, Value), status: u16, code: &str) {
    assert_eq!(answer.0, status, "{}", answer.1);
    assert_eq!(answer.1["error"]["code"], code, "{}", answer.1);
}

/// `GET path` as raw bytes (to measure the answer) and its JSON.
async fn get_raw(daemon: &Daemon, path: &str) -> (usize, Value) {
    let response = daemon.http.get(format!("{}{path}", daemon.admin_url)).bearer_auth(&daemon.token).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200, "{path}");
    let bytes = response.bytes().await.unwrap();
    (bytes.len(), serde_json::from_slice(&bytes).unwrap())
}

/// Walk a list route page by page (at most `max_pages`), collecting `key` of every item.
async fn walk(daemon: &Daemon, path: &str, items: &str, key: &str, limit: usize, max_pages: usize) -> (Vec<String>, usize) {
    let separator = if path.contains('?') { '&' } else { '?' };
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    for n_pages in 1..=max_pages {
        let query = match &after {
            Some(after) => format!("{path}{separator}limit={limit}&after={after}"),
            None => format!("{path}{separator}limit={limit}"),
        };
        let (_, page) = get_raw(daemon, &query).await;
        let listed = page[items].as_array().unwrap_or_else(|| panic!("{query}: {page}"));
        assert!(listed.len() <= limit, "{query}: {} items", listed.len());
        seen.extend(listed.iter().map(|item| item[key].as_str().map_or_else(|| item[key].to_string(), String::from)));
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_string()),
            None => return (seen, n_pages),
        }
    }
    panic!("{path} did not end within {max_pages} pages: {seen:?}");
}

#[tokio::test]
async fn every_list_route_pages_and_refuses_limits_out_of_range() {
    let receiver = Receiver::failing_first(1_000_000).await;
    let daemon = Daemon::start(DaemonOptions::default().with_chaos()).await;
    for n in 0..5 {
        daemon.create_account(json!({"id": format!("acc-{n}"), "workspaceId": "ws", "pms": "chaos"})).await;
    }
    for _ in 0..3 {
        daemon.subscribe("acc-0", &receiver.url).await;
    }
    daemon.subscribe("acc-1", &receiver.url).await;
    for id in ["r-1", "r-2", "r-3"] {
        let (status, answer) = daemon.post_webhook("acc-1", json!({"behaviour": "ok", "id": id}).to_string().as_bytes(), &[]).await;
        assert_eq!(status, 200, "{answer}");
    }
    for n in 0..4 {
        let body = json!({"behaviour": format!("not-a-behaviour-{n}"), "id": "x"}).to_string();
        daemon.post_webhook("acc-3", body.as_bytes(), &[]).await;
    }
    // The harness's schedule is four retries: each of the three deliveries dies after 5 attempts.
    daemon
        .wait_for("three dead letters", async |daemon| {
            let (_, dead) = daemon.admin("GET", "/v1/dead-letters", None).await;
            (dead["deadLetters"].as_array().map_or(0, Vec::len) == 3).then_some(())
        })
        .await;
    daemon
        .wait_for("four skipped inbox entries", async |daemon| {
            let (_, failed) = daemon.admin("GET", "/v1/inbox?status=skipped", None).await;
            (failed["inbox"].as_array().map_or(0, Vec::len) == 4).then_some(())
        })
        .await;

    let (accounts, _) = walk(&daemon, "/v1/accounts", "accounts", "id", 2, 10).await;
    assert_eq!(accounts, ["acc-0", "acc-1", "acc-2", "acc-3", "acc-4"]);
    let (webhooks, n_pages) = walk(&daemon, "/v1/accounts/acc-0/webhooks", "webhooks", "id", 2, 10).await;
    assert_eq!((webhooks.len(), n_pages), (3, 2), "{webhooks:?}");
    let (events, _) = walk(&daemon, "/v1/events?accountId=acc-1", "events", "recordId", 2, 10).await;
    assert_eq!(events, ["r-1", "r-2", "r-3"]);
    let (_, log) = daemon.admin("GET", "/v1/events?accountId=acc-1", None).await;
    let event_id = log["events"][0]["id"].as_str().unwrap().to_string();
    let (attempts, _) = walk(&daemon, &format!("/v1/events/{event_id}/attempts"), "attempts", "attempt", 2, 10).await;
    assert_eq!(attempts, ["1", "2", "3", "4", "5"]);
    let (dead, n_pages) = walk(&daemon, "/v1/dead-letters", "deadLetters", "deliveryId", 2, 10).await;
    assert_eq!((dead.len(), n_pages), (3, 2), "{dead:?}");
    let numbers: Vec<u64> = dead.iter().map(|id| id.parse().unwrap()).collect();
    assert!(numbers.windows(2).all(|pair| pair[0] > pair[1]), "newest first, each once: {numbers:?}");
    let (skipped, _) = walk(&daemon, "/v1/inbox?status=skipped", "inbox", "inboxId", 3, 10).await;
    assert_eq!(skipped.len(), 4, "{skipped:?}");
    assert_eq!(skipped.iter().collect::<std::collections::BTreeSet<_>>().len(), 4, "each once: {skipped:?}");
    let (plugins, _) = walk(&daemon, "/v1/plugins", "plugins", "name", 3, 10).await;
    let (_, all) = daemon.admin("GET", "/v1/plugins", None).await;
    let expected: Vec<String> =
        all["plugins"].as_array().unwrap().iter().map(|plugin| plugin["name"].as_str().unwrap().to_string()).collect();
    assert!(plugins.len() > 3 && plugins == expected, "{plugins:?}");

    for (route, max) in [
        ("/v1/accounts", 1000),
        ("/v1/accounts/acc-0/webhooks", 1000),
        ("/v1/events", 1000),
        (&format!("/v1/events/{event_id}/attempts") as &str, 1000),
        ("/v1/dead-letters", 1000),
        ("/v1/inbox", 200),
        ("/v1/plugins", 1000),
    ] {
        for limit in ["0".to_string(), (max + 1).to_string(), "many".to_string(), "-1".to_string()] {
            let answer = daemon.admin("GET", &format!("{route}?limit={limit}"), None).await;
            assert_error(&answer, 400, "invalid_limit");
        }
        let (status, _) = daemon.admin("GET", &format!("{route}?limit={max}"), None).await;
        assert_eq!(status, 200, "{route}?limit={max}");
    }
}

/// Large items: accounts with big settings fill the byte budget before the page's limit, and the
/// page says where to go on; inbox entries whose plugin echoed a huge event name are listed as
/// excerpts, marked `truncated`, and shown whole by `GET /v1/inbox/{id}`.
#[tokio::test]
async fn big_items_page_within_the_byte_budget_and_are_listed_as_excerpts() {
    let daemon = Daemon::start(DaemonOptions::default().with_chaos()).await;

    // 60 settings of 4,000 bytes: 240 KB an account, under the per-item excerpt bound (256 KiB),
    // so 20 accounts are 4.8 MB: more than one answer may carry.
    let settings: serde_json::Map<String, Value> = (0..60).map(|n| (format!("s{n:02}"), json!("v".repeat(4000)))).collect();
    for n in 0..20 {
        daemon.create_account(json!({"id": format!("big-{n:02}"), "workspaceId": "ws", "pms": "chaos", "settings": settings})).await;
    }
    let (bytes, first) = get_raw(&daemon, "/v1/accounts").await;
    assert!(bytes <= PAGE_BUDGET_BYTES + 4096, "{bytes} bytes in one answer");
    let n_first = first["accounts"].as_array().unwrap().len();
    assert!(n_first < 20 && first["next"].is_string(), "{n_first} accounts, next {}", first["next"]);
    assert_eq!(first["accounts"][0]["settings"]["s59"].as_str().map(str::len), Some(4000), "listed whole: under the item bound");
    let (accounts, _) = walk(&daemon, "/v1/accounts", "accounts", "id", 100, 10).await;
    let expected: Vec<String> = (0..20).map(|n| format!("big-{n:02}")).collect();
    assert_eq!(accounts, expected, "every account once, in order");

    // The chaos plugin echoes an unknown behaviour as its error (the webhook is skipped as an
    // unsupported event): 600 KB a webhook.
    for n in 0..8 {
        let body = json!({"behaviour": format!("{n}{}", "x".repeat(600_000)), "id": "x"}).to_string();
        let (status, answer) = daemon.post_webhook("big-00", body.as_bytes(), &[]).await;
        assert_eq!(status, 200, "{answer}");
    }
    let page = daemon
        .wait_for("eight skipped inbox entries", async |daemon| {
            let (bytes, page) = get_raw(daemon, "/v1/inbox?status=skipped&limit=200").await;
            (page["inbox"].as_array().map_or(0, Vec::len) == 8).then_some((bytes, page))
        })
        .await;
    assert!(page.0 < 1 << 20, "{} bytes for 8 entries", page.0);
    for item in page.1["inbox"].as_array().unwrap() {
        let inbox_id = item["inboxId"].as_str().unwrap();
        let (status, whole) = daemon.admin("GET", &format!("/v1/inbox/{inbox_id}"), None).await;
        assert_eq!(status, 200, "{whole}");
        let full_error = whole["outcome"]["error"].as_str().unwrap();
        let listed_error = item["outcome"]["error"].as_str().unwrap();
        assert!(full_error.starts_with(listed_error), "the excerpt is the error's beginning");
        if full_error.len() > MAX_STRING_BYTES {
            assert_eq!((item["truncated"].as_bool(), listed_error.len()), (Some(true), MAX_STRING_BYTES), "{inbox_id}");
        } else {
            assert_eq!(listed_error, full_error, "what the store kept is short enough to list whole");
        }
    }
}

#[tokio::test]
async fn the_event_log_is_searched_by_record_result_and_time() {
    let daemon = Daemon::start(DaemonOptions::default()).await;
    daemon.create_account(json!({"id": "search", "workspaceId": "ws", "pms": "hostaway"})).await;
    let before = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    for id in [13, 14, 15] {
        let mut body: Value = serde_json::from_slice(&crate::support::hostaway_body("reservation-created")).unwrap();
        body["data"]["id"] = json!(id);
        let (status, answer) = daemon.post_webhook("search", body.to_string().as_bytes(), &[]).await;
        assert_eq!(status, 200, "{answer}");
        daemon.inbox_outcome(answer["inboxId"].as_str().unwrap()).await;
    }
    // A millisecond later than the last event's timestamp, which `from` includes.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let after = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let records = |page: &Value| -> Vec<String> {
        page["events"].as_array().unwrap().iter().map(|event| event["recordId"].as_str().unwrap().to_string()).collect()
    };
    let (status, page) = daemon.admin("GET", "/v1/events?accountId=search&recordId=14", None).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(records(&page), ["14"]);
    let (_, page) = daemon.admin("GET", "/v1/events?accountId=search&result=SUCCESS", None).await;
    assert_eq!(records(&page), ["13", "14", "15"]);
    let (_, page) = daemon.admin("GET", "/v1/events?accountId=search&result=FAILURE", None).await;
    assert_eq!(records(&page), Vec::<String>::new());
    let (_, page) = daemon.admin("GET", &format!("/v1/events?accountId=search&from={before}&to={after}").replace('+', "%2B"), None).await;
    assert_eq!(records(&page), ["13", "14", "15"]);
    let (_, page) = daemon.admin("GET", &format!("/v1/events?accountId=search&from={after}").replace('+', "%2B"), None).await;
    assert_eq!(records(&page), Vec::<String>::new(), "nothing was produced after the last event");
    let (_, page) = daemon.admin("GET", &format!("/v1/events?to={before}").replace('+', "%2B"), None).await;
    assert_eq!(records(&page), Vec::<String>::new(), "nothing was produced before the first webhook");
    for bad in ["result=MAYBE", "from=yesterday", "to=2026-13-01T00:00:00Z"] {
        let (status, answer) = daemon.admin("GET", &format!("/v1/events?{bad}"), None).await;
        assert_eq!(status, 400, "{bad}: {answer}");
        assert_eq!(answer["error"]["code"], "invalid_query", "{bad}");
    }
}

/// `GET /v1/dead-letters?webhookId=`: only the dead letters of that webhook, paged like the whole
/// list; an unknown id lists none; a malformed query is a 400 with the usual error body.
#[tokio::test]
async fn dead_letters_are_listed_per_webhook() {
    let down = Receiver::failing_first(1_000_000).await;
    let also_down = Receiver::failing_first(1_000_000).await;
    let up = Receiver::start().await;
    let daemon = Daemon::start(DaemonOptions::default().with_chaos()).await;
    daemon.create_account(json!({"id": "two-hooks", "workspaceId": "ws", "pms": "chaos"})).await;
    daemon.create_account(json!({"id": "other", "workspaceId": "ws", "pms": "chaos"})).await;
    let failing = daemon.subscribe("two-hooks", &down.url).await["id"].as_str().unwrap().to_string();
    let healthy = daemon.subscribe("two-hooks", &up.url).await["id"].as_str().unwrap().to_string();
    let elsewhere = daemon.subscribe("other", &also_down.url).await["id"].as_str().unwrap().to_string();
    for id in ["r-1", "r-2", "r-3"] {
        let (status, answer) = daemon.post_webhook("two-hooks", json!({"behaviour": "ok", "id": id}).to_string().as_bytes(), &[]).await;
        assert_eq!(status, 200, "{answer}");
    }
    let (status, answer) = daemon.post_webhook("other", json!({"behaviour": "ok", "id": "r-9"}).to_string().as_bytes(), &[]).await;
    assert_eq!(status, 200, "{answer}");
    // Each delivery to a receiver that is down dies after the harness's five attempts.
    daemon
        .wait_for("four dead letters", async |daemon| {
            let (_, dead) = daemon.admin("GET", "/v1/dead-letters", None).await;
            (dead["deadLetters"].as_array().map_or(0, Vec::len) == 4).then_some(())
        })
        .await;
    for _ in 0..3 {
        up.next_success().await;
    }

    let (records, n_pages) = walk(&daemon, &format!("/v1/dead-letters?webhookId={failing}"), "deadLetters", "webhookId", 2, 10).await;
    assert_eq!((records.len(), n_pages), (3, 2), "{records:?}");
    assert!(records.iter().all(|webhook| *webhook == failing), "{records:?}");
    let (_, page) = daemon.admin("GET", &format!("/v1/dead-letters?webhookId={failing}"), None).await;
    let events: std::collections::BTreeSet<&str> =
        page["deadLetters"].as_array().unwrap().iter().map(|dead| dead["eventId"].as_str().unwrap()).collect();
    assert_eq!(events.len(), 3, "one dead letter per event: {page}");
    let (elsewhere_dead, _) = walk(&daemon, &format!("/v1/dead-letters?webhookId={elsewhere}"), "deadLetters", "webhookId", 100, 1).await;
    assert_eq!(elsewhere_dead, [elsewhere]);
    let (none, _) = walk(&daemon, &format!("/v1/dead-letters?webhookId={healthy}"), "deadLetters", "webhookId", 100, 1).await;
    assert!(none.is_empty(), "the healthy webhook has no dead letters: {none:?}");
    let (none, _) = walk(&daemon, "/v1/dead-letters?webhookId=no-such-webhook", "deadLetters", "webhookId", 100, 1).await;
    assert!(none.is_empty(), "an unknown webhook has none: {none:?}");

    for bad in ["webhookId=", &format!("webhookId={failing}&webhookId={healthy}"), &format!("webhookId={failing}&after=newest")] {
        let answer = daemon.admin("GET", &format!("/v1/dead-letters?{bad}"), None).await;
        assert_error(&answer, 400, "invalid_query");
        assert!(answer.1["error"]["message"].as_str().is_some_and(|message| !message.is_empty()), "{bad}: {}", answer.1);
    }
}
