//! A real `stayhook serve` process on ephemeral loopback ports.
//!
//! Besides starting and stopping it, the harness can make faults real: SIGKILL (`kill`), SIGTERM
//! without waiting (`sigterm`), waiting for the process to end by itself and reading its exit code
//! (`wait_exit`), starting again on the same data dir (`restart`, `start_again`,
//! `try_start_again` when the start may be refused), a data dir of the test's choosing (a small
//! filesystem: `DaemonOptions::store_dir`), and the pid (`pid`) for `/proc` and `prlimit`.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// How to start a daemon.
#[derive(Clone)]
pub struct DaemonOptions {
    /// STAYHOOK_RETRY_SCHEDULE.
    pub retry_schedule: String,
    /// Copy the chaos test plugin into the plugin dir.
    pub with_chaos_plugin: bool,
    /// Extra STAYHOOK_* variables.
    pub env: Vec<(String, String)>,
    /// STAYHOOK_DATA_DIR, when the test chooses it (e.g. on a small filesystem); by default a
    /// `data` folder in the daemon's temp dir. The log and the plugin dir stay in the temp dir.
    pub store_dir: Option<PathBuf>,
    /// Start the process with SIGXFSZ ignored, so a file size limit (`prlimit --fsize`) makes
    /// writes fail with `EFBIG` instead of killing it.
    pub ignore_sigxfsz: bool,
}

impl Default for DaemonOptions {
    fn default() -> Self {
        Self {
            retry_schedule: "100ms,100ms,100ms,100ms".into(),
            with_chaos_plugin: false,
            env: Vec::new(),
            store_dir: None,
            ignore_sigxfsz: false,
        }
    }
}

impl DaemonOptions {
    /// Add a STAYHOOK_* variable.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_string(), value.to_string()));
        self
    }

    /// Load the chaos plugin.
    pub fn with_chaos(mut self) -> Self {
        self.with_chaos_plugin = true;
        self
    }

    /// Use this retry schedule.
    pub fn retry_schedule(mut self, schedule: &str) -> Self {
        self.retry_schedule = schedule.into();
        self
    }

    /// Keep the store in `dir` (STAYHOOK_DATA_DIR) instead of the temp dir.
    pub fn store_dir(mut self, dir: PathBuf) -> Self {
        self.store_dir = Some(dir);
        self
    }

    /// Run on the NATS backend against `cluster` with `replicas` (see [`NATS_ENV`]).
    pub fn on_nats(self, cluster: &super::NatsCluster, replicas: usize) -> Self {
        let options = self.env("STAYHOOK_NATS_URLS", &cluster.urls().join(",")).env("STAYHOOK_NATS_REPLICAS", &replicas.to_string());
        NATS_ENV.iter().fold(options, |options, (name, value)| options.env(name, value))
    }

    /// Ignore SIGXFSZ in the daemon (see [`DaemonOptions::ignore_sigxfsz`]).
    pub fn ignore_sigxfsz(mut self) -> Self {
        self.ignore_sigxfsz = true;
        self
    }
}

/// The backend the shared tests run their daemons on: `STAYHOOK_TEST_STORE` (`sled`, the
/// default, or `nats`). `on_nats::the_shared_suite_passes_on_the_nats_backend` runs this test
/// binary again with `nats`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TestStore {
    /// The embedded store in the daemon's data dir.
    Sled,
    /// A NATS server of the daemon's own (`NatsCluster::single`), R1, started with the daemon and
    /// kept across its restarts.
    Nats,
}

/// The backend of this run (see [`TestStore`]); panics on an unknown value.
pub fn test_store() -> TestStore {
    match std::env::var("STAYHOOK_TEST_STORE").as_deref() {
        Err(_) | Ok("" | "sled") => TestStore::Sled,
        Ok("nats") => TestStore::Nats,
        Ok(other) => panic!("STAYHOOK_TEST_STORE={other:?}: expected sled or nats"),
    }
}

