//! Scale-out (README "Scale out"): several real `stayhook serve` processes on one real 3-node NATS
//! JetStream cluster (R3), each taking webhooks, normalizing, delivering and answering the admin
//! API; two nodes taking updates of one reservation at once decide both against each other's
//! state, never a second creation. The faults are real: a stayhook node SIGKILLed while its
//! partitions hold work, a NATS server (a stream's leader) SIGKILLed while webhooks arrive. Nodes
//! join and leave (drained, SIGTERM, unpinning its partitions) while a PMS keeps posting. And
//! `stayhook migrate --to`, from a single node's sled store into the cluster, and a backup
//! (`export` from the cluster, `import` into a data dir) back.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{Daemon, DaemonOptions, NatsCluster, Receiver, hostaway_body};

/// The cluster's settings every node (and `migrate`) shares: 6 partitions, a quick failover (a
/// pin lives 2 s, a dead node's deliveries wait 3 s).
const CLUSTER_ENV: [(&str, &str); 4] = [
    ("STAYHOOK_NATS_PARTITIONS", "6"),
    ("STAYHOOK_NATS_ACK_WAIT_MS", "4000"),
    ("STAYHOOK_NATS_PIN_TTL_MS", "2000"),
    ("STAYHOOK_NATS_WORK_ACK_WAIT_MS", "3000"),
];

/// A node of the cluster.
fn node_options(cluster: &NatsCluster, replicas: usize) -> DaemonOptions {
    let options = DaemonOptions::default().on_nats(cluster, replicas);
    CLUSTER_ENV.iter().fold(options, |options, (name, value)| options.env(name, value))
}

/// A Hostaway body of reservation `id`: `created`, or its dates moved (`updated`).
fn reservation(id: u64, updated: bool) -> Vec<u8> {
    reservation_case(id, if updated { "reservation-updated-dates-moved" } else { "reservation-created" })
}

/// A Hostaway golden case's body, as reservation `id`.
fn reservation_case(id: u64, case: &str) -> Vec<u8> {
    let mut body: Value = serde_json::from_slice(&hostaway_body(case)).unwrap();
    body["data"]["id"] = json!(id);
    serde_json::to_vec(&body).unwrap()
}

