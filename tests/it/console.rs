//! The operator console: its API (sessions, CSRF, the routes it added) with reqwest, and its
//! pages in a real headless Chromium driven over WebDriver (chromedriver + fantoccini) against
//! the real daemon and a real receiver. Each browser test saves a screenshot under
//! `target/console-screenshots/`. Without Chromium and chromedriver the browser tests fail with a
//! message saying what to install (`.ci/run` installs them).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::support::{Daemon, DaemonOptions, Receiver, hostaway_body};

// ---- API: sessions and CSRF -----------------------------------------------------------------

fn cookie_of(response: &reqwest::Response) -> String {
    let set_cookie = response.headers().get("set-cookie").expect("a Set-Cookie header").to_str().unwrap().to_string();
    set_cookie.split(';').next().unwrap().to_string()
}

#[tokio::test]
async fn a_session_is_an_httponly_strict_cookie_and_changes_need_its_csrf_token() {
    let daemon = Daemon::start(DaemonOptions::default()).await;
    let http = reqwest::Client::new();
    let session_url = format!("{}/v1/session", daemon.admin_url);

    let wrong = http.post(&session_url).json(&json!({"token": "not-the-token"})).send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    assert!(wrong.headers().get("set-cookie").is_none());
    let body: Value = wrong.json().await.unwrap();
    assert_eq!(body["error"]["code"], "wrong_token");

    let right = http.post(&session_url).json(&json!({"token": daemon.token})).send().await.unwrap();
    assert_eq!(right.status(), 201);
    let set_cookie = right.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"), "{set_cookie}");
    assert!(!set_cookie.contains("Secure"), "plain http: no Secure flag: {set_cookie}");
    let cookie = cookie_of(&right);
    let csrf = right.json::<Value>().await.unwrap()["csrfToken"].as_str().unwrap().to_string();

    let behind_tls =
        http.post(&session_url).header("x-forwarded-proto", "https").json(&json!({"token": daemon.token})).send().await.unwrap();
    assert!(behind_tls.headers()["set-cookie"].to_str().unwrap().contains("Secure"));

    // Reads need only the cookie.
    let read = http.get(format!("{}/v1/accounts", daemon.admin_url)).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(read.status(), 200);
    // A change without the token, or marked cross-site, is refused and changes nothing.
    let account = json!({"id": "csrf-test", "workspaceId": "ws", "pms": "hostaway"});
    let create = || http.post(format!("{}/v1/accounts", daemon.admin_url)).header("cookie", &cookie).json(&account);
    let refused = create().send().await.unwrap();
    assert_eq!(refused.status(), 403);
    assert_eq!(refused.json::<Value>().await.unwrap()["error"]["code"], "csrf_refused");
    let cross_site = create().header("x-stayhook-csrf", &csrf).header("sec-fetch-site", "cross-site").send().await.unwrap();
    assert_eq!(cross_site.status(), 403);
    assert_eq!(daemon.admin("GET", "/v1/accounts/csrf-test", None).await.0, 404);
    let accepted = create().header("x-stayhook-csrf", &csrf).header("sec-fetch-site", "same-origin").send().await.unwrap();
    assert_eq!(accepted.status(), 201);

    // Signing out ends the session.
    let out = http.delete(&session_url).header("cookie", &cookie).header("x-stayhook-csrf", &csrf).send().await.unwrap();
    assert_eq!(out.status(), 204);
    let after = http.get(format!("{}/v1/accounts", daemon.admin_url)).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(after.status(), 401);
    // The bearer token works as before.
    assert_eq!(daemon.admin("GET", "/v1/accounts", None).await.0, 200);
}

