//! The fault suite: real faults on the real binary, and what must hold after each.
//!
//! Every test here starts the release `stayhook` binary, loads it like a PMS would (distinct
//! Hostaway reservations, each body posted twice at once: the PMS's retry racing its original),
//! makes a real fault happen (SIGKILL, a receiver outage, a full filesystem, SIGTERM, a dead
//! letter), restarts on the same data dir and then checks, from what a real receiver got:
//! - nothing acknowledged is lost: every body answered 2xx (`accepted` or `duplicate`) arrives as
//!   its unified event (`check_nothing_lost`);
//! - each event keeps one `webhook-id` across replays (`check_ids_stable`): re-deliveries of the
//!   same id are allowed (and counted), a second id for the same event is not;
//! - per-record order: a reservation's `created` arrives before its `updated` (`check_record_order`);
//! - no tight loops: POSTs per event stay within the retry schedule plus the restarts
//!   (`check_no_tight_loop`).
//!
//! Each test prints one `fault-suite: ...` line with its figures (RELIABILITY.md collects them).
//! Loops are bounded in count and time; `STAYHOOK_FAULT_SCALE` (default 1) multiplies the rounds
//! and records for a longer local run.
//!
//! Modules: `sigkill` (repeated SIGKILL under load, SIGKILL right after a `duplicate` answer, a
//! receiver outage across a SIGKILL), `full_disk` (a small tmpfs filled under load, or a file size
//! limit where mounting is not permitted), `sigterm` (graceful stops under load, readiness),
//! `dead_letters` (a dead letter holds its record's lane until redelivered).

mod dead_letters;
mod full_disk;
mod sigkill;
mod sigterm;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::support::{Daemon, DaemonOptions, Receiver, hostaway_body};

/// `STAYHOOK_FAULT_SCALE` (a positive number, default 1): how much larger than in CI to run.
pub fn scale() -> f64 {
    std::env::var("STAYHOOK_FAULT_SCALE").ok().and_then(|text| text.parse::<f64>().ok()).filter(|scale| *scale > 0.0).unwrap_or(1.0)
}

/// `n` times the scale, at least 1.
pub fn scaled(n: usize) -> usize {
    // Rounding a small positive product: the value always fits.
    ((n as f64) * scale()).round().max(1.0) as usize
}

/// A seeded RNG for a test; the seed is printed (and taken from `STAYHOOK_FAULT_SEED`) so a run
/// can be repeated.
pub fn seeded_rng(test: &str) -> rand::rngs::StdRng {
    let seed = std::env::var("STAYHOOK_FAULT_SEED").ok().and_then(|text| text.parse().ok()).unwrap_or_else(rand::random::<u64>);
    eprintln!("fault-suite: {test} seed={seed} (STAYHOOK_FAULT_SEED={seed} repeats it)");
    rand::rngs::StdRng::seed_from_u64(seed)
}

/// Run a blocking harness call (starting a daemon waits for its output) without stalling the
/// runtime's other tasks (the receiver, the load clients).
pub fn blocking<T>(call: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(call)
}

/// The two webhooks each reservation gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    /// Hostaway's `reservation.created`: delivered as `reservation.created`.
    Created,
    /// The same reservation with moved dates: delivered as `reservation.updated`.
    Updated,
}

impl Stage {
    /// The unified event type the stage is delivered as.
    pub fn event_type(self) -> &'static str {
        match self {
            Stage::Created => "reservation.created",
            Stage::Updated => "reservation.updated",
        }
    }
}

/// Hostaway bodies for any reservation id, from the plugin's golden cases.
pub struct Bodies {
    created: Value,
    updated: Value,
}

impl Bodies {
    /// Load the golden `reservation-created` and `reservation-updated-dates-moved` bodies.
    pub fn load() -> Bodies {
        let parse = |case: &str| serde_json::from_slice::<Value>(&hostaway_body(case)).expect("golden body is JSON");
        Bodies { created: parse("reservation-created"), updated: parse("reservation-updated-dates-moved") }
    }

    /// The body of `stage` for reservation `record`.
    pub fn body(&self, record: u64, stage: Stage) -> Vec<u8> {
        let mut body = match stage {
            Stage::Created => self.created.clone(),
            Stage::Updated => self.updated.clone(),
        };
        body["data"]["id"] = json!(record);
        body["data"]["hostawayReservationId"] = json!(record);
        body["data"]["reservationId"] = json!(format!("fault-{record}"));
        serde_json::to_vec(&body).expect("serialize")
    }
}

