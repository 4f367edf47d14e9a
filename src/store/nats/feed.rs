//! The partition feed: on every node, one pinned pull per inbox partition (consumer `in-<p>`,
//! group `drain`); the server pins one node per partition and the others stand by. The feed hands
//! the pinned partitions' webhooks to a [`FeedHandler`] in batches, each partition's batches one
//! after the other, and keeps **per-account order across nodes and across a drainer's death
//! mid-batch** (docs/jetstream-design.md, "Normalization and per-account order").
//!
//! Per partition it owns two tasks: a puller, which sends the pull requests itself
//! (`$JS.API.CONSUMER.MSG.NEXT`, the body the design shows) rather than through the client's pull
//! stream, because that stream swallows the server's `423` (pin lost) and the feed must act on it;
//! and a dispatcher, which awaits the handler batch after batch, so a slow handler (an enrichment
//! waiting on a PMS API) never stops the puller from renewing the pin.
//!
//! The takeover rule: a message under a `Nats-Pin-Id` this node has not seen means it just took
//! the partition (over). If a message delivered before it is still unacked (the consumer's ack
//! floor is below the message's consumer sequence, and `num_ack_pending` is above what this node
//! received), a drainer died holding a batch; its messages come back only when their ack wait runs
//! out, and new ones could overtake them. So the feed holds everything it receives for one
//! `ack_wait` and half a pin TTL (acking `Progress`), then hands it over sorted by stream sequence.
//!
//! What the handler gets is outstanding until it acks: the puller sends `Progress` for it every
//! third of the ack wait, so a held message is not redelivered. A node that loses its pin (the
//! server answers its pull `423`, after a pause longer than the pin's TTL or an unpin) takes
//! nothing new from the partition until pinned again, drops what it has not handed over, and
//! refuses every ack of what it did ([`NatsError::PinLost`]): the new drainer gets those messages
//! again. Dropping a [`FeedAck`] without acking stops its progress reports: the server redelivers
//! it after the ack wait (after later messages of its account, so a handler that cannot commit a
//! message must not ack later ones of that account either).
//!
//! A handler that panics makes the node give that partition up (its acks refused, its pulls
//! stopped): the pin runs out and another node takes over by the takeover rule.
//!
//! Spreading pins: the server pins whichever node pulls first, so the first node up drains every
//! partition. Every two pin TTLs a node estimates the number of nodes (the most pull requests
//! waiting on one partition: each node keeps one per partition) and, while it holds more than
//! `ceil(partitions / nodes)`, gives up one partition that has nothing outstanding (nothing handed
//! out unacked, nothing held): it stops pulling it for one and a half pin TTLs, so the pin runs out
//! and a node on standby is pinned, then stands by itself. Nothing is in flight, so the new drainer
//! finds nothing unacked and does not hold.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use async_nats::{Subject, Subscriber};
use futures_util::{FutureExt, StreamExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::engine::{DRAIN_GROUP, Engine, INBOX_STREAM, NatsError, classify, inbox_consumer};
use super::inbox::{NatsInboxEntry, decode};

/// What the feed hands batches to. Batches of one partition come one at a time, in the order the
/// feed received them (stream order, but for the takeover rule's sorted hand-over); batches of
/// different partitions may run concurrently.
pub trait FeedHandler: Send + Sync + 'static {
    /// Handle a batch: commit each item and then ack it ([`FeedAck::ack`]).
    fn handle(&self, batch: FeedBatch) -> impl Future<Output = ()> + Send;
}

/// Webhooks of one partition received together.
#[derive(Debug)]
pub struct FeedBatch {
    /// The inbox partition.
    pub partition: u32,
    /// In stream-sequence order.
    pub items: Vec<FeedItem>,
    epoch: u64,
}

/// One inbox message handed to the handler.
#[derive(Debug)]
pub struct FeedItem {
    /// The stream sequence: the inbox id.
    pub sequence: u64,
    /// How many times the server delivered it (1 the first time).
    pub delivered: u64,
    /// The decoded entry, or why it does not decode (the handler records that and acks).
    pub entry: Result<NatsInboxEntry, NatsError>,
    /// Acks the message once the handler committed it.
    pub ack: FeedAck,
}

