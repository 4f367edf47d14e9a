//! The connection to a JetStream cluster and the provisioning of what the backend uses: the
//! streams `SH_INBOX`, `SH_EVENTS`, `SH_WORK`, `SH_ATTEMPTS`, `SH_ADVISORIES`, the KV buckets
//! `SH_STATE`, `SH_CATALOG`, `SH_OUTCOMES`, `SH_DELIVERIES`, `SH_LANES`, the consumers `in-<p>`
//! (one per inbox partition) and `work` (docs/jetstream-design.md).
//!
//! Provisioning is create-or-check, so any number of nodes may start at once: each asks the server
//! to create every object with the config it wants (the server answers success for an identical
//! one), and when the object exists with another config it compares the fields this module sets
//! and refuses to start naming each difference ([`NatsError::Incompatible`]). The inbox's partition
//! count is the exception: the first node stores it in `SH_CATALOG` (`meta.partitions`, a KV
//! `create`), every later node reads it and uses it, logging when its own configuration differs.
//!
//! Also here: subject tokens for ids ([`subject_token`]), the partition of an account
//! ([`partition_of`]) and the mapping of client errors to [`NatsError`].

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, kv, stream};

/// The inbox stream: raw webhooks on `sh.in.<partition>.<account>`.
pub const INBOX_STREAM: &str = "SH_INBOX";
/// The event log: `sh.ev.<account>.<event id>`.
pub const EVENTS_STREAM: &str = "SH_EVENTS";
/// Deliveries due for an attempt (work-queue retention): `sh.work.<subscription>`.
pub const WORK_STREAM: &str = "SH_WORK";
/// One message per delivery attempt: `sh.att.<account>.<event id>`.
pub const ATTEMPTS_STREAM: &str = "SH_ATTEMPTS";
/// The MAX_DELIVERIES advisories of the `work` consumer, kept so no dead letter is missed.
pub const ADVISORIES_STREAM: &str = "SH_ADVISORIES";
/// Record state, written by compare-and-set.
pub const STATE_BUCKET: &str = "SH_STATE";
/// Accounts, subscriptions, daemon values (`meta.<key>`) and sync states.
pub const CATALOG_BUCKET: &str = "SH_CATALOG";
/// Each inbox entry's outcome.
pub const OUTCOMES_BUCKET: &str = "SH_OUTCOMES";
/// Each delivery's record.
pub const DELIVERIES_BUCKET: &str = "SH_DELIVERIES";
/// Each lane's ordered open deliveries.
pub const LANES_BUCKET: &str = "SH_LANES";
/// The consumer every node pulls deliveries from (not pinned).
pub const WORK_CONSUMER: &str = "work";
/// The priority group of the inbox consumers: one pinned client per partition.
pub const DRAIN_GROUP: &str = "drain";
/// The catalog key holding the partition count the cluster was initialised with.
pub const PARTITIONS_KEY: &str = "meta.partitions";

/// The name of partition `partition`'s inbox consumer.
pub fn inbox_consumer(partition: u32) -> String {
    format!("in-{partition}")
}

/// The subject of a webhook of `account_id` in `partition`.
pub fn inbox_subject(partition: u32, account_id: &str) -> String {
    format!("sh.in.{partition}.{}", subject_token(account_id))
}