/// A Hostaway account with basic auth (a verified account, as the README sets one up) and one
/// subscription to the receiver.
#[derive(Clone)]
pub struct Account {
    /// The account id.
    pub id: String,
    /// The `authorization` header value that passes.
    pub authorization: String,
}

impl Account {
    /// Create it on `daemon`, subscribed to `receiver_url`.
    pub async fn create(daemon: &Daemon, id: &str, receiver_url: &str) -> Account {
        let password = "fault-suite-password-0123456789";
        daemon
            .create_account(json!({
                "id": id, "workspaceId": "ws-faults", "pms": "hostaway",
                "verification": {"username": "stayhook", "password": password},
            }))
            .await;
        daemon.subscribe(id, receiver_url).await;
        let authorization = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("stayhook:{password}")));
        Account { id: id.to_string(), authorization }
    }
}

/// One answer of the listener.
#[derive(Debug, Clone)]
pub struct Answer {
    /// When it came.
    pub at: Instant,
    /// HTTP status.
    pub status: u16,
    /// `error.code`, or `status` for 2xx.
    pub code: String,
    /// Whether a `Retry-After` header came with it.
    pub retry_after: bool,
}

/// What the load got: which bodies are acknowledged, every answer, transport failures.
#[derive(Default)]
pub struct Ledger {
    /// Bodies answered 2xx at least once: (reservation, stage) -> the 2xx statuses seen.
    pub acknowledged: BTreeMap<(u64, Stage), Vec<String>>,
    /// Every HTTP answer, in order of arrival.
    pub answers: Vec<Answer>,
    /// Requests that got no HTTP answer (the daemon was killed or gone).
    pub transport_errors: u64,
    /// Requests sent.
    pub requests: u64,
}

impl Ledger {
    /// Answers by status and code, for the summary.
    pub fn answer_counts(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for answer in &self.answers {
            *counts.entry(format!("{} {}", answer.status, answer.code)).or_insert(0) += 1;
        }
        counts
    }
}

/// How one pair (a body and its racing retry) ended.
enum PairOutcome {
    /// At least one 2xx.
    Acknowledged,
    /// HTTP answers, none 2xx (503, 429, ...): the PMS retries later.
    Refused,
    /// No HTTP answer at all: the daemon is down.
    Down,
}

/// The load: reservations minted in order, each created then updated, each body posted twice
/// concurrently; refused bodies go back in a queue and are retried (a PMS retries until 2xx).
pub struct Load {
    account: Account,
    bodies: Bodies,
    next_record: AtomicU64,
    /// Minting stops at this record id (exclusive); raised per round.
    mint_limit: AtomicU64,
    retry: Mutex<VecDeque<(u64, Stage)>>,
    /// What the load got.
    pub ledger: Mutex<Ledger>,
    /// Pause between a body and its retry, upper bound in microseconds (0: both at once).
    pub retry_gap_us: u64,
    /// Whether an acknowledged creation is followed by the reservation's update.
    pub updates: AtomicBool,
}

impl Load {
    /// A load on `account`, minting reservation ids from 1.
    pub fn new(account: Account) -> Arc<Load> {
        Arc::new(Load {
            account,
            bodies: Bodies::load(),
            next_record: AtomicU64::new(1),
            mint_limit: AtomicU64::new(1),
            retry: Mutex::new(VecDeque::new()),
            ledger: Mutex::new(Ledger::default()),
            retry_gap_us: 3000,
            updates: AtomicBool::new(true),
        })
    }

    /// Allow `n` more reservations to be minted.
    pub fn allow(&self, n: u64) {
        self.mint_limit.fetch_add(n, Ordering::SeqCst);
    }

    /// Mint no more reservations (only refused bodies are posted again).
    pub fn stop_minting(&self) {
        self.mint_limit.store(self.next_record.load(Ordering::SeqCst), Ordering::SeqCst);
    }

    /// Reservations minted so far.
    pub fn minted(&self) -> u64 {
        self.next_record.load(Ordering::SeqCst) - 1
    }