/// The ack of one fed message, valid while this node holds the partition's pin.
pub struct FeedAck {
    message: jetstream::Message,
    lease: Arc<Lease>,
    epoch: u64,
    sequence: u64,
    done: bool,
}

impl std::fmt::Debug for FeedAck {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("FeedAck").field("sequence", &self.sequence).field("epoch", &self.epoch).finish()
    }
}

impl FeedAck {
    /// Ack the message and wait until the server confirmed it (a double ack). Refused with
    /// [`NatsError::PinLost`] when this node no longer holds the pin it received the message under.
    pub async fn ack(mut self) -> Result<(), NatsError> {
        if !self.lease.holds(self.epoch) {
            return Err(NatsError::PinLost { partition: self.lease.partition });
        }
        self.message.double_ack().await.map_err(|error| classify(&format!("acking inbox message {}", self.sequence), &*error))?;
        self.done = true;
        self.lease.forget(self.epoch, self.sequence);
        Ok(())
    }

    /// Tell the server the message is still being worked on (the feed does so on its own every
    /// third of the ack wait; this is for a handler that wants to be sure).
    pub async fn progress(&self) -> Result<(), NatsError> {
        if !self.lease.holds(self.epoch) {
            return Err(NatsError::PinLost { partition: self.lease.partition });
        }
        self.message
            .ack_with(jetstream::AckKind::Progress)
            .await
            .map_err(|error| classify(&format!("progress of inbox message {}", self.sequence), &*error))
    }
}

impl Drop for FeedAck {
    fn drop(&mut self) {
        if !self.done {
            self.lease.forget(self.epoch, self.sequence);
        }
    }
}

/// The feed of every partition on this node; dropping it stops the feed (without acking anything).
pub struct PartitionFeed {
    leases: Vec<Arc<Lease>>,
    tasks: Vec<JoinHandle<()>>,
}

impl PartitionFeed {
    /// Start pulling every partition and handing what this node is pinned for to `handler`.
    pub async fn start<H: FeedHandler>(engine: &Engine, handler: Arc<H>) -> Result<PartitionFeed, NatsError> {
        let mut leases = Vec::new();
        let mut tasks = Vec::new();
        for partition in 0..engine.partitions() {
            let inbox = engine.client().new_inbox();
            let subscriber = engine
                .client()
                .subscribe(inbox.clone())
                .await
                .map_err(|error| NatsError::Unavailable(format!("subscribing to the feed's inbox: {error}")))?;
            let lease = Arc::new(Lease { partition, state: Mutex::new(LeaseState::default()) });
            let (batches, received) = mpsc::unbounded_channel();
            let puller = Puller {
                engine: engine.clone(),
                partition,
                lease: lease.clone(),
                inbox: Subject::from(inbox),
                batches,
                pin: None,
                hold: None,
                collected: Vec::new(),
                confirmed_at: None,
            };
            tasks.push(tokio::spawn(puller.run(subscriber)));
            tasks.push(tokio::spawn(dispatch(lease.clone(), received, handler.clone())));
            leases.push(lease);
        }
        tasks.push(tokio::spawn(balance(engine.clone(), leases.clone())));
        Ok(PartitionFeed { leases, tasks })
    }

    /// The partitions this node holds the pin of right now (as far as it knows).
    pub fn pinned(&self) -> Vec<u32> {
        self.leases.iter().filter(|lease| lease.pinned()).map(|lease| lease.partition).collect()
    }

    /// Whether this node holds `partition`'s pin (as far as it knows).
    pub fn is_pinned(&self, partition: u32) -> bool {
        self.leases.get(partition as usize).is_some_and(|lease| lease.pinned())
    }

