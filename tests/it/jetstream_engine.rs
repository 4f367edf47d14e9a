//! The JetStream engine contract: what the NATS backend (issue 14, docs/jetstream-design.md)
//! relies on, proven against a real 3-node cluster of the current server (`.ci/nats-server`).
//! Nothing of stayhook runs here; each test asserts one mechanism of the engine, and prints what it
//! saw (`--nocapture`) where the design depends on more than the assertion.
//!
//! - duplicates: `Nats-Msg-Id` inside the stream's duplicate window survives a SIGKILL of the R3
//!   stream's leader, and every acknowledged publish is kept (also on the old leader once back).
//! - pinned drainer: a pull consumer with a priority group and the `pinned_client` policy delivers
//!   to one client (each message names its pin); when it dies mid-batch another takes over after
//!   the pin's TTL. Without a full `max_ack_pending` new messages overtake the dead one's unacked
//!   batch; with it, the batch comes back first, in order.
//! - the raw pull API: a pull naming a stale pin is refused `423`; `+WPI` (in progress) keeps a
//!   pinned message from redelivery past its ack wait.
//! - compare-and-set: KV updates on an expected revision, from two nodes at once: one wins (under
//!   either of the server's two codes); `create` on a live key fails; a watcher sees the winners.
//! - retries: explicit ack, `backoff` for unanswered deliveries, naks with and without a delay,
//!   `max_deliver`, and the MAX_DELIVERIES advisory with the stream sequence, also kept by a stream.
//! - `duplicate_window_memory` (ignored): a measurement of what a long duplicate window costs.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, AckKind, consumer, kv, message::PublishMessage as Publish, stream};
use futures_util::StreamExt;
use serde_json::Value;

use crate::support::NatsCluster;

/// Run `future`, panicking with `what` when it takes longer than `bound`.
async fn bounded<T>(what: &str, bound: Duration, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(bound, future).await.unwrap_or_else(|_| panic!("{what}: not done within {bound:?}"))
}

