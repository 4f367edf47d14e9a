//! Configuration: a TOML file, then environment overrides, then resolution into [`Settings`].
//!
//! [`RawConfig`] is what the operator wrote: it deserializes and validates ranges, and does no I/O.
//! [`Settings`] is what the daemon runs with: durations parsed, defaults derived. Every key has a
//! default, so `stayhook serve` runs with no file at all; `config/stayhook.toml` in the repository
//! is the commented default file, and a test checks that it parses to [`RawConfig::default`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub mod os;

/// The SNS hosts certificates (and subscription confirmations) may come from by default: any
/// region's `https://sns.<region>.amazonaws.com` (`sns_certificate_hosts`).
pub const DEFAULT_SNS_CERTIFICATE_HOSTS: &[&str] = &["https://sns.*.amazonaws.com"];

/// Largest `max_connections` / `admin_max_connections` accepted.
const MAX_CONNECTIONS_CAP: usize = 1 << 20;

/// Open files kept for everything but the servers' connections and the deliveries in flight: the
/// store's files, plugin files and their watcher, enrichment calls, logs.
pub const RESERVED_OPEN_FILES: u64 = 128;

/// The public listener's cap is never lowered below this by [`Settings::fit_open_files`].
const MIN_FITTED_CONNECTIONS: usize = 16;

/// Why configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}: {message}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        message: String,
    },
    /// The file is not valid TOML for this schema.
    #[error("parsing {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A value is out of range or malformed.
    #[error("config key `{key}`: {message}")]
    Invalid {
        /// The key (TOML name; the environment variable is `STAYHOOK_` + upper case).
        key: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// Configuration as written in the file and the environment.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawConfig {
    /// Where sled keeps its files and the compiled-plugin cache lives.
    pub data_dir: PathBuf,
    /// Address of the public listener (PMS webhooks arrive here).
    pub listen: String,
    /// Address of the admin API; keep it on loopback or a private network.
    pub admin_listen: String,
    /// Bearer token of the admin API; generated, stored and printed once when unset.
    pub admin_token: Option<String>,
    /// Base of every account's `listenerUrl`; defaults to `http://` + `listen`.
    pub public_url: Option<String>,
    /// Folder of extra plugin `.wasm` files; a file plugin replaces a built-in one of its name.
    pub plugin_dir: Option<PathBuf>,
    /// Folder of compiled plugins; defaults to `<data_dir>/plugin-cache`.
    pub plugin_cache_dir: Option<PathBuf>,
    /// Memory sled may use to cache pages, in MiB (bounds the daemon's memory, not the data).
    pub store_cache_mb: u64,
    /// Size a segment file of the store grows to before the next starts, in KiB (retention
    /// deletes whole segments, so smaller ones return disk sooner).
    pub store_segment_kb: u64,
    /// Allow deliveries and PMS API calls to loopback, private and link-local addresses (and http
    /// account `apiBaseUrl`s).
    pub allow_private_destinations: bool,
    /// Largest webhook body accepted.
    pub body_limit_bytes: usize,
    /// Time a connection has to deliver a complete request head, counted from its opening or the
    /// end of the previous answer (so also the longest a kept-alive connection waits for another
    /// request). Both servers.
    pub header_timeout_ms: u64,
    /// Time a request body has to arrive in full, counted from the end of its head; later: 408
    /// `request_timeout` and the connection is closed. Both servers.
    pub body_timeout_ms: u64,
    /// A connection on which no byte moves for this long, while no handler works on a request of
    /// it, is closed (a silent new connection, an idle keep-alive one, a client that stops reading
    /// its answer). Both servers.
    pub idle_timeout_ms: u64,
    /// Connections the public listener serves at once; further ones wait in the kernel's accept
    /// queue until one closes. Lowered at start when the open-file limit cannot hold it.
    pub max_connections: usize,
    /// Connections the admin API serves at once (its own budget: a flooded public listener never
    /// takes the admin API's).
    pub admin_max_connections: usize,
    /// At shutdown, how long in-flight requests may take to finish before their connections are
    /// closed.
    pub shutdown_timeout_ms: u64,
    /// An identical body for the same account within this window is acknowledged and dropped.
    pub dedup_window_secs: u64,
    /// Where Amazon SNS signing certificates (and subscription confirmations) may be fetched from:
    /// `scheme://host[:port]` patterns, a `*` label matching one DNS label. Default
    /// `https://sns.*.amazonaws.com`; widen it only for tests.
    pub sns_certificate_hosts: Vec<String>,
    /// Delays between delivery attempts ("5s", "5m", "2h"); attempts = 1 + the number of delays.
    pub retry_schedule: Vec<String>,
    /// Random spread applied to each retry delay, as a percentage (20 means ±20%).
    pub retry_jitter_percent: u8,
    /// Time limit of one delivery attempt.
    pub delivery_timeout_ms: u64,
    /// Deliveries in flight at once, across all subscriptions.
    pub delivery_concurrency: usize,
    /// A subscription whose deliveries have failed for this long is disabled when one more is
    /// dead-lettered (0 never disables).
    pub disable_after_failing_secs: u64,
    /// Threads that run plugins; 0 means one per CPU.
    pub normalizer_threads: usize,
    /// Time limit of one plugin call.
    pub plugin_timeout_ms: u64,
    /// Memory cap of one plugin instance: all its linear memories together.
    pub plugin_memory_bytes: usize,
    /// Granularity of plugin time limits.
    pub epoch_tick_ms: u64,
    /// Drop reservation and conversation updates that change nothing in the unified record.
    pub drop_unchanged_updates: bool,
    /// Rounds of API calls one webhook may ask for.
    pub enrichment_max_rounds: u32,
    /// API calls one round may ask for.
    pub enrichment_max_requests: usize,
    /// Delays between tries of one API call ("1s", "2s"); tries = 1 + the number of delays.
    pub enrichment_retry_schedule: Vec<String>,
    /// Time limit of one API call.
    pub enrichment_timeout_ms: u64,
    /// API calls per second per account, for PMSs without a built-in default.
    pub enrichment_rate_per_second: u32,
    /// Seconds between two reconciliation passes of an account whose plugin can list its records
    /// (`0`: off); an account's `reconcileIntervalSecs` overrides it.
    pub reconcile_interval_secs: u64,
    /// Whether a new account whose plugin can list records starts with an initial sync (state
    /// only) when its `initialSync.enabled` does not say.
    pub initial_sync: bool,
    /// Webhooks per second one account may post to its listener URL, with a burst of twice that;
    /// over it the listener answers 429 with `Retry-After` (0 means no limit).
    pub listener_requests_per_second: u32,
    /// Body bytes per second one account may post, with a burst of twice that (and at least one
    /// body of `body_limit_bytes`); over it, 429 with `Retry-After` (0 means no limit).
    pub listener_bytes_per_second: u64,
    /// A dead-lettered delivery holds back the later events of its record to that subscription
    /// until it is redelivered or discarded, so a receiver never sees them out of order. `false`
    /// releases the record's next event at once (order is then not kept across dead letters).
    pub dead_letters_hold_lane: bool,
    /// What the store keeps and how the pruner deletes the rest (the `[retention]` section).
    pub retention: RetentionConfig,
    /// Where the daemon keeps its data: `sled` (embedded, in `data_dir`) or `nats` (a JetStream
    /// cluster shared by any number of nodes, the `[nats]` section).
    pub store: StoreKind,
    /// The JetStream cluster of `store = "nats"` (the `[nats]` section).
    pub nats: NatsSection,
}

