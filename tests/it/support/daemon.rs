//! A real `stayhook serve` process on ephemeral loopback ports.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
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
}

impl Default for DaemonOptions {
    fn default() -> Self {
        Self { retry_schedule: "100ms,100ms,100ms,100ms".into(), with_chaos_plugin: false, env: Vec::new() }
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
}

/// A running daemon. Dropping it kills the process (and prints its log if the test failed).
pub struct Daemon {
    child: Option<Child>,
    options: DaemonOptions,
    data_dir: tempfile::TempDir,
    /// `http://127.0.0.1:port` of the public listener.
    pub ingest_url: String,
    /// `http://127.0.0.1:port` of the admin API.
    pub admin_url: String,
    /// The admin token.
    pub token: String,
    /// An HTTP client.
    pub http: reqwest::Client,
}

pub const TOKEN: &str = "test-admin-token";

impl Daemon {
    /// Start a daemon with a fresh data dir.
    pub async fn start(options: DaemonOptions) -> Daemon {
        let data_dir = tempfile::Builder::new().prefix("stayhook-it").tempdir().expect("temp dir");
        let mut daemon = Daemon {
            child: None,
            options,
            data_dir,
            ingest_url: String::new(),
            admin_url: String::new(),
            token: TOKEN.into(),
            http: reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap(),
        };
        daemon.spawn();
        daemon
    }

    fn spawn(&mut self) {
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
            .env("STAYHOOK_DATA_DIR", self.data_dir.path().join("data"))
            .env("STAYHOOK_LISTEN", "127.0.0.1:0")
            .env("STAYHOOK_ADMIN_LISTEN", "127.0.0.1:0")
            .env("STAYHOOK_ADMIN_TOKEN", TOKEN)
            .env("STAYHOOK_ALLOW_PRIVATE_DESTINATIONS", "true")
            .env("STAYHOOK_PLUGIN_DIR", &plugin_dir)
            .env("STAYHOOK_PLUGIN_CACHE_DIR", PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("plugin-cache"))
            .env("STAYHOOK_RETRY_SCHEDULE", &self.options.retry_schedule)
            .env("STAYHOOK_RETRY_JITTER_PERCENT", "0")
            .env("STAYHOOK_LOG", "info,stayhook=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        for (name, value) in &self.options.env {
            command.env(name, value);
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
            let line = receiver.recv_timeout(left).unwrap_or_else(|_| panic!("daemon did not start; log:\n{}", self.log()));
            if let Some(url) = line.strip_prefix("stayhook: webhooks on ") {
                ingest = Some(url.to_string());
            }
            if let Some(url) = line.strip_prefix("stayhook: admin API on ") {
                admin = Some(url.to_string());
            }
        }
        self.ingest_url = ingest.unwrap();
        self.admin_url = admin.unwrap();
        self.child = Some(child);
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

    /// SIGKILL the process: no shutdown, no flush.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Set a STAYHOOK_* variable for the next start (then `restart`).
    pub fn set_env(&mut self, name: &str, value: &str) {
        self.options.env.push((name.to_string(), value.to_string()));
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
        child.wait().unwrap().success()
    }

    /// The process id while the daemon runs (for `/proc/<pid>/status`).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGTERM and wait at most `bound` for the process to exit: Some(exit status success), or
    /// None when it was still running then (it is killed when the `Daemon` is dropped).
    pub fn terminate_within(&mut self, bound: Duration) -> Option<bool> {
        let pid = self.pid()?;
        let status = Command::new("kill").arg("-TERM").arg(pid.to_string()).status().unwrap();
        assert!(status.success());
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
            eprintln!("---- daemon log ({}) ----\n{}", self.data_dir.path().display(), self.log());
        }
    }
}