/// How a node reaches the cluster and what it provisions. The defaults are the design's.
#[derive(Debug, Clone)]
pub struct NatsConfig {
    /// The cluster's client URLs (`nats://host:port`); the client reconnects to another when one dies.
    pub urls: Vec<String>,
    /// Replicas of every stream, bucket and consumer: 3 in production (a quorum of 2 survives one
    /// node's death), 1 for a single server.
    pub replicas: usize,
    /// Inbox partitions wanted when this node initialises the cluster; a cluster already
    /// initialised keeps its own (see the module docs).
    pub partitions: u32,
    /// How long an inbox message may stay unacked before the server redelivers it.
    pub ack_wait: Duration,
    /// How long a partition's pinned drainer keeps its pin without pulling (`priority_timeout`).
    pub pin_ttl: Duration,
    /// At most this many unacked messages per partition (`max_ack_pending`): the drainer's batch.
    pub batch: usize,
    /// The inbox's duplicate window (`Nats-Msg-Id`).
    pub duplicate_window: Duration,
    /// How long raw webhooks are kept (`retention.inbox`); zero keeps them forever.
    pub inbox_max_age: Duration,
    /// How long events are kept (`retention.events`); zero keeps them forever.
    pub events_max_age: Duration,
    /// How long attempts are kept (`retention.dead_letters`); zero keeps them forever.
    pub attempts_max_age: Duration,
    /// The `work` consumer's ack wait: how long a dead node's deliveries wait before another node
    /// gets them (a live node reports progress on what it holds, however long an attempt takes).
    pub work_ack_wait: Duration,
    /// The `work` consumer's deliveries per message; -1 (unlimited, the default): the daemon's
    /// retry schedule decides when a delivery is dead, and every attempt nacks or acks its message.
    pub work_max_deliver: i64,
    /// The `work` consumer's unacked limit: the cluster's in-flight deliveries.
    pub work_max_ack_pending: i64,
    /// Connection attempts before [`Engine::connect`] gives up.
    pub connect_attempts: u32,
    /// How long one publish, request or connection attempt may take.
    pub request_timeout: Duration,
    /// How long an append keeps retrying a publish that timed out (same `Nats-Msg-Id`) before it
    /// answers [`NatsError::Unavailable`]; covers a stream leader's election (about 6 s measured).
    pub publish_retry_bound: Duration,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            urls: vec!["nats://127.0.0.1:4222".to_string()],
            replicas: 3,
            partitions: 32,
            ack_wait: Duration::from_secs(30),
            pin_ttl: Duration::from_secs(10),
            batch: 64,
            duplicate_window: Duration::from_secs(600),
            inbox_max_age: Duration::from_secs(30 * 24 * 3600),
            events_max_age: Duration::from_secs(90 * 24 * 3600),
            attempts_max_age: Duration::from_secs(90 * 24 * 3600),
            work_ack_wait: Duration::from_secs(10),
            work_max_deliver: -1,
            work_max_ack_pending: 1000,
            connect_attempts: 5,
            request_timeout: Duration::from_secs(5),
            publish_retry_bound: Duration::from_secs(20),
        }
    }
}

/// Why an engine operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NatsError {
    /// The cluster did not answer in time, has no quorum or leader for the object, or the
    /// connection is down. Nothing was acknowledged; the caller may retry (an append with the same
    /// digest is suppressed if the first one landed after all).
    #[error("NATS unavailable: {0}")]
    Unavailable(String),
    /// A compare-and-set was lost: JetStream's "wrong last sequence" (code 10071 when the winner's
    /// write was applied, 10164 when it was still being proposed) or a KV `create` on a live key.
    #[error("conflict: {0}")]
    Conflict(String),
    /// An object exists with a configuration this node cannot work with; each difference is named.
    #[error("{object} exists with another configuration: {}", differences.join("; "))]
    Incompatible {
        /// The stream, bucket or consumer.
        object: String,
        /// `field: existing X, this node wants Y`, one per field.
        differences: Vec<String>,
    },
    /// This node lost the partition's pin: another node drains it now, so the item must not be
    /// acked (its commit may race the new drainer's) and the node takes nothing new from it.
    #[error("partition {partition}: this node lost the pin")]
    PinLost {
        /// The inbox partition.
        partition: u32,
    },
    /// Anything else (a bad request, a message that does not decode, a bug).
    #[error("NATS: {0}")]
    Other(String),
}

