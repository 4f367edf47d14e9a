//! A property test of the public listener and webhook verification: a few thousand random requests
//! (seeded; `STAYHOOK_FUZZ_SEED` repeats a run, `STAYHOOK_FAULT_SCALE` makes it longer) against the
//! real daemon, for an account of every verification scheme: basic auth (Hostaway), HMAC with a
//! prefix (Lodgify) and without (Hospitable), Standard Webhooks (Guesty), a URL token (Smoobu), no
//! scheme (the chaos plugin) and a scheme left unconfigured (Hostaway without a password).
//!
//! Requests vary the method, the path under `/listen/`, the query string, the headers (content
//! types, proof headers with right, wrong, stale and missing values, random others) and the body
//! (JSON, random bytes, invalid UTF-8, 100,000-deep nesting, `1e999`, truncated JSON, ...). What
//! must hold for every one:
//! - never a 5xx; every non-2xx answer is `{"error": {"code", "message"}}`;
//! - a forged or missing proof never passes for an account whose scheme is configured;
//! - a correct proof with a JSON body passes (2xx; 429 with `Retry-After` is allowed, counted);
//! - a body declared as JSON that is not JSON gets 400 `invalid_json`;
//! - every `accepted` answer's `inboxId` reads back through `GET /v1/inbox/{id}` with the body sent.
//!
//! `STAYHOOK_FUZZ_DUMP=FILE` writes every broken rule to FILE, one per line.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::support::{Daemon, DaemonOptions};

/// How an account proves its webhooks.
#[derive(Debug, Clone)]
enum Scheme {
    Basic {
        username: String,
        password: String,
    },
    /// HMAC-SHA256 hex of the body in `header`, after `prefix`.
    HmacHex {
        header: &'static str,
        prefix: &'static str,
        secret: String,
    },
    StandardWebhooks {
        key: Vec<u8>,
    },
    UrlToken {
        token: String,
    },
    /// Nothing to prove: no scheme, or a scheme without a configured secret.
    Unverified,
}

#[derive(Debug, Clone)]
struct Target {
    account_id: String,
    scheme: Scheme,
}

/// What the answer to a case must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Expect {
    /// 2xx `accepted` or `duplicate`.
    Pass,
    /// 400 `invalid_json`.
    InvalidJson,
    /// Anything but 2xx.
    Refused,
    /// Only the general rules.
    Anything,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proof {
    Valid,
    Forged,
    Missing,
}

struct Case {
    method: reqwest::Method,
    url: String,
    headers: Headers,
    body: Vec<u8>,
    expect: Expect,
    account_id: Option<String>,
    body_kind: &'static str,
    what: String,
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

const JSON_TYPES: &[&str] = &[
    "application/json",
    "application/json; charset=utf-8",
    "Application/JSON",
    "application/vnd.pms+json",
    "application/cloudevents+json; charset=UTF-8",
];
const OTHER_TYPES: &[&str] = &[
    "text/plain",
    "application/x-www-form-urlencoded",
    "application/octet-stream",
    "multipart/form-data; boundary=x",
    "json",
    "application/jsonx",
];
const OTHER_HEADERS: &[&str] =
    &["x-request-id", "user-agent", "accept", "x-forwarded-for", "x-hostaway-event", "content-language", "x-fuzz"];
const PROOF_HEADERS: &[&str] = &[
    "authorization",
    "ms-signature",
    "signature",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "svix-id",
    "svix-timestamp",
    "svix-signature",
];

fn random_text(rng: &mut StdRng, max_len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 -_.~!$&'()*+,;=:@/?%#[]{}\"\\<>^`|";
    let len = rng.random_range(0..=max_len);
    (0..len).map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())])).collect()
}

fn header_value(rng: &mut StdRng) -> Vec<u8> {
    // Visible ASCII, spaces and obs-text bytes: what an HTTP client can send.
    let len = rng.random_range(0..80);
    (0..len)
        .map(|_| match rng.random_range(0..10) {
            0 => rng.random_range(0x80..=0xff_u8),
            1 => b' ',
            _ => rng.random_range(0x21..=0x7e_u8),
        })
        .collect()
}