#[tokio::test]
async fn the_console_page_is_served_with_a_same_origin_only_policy() {
    let daemon = Daemon::start(DaemonOptions::default()).await;
    let page = reqwest::get(format!("{}/", daemon.admin_url)).await.unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"), "{csp}");
    let html = page.text().await.unwrap();
    assert!(html.contains("/console/app.js"));
    assert!(!html.contains("http://") && !html.contains("https://"), "no external reference in the page");
    let script = reqwest::get(format!("{}/console/app.js", daemon.admin_url)).await.unwrap().text().await.unwrap();
    // Its only URLs are the SVG namespace and a form's placeholder.
    let other = script.replace("http://www.w3.org/2000/svg", "").replace("https://example.com/hooks", "");
    assert!(!other.contains("http://") && !other.contains("https://"), "the script loads nothing from elsewhere");
}

// ---- API: the routes the console added --------------------------------------------------------

async fn hostaway_with_webhook(daemon: &Daemon, receiver: &Receiver) -> (String, Value) {
    let account = daemon.create_account(json!({"workspaceId": "ws-1", "pms": "hostaway", "name": "Hostaway"})).await;
    let account_id = account["id"].as_str().unwrap().to_string();
    let webhook = daemon.subscribe(&account_id, &receiver.url).await;
    (account_id, webhook)
}

#[tokio::test]
async fn test_events_are_signed_with_the_current_secret_and_rotation_replaces_it() {
    let daemon = Daemon::start(DaemonOptions::default()).await;
    let receiver = Receiver::start().await;
    let (account_id, webhook) = hostaway_with_webhook(&daemon, &receiver).await;
    let webhook_path = format!("/v1/accounts/{account_id}/webhooks/{}", webhook["id"].as_str().unwrap());

    let (status, answer) = daemon.admin("POST", &format!("{webhook_path}/test"), Some(json!({"eventType": "reservation.created"}))).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["success"], true);
    assert_eq!(answer["statusCode"], 200);
    let received = receiver.next().await;
    let envelope = received.json();
    assert_eq!(envelope["hook"]["eventType"], "reservation.created");
    assert_eq!(envelope["hook"]["id"], webhook["id"]);
    assert_eq!(envelope["data"]["integrationAccountId"], account_id.as_str());
    verify(webhook["secret"].as_str().unwrap(), &received);

    let (status, rotated) = daemon.admin("POST", &format!("{webhook_path}/rotate-secret"), None).await;
    assert_eq!(status, 200, "{rotated}");
    let new_secret = rotated["secret"].as_str().unwrap();
    assert_ne!(new_secret, webhook["secret"].as_str().unwrap());
    let (_, shown) = daemon.admin("GET", &webhook_path, None).await;
    assert!(shown.get("secret").is_none(), "the secret is shown only when created: {shown}");
    daemon.admin("POST", &format!("{webhook_path}/test"), Some(json!({"eventType": "calendar.updated"}))).await;
    verify(new_secret, &receiver.next().await);

    let (status, error) = daemon.admin("POST", &format!("{webhook_path}/test"), Some(json!({"eventType": "nope"}))).await;
    assert_eq!((status, error["error"]["code"].as_str()), (422, Some("unknown_event_type")));
}

fn verify(secret: &str, received: &crate::support::Received) {
    let verifier = standardwebhooks::Webhook::new(secret).expect("a whsec_ secret");
    verifier.verify(&received.body, &received.headers).expect("the event verifies with the secret");
}

#[tokio::test]
async fn stats_count_received_and_delivered_per_minute_and_webhook_health_shows_attempts() {
    let daemon = Daemon::start(DaemonOptions::default()).await;
    let receiver = Receiver::start().await;
    let (account_id, webhook) = hostaway_with_webhook(&daemon, &receiver).await;
    let (status, _) = daemon.post_webhook(&account_id, &hostaway_body("reservation-created"), &[]).await;
    assert_eq!(status, 200);
    receiver.next_success().await;
    let stats = daemon
        .wait_for("the delivery in the stats and out of the backlog", async |daemon| {
            let (status, stats) = daemon.admin("GET", "/v1/stats?window=1h", None).await;
            assert_eq!(status, 200, "{stats}");
            // The delivery stays in the backlog until its outcome is on disk, which may come a
            // moment after the receiver answered and the counter moved.
            (stats["totals"]["delivered"] == 1 && stats["backlog"]["deliveries"] == 0).then_some(stats)
        })
        .await;
    assert_eq!(stats["minutes"].as_array().unwrap().len(), 60);
    assert_eq!(stats["totals"]["received"], 1);
    assert!(stats["latencyMs"]["p50"].is_u64());
    assert_eq!(daemon.admin("GET", "/v1/stats?window=1y", None).await.0, 400);
    let (status, day) = daemon.admin("GET", "/v1/stats?window=24h", None).await;
    assert_eq!((status, day["minutes"].as_array().unwrap().len()), (200, 1440));

    let (status, health) =
        daemon.admin("GET", &format!("/v1/accounts/{account_id}/webhooks/{}/health", webhook["id"].as_str().unwrap()), None).await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["recentAttempts"][0]["success"], true);
}

