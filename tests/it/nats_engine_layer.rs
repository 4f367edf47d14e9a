//! The NATS backend's engine layer (`stayhook::store::nats`, issue 14) against a real 3-node
//! JetStream cluster: provisioning from several nodes at once, the durable append with its
//! duplicate window across a stream leader's SIGKILL, and the partition feed keeping per-account
//! order across two nodes, a drainer's death mid-batch and a drainer that lost its pin.
//! Small ack waits and pin TTLs keep each test well under a minute; nothing asserts a timing.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use stayhook::store::nats::engine::INBOX_STREAM;
use stayhook::store::nats::{Engine, FeedBatch, FeedHandler, FeedItem, NatsConfig, NatsError, PartitionFeed, partition_of};
use stayhook::store::{Appended, InboxEntry, InboxId};

use crate::support::NatsCluster;

/// Run `future`, panicking with `what` when it takes longer than `bound`.
async fn bounded<T>(what: &str, bound: Duration, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(bound, future).await.unwrap_or_else(|_| panic!("{what}: not done within {bound:?}"))
}

/// Wait (bounded) until `condition` holds.
async fn wait_until(what: &str, bound: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + bound;
    while !condition() {
        assert!(Instant::now() < deadline, "{what}: not within {bound:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The test config: R3, small ack wait and pin TTL.
fn config(cluster: &NatsCluster, partitions: u32) -> NatsConfig {
    NatsConfig {
        urls: cluster.urls(),
        replicas: 3,
        partitions,
        ack_wait: Duration::from_secs(4),
        pin_ttl: Duration::from_secs(2),
        batch: 16,
        ..NatsConfig::default()
    }
}

async fn connect(config: NatsConfig) -> Engine {
    bounded("connecting an engine", Duration::from_secs(60), Engine::connect(config)).await.expect("an engine")
}

/// Webhook `index` of an account, and its digest.
fn webhook(account_id: &str, index: usize) -> (InboxEntry, Vec<u8>) {
    let body = format!("{{\"account\":\"{account_id}\",\"n\":{index}}}").into_bytes();
    let entry = InboxEntry {
        account_id: account_id.to_string(),
        received_at_ms: 1_765_000_000_000 + index as u64,
        method: "POST".to_string(),
        query: format!("n={index}"),
        content_type: Some("application/json".to_string()),
        headers: vec![("x-index".to_string(), index.to_string())],
        body: body.clone(),
    };
    (entry, Sha256::digest(&body).to_vec())
}

/// Append until acknowledged, as a PMS retrying the same webhook would.
async fn append_until_acked(engine: &Engine, entry: &InboxEntry, digest: &[u8]) -> (Appended, usize) {
    let mut failed = 0;
    loop {
        match engine.append(entry, digest).await {
            Ok(appended) => return (appended, failed),
            Err(NatsError::Unavailable(reason)) => {
                failed += 1;
                assert!(failed < 20, "appending: unavailable {failed} times, last: {reason}");
            }
            Err(error) => panic!("appending: {error}"),
        }
    }
}

fn sequence(appended: Appended) -> u64 {
    match appended {
        Appended::New(InboxId(sequence)) | Appended::Duplicate(Some(InboxId(sequence))) => sequence,
        Appended::Duplicate(None) => panic!("a duplicate without its original"),
    }
}

#[tokio::test]
async fn two_nodes_provision_at_once_and_an_incompatible_one_is_told_what_differs() {
    bounded("the provisioning test", Duration::from_secs(120), async {
        let cluster = NatsCluster::start(3).await;
        let (a, b) = tokio::join!(Engine::connect(config(&cluster, 4)), Engine::connect(config(&cluster, 4)));
        let (a, b) = (a.expect("the first of two engines starting at once"), b.expect("the second of two engines starting at once"));
        assert_eq!((a.partitions(), b.partitions()), (4, 4));

        // A node configured with another partition count uses the cluster's.
        let other = connect(NatsConfig { partitions: 9, ..config(&cluster, 4) }).await;
        assert_eq!(other.partitions(), 4);

        // R1 against the R3 streams: refused, naming the stream and the field.
        let error = Engine::connect(NatsConfig { replicas: 1, ..config(&cluster, 4) }).await.expect_err("an R1 node on an R3 cluster");
        println!("an R1 node: {error}");
        match &error {
            NatsError::Incompatible { object, differences } => {
                assert_eq!(object, INBOX_STREAM);
                assert!(differences.iter().any(|difference| difference == "num_replicas: existing 3, this node wants 1"), "{error}");
            }
            other => panic!("not Incompatible: {other}"),
        }
        // Another ack wait: refused, naming the consumer.
        let error = Engine::connect(NatsConfig { ack_wait: Duration::from_secs(9), ..config(&cluster, 4) })
            .await
            .expect_err("a node with another ack wait");
        println!("another ack wait: {error}");
        match &error {
            NatsError::Incompatible { object, differences } => {
                assert_eq!(object, "consumer in-0 of SH_INBOX");
                assert_eq!(differences, &["ack_wait: existing 4s, this node wants 9s".to_string()]);
            }
            other => panic!("not Incompatible: {other}"),
        }
        // A URL nobody listens on: a clear error naming it.
        let error =
            Engine::connect(NatsConfig { urls: vec!["nats://127.0.0.1:1".to_string()], connect_attempts: 2, ..config(&cluster, 4) })
                .await
                .expect_err("no server");
        assert!(matches!(&error, NatsError::Unavailable(reason) if reason.contains("nats://127.0.0.1:1")), "{error}");
    })
    .await;
}

#[tokio::test]
async fn appends_are_deduplicated_and_every_acknowledged_one_survives_a_sigkill_of_the_inbox_leader() {
    bounded("the append test", Duration::from_secs(120), async {
        let mut cluster = NatsCluster::start(3).await;
        let engine = connect(config(&cluster, 4)).await;

        // A second append of one digest answers the first one's sequence and stores nothing.
        let (entry, digest) = webhook("acct-1", 0);
        let first = engine.append(&entry, &digest).await.expect("the first append");
        let Appended::New(InboxId(first_sequence)) = first else { panic!("the first append: {first:?}") };
        assert_eq!(engine.append(&entry, &digest).await.expect("the second append"), Appended::Duplicate(Some(InboxId(first_sequence))));
        // The same digest for another account is another webhook.
        let (mut other, _) = webhook("acct 2.odd", 0);
        other.body = entry.body.clone();
        let Appended::New(InboxId(other_sequence)) = engine.append(&other, &digest).await.unwrap() else {
            panic!("another account's append")
        };
        let stored = engine.get_inbox(first_sequence).await.unwrap().expect("the first entry");
        assert_eq!(format!("{:?}", stored.entry), format!("{entry:?}"));
        assert_eq!(stored.partition, partition_of("acct-1", 4));
        let stored = engine.get_inbox(other_sequence).await.unwrap().expect("the other account's entry");
        assert_eq!(stored.entry.account_id, "acct 2.odd");
        assert!(engine.get_inbox(10_000).await.unwrap().is_none());

        // Appends run on while the inbox stream's leader is SIGKILLed.
        let acknowledged: Arc<Mutex<BTreeMap<usize, u64>>> = Default::default();
        let stop = Arc::new(AtomicBool::new(false));
        let appender = tokio::spawn({
            let (engine, acknowledged, stop) = (engine.clone(), acknowledged.clone(), stop.clone());
            async move {
                let mut failed_total = 0;
                for index in 1.. {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let (entry, digest) = webhook(&format!("acct-{}", index % 12), index);
                    let (appended, failed) = append_until_acked(&engine, &entry, &digest).await;
                    failed_total += failed;
                    acknowledged.lock().unwrap().insert(index, sequence(appended));
                }
                failed_total
            }
        });
        let count = || acknowledged.lock().unwrap().len();
        wait_until("20 appends before the kill", Duration::from_secs(20), || count() >= 20).await;
        let client = cluster.connect().await;
        let leader = cluster.stream_leader(&client, INBOX_STREAM).await;
        let killed = cluster.node_named(&leader);
        cluster.kill(killed);
        let at_kill = count();
        let new_leader = cluster.wait_new_leader(&client, INBOX_STREAM, &leader).await;
        println!("SH_INBOX: leader {leader} killed after {at_kill} appends, {new_leader} elected");
        wait_until("20 appends after the election", Duration::from_secs(40), || count() >= at_kill + 20).await;
        stop.store(true, Ordering::SeqCst);
        let failed = appender.await.unwrap();
        println!("appends: {} acknowledged, {failed} answered Unavailable and were retried", count());

        // Every acknowledged append is stored, once, under its sequence.
        let acknowledged = acknowledged.lock().unwrap().clone();
        let sequences: BTreeSet<u64> = acknowledged.values().copied().collect();
        assert_eq!(sequences.len(), acknowledged.len(), "two appends answered the same sequence");
        for (index, sequence) in &acknowledged {
            let stored = engine.get_inbox(*sequence).await.unwrap().unwrap_or_else(|| panic!("append {index} (seq {sequence}) lost"));
            assert_eq!(stored.entry.body, webhook(&format!("acct-{}", index % 12), *index).0.body, "seq {sequence}");
        }
        let mut stream = engine.jetstream().get_stream(INBOX_STREAM).await.unwrap();
        let messages = stream.info().await.unwrap().state.messages;
        assert_eq!(messages, acknowledged.len() as u64 + 2, "stored messages: the acknowledged appends and the first two, once each");
    })
    .await;
}

/// What handlers on several nodes saw, in the order it happened.
#[derive(Default)]
struct Journal {
    /// (node, sequence, account, delivered) for every item handed to a handler.
    handled: Vec<(usize, u64, String, u64)>,
    /// (node, sequence, account) for every ack the server confirmed.
    acked: Vec<(usize, u64, String)>,
    /// (node, sequence, error) for every ack refused.
    refused: Vec<(usize, u64, NatsError)>,
}

/// A handler that commits nothing: it records each item and acks it, unless told to hold
/// (`holding`): then it keeps the item unacked, as a drainer dying mid-batch would.
struct Recorder {
    node: usize,
    journal: Arc<Mutex<Journal>>,
    holding: AtomicBool,
    held: Mutex<Vec<FeedItem>>,
}

impl Recorder {
    fn new(node: usize, journal: &Arc<Mutex<Journal>>) -> Arc<Recorder> {
        Arc::new(Recorder { node, journal: journal.clone(), holding: AtomicBool::new(false), held: Mutex::new(Vec::new()) })
    }

    fn n_held(&self) -> usize {
        self.held.lock().unwrap().len()
    }
}

impl FeedHandler for Recorder {
    async fn handle(&self, batch: FeedBatch) {
        for item in batch.items {
            let account = item.entry.as_ref().map(|stored| stored.entry.account_id.clone()).expect("every fed message decodes");
            self.journal.lock().unwrap().handled.push((self.node, item.sequence, account.clone(), item.delivered));
            if self.holding.load(Ordering::SeqCst) {
                self.held.lock().unwrap().push(item);
                continue;
            }
            // A commit takes a moment.
            tokio::time::sleep(Duration::from_millis(2)).await;
            let sequence = item.sequence;
            match item.ack.ack().await {
                Ok(()) => self.journal.lock().unwrap().acked.push((self.node, sequence, account)),
                Err(error) => self.journal.lock().unwrap().refused.push((self.node, sequence, error)),
            }
        }
    }
}

/// Three accounts per partition: (account, partition).
fn accounts(partitions: u32) -> Vec<String> {
    let mut per_partition: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for index in 0.. {
        let account = format!("acct-{index}");
        let slot = per_partition.entry(partition_of(&account, partitions)).or_default();
        if slot.len() < 3 {
            slot.push(account);
        }
        if per_partition.len() == partitions as usize && per_partition.values().all(|accounts| accounts.len() == 3) {
            break;
        }
    }
    let mut accounts: Vec<String> = per_partition.into_values().flatten().collect();
    accounts.sort();
    accounts
}

/// For each account, the acked sequences in the order they were acked, which must increase.
#[track_caller]
fn assert_per_account_order(journal: &Journal) {
    let mut last: BTreeMap<&str, u64> = BTreeMap::new();
    for (node, sequence, account) in &journal.acked {
        if let Some(previous) = last.insert(account, *sequence) {
            assert!(previous < *sequence, "{account}: seq {sequence} acked (node {node}) after seq {previous}");
        }
    }
}

#[tokio::test]
async fn the_feed_keeps_per_account_order_across_two_nodes_and_a_drainer_dying_mid_batch() {
    bounded("the feed takeover test", Duration::from_secs(120), async {
        const PARTITIONS: u32 = 4;
        let cluster = NatsCluster::start(3).await;
        let publisher = connect(config(&cluster, PARTITIONS)).await;
        let accounts = accounts(PARTITIONS);
        let journal: Arc<Mutex<Journal>> = Default::default();

        // Node A drains alone at first: it is pinned on every partition.
        let engine_a = connect(config(&cluster, PARTITIONS)).await;
        let recorder_a = Recorder::new(0, &journal);
        let feed_a = PartitionFeed::start(&engine_a, recorder_a.clone()).await.expect("feed A");
        let mut published: Vec<u64> = Vec::new();
        for index in 0..48 {
            let (entry, digest) = webhook(&accounts[index % accounts.len()], index);
            published.push(sequence(append_until_acked(&publisher, &entry, &digest).await.0));
        }
        wait_until("A pinned on every partition", Duration::from_secs(20), || feed_a.pinned().len() == PARTITIONS as usize).await;

        // Node B joins while webhooks keep coming, round-robin over the accounts; A lets it have
        // two partitions (spreading), and both drain.
        let engine_b = connect(config(&cluster, PARTITIONS)).await;
        let recorder_b = Recorder::new(1, &journal);
        let feed_b = PartitionFeed::start(&engine_b, recorder_b.clone()).await.expect("feed B");
        let stop = Arc::new(AtomicBool::new(false));
        let publishing = tokio::spawn({
            let (publisher, accounts, stop) = (publisher.clone(), accounts.clone(), stop.clone());
            async move {
                let mut published = Vec::new();
                for index in 48.. {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let (entry, digest) = webhook(&accounts[index % accounts.len()], index);
                    published.push(sequence(append_until_acked(&publisher, &entry, &digest).await.0));
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                published
            }
        });
        wait_until("B draining two partitions", Duration::from_secs(45), || feed_b.pinned().len() == 2).await;

        // A dies mid-batch: it stops acking, holds what it receives, and is dropped with its
        // connection once it holds some; publishing goes on for a while.
        recorder_a.holding.store(true, Ordering::SeqCst);
        wait_until("A holding unacked messages", Duration::from_secs(20), || recorder_a.n_held() >= 3).await;
        println!("A dies holding partitions {:?}, B holds {:?}", feed_a.pinned(), feed_b.pinned());
        drop(feed_a);
        drop(engine_a);
        let held_by_a: BTreeSet<u64> = recorder_a.held.lock().unwrap().drain(..).map(|item| item.sequence).collect();
        println!("A died holding {} unacked: {held_by_a:?}", held_by_a.len());
        tokio::time::sleep(Duration::from_secs(2)).await;
        stop.store(true, Ordering::SeqCst);
        published.extend(publishing.await.unwrap());
        let n_published = published.len();
        wait_until("every message acked after the takeover", Duration::from_secs(60), || {
            journal.lock().unwrap().acked.iter().map(|(_, sequence, _)| *sequence).collect::<BTreeSet<_>>().len() >= n_published
        })
        .await;
        // Nothing more comes (a duplicate would show within a moment of the last ack).
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(feed_b.pinned().len(), PARTITIONS as usize, "B drains every partition");

        let journal = journal.lock().unwrap();
        // Every message acked exactly once.
        let mut acked_count: BTreeMap<u64, usize> = BTreeMap::new();
        for (_, sequence, _) in &journal.acked {
            *acked_count.entry(*sequence).or_default() += 1;
        }
        assert_eq!(acked_count.keys().copied().collect::<Vec<_>>(), published, "acked sequences");
        assert!(acked_count.values().all(|count| *count == 1), "a message acked twice");
        // Handled twice: only what A held unacked when it died, or what a node's ack was refused for
        // (a pin lost to the other node: none when the machine keeps up, some when it stalls a
        // puller for longer than the pin's TTL).
        let refused: BTreeSet<u64> = journal.refused.iter().map(|(_, sequence, _)| *sequence).collect();
        let unacked: BTreeSet<u64> = held_by_a.union(&refused).copied().collect();
        let mut handled_count: BTreeMap<u64, usize> = BTreeMap::new();
        for (_, sequence, _, _) in &journal.handled {
            *handled_count.entry(*sequence).or_default() += 1;
        }
        let twice: BTreeSet<u64> = handled_count.iter().filter(|(_, count)| **count > 1).map(|(sequence, _)| *sequence).collect();
        assert!(twice.is_subset(&unacked), "handled twice but neither held by A nor refused: {:?}", twice.difference(&unacked));
        let by_b_redelivered = journal.handled.iter().filter(|(node, _, _, delivered)| *node == 1 && *delivered > 1).count();
        println!(
            "{} messages, {} handled twice, {} acks refused, B handled {} redeliveries, A acked {}, B acked {}",
            n_published,
            twice.len(),
            refused.len(),
            by_b_redelivered,
            journal.acked.iter().filter(|(node, _, _)| *node == 0).count(),
            journal.acked.iter().filter(|(node, _, _)| *node == 1).count()
        );
        assert_per_account_order(&journal);
    })
    .await;
}

#[tokio::test]
async fn a_drainer_that_lost_its_pin_takes_nothing_new_and_its_acks_are_refused() {
    bounded("the stale drainer test", Duration::from_secs(120), async {
        let mut cluster = NatsCluster::start(3).await;
        let publisher = connect(config(&cluster, 1)).await;
        let journal: Arc<Mutex<Journal>> = Default::default();
        // A reaches the cluster through one server, not the inbox's leader.
        let client = cluster.connect().await;
        let leader = cluster.stream_leader(&client, INBOX_STREAM).await;
        let a_server = (0..cluster.size()).find(|node| cluster.name(*node) != leader).unwrap();
        let b_servers: Vec<String> = (0..cluster.size()).filter(|node| *node != a_server).map(|node| cluster.url(node)).collect();

        // A is pinned and holds webhook 0 unacked (its commit is slow).
        let engine_a = connect(NatsConfig { urls: vec![cluster.url(a_server)], ..config(&cluster, 1) }).await;
        let recorder_a = Recorder::new(0, &journal);
        recorder_a.holding.store(true, Ordering::SeqCst);
        let feed_a = PartitionFeed::start(&engine_a, recorder_a.clone()).await.unwrap();
        let mut published = Vec::new();
        let (entry, digest) = webhook("acct-1", 0);
        published.push(sequence(append_until_acked(&publisher, &entry, &digest).await.0));
        wait_until("A handling webhook 0", Duration::from_secs(20), || recorder_a.n_held() == 1).await;
        assert!(feed_a.is_pinned(0));

        // B stands by. A's server dies: A's connection drops (as in a network split) and its pulls
        // stop until its client reconnects to a server it learned of; B is pinned, and A learns
        // it from the 423 its first pull naming the old pin gets.
        let engine_b = connect(NatsConfig { urls: b_servers, ..config(&cluster, 1) }).await;
        let recorder_b = Recorder::new(1, &journal);
        let feed_b = PartitionFeed::start(&engine_b, recorder_b.clone()).await.unwrap();
        cluster.kill(a_server);
        let (entry, digest) = webhook("acct-1", 1);
        published.push(sequence(append_until_acked(&publisher, &entry, &digest).await.0));
        wait_until("B pinned", Duration::from_secs(30), || feed_b.is_pinned(0)).await;
        cluster.restart(a_server).await;
        wait_until("A knowing it lost the pin", Duration::from_secs(30), || !feed_a.is_pinned(0)).await;
        // A's commit finishes now: its ack is refused, so it cannot ack a message B also handles.
        let item = recorder_a.held.lock().unwrap().pop().unwrap();
        assert_eq!(item.sequence, published[0]);
        assert_eq!(item.ack.ack().await, Err(NatsError::PinLost { partition: 0 }));

        // New webhooks go to B only, after webhook 0, which B handles again, first.
        for index in 2..4 {
            let (entry, digest) = webhook("acct-1", index);
            published.push(sequence(append_until_acked(&publisher, &entry, &digest).await.0));
        }
        let acked_by_b = || journal.lock().unwrap().acked.iter().filter(|(node, _, _)| *node == 1).count();
        wait_until("B acking webhooks 0-3", Duration::from_secs(40), || acked_by_b() == 4).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(feed_b.is_pinned(0));
        assert!(!feed_a.is_pinned(0));
        let journal = journal.lock().unwrap();
        let by_a: Vec<u64> = journal.handled.iter().filter(|(node, ..)| *node == 0).map(|(_, sequence, ..)| *sequence).collect();
        assert_eq!(by_a, vec![published[0]], "A took something after it lost the pin");
        let by_b: Vec<(u64, u64)> =
            journal.handled.iter().filter(|(node, ..)| *node == 1).map(|(_, sequence, _, delivered)| (*sequence, *delivered)).collect();
        println!("B handled (sequence, delivery): {by_b:?}");
        assert_eq!(by_b.first(), Some(&(published[0], 2)), "B handles A's webhook again, first");
        let acked: Vec<u64> = journal.acked.iter().map(|(_, sequence, _)| *sequence).collect();
        assert_eq!(acked, published, "acked by B in order, once each");
        assert_per_account_order(&journal);
    })
    .await;
}

#[tokio::test]
async fn a_node_holding_every_partition_lets_some_go_to_a_node_that_joins() {
    bounded("the spreading test", Duration::from_secs(90), async {
        const PARTITIONS: u32 = 4;
        let cluster = NatsCluster::start(3).await;
        let publisher = connect(config(&cluster, PARTITIONS)).await;
        let accounts = accounts(PARTITIONS);
        let journal: Arc<Mutex<Journal>> = Default::default();
        let engine_a = connect(config(&cluster, PARTITIONS)).await;
        let feed_a = PartitionFeed::start(&engine_a, Recorder::new(0, &journal)).await.unwrap();
        let mut published = Vec::new();
        for index in 0..24 {
            let (entry, digest) = webhook(&accounts[index % accounts.len()], index);
            published.push(sequence(append_until_acked(&publisher, &entry, &digest).await.0));
        }
        wait_until("A pinned on every partition", Duration::from_secs(20), || feed_a.pinned().len() == PARTITIONS as usize).await;

        // B joins while webhooks keep coming: A lets partitions go until each holds its share (2).
        let engine_b = connect(config(&cluster, PARTITIONS)).await;
        let feed_b = PartitionFeed::start(&engine_b, Recorder::new(1, &journal)).await.unwrap();
        let mut index = 24;
        let deadline = Instant::now() + Duration::from_secs(45);
        while !(feed_a.pinned().len() == 2 && feed_b.pinned().len() == 2) {
            assert!(Instant::now() < deadline, "not spread: A holds {:?}, B {:?}", feed_a.pinned(), feed_b.pinned());
            let (entry, digest) = webhook(&accounts[index % accounts.len()], index);
            published.push(sequence(append_until_acked(&publisher, &entry, &digest).await.0));
            index += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        println!("spread after {index} webhooks: A holds {:?}, B {:?}", feed_a.pinned(), feed_b.pinned());
        let n_published = published.len();
        wait_until("every webhook acked", Duration::from_secs(30), || {
            journal.lock().unwrap().acked.iter().map(|(_, sequence, _)| *sequence).collect::<BTreeSet<_>>().len() >= n_published
        })
        .await;
        let journal = journal.lock().unwrap();
        let acked: BTreeSet<u64> = journal.acked.iter().map(|(_, sequence, _)| *sequence).collect();
        assert_eq!(acked.len(), journal.acked.len(), "a webhook acked twice");
        assert_eq!(acked, published.iter().copied().collect(), "acked webhooks");
        assert_per_account_order(&journal);
    })
    .await;
}

/// A handler that panics on everything: a bug in the node's normalizer.
struct Panicking {
    called: AtomicBool,
}

impl FeedHandler for Panicking {
    async fn handle(&self, batch: FeedBatch) {
        self.called.store(true, Ordering::SeqCst);
        panic!("the handler failed on {} items (on purpose: nats_engine_layer)", batch.items.len());
    }
}

#[tokio::test]
async fn a_node_whose_handler_panics_gives_the_partition_up_to_another() {
    bounded("the panicking handler test", Duration::from_secs(90), async {
        let cluster = NatsCluster::start(3).await;
        let publisher = connect(config(&cluster, 1)).await;
        let engine_a = connect(config(&cluster, 1)).await;
        let panicking = Arc::new(Panicking { called: AtomicBool::new(false) });
        let feed_a = PartitionFeed::start(&engine_a, panicking.clone()).await.unwrap();
        let mut published = Vec::new();
        let (entry, digest) = webhook("acct-1", 0);
        published.push(sequence(append_until_acked(&publisher, &entry, &digest).await.0));
        // A is pinned, its handler panics, and A gives the partition up.
        wait_until("A's handler called", Duration::from_secs(20), || panicking.called.load(Ordering::SeqCst)).await;
        wait_until("A giving the partition up", Duration::from_secs(20), || feed_a.pinned().is_empty()).await;

        let journal: Arc<Mutex<Journal>> = Default::default();
        let engine_b = connect(config(&cluster, 1)).await;
        let feed_b = PartitionFeed::start(&engine_b, Recorder::new(1, &journal)).await.unwrap();
        for index in 1..3 {
            let (entry, digest) = webhook("acct-1", index);
            published.push(sequence(append_until_acked(&publisher, &entry, &digest).await.0));
        }
        wait_until("B acking every webhook", Duration::from_secs(40), || journal.lock().unwrap().acked.len() == 3).await;
        assert!(feed_b.is_pinned(0));
        assert!(feed_a.pinned().is_empty());
        let journal = journal.lock().unwrap();
        let acked: Vec<u64> = journal.acked.iter().map(|(_, sequence, _)| *sequence).collect();
        assert_eq!(acked, published, "B acks A's webhook first, then the rest, once each");
    })
    .await;
}

/// A measurement, not a test (`cargo test --release --test it nats_append_latency -- --ignored
/// --nocapture`): the latency of one append (publish and JetStream ack, one at a time) on R1 (one
/// server) and R3 (three servers on this machine), with the server's default `sync_interval` (2 min:
/// an ack means the write reached the servers' page cache) and with `sync_interval: always` (an
/// fsync before each ack); p50 and p99 over 2,000 appends after 200 to warm up.
#[tokio::test]
#[ignore = "a measurement for docs/jetstream-design.md, not a test"]
async fn nats_append_latency() {
    for sync in ["", "sync_interval: always"] {
        for replicas in [1, 3] {
            let cluster = NatsCluster::start_with_jetstream_options(replicas, sync).await;
            let engine = connect(NatsConfig { replicas, ..config(&cluster, 4) }).await;
            let mut latencies = Vec::new();
            for index in 0..2200 {
                let (entry, digest) = webhook(&format!("acct-{}", index % 12), index);
                let started = Instant::now();
                engine.append(&entry, &digest).await.expect("an append");
                if index >= 200 {
                    latencies.push(started.elapsed());
                }
            }
            latencies.sort();
            let at = |quantile: f64| latencies[((latencies.len() as f64 * quantile) as usize).min(latencies.len() - 1)];
            println!(
                "append latency R{replicas} ({}): p50 {:?}, p99 {:?}, max {:?}",
                if sync.is_empty() { "default sync_interval" } else { sync },
                at(0.50),
                at(0.99),
                latencies.last().unwrap()
            );
        }
    }
}