/// The storage backend (`store`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// The embedded sled store in `data_dir`: one node.
    #[default]
    Sled,
    /// A NATS JetStream cluster: any number of nodes (README, "Scale out").
    Nats,
}

impl std::str::FromStr for StoreKind {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "sled" => Ok(StoreKind::Sled),
            "nats" => Ok(StoreKind::Nats),
            other => Err(format!("{other:?} is not a store (sled or nats)")),
        }
    }
}

/// The `[nats]` section: how a node reaches the JetStream cluster (used with `store = "nats"`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsSection {
    /// The cluster's client URLs; the client fails over between them.
    pub urls: Vec<String>,
    /// Replicas of every stream and bucket: 3 (survives one NATS server's death) or 1 (a single
    /// server, for trying it out).
    pub replicas: usize,
    /// Inbox partitions (the unit of per-account order and of spreading normalization over
    /// nodes); fixed by the first node that initialises the cluster.
    pub partitions: u32,
    /// How long a webhook handed to a node may stay unacknowledged before another node gets it.
    pub ack_wait_ms: u64,
    /// How long a node keeps a partition after it stops pulling (its death): the failover time.
    pub pin_ttl_ms: u64,
    /// The inbox's duplicate window (`Nats-Msg-Id`): a PMS retry within it is answered
    /// `duplicate`; later ones are normalized and dropped as unchanged updates.
    pub duplicate_window_secs: u64,
    /// How long the deliveries a node was attempting wait for another node after it died.
    pub work_ack_wait_ms: u64,
}

impl Default for NatsSection {
    fn default() -> Self {
        let defaults = crate::store::nats::NatsConfig::default();
        Self {
            urls: defaults.urls,
            replicas: defaults.replicas,
            partitions: defaults.partitions,
            ack_wait_ms: millis(defaults.ack_wait),
            pin_ttl_ms: millis(defaults.pin_ttl),
            duplicate_window_secs: defaults.duplicate_window.as_secs(),
            work_ack_wait_ms: millis(defaults.work_ack_wait),
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// How long something is kept: a number of days, a duration with a unit (`"36h"`, `"30d"`,
/// `"10s"` for tests), or `0` / `"off"` to keep it forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period(pub Option<Duration>);

impl Period {
    /// Kept this many days.
    pub const fn days(days: u64) -> Self {
        Self(Some(Duration::from_secs(days * 24 * 60 * 60)))
    }

    /// Parse `30`, `"30d"`, `"12h"`, `"0"` or `"off"`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("off") || text.eq_ignore_ascii_case("forever") {
            return Ok(Self(None));
        }
        if let Ok(days) = text.parse::<u64>() {
            return Ok(Self::from_days(days));
        }
        let duration =
            humantime::parse_duration(text).map_err(|error| format!("{text:?}: {error} (a number of days, \"36h\", or \"off\")"))?;
        Ok(Self((!duration.is_zero()).then_some(duration)))
    }

    fn from_days(days: u64) -> Self {
        Self((days > 0).then(|| Duration::from_secs(days.saturating_mul(24 * 60 * 60))))
    }

    /// The instant (Unix ms) before which things are deleted, at `now_ms`; 0 when kept forever.
    pub fn cutoff_ms(self, now_ms: u64) -> u64 {
        self.0.map_or(0, |kept| now_ms.saturating_sub(u64::try_from(kept.as_millis()).unwrap_or(u64::MAX)))
    }

    /// As written back: whole days as a number, else a duration, `"off"` when kept forever.
    pub fn describe(self) -> String {
        match self.0 {
            None => "off".into(),
            Some(kept) if kept.as_secs() % 86_400 == 0 && kept.subsec_nanos() == 0 => format!("{}d", kept.as_secs() / 86_400),
            Some(kept) => humantime::format_duration(kept).to_string(),
        }
    }
}

impl<'de> Deserialize<'de> for Period {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Days(u64),
            Text(String),
        }
        match Written::deserialize(deserializer)? {
            Written::Days(days) => Ok(Period::from_days(days)),
            Written::Text(text) => Period::parse(&text).map_err(serde::de::Error::custom),
        }
    }
}