#[tokio::test]
async fn stats_count_webhooks_and_deliveries_per_account() {
    let daemon = Daemon::start(DaemonOptions::default().with_chaos()).await;
    let up = Receiver::start().await;
    let flaky = Receiver::failing_first(1).await;
    for (id, name) in [("busy", "Busy"), ("flaky", "Flaky"), ("quiet", "Quiet")] {
        daemon.create_account(json!({"id": id, "workspaceId": "ws", "pms": "chaos", "name": name})).await;
    }
    daemon.subscribe("busy", &up.url).await;
    daemon.subscribe("flaky", &flaky.url).await;
    for (account, behaviour, id) in [("busy", "ok", "r-1"), ("busy", "ok", "r-2"), ("busy", "bad-payload", "r-3"), ("flaky", "ok", "r-4")] {
        let (status, answer) = daemon.post_webhook(account, json!({"behaviour": behaviour, "id": id}).to_string().as_bytes(), &[]).await;
        assert_eq!(status, 200, "{answer}");
    }
    let counts = |stats: &Value, id: &str| -> Value {
        let account = stats["accounts"].as_array().unwrap().iter().find(|account| account["id"] == id).cloned();
        account.unwrap_or_else(|| panic!("no account {id} in {stats}"))
    };
    let stats = daemon
        .wait_for("both accounts' deliveries counted", async |daemon| {
            let (status, stats) = daemon.admin("GET", "/v1/stats", None).await;
            assert_eq!(status, 200, "{stats}");
            (counts(&stats, "busy")["delivered"] == 2 && counts(&stats, "flaky")["delivered"] == 1).then_some(stats)
        })
        .await;
    let shown = |id: &str| {
        let account = counts(&stats, id);
        ["received", "normalized", "normalizeFailed", "delivered", "failed"].map(|key| account[key].as_u64().unwrap())
    };
    assert_eq!(shown("busy"), [3, 2, 1, 2, 0], "{stats}");
    assert_eq!(shown("flaky"), [1, 1, 0, 1, 1], "{stats}");
    assert_eq!(shown("quiet"), [0; 5], "{stats}");
    assert_eq!((counts(&stats, "busy")["name"].as_str(), counts(&stats, "busy")["pms"].as_str()), (Some("Busy"), Some("chaos")));
    let ids: Vec<&str> = stats["accounts"].as_array().unwrap().iter().map(|account| account["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["busy", "flaky", "quiet"], "every account, by id");
    // The totals are the sum of the accounts'.
    assert_eq!((stats["totals"]["received"].as_u64(), stats["totals"]["delivered"].as_u64()), (Some(4), Some(3)), "{stats}");
}

#[tokio::test]
async fn the_playground_runs_a_plugin_without_any_account() {
    let daemon = Daemon::start(DaemonOptions::default()).await;
    let body = String::from_utf8(hostaway_body("reservation-created")).unwrap();
    let (status, answer) = daemon.admin("POST", "/v1/plugins/hostaway/playground", Some(json!({"body": body}))).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["events"][0]["eventType"], "reservation.created");
    assert_eq!(daemon.admin("GET", "/v1/accounts", None).await.1["accounts"], json!([]), "no account touched");
    let (status, error) = daemon.admin("POST", "/v1/plugins/hostaway/playground", Some(json!({"body": "not json"}))).await;
    assert_eq!(status, 422, "{error}");
    assert!(error["error"]["message"].as_str().unwrap().len() > 5);
    assert_eq!(daemon.admin("POST", "/v1/plugins/nope/playground", Some(json!({"body": "{}"}))).await.0, 404);
}

// ---- logs ---------------------------------------------------------------------------------------

#[tokio::test]
async fn logs_are_plain_text_when_not_a_terminal_and_json_on_request() {
    let mut daemon = Daemon::start(DaemonOptions::default()).await;
    daemon.admin("GET", "/v1/accounts", None).await;
    daemon.terminate();
    let text = daemon.log();
    assert!(text.contains("serving"), "{text}");
    assert!(!text.contains('\u{1b}'), "no ANSI escapes in a log file: {text}");

    let mut daemon = Daemon::start(DaemonOptions::default().env("STAYHOOK_LOG_FORMAT", "json")).await;
    daemon.terminate();
    let log = daemon.log();
    let lines: Vec<&str> = log.lines().filter(|line| !line.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for line in lines {
        let object: Value = serde_json::from_str(line).unwrap_or_else(|error| panic!("{error}: {line}"));
        assert!(object["level"].is_string() && object["fields"].is_object(), "{line}");
    }
}

// ---- the browser --------------------------------------------------------------------------------

/// A chromedriver process and a WebDriver session of headless Chromium.
struct Browser {
    client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

fn find_program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in names {
        for dir in std::env::split_paths(&path).chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/lib/chromium")]) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    None
}

impl Browser {
    async fn start() -> Browser {
        let chromium = find_program(&["chromium", "chromium-browser", "google-chrome"]).unwrap_or_else(|| {
            panic!("the console's browser tests need Chromium: apt-get install -y chromium chromium-driver (.ci/run installs them)")
        });
        let chromedriver = find_program(&["chromedriver"]).unwrap_or_else(|| {
            panic!("the console's browser tests need chromedriver: apt-get install -y chromium-driver (.ci/run installs it)")
        });
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let profile = tempfile::Builder::new().prefix("stayhook-chromium").tempdir().unwrap();
        let args = vec![
            "--headless".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-dev-shm-usage".into(),
            "--window-size=1280,1000".into(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("goog:chromeOptions".into(), json!({"binary": chromium, "args": args}));
        let webdriver = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(60);
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector).capabilities(capabilities.clone()).connect(&webdriver).await {
                Ok(client) => break client,
                Err(error) if Instant::now() < deadline => {
                    let _ = error;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => panic!("no WebDriver session from chromedriver at {webdriver}: {error}"),
            }
        };
        Browser { client, driver, _profile: profile }
    }

    async fn open(&self, url: &str) {
        self.client.goto(url).await.expect("navigate");
    }

    /// Wait (at most 30 s) for an element matching `css` whose text contains `text`.
    async fn wait_text(&self, css: &str, text: &str) -> fantoccini::elements::Element {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(elements) = self.client.find_all(Locator::Css(css)).await {
                for element in elements {
                    if element.text().await.is_ok_and(|shown| shown.contains(text)) {
                        return element;
                    }
                }
            }
            if Instant::now() >= deadline {
                let shown = self.client.find(Locator::Css("main")).await.ok();
                let main = match shown {
                    Some(main) => main.text().await.unwrap_or_default(),
                    None => String::new(),
                };
                self.screenshot("timeout").await;
                panic!("no {css:?} showing {text:?} within 30 s; the page shows:\n{main}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn click(&self, css: &str) {
        self.wait_for(css).await.click().await.unwrap_or_else(|error| panic!("click {css}: {error}"));
    }

    async fn wait_for(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(Duration::from_secs(30))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|error| panic!("no {css}: {error}"))
    }

    async fn fill(&self, css: &str, value: &str) {
        let element = self.wait_for(css).await;
        element.clear().await.unwrap();
        element.send_keys(value).await.unwrap();
    }

    async fn sign_in(&self, daemon: &Daemon) {
        self.open(&format!("{}/", daemon.admin_url)).await;
        self.fill("#token", &daemon.token).await;
        self.click("#signin-button").await;
        self.wait_text("h1", "Overview").await;
    }

    async fn screenshot(&self, name: &str) {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).parent().unwrap().join("console-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        if let Ok(png) = self.client.screenshot().await {
            std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
        }
    }

    async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
    }
}

#[tokio::test]
async fn browser_sign_in_create_an_account_and_a_webhook_and_see_a_delivered_event() {
    let daemon = Daemon::start(DaemonOptions::default()).await;
    let receiver = Receiver::start().await;
    let browser = Browser::start().await;

    browser.open(&format!("{}/", daemon.admin_url)).await;
    browser.fill("#token", "wrong-token").await;
    browser.click("#signin-button").await;
    browser.wait_text("#signin-error", "Wrong token").await;
    browser.screenshot("sign-in-refused").await;
    browser.fill("#token", &daemon.token).await;
    browser.click("#signin-button").await;
    browser.wait_text("h1", "Overview").await;

    // An account through the form: the Hostaway plugin's basic-auth fields are offered.
    browser.open(&format!("{}/#/accounts", daemon.admin_url)).await;
    browser.wait_text(".empty", "No accounts yet").await;
    browser.fill("#acct-id", "hostaway-1").await;
    browser.fill("#acct-workspace", "ws-1").await;
    browser.fill("#acct-name", "Beach houses").await;
    browser.wait_for("#acct-pms").await.select_by_value("hostaway").await.unwrap();
    browser.wait_for("#acct-verification-username").await;
    browser.click("#account-create").await;
    browser.wait_text("h1", "Beach houses").await;

    // A bad URL is refused next to the field, then a webhook is created and its secret shown once.
    browser.fill("#wh-name", "Our backend").await;
    browser.fill("#wh-url", "ftp://example.com/x").await;
    browser.click("#webhook-create").await;
    browser.wait_text(".field-error", "url").await;
    browser.fill("#wh-url", &receiver.url).await;
    browser.click("#webhook-create").await;
    let secret = browser.wait_text("#webhook-secret", "whsec_").await.text().await.unwrap();
    browser.screenshot("webhook-created").await;
    let (_, webhooks) = daemon.admin("GET", "/v1/accounts/hostaway-1/webhooks", None).await;
    assert_eq!(webhooks["webhooks"][0]["url"], receiver.url.as_str());

    // A Hostaway webhook to the listener; the event and its successful attempt in the log.
    let (status, _) = daemon.post_webhook("hostaway-1", &hostaway_body("reservation-created"), &[]).await;
    assert_eq!(status, 200);
    let received = receiver.next_success().await;
    verify(&secret, &received);
    browser.open(&format!("{}/#/events?accountId=hostaway-1", daemon.admin_url)).await;
    browser.click("#events-table a").await;
    browser.wait_text("#attempts .attempt-status", "200").await;
    browser.wait_text("#deliveries .delivery-status", "delivered").await;
    browser.wait_text("pre", "reservation.created").await;
    browser.screenshot("event-delivered").await;
    browser.click("#raw-inbound").await;
    browser.wait_text("#inbox-status", "done").await;
    // Re-normalize this one webhook from its page: queued as its next generation.
    browser.click("#renormalize").await;
    browser.wait_text("pre", "\"generation\": 1").await;
    browser.close().await;
}

#[tokio::test]
async fn browser_dead_letter_redelivered_from_the_page_and_a_test_event() {
    let daemon = Daemon::start(DaemonOptions::default()).await;
    let receiver = Receiver::start().await;
    let (account_id, webhook) = hostaway_with_webhook(&daemon, &receiver).await;
    let webhook_id = webhook["id"].as_str().unwrap().to_string();
    receiver.fail_next(1000);
    let (status, _) = daemon.post_webhook(&account_id, &hostaway_body("reservation-created"), &[]).await;
    assert_eq!(status, 200);
    daemon
        .wait_for("a dead letter", async |daemon| {
            let (_, page) = daemon.admin("GET", "/v1/dead-letters", None).await;
            (!page["deadLetters"].as_array().unwrap().is_empty()).then_some(())
        })
        .await;
    while receiver.next_within(Duration::from_millis(200)).await.is_some() {}

    let browser = Browser::start().await;
    browser.sign_in(&daemon).await;
    browser.wait_text("#problems", "dead letters").await;
    browser.screenshot("overview-problems").await;
    // The webhook's panel links to its own dead letters.
    browser.open(&format!("{}/#/accounts/{account_id}/webhooks", daemon.admin_url)).await;
    browser.click(".dead-letters-link").await;
    browser.wait_text("#dead-letters-filter", webhook_id.as_str()).await;
    browser.wait_text("#dead-letters td", webhook_id.as_str()).await;
    let (_, other) = daemon.admin("GET", "/v1/dead-letters?webhookId=another-webhook", None).await;
    assert_eq!(other["deadLetters"], json!([]));
    browser.open(&format!("{}/#/dead-letters?webhookId=another-webhook", daemon.admin_url)).await;
    browser.wait_text(".empty", "No dead letters of this webhook").await;
    browser.open(&format!("{}/#/dead-letters", daemon.admin_url)).await;
    browser.click("#dead-letters a").await;
    browser.wait_text("#attempts .attempt-status", "500").await;
    browser.wait_text("#deliveries .delivery-status", "dead").await;
    browser.screenshot("dead-letter-attempts").await;

    receiver.fail_next(0);
    browser.open(&format!("{}/#/dead-letters", daemon.admin_url)).await;
    browser.click(".redeliver-one").await;
    let received = receiver.next_success().await;
    assert_eq!(received.json()["hook"]["eventType"], "reservation.created");
    browser.wait_text(".empty", "No dead letters").await;

    // Send a test event from the Webhook tab.
    browser.open(&format!("{}/#/accounts/{account_id}/webhooks", daemon.admin_url)).await;
    browser.click(".send-test").await;
    browser.wait_text(".test-outcome", "Delivered: 200").await;
    assert!(receiver.next().await.header("webhook-id").starts_with("test_"));
    browser.screenshot("webhooks-tab").await;
    browser.close().await;
}

#[tokio::test]
async fn browser_playground_then_sign_out_and_the_pages_refuse() {
    let daemon = Daemon::start(DaemonOptions::default()).await;
    let browser = Browser::start().await;
    browser.sign_in(&daemon).await;

    browser.open(&format!("{}/#/playground", daemon.admin_url)).await;
    let body = String::from_utf8(hostaway_body("reservation-created")).unwrap();
    let select = browser.wait_for("#pg-plugin").await;
    select.select_by_value("hostaway").await.unwrap();
    // A textarea takes the payload through the DOM (send_keys of a long JSON is slow).
    let textarea = browser.wait_for("#pg-body").await;
    browser
        .client
        .execute("arguments[0].value = arguments[1];", vec![serde_json::to_value(&textarea).unwrap(), json!(body)])
        .await
        .unwrap();
    browser.click("#pg-run").await;
    browser.wait_text("#playground-count", "1 event(s)").await;
    browser.wait_text(".pg-event-type", "reservation.created").await;
    browser.screenshot("playground").await;

    browser.click("#signout").await;
    browser.wait_text("#signin-error", "Signed out").await;
    browser.open(&format!("{}/#/events", daemon.admin_url)).await;
    browser.wait_for("#signin-form").await;
    let status = browser
        .client
        .execute_async("const done = arguments[0]; fetch('/v1/accounts').then((r) => done(r.status));", vec![])
        .await
        .unwrap();
    assert_eq!(status, json!(401));
    browser.screenshot("signed-out").await;
    browser.close().await;
}

#[tokio::test]
async fn browser_a_cross_site_form_post_is_refused() {
    let daemon = Daemon::start(DaemonOptions::default()).await;
    let browser = Browser::start().await;
    browser.sign_in(&daemon).await;

    // Another site (localhost is not the same site as 127.0.0.1) whose page posts a form to the
    // admin API in the signed-in browser.
    let target = format!("{}/v1/accounts", daemon.admin_url);
    let page = format!(
        "<!doctype html><form id=f method=post enctype=text/plain action=\"{target}\">\
         <input name='{{\"id\":\"evil\",\"workspaceId\":\"w\",\"pms\":\"hostaway\",\"x\":\"' value='\"}}'></form>\
         <script>document.getElementById('f').submit()</script>"
    );
    let router = axum::Router::new().route("/", axum::routing::get(move || async move { axum::response::Html(page) }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    browser.open(&format!("http://localhost:{port}/")).await;
    browser.wait_text("body", "error").await;
    browser.screenshot("cross-site-post-refused").await;
    let shown = browser.client.find(Locator::Css("body")).await.unwrap().text().await.unwrap();
    assert!(shown.contains("unauthorized") || shown.contains("csrf_refused") || shown.contains("unsupported_media_type"), "{shown}");
    assert_eq!(daemon.admin("GET", "/v1/accounts/evil", None).await.0, 404, "the cross-site form created nothing");
    server.abort();
    browser.close().await;
}

#[tokio::test]
async fn browser_overview_lists_accounts_with_their_counts() {
    let daemon = Daemon::start(DaemonOptions::default()).await;
    let receiver = Receiver::start().await;
    let (account_id, _) = hostaway_with_webhook(&daemon, &receiver).await;
    daemon.create_account(json!({"id": "quiet", "workspaceId": "ws-2", "pms": "hostaway"})).await;
    let (status, _) = daemon.post_webhook(&account_id, &hostaway_body("reservation-created"), &[]).await;
    assert_eq!(status, 200);
    receiver.next_success().await;

    let browser = Browser::start().await;
    browser.sign_in(&daemon).await;
    let row = format!("#account-counts tr[data-account-id='{account_id}']");
    browser.wait_text(&format!("{row} td.received"), "1").await;
    browser.wait_text(&format!("{row} td.normalized"), "1").await;
    browser.wait_text(&format!("{row} td.delivered"), "1").await;
    browser.wait_text("#account-counts tr[data-account-id='quiet'] td.received", "0").await;
    browser.screenshot("overview-accounts").await;
    browser.click(&format!("{row} a")).await;
    browser.wait_text("h1", "Hostaway · hostaway").await;
    browser.close().await;
}

#[tokio::test]
async fn browser_edit_an_account_then_delete_it_after_confirming() {
    let daemon = Daemon::start(DaemonOptions::default()).await;
    let receiver = Receiver::start().await;
    let (account_id, _) = hostaway_with_webhook(&daemon, &receiver).await;
    let browser = Browser::start().await;
    browser.sign_in(&daemon).await;

    browser.open(&format!("{}/#/accounts/{account_id}/settings", daemon.admin_url)).await;
    browser.wait_for("#account-edit-form").await;
    browser.fill("#acct-name", "Mountain cabins").await;
    browser.click("#account-save").await;
    browser.wait_text("h1", "Mountain cabins").await;
    let (_, account) = daemon.admin("GET", &format!("/v1/accounts/{account_id}"), None).await;
    assert_eq!((account["name"].as_str(), account["workspaceId"].as_str()), (Some("Mountain cabins"), Some("ws-1")), "{account}");
    browser.screenshot("account-edited").await;

    // Deleting asks first: dismissed, nothing happens; accepted, the account is gone.
    browser.open(&format!("{}/#/accounts/{account_id}/settings", daemon.admin_url)).await;
    browser.click("#account-delete").await;
    let question = browser.client.get_alert_text().await.expect("a confirmation");
    assert!(question.contains(&account_id), "{question}");
    browser.client.dismiss_alert().await.unwrap();
    assert_eq!(daemon.admin("GET", &format!("/v1/accounts/{account_id}"), None).await.0, 200, "dismissed: still there");
    browser.click("#account-delete").await;
    browser.client.accept_alert().await.unwrap();
    browser.wait_text(".empty", "No accounts yet").await;
    assert_eq!(daemon.admin("GET", &format!("/v1/accounts/{account_id}"), None).await.0, 404);
    browser.close().await;
}

#[tokio::test]
async fn browser_rotate_a_webhook_secret_shows_the_new_one_once() {
    let daemon = Daemon::start(DaemonOptions::default()).await;
    let receiver = Receiver::start().await;
    let (account_id, webhook) = hostaway_with_webhook(&daemon, &receiver).await;
    let old_secret = webhook["secret"].as_str().unwrap().to_string();
    let browser = Browser::start().await;
    browser.sign_in(&daemon).await;

    browser.open(&format!("{}/#/accounts/{account_id}/webhooks", daemon.admin_url)).await;
    browser.click(".rotate").await;
    browser.client.accept_alert().await.expect("a confirmation");
    let new_secret = browser.wait_text("#webhook-secret", "whsec_").await.text().await.unwrap();
    assert_ne!(new_secret, old_secret);
    browser.screenshot("secret-rotated").await;
    // What the page showed is what signs deliveries now.
    browser.click(".send-test").await;
    browser.wait_text(".test-outcome", "Delivered: 200").await;
    verify(&new_secret, &receiver.next().await);
    // Shown once: the page opened again has no secret.
    browser.open(&format!("{}/", daemon.admin_url)).await;
    browser.open(&format!("{}/#/accounts/{account_id}/webhooks", daemon.admin_url)).await;
    browser.wait_for(".rotate").await;
    assert!(browser.client.find(Locator::Css("#webhook-secret")).await.is_err(), "the secret is not shown again");
    let shown = browser.client.find(Locator::Css("main")).await.unwrap().text().await.unwrap();
    assert!(!shown.contains(&new_secret));
    browser.close().await;
}

#[tokio::test]
async fn browser_the_overview_fits_a_phone() {
    let daemon = Daemon::start(DaemonOptions::default()).await;
    let receiver = Receiver::start().await;
    let (account_id, _) = hostaway_with_webhook(&daemon, &receiver).await;
    daemon
        .create_account(json!({"id": "an-account-with-a-rather-long-identifier-0123456789", "workspaceId": "ws", "pms": "hostaway",
                               "name": "A property manager whose name goes on and on and on"}))
        .await;
    let (status, _) = daemon.post_webhook(&account_id, &hostaway_body("reservation-created"), &[]).await;
    assert_eq!(status, 200);
    receiver.next_success().await;
    // A problem to show: a webhook that fails.
    receiver.fail_next(1000);
    daemon.post_webhook(&account_id, &hostaway_body("reservation-updated-dates-moved"), &[]).await;
    receiver.next().await;

    let browser = Browser::start().await;
    browser.client.set_window_size(375, 800).await.unwrap();
    browser.sign_in(&daemon).await;
    let inner_width = browser.client.execute("return window.innerWidth;", vec![]).await.unwrap();
    assert!(inner_width.as_u64().is_some_and(|width| width <= 375), "a phone-wide window: {inner_width}");
    browser.wait_for("#account-counts").await;
    browser.wait_text("#problems", "failing").await;
    for page in ["overview", &format!("accounts/{account_id}/webhooks"), "dead-letters", "events"] {
        browser.open(&format!("{}/#/{page}", daemon.admin_url)).await;
        browser.wait_for("main h1").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let fits = browser.client.execute("return [document.documentElement.scrollWidth, window.innerWidth];", vec![]).await.unwrap();
        browser.screenshot(&format!("phone-{}", page.replace('/', "-"))).await;
        let (scroll_width, inner_width) = (fits[0].as_u64().unwrap(), fits[1].as_u64().unwrap());
        assert!(scroll_width <= inner_width, "#/{page}: the page scrolls sideways ({scroll_width} px wide in {inner_width} px)");
    }
    browser.close().await;
}