    /// Leave (the daemon stops, after its normalizer finished what it was handed): give every
    /// partition up (its pulls stop, no ack of this node lands any more), let the last pull
    /// requests expire (through one the server could pin this node again), then unpin the
    /// partitions this node held, so a node on standby is pinned at its next pull instead of
    /// after the pin's TTL. What was handed out and not acked comes back after the ack wait, to
    /// the new drainer, which holds for it (the takeover rule). The partitions handed over.
    pub async fn leave(&self, engine: &Engine) -> Vec<u32> {
        let held = self.pinned();
        for lease in &self.leases {
            lease.give_up();
        }
        if held.is_empty() {
            return held;
        }
        tokio::time::sleep(pull_expiry(engine.config().pin_ttl) + Duration::from_millis(100)).await;
        let stream = match engine.jetstream().get_stream_no_info(INBOX_STREAM).await {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(%error, "leaving: the partitions stay pinned until their TTL");
                return Vec::new();
            }
        };
        let mut handed = Vec::with_capacity(held.len());
        for partition in held {
            match stream.unpin_consumer(&inbox_consumer(partition), DRAIN_GROUP).await {
                Ok(()) => handed.push(partition),
                Err(error) => tracing::warn!(%error, partition, "leaving: the partition stays pinned until its TTL"),
            }
        }
        handed
    }
}

/// How long a pull request waits at the server: well inside the pin's TTL, so a pinned node renews
/// its pin in time.
fn pull_expiry(pin_ttl: Duration) -> Duration {
    (pin_ttl / 4).max(Duration::from_millis(100))
}

impl Drop for PartitionFeed {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// What a partition's puller shares with the acks it hands out.
struct Lease {
    partition: u32,
    state: Mutex<LeaseState>,
}

#[derive(Default)]
struct LeaseState {
    /// One more for every pin this node got or lost; an ack is valid only in its own epoch.
    epoch: u64,
    pinned: bool,
    /// Messages received and not acked yet (sequence -> ack subject), kept in progress.
    outstanding: BTreeMap<u64, Subject>,
    /// The handler panicked: this node drains the partition no more (until the feed restarts).
    given_up: bool,
    /// The balancer asks the puller to let the pin go (when it has nothing outstanding).
    release: bool,
}

impl Lease {
    fn lock(&self) -> std::sync::MutexGuard<'_, LeaseState> {
        // A panic while holding this lock leaves plain data behind: keep using it.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn holds(&self, epoch: u64) -> bool {
        let state = self.lock();
        state.pinned && state.epoch == epoch
    }

    fn pinned(&self) -> bool {
        self.lock().pinned
    }

    fn given_up(&self) -> bool {
        self.lock().given_up
    }

    /// Stop draining the partition: no ack of what was handed out lands, the puller stops, and the
    /// pin runs out, so another node takes the partition over (by the takeover rule).
    fn give_up(&self) {
        self.repin(false);
        self.lock().given_up = true;
    }

    fn forget(&self, epoch: u64, sequence: u64) {
        let mut state = self.lock();
        if state.epoch == epoch {
            state.outstanding.remove(&sequence);
        }
    }

    /// A new pin (`true`) or the pin lost (`false`): a new epoch, nothing outstanding.
    fn repin(&self, pinned: bool) -> u64 {
        let mut state = self.lock();
        state.epoch += 1;
        state.pinned = pinned;
        state.outstanding.clear();
        state.epoch
    }
}

/// Messages held after a takeover until `until`, by stream sequence.
struct Hold {
    until: Instant,
    items: BTreeMap<u64, FeedItem>,
}

struct Puller {
    engine: Engine,
    partition: u32,
    lease: Arc<Lease>,
    inbox: Subject,
    batches: mpsc::UnboundedSender<FeedBatch>,
    /// The `Nats-Pin-Id` this node pulls with; `None` on standby.
    pin: Option<String>,
    hold: Option<Hold>,
    /// Received in the current burst, not yet handed over.
    collected: Vec<FeedItem>,
    /// When the server last confirmed this node's pin: the send time of a pull it answered with a
    /// message under the pin or with its expiry (not `423`). Progress is sent only within half a
    /// pin TTL of it, so a node that lost its pin without knowing yet (paused, cut off) cannot keep
    /// its messages from coming back to the new drainer within the takeover hold.
    confirmed_at: Option<Instant>,
}

/// How one pull request ended.
enum Ended {
    Continue,
    Closed,
}