/// Publish with a `Nats-Msg-Id` until JetStream acknowledges it, as the listener would (the PMS
/// retries the same body, the digest is the same id): publishes fail while a stream elects a leader.
/// Returns the acknowledgement and how many attempts failed first.
async fn publish_until_acked(js: &jetstream::Context, subject: &str, id: &str, payload: &str) -> (jetstream::publish::PublishAck, usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut failed = 0;
    loop {
        let publish = Publish::build().message_id(id).payload(payload.to_string().into());
        let error = match js.send_publish(subject.to_string(), publish).await {
            Ok(ack) => match ack.await {
                Ok(ack) => return (ack, failed),
                Err(error) => error.to_string(),
            },
            Err(error) => error.to_string(),
        };
        failed += 1;
        assert!(Instant::now() < deadline, "publishing {id} to {subject}: no ack within 30s (last error: {error})");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn r3_stream(name: &str, subjects: &[&str]) -> stream::Config {
    stream::Config {
        name: name.to_string(),
        subjects: subjects.iter().map(|subject| subject.to_string()).collect(),
        num_replicas: 3,
        storage: stream::StorageType::File,
        ..Default::default()
    }
}

#[tokio::test]
async fn duplicate_window_and_acknowledged_publishes_survive_a_stream_leader_sigkill() {
    bounded("the duplicate-window test", Duration::from_secs(90), async {
        let mut cluster = NatsCluster::start(3).await;
        let client = cluster.connect().await;
        let js = jetstream::new(client.clone());
        let config = stream::Config { duplicate_window: Duration::from_secs(120), ..r3_stream("INBOX", &["inbox.>"]) };
        js.create_stream(config).await.expect("creating the R3 inbox stream");

        // A second publish with the same id inside the window: acknowledged as a duplicate of the
        // first (its sequence), not stored.
        let (first, _) = publish_until_acked(&js, "inbox.p0", "m-0", "body 0").await;
        assert!(!first.duplicate);
        let (again, _) = publish_until_acked(&js, "inbox.p0", "m-0", "body 0 again").await;
        assert!(again.duplicate, "{again:?}");
        assert_eq!(again.sequence, first.sequence);
        let mut inbox = js.get_stream("INBOX").await.unwrap();
        assert_eq!(inbox.info().await.unwrap().state.messages, 1);

        let mut acknowledged = BTreeSet::from(["m-0".to_string()]);
        for index in 1..10 {
            let id = format!("m-{index}");
            let (ack, _) = publish_until_acked(&js, &format!("inbox.p{}", index % 4), &id, &format!("body {index}")).await;
            assert!(!ack.duplicate);
            acknowledged.insert(id);
        }

        // SIGKILL the stream's leader: another replica takes over.
        let old_leader = cluster.stream_leader(&client, "INBOX").await;
        let killed = cluster.node_named(&old_leader);
        cluster.kill(killed);
        let killed_at = Instant::now();
        let new_leader = cluster.wait_new_leader(&client, "INBOX", &old_leader).await;
        println!("INBOX: leader {old_leader} killed, {new_leader} elected after {:?}", killed_at.elapsed());

        // The window still suppresses ids acknowledged before the kill.
        for id in ["m-0", "m-5"] {
            let (ack, failed) = publish_until_acked(&js, "inbox.p0", id, "again").await;
            assert!(ack.duplicate, "{id} after the leader change: {ack:?}");
            println!("INBOX: {id} republished after the kill: duplicate of seq {} ({failed} failed attempts first)", ack.sequence);
        }
        // Publishes go on.
        for index in 10..20 {
            let id = format!("m-{index}");
            let (ack, failed) = publish_until_acked(&js, &format!("inbox.p{}", index % 4), &id, &format!("body {index}")).await;
            assert!(!ack.duplicate, "{id}: {ack:?}");
            if failed > 0 {
                println!("INBOX: {id} acknowledged after {failed} failed attempts");
            }
            acknowledged.insert(id);
        }

        // The old leader comes back and catches up; make it the leader again (a stepdown request,
        // repeated until the election picks it), so the reads below come from its copy.
        cluster.restart(killed).await;
        let mut leader = cluster.stream_leader(&client, "INBOX").await;
        for _ in 0..10 {
            if leader == old_leader {
                break;
            }
            let body = serde_json::json!({"placement": {"preferred": old_leader}}).to_string();
            let _ = client.request("$JS.API.STREAM.LEADER.STEPDOWN.INBOX", body.into()).await;
            leader = cluster.wait_new_leader(&client, "INBOX", &leader).await;
        }
        assert_eq!(leader, old_leader, "the restarted node did not become the leader again");

        // Every acknowledged publish is there, once.
        let info = inbox.info().await.unwrap().clone();
        assert_eq!(info.state.messages, acknowledged.len() as u64, "{:?}", info.state);
        let mut stored = BTreeSet::new();
        for sequence in info.state.first_sequence..=info.state.last_sequence {
            let message = inbox.get_raw_message(sequence).await.expect("reading a stored message");
            let id = message.headers.get("Nats-Msg-Id").expect("a stored message keeps its Nats-Msg-Id").to_string();
            assert!(stored.insert(id.clone()), "{id} stored twice");
        }
        assert_eq!(stored, acknowledged);
    })
    .await;
}

/// One delivery seen by a pull client: the stream sequence, the delivery count, the payload.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    sequence: u64,
    delivered: i64,
    payload: String,
    /// The `Nats-Pin-Id` header: which pin the server delivered it under (pinned consumers only).
    pin: Option<String>,
}

fn seen(message: &jetstream::Message) -> Seen {
    let info = message.info().expect("a JetStream message's reply subject");
    let pin = message.headers.as_ref().and_then(|headers| headers.get("Nats-Pin-Id")).map(|pin| pin.to_string());
    Seen { sequence: info.stream_sequence, delivered: info.delivered, payload: String::from_utf8_lossy(&message.payload).into_owned(), pin }
}

/// A pull client of the `drain` consumer's `p0` group on its own connection: it forwards every
/// delivery, acks those `ack` accepts, and keeps pulling (which keeps its pin) until dropped.
struct PullClient {
    task: tokio::task::JoinHandle<()>,
    seen: tokio::sync::mpsc::UnboundedReceiver<Seen>,
}

impl PullClient {
    async fn start(client: async_nats::Client, ack: fn(&Seen) -> bool) -> PullClient {
        let js = jetstream::new(client);
        let consumer: consumer::PullConsumer =
            js.get_stream("WORK").await.unwrap().get_consumer("drain").await.expect("the drain consumer");
        // Pulls expire well inside the pin's TTL, so a live client renews its pin.
        let mut messages = consumer
            .stream()
            .group("p0")
            .max_messages_per_batch(5)
            .expires(Duration::from_millis(1000))
            .messages()
            .await
            .expect("a pull stream");
        let (sender, seen_receiver) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Some(message) = messages.next().await {
                let Ok(message) = message else { continue };
                let delivery = seen(&message);
                if ack(&delivery) {
                    message.double_ack().await.expect("acking");
                }
                if sender.send(delivery).is_err() {
                    return;
                }
            }
        });
        PullClient { task, seen: seen_receiver }
    }

    /// The next delivery, waiting at most `bound`.
    async fn next_within(&mut self, bound: Duration) -> Option<Seen> {
        tokio::time::timeout(bound, self.seen.recv()).await.ok().flatten()
    }

    /// Whatever arrived so far, without waiting.
    fn drain(&mut self) -> Vec<Seen> {
        std::iter::from_fn(|| self.seen.try_recv().ok()).collect()
    }
}

/// What the standby client got after the pinned one died mid-batch: each delivery and when, after
/// the drop.
type Takeover = Vec<(Seen, Duration)>;