/// The NATS settings of the tests' daemons: 4 partitions and quick failover, so that a restarted
/// daemon takes its partitions and held deliveries back within seconds.
const NATS_ENV: [(&str, &str); 5] = [
    ("STAYHOOK_STORE", "nats"),
    ("STAYHOOK_NATS_PARTITIONS", "4"),
    ("STAYHOOK_NATS_ACK_WAIT_MS", "4000"),
    ("STAYHOOK_NATS_PIN_TTL_MS", "2000"),
    ("STAYHOOK_NATS_WORK_ACK_WAIT_MS", "3000"),
];

/// A running daemon. Dropping it kills the process (and prints its log if the test failed).
pub struct Daemon {
    child: Option<Child>,
    options: DaemonOptions,
    data_dir: tempfile::TempDir,
    /// In a `nats` run, the daemon's own NATS server (a test that names its store keeps its own).
    nats: Option<super::NatsCluster>,
    /// `http://127.0.0.1:port` of the public listener.
    pub ingest_url: String,
    /// `http://127.0.0.1:port` of the admin API.
    pub admin_url: String,
    /// The admin token.
    pub token: String,
    /// An HTTP client.
    pub http: reqwest::Client,
    /// How the last process ended, once `kill`, `terminate` or `wait_exit` saw it end.
    pub last_exit: Option<ExitStatus>,
}

pub const TOKEN: &str = "test-admin-token";

impl Daemon {
    /// Start a daemon with a fresh data dir (and, in a `nats` run, a NATS server of its own unless
    /// the options name a store).
    pub async fn start(mut options: DaemonOptions) -> Daemon {
        let data_dir = tempfile::Builder::new().prefix("stayhook-it").tempdir().expect("temp dir");
        let mut nats = None;
        if test_store() == TestStore::Nats && !options.env.iter().any(|(name, _)| name == "STAYHOOK_STORE") {
            let server = super::NatsCluster::single().await;
            // The test's own variables come last, so they win.
            let own = std::mem::take(&mut options.env);
            options = options.on_nats(&server, 1);
            options.env.extend(own);
            nats = Some(server);
        }
        let mut daemon = Daemon {
            child: None,
            options,
            data_dir,
            nats,
            ingest_url: String::new(),
            admin_url: String::new(),
            token: TOKEN.into(),
            http: reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap(),
            last_exit: None,
        };
        daemon.spawn();
        daemon
    }

    fn spawn(&mut self) {
        if let Err(error) = self.try_spawn() {
            panic!("{error}; log:\n{}", self.log_tail());
        }
    }