impl Puller {
    async fn run(mut self, mut subscriber: Subscriber) {
        let config = self.engine.config().clone();
        let expires = pull_expiry(config.pin_ttl);
        let progress_every = (config.ack_wait / 3).max(Duration::from_millis(100));
        let mut progress = tokio::time::interval(progress_every);
        progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let subject = format!("$JS.API.CONSUMER.MSG.NEXT.{INBOX_STREAM}.{}", inbox_consumer(self.partition));
        loop {
            if self.lease.given_up() {
                return;
            }
            if self.release_if_idle() {
                // Silent for longer than the pin's TTL: the server pins a node on standby. What
                // reached this node meanwhile (delivered to its last pull just before) is dropped
                // unacked: it comes back to the new drainer, which holds for it.
                tokio::time::sleep(config.pin_ttl * 3 / 2).await;
                while let Some(Some(_)) = subscriber.next().now_or_never() {}
            }
            let mut request = serde_json::json!({
                "batch": config.batch,
                "expires": u64::try_from(expires.as_nanos()).unwrap_or(u64::MAX),
                "group": DRAIN_GROUP,
            });
            if let Some(pin) = &self.pin {
                request["id"] = serde_json::Value::String(pin.clone());
            }
            if let Err(error) =
                self.engine.client().publish_with_reply(subject.clone(), self.inbox.clone(), request.to_string().into()).await
            {
                tracing::debug!(partition = self.partition, %error, "feed: sending a pull");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            // The server answers 408 when the request expires; past this, it was lost (a
            // reconnect): pull again.
            let sent_at = Instant::now();
            let request_deadline = sent_at + expires + Duration::from_secs(2);
            let mut received = 0;
            let mut refused = false;
            let ended = loop {
                let hold_until = self.hold.as_ref().map(|hold| hold.until);
                tokio::select! {
                    message = subscriber.next() => {
                        let Some(message) = message else { break Ended::Closed };
                        let mut next = Some(message);
                        let mut done = false;
                        // Take everything already here, then hand it over in one batch.
                        while let Some(message) = next.take() {
                            match self.on_message(message).await {
                                Reply::Message => {
                                    received += 1;
                                    done |= received >= config.batch;
                                    self.confirm(sent_at);
                                }
                                Reply::Heartbeat => {}
                                Reply::Expired => {
                                    done = true;
                                    self.confirm(sent_at);
                                }
                                Reply::RequestEnded => {
                                    done = true;
                                    refused = true;
                                }
                            }
                            next = subscriber.next().now_or_never().flatten();
                        }
                        self.flush();
                        if done {
                            break Ended::Continue;
                        }
                    }
                    _ = tokio::time::sleep_until(request_deadline) => break Ended::Continue,
                    _ = progress.tick() => self.send_progress().await,
                    _ = sleep_until_some(hold_until) => self.release_hold(),
                }
            };
            if matches!(ended, Ended::Closed) {
                // The connection is gone for good: nothing this node holds can be acked any more.
                self.lease.repin(false);
                return;
            }
            if self.hold.as_ref().is_some_and(|hold| hold.until <= Instant::now()) {
                self.release_hold();
            }
            if refused && received == 0 {
                // Refused at once (a 409, no leader, the pin lost): not again in a tight loop.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }

    async fn on_message(&mut self, message: async_nats::Message) -> Reply {
        match message.status.map(|status| status.as_u16()) {
            None | Some(200) => {}
            Some(100) => return Reply::Heartbeat,
            Some(423) => {
                if self.pin.take().is_some() || self.lease.pinned() {
                    tracing::info!(partition = self.partition, "feed: lost the pin (423); standing by");
                }
                self.lease.repin(false);
                self.confirmed_at = None;
                self.hold = None;
                self.collected.clear();
                return Reply::RequestEnded;
            }
            // Expired: the server took the request (with this node's pin id, if any) and kept it.
            Some(408) => return Reply::Expired,
            // 409 (leadership change, limits) and the like: the request is over; pull again.
            Some(_) => return Reply::RequestEnded,
        }
        let pin = message.headers.as_ref().and_then(|headers| headers.get("Nats-Pin-Id")).map(|pin| pin.as_str().to_string());
        let message = jetstream::Message { message, context: self.engine.jetstream().clone() };
        let Ok(info) = message.info() else {
            tracing::warn!(partition = self.partition, subject = %message.subject, "feed: a message without JetStream metadata");
            return Reply::Message;
        };
        let (sequence, consumer_sequence, delivered) = (info.stream_sequence, info.consumer_sequence, info.delivered);
        let Some(reply) = message.reply.clone() else { return Reply::Message };
        if let Some(pin) = pin
            && self.pin.as_deref() != Some(pin.as_str())
        {
            self.take_pin(pin, consumer_sequence).await;
        }
        let epoch = {
            let mut state = self.lease.lock();
            if !state.pinned {
                // Delivered without a pin header while not pinned: not a pinned consumer's
                // message as the design has it; leave it to its ack wait.
                tracing::warn!(partition = self.partition, sequence, "feed: a message while not pinned");
                return Reply::Message;
            }
            state.outstanding.insert(sequence, reply);
            state.epoch
        };
        let entry = decode(sequence, message.subject.as_str(), message.headers.as_ref(), &message.payload);
        let item = FeedItem {
            sequence,
            delivered: u64::try_from(delivered).unwrap_or(0),
            entry,
            ack: FeedAck { message, lease: self.lease.clone(), epoch, sequence, done: false },
        };
        match &mut self.hold {
            Some(hold) => {
                hold.items.insert(sequence, item);
            }
            None => self.collected.push(item),
        }
        Reply::Message
    }

    /// This node was just pinned (a `Nats-Pin-Id` it had not seen): the takeover rule.
    async fn take_pin(&mut self, pin: String, consumer_sequence: u64) {
        let previous = self.pin.replace(pin);
        self.lease.repin(true);
        self.confirmed_at = None;
        self.collected.clear();
        self.hold = None;
        let ack_wait = self.engine.config().ack_wait;
        // Ask quickly: while asking, this node sends no pull, and its pin lives only so long.
        let bound = (self.engine.config().pin_ttl / 2).min(self.engine.config().request_timeout);
        let consumer = inbox_consumer(self.partition);
        let info = tokio::time::timeout(bound, async {
            let stream = self.engine.jetstream().get_stream_no_info(INBOX_STREAM).await.map_err(|error| error.to_string())?;
            stream.consumer_info(&consumer).await.map_err(|error| error.to_string())
        })
        .await;
        let earlier_unacked = match info {
            // Everything delivered before this message (consumer sequences below it) is acked
            // when the ack floor reaches it; `num_ack_pending` counts what is out, this message
            // (and what else this pull already brought) included.
            Ok(Ok(info)) => info.ack_floor.consumer_sequence + 1 < consumer_sequence && info.num_ack_pending > 1,
            Ok(Err(reason)) => {
                tracing::warn!(partition = self.partition, %reason, "feed: no consumer info at the takeover; holding");
                true
            }
            Err(_) => {
                tracing::warn!(partition = self.partition, "feed: no consumer info in {bound:?} at the takeover; holding");
                true
            }
        };
        tracing::info!(partition = self.partition, previous = ?previous, earlier_unacked, "feed: pinned");
        if earlier_unacked {
            // One ack wait, and half a pin TTL for the progress a node that lost this pin without
            // knowing it yet may still have sent (see `confirmed_at`).
            let until = Instant::now() + ack_wait + self.engine.config().pin_ttl / 2;
            self.hold = Some(Hold { until, items: BTreeMap::new() });
        }
    }

    /// Hand what was collected to the dispatcher.
    fn flush(&mut self) {
        if self.collected.is_empty() {
            return;
        }
        let items = std::mem::take(&mut self.collected);
        let epoch = self.lease.lock().epoch;
        // The dispatcher ends only with the feed.
        let _ = self.batches.send(FeedBatch { partition: self.partition, items, epoch });
    }

    /// The hold's time is up: everything the dead drainer held has come back; hand it over sorted.
    fn release_hold(&mut self) {
        if let Some(hold) = self.hold.take() {
            tracing::info!(partition = self.partition, n_held = hold.items.len(), "feed: takeover hold over");
            self.collected.extend(hold.items.into_values());
            self.flush();
        }
    }

    /// Let the pin go when the balancer asked and nothing is outstanding; `true` when let go.
    fn release_if_idle(&mut self) -> bool {
        {
            let mut state = self.lease.lock();
            if !std::mem::take(&mut state.release) {
                return false;
            }
            if !state.pinned || !state.outstanding.is_empty() || self.hold.is_some() || !self.collected.is_empty() {
                return false;
            }
        }
        tracing::info!(partition = self.partition, "feed: letting the pin go to spread partitions over nodes");
        self.lease.repin(false);
        self.pin = None;
        self.confirmed_at = None;
        true
    }

    fn confirm(&mut self, sent_at: Instant) {
        if self.pin.is_some() && self.confirmed_at.is_none_or(|confirmed_at| confirmed_at < sent_at) {
            self.confirmed_at = Some(sent_at);
        }
    }

    async fn send_progress(&self) {
        let half_ttl = self.engine.config().pin_ttl / 2;
        if self.confirmed_at.is_none_or(|confirmed_at| confirmed_at.elapsed() > half_ttl) {
            return;
        }
        let outstanding: Vec<Subject> = self.lease.lock().outstanding.values().cloned().collect();
        for reply in outstanding {
            if let Err(error) = self.engine.client().publish(reply, "+WPI".into()).await {
                tracing::debug!(partition = self.partition, %error, "feed: a progress ack");
            }
        }
    }
}

enum Reply {
    /// A message (handed over, held, or left to its ack wait).
    Message,
    /// An idle heartbeat.
    Heartbeat,
    /// The request expired (`408`).
    Expired,
    /// The request ended otherwise (`423` pin lost, `409`).
    RequestEnded,
}

async fn sleep_until_some(until: Option<Instant>) {
    match until {
        Some(until) => tokio::time::sleep_until(until).await,
        None => std::future::pending().await,
    }
}

/// Every two pin TTLs: while this node holds more than its share of the partitions, ask one
/// (the highest) to let its pin go (see the module docs).
async fn balance(engine: Engine, leases: Vec<Arc<Lease>>) {
    let every = engine.config().pin_ttl * 2;
    let consumer_count = leases.len();
    loop {
        tokio::time::sleep(every).await;
        let pinned: Vec<&Arc<Lease>> = leases.iter().filter(|lease| lease.pinned()).collect();
        if pinned.len() <= 1 {
            continue;
        }
        // Each node keeps one pull request waiting per partition (its pinned one too, while the
        // partition is idle), so the most requests waiting on a partition is the node count or
        // one less; an undercount only makes the share larger (nothing moves back and forth).
        let mut nodes = 1;
        let standby = leases.iter().filter(|lease| !lease.pinned());
        for lease in standby.chain(pinned.iter().copied()).take(4) {
            let Ok(stream) = engine.jetstream().get_stream_no_info(INBOX_STREAM).await else { break };
            if let Ok(info) = stream.consumer_info(inbox_consumer(lease.partition)).await {
                nodes = nodes.max(info.num_waiting);
            }
        }
        let share = consumer_count.div_ceil(nodes);
        if pinned.len() > share
            && let Some(lease) = pinned.iter().rev().find(|lease| lease.lock().outstanding.is_empty())
        {
            tracing::debug!(partition = lease.partition, n_pinned = pinned.len(), nodes, share, "feed: asking to let a pin go");
            lease.lock().release = true;
        }
    }
}

/// Run the handler over one partition's batches, one at a time; batches of an epoch that ended
/// (the pin was lost or taken again since) are dropped: their acks would be refused. A handler
/// that panics (a bug) makes this node give the partition up rather than stall it or break its
/// order: what it did not ack goes to the next drainer.
async fn dispatch<H: FeedHandler>(lease: Arc<Lease>, mut batches: mpsc::UnboundedReceiver<FeedBatch>, handler: Arc<H>) {
    while let Some(batch) = batches.recv().await {
        if !lease.holds(batch.epoch) {
            continue;
        }
        let partition = batch.partition;
        if std::panic::AssertUnwindSafe(handler.handle(batch)).catch_unwind().await.is_err() {
            tracing::error!(partition, "feed: the handler panicked; this node gives the partition up to another");
            lease.give_up();
            return;
        }
    }
}