/// The pinned-drainer scenario on an R3 stream and consumer (pin TTL 4 s, ack wait 10 s, at most
/// `max_ack_pending` unacked, the server's default 1,000 when `None`): messages 1..=10, client A
/// (on node 0) pulls first and is pinned, client B (on node 1) pulls the same group and stays on
/// standby; 11..=13 are published while A lives; A acks 1 and 2 only, then dies (dropped with its
/// connection); 14..=16 are published; B takes over and gets everything A left unacked and the new
/// messages. Returns what B got, in order.
async fn pinned_takeover(max_ack_pending: Option<i64>) -> Takeover {
    let cluster = NatsCluster::start(3).await;
    let admin = cluster.connect().await;
    let js = jetstream::new(admin.clone());
    js.create_stream(r3_stream("WORK", &["work.>"])).await.expect("creating the R3 work stream");
    // Four times the pull expiry, so a client on a busy machine renews its pin in time.
    let pin_ttl = Duration::from_secs(4);
    js.create_consumer_on_stream(
        consumer::pull::Config {
            durable_name: Some("drain".to_string()),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(10),
            max_ack_pending: max_ack_pending.unwrap_or_default(),
            num_replicas: 3,
            priority_policy: consumer::PriorityPolicy::PinnedClient,
            priority_groups: vec!["p0".to_string()],
            priority_timeout: pin_ttl,
            ..Default::default()
        },
        "WORK",
    )
    .await
    .expect("creating the pinned consumer");
    for index in 1..=10 {
        publish_until_acked(&js, "work.p0", &format!("w-{index}"), &index.to_string()).await;
    }

    let mut a = PullClient::start(cluster.connect_to(0).await, |seen| seen.payload == "1" || seen.payload == "2").await;
    let first = a.next_within(Duration::from_secs(10)).await.expect("the first client gets the first message");
    assert_eq!(first.payload, "1");
    let mut b = PullClient::start(cluster.connect_to(1).await, |_| true).await;
    for index in 11..=13 {
        publish_until_acked(&js, "work.p0", &format!("w-{index}"), &index.to_string()).await;
    }
    // A gets messages in order up to the unacked limit (its 2 acks free 2 places).
    let held = max_ack_pending.map_or(11, |limit| limit.min(11) as usize);
    let mut to_a = vec![first];
    while to_a.len() < held + 2 {
        to_a.push(a.next_within(Duration::from_secs(10)).await.expect("the pinned client gets every message it may hold"));
    }
    // Longer than the pin's TTL: A keeps its pin by pulling, B stays on standby, A gets no more.
    tokio::time::sleep(pin_ttl + Duration::from_secs(1)).await;
    assert_eq!(b.drain(), Vec::new(), "the standby client received messages while the pinned one was alive");
    assert_eq!(a.drain(), Vec::new(), "the pinned client got more than its unacked limit");
    let payloads: Vec<String> = to_a.iter().map(|seen| seen.payload.clone()).collect();
    let expected: Vec<String> = (1..=held + 2).map(|index| index.to_string()).collect();
    assert_eq!(payloads, expected);
    let pinned = js.get_stream("WORK").await.unwrap().consumer_info("drain").await.unwrap();
    println!(
        "WORK/drain (max_ack_pending {max_ack_pending:?}) before the drop: {} unacked, groups {:?}",
        pinned.num_ack_pending, pinned.priority_groups
    );
    assert_eq!(pinned.num_ack_pending, held);

    // A dies mid-batch: its task and connection dropped, no more pulls, acks or naks.
    a.task.abort();
    drop(a);
    let dropped = Instant::now();
    for index in 14..=16 {
        publish_until_acked(&js, "work.p0", &format!("w-{index}"), &index.to_string()).await;
    }

    let mut to_b: Takeover = Vec::new();
    let wanted: BTreeSet<String> = (3..=16).map(|index: i32| index.to_string()).collect();
    while to_b.iter().map(|(seen, _)| seen.payload.clone()).collect::<BTreeSet<_>>() != wanted {
        let next = b
            .next_within(Duration::from_secs(20))
            .await
            .unwrap_or_else(|| panic!("the standby client never got every unacked and new message; it got {to_b:?}"));
        to_b.push((next, dropped.elapsed()));
    }
    let order: Vec<String> = to_b
        .iter()
        .map(|(seen, at)| format!("{}(seq {}, delivery {}, +{}ms)", seen.payload, seen.sequence, seen.delivered, at.as_millis()))
        .collect();
    println!("WORK/drain (max_ack_pending {max_ack_pending:?}) after the pinned client died: {}", order.join(", "));
    let after = js.get_stream("WORK").await.unwrap().consumer_info("drain").await.unwrap();
    println!("WORK/drain after the takeover: {} unacked, groups {:?}", after.num_ack_pending, after.priority_groups);
    // Every delivery names its pin: A's one pin, then B's, another one (how a drainer learns that
    // it just took a partition over).
    let a_pins: BTreeSet<Option<String>> = to_a.iter().map(|seen| seen.pin.clone()).collect();
    let b_pins: BTreeSet<Option<String>> = to_b.iter().map(|(seen, _)| seen.pin.clone()).collect();
    assert_eq!(a_pins.len(), 1, "{a_pins:?}");
    assert_eq!(b_pins.len(), 1, "{b_pins:?}");
    assert!(a_pins.iter().chain(&b_pins).all(Option::is_some), "a delivery without Nats-Pin-Id");
    assert_ne!(a_pins, b_pins);
    // What A had received comes again with its delivery count raised. The rest comes for the first
    // time, or for the second: a message published right after A died can still be handed to a pull
    // request A left open (the server learns of the death when the connection closes or the request
    // expires); it comes back to B when its ack wait runs out, like A's batch.
    for (seen, _) in &to_b {
        let index: usize = seen.payload.parse().unwrap();
        if index <= held + 2 {
            assert_eq!(seen.delivered, 2, "{seen:?} was delivered to A before");
        } else {
            assert!(seen.delivered == 1 || (seen.delivered == 2 && index > 13), "{seen:?}");
        }
    }
    to_b
}