    /// Start the process and wait for it to print its addresses; `Err` (with the exit status)
    /// when it ends or stays silent for two minutes instead.
    fn try_spawn(&mut self) -> Result<(), String> {
        let plugin_dir = self.data_dir.path().join("plugins.d");
        std::fs::create_dir_all(&plugin_dir).unwrap();
        if self.options.with_chaos_plugin {
            let artifact = PathBuf::from(env!("PLUGIN_ARTIFACTS_DIR")).join("stayhook_plugin_chaos.wasm");
            std::fs::copy(&artifact, plugin_dir.join("chaos.wasm")).expect("copy the chaos plugin");
        }
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.data_dir.path().join("daemon.log")).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_stayhook"));
        command
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("STAYHOOK_DATA_DIR", self.data_dir())
            .env("STAYHOOK_LISTEN", "127.0.0.1:0")
            .env("STAYHOOK_ADMIN_LISTEN", "127.0.0.1:0")
            .env("STAYHOOK_ADMIN_TOKEN", TOKEN)
            .env("STAYHOOK_ALLOW_PRIVATE_DESTINATIONS", "true")
            .env("STAYHOOK_PLUGIN_DIR", &plugin_dir)
            .env("STAYHOOK_PLUGIN_CACHE_DIR", PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("plugin-cache"))
            .env("STAYHOOK_RETRY_SCHEDULE", &self.options.retry_schedule)
            .env("STAYHOOK_RETRY_JITTER_PERCENT", "0")
            // Most tests' accounts name a real PMS with no local apiBaseUrl, and a test never
            // calls out of the machine: new accounts start without an initial sync unless they
            // ask for one (the sync tests do).
            .env("STAYHOOK_INITIAL_SYNC", "false")
            .env("STAYHOOK_LOG", "info,stayhook=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        for (name, value) in &self.options.env {
            command.env(name, value);
        }
        if self.options.ignore_sigxfsz {
            // SAFETY: between fork and exec only `signal`, which is async-signal-safe, runs; an
            // ignored disposition survives exec.
            unsafe {
                command.pre_exec(|| {
                    if libc::signal(libc::SIGXFSZ, libc::SIG_IGN) == libc::SIG_ERR {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = command.spawn().expect("start stayhook");
        let stdout = child.stdout.take().unwrap();
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(120);
        let (mut ingest, mut admin) = (None, None);
        while ingest.is_none() || admin.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            match receiver.recv_timeout(left) {
                Ok(line) => {
                    if let Some(url) = line.strip_prefix("stayhook: webhooks on ") {
                        ingest = Some(url.to_string());
                    }
                    if let Some(url) = line.strip_prefix("stayhook: admin API on ") {
                        admin = Some(url.to_string());
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    // Stdout closed: the process is ending.
                    let status = child.wait().expect("wait for stayhook");
                    self.last_exit = Some(status);
                    return Err(format!("daemon exited before it started ({status})"));
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    let _ = child.kill();
                    self.last_exit = child.wait().ok();
                    return Err("daemon did not start within 120 s".into());
                }
            }
        }
        self.ingest_url = ingest.unwrap();
        self.admin_url = admin.unwrap();
        self.last_exit = None;
        self.child = Some(child);
        Ok(())
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Send SIGTERM and return at once (see [`Daemon::wait_exit`]).
    pub fn sigterm(&self) {
        let pid = self.pid().expect("the daemon is running");
        let pid = libc::pid_t::try_from(pid).expect("pid fits pid_t");
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        let sent = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(sent, 0, "SIGTERM to {pid}: {}", std::io::Error::last_os_error());
    }

    /// Wait (polling, at most `timeout`) for the process to end by itself; its exit status, or
    /// `None` if it is still running (or was not).
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let child = self.child.as_mut()?;
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                self.last_exit = Some(status);
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut().map(|child| child.try_wait().expect("try_wait")) {
            Some(None) => true,
            Some(Some(status)) => {
                self.child = None;
                self.last_exit = Some(status);
                false
            }
            None => false,
        }
    }

    /// Start on the same data dir after the process ended (panics if it does not start).
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "the daemon is still running");
        self.spawn();
    }

    /// Start on the same data dir after the process ended; `Err` when it refuses to start
    /// (`last_exit` then says how it ended).
    pub fn try_start_again(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "the daemon is still running");
        self.try_spawn()
    }

    /// The folder the daemon loads and watches plugin files in.
    pub fn plugin_dir(&self) -> PathBuf {
        self.data_dir.path().join("plugins.d")
    }

    /// `PUT /v1/plugins/{name}` with these bytes; returns (status, JSON body).
    pub async fn upload_plugin(&self, name: &str, wasm: Vec<u8>) -> (u16, Value) {
        let response = self
            .http
            .put(format!("{}/v1/plugins/{name}", self.admin_url))
            .bearer_auth(&self.token)
            .header("content-type", "application/wasm")
            .body(wasm)
            .send()
            .await
            .expect("upload request");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// The last 256 KiB of the log (fault tests write a lot of it).
    pub fn log_tail(&self) -> String {
        const TAIL_BYTES: usize = 256 * 1024;
        let log = std::fs::read(self.data_dir.path().join("daemon.log")).unwrap_or_default();
        if log.len() <= TAIL_BYTES {
            return String::from_utf8_lossy(&log).into_owned();
        }
        format!("[... {} bytes before ...]\n{}", log.len() - TAIL_BYTES, String::from_utf8_lossy(&log[log.len() - TAIL_BYTES..]))
    }

    /// SIGKILL the process: no shutdown, no flush.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // It may have ended by itself already; then kill fails and wait reads its status.
            let _ = child.kill();
            self.last_exit = Some(child.wait().unwrap());
        }
    }