/// An account's inbox partition: FNV-1a 64 of its id, modulo the partition count.
pub fn partition_of(account_id: &str, partitions: u32) -> u32 {
    use std::hash::Hasher;
    // `write` on the raw bytes: `Hash::hash` of a str would add a terminator byte.
    let mut hasher = fnv::FnvHasher::default();
    hasher.write(account_id.as_bytes());
    // The remainder is below `partitions`, a u32.
    (hasher.finish() % u64::from(partitions.max(1))) as u32
}

/// The subject token of an id: the id itself when it is a token we accept (ASCII letters, digits,
/// `-` and `_`, not starting with `x`), else `x` and the hex of its bytes. Never empty and never
/// containing `.`, `*`, `>` or whitespace; different ids give different tokens (a plain token
/// never starts with `x`, an encoded one always does). Also a valid KV key part.
pub fn subject_token(id: &str) -> String {
    let plain =
        !id.is_empty() && !id.starts_with('x') && id.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_');
    if plain { id.to_string() } else { format!("x{}", hex::encode(id.as_bytes())) }
}

/// The id a [`subject_token`] stands for; `None` when the token was not made by it.
pub fn token_id(token: &str) -> Option<String> {
    match token.strip_prefix('x') {
        Some(encoded) => String::from_utf8(hex::decode(encoded).ok()?).ok(),
        None => Some(token.to_string()),
    }
}

/// A node's connection to the cluster, with everything provisioned.
#[derive(Clone)]
pub struct Engine {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    config: NatsConfig,
    partitions: u32,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Engine").field("urls", &self.config.urls).field("partitions", &self.partitions).finish()
    }
}

impl Engine {
    /// Connect (at most `connect_attempts` tries) and provision; see the module docs.
    pub async fn connect(config: NatsConfig) -> Result<Engine, NatsError> {
        if config.replicas != 1 && config.replicas != 3 {
            return Err(NatsError::Other(format!("nats replicas must be 1 or 3, not {}", config.replicas)));
        }
        if config.partitions == 0 || config.batch == 0 {
            return Err(NatsError::Other("nats partitions and batch must be at least 1".to_string()));
        }
        let client = connect_client(&config).await?;
        let jetstream = jetstream::ContextBuilder::new().timeout(config.request_timeout).build(client.clone());
        let mut engine = Engine { client, jetstream, partitions: config.partitions, config };
        engine.provision().await?;
        Ok(engine)
    }

    /// The configuration this node was started with (its `partitions` may differ from the
    /// cluster's: see [`Engine::partitions`]).
    pub fn config(&self) -> &NatsConfig {
        &self.config
    }

    /// The cluster's inbox partition count (`meta.partitions`).
    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// The partition of an account in this cluster.
    pub fn partition(&self, account_id: &str) -> u32 {
        partition_of(account_id, self.partitions)
    }