fn encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// A body and whether it is valid JSON (`None`: not predicted).
fn random_body(rng: &mut StdRng, nonce: u64, earlier: &mut Vec<Vec<u8>>) -> (Vec<u8>, Option<bool>, &'static str) {
    let valid = |rng: &mut StdRng| {
        let mut object =
            json!({"event": random_text(rng, 20), "nonce": nonce, "data": {"id": rng.random::<u32>(), "note": random_text(rng, 40)}});
        if rng.random_bool(0.3) {
            object["numbers"] = json!([1e308, -0.0, 12345678901234567890_u64, -9007199254740993_i64]);
            object["unicode"] = json!("héllo 😀 \u{1}");
        }
        serde_json::to_vec(&object).unwrap()
    };
    match rng.random_range(0..100) {
        0..40 => {
            let body = valid(rng);
            earlier.push(body.clone());
            (body, Some(true), "json")
        }
        40..45 if !earlier.is_empty() => (earlier[rng.random_range(0..earlier.len())].clone(), Some(true), "json-again"),
        40..50 => {
            let deep = 32;
            (format!("{}{}{}", "{\"a\":".repeat(deep), nonce, "}".repeat(deep)).into_bytes(), Some(true), "json-nested-32")
        }
        50..58 => {
            let len = rng.random_range(0..512);
            ((0..len).map(|_| rng.random::<u8>()).collect(), None, "random-bytes")
        }
        58..64 => {
            let mut body = br#"{"name": ""#.to_vec();
            body.extend([0xff, 0xfe, 0xc3, 0x28, 0xed, 0xa0, 0x80].iter().take(rng.random_range(1..=7)));
            body.extend(br#""}"#);
            (body, Some(false), "invalid-utf8")
        }
        64..68 => {
            let depth = 100_000;
            (format!("{}{}", "[".repeat(depth), "]".repeat(depth)).into_bytes(), Some(false), "nested-100000")
        }
        68..75 => {
            let numbers = ["1e999", r#"{"n": 1e999}"#, "-1e999", r#"{"n": [1e400]}"#, r#"{"n": 123456789012345678901234567890e99999}"#];
            (numbers[rng.random_range(0..numbers.len())].as_bytes().to_vec(), Some(false), "huge-number")
        }
        75..87 => {
            let body = valid(rng);
            let cut = rng.random_range(1..body.len());
            (body[..cut].to_vec(), Some(false), "truncated")
        }
        87..90 => (Vec::new(), Some(false), "empty"),
        _ => {
            let broken = [
                r#"{"a": NaN}"#,
                r#"{"a": Infinity}"#,
                "{'a': 1}",
                r#"{"a": 1,}"#,
                "[1 2]",
                r#"{"a":1} x"#,
                r#"{"a":1}{"b":2}"#,
                r#""\u00""#,
            ];
            (broken[rng.random_range(0..broken.len())].as_bytes().to_vec(), Some(false), "broken-syntax")
        }
    }
}

/// Request headers, as (name, raw value).
type Headers = Vec<(String, Vec<u8>)>;

/// The proof headers and query parameters for `scheme`.
fn proof(rng: &mut StdRng, scheme: &Scheme, kind: Proof, body: &[u8], now_secs: i64) -> (Headers, Vec<(String, String)>) {
    let mut headers = Vec::new();
    let mut query = Vec::new();
    match (scheme, kind) {
        (_, Proof::Missing) | (Scheme::Unverified, _) => {}
        (Scheme::Basic { username, password }, Proof::Valid) => {
            headers.push(("authorization".into(), format!("Basic {}", BASE64.encode(format!("{username}:{password}"))).into_bytes()));
        }
        (Scheme::Basic { username, password }, Proof::Forged) => {
            let forged = match rng.random_range(0..6) {
                0 => format!("Basic {}", BASE64.encode(format!("{username}:{password}x"))),
                1 => format!("Basic {}", BASE64.encode(format!("{username}x:{password}"))),
                2 => format!("Basic {}", BASE64.encode(username)),
                3 => format!("Bearer {password}"),
                4 => "Basic".into(),
                _ => format!("Basic {}", random_text(rng, 30)),
            };
            headers.push(("authorization".into(), forged.into_bytes()));
        }
        (Scheme::HmacHex { header, prefix, secret }, Proof::Valid) => {
            let mut signature = hex::encode(hmac_sha256(secret.as_bytes(), &[body]));
            if rng.random_bool(0.2) {
                signature = signature.to_uppercase();
            }
            headers.push((header.to_string(), format!("{prefix}{signature}").into_bytes()));
        }
        (Scheme::HmacHex { header, prefix, secret }, Proof::Forged) => {
            let good = hex::encode(hmac_sha256(secret.as_bytes(), &[body]));
            let forged = match rng.random_range(0..5) {
                0 => format!("{prefix}{}", hex::encode(hmac_sha256(b"not the secret", &[body]))),
                1 => format!("{prefix}{}", hex::encode(hmac_sha256(secret.as_bytes(), &[body, b" "]))),
                2 => format!("{prefix}{}", &good[..63]),
                3 => format!("{prefix}{}", hex::encode((0..32).map(|_| rng.random::<u8>()).collect::<Vec<u8>>())),
                _ => prefix.to_string(),
            };
            headers.push((header.to_string(), forged.into_bytes()));
        }
        (Scheme::StandardWebhooks { key }, kind) => {
            let names = if rng.random_bool(0.5) {
                ["webhook-id", "webhook-timestamp", "webhook-signature"]
            } else {
                ["svix-id", "svix-timestamp", "svix-signature"]
            };
            let id = format!("msg_{}", rng.random::<u64>());
            let stale = kind == Proof::Forged && rng.random_bool(0.5);
            let timestamp = match stale {
                true => {
                    // A correct signature over a timestamp far off (including now - 2^63, which
                    // overflows a naive difference).
                    let stale = [
                        i128::from(now_secs) - (1_i128 << 63),
                        i128::from(i64::MIN),
                        i128::from(i64::MAX),
                        i128::from(now_secs) - 301,
                        i128::from(now_secs) + 10_000,
                    ];
                    stale[rng.random_range(0..stale.len())].to_string()
                }
                false => now_secs.to_string(),
            };
            // Forged: signed with another key, or a stale timestamp signed with either key.
            let signed_key = if kind == Proof::Valid || (stale && rng.random_bool(0.5)) {
                key.clone()
            } else {
                b"another key of 32 bytes........".to_vec()
            };
            let signature = BASE64.encode(hmac_sha256(&signed_key, &[id.as_bytes(), b".", timestamp.as_bytes(), b".", body]));
            let signatures = if rng.random_bool(0.3) { format!("v1,bogus v1,{signature}") } else { format!("v1,{signature}") };
            headers.push((names[0].into(), id.into_bytes()));
            headers.push((names[1].into(), timestamp.into_bytes()));
            headers.push((names[2].into(), signatures.into_bytes()));
        }
        (Scheme::UrlToken { token }, Proof::Valid) => query.push(("token".into(), token.clone())),
        (Scheme::UrlToken { token }, Proof::Forged) => match rng.random_range(0..4) {
            0 => query.push(("token".into(), format!("{token}x"))),
            1 => query.push(("token".into(), token[1..].to_string())),
            2 => query.push(("token".into(), String::new())),
            _ => headers.push(("token".into(), token.clone().into_bytes())),
        },
    }
    (headers, query)
}

fn make_case(rng: &mut StdRng, base: &str, targets: &[Target], nonce: u64, earlier: &mut Vec<Vec<u8>>) -> Case {
    let target = &targets[rng.random_range(0..targets.len())];
    let method = match rng.random_range(0..100) {
        0..55 => reqwest::Method::POST,
        55..70 => reqwest::Method::PUT,
        70..78 => reqwest::Method::GET,
        78..83 => reqwest::Method::DELETE,
        83..88 => reqwest::Method::PATCH,
        88..93 => reqwest::Method::OPTIONS,
        _ => reqwest::Method::HEAD,
    };
    let (path, path_ok) = match rng.random_range(0..100) {
        0..86 => (format!("/listen/{}", target.account_id), true),
        86..89 => (format!("/listen/nobody-{}", rng.random::<u32>()), false),
        89..91 => (format!("/listen/{}/extra", target.account_id), false),
        91..93 => ("/listen/".to_string(), false),
        93..95 => (format!("/listen/{}%2Fx", target.account_id), false),
        95..97 => ("/listen/%ff%fe%00".to_string(), false),
        97..98 => ("/listen/..%2F..%2Fv1%2Faccounts".to_string(), false),
        _ => (format!("/listen/{}", "a".repeat(5000)), false),
    };
    let (body, json_valid, body_kind) = random_body(rng, nonce, earlier);
    let json_declared = rng.random_bool(0.75);
    let mut headers: Headers = Vec::new();
    match (json_declared, rng.random_range(0..10)) {
        (true, _) => headers.push(("content-type".into(), JSON_TYPES[rng.random_range(0..JSON_TYPES.len())].as_bytes().to_vec())),
        (false, 0..2) => {}
        (false, _) => headers.push(("content-type".into(), OTHER_TYPES[rng.random_range(0..OTHER_TYPES.len())].as_bytes().to_vec())),
    }
    let verified = !matches!(target.scheme, Scheme::Unverified);
    let proof_kind = match rng.random_range(0..100) {
        0..55 => Proof::Valid,
        55..85 => Proof::Forged,
        _ => Proof::Missing,
    };
    let now_secs = chrono::Utc::now().timestamp();
    let (proof_headers, mut query) = proof(rng, &target.scheme, proof_kind, &body, now_secs);
    headers.extend(proof_headers);
    // Other headers: harmless names, and for unproven requests, other schemes' proof headers too.
    for _ in 0..rng.random_range(0..4) {
        let name = if proof_kind != Proof::Valid && rng.random_bool(0.3) {
            PROOF_HEADERS[rng.random_range(0..PROOF_HEADERS.len())]
        } else {
            OTHER_HEADERS[rng.random_range(0..OTHER_HEADERS.len())]
        };
        if !headers.iter().any(|(existing, _)| existing == name) {
            headers.push((name.to_string(), header_value(rng)));
        }
    }
    for _ in 0..rng.random_range(0..4) {
        let name = random_text(rng, 12);
        if name != "token" {
            query.push((name, random_text(rng, 30)));
        }
    }
    let query_text: Vec<String> = query.iter().map(|(name, value)| format!("{}={}", encode(name), encode(value))).collect();
    let url = if query_text.is_empty() { format!("{base}{path}") } else { format!("{base}{path}?{}", query_text.join("&")) };

    let method_ok = method == reqwest::Method::POST || method == reqwest::Method::PUT;
    let proven = !verified || proof_kind == Proof::Valid;
    let expect = if !path_ok || (verified && !proven) {
        Expect::Refused
    } else if !method_ok {
        if method == reqwest::Method::GET { Expect::Anything } else { Expect::Refused }
    } else {
        match (json_declared, json_valid) {
            (true, Some(true)) => Expect::Pass,
            (true, Some(false)) => Expect::InvalidJson,
            _ => Expect::Anything,
        }
    };
    let what = format!(
        "{method} {} [{body_kind}, {} bytes, {}] proof={proof_kind:?} scheme={:?} headers={:?}",
        url.chars().take(160).collect::<String>(),
        body.len(),
        if json_declared { "json-declared" } else { "not json-declared" },
        target.scheme,
        headers.iter().map(|(name, value)| format!("{name}: {}", String::from_utf8_lossy(value))).collect::<Vec<_>>(),
    );
    Case { method, url, headers, body, expect, account_id: path_ok.then(|| target.account_id.clone()), body_kind, what }
}

/// Bodies larger than this may be refused before they are read (the socket buffers fill).
const EARLY_CLOSE_BYTES: usize = 64 * 1024;

#[derive(Default)]
struct Tally {
    inputs: usize,
    by_status: BTreeMap<u16, usize>,
    by_expect: BTreeMap<String, usize>,
    by_body: BTreeMap<String, usize>,
    rate_limited: usize,
    /// Refusals of large bodies that closed the connection before the client read the answer.
    closed_early: usize,
    /// (inbox id, account id, body) of each `accepted` answer.
    accepted: Vec<(String, String, Vec<u8>)>,
    /// Passes by account: proof that correct proofs get through.
    passed_by_account: BTreeMap<String, usize>,
    failures: Vec<String>,
}

/// Why an answer breaks a rule, if it does.
fn judge(case: &Case, status: u16, retry_after: bool, body: &Value) -> Result<(), String> {
    if status >= 500 {
        return Err("a 5xx".into());
    }
    let success = (200..300).contains(&status);
    if !success && case.method != reqwest::Method::HEAD && !(body["error"]["code"].is_string() && body["error"]["message"].is_string()) {
        return Err("an error that is not {\"error\": {\"code\", \"message\"}}".into());
    }
    if success && case.method != reqwest::Method::HEAD {
        match body["status"].as_str() {
            Some("accepted") if body["inboxId"].is_string() => {}
            Some("duplicate") => {}
            _ => return Err("a 2xx that is neither accepted with an inboxId nor duplicate".into()),
        }
    }
    if status == 429 {
        return if retry_after { Ok(()) } else { Err("429 without Retry-After".into()) };
    }
    match case.expect {
        Expect::Pass if !success => Err("a correct request did not pass".into()),
        Expect::InvalidJson if (status, body["error"]["code"].as_str()) != (400, Some("invalid_json")) => {
            Err("a body declared as JSON that is not JSON was not refused with 400 invalid_json".into())
        }
        Expect::Refused if success => Err("passed without a valid proof (or on a wrong route or method)".into()),
        _ => Ok(()),
    }
}

async fn run_case(http: &reqwest::Client, case: Case, tally: &Mutex<Tally>) {
    let mut request = http.request(case.method.clone(), &case.url).body(case.body.clone());
    for (name, value) in &case.headers {
        request = request.header(name.as_str(), reqwest::header::HeaderValue::from_bytes(value).expect("a valid header value"));
    }
    let answer = match request.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            let retry_after = response.headers().contains_key("retry-after");
            response.bytes().await.map(|text| (status, retry_after, text))
        }
        Err(error) => Err(error),
    };
    let mut tally = tally.lock().unwrap();
    tally.inputs += 1;
    *tally.by_expect.entry(format!("{:?}", case.expect)).or_insert(0) += 1;
    *tally.by_body.entry(case.body_kind.to_string()).or_insert(0) += 1;
    let (status, retry_after, text) = match answer {
        Ok(answer) => answer,
        Err(error) => {
            let mut chain = error.to_string();
            let mut source = std::error::Error::source(&error);
            while let Some(cause) = source {
                chain.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            // A refusal may come before a large body is sent in full, and the connection close
            // then cuts the client's upload: the refusal itself is not visible, and not a fault.
            if case.expect == Expect::Refused && case.body.len() > EARLY_CLOSE_BYTES {
                tally.closed_early += 1;
                return;
            }
            return tally.failures.push(format!("no answer; ({chain}) to {}", case.what));
        }
    };
    *tally.by_status.entry(status).or_insert(0) += 1;
    let body: Value = serde_json::from_slice(&text).unwrap_or(Value::Null);
    if let Err(why) = judge(&case, status, retry_after, &body) {
        let answer = String::from_utf8_lossy(&text).chars().take(300).collect::<String>();
        return tally.failures.push(format!("{why}; answered {status} {answer}; to {}", case.what));
    }
    if status == 429 {
        tally.rate_limited += 1;
    } else if (200..300).contains(&status)
        && let Some(account_id) = case.account_id
    {
        *tally.passed_by_account.entry(account_id.clone()).or_insert(0) += 1;
        if body["status"] == "accepted" {
            tally.accepted.push((body["inboxId"].as_str().unwrap_or_default().to_string(), account_id, case.body));
        }
    }
}

async fn create_targets(daemon: &Daemon) -> Vec<Target> {
    let secret = "fuzz-secret-0123456789abcdefghij";
    let key = b"fuzz standard webhooks key 32 by".to_vec();
    let specs = [
        (
            "fz-basic",
            "hostaway",
            json!({"username": "fuzz-user", "password": secret}),
            Scheme::Basic { username: "fuzz-user".into(), password: secret.into() },
        ),
        (
            "fz-hmac-prefixed",
            "lodgify",
            json!({"secret": secret}),
            Scheme::HmacHex { header: "ms-signature", prefix: "sha256=", secret: secret.into() },
        ),
        ("fz-hmac", "hospitable", json!({"secret": secret}), Scheme::HmacHex { header: "signature", prefix: "", secret: secret.into() }),
        ("fz-svix", "guesty", json!({"secret": format!("whsec_{}", BASE64.encode(&key))}), Scheme::StandardWebhooks { key: key.clone() }),
        ("fz-token", "smoobu", json!({"secret": secret}), Scheme::UrlToken { token: secret.into() }),
        ("fz-none", "chaos", json!({}), Scheme::Unverified),
        ("fz-unconfigured", "hostaway", json!({}), Scheme::Unverified),
    ];
    let mut targets = Vec::new();
    for (id, pms, verification, scheme) in specs {
        let account = daemon.create_account(json!({"id": id, "workspaceId": "ws-fuzz", "pms": pms, "verification": verification})).await;
        let configured = account["verification"]["configured"] == true;
        assert_eq!(configured, !matches!(scheme, Scheme::Unverified), "{account}");
        targets.push(Target { account_id: id.to_string(), scheme });
    }
    targets
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_requests_never_get_a_5xx_never_pass_unproven_and_refuse_bad_json() {
    const WORKERS: usize = 8;
    let seed = std::env::var("STAYHOOK_FUZZ_SEED").ok().and_then(|text| text.parse().ok()).unwrap_or_else(rand::random::<u64>);
    eprintln!("fault-suite: listener-fuzz seed={seed} (STAYHOOK_FUZZ_SEED={seed} repeats it)");
    let n_inputs = crate::faults::scaled(3000);
    let daemon = Daemon::start(DaemonOptions::default().with_chaos().env("STAYHOOK_LOG", "info")).await;
    let targets = Arc::new(create_targets(&daemon).await);
    let tally = Arc::new(Mutex::new(Tally::default()));

    let mut workers = Vec::new();
    for worker in 0..WORKERS {
        let (targets, tally, base) = (targets.clone(), tally.clone(), daemon.ingest_url.clone());
        let n_cases = n_inputs / WORKERS + usize::from(worker < n_inputs % WORKERS);
        workers.push(tokio::spawn(async move {
            let worker = u64::try_from(worker).unwrap();
            let mut rng = StdRng::seed_from_u64(seed ^ worker.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            // A fresh connection per request: a pooled connection the server closes after an early
            // refusal would fail the next request for a reason of the client's own.
            let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).pool_max_idle_per_host(0).build().unwrap();
            let mut earlier = Vec::new();
            for index in 0..n_cases {
                let nonce = worker << 32 | u64::try_from(index).unwrap();
                let case = make_case(&mut rng, &base, &targets, nonce, &mut earlier);
                run_case(&http, case, &tally).await;
            }
        }));
    }
    for worker in workers {
        worker.await.unwrap();
    }

    // Every accepted body reads back as it was sent.
    let accepted = std::mem::take(&mut tally.lock().unwrap().accepted);
    let mut read_back_failures = Vec::new();
    for (inbox_id, account_id, body) in &accepted {
        let (status, entry) = daemon.admin("GET", &format!("/v1/inbox/{inbox_id}"), None).await;
        let expected_body = String::from_utf8_lossy(body);
        if status != 200 || entry["accountId"] != account_id.as_str() || entry["body"].as_str() != Some(&expected_body) {
            read_back_failures.push(format!("inbox {inbox_id}: {status} {}", entry.to_string().chars().take(300).collect::<String>()));
        }
    }

    let tally = tally.lock().unwrap();
    eprintln!(
        "fault-suite: listener-fuzz seed={seed} inputs={} accepted={} failures={} read_back_failures={} rate_limited={} closed_early={} statuses={:?} \
         expectations={:?} bodies={:?} passed_by_account={:?}",
        tally.inputs,
        accepted.len(),
        tally.failures.len(),
        read_back_failures.len(),
        tally.rate_limited,
        tally.closed_early,
        tally.by_status,
        tally.by_expect,
        tally.by_body,
        tally.passed_by_account,
    );
    if let Ok(path) = std::env::var("STAYHOOK_FUZZ_DUMP") {
        std::fs::write(&path, tally.failures.join("\n")).expect("write STAYHOOK_FUZZ_DUMP");
    }
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for failure in &tally.failures {
        *kinds.entry(failure.split(';').next().unwrap_or_default().to_string()).or_insert(0) += 1;
    }
    assert!(
        tally.failures.is_empty(),
        "listener-fuzz (seed {seed}): {} of {} inputs broke a rule: {kinds:#?}\nfirst of each:\n{}",
        tally.failures.len(),
        tally.inputs,
        kinds
            .keys()
            .filter_map(|kind| tally.failures.iter().find(|failure| failure.starts_with(kind.as_str())))
            .map(|failure| failure.chars().take(700).collect::<String>())
            .collect::<Vec<_>>()
            .join("\n"),
    );
    assert!(read_back_failures.is_empty(), "listener-fuzz (seed {seed}): accepted bodies do not read back: {read_back_failures:#?}");
    for target in targets.iter() {
        assert!(
            tally.passed_by_account.get(&target.account_id).copied().unwrap_or(0) > 0,
            "listener-fuzz (seed {seed}): nothing passed for {} ({:?})",
            target.account_id,
            target.scheme
        );
    }
}

#[tokio::test]
async fn a_signed_body_replayed_with_another_query_is_not_stored_again() {
    // The signature of HMAC and Standard Webhooks schemes covers the body (and the id and
    // timestamp), not the query: the same signed request with a query parameter added is a replay.
    let daemon = Daemon::start(DaemonOptions::default().with_chaos()).await;
    let targets = create_targets(&daemon).await;
    let now_secs = chrono::Utc::now().timestamp();
    let mut rng = StdRng::seed_from_u64(7);
    for target in targets.iter().filter(|target| matches!(target.scheme, Scheme::HmacHex { .. } | Scheme::StandardWebhooks { .. })) {
        let body = serde_json::to_vec(&json!({"event": "replayed", "account": target.account_id})).unwrap();
        let (headers, _) = proof(&mut rng, &target.scheme, Proof::Valid, &body, now_secs);
        let mut answers = Vec::new();
        for query in ["", "?replay=1", "?replay=2&x=y"] {
            let mut request = daemon.http.post(format!("{}/listen/{}{query}", daemon.ingest_url, target.account_id)).body(body.clone());
            request = request.header("content-type", "application/json");
            for (name, value) in &headers {
                request = request.header(name.as_str(), reqwest::header::HeaderValue::from_bytes(value).unwrap());
            }
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let answer: Value = response.json().await.unwrap_or(Value::Null);
            answers.push((status, answer["status"].as_str().unwrap_or_default().to_string()));
        }
        assert_eq!(
            answers,
            [(200, "accepted".to_string()), (200, "duplicate".to_string()), (200, "duplicate".to_string())],
            "{}: a signed body with another query is a replay",
            target.account_id
        );
    }
}