    /// Set a STAYHOOK_* variable for the next start (then `restart`).
    pub fn set_env(&mut self, name: &str, value: &str) {
        self.options.env.push((name.to_string(), value.to_string()));
    }

    /// Forget a STAYHOOK_* variable set with `set_env` or the options, for the next start.
    pub fn remove_env(&mut self, name: &str) {
        self.options.env.retain(|(known, _)| known != name);
    }

    /// Start again on the same data dir (new ports).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Stop gracefully (SIGTERM) and wait; returns the exit status success.
    pub fn terminate(&mut self) -> bool {
        let Some(mut child) = self.child.take() else { return false };
        let status = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
        assert!(status.success());
        let exit = child.wait().unwrap();
        self.last_exit = Some(exit);
        exit.success()
    }

    /// SIGTERM and wait at most `bound` for the process to exit: Some(exit status success), or
    /// None when it was still running then (it is killed when the `Daemon` is dropped).
    pub fn terminate_within(&mut self, bound: Duration) -> Option<bool> {
        self.pid()?;
        self.sigterm();
        let deadline = Instant::now() + bound;
        while Instant::now() < deadline {
            if let Some(exit) = self.child.as_mut().and_then(|child| child.try_wait().unwrap()) {
                self.child = None;
                return Some(exit.success());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// An admin API request; returns (status, JSON body or Null).
    pub async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.http.request(method, format!("{}{path}", self.admin_url)).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("admin request");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Create an account and return it; panics on any error.
    pub async fn create_account(&self, body: Value) -> Value {
        let (status, account) = self.admin("POST", "/v1/accounts", Some(body)).await;
        assert_eq!(status, 201, "{account}");
        account
    }

    /// Create a webhook subscription for all event types pointing at `url`.
    pub async fn subscribe(&self, account_id: &str, url: &str) -> Value {
        let body = json!({
            "name": "test receiver",
            "url": url,
            "enabled": true,
            "eventTypes": ["reservation.created", "reservation.updated", "reservation.deleted", "conversation.updated", "calendar.updated"],
        });
        let (status, webhook) = self.admin("POST", &format!("/v1/accounts/{account_id}/webhooks"), Some(body)).await;
        assert_eq!(status, 201, "{webhook}");
        webhook
    }

    /// POST a webhook body to an account's listener; returns (status, JSON body).
    pub async fn post_webhook(&self, account_id: &str, body: &[u8], headers: &[(&str, &str)]) -> (u16, Value) {
        let mut request = self.http.post(format!("{}/listen/{account_id}", self.ingest_url)).body(body.to_vec());
        let mut has_content_type = false;
        for (name, value) in headers {
            has_content_type |= name.eq_ignore_ascii_case("content-type");
            request = request.header(*name, *value);
        }
        if !has_content_type {
            request = request.header("content-type", "application/json");
        }
        let response = request.send().await.expect("listener request");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Poll `check` against the admin API until it returns Some (at most 30 s).
    pub async fn wait_for<T>(&self, what: &str, mut check: impl AsyncFnMut(&Daemon) -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(value) = check(self).await {
                return value;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}; daemon log:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The daemon's data dir (STAYHOOK_DATA_DIR).
    pub fn data_dir(&self) -> PathBuf {
        self.options.store_dir.clone().unwrap_or_else(|| self.data_dir.path().join("data"))
    }

    /// The outcome of an inbox entry once it is no longer pending.
    pub async fn inbox_outcome(&self, inbox_id: &str) -> Value {
        self.wait_for("the inbox entry to be processed", async |daemon| {
            let (status, entry) = daemon.admin("GET", &format!("/v1/inbox/{inbox_id}"), None).await;
            assert_eq!(status, 200, "{entry}");
            (entry["status"] != "pending").then_some(entry)
        })
        .await
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("---- daemon log ({}) ----\n{}", self.data_dir.path().display(), self.log_tail());
            if let Some(nats) = &self.nats {
                eprintln!("---- its NATS server's log ----\n{}", nats.log_tail(0));
            }
        }
    }
}