    /// The NATS connection.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// The JetStream context.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.jetstream
    }

    async fn provision(&mut self) -> Result<(), NatsError> {
        let replicas = self.config.replicas;
        let base = |name: &str, subjects: Vec<String>| stream::Config {
            name: name.to_string(),
            subjects,
            num_replicas: replicas,
            storage: stream::StorageType::File,
            allow_direct: true,
            ..Default::default()
        };
        let streams = [
            stream::Config {
                duplicate_window: window_within(self.config.duplicate_window, self.config.inbox_max_age),
                max_age: self.config.inbox_max_age,
                discard: stream::DiscardPolicy::Old,
                ..base(INBOX_STREAM, vec!["sh.in.>".to_string()])
            },
            stream::Config {
                duplicate_window: window_within(Duration::from_secs(600), self.config.events_max_age),
                max_age: self.config.events_max_age,
                ..base(EVENTS_STREAM, vec!["sh.ev.>".to_string()])
            },
            stream::Config { retention: stream::RetentionPolicy::WorkQueue, ..base(WORK_STREAM, vec!["sh.work.>".to_string()]) },
            stream::Config { max_age: self.config.attempts_max_age, ..base(ATTEMPTS_STREAM, vec!["sh.att.>".to_string()]) },
            stream::Config {
                max_age: Duration::from_secs(7 * 24 * 3600),
                ..base(ADVISORIES_STREAM, vec![format!("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{WORK_STREAM}.*")])
            },
        ];
        for config in streams {
            self.ensure_stream(config).await?;
        }
        for bucket in [STATE_BUCKET, CATALOG_BUCKET, OUTCOMES_BUCKET, DELIVERIES_BUCKET, LANES_BUCKET] {
            self.ensure_bucket(bucket).await?;
        }
        self.partitions = self.settle_partitions().await?;
        for partition in 0..self.partitions {
            let config = consumer::pull::Config {
                durable_name: Some(inbox_consumer(partition)),
                filter_subject: format!("sh.in.{partition}.>"),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: self.config.ack_wait,
                // Unlimited (the server's spelling of it, so an existing consumer compares equal).
                max_deliver: -1,
                max_ack_pending: i64::try_from(self.config.batch).unwrap_or(i64::MAX),
                num_replicas: replicas,
                priority_policy: consumer::PriorityPolicy::PinnedClient,
                priority_groups: vec![DRAIN_GROUP.to_string()],
                priority_timeout: self.config.pin_ttl,
                ..Default::default()
            };
            self.ensure_consumer(INBOX_STREAM, config).await?;
        }
        let work = consumer::pull::Config {
            durable_name: Some(WORK_CONSUMER.to_string()),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: self.config.work_ack_wait,
            max_deliver: self.config.work_max_deliver,
            max_ack_pending: self.config.work_max_ack_pending,
            num_replicas: replicas,
            ..Default::default()
        };
        self.ensure_consumer(WORK_STREAM, work).await
    }

    /// Create a stream, or check that the existing one is compatible.
    async fn ensure_stream(&self, wanted: stream::Config) -> Result<(), NatsError> {
        let name = wanted.name.clone();
        let created = retry_transient(&format!("creating stream {name}"), || self.jetstream.create_stream(wanted.clone())).await;
        match created {
            Ok(_) => Ok(()),
            Err(error) if jetstream_code(&error) == Some(jetstream::ErrorCode::STREAM_NAME_EXIST) => {
                let existing = self.existing_stream_config(&name).await?;
                compare(&name, &stream_fields(&existing), &stream_fields(&wanted))?;
                // What the retention settings give may change between releases of a deployment:
                // the stream takes the new ages (later nodes with the old ones do the same back,
                // so every node of a deployment must share its retention settings).
                if existing.max_age != wanted.max_age || existing.duplicate_window != wanted.duplicate_window {
                    tracing::info!(stream = %name, max_age = ?wanted.max_age, duplicate_window = ?wanted.duplicate_window, "updating the stream's ages");
                    let updated = stream::Config { max_age: wanted.max_age, duplicate_window: wanted.duplicate_window, ..existing };
                    self.jetstream.update_stream(updated).await.map_err(|error| classify(&format!("updating stream {name}"), &error))?;
                }
                Ok(())
            }
            Err(error) => Err(classify(&format!("creating stream {name}"), &error)),
        }
    }

    async fn existing_stream_config(&self, name: &str) -> Result<stream::Config, NatsError> {
        let mut stream = retry_transient(&format!("reading stream {name}"), || self.jetstream.get_stream(name))
            .await
            .map_err(|error| classify(&format!("reading stream {name}"), &error))?;
        let info = stream.info().await.map_err(|error| classify(&format!("reading stream {name}"), &error))?;
        Ok(info.config.clone())
    }

    /// Create a KV bucket (R = replicas, history 1), or check the existing one; then make its
    /// reads go to the stream's leader ([`Engine::read_from_leader`]).
    async fn ensure_bucket(&self, bucket: &str) -> Result<(), NatsError> {
        self.create_bucket(bucket).await?;
        self.read_from_leader(&format!("KV_{bucket}")).await
    }

    /// Turn a stream's direct gets off, so the KV reads of its bucket ask the leader: a direct get
    /// may be answered by a follower that has not applied the latest acknowledged write yet, and
    /// the backend reads back what it just wrote (a delivery's record when its work message
    /// arrives, a lane's next head, a record's state before its compare-and-set). Found by the
    /// scale bench: a work message whose record a follower did not have yet was taken for one of
    /// a deleted account and dropped, leaving its delivery pending for good.
    async fn read_from_leader(&self, name: &str) -> Result<(), NatsError> {
        let existing = self.existing_stream_config(name).await?;
        if !existing.allow_direct {
            return Ok(());
        }
        let updated = stream::Config { allow_direct: false, ..existing };
        retry_transient(&format!("updating stream {name}"), || self.jetstream.update_stream(updated.clone()))
            .await
            .map(|_| ())
            .map_err(|error| classify(&format!("updating stream {name}"), &error))
    }

    async fn create_bucket(&self, bucket: &str) -> Result<(), NatsError> {
        let wanted = kv::Config { bucket: bucket.to_string(), history: 1, num_replicas: self.config.replicas, ..Default::default() };
        let created = retry_transient(&format!("creating bucket {bucket}"), || self.jetstream.create_key_value(wanted.clone())).await;
        match created {
            Ok(_) => Ok(()),
            Err(error) if jetstream_code(&error) == Some(jetstream::ErrorCode::STREAM_NAME_EXIST) => {
                let existing = self.existing_stream_config(&format!("KV_{bucket}")).await?;
                let existing =
                    [("num_replicas", existing.num_replicas.to_string()), ("history", existing.max_messages_per_subject.to_string())];
                let wanted = [("num_replicas", self.config.replicas.to_string()), ("history", "1".to_string())];
                compare(bucket, &existing, &wanted)
            }
            Err(error) => Err(classify(&format!("creating bucket {bucket}"), &error)),
        }
    }

    /// Create a durable pull consumer, or check the existing one.
    async fn ensure_consumer(&self, stream_name: &str, wanted: consumer::pull::Config) -> Result<(), NatsError> {
        let name = wanted.durable_name.clone().unwrap_or_default();
        let object = format!("consumer {name} of {stream_name}");
        let stream = retry_transient(&format!("reading stream {stream_name}"), || self.jetstream.get_stream(stream_name))
            .await
            .map_err(|error| classify(&format!("reading stream {stream_name}"), &error))?;
        let created = retry_transient(&format!("creating {object}"), || stream.create_consumer_strict(wanted.clone())).await;
        match created {
            Ok(_) => Ok(()),
            Err(error)
                if error.kind() == jetstream::stream::ConsumerCreateStrictErrorKind::AlreadyExists
                    || matches!(
                        jetstream_code(&error),
                        Some(jetstream::ErrorCode::CONSUMER_ALREADY_EXISTS | jetstream::ErrorCode::CONSUMER_NAME_EXIST)
                    ) =>
            {
                let info = retry_transient(&format!("reading {object}"), || stream.consumer_info(&name))
                    .await
                    .map_err(|error| classify(&format!("reading {object}"), &error))?;
                let existing = consumer::pull::Config {
                    durable_name: info.config.durable_name.clone(),
                    filter_subject: info.config.filter_subject.clone(),
                    ack_policy: info.config.ack_policy,
                    ack_wait: info.config.ack_wait,
                    max_deliver: info.config.max_deliver,
                    max_ack_pending: info.config.max_ack_pending,
                    num_replicas: info.config.num_replicas,
                    priority_policy: info.config.priority_policy,
                    priority_groups: info.config.priority_groups.clone(),
                    priority_timeout: info.config.priority_timeout,
                    ..Default::default()
                };
                compare(&object, &consumer_fields(&existing), &consumer_fields(&wanted))
            }
            Err(error) => Err(classify(&format!("creating {object}"), &error)),
        }
    }

    /// The cluster's partition count: this node's, if it is the first to store it; else the
    /// stored one (logged when it differs from this node's configuration).
    async fn settle_partitions(&self) -> Result<u32, NatsError> {
        let catalog = self.bucket(CATALOG_BUCKET).await?;
        let wanted = self.config.partitions;
        let created = retry_transient("storing meta.partitions", || catalog.create(PARTITIONS_KEY, wanted.to_string().into())).await;
        match created {
            Ok(_) => return Ok(wanted),
            Err(error) if error.kind() == kv::CreateErrorKind::AlreadyExists => {}
            Err(error) => return Err(classify("storing meta.partitions", &error)),
        }
        let stored = retry_transient("reading meta.partitions", || catalog.get(PARTITIONS_KEY))
            .await
            .map_err(|error| classify("reading meta.partitions", &error))?
            .ok_or_else(|| NatsError::Other(format!("{CATALOG_BUCKET} refused {PARTITIONS_KEY} as existing, yet has none")))?;
        let stored: u32 = std::str::from_utf8(&stored)
            .ok()
            .and_then(|text| text.parse().ok())
            .filter(|partitions| *partitions > 0)
            .ok_or_else(|| NatsError::Other(format!("{CATALOG_BUCKET} {PARTITIONS_KEY} is not a partition count: {stored:?}")))?;
        if stored != wanted {
            tracing::warn!(
                stored,
                configured = wanted,
                "the cluster was initialised with {stored} inbox partitions; using them (changing the count is a migration)"
            );
        }
        Ok(stored)
    }

    /// A KV bucket (opening a bucket this new can meet a transient error: retried).
    pub async fn bucket(&self, bucket: &str) -> Result<kv::Store, NatsError> {
        retry_transient(&format!("opening bucket {bucket}"), || self.jetstream.get_key_value(bucket))
            .await
            .map_err(|error| classify(&format!("opening bucket {bucket}"), &error))
    }
}

