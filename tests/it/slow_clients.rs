//! Slow and idle clients, error shapes, private files: what an unauthenticated client can do to
//! the two servers, on the real binary with small configured limits (issue 10, items 8 and 13).
//!
//! Every wait here is bounded; nothing asserts how long something took, only what happened: a
//! connection closed by the daemon, a request that could not be served while the cap was taken
//! and was served once it was free, a 408, a JSON error.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{Daemon, DaemonOptions};

/// Upper bound of any single wait in this module.
const BOUND: Duration = Duration::from_secs(30);

fn address(url: &str) -> String {
    url.trim_start_matches("http://").to_string()
}

async fn open(url: &str) -> TcpStream {
    TcpStream::connect(address(url)).await.expect("connect")
}

/// Read until the daemon closes the connection (EOF or reset); returns what arrived, or `None`
/// when it stayed open for [`BOUND`].
async fn read_until_closed(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut received = Vec::new();
    let outcome = tokio::time::timeout(BOUND, async {
        let mut buffer = [0u8; 4096];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    outcome.ok().map(|()| received)
}

/// A client with no connection pool: every request opens its own connection.
fn fresh_client() -> reqwest::Client {
    reqwest::Client::builder().pool_max_idle_per_host(0).timeout(Duration::from_secs(60)).build().unwrap()
}

#[tokio::test]
async fn a_flooded_public_listener_holds_new_connections_and_the_admin_api_still_answers() {
    // Timeouts far beyond the test: only the cap can decide who is served.
    let daemon = Daemon::start(
        DaemonOptions::default()
            .env("STAYHOOK_MAX_CONNECTIONS", "4")
            .env("STAYHOOK_ADMIN_MAX_CONNECTIONS", "4")
            .env("STAYHOOK_HEADER_TIMEOUT_MS", "600000")
            .env("STAYHOOK_IDLE_TIMEOUT_MS", "600000"),
    )
    .await;
    let mut idle = Vec::new();
    for _ in 0..16 {
        idle.push(open(&daemon.ingest_url).await);
    }

    // The admin API has its own budget.
    for _ in 0..3 {
        let (status, body) = daemon.admin("GET", "/v1/accounts", None).await;
        assert_eq!(status, 200, "{body}");
    }

    // The public listener serves no fifth connection while four are held ...
    let client = fresh_client();
    let url = format!("{}/healthz", daemon.ingest_url);
    let waiting = tokio::spawn(async move { client.get(url).send().await.map(|response| response.status().as_u16()) });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiting.is_finished(), "a request was served although the connection cap (4) was taken by idle connections");

    // ... and serves it once they are gone.
    drop(idle);
    let status = tokio::time::timeout(BOUND, waiting).await.expect("served after the idle connections closed").unwrap();
    assert_eq!(status.expect("request"), 200);
}

#[tokio::test]
async fn idle_connections_are_closed_and_the_listener_serves_again() {
    let daemon = Daemon::start(
        DaemonOptions::default()
            .env("STAYHOOK_MAX_CONNECTIONS", "4")
            .env("STAYHOOK_IDLE_TIMEOUT_MS", "300")
            .env("STAYHOOK_HEADER_TIMEOUT_MS", "600000"),
    )
    .await;
    // More silent connections than the cap: each is closed by the daemon, not by us.
    let mut silent = Vec::new();
    for _ in 0..8 {
        silent.push(open(&daemon.ingest_url).await);
    }
    for (index, stream) in silent.iter_mut().enumerate() {
        let received = read_until_closed(stream).await.unwrap_or_else(|| panic!("silent connection {index} was never closed"));
        assert!(received.is_empty(), "a silent connection got an answer: {}", String::from_utf8_lossy(&received));
    }

    // A kept-alive connection is closed once idle, after its answer.
    let mut kept = open(&daemon.ingest_url).await;
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: stayhook\r\n\r\n").await.unwrap();
    let received = read_until_closed(&mut kept).await.expect("the kept-alive connection was never closed");
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 200") && text.contains(r#"{"status":"ok"}"#), "{text}");

    let response = fresh_client().get(format!("{}/healthz", daemon.ingest_url)).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
}

#[tokio::test]
async fn a_client_sending_headers_slowly_is_cut_after_the_header_timeout() {
    let daemon =
        Daemon::start(DaemonOptions::default().env("STAYHOOK_HEADER_TIMEOUT_MS", "1000").env("STAYHOOK_IDLE_TIMEOUT_MS", "600000")).await;
    let mut stream = open(&daemon.ingest_url).await;
    stream.write_all(b"POST /listen/anyone HTTP/1.1\r\nHost: stayhook\r\nX-Slow: ").await.unwrap();
    // One byte of one header every 100 ms (never idle, never complete), for at most BOUND.
    let mut closed = false;
    for _ in 0..300 {
        let mut buffer = [0u8; 256];
        match tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buffer)).await {
            Ok(Ok(0) | Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => panic!("unexpected answer to an incomplete head: {}", String::from_utf8_lossy(&buffer[..n])),
            Err(_) => {}
        }
        if stream.write_all(b"a").await.is_err() {
            closed = true;
            break;
        }
    }
    assert!(closed, "a head dribbled for 30 s was never cut (header timeout 1 s)");

    let response = fresh_client().get(format!("{}/healthz", daemon.ingest_url)).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200, "the daemon keeps serving");
}