/// The `[retention]` section: what the store keeps (see the README's "Retention").
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Events whose deliveries are all delivered or cancelled, by the event's time.
    pub events: Period,
    /// Raw webhooks (inbox entries) no longer pending, with their outcomes, by arrival.
    pub inbox: Period,
    /// An event with a dead letter is kept at least this long after the delivery died (and
    /// never less than `events`); a dead letter redelivered is pending again and kept.
    pub dead_letters: Period,
    /// Time between pruning passes.
    pub prune_interval_ms: u64,
    /// Items one pruning step deletes at most; a pass repeats steps while there is more.
    pub prune_budget: usize,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            events: Period::days(30),
            inbox: Period::days(30),
            dead_letters: Period::days(90),
            prune_interval_ms: 60_000,
            prune_budget: 1000,
        }
    }
}

impl Default for RawConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./data"),
            listen: "0.0.0.0:8080".into(),
            admin_listen: "127.0.0.1:8081".into(),
            admin_token: None,
            public_url: None,
            plugin_dir: None,
            plugin_cache_dir: None,
            store_cache_mb: 32,
            store_segment_kb: 64 * 1024,
            allow_private_destinations: false,
            body_limit_bytes: 1024 * 1024,
            header_timeout_ms: 10_000,
            body_timeout_ms: 30_000,
            idle_timeout_ms: 5_000,
            max_connections: 512,
            admin_max_connections: 64,
            shutdown_timeout_ms: 10_000,
            dedup_window_secs: 24 * 60 * 60,
            sns_certificate_hosts: DEFAULT_SNS_CERTIFICATE_HOSTS.iter().map(|host| host.to_string()).collect(),
            retry_schedule: ["5s", "5m", "30m", "2h", "5h", "10h", "14h", "20h", "24h"].map(String::from).to_vec(),
            retry_jitter_percent: 20,
            delivery_timeout_ms: 15_000,
            delivery_concurrency: 256,
            disable_after_failing_secs: 5 * 24 * 60 * 60,
            normalizer_threads: 0,
            plugin_timeout_ms: 2_000,
            plugin_memory_bytes: 64 * 1024 * 1024,
            epoch_tick_ms: 10,
            drop_unchanged_updates: true,
            enrichment_max_rounds: 4,
            enrichment_max_requests: 16,
            enrichment_retry_schedule: ["1s", "4s", "15s"].map(String::from).to_vec(),
            enrichment_timeout_ms: 10_000,
            enrichment_rate_per_second: 5,
            reconcile_interval_secs: 15 * 60,
            initial_sync: true,
            listener_requests_per_second: 500,
            listener_bytes_per_second: 32 * 1024 * 1024,
            dead_letters_hold_lane: true,
            retention: RetentionConfig::default(),
            store: StoreKind::Sled,
            nats: NatsSection::default(),
        }
    }
}

/// What the daemon runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// sled's folder and the default cache's parent.
    pub data_dir: PathBuf,
    /// Public listener address.
    pub listen: String,
    /// Admin listener address.
    pub admin_listen: String,
    /// Admin token from config; `None` means use (or generate) the stored one.
    pub admin_token: Option<String>,
    /// Base of listener URLs; `None` means derive from the bound address.
    pub public_url: Option<String>,
    /// Plugin files (watched; uploads are written here).
    pub plugin_dir: PathBuf,
    /// Compiled-plugin cache.
    pub plugin_cache_dir: PathBuf,
    /// sled's page cache, in bytes.
    pub store_cache_bytes: u64,
    /// See [`RawConfig::store_segment_kb`], in bytes.
    pub store_segment_bytes: u64,
    /// See [`RawConfig::allow_private_destinations`].
    pub allow_private_destinations: bool,
    /// See [`RawConfig::body_limit_bytes`].
    pub body_limit_bytes: usize,
    /// See [`RawConfig::header_timeout_ms`].
    pub header_timeout: Duration,
    /// See [`RawConfig::body_timeout_ms`].
    pub body_timeout: Duration,
    /// See [`RawConfig::idle_timeout_ms`].
    pub idle_timeout: Duration,
    /// See [`RawConfig::max_connections`]; possibly lowered by [`Settings::fit_open_files`].
    pub max_connections: usize,
    /// See [`RawConfig::admin_max_connections`].
    pub admin_max_connections: usize,
    /// See [`RawConfig::shutdown_timeout_ms`].
    pub shutdown_timeout: Duration,
    /// See [`RawConfig::dedup_window_secs`].
    pub dedup_window: Duration,
    /// See [`RawConfig::sns_certificate_hosts`].
    pub sns_certificate_hosts: Vec<String>,
    /// Parsed retry delays.
    pub retry_schedule: Vec<Duration>,
    /// See [`RawConfig::retry_jitter_percent`].
    pub retry_jitter_percent: u8,
    /// See [`RawConfig::delivery_timeout_ms`].
    pub delivery_timeout: Duration,
    /// See [`RawConfig::delivery_concurrency`].
    pub delivery_concurrency: usize,
    /// `None` never disables.
    pub disable_after_failing: Option<Duration>,
    /// Resolved thread count (at least 1).
    pub normalizer_threads: usize,
    /// See [`RawConfig::plugin_timeout_ms`].
    pub plugin_timeout: Duration,
    /// See [`RawConfig::plugin_memory_bytes`].
    pub plugin_memory_bytes: usize,
    /// See [`RawConfig::epoch_tick_ms`].
    pub epoch_tick: Duration,
    /// See [`RawConfig::drop_unchanged_updates`].
    pub drop_unchanged_updates: bool,
    /// See [`RawConfig::enrichment_max_rounds`].
    pub enrichment_max_rounds: u32,
    /// See [`RawConfig::enrichment_max_requests`].
    pub enrichment_max_requests: usize,
    /// Parsed delays between tries of one API call.
    pub enrichment_retry_schedule: Vec<Duration>,
    /// See [`RawConfig::enrichment_timeout_ms`].
    pub enrichment_timeout: Duration,
    /// See [`RawConfig::enrichment_rate_per_second`].
    pub enrichment_rate_per_second: u32,
    /// See [`RawConfig::reconcile_interval_secs`]; `None`: reconciliation is off by default.
    pub reconcile_interval: Option<Duration>,
    /// See [`RawConfig::initial_sync`].
    pub initial_sync: bool,
    /// See [`RawConfig::listener_requests_per_second`]; `None` means no limit.
    pub listener_requests_per_second: Option<std::num::NonZeroU32>,
    /// [`RawConfig::listener_bytes_per_second`] in KiB (rounded up); `None` means no limit.
    pub listener_kib_per_second: Option<std::num::NonZeroU32>,
    /// See [`RawConfig::dead_letters_hold_lane`].
    pub dead_letters_hold_lane: bool,
    /// See [`RawConfig::retention`].
    pub retention: Retention,
    /// See [`RawConfig::store`].
    pub store: StoreKind,
    /// The cluster of `store = "nats"`: the `[nats]` section, with the retention periods as the
    /// streams' ages and the delivery timeout in the work's ack wait.
    pub nats: crate::store::nats::NatsConfig,
}