    /// Bodies refused or cut off so far and not yet acknowledged.
    pub fn backlog(&self) -> usize {
        self.retry.lock().unwrap().len()
    }

    fn next_item(&self) -> Option<(u64, Stage)> {
        if let Some(item) = self.retry.lock().unwrap().pop_front() {
            return Some(item);
        }
        let limit = self.mint_limit.load(Ordering::SeqCst);
        self.next_record
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |next| (next < limit).then_some(next + 1))
            .ok()
            .map(|record| (record, Stage::Created))
    }

    /// Run `n_clients` clients against `ingest_url` until `stop`, the daemon is down, or there
    /// is nothing left to post.
    pub fn spawn_clients(self: &Arc<Self>, ingest_url: &str, n_clients: usize, stop: Arc<AtomicBool>) -> Vec<tokio::task::JoinHandle<()>> {
        (0..n_clients)
            .map(|_| {
                let load = self.clone();
                let url = format!("{ingest_url}/listen/{}", self.account.id);
                let stop = stop.clone();
                tokio::spawn(async move { load.client(url, stop).await })
            })
            .collect()
    }

    async fn client(self: Arc<Self>, url: String, stop: Arc<AtomicBool>) {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap();
        let mut current = None;
        while !stop.load(Ordering::SeqCst) {
            let Some((record, stage)) = current.take().or_else(|| self.next_item()) else { return };
            match self.post_pair(&http, &url, record, stage).await {
                PairOutcome::Acknowledged => {
                    if stage == Stage::Created && self.updates.load(Ordering::SeqCst) {
                        current = Some((record, Stage::Updated));
                    }
                }
                PairOutcome::Refused => {
                    self.retry.lock().unwrap().push_back((record, stage));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                PairOutcome::Down => {
                    self.retry.lock().unwrap().push_back((record, stage));
                    return;
                }
            }
        }
        if let Some(item) = current {
            self.retry.lock().unwrap().push_back(item);
        }
    }

    async fn post_pair(&self, http: &reqwest::Client, url: &str, record: u64, stage: Stage) -> PairOutcome {
        let body = self.bodies.body(record, stage);
        let gap = Duration::from_micros(rand::rng().random_range(0..=self.retry_gap_us));
        let (original, retry) = tokio::join!(self.post(http, url, &body), async {
            tokio::time::sleep(gap).await;
            self.post(http, url, &body).await
        });
        let mut ledger = self.ledger.lock().unwrap();
        ledger.requests += 2;
        let mut outcome = PairOutcome::Down;
        for answer in [original, retry] {
            match answer {
                None => ledger.transport_errors += 1,
                Some(answer) => {
                    if (200..300).contains(&answer.status) {
                        ledger.acknowledged.entry((record, stage)).or_default().push(answer.code.clone());
                        outcome = PairOutcome::Acknowledged;
                    } else if !matches!(outcome, PairOutcome::Acknowledged) {
                        outcome = PairOutcome::Refused;
                    }
                    ledger.answers.push(answer);
                }
            }
        }
        outcome
    }

    async fn post(&self, http: &reqwest::Client, url: &str, body: &[u8]) -> Option<Answer> {
        let response = http
            .post(url)
            .header("content-type", "application/json")
            .header("authorization", &self.account.authorization)
            .body(body.to_vec())
            .send()
            .await
            .ok()?;
        let status = response.status().as_u16();
        let retry_after = response.headers().contains_key("retry-after");
        // A body cut off by a kill is no answer: the client cannot know what the status meant.
        let text = response.text().await.ok()?;
        let json: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let code = if (200..300).contains(&status) {
            json["status"].as_str().unwrap_or("<no status>").to_string()
        } else {
            json["error"]["code"]
                .as_str()
                .map_or_else(|| format!("<not JSON: {}>", text.chars().take(60).collect::<String>()), str::to_string)
        };
        Some(Answer { at: Instant::now(), status, code, retry_after })
    }
}

/// How long the receiver may stay silent before a wait for deliveries gives up.
pub const QUIET: Duration = Duration::from_secs(15);

/// One POST the receiver got.
#[derive(Debug, Clone)]
pub struct Post {
    /// `webhook-id`.
    pub webhook_id: String,
    /// `hook.eventType`.
    pub event_type: String,
    /// `data.record.id`.
    pub record: String,
    /// What the receiver answered.
    pub answered: u16,
}