#[tokio::test]
async fn a_body_held_back_gets_408_and_the_daemon_keeps_serving() {
    let daemon = Daemon::start(DaemonOptions::default().env("STAYHOOK_BODY_TIMEOUT_MS", "1000")).await;
    daemon.create_account(json!({"id": "slow", "workspaceId": "ws", "pms": "hostaway"})).await;
    let body = crate::support::hostaway_body("reservation-created");

    for (url, head) in [
        (&daemon.ingest_url, "POST /listen/slow HTTP/1.1\r\nContent-Type: application/json\r\n".to_string()),
        (&daemon.admin_url, format!("PUT /v1/plugins/slow HTTP/1.1\r\nAuthorization: Bearer {}\r\n", daemon.token)),
    ] {
        let mut stream = open(url).await;
        let head = format!("{head}Host: stayhook\r\nContent-Length: {}\r\n\r\n", body.len());
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(&body[..body.len() - 1]).await.unwrap();
        let received = read_until_closed(&mut stream).await.expect("the connection was never closed (no body timeout)");
        let text = String::from_utf8_lossy(&received);
        assert!(text.starts_with("HTTP/1.1 408"), "{url}: {text}");
        let json: Value = serde_json::from_str(text.split("\r\n\r\n").nth(1).unwrap_or_default()).expect("a JSON body");
        assert_eq!(json["error"]["code"], "request_timeout", "{json}");
    }

    // Nothing of the cut request was stored; the next complete one is.
    let (status, answer) = daemon.post_webhook("slow", &body, &[]).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "accepted", "the held-back body was not stored: {answer}");
}

/// (method, url, bearer token, content type, body, expected status)
type BadRequest<'a> = (&'a str, String, Option<&'a str>, Option<&'a str>, Vec<u8>, u16);