/// Retention as the daemon runs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Retention {
    /// See [`RetentionConfig::events`].
    pub events: Period,
    /// See [`RetentionConfig::inbox`].
    pub inbox: Period,
    /// See [`RetentionConfig::dead_letters`].
    pub dead_letters: Period,
    /// See [`RetentionConfig::prune_interval_ms`].
    pub prune_interval: Duration,
    /// See [`RetentionConfig::prune_budget`].
    pub prune_budget: usize,
}

impl Retention {
    /// The cutoffs at `now_ms`. A dead letter is never deleted before its event would be.
    pub fn cutoffs(&self, now_ms: u64) -> crate::store::RetentionCutoffs {
        let events_before_ms = self.events.cutoff_ms(now_ms);
        crate::store::RetentionCutoffs {
            events_before_ms,
            inbox_before_ms: self.inbox.cutoff_ms(now_ms),
            dead_letters_before_ms: self.dead_letters.cutoff_ms(now_ms).min(events_before_ms),
            now_ms,
        }
    }
}

impl RawConfig {
    /// Read the file at `path` (if any), then apply `STAYHOOK_*` variables from `environment`.
    pub fn load(path: Option<&Path>, environment: impl IntoIterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        let mut raw = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|error| ConfigError::Read { path: path.to_path_buf(), message: error.to_string() })?;
                toml::from_str(&text).map_err(|error| ConfigError::Parse { path: path.to_path_buf(), message: error.to_string() })?
            }
            None => RawConfig::default(),
        };
        for (name, value) in environment {
            if let Some(key) = name.strip_prefix("STAYHOOK_") {
                raw.apply_env(key, &value)?;
            }
        }
        Ok(raw)
    }

    fn apply_env(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        fn parse<T: std::str::FromStr>(key: &'static str, value: &str) -> Result<T, ConfigError>
        where
            T::Err: std::fmt::Display,
        {
            value.trim().parse().map_err(|error: T::Err| ConfigError::Invalid { key, message: format!("{value:?}: {error}") })
        }
        fn flag(key: &'static str, value: &str) -> Result<bool, ConfigError> {
            match value.trim().to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => Ok(true),
                "0" | "false" | "no" | "off" | "" => Ok(false),
                _ => Err(ConfigError::Invalid { key, message: format!("{value:?} is not a boolean") }),
            }
        }
        fn period(key: &'static str, value: &str) -> Result<Period, ConfigError> {
            Period::parse(value).map_err(|message| ConfigError::Invalid { key, message })
        }
        let non_empty = |value: &str| (!value.trim().is_empty()).then(|| value.trim().to_string());
        match key {
            "DATA_DIR" => self.data_dir = PathBuf::from(value),
            "LISTEN" => self.listen = value.to_string(),
            "ADMIN_LISTEN" => self.admin_listen = value.to_string(),
            "ADMIN_TOKEN" => self.admin_token = non_empty(value),
            "PUBLIC_URL" => self.public_url = non_empty(value),
            "PLUGIN_DIR" => self.plugin_dir = non_empty(value).map(PathBuf::from),
            "PLUGIN_CACHE_DIR" => self.plugin_cache_dir = non_empty(value).map(PathBuf::from),
            "STORE_CACHE_MB" => self.store_cache_mb = parse("store_cache_mb", value)?,
            "STORE_SEGMENT_KB" => self.store_segment_kb = parse("store_segment_kb", value)?,
            "ALLOW_PRIVATE_DESTINATIONS" => self.allow_private_destinations = flag("allow_private_destinations", value)?,
            "BODY_LIMIT_BYTES" => self.body_limit_bytes = parse("body_limit_bytes", value)?,
            "HEADER_TIMEOUT_MS" => self.header_timeout_ms = parse("header_timeout_ms", value)?,
            "BODY_TIMEOUT_MS" => self.body_timeout_ms = parse("body_timeout_ms", value)?,
            "IDLE_TIMEOUT_MS" => self.idle_timeout_ms = parse("idle_timeout_ms", value)?,
            "MAX_CONNECTIONS" => self.max_connections = parse("max_connections", value)?,
            "ADMIN_MAX_CONNECTIONS" => self.admin_max_connections = parse("admin_max_connections", value)?,
            "SHUTDOWN_TIMEOUT_MS" => self.shutdown_timeout_ms = parse("shutdown_timeout_ms", value)?,
            "DEDUP_WINDOW_SECS" => self.dedup_window_secs = parse("dedup_window_secs", value)?,
            "SNS_CERTIFICATE_HOSTS" => self.sns_certificate_hosts = comma_list(value),
            "RETRY_SCHEDULE" => self.retry_schedule = comma_list(value),
            "RETRY_JITTER_PERCENT" => self.retry_jitter_percent = parse("retry_jitter_percent", value)?,
            "DELIVERY_TIMEOUT_MS" => self.delivery_timeout_ms = parse("delivery_timeout_ms", value)?,
            "DELIVERY_CONCURRENCY" => self.delivery_concurrency = parse("delivery_concurrency", value)?,
            "DISABLE_AFTER_FAILING_SECS" => self.disable_after_failing_secs = parse("disable_after_failing_secs", value)?,
            "NORMALIZER_THREADS" => self.normalizer_threads = parse("normalizer_threads", value)?,
            "PLUGIN_TIMEOUT_MS" => self.plugin_timeout_ms = parse("plugin_timeout_ms", value)?,
            "PLUGIN_MEMORY_BYTES" => self.plugin_memory_bytes = parse("plugin_memory_bytes", value)?,
            "EPOCH_TICK_MS" => self.epoch_tick_ms = parse("epoch_tick_ms", value)?,
            "DROP_UNCHANGED_UPDATES" => self.drop_unchanged_updates = flag("drop_unchanged_updates", value)?,
            "ENRICHMENT_MAX_ROUNDS" => self.enrichment_max_rounds = parse("enrichment_max_rounds", value)?,
            "ENRICHMENT_MAX_REQUESTS" => self.enrichment_max_requests = parse("enrichment_max_requests", value)?,
            "ENRICHMENT_RETRY_SCHEDULE" => self.enrichment_retry_schedule = comma_list(value),
            "ENRICHMENT_TIMEOUT_MS" => self.enrichment_timeout_ms = parse("enrichment_timeout_ms", value)?,
            "ENRICHMENT_RATE_PER_SECOND" => self.enrichment_rate_per_second = parse("enrichment_rate_per_second", value)?,
            "RECONCILE_INTERVAL_SECS" => self.reconcile_interval_secs = parse("reconcile_interval_secs", value)?,
            "INITIAL_SYNC" => self.initial_sync = flag("initial_sync", value)?,
            "LISTENER_REQUESTS_PER_SECOND" => self.listener_requests_per_second = parse("listener_requests_per_second", value)?,
            "LISTENER_BYTES_PER_SECOND" => self.listener_bytes_per_second = parse("listener_bytes_per_second", value)?,
            "DEAD_LETTERS_HOLD_LANE" => self.dead_letters_hold_lane = flag("dead_letters_hold_lane", value)?,
            "RETENTION_EVENTS" => self.retention.events = period("retention.events", value)?,
            "RETENTION_INBOX" => self.retention.inbox = period("retention.inbox", value)?,
            "RETENTION_DEAD_LETTERS" => self.retention.dead_letters = period("retention.dead_letters", value)?,
            "RETENTION_PRUNE_INTERVAL_MS" => self.retention.prune_interval_ms = parse("retention.prune_interval_ms", value)?,
            "RETENTION_PRUNE_BUDGET" => self.retention.prune_budget = parse("retention.prune_budget", value)?,
            "STORE" => self.store = parse("store", value)?,
            "NATS_URLS" => self.nats.urls = comma_list(value),
            "NATS_REPLICAS" => self.nats.replicas = parse("nats.replicas", value)?,
            "NATS_PARTITIONS" => self.nats.partitions = parse("nats.partitions", value)?,
            "NATS_ACK_WAIT_MS" => self.nats.ack_wait_ms = parse("nats.ack_wait_ms", value)?,
            "NATS_PIN_TTL_MS" => self.nats.pin_ttl_ms = parse("nats.pin_ttl_ms", value)?,
            "NATS_DUPLICATE_WINDOW_SECS" => self.nats.duplicate_window_secs = parse("nats.duplicate_window_secs", value)?,
            "NATS_WORK_ACK_WAIT_MS" => self.nats.work_ack_wait_ms = parse("nats.work_ack_wait_ms", value)?,
            // STAYHOOK_CONFIG names the file itself; STAYHOOK_LOG is read by the logger.
            "CONFIG" | "LOG" => {}
            other => tracing::warn!(variable = %format!("STAYHOOK_{other}"), "unknown configuration variable ignored"),
        }
        Ok(())
    }

    /// Check ranges and resolve into [`Settings`].
    pub fn resolve(self) -> Result<Settings, ConfigError> {
        let retry_schedule = durations("retry_schedule", &self.retry_schedule)?;
        let enrichment_retry_schedule = durations("enrichment_retry_schedule", &self.enrichment_retry_schedule)?;
        if self.enrichment_rate_per_second == 0 || self.enrichment_max_rounds == 0 || self.enrichment_timeout_ms == 0 {
            return Err(ConfigError::Invalid { key: "enrichment_rate_per_second", message: "enrichment limits must be positive".into() });
        }
        if self.body_limit_bytes == 0 || self.body_limit_bytes > 64 * 1024 * 1024 {
            return Err(ConfigError::Invalid { key: "body_limit_bytes", message: "must be between 1 and 67108864".into() });
        }
        if self.retry_jitter_percent > 100 {
            return Err(ConfigError::Invalid { key: "retry_jitter_percent", message: "must be at most 100".into() });
        }
        if self.plugin_memory_bytes < 1024 * 1024 {
            return Err(ConfigError::Invalid { key: "plugin_memory_bytes", message: "must be at least 1 MiB".into() });
        }
        for (key, value) in [
            ("epoch_tick_ms", self.epoch_tick_ms),
            ("plugin_timeout_ms", self.plugin_timeout_ms),
            ("delivery_timeout_ms", self.delivery_timeout_ms),
            ("header_timeout_ms", self.header_timeout_ms),
            ("body_timeout_ms", self.body_timeout_ms),
            ("idle_timeout_ms", self.idle_timeout_ms),
            ("shutdown_timeout_ms", self.shutdown_timeout_ms),
        ] {
            if value == 0 {
                return Err(ConfigError::Invalid { key, message: "must be positive".into() });
            }
        }
        for (key, value) in [("max_connections", self.max_connections), ("admin_max_connections", self.admin_max_connections)] {
            if value == 0 || value > MAX_CONNECTIONS_CAP {
                return Err(ConfigError::Invalid { key, message: format!("must be between 1 and {MAX_CONNECTIONS_CAP}") });
            }
        }
        if self.retention.prune_interval_ms == 0 {
            return Err(ConfigError::Invalid { key: "retention.prune_interval_ms", message: "must be positive".into() });
        }
        if self.retention.prune_budget == 0 {
            return Err(ConfigError::Invalid { key: "retention.prune_budget", message: "must be at least 1".into() });
        }
        if self.delivery_concurrency == 0 {
            return Err(ConfigError::Invalid { key: "delivery_concurrency", message: "must be at least 1".into() });
        }
        if let Some(public_url) = &self.public_url
            && !(public_url.starts_with("http://") || public_url.starts_with("https://"))
        {
            return Err(ConfigError::Invalid { key: "public_url", message: format!("{public_url:?} is not an http(s) URL") });
        }
        for (key, address) in [("listen", &self.listen), ("admin_listen", &self.admin_listen)] {
            address.parse::<SocketAddr>().map_err(|error| ConfigError::Invalid { key, message: format!("{address:?}: {error}") })?;
        }
        let normalizer_threads = match self.normalizer_threads {
            0 => std::thread::available_parallelism().map(usize::from).unwrap_or(2),
            n => n,
        };
        // The byte limit counts KiB cells (governor counts in u32), so a limit is at least 1 KiB/s.
        let listener_kib_per_second = self.listener_bytes_per_second.div_ceil(1024);
        let listener_kib_per_second = (listener_kib_per_second > 0)
            .then(|| u32::try_from(listener_kib_per_second).ok().and_then(std::num::NonZeroU32::new))
            .map(|limit| limit.ok_or(ConfigError::Invalid { key: "listener_bytes_per_second", message: "must be below 4 TiB/s".into() }))
            .transpose()?;
        let nats = self.nats_config()?;
        let plugin_cache_dir = self.plugin_cache_dir.clone().unwrap_or_else(|| self.data_dir.join("plugin-cache"));
        let plugin_dir = self.plugin_dir.clone().unwrap_or_else(|| self.data_dir.join("plugins"));
        Ok(Settings {
            data_dir: self.data_dir,
            listen: self.listen,
            admin_listen: self.admin_listen,
            admin_token: self.admin_token,
            public_url: self.public_url.map(|url| url.trim_end_matches('/').to_string()),
            plugin_dir,
            plugin_cache_dir,
            store_cache_bytes: self.store_cache_mb.max(1).saturating_mul(1024 * 1024),
            store_segment_bytes: self.store_segment_kb.clamp(64, 1024 * 1024).saturating_mul(1024),
            allow_private_destinations: self.allow_private_destinations,
            body_limit_bytes: self.body_limit_bytes,
            header_timeout: Duration::from_millis(self.header_timeout_ms),
            body_timeout: Duration::from_millis(self.body_timeout_ms),
            idle_timeout: Duration::from_millis(self.idle_timeout_ms),
            max_connections: self.max_connections,
            admin_max_connections: self.admin_max_connections,
            shutdown_timeout: Duration::from_millis(self.shutdown_timeout_ms),
            dedup_window: Duration::from_secs(self.dedup_window_secs),
            sns_certificate_hosts: self.sns_certificate_hosts,
            retry_schedule,
            retry_jitter_percent: self.retry_jitter_percent,
            delivery_timeout: Duration::from_millis(self.delivery_timeout_ms),
            delivery_concurrency: self.delivery_concurrency,
            disable_after_failing: (self.disable_after_failing_secs > 0).then(|| Duration::from_secs(self.disable_after_failing_secs)),
            normalizer_threads,
            plugin_timeout: Duration::from_millis(self.plugin_timeout_ms),
            plugin_memory_bytes: self.plugin_memory_bytes,
            epoch_tick: Duration::from_millis(self.epoch_tick_ms),
            drop_unchanged_updates: self.drop_unchanged_updates,
            enrichment_max_rounds: self.enrichment_max_rounds,
            enrichment_max_requests: self.enrichment_max_requests,
            enrichment_retry_schedule,
            enrichment_timeout: Duration::from_millis(self.enrichment_timeout_ms),
            enrichment_rate_per_second: self.enrichment_rate_per_second,
            reconcile_interval: (self.reconcile_interval_secs > 0).then(|| Duration::from_secs(self.reconcile_interval_secs)),
            initial_sync: self.initial_sync,
            listener_requests_per_second: std::num::NonZeroU32::new(self.listener_requests_per_second),
            listener_kib_per_second,
            dead_letters_hold_lane: self.dead_letters_hold_lane,
            retention: Retention {
                events: self.retention.events,
                inbox: self.retention.inbox,
                dead_letters: self.retention.dead_letters,
                prune_interval: Duration::from_millis(self.retention.prune_interval_ms),
                prune_budget: self.retention.prune_budget,
            },
            store: self.store,
            nats,
        })
    }

    /// The `[nats]` section checked, as the backend's configuration. Each node's pruner deletes
    /// what retention no longer keeps, as on the embedded store; the streams also delete by age, a
    /// backstop: events and attempts at the longer of the events' and dead letters' periods (a
    /// dead letter names its event), the inbox at the longest of the three (it also holds the
    /// renormalization requests, which no pruner walks).
    fn nats_config(&self) -> Result<crate::store::nats::NatsConfig, ConfigError> {
        let section = &self.nats;
        if section.urls.is_empty() {
            return Err(ConfigError::Invalid { key: "nats.urls", message: "name at least one server (nats://host:4222)".into() });
        }
        for url in &section.urls {
            let scheme_ok = ["nats://", "tls://", "ws://", "wss://"].iter().any(|scheme| url.starts_with(scheme));
            if !scheme_ok || url.split("://").nth(1).is_none_or(str::is_empty) {
                return Err(ConfigError::Invalid { key: "nats.urls", message: format!("{url:?} is not a NATS URL (nats://host:port)") });
            }
        }
        if section.replicas != 1 && section.replicas != 3 {
            return Err(ConfigError::Invalid { key: "nats.replicas", message: format!("{} is neither 1 nor 3", section.replicas) });
        }
        if !(1..=1024).contains(&section.partitions) {
            return Err(ConfigError::Invalid { key: "nats.partitions", message: "must be between 1 and 1024".into() });
        }
        for (key, value) in [
            ("nats.ack_wait_ms", section.ack_wait_ms),
            ("nats.pin_ttl_ms", section.pin_ttl_ms),
            ("nats.duplicate_window_secs", section.duplicate_window_secs),
            ("nats.work_ack_wait_ms", section.work_ack_wait_ms),
        ] {
            if value == 0 {
                return Err(ConfigError::Invalid { key, message: "must be positive".into() });
            }
        }
        let longest = |a: Period, b: Period| match (a.0, b.0) {
            (Some(a), Some(b)) => a.max(b),
            _ => Duration::ZERO,
        };
        let kept = longest(self.retention.events, self.retention.dead_letters);
        let inbox_kept = if kept.is_zero() { kept } else { longest(self.retention.inbox, Period(Some(kept))) };
        Ok(crate::store::nats::NatsConfig {
            urls: section.urls.clone(),
            replicas: section.replicas,
            partitions: section.partitions,
            ack_wait: Duration::from_millis(section.ack_wait_ms),
            pin_ttl: Duration::from_millis(section.pin_ttl_ms),
            duplicate_window: Duration::from_secs(section.duplicate_window_secs),
            inbox_max_age: inbox_kept,
            events_max_age: kept,
            attempts_max_age: kept,
            work_ack_wait: Duration::from_millis(section.work_ack_wait_ms),
            ..Default::default()
        })
    }
}