/// Everything the receiver got, in arrival order.
#[derive(Default)]
pub struct Seen {
    /// The POSTs.
    pub posts: Vec<Post>,
}

impl Seen {
    /// Take what arrived, waiting at most `wait` for the first one.
    pub async fn drain(&mut self, receiver: &Receiver, wait: Duration) {
        let mut wait = wait;
        while let Some(received) = receiver.next_within(wait).await {
            let envelope = received.json();
            self.posts.push(Post {
                webhook_id: received.header("webhook-id"),
                event_type: envelope["hook"]["eventType"].as_str().unwrap_or_default().to_string(),
                record: envelope["data"]["record"]["id"].as_str().unwrap_or_default().to_string(),
                answered: received.answered,
            });
            wait = Duration::ZERO;
        }
    }

    /// Take what arrives until `done(self)` holds, `timeout` passes, or nothing arrived for
    /// [`QUIET`] (longer than any retry delay the suite uses); whether `done` held.
    pub async fn collect_until(&mut self, receiver: &Receiver, timeout: Duration, done: impl Fn(&Seen) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut last_arrival = Instant::now();
        loop {
            if done(self) {
                return true;
            }
            if Instant::now() >= deadline || last_arrival.elapsed() > QUIET {
                return false;
            }
            let before = self.posts.len();
            self.drain(receiver, Duration::from_millis(200)).await;
            if self.posts.len() > before {
                last_arrival = Instant::now();
            }
        }
    }

    /// The (record, event type) pairs delivered (answered 2xx).
    pub fn delivered(&self) -> BTreeSet<(String, String)> {
        self.posts.iter().filter(|post| post.answered < 300).map(|post| (post.record.clone(), post.event_type.clone())).collect()
    }

    /// Acknowledged bodies not delivered (yet).
    pub fn missing(&self, acknowledged: &BTreeMap<(u64, Stage), Vec<String>>) -> Vec<(u64, Stage)> {
        let delivered = self.delivered();
        acknowledged
            .keys()
            .filter(|(record, stage)| !delivered.contains(&(record.to_string(), stage.event_type().to_string())))
            .copied()
            .collect()
    }

    /// Events (record, type) that reached the receiver under more than one `webhook-id`.
    pub fn unstable_ids(&self) -> BTreeMap<(String, String), BTreeSet<String>> {
        let mut ids: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
        for post in &self.posts {
            ids.entry((post.record.clone(), post.event_type.clone())).or_default().insert(post.webhook_id.clone());
        }
        ids.retain(|_, ids| ids.len() > 1);
        ids
    }

    /// 2xx deliveries beyond the first of each `webhook-id` (allowed after a crash; receivers
    /// deduplicate on the id).
    pub fn redelivered_same_id(&self) -> usize {
        let mut delivered: BTreeMap<&str, usize> = BTreeMap::new();
        for post in self.posts.iter().filter(|post| post.answered < 300) {
            *delivered.entry(&post.webhook_id).or_insert(0) += 1;
        }
        delivered.values().map(|n| n - 1).sum()
    }

    /// Records whose first delivered `updated` came before their first delivered `created`.
    pub fn out_of_order(&self) -> Vec<String> {
        let mut first: BTreeMap<(&str, &str), usize> = BTreeMap::new();
        for (index, post) in self.posts.iter().enumerate().filter(|(_, post)| post.answered < 300) {
            first.entry((&post.record, &post.event_type)).or_insert(index);
        }
        first
            .iter()
            .filter(|((_, event_type), _)| *event_type == "reservation.updated")
            .filter(|((record, _), updated)| first.get(&(*record, "reservation.created")).is_none_or(|created| created > *updated))
            .map(|((record, _), _)| record.to_string())
            .collect()
    }

    /// The most POSTs any one `webhook-id` got, and which.
    pub fn most_posts_per_id(&self) -> (usize, String) {
        let mut posts: BTreeMap<&str, usize> = BTreeMap::new();
        for post in &self.posts {
            *posts.entry(&post.webhook_id).or_insert(0) += 1;
        }
        posts.into_iter().max_by_key(|(_, n)| *n).map(|(id, n)| (n, id.to_string())).unwrap_or_default()
    }
}