#[tokio::test]
async fn every_error_answer_is_json() {
    let daemon = Daemon::start(DaemonOptions::default().env("STAYHOOK_BODY_LIMIT_BYTES", "16384")).await;
    daemon
        .create_account(json!({
            "id": "a1", "workspaceId": "ws", "pms": "hostaway",
            "verification": {"username": "stay", "password": "a long password"},
        }))
        .await;
    let big = vec![b' '; 3 << 20];
    let admin = daemon.admin_url.as_str();
    let public = daemon.ingest_url.as_str();
    let token = daemon.token.as_str();
    let cases: Vec<BadRequest> = vec![
        ("GET", format!("{admin}/v1/nope"), Some(token), None, vec![], 404),
        ("GET", format!("{admin}/v1/accounts"), None, None, vec![], 401),
        ("GET", format!("{admin}/v1/accounts"), Some("wrong"), None, vec![], 401),
        ("DELETE", format!("{admin}/v1/accounts"), Some(token), None, vec![], 405),
        ("PUT", format!("{admin}/v1/events"), Some(token), None, vec![], 405),
        ("POST", format!("{admin}/healthz"), None, None, vec![], 405),
        ("POST", format!("{admin}/v1/accounts"), Some(token), Some("application/json"), b"nope".to_vec(), 400),
        ("POST", format!("{admin}/v1/accounts"), Some(token), None, b"{}".to_vec(), 415),
        ("POST", format!("{admin}/v1/accounts"), Some(token), Some("application/json"), b"[]".to_vec(), 422),
        ("POST", format!("{admin}/v1/accounts"), Some(token), Some("application/json"), big.clone(), 413),
        ("POST", format!("{admin}/v1/events/x/redeliver"), Some(token), Some("application/json"), big.clone(), 413),
        ("GET", format!("{admin}/v1/accounts/%FF"), Some(token), None, vec![], 400),
        ("GET", format!("{admin}/v1/accounts/nope"), Some(token), None, vec![], 404),
        ("GET", format!("{admin}/v1/events?limit=abc"), Some(token), None, vec![], 400),
        ("GET", format!("{public}/nope"), None, None, vec![], 404),
        ("GET", format!("{public}/listen/%FF"), None, None, vec![], 400),
        ("POST", format!("{public}/listen/nope"), None, Some("application/json"), b"{}".to_vec(), 404),
        ("DELETE", format!("{public}/listen/a1"), None, None, vec![], 405),
        ("POST", format!("{public}/listen/a1"), None, Some("application/json"), b"{}".to_vec(), 401),
        ("POST", format!("{public}/listen/a1"), None, Some("application/json"), big, 413),
    ];
    let client = fresh_client();
    let mut wrong = Vec::new();
    for (method, url, bearer, content_type, body, expected) in cases {
        let mut request = client.request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), &url).body(body);
        if let Some(bearer) = bearer {
            request = request.bearer_auth(bearer);
        }
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let declared = response.headers().get("content-type").map(|value| value.to_str().unwrap().to_string()).unwrap_or_default();
        let text = response.text().await.unwrap_or_default();
        let json: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let shaped = declared.starts_with("application/json")
            && json["error"]["code"].as_str().is_some_and(|code| !code.is_empty())
            && json["error"]["message"].as_str().is_some_and(|message| !message.is_empty());
        if status != expected || !shaped {
            wrong.push(format!(
                "{method} {url}: {status} (expected {expected}) [{declared}] {}",
                text.chars().take(200).collect::<String>()
            ));
        }
    }
    assert!(wrong.is_empty(), "answers that are not the expected JSON error:\n{}", wrong.join("\n"));
}

#[cfg(unix)]
#[tokio::test]
async fn the_data_dir_and_its_files_are_private() {
    use std::os::unix::fs::PermissionsExt as _;

    let parent = tempfile::tempdir().unwrap();
    let data_dir = parent.path().join("data");
    std::fs::create_dir(&data_dir).unwrap();
    std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let daemon =
        Daemon::start(DaemonOptions::default().env("STAYHOOK_DATA_DIR", data_dir.to_str().unwrap()).env("STAYHOOK_ADMIN_TOKEN", "")).await;
    // The admin API serves once the store is open (and the generated admin token is stored in it).
    let response = daemon.http.get(format!("{}/healthz", daemon.admin_url)).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);

    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data_dir), 0o700, "the data dir (it existed as 755) was not made private");
    let mut open_to_others = Vec::new();
    let mut pending = vec![data_dir.clone()];
    let mut n_files = 0;
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if mode(&path) & 0o077 != 0 {
                open_to_others.push(format!("{:o} {}", mode(&path), path.display()));
            }
            if path.is_dir() {
                pending.push(path);
            } else {
                n_files += 1;
            }
        }
    }
    assert!(n_files > 0, "the store wrote no files?");
    assert!(open_to_others.is_empty(), "readable by other users:\n{}", open_to_others.join("\n"));
    drop(daemon);
}