async fn connect_client(config: &NatsConfig) -> Result<async_nats::Client, NatsError> {
    let names = config.urls.join(", ");
    let addresses = config
        .urls
        .iter()
        .map(|url| url.parse::<async_nats::ServerAddr>().map_err(|error| NatsError::Other(format!("nats url {url:?}: {error}"))))
        .collect::<Result<Vec<_>, _>>()?;
    if addresses.is_empty() {
        return Err(NatsError::Other("no nats urls configured".to_string()));
    }
    let mut last = String::new();
    for attempt in 1..=config.connect_attempts.max(1) {
        let options = async_nats::ConnectOptions::new()
            .connection_timeout(config.request_timeout)
            .request_timeout(Some(config.request_timeout))
            // Reconnects after a connection was up are the client's job, without end.
            .max_reconnects(None);
        match tokio::time::timeout(config.request_timeout * 2, options.connect(addresses.clone())).await {
            Ok(Ok(client)) => return Ok(client),
            Ok(Err(error)) => last = error.to_string(),
            Err(_) => last = format!("no connection within {:?}", config.request_timeout * 2),
        }
        tracing::warn!(attempt, urls = %names, error = %last, "connecting to NATS");
        tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
    }
    Err(NatsError::Unavailable(format!("connecting to {names}: {last} (after {} attempts)", config.connect_attempts.max(1))))
}