/// Every answer of the listener was 2xx, 429 with `Retry-After` (a rate limit the PMS retries
/// after), or one of `also` (status and error code, `*` for any code).
#[track_caller]
pub fn check_answers(test: &str, ledger: &Ledger, also: &[(u16, &str)]) {
    let wrong: Vec<&Answer> = ledger
        .answers
        .iter()
        .filter(|answer| {
            !((200..300).contains(&answer.status)
                || (answer.status == 429 && answer.retry_after)
                || also.iter().any(|(status, code)| answer.status == *status && (*code == "*" || answer.code == *code)))
        })
        .collect();
    assert!(wrong.is_empty(), "{test}: unexpected answers from the listener: {:?}; first: {:?}", ledger.answer_counts(), wrong.first());
}

/// Every acknowledged body was delivered.
#[track_caller]
pub fn check_nothing_lost(test: &str, ledger: &Ledger, seen: &Seen) {
    let missing = seen.missing(&ledger.acknowledged);
    let detail: Vec<String> = missing
        .iter()
        .take(20)
        .map(|(record, stage)| format!("reservation {record} {stage:?} (answered {:?})", ledger.acknowledged[&(*record, *stage)]))
        .collect();
    assert!(
        missing.is_empty(),
        "{test}: {} acknowledged webhooks were never delivered (of {}); first: {detail:#?}",
        missing.len(),
        ledger.acknowledged.len()
    );
}

/// Each event reached the receiver under one `webhook-id`, whatever was replayed.
#[track_caller]
pub fn check_ids_stable(test: &str, seen: &Seen) {
    let unstable = seen.unstable_ids();
    let detail: Vec<String> =
        unstable.iter().take(20).map(|((record, event_type), ids)| format!("{record} {event_type}: {ids:?}")).collect();
    assert!(unstable.is_empty(), "{test}: {} events were sent under more than one webhook-id; first: {detail:#?}", unstable.len());
}

/// A reservation's `created` was delivered before its `updated`.
#[track_caller]
pub fn check_record_order(test: &str, seen: &Seen) {
    let out_of_order = seen.out_of_order();
    assert!(
        out_of_order.is_empty(),
        "{test}: {} reservations were delivered updated before created: {:?}",
        out_of_order.len(),
        &out_of_order[..out_of_order.len().min(20)]
    );
}

/// No event got more POSTs than `bound` (the schedule's attempts plus the restarts).
#[track_caller]
pub fn check_no_tight_loop(test: &str, seen: &Seen, bound: usize) {
    let (most, webhook_id) = seen.most_posts_per_id();
    assert!(most <= bound, "{test}: event {webhook_id} was POSTed {most} times (at most {bound} expected): a delivery loop");
}

/// The number of attempts a retry schedule allows for one delivery.
pub fn attempts_of(schedule: &str) -> usize {
    schedule.split(',').count() + 1
}

/// Daemon options for the fault suite: info logs (the suite makes many requests), this schedule,
/// and no per-account listener limit (0): the suite's load posts on one account faster than the
/// default 500 webhooks per second, and a 429 would only hide the faults it looks for.
pub fn options(schedule: &str) -> DaemonOptions {
    DaemonOptions::default()
        .retry_schedule(schedule)
        .env("STAYHOOK_LOG", "info")
        .env("STAYHOOK_LISTENER_REQUESTS_PER_SECOND", "0")
        .env("STAYHOOK_LISTENER_BYTES_PER_SECOND", "0")
}

/// Print the summary line of a load test.
pub fn summary(test: &str, extra: &str, ledger: &Ledger, seen: &Seen) {
    let lost = seen.missing(&ledger.acknowledged).len();
    eprintln!(
        "fault-suite: {test} {extra} requests={} acknowledged={} lost={lost} unstable_ids={} out_of_order={} delivered={} \
         redelivered_same_id={} most_posts_per_id={} transport_errors={} answers={:?}",
        ledger.requests,
        ledger.acknowledged.len(),
        seen.unstable_ids().len(),
        seen.out_of_order().len(),
        seen.delivered().len(),
        seen.redelivered_same_id(),
        seen.most_posts_per_id().0,
        ledger.transport_errors,
        ledger.answer_counts(),
    );
}