#[tokio::test]
async fn a_pinned_pull_client_drains_alone_and_another_takes_over_when_it_dies_mid_batch() {
    // Without an unacked limit the new drainer is handed new messages as soon as it is pinned:
    // they can overtake what the dead one left unacked (redelivered only once its ack wait runs
    // out). The order seen is printed; the design (docs/jetstream-design.md) does not rely on it.
    bounded("the pinned-client test", Duration::from_secs(90), pinned_takeover(None)).await;
}

#[tokio::test]
async fn with_max_ack_pending_a_dead_drainers_unacked_batch_comes_back_before_newer_work() {
    // With the unacked limit reached by the dead drainer's batch, the server hands the new drainer
    // nothing until that batch's ack wait runs out: its first message is one of the dead drainer's,
    // redelivered, and so are all of them before any new one *most* of the time. Not always: each
    // unacked message's ack wait runs out on its own clock (A received them milliseconds apart),
    // and a slot freed by the first redelivery can take a new message before the next expiry (seen
    // once with the machine loaded). So the backend cannot take the order as it comes; its takeover
    // rule holds what arrives for one ack wait and sorts it by stream sequence
    // (docs/jetstream-design.md), which needs only what is asserted here.
    let takeover = bounded("the pinned-client test with max_ack_pending", Duration::from_secs(90), pinned_takeover(Some(5))).await;
    let (first, _) = &takeover[0];
    assert_eq!(first.delivered, 2, "the new drainer's first message is a redelivery of the dead one's batch: {first:?}");
    let redelivered: Vec<u64> = takeover.iter().filter(|(seen, _)| seen.delivered == 2).map(|(seen, _)| seen.sequence).collect();
    assert!(redelivered.is_sorted(), "the dead drainer's batch comes back in sequence order: {redelivered:?}");
    let new: Vec<u64> = takeover.iter().filter(|(seen, _)| seen.delivered == 1).map(|(seen, _)| seen.sequence).collect();
    assert!(new.is_sorted(), "new messages come in sequence order: {new:?}");
}

/// The JetStream API error code in an error's source chain.
fn jetstream_error_code(error: &(dyn std::error::Error + 'static)) -> Option<jetstream::ErrorCode> {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(api) = error.downcast_ref::<jetstream::Error>() {
            return Some(api.error_code());
        }
        current = error.source();
    }
    None
}