/// Retry an operation while it fails with a transient error (a timeout, no responders, no leader
/// yet: a cluster starting, or objects this new), for at most 15 s.
async fn retry_transient<T, E, F, Fut>(what: &str, mut operation: F) -> Result<T, E>
where
    E: std::error::Error + 'static,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match operation().await {
            Ok(value) => return Ok(value),
            Err(error) if Instant::now() < deadline && matches!(classify(what, &error), NatsError::Unavailable(_)) => {
                tracing::debug!(%error, "{what}: transient, again");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(error) => return Err(error),
        }
    }
}

/// The JetStream API error code in an error's source chain. The client keeps it as a source
/// for some operations and inside the error's kind for others (stream and consumer creation), where
/// only the text (`... (code 400, error code 10058)`) carries it.
pub fn jetstream_code(error: &(dyn std::error::Error + 'static)) -> Option<jetstream::ErrorCode> {
    chain(error).find_map(|error| {
        if let Some(api) = error.downcast_ref::<jetstream::Error>() {
            return Some(api.error_code());
        }
        let text = error.to_string();
        let (_, after) = text.split_once("error code ")?;
        let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok().map(jetstream::ErrorCode)
    })
}

fn chain<'a>(error: &'a (dyn std::error::Error + 'static)) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(error), |error| error.source())
}

/// Map a client error to [`NatsError`] by what is in its source chain: the JetStream code of a
/// lost compare-and-set, of no quorum or leader; a request that timed out or met no responders.
pub fn classify(what: &str, error: &(dyn std::error::Error + 'static)) -> NatsError {
    let message = format!("{what}: {}", chain(error).map(ToString::to_string).collect::<Vec<_>>().join(": "));
    if let Some(code) = jetstream_code(error) {
        return match code {
            jetstream::ErrorCode::STREAM_WRONG_LAST_SEQUENCE | jetstream::ErrorCode::STREAM_WRONG_LAST_SEQUENCE_CONSTANT => {
                NatsError::Conflict(message)
            }
            jetstream::ErrorCode::CLUSTER_NOT_AVAILABLE
            | jetstream::ErrorCode::CLUSTER_NOT_LEADER
            | jetstream::ErrorCode::CLUSTER_INCOMPLETE
            | jetstream::ErrorCode::CLUSTER_NO_PEERS
            | jetstream::ErrorCode::CLUSTER_NOT_ACTIVE
            | jetstream::ErrorCode::CLUSTER_NOT_ASSIGNED
            | jetstream::ErrorCode::INSUFFICIENT_RESOURCES => NatsError::Unavailable(message),
            _ => NatsError::Other(message),
        };
    }
    let transient = chain(error).any(|error| {
        if let Some(request) = error.downcast_ref::<async_nats::RequestError>() {
            return matches!(request.kind(), async_nats::RequestErrorKind::TimedOut | async_nats::RequestErrorKind::NoResponders);
        }
        if let Some(request) = error.downcast_ref::<jetstream::context::RequestError>() {
            return matches!(
                request.kind(),
                jetstream::context::RequestErrorKind::TimedOut | jetstream::context::RequestErrorKind::NoResponders
            );
        }
        if let Some(publish) = error.downcast_ref::<jetstream::context::PublishError>() {
            return matches!(
                publish.kind(),
                jetstream::context::PublishErrorKind::TimedOut
                    | jetstream::context::PublishErrorKind::BrokenPipe
                    | jetstream::context::PublishErrorKind::StreamNotFound
            );
        }
        // Timeouts and lost connections that the client reports by their text only (`503 no
        // responders` on a direct get while a stream elects a leader, a broken pipe).
        let text = error.to_string().to_ascii_lowercase();
        text.contains("timed out") || text.contains("no responders") || text.contains("timeout") || text.contains("broken pipe")
    });
    if transient { NatsError::Unavailable(message) } else { NatsError::Other(message) }
}

fn stream_fields(config: &stream::Config) -> Vec<(&'static str, String)> {
    vec![
        ("subjects", format!("{:?}", config.subjects)),
        ("num_replicas", config.num_replicas.to_string()),
        ("storage", format!("{:?}", config.storage)),
        ("retention", format!("{:?}", config.retention)),
        ("discard", format!("{:?}", config.discard)),
        ("allow_direct", config.allow_direct.to_string()),
    ]
}

fn consumer_fields(config: &consumer::pull::Config) -> Vec<(&'static str, String)> {
    vec![
        ("filter_subject", config.filter_subject.clone()),
        ("ack_policy", format!("{:?}", config.ack_policy)),
        ("ack_wait", format!("{:?}", config.ack_wait)),
        ("max_deliver", config.max_deliver.to_string()),
        ("max_ack_pending", config.max_ack_pending.to_string()),
        ("num_replicas", config.num_replicas.to_string()),
        ("priority_policy", format!("{:?}", config.priority_policy)),
        ("priority_groups", format!("{:?}", config.priority_groups)),
        ("priority_timeout", format!("{:?}", config.priority_timeout)),
    ]
}

/// `Incompatible` naming each field that differs; `Ok` when none does.
fn compare(object: &str, existing: &[(&str, String)], wanted: &[(&str, String)]) -> Result<(), NatsError> {
    let differences: Vec<String> = existing
        .iter()
        .zip(wanted)
        .filter(|((_, existing), (_, wanted))| existing != wanted)
        .map(|((field, existing), (_, wanted))| format!("{field}: existing {existing}, this node wants {wanted}"))
        .collect();
    if differences.is_empty() { Ok(()) } else { Err(NatsError::Incompatible { object: object.to_string(), differences }) }
}

/// A stream's duplicate window no longer than its `max_age` (the server refuses a longer one):
/// retention shorter than the window means a retry arriving after its original was deleted is new.
fn window_within(window: Duration, max_age: Duration) -> Duration {
    if max_age.is_zero() { window } else { window.min(max_age) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_ids_are_their_own_token() {
        for id in ["acct-1", "A_b-9", "0", "reservation_123"] {
            assert_eq!(subject_token(id), id);
            assert_eq!(token_id(id).as_deref(), Some(id));
        }
    }

    #[test]
    fn every_odd_character_is_hex_encoded_and_decodes_back() {
        let odd = [
            "", "a.b", "a*", "a>", ">", "*", "a b", "a\tb", "a\nb", "a\rb", "a\0b", "a$b", "a/b", "a:b", "a=b", "é", "日本", "a\u{7f}",
            // A plain-looking id starting with `x` is encoded too, so it cannot meet an encoded one.
            "x", "x41", "xyz",
        ];
        for id in odd {
            let token = subject_token(id);
            assert!(token.starts_with('x'), "{id:?} -> {token:?}");
            assert!(token.len() > 1 || id.is_empty());
            assert!(token.bytes().all(|byte| byte.is_ascii_alphanumeric()), "{id:?} -> {token:?} is not a plain token");
            assert_eq!(token_id(&token).as_deref(), Some(id), "{token:?}");
        }
        assert_eq!(subject_token("a.b"), "x612e62");
        assert_eq!(subject_token("x41"), "x783431");
        assert_ne!(subject_token("x41"), subject_token("A"));
    }

    #[test]
    fn a_token_not_made_here_does_not_decode() {
        assert_eq!(token_id("xzz"), None);
        assert_eq!(token_id("xff"), None, "not UTF-8");
    }

    #[test]
    fn partition_is_fnv1a64_modulo_the_count() {
        // FNV-1a 64 test vectors (the FNV reference's): "a" and "foobar".
        assert_eq!(partition_of("a", u32::MAX), (0xaf63dc4c8601ec8c_u64 % u64::from(u32::MAX)) as u32);
        assert_eq!(partition_of("foobar", 32), (0x85944171f73967e8_u64 % 32) as u32);
        assert_eq!(partition_of("", 7), (0xcbf29ce484222325_u64 % 7) as u32);
        assert!((0..1000).all(|index| partition_of(&format!("acct-{index}"), 4) < 4));
        assert_eq!(partition_of("anything", 1), 0);
    }

    #[test]
    fn compare_names_each_difference() {
        let existing = [("num_replicas", "3".to_string()), ("history", "1".to_string())];
        let wanted = [("num_replicas", "1".to_string()), ("history", "1".to_string())];
        let error = compare("SH_STATE", &existing, &wanted).unwrap_err();
        assert_eq!(error.to_string(), "SH_STATE exists with another configuration: num_replicas: existing 3, this node wants 1");
        assert_eq!(compare("SH_STATE", &existing, &existing), Ok(()));
    }
}