impl Settings {
    /// Lower the public listener's connection cap so that its connections, the admin API's, every
    /// delivery in flight and [`RESERVED_OPEN_FILES`] fit in `open_files_limit` (the process's
    /// soft `RLIMIT_NOFILE`): running out of descriptors shuts out every socket and file at once,
    /// the admin API and the store included. Returns the configured cap when it was lowered.
    pub fn fit_open_files(&mut self, open_files_limit: u64) -> Option<usize> {
        let others = u64::try_from(self.delivery_concurrency.saturating_add(self.admin_max_connections))
            .unwrap_or(u64::MAX)
            .saturating_add(RESERVED_OPEN_FILES);
        let room = usize::try_from(open_files_limit.saturating_sub(others)).unwrap_or(usize::MAX).max(MIN_FITTED_CONNECTIONS);
        if self.max_connections <= room {
            return None;
        }
        let configured = self.max_connections;
        self.max_connections = room;
        Some(configured)
    }
}

fn comma_list(value: &str) -> Vec<String> {
    value.split(',').map(str::trim).filter(|part| !part.is_empty()).map(String::from).collect()
}

fn durations(key: &'static str, texts: &[String]) -> Result<Vec<Duration>, ConfigError> {
    texts
        .iter()
        .map(|text| humantime::parse_duration(text).map_err(|error| ConfigError::Invalid { key, message: format!("{text:?}: {error}") }))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_default_file_matches_defaults() {
        let text = include_str!("../../config/stayhook.toml");
        let parsed: RawConfig = toml::from_str(text).expect("config/stayhook.toml parses");
        assert_eq!(parsed, RawConfig::default());
    }

    #[test]
    fn environment_overrides_the_defaults() {
        let environment = [
            ("STAYHOOK_RETRY_SCHEDULE", "1s, 1s,2s,5s"),
            ("STAYHOOK_ALLOW_PRIVATE_DESTINATIONS", "true"),
            ("STAYHOOK_LISTEN", "127.0.0.1:0"),
            ("PATH", "/bin"),
        ]
        .map(|(name, value)| (name.to_string(), value.to_string()));
        let settings = RawConfig::load(None, environment).unwrap().resolve().unwrap();
        assert_eq!(settings.retry_schedule, [1, 1, 2, 5].map(Duration::from_secs).to_vec());
        assert!(settings.allow_private_destinations);
        assert_eq!(settings.listen, "127.0.0.1:0");
    }

    #[test]
    fn connection_caps_fit_the_open_file_limit() {
        // The defaults fit the usual soft limit (1024) with room for deliveries and the rest, so
        // they fit whatever the daemon raises it to.
        let mut settings = RawConfig::default().resolve().unwrap();
        assert_eq!(settings.fit_open_files(1024), None);
        let used = settings.max_connections + settings.admin_max_connections + settings.delivery_concurrency;
        assert!(u64::try_from(used).unwrap() + RESERVED_OPEN_FILES <= 1024, "{used}");
        // A smaller limit lowers the public cap to what is left.
        assert_eq!(settings.fit_open_files(800), Some(512));
        let used = settings.max_connections + settings.admin_max_connections + settings.delivery_concurrency;
        assert_eq!(u64::try_from(used).unwrap() + RESERVED_OPEN_FILES, 800);
        // Absurdly low limits still leave the listener a few connections.
        assert_eq!(settings.fit_open_files(64), Some(352));
        assert_eq!(settings.max_connections, MIN_FITTED_CONNECTIONS);
    }

    #[test]
    fn connection_settings_are_checked() {
        for (name, value) in [
            ("STAYHOOK_MAX_CONNECTIONS", "0"),
            ("STAYHOOK_ADMIN_MAX_CONNECTIONS", "0"),
            ("STAYHOOK_HEADER_TIMEOUT_MS", "0"),
            ("STAYHOOK_BODY_TIMEOUT_MS", "0"),
            ("STAYHOOK_IDLE_TIMEOUT_MS", "0"),
            ("STAYHOOK_MAX_CONNECTIONS", "99999999999"),
        ] {
            let key = name.trim_start_matches("STAYHOOK_").to_ascii_lowercase();
            let error = RawConfig::load(None, [(name.to_string(), value.to_string())]).unwrap().resolve().unwrap_err();
            assert!(error.to_string().contains(&key), "{name}={value}: {error}");
        }
        let environment = [("STAYHOOK_BODY_TIMEOUT_MS", "250"), ("STAYHOOK_ADMIN_MAX_CONNECTIONS", "3")]
            .map(|(name, value)| (name.to_string(), value.to_string()));
        let settings = RawConfig::load(None, environment).unwrap().resolve().unwrap();
        assert_eq!(settings.body_timeout, Duration::from_millis(250));
        assert_eq!(settings.admin_max_connections, 3);
    }

    #[test]
    fn retention_defaults_and_section() {
        let settings = RawConfig::default().resolve().unwrap();
        let day_ms = 24 * 60 * 60 * 1000;
        let now_ms = 1_000 * day_ms;
        let cutoffs = settings.retention.cutoffs(now_ms);
        assert_eq!(cutoffs.events_before_ms, now_ms - 30 * day_ms);
        assert_eq!(cutoffs.inbox_before_ms, now_ms - 30 * day_ms);
        assert_eq!(cutoffs.dead_letters_before_ms, now_ms - 90 * day_ms);
        assert_eq!(settings.retention.prune_interval, Duration::from_secs(60));

        let text = "[retention]\nevents = 7\ninbox = \"off\"\ndead_letters = \"36h\"\nprune_budget = 50\n";
        let raw: RawConfig = toml::from_str(text).unwrap();
        let retention = raw.resolve().unwrap().retention;
        assert_eq!(retention.events, Period::days(7));
        assert_eq!(retention.inbox, Period(None));
        assert_eq!(retention.dead_letters, Period(Some(Duration::from_secs(36 * 60 * 60))));
        assert_eq!(retention.prune_budget, 50);
        // Off keeps everything; a dead letter is never deleted before its event would be.
        let cutoffs = retention.cutoffs(now_ms);
        assert_eq!(cutoffs.inbox_before_ms, 0);
        assert_eq!(cutoffs.dead_letters_before_ms, now_ms - 7 * day_ms);
        assert_eq!([retention.events, retention.inbox, retention.dead_letters].map(Period::describe), ["7d", "off", "1day 12h"]);

        let error = toml::from_str::<RawConfig>("[retention]\nevents = \"soon\"\n").unwrap_err();
        assert!(error.to_string().contains("soon"), "{error}");
        let error = toml::from_str::<RawConfig>("[retention]\nkeep = 1\n").unwrap_err();
        assert!(error.to_string().contains("keep"), "{error}");
    }

    #[test]
    fn retention_from_the_environment() {
        let environment = [
            ("STAYHOOK_RETENTION_EVENTS", "2s"),
            ("STAYHOOK_RETENTION_INBOX", "0"),
            ("STAYHOOK_RETENTION_DEAD_LETTERS", "90"),
            ("STAYHOOK_RETENTION_PRUNE_INTERVAL_MS", "250"),
            ("STAYHOOK_RETENTION_PRUNE_BUDGET", "10"),
        ]
        .map(|(name, value)| (name.to_string(), value.to_string()));
        let retention = RawConfig::load(None, environment).unwrap().resolve().unwrap().retention;
        assert_eq!(retention.events, Period(Some(Duration::from_secs(2))));
        assert_eq!(retention.inbox, Period(None));
        assert_eq!(retention.dead_letters, Period::days(90));
        assert_eq!(retention.prune_interval, Duration::from_millis(250));
        assert_eq!(retention.prune_budget, 10);
        for (name, value) in [
            ("STAYHOOK_RETENTION_EVENTS", "a while"),
            ("STAYHOOK_RETENTION_PRUNE_BUDGET", "0"),
            ("STAYHOOK_RETENTION_PRUNE_INTERVAL_MS", "0"),
        ] {
            let error = RawConfig::load(None, [(name.to_string(), value.to_string())]).and_then(RawConfig::resolve).unwrap_err();
            assert!(error.to_string().contains("retention."), "{name}={value}: {error}");
        }
    }

    #[test]
    fn malformed_values_name_their_key() {
        let environment = [("STAYHOOK_RETRY_SCHEDULE".to_string(), "1s,soon".to_string())];
        let error = RawConfig::load(None, environment).unwrap().resolve().unwrap_err();
        assert!(error.to_string().contains("retry_schedule"), "{error}");
        let environment = [("STAYHOOK_BODY_LIMIT_BYTES".to_string(), "lots".to_string())];
        let error = RawConfig::load(None, environment).unwrap_err();
        assert!(error.to_string().contains("body_limit_bytes"), "{error}");
    }
}