#[tokio::test]
async fn kv_compare_and_set_lets_exactly_one_of_two_concurrent_writers_win() {
    bounded("the KV compare-and-set test", Duration::from_secs(60), async {
        let cluster = NatsCluster::start(3).await;
        let js = jetstream::new(cluster.connect().await);
        js.create_key_value(kv::Config { bucket: "state".to_string(), history: 1, num_replicas: 3, ..Default::default() })
            .await
            .expect("creating the R3 state bucket");
        // Two writers, each on its own node, as two stayhook nodes would be. Opening a bucket this
        // new from another node can time out on a loaded machine while its replicas come up:
        // retried a few times, as the backend will.
        let open = async |node: usize| {
            let js = jetstream::new(cluster.connect_to(node).await);
            let mut attempt = 0;
            loop {
                match js.get_key_value("state").await {
                    Ok(store) => break store,
                    Err(error) if attempt < 10 => {
                        eprintln!("opening the bucket on node {node}: {error}; again");
                        attempt += 1;
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Err(error) => panic!("opening the bucket on node {node}: {error}"),
                }
            }
        };
        let writers = [open(0).await, open(1).await];
        let watcher_store = open(2).await;
        let mut watch = watcher_store.watch("acct-1.reservation.r-1").await.expect("watching the key");

        let key = "acct-1.reservation.r-1";
        // A bucket this new can refuse its first write while its replicas come up (a transient
        // error of kind `Other`, seen once in the full suite): retried, as the backend will.
        let mut transient = 0;
        let mut revision = loop {
            match writers[0].create(key, "v0".into()).await {
                Ok(revision) => break revision,
                Err(error) if error.kind() == kv::CreateErrorKind::Other && transient < 20 => {
                    transient += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => panic!("creating the key: {error} (after {transient} transient errors)"),
            }
        };
        // `create` on an existing key fails, from either node.
        // (On refusal the client reads the key to tell a deleted key from a live one; in a bucket
        // this new, that read can meet "503 no responders" while the replicas' direct-get
        // responders come up: a transient error, retried as the backend will.)
        for writer in &writers {
            let mut transient = 0;
            let error = loop {
                let error = writer.create(key, "other".into()).await.expect_err("create on an existing key");
                if error.kind() != kv::CreateErrorKind::Other || transient == 20 {
                    break error;
                }
                transient += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            assert_eq!(error.kind(), kv::CreateErrorKind::AlreadyExists, "{error} (after {transient} transient errors)");
        }

        let mut winners = Vec::new();
        let mut codes = std::collections::BTreeMap::new();
        for round in 0..20 {
            let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(2));
            let attempts = writers.iter().enumerate().map(|(index, writer)| {
                let barrier = barrier.clone();
                let value = format!("round {round} writer {index}");
                async move {
                    barrier.wait().await;
                    (value.clone(), writer.update(key, value.into(), revision).await)
                }
            });
            let results = futures_util::future::join_all(attempts).await;
            let mut won = None;
            for (value, result) in results {
                match result {
                    Ok(new_revision) => {
                        assert!(won.is_none(), "round {round}: both writers won on revision {revision}");
                        won = Some((value, new_revision));
                    }
                    Err(error) => {
                        // The server refuses the loser with "wrong last sequence", under one of
                        // two codes: 10071 (async-nats's `WrongLastRevision`) when the winner's
                        // write was applied before, 10164 (`Other` in async-nats 0.52) when it was
                        // still being proposed. Both mean "lost the compare-and-set".
                        let code = jetstream_error_code(&error).unwrap_or_else(|| panic!("round {round}: {error} has no JetStream code"));
                        assert!(
                            code == jetstream::ErrorCode::STREAM_WRONG_LAST_SEQUENCE
                                || code == jetstream::ErrorCode::STREAM_WRONG_LAST_SEQUENCE_CONSTANT,
                            "round {round}: {error}"
                        );
                        assert!(error.to_string().contains("wrong last sequence"), "{error}");
                        *codes.entry(code.0).or_insert(0) += 1;
                    }
                }
            }
            let (value, new_revision) = won.unwrap_or_else(|| panic!("round {round}: neither writer won on revision {revision}"));
            assert!(new_revision > revision);
            revision = new_revision;
            winners.push(value);
        }
        println!("state: 20 rounds of two concurrent updates, the losers' error codes: {codes:?}");
        // The stored value is the last winner's, and a watcher (on the third node) saw each winning
        // write once, in revision order, and nothing else.
        let stored = writers[1].get(key).await.unwrap().expect("the key");
        assert_eq!(String::from_utf8_lossy(&stored), *winners.last().unwrap());
        // The watch delivers winning writes in revision order, ending at the last winner. With
        // history 1 a revision replaced before the watcher read it is gone: it may skip some.
        let expected: Vec<String> = std::iter::once("v0".to_string()).chain(winners.iter().cloned()).collect();
        let mut watched: Vec<(u64, String)> = Vec::new();
        while watched.last().is_none_or(|(_, value)| value != expected.last().unwrap()) {
            let entry = bounded("the watch", Duration::from_secs(10), watch.next()).await.expect("a watch entry").expect("a watch entry");
            watched.push((entry.revision, String::from_utf8_lossy(&entry.value).into_owned()));
        }
        println!("state: the watcher saw {} of {} writes", watched.len(), expected.len());
        let positions: Vec<usize> = watched
            .iter()
            .map(|(_, value)| {
                expected.iter().position(|written| written == value).unwrap_or_else(|| panic!("the watch saw {value:?}, never written"))
            })
            .collect();
        assert!(positions.windows(2).all(|pair| pair[0] < pair[1]), "the watch went back: {watched:?}");
        assert!(watched.windows(2).all(|pair| pair[0].0 < pair[1].0), "revisions not increasing: {watched:?}");
    })
    .await;
}

#[tokio::test]
async fn unacked_and_nacked_work_is_redelivered_on_the_backoff_schedule_then_a_max_deliveries_advisory_names_it() {
    bounded("the backoff test", Duration::from_secs(60), async {
        let cluster = NatsCluster::start(3).await;
        let client = cluster.connect().await;
        let js = jetstream::new(client.clone());
        js.create_stream(r3_stream("DELIVERIES", &["deliveries.>"])).await.expect("creating the R3 deliveries stream");
        let backoff = vec![Duration::from_secs(1), Duration::from_secs(2)];
        let max_deliver = 3;
        js.create_consumer_on_stream(
            consumer::pull::Config {
                durable_name: Some("send".to_string()),
                ack_policy: consumer::AckPolicy::Explicit,
                backoff: backoff.clone(),
                max_deliver,
                max_ack_pending: 100,
                num_replicas: 3,
                ..Default::default()
            },
            "DELIVERIES",
        )
        .await
        .expect("creating the consumer with backoff");
        let advisory_subject = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.DELIVERIES.send";
        let mut advisories = client.subscribe(advisory_subject).await.expect("subscribing to the advisory");
        // A stream keeps the advisories too (a core-NATS message is lost when nobody listens).
        js.create_stream(r3_stream("ADVISORIES", &[advisory_subject])).await.expect("creating a stream of advisories");
        client.flush().await.unwrap();

        // One delivery is never answered (its ack wait runs out), one is nacked each time, one is
        // nacked with a delay of its own (as a node keeping its own retry schedule would).
        let (silent, _) = publish_until_acked(&js, "deliveries.s1", "d-silent", "silent").await;
        let (nacked, _) = publish_until_acked(&js, "deliveries.s1", "d-nacked", "nacked").await;
        let (delayed, _) = publish_until_acked(&js, "deliveries.s1", "d-delayed", "delayed").await;
        let nak_delay = Duration::from_secs(3);
        let consumer: consumer::PullConsumer = js.get_stream("DELIVERIES").await.unwrap().get_consumer("send").await.unwrap();
        let mut messages = consumer.messages().await.expect("a pull stream");
        let started = Instant::now();
        let mut times: std::collections::BTreeMap<u64, Vec<(i64, Duration)>> = Default::default();
        // Per delayed delivery, when its nak went out (the server's delay starts then).
        let mut naked_at: Vec<Duration> = Vec::new();
        // Each message's publish time on the server's clock (this machine's), in ns since the epoch.
        let mut published_ns: std::collections::BTreeMap<u64, i128> = Default::default();
        while times.values().map(Vec::len).sum::<usize>() < 3 * max_deliver as usize {
            let message = bounded("a redelivery", Duration::from_secs(15), messages.next()).await.expect("a message").expect("a message");
            let delivery = seen(&message);
            times.entry(delivery.sequence).or_default().push((delivery.delivered, started.elapsed()));
            published_ns.insert(delivery.sequence, message.info().expect("a JetStream message").published.unix_timestamp_nanos());
            match delivery.payload.as_str() {
                "nacked" => message.ack_with(AckKind::Nak(None)).await.expect("nacking"),
                "delayed" => {
                    message.ack_with(AckKind::Nak(Some(nak_delay))).await.expect("nacking with a delay");
                    naked_at.push(started.elapsed());
                }
                _ => {}
            }
        }
        println!("DELIVERIES/send deliveries (backoff {backoff:?}, max_deliver {max_deliver}): {times:?}");
        for sequence in [silent.sequence, nacked.sequence, delayed.sequence] {
            let deliveries = &times[&sequence];
            let counts: Vec<i64> = deliveries.iter().map(|(count, _)| *count).collect();
            assert_eq!(counts, [1, 2, 3], "sequence {sequence}");
        }
        // The unanswered delivery comes back no sooner than its backoff steps (the server never
        // redelivers early; how much later depends on the machine, so only the lower bound). A
        // step starts when the server sends a delivery, which this task may see late on a loaded
        // machine, so the bound is taken from the message's publish time (the server's clock, on
        // this machine): delivery k+1 is seen no sooner than the first k steps after it.
        let silent_times = &times[&silent.sequence];
        let since_epoch = |instant: Duration| {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
            i128::try_from((now - started.elapsed() + instant).as_nanos()).unwrap()
        };
        for step in 0..backoff.len() {
            let due: Duration = backoff[..=step].iter().sum();
            let seen_after_ns = since_epoch(silent_times[step + 1].1) - published_ns[&silent.sequence];
            assert!(
                seen_after_ns + 50_000_000 >= i128::try_from(due.as_nanos()).unwrap(),
                "redelivery {} of the unanswered message {} ms after its publication, backoff steps {backoff:?}",
                step + 2,
                seen_after_ns / 1_000_000
            );
        }

        // A nak with a delay comes back no sooner than that delay, whatever the backoff says (a
        // nak without one comes back at once: printed above).
        // Measured from when the nak went out, when the server's delay starts.
        let delayed_times = &times[&delayed.sequence];
        for step in 0..2 {
            let gap = delayed_times[step + 1].1 - naked_at[step];
            assert!(gap + Duration::from_millis(50) >= nak_delay, "redelivery {} of the delayed nak {gap:?} after the nak", step + 2);
        }

        // After max_deliver, one advisory per message with its stream sequence; no fourth delivery.
        let mut advised = BTreeSet::new();
        while advised.len() < 3 {
            let advisory = bounded("the MAX_DELIVERIES advisory", Duration::from_secs(15), advisories.next()).await.expect("an advisory");
            let advisory: Value = serde_json::from_slice(&advisory.payload).expect("an advisory is JSON");
            println!("DELIVERIES/send advisory: {advisory}");
            assert_eq!(advisory["type"], "io.nats.jetstream.advisory.v1.max_deliver");
            assert_eq!(advisory["stream"], "DELIVERIES");
            assert_eq!(advisory["consumer"], "send");
            assert_eq!(advisory["deliveries"], max_deliver);
            advised.insert(advisory["stream_seq"].as_u64().expect("stream_seq"));
        }
        assert_eq!(advised, BTreeSet::from([silent.sequence, nacked.sequence, delayed.sequence]));
        // The stream stores each advisory by a replicated write that can land a moment after the
        // subscriber above received it: wait (bounded) for the third.
        let mut kept = js.get_stream("ADVISORIES").await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let kept_state = loop {
            let state = kept.info().await.unwrap().state.clone();
            if state.messages >= 3 || Instant::now() > deadline {
                break state;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(kept_state.messages, 3, "the advisories stream: {kept_state:?}");
        let mut kept_sequences = BTreeSet::new();
        for sequence in kept_state.first_sequence..=kept_state.last_sequence {
            let advisory: Value = serde_json::from_slice(&kept.get_raw_message(sequence).await.unwrap().payload).unwrap();
            kept_sequences.insert(advisory["stream_seq"].as_u64().expect("stream_seq"));
        }
        assert_eq!(kept_sequences, advised);
        if let Ok(Some(extra)) = tokio::time::timeout(Duration::from_millis(500), messages.next()).await {
            panic!("a delivery after max_deliver: {:?}", extra.map(|message| seen(&message)));
        }
        // The messages stay in the stream (the dead letter's body is still readable by sequence).
        let stream = js.get_stream("DELIVERIES").await.unwrap();
        assert_eq!(stream.get_raw_message(silent.sequence).await.unwrap().payload, "silent");
    })
    .await;
}

/// SIGKILL the single node and start it again on its store: how long until it is healthy, and
/// its resident memory then (KiB).
async fn sigkill_and_restart(cluster: &mut NatsCluster) -> (Duration, u64) {
    cluster.kill(0);
    let killed = Instant::now();
    cluster.restart(0).await;
    let restart = killed.elapsed();
    (restart, rss_kib(cluster.pid(0)))
}

/// The resident memory of a process, in KiB (`VmRSS` of `/proc/<pid>/status`).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("reading /proc/<pid>/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}

/// A measurement, not a test (`cargo test --release --test it duplicate_window_memory -- --ignored
/// --nocapture`): what a long duplicate window costs the server. One node, one R1 stream, 200,000
/// webhook-sized messages published with unique 80-character `Nats-Msg-Id`s inside a 24 h window,
/// against the same without ids: the server's resident memory after each, and how long the node
/// takes to be healthy again after a SIGKILL (it rebuilds the window's ids from the stream).
#[tokio::test]
#[ignore = "a measurement for docs/jetstream-design.md, not a test"]
async fn duplicate_window_memory() {
    const MESSAGES: usize = 200_000;
    for with_ids in [false, true] {
        let mut cluster = NatsCluster::single().await;
        let js = jetstream::new(cluster.connect().await);
        let config = stream::Config {
            name: "DW".to_string(),
            subjects: vec!["dw.>".to_string()],
            duplicate_window: Duration::from_secs(24 * 3600),
            storage: stream::StorageType::File,
            ..Default::default()
        };
        js.create_stream(config).await.unwrap();
        let before = rss_kib(cluster.pid(0));
        let body = "x".repeat(2000);
        let started = Instant::now();
        for chunk in 0..MESSAGES / 1000 {
            let mut acks = Vec::with_capacity(1000);
            for index in chunk * 1000..(chunk + 1) * 1000 {
                let mut publish = Publish::build().payload(body.clone().into());
                if with_ids {
                    publish = publish.message_id(format!("acct-{:04}.{index:064x}", index % 500));
                }
                acks.push(js.send_publish(format!("dw.{}", index % 32), publish).await.unwrap());
            }
            for ack in acks {
                ack.await.unwrap();
            }
        }
        let published = started.elapsed();
        let after = rss_kib(cluster.pid(0));
        let (restart, after_restart) = sigkill_and_restart(&mut cluster).await;
        println!(
            "duplicate window 24 h, {MESSAGES} messages of 2 KB {}: published in {published:?}; server RSS {} MiB before, {} MiB after, {} MiB after a SIGKILL and restart (healthy again in {restart:?})",
            if with_ids { "with unique Nats-Msg-Ids" } else { "without ids" },
            before / 1024,
            after / 1024,
            after_restart / 1024
        );
    }
}

/// One raw pull request (`$JS.API.CONSUMER.MSG.NEXT.WORK.drain`, the JSON body the clients send)
/// on `client`, answered on `inbox`.
async fn raw_pull(client: &async_nats::Client, inbox: &str, body: Value) {
    client
        .publish_with_reply("$JS.API.CONSUMER.MSG.NEXT.WORK.drain", inbox.to_string(), body.to_string().into())
        .await
        .expect("sending a pull request");
    client.flush().await.expect("flushing a pull request");
}

#[tokio::test]
async fn a_stale_pin_is_refused_with_423_and_progress_holds_a_pinned_message_past_its_ack_wait() {
    bounded("the raw pinned-pull test", Duration::from_secs(60), async {
        let cluster = NatsCluster::single().await;
        let js = jetstream::new(cluster.connect().await);
        js.create_stream(stream::Config { num_replicas: 1, ..r3_stream("WORK", &["work.>"]) }).await.expect("creating the work stream");
        let ack_wait = Duration::from_secs(2);
        js.create_consumer_on_stream(
            consumer::pull::Config {
                durable_name: Some("drain".to_string()),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait,
                priority_policy: consumer::PriorityPolicy::PinnedClient,
                priority_groups: vec!["p0".to_string()],
                priority_timeout: Duration::from_secs(5),
                ..Default::default()
            },
            "WORK",
        )
        .await
        .expect("creating the pinned consumer");
        publish_until_acked(&js, "work.p0", "w-1", "1").await;

        // X pulls without a pin id and is pinned: the message names the pin.
        let x = cluster.connect().await;
        let x_inbox = x.new_inbox();
        let mut x_replies = x.subscribe(x_inbox.clone()).await.unwrap();
        raw_pull(&x, &x_inbox, serde_json::json!({"batch": 1, "expires": 1_000_000_000u64, "group": "p0"})).await;
        let held = bounded("the first pull", Duration::from_secs(10), x_replies.next()).await.expect("a message");
        assert_eq!(held.status, None, "{held:?}");
        assert_eq!(held.payload, "1");
        let pin = held.headers.as_ref().and_then(|headers| headers.get("Nats-Pin-Id")).expect("a Nats-Pin-Id").to_string();
        let reply = held.reply.clone().expect("an ack subject");

        // Y pulls with a pin id that is not the current one: refused with 423.
        let y = cluster.connect().await;
        let y_inbox = y.new_inbox();
        let mut y_replies = y.subscribe(y_inbox.clone()).await.unwrap();
        raw_pull(&y, &y_inbox, serde_json::json!({"batch": 1, "expires": 1_000_000_000u64, "group": "p0", "id": "not-the-pin"})).await;
        let refused = bounded("the stale pin's answer", Duration::from_secs(10), y_replies.next()).await.expect("an answer");
        println!("WORK/drain: a pull with a stale pin id is answered {:?} {:?}", refused.status, refused.description);
        assert_eq!(refused.status.map(|status| status.as_u16()), Some(423));

        // X holds the message for 2.5 ack waits, sending `+WPI` (in progress) every half ack wait and
        // pulling with its pin id to keep the pin: the message is never redelivered.
        let holding = Instant::now();
        while holding.elapsed() < ack_wait * 5 / 2 {
            x.publish(reply.clone(), "+WPI".into()).await.unwrap();
            raw_pull(&x, &x_inbox, serde_json::json!({"batch": 1, "expires": (ack_wait.as_nanos() / 2) as u64, "group": "p0", "id": pin}))
                .await;
            while let Ok(Some(answer)) = tokio::time::timeout(ack_wait / 2 + Duration::from_millis(200), x_replies.next()).await {
                assert!(answer.status.is_some(), "redelivered although in progress: {answer:?}");
                if answer.status.is_some_and(|status| status.as_u16() == 408) {
                    break;
                }
            }
        }
        x.publish(reply, "+ACK".into()).await.unwrap();
        x.flush().await.unwrap();
        let info = js.get_stream("WORK").await.unwrap().consumer_info("drain").await.unwrap();
        assert_eq!(info.num_redelivered, 0, "{info:?}");
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut info = info;
        while info.num_ack_pending != 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            info = js.get_stream("WORK").await.unwrap().consumer_info("drain").await.unwrap();
        }
        assert_eq!(info.num_ack_pending, 0, "the ack after the progress reports: {info:?}");
    })
    .await;
}

/// A measurement, not a test (`cargo test --release --test it dedup_bucket_memory -- --ignored
/// --nocapture`): the design's alternative for a duplicate window longer than the stream's, a KV
/// bucket with a per-key TTL where each webhook's digest is one atomic `create` (the loser of two
/// nodes racing on one digest gets `AlreadyExists`). One node, 200,000 unique 80-character keys
/// with an 8-byte value (the inbox id) and a 24 h TTL, created 1,000 at a time: the time, the
/// server's resident memory, and its restart after a SIGKILL, to set beside
/// `duplicate_window_memory`.
#[tokio::test]
#[ignore = "a measurement for docs/jetstream-design.md, not a test"]
async fn dedup_bucket_memory() {
    const KEYS: usize = 200_000;
    let mut cluster = NatsCluster::single().await;
    let js = jetstream::new(cluster.connect().await);
    let bucket = js
        .create_key_value(kv::Config {
            bucket: "SH_DEDUP".to_string(),
            history: 1,
            storage: stream::StorageType::File,
            limit_markers: Some(Duration::from_secs(60)),
            ..Default::default()
        })
        .await
        .expect("a bucket with per-key TTLs");
    let before = rss_kib(cluster.pid(0));
    let started = Instant::now();
    for chunk in 0..KEYS / 1000 {
        let creates = (chunk * 1000..(chunk + 1) * 1000).map(|index| {
            let bucket = bucket.clone();
            async move {
                let key = format!("acct-{:04}.{index:064x}", index % 500);
                bucket.create_with_ttl(key, bytes::Bytes::from((index as u64).to_be_bytes().to_vec()), Duration::from_secs(24 * 3600)).await
            }
        });
        for created in futures_util::future::join_all(creates).await {
            created.expect("a new digest is created");
        }
    }
    let created = started.elapsed();
    // A second create of a stored digest is refused: the duplicate answer.
    let again = bucket.create_with_ttl(format!("acct-0000.{:064x}", 0), bytes::Bytes::from_static(b"x"), Duration::from_secs(60)).await;
    assert!(again.is_err(), "a stored digest is created once");
    let after = rss_kib(cluster.pid(0));
    let (restart, after_restart) = sigkill_and_restart(&mut cluster).await;
    println!(
        "dedup bucket, {KEYS} keys with a 24 h TTL: created in {created:?}; server RSS {} MiB before, {} MiB after, {} MiB after a SIGKILL and restart (healthy again in {restart:?})",
        before / 1024,
        after / 1024,
        after_restart / 1024
    );
}