/// Post like a PMS: retry on 429/5xx and on a connection refused (a dead node: the next one),
/// until a node acknowledges it (`accepted` or `duplicate`). Bounded.
async fn post_until_acknowledged(nodes: &[&Daemon], account_id: &str, body: &[u8]) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut turn = 0;
    loop {
        let node = nodes[turn % nodes.len()];
        turn += 1;
        let response = node
            .http
            .post(format!("{}/listen/{account_id}", node.ingest_url))
            .header("content-type", "application/json")
            .body(body.to_vec())
            .send()
            .await;
        if let Ok(response) = response {
            let status = response.status().as_u16();
            let answer: Value = response.json().await.unwrap_or(Value::Null);
            if status == 200 {
                return answer;
            }
            assert!(status == 429 || status >= 500, "a webhook refused with {status}: {answer}");
        }
        assert!(Instant::now() < deadline, "no node acknowledged a webhook within 60 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Deliveries received until `expected` distinct events arrived (at least once each: a node
/// killed between a receiver's 2xx and its record repeats one), by (account, record), each
/// record's event ids in the order they first arrived, with their types.
async fn collect(receiver: &Receiver, expected: usize) -> BTreeMap<(String, String), Vec<(String, String)>> {
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut seen = BTreeSet::new();
    let mut records: BTreeMap<(String, String), Vec<(String, String)>> = BTreeMap::new();
    while seen.len() < expected {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(received) = receiver.next_within(left).await else {
            panic!("{} of {expected} events delivered within 90 s: {records:?}", seen.len());
        };
        let hook = received.json();
        let event_id = received.header("webhook-id");
        let account_id = hook["data"]["integrationAccountId"].as_str().unwrap_or_default().to_string();
        let key = (account_id, hook["data"]["record"]["id"].as_str().unwrap_or_default().to_string());
        let event_type = hook["hook"]["eventType"].as_str().unwrap().to_string();
        if seen.insert(event_id.clone()) {
            records.entry(key).or_default().push((event_id, event_type));
        }
    }
    records
}

fn types(events: &[(String, String)]) -> Vec<&str> {
    events.iter().map(|(_, event_type)| event_type.as_str()).collect()
}

/// The event ids of an account as one node's admin API lists them.
async fn listed_events(node: &Daemon, account_id: &str) -> Vec<String> {
    let (status, page) = node.admin("GET", &format!("/v1/events?accountId={account_id}&limit=500"), None).await;
    assert_eq!(status, 200, "{page}");
    let mut ids: Vec<String> = page["events"].as_array().unwrap().iter().map(|event| event["id"].as_str().unwrap().to_string()).collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_share_one_view_and_deliver_every_change_once_in_order_through_a_node_s_sigkill() {
    let cluster = NatsCluster::start(3).await;
    let receiver = Receiver::start().await;
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(Daemon::start(node_options(&cluster, 3)).await);
    }
    // Accounts made on one node, subscribed on another: one catalog.
    let mut accounts = Vec::new();
    for index in 0..4 {
        let account = nodes[index % 3].create_account(json!({"workspaceId": "ws-1", "pms": "hostaway"})).await;
        let account_id = account["id"].as_str().unwrap().to_string();
        nodes[(index + 1) % 3].subscribe(&account_id, &receiver.url).await;
        accounts.push(account_id);
    }
    nodes[2]
        .wait_for("the third node to list every account", async |node| {
            let (_, listed) = node.admin("GET", "/v1/accounts", None).await;
            (listed["accounts"].as_array().map_or(0, Vec::len) == 4).then_some(())
        })
        .await;

    // Each record's creation, then its update, posted to different nodes in turn.
    for (index, account_id) in accounts.iter().enumerate() {
        for record in 1..=3u64 {
            let first = (index + record as usize) % 3;
            let all: Vec<&Daemon> = nodes.iter().collect();
            let created = post_until_acknowledged(&all[first..=first], account_id, &reservation(record, false)).await;
            assert_eq!(created["status"], "accepted", "{created}");
            let next = (first + 1) % 3;
            post_until_acknowledged(&all[next..=next], account_id, &reservation(record, true)).await;
        }
    }
    // Two updates of one reservation reaching two nodes at once: both are decided against the
    // state the other left (in the account's order), neither is a second creation.
    for account_id in &accounts {
        let all: Vec<&Daemon> = nodes.iter().collect();
        post_until_acknowledged(&all[0..1], account_id, &reservation(6, false)).await;
        let (moved, cancelled) = (reservation_case(6, "reservation-updated-dates-moved"), reservation_case(6, "reservation-cancelled"));
        let (moved, cancelled) = tokio::join!(
            post_until_acknowledged(&all[1..2], account_id, &moved),
            post_until_acknowledged(&all[2..3], account_id, &cancelled),
        );
        assert_eq!((moved["status"].as_str(), cancelled["status"].as_str()), (Some("accepted"), Some("accepted")));
    }
    // SIGKILL a node while the cluster works through that (its pinned partitions hold webhooks
    // and deliveries): the others take its partitions and work over.
    nodes[0].kill();
    let alive: Vec<&Daemon> = nodes[1..].iter().collect();
    for account_id in &accounts {
        for record in 4..=5u64 {
            let answer = post_until_acknowledged(&alive, account_id, &reservation(record, false)).await;
            assert_eq!(answer["status"], "accepted", "{answer}");
        }
        // A PMS retry reaching another node: the stream's duplicate window answers it.
        let again = post_until_acknowledged(&alive[1..], account_id, &reservation(5, false)).await;
        assert_eq!(again["status"], "duplicate", "{again}");
    }

    let records = collect(&receiver, accounts.len() * (3 * 2 + 2 + 3)).await;
    assert_eq!(records.len(), accounts.len() * 6, "{records:?}");
    for ((account_id, record_id), events) in &records {
        let expected: &[&str] = match record_id.as_str() {
            "4" | "5" => &["reservation.created"],
            "6" => &["reservation.created", "reservation.updated", "reservation.updated"],
            _ => &["reservation.created", "reservation.updated"],
        };
        if types(events) != expected {
            let (_, listed) = nodes[1].admin("GET", &format!("/v1/events?accountId={account_id}&limit=500"), None).await;
            let listed: Vec<String> = listed["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|event| format!("{} {} {} inbox {}", event["id"], event["recordId"], event["eventType"], event["inboxId"]))
                .collect();
            panic!(
                "{account_id}/{record_id}: {events:?}, not {expected:?} (created once, then updated, in order); node 1 lists {listed:#?}"
            );
        }
    }
    receiver.expect_nothing(Duration::from_secs(2)).await;

    // Every node answers the same: the two alive, and the killed one started again.
    nodes[0].start_again();
    for account_id in &accounts {
        let delivered: BTreeSet<String> = records
            .iter()
            .filter(|((account, _), _)| account == account_id)
            .flat_map(|(_, events)| events.iter().map(|(id, _)| id.clone()))
            .collect();
        let delivered: Vec<String> = delivered.into_iter().collect();
        for node in &nodes {
            let listed = node
                .wait_for("a node to list the account's events", async |node| {
                    let listed = listed_events(node, account_id).await;
                    (listed == delivered).then_some(listed)
                })
                .await;
            assert_eq!(listed.len(), 11);
        }
    }

    // An account deleted through one node: the others stop listing its events too (their watch
    // of the catalog sees the deletion), without a restart.
    let (status, answer) = nodes[1].admin("DELETE", &format!("/v1/accounts/{}", accounts[0]), None).await;
    assert_eq!(status, 204, "{answer}");
    for node in [&nodes[0], &nodes[2]] {
        node.wait_for("another node to forget a deleted account's events", async |node| {
            listed_events(node, &accounts[0]).await.is_empty().then_some(())
        })
        .await;
        assert_eq!(listed_events(node, &accounts[1]).await.len(), 11, "the other accounts stay");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_nats_server_killed_under_load_loses_no_acknowledged_webhook() {
    let mut cluster = NatsCluster::start(3).await;
    let receiver = Receiver::start().await;
    let nodes = [Daemon::start(node_options(&cluster, 3)).await, Daemon::start(node_options(&cluster, 3)).await];
    let account = nodes[0].create_account(json!({"workspaceId": "ws-1", "pms": "hostaway"})).await;
    let account_id = account["id"].as_str().unwrap().to_string();
    nodes[1].subscribe(&account_id, &receiver.url).await;
    nodes[1]
        .wait_for("the second node to know the account", async |node| {
            let (status, _) = node.admin("GET", &format!("/v1/accounts/{account_id}"), None).await;
            (status == 200).then_some(())
        })
        .await;

    let client = cluster.connect().await;
    let leader = cluster.stream_leader(&client, "SH_INBOX").await;
    let all: Vec<&Daemon> = nodes.iter().collect();
    let mut acknowledged = 0;
    for record in 1..=20u64 {
        if record == 6 {
            // The inbox stream's leader dies: its followers elect another; appends meanwhile
            // answer 503 (the PMS retries) and nothing acknowledged is lost.
            cluster.kill(cluster.node_named(&leader));
        }
        let answer = post_until_acknowledged(&all[(record % 2) as usize..], &account_id, &reservation(record, false)).await;
        assert_eq!(answer["status"], "accepted", "{answer}");
        acknowledged += 1;
    }
    let records = collect(&receiver, acknowledged).await;
    assert_eq!(records.len(), 20, "{records:?}");
    assert!(records.values().all(|events| types(events) == ["reservation.created"]), "{records:?}");
}

/// Nodes join and leave while a PMS keeps posting: the poster goes round the nodes a load
/// balancer lists; a node joins (listed once it answers), another is drained (unlisted, then
/// SIGTERM: it exits 0), a third joins. Every change is delivered, created then updated, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_join_and_leave_while_webhooks_flow_and_every_change_is_delivered_once_in_order() {
    const RECORDS: u64 = 30;
    let cluster = NatsCluster::start(3).await;
    let receiver = Receiver::start().await;
    let mut nodes = vec![Daemon::start(node_options(&cluster, 3)).await];
    let mut accounts = Vec::new();
    for _ in 0..2 {
        let account = nodes[0].create_account(json!({"workspaceId": "ws-1", "pms": "hostaway"})).await;
        let account_id = account["id"].as_str().unwrap().to_string();
        nodes[0].subscribe(&account_id, &receiver.url).await;
        accounts.push(account_id);
    }

    // The load balancer's list, and a PMS posting each record's creation, then each update.
    let listed = std::sync::Arc::new(std::sync::Mutex::new(vec![nodes[0].ingest_url.clone()]));
    let acknowledged = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let poster = tokio::spawn({
        let (listed, acknowledged, accounts) = (listed.clone(), acknowledged.clone(), accounts.clone());
        async move {
            let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
            let mut turn = 0;
            for updated in [false, true] {
                for record in 1..=RECORDS {
                    let account_id = &accounts[(record % 2) as usize];
                    let body = reservation(record, updated);
                    let deadline = Instant::now() + Duration::from_secs(60);
                    loop {
                        let url = {
                            let listed = listed.lock().unwrap();
                            turn += 1;
                            listed[turn % listed.len()].clone()
                        };
                        let sent =
                            http.post(format!("{url}/listen/{account_id}")).header("content-type", "application/json").body(body.clone());
                        if let Ok(response) = sent.send().await
                            && response.status().as_u16() == 200
                        {
                            break;
                        }
                        assert!(Instant::now() < deadline, "no node acknowledged record {record} within 60 s");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    acknowledged.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(40)).await;
                }
            }
        }
    });
    let reached = async |count: u64| {
        while acknowledged.load(std::sync::atomic::Ordering::SeqCst) < count {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };

    reached(10).await;
    nodes.push(Daemon::start(node_options(&cluster, 3)).await);
    listed.lock().unwrap().push(nodes[1].ingest_url.clone());
    reached(25).await;
    // Drained: off the list first, then stopped; it hands its partitions and work over.
    listed.lock().unwrap().retain(|url| *url != nodes[0].ingest_url);
    assert_eq!(nodes[0].terminate_within(Duration::from_secs(60)), Some(true), "a drained node exits 0 on SIGTERM");
    reached(35).await;
    nodes.push(Daemon::start(node_options(&cluster, 3)).await);
    listed.lock().unwrap().push(nodes[2].ingest_url.clone());
    tokio::time::timeout(Duration::from_secs(180), poster).await.expect("the poster finished within 180 s").expect("the poster");
    assert_eq!(acknowledged.load(std::sync::atomic::Ordering::SeqCst), 2 * RECORDS);

    let records = collect(&receiver, 2 * RECORDS as usize).await;
    assert_eq!(records.len(), RECORDS as usize, "{records:?}");
    for (record, events) in &records {
        assert_eq!(types(events), ["reservation.created", "reservation.updated"], "{record:?}: created once, then updated");
    }
    receiver.expect_nothing(Duration::from_secs(2)).await;
    // The nodes that stay list every event.
    let mut delivered: Vec<String> = records.values().flatten().map(|(id, _)| id.clone()).collect();
    delivered.sort();
    for node in &nodes[1..] {
        let listed = node
            .wait_for("a node to list every event", async |node| {
                let mut listed = Vec::new();
                for account_id in &accounts {
                    listed.extend(listed_events(node, account_id).await);
                }
                listed.sort();
                (listed == delivered).then_some(listed)
            })
            .await;
        assert_eq!(listed.len(), 2 * RECORDS as usize);
    }
}

/// A node stopped with SIGTERM hands its partitions over at once: with pins that live a minute,
/// the node on standby takes the account's next webhook within seconds (a SIGKILLed node's
/// partitions would wait for the minute to pass).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_stopped_with_sigterm_unpins_its_partitions_for_a_standby_node() {
    let cluster = NatsCluster::single().await;
    let receiver = Receiver::start().await;
    let long_pins = || node_options(&cluster, 1).env("STAYHOOK_NATS_PIN_TTL_MS", "60000");
    let mut first = Daemon::start(long_pins()).await;
    let account = first.create_account(json!({"workspaceId": "ws-1", "pms": "hostaway"})).await;
    let account_id = account["id"].as_str().unwrap().to_string();
    first.subscribe(&account_id, &receiver.url).await;
    // The first node up is pinned for every partition (no rebalancing within two pin TTLs).
    post_until_acknowledged(&[&first], &account_id, &reservation(1, false)).await;
    assert_eq!(receiver.next().await.json()["hook"]["eventType"], "reservation.created");
    let second = Daemon::start(long_pins()).await;

    assert_eq!(first.terminate_within(Duration::from_secs(60)), Some(true), "SIGTERM ends the node with success");
    assert!(first.log().contains("left the cluster: partitions unpinned"), "{}", first.log());
    post_until_acknowledged(&[&second], &account_id, &reservation(1, true)).await;
    let updated = receiver.next().await.json();
    assert_eq!(updated["hook"]["eventType"], "reservation.updated", "{updated}");
}

fn stayhook(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_stayhook"));
    command.args(args).env_remove("STAYHOOK_CONFIG");
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().unwrap()
}

fn say(output: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn migrate_moves_a_single_node_with_its_owed_deliveries_into_the_cluster_and_a_backup_moves_it_back() {
    let cluster = NatsCluster::single().await;
    let receiver = Receiver::start().await;
    // The receiver is down: the single node owes the creation's delivery when it stops.
    receiver.fail_next(usize::MAX);
    let mut single = Daemon::start(DaemonOptions::default().retry_schedule("1h")).await;
    let account = single.create_account(json!({"workspaceId": "ws-1", "pms": "hostaway"})).await;
    let account_id = account["id"].as_str().unwrap().to_string();
    single.subscribe(&account_id, &receiver.url).await;
    let (status, _) = single.post_webhook(&account_id, &reservation(7, false), &[]).await;
    assert_eq!(status, 200);
    let failed = receiver.next().await;
    assert_eq!(failed.answered, 500);
    let owed_event = failed.header("webhook-id");
    assert!(single.terminate(), "the single node stops cleanly");
    let data_dir = single.data_dir();

    // Refusals name the problem and move nothing.
    let refused = stayhook(&["migrate", "--from", "dir-without-scheme", "--to", &cluster.url(0)], &[]);
    assert!(!refused.status.success() && say(&refused).contains("sled:DIR"), "{}", say(&refused));
    let from = format!("sled:{}", data_dir.display());
    let mut env = CLUSTER_ENV.to_vec();
    env.push(("STAYHOOK_NATS_REPLICAS", "1"));
    let moved = stayhook(&["migrate", "--from", &from, "--to", &cluster.url(0)], &env);
    assert!(moved.status.success(), "{}", say(&moved));
    let printed = String::from_utf8_lossy(&moved.stdout).to_string();
    assert!(printed.contains("moved 1 owed deliveries"), "{printed}");
    // Twice: the cluster holds the account now, so the import refuses and names it.
    let again = stayhook(&["migrate", "--from", &from, "--to", &cluster.url(0)], &env);
    assert!(!again.status.success() && say(&again).contains(&account_id), "{}", say(&again));
    no_export_left(&data_dir);

    // A node on the cluster: the owed delivery goes out (the same event), the state came along
    // (the next change is an update), and the account, its subscription and events are listed.
    receiver.fail_next(0);
    let node = Daemon::start(node_options(&cluster, 1)).await;
    let owed = receiver.next().await;
    assert_eq!(owed.header("webhook-id"), owed_event, "the owed delivery is of the same event");
    assert_eq!(owed.json()["hook"]["eventType"], "reservation.created");
    let (status, _) = node.post_webhook(&account_id, &reservation(7, true), &[]).await;
    assert_eq!(status, 200);
    let updated = receiver.next().await.json();
    assert_eq!(updated["hook"]["eventType"], "reservation.updated", "{updated}");
    let (status, subscriptions) = node.admin("GET", &format!("/v1/accounts/{account_id}/webhooks"), None).await;
    assert_eq!(status, 200, "{subscriptions}");
    assert_eq!(listed_events(&node, &account_id).await.len(), 2);

    // And back, as a backup: `stayhook export` from the cluster (while a node serves), `stayhook
    // import` into a fresh data dir, a single node on it: the account, its webhook, events and
    // state are there, and nothing is delivered again.
    receiver.expect_nothing(Duration::from_millis(500)).await;
    let scratch = tempfile::tempdir().unwrap();
    let file = scratch.path().join("cluster.ndjson");
    let urls = cluster.urls().join(",");
    let cli_dir = scratch.path().join("cli");
    // The nodes' configuration (the same `[nats]` settings), with a data dir of the command's own.
    env.extend([("STAYHOOK_STORE", "nats"), ("STAYHOOK_NATS_URLS", urls.as_str()), ("STAYHOOK_DATA_DIR", cli_dir.to_str().unwrap())]);
    let exported = stayhook(&["export", "--out", file.to_str().unwrap()], &env);
    assert!(exported.status.success(), "{}", say(&exported));
    let back = scratch.path().join("back");
    let imported =
        stayhook(&["import", file.to_str().unwrap()], &[("STAYHOOK_STORE", "sled"), ("STAYHOOK_DATA_DIR", back.to_str().unwrap())]);
    assert!(imported.status.success(), "{}", say(&imported));
    assert!(String::from_utf8_lossy(&imported.stdout).contains("imported 1 accounts, 1 subscriptions"), "{}", say(&imported));
    let single = Daemon::start(DaemonOptions::default().env("STAYHOOK_STORE", "sled").store_dir(back)).await;
    assert_eq!(listed_events(&single, &account_id).await, listed_events(&node, &account_id).await);
    let (status, subscriptions) = single.admin("GET", &format!("/v1/accounts/{account_id}/webhooks"), None).await;
    assert_eq!((status, subscriptions["webhooks"].as_array().map(Vec::len)), (200, Some(1)), "{subscriptions}");
    receiver.expect_nothing(Duration::from_secs(1)).await;
    let (status, _) = single.post_webhook(&account_id, &reservation(7, false), &[]).await;
    assert_eq!(status, 200);
    let envelope = receiver.next().await.json();
    assert_eq!(envelope["hook"]["eventType"], "reservation.updated", "the state came back: {envelope}");
}

/// The export `migrate` goes through (it holds every secret) is removed whether it worked or not.
fn no_export_left(data_dir: &Path) {
    let left: Vec<_> = std::fs::read_dir(data_dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|entry| entry.file_name().to_string_lossy().to_string())
        .filter(|name| name.starts_with("migrate-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
