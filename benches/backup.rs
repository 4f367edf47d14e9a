//! Export and import of a large store (`stayhook export` / `stayhook import`, the real binary):
//! `BACKUP_WEBHOOKS` (100,000) normalized webhooks of 10 accounts, each with its event, a
//! duplicate digest, and 1,000 records' state per account, written through the storage
//! interfaces into a fresh data dir; then the export to a file and the import of that file into
//! another fresh data dir, each a child process. Reported: wall time, the child's peak RSS
//! (`wait4`'s `ru_maxrss`), the file's size.
//!
//! `cargo bench --bench backup` (`BACKUP_WEBHOOKS=1000000` for a million; `BACKUP_KEEP=DIR` keeps
//! the source data dir in DIR).

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use stayhook::model::{EventResult, EventType, RecordKind};
use stayhook::store::{
    Account, DigestRecord, Expected, InboxEntry, InboxOutcome, InboxStatus, NormalizedBatch, StateWrite, StoredEvent, Subscription,
};

const BODY: &[u8] = include_bytes!("../plugins/hostaway/tests/cases/reservation-created/body.json");
const EXPECTED: &[u8] = include_bytes!("../plugins/hostaway/tests/cases/reservation-created/expected.json");
const ACCOUNTS: usize = 10;
const RECORDS: usize = 1_000;
const T0_MS: u64 = 1_763_000_000_000;

fn main() {
    let total: usize = std::env::var("BACKUP_WEBHOOKS").ok().and_then(|n| n.parse().ok()).unwrap_or(100_000);
    let work = tempfile::tempdir().unwrap();
    // BACKUP_KEEP=DIR keeps the source data dir there (to profile an export of it).
    let source = std::env::var_os("BACKUP_KEEP").map_or_else(|| work.path().join("source"), std::path::PathBuf::from);
    let started = Instant::now();
    fill(&source, total);
    println!("filled {total} webhooks in {:.1?}; data dir {} MB", started.elapsed(), dir_size(&source) >> 20);

    let file = work.path().join("backup.ndjson");
    let (elapsed, rss_kb, output) = run(&source, &["export", "--out", file.to_str().unwrap()]);
    println!(
        "export: {elapsed:.1?}, peak RSS {} MB, file {} MB ({})",
        rss_kb >> 10,
        std::fs::metadata(&file).unwrap().len() >> 20,
        output.trim()
    );
    let target = work.path().join("target");
    let (elapsed, rss_kb, output) = run(&target, &["import", file.to_str().unwrap()]);
    println!("import: {elapsed:.1?}, peak RSS {} MB, data dir {} MB ({})", rss_kb >> 10, dir_size(&target) >> 20, output.trim());
}

/// Write the source store through the storage interfaces, as the daemon would have.
fn fill(data_dir: &Path, total: usize) {
    let store = stayhook::store::open_data_dir(data_dir, 64 << 20, 64 << 20).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let record: Value = serde_json::from_slice(EXPECTED).unwrap();
    for n in 0..ACCOUNTS {
        let account = Account {
            id: format!("account-{n}"),
            workspace_id: "ws".into(),
            pms: "hostaway".into(),
            name: None,
            credentials: [("clientSecret".to_string(), "s".repeat(32))].into(),
            verification: Default::default(),
            settings: Default::default(),
            api_base_url: None,
            rate_limit_per_second: None,
            registration: Default::default(),
            reconcile_interval_secs: None,
            created_at: "2026-01-01T00:00:00Z".into(),
            updated_at: "2026-01-01T00:00:00Z".into(),
        };
        runtime.block_on(store.insert_account(&account)).unwrap();
        let subscription = Subscription {
            id: format!("subscription-{n}"),
            account_id: account.id.clone(),
            name: "crm".into(),
            url: "https://crm.example.com/hooks".into(),
            enabled: true,
            event_types: vec![EventType::ReservationCreated, EventType::ReservationUpdated],
            secret: "whsec_AAAA".into(),
            failing_since_ms: None,
            disabled_reason: None,
            created_at: "2026-01-01T00:00:00Z".into(),
            updated_at: "2026-01-01T00:00:00Z".into(),
        };
        runtime.block_on(store.put_subscription(&subscription)).unwrap();
    }
    let record = Arc::new(record);
    for chunk in (0..total).collect::<Vec<_>>().chunks(256) {
        let mut batches = Vec::new();
        for &n in chunk {
            let account_id = format!("account-{}", n % ACCOUNTS);
            let received_at_ms = T0_MS + n as u64;
            let entry = InboxEntry {
                account_id: account_id.clone(),
                received_at_ms,
                method: "POST".into(),
                query: String::new(),
                content_type: Some("application/json".into()),
                headers: vec![("content-type".into(), "application/json".into())],
                body: BODY.to_vec(),
            };
            let inbox_id = store.import_inbox(&entry).unwrap();
            let digest =
                DigestRecord { account_id: account_id.clone(), digest: (n as u64).to_be_bytes().repeat(4), seen_ms: received_at_ms };
            store.import_digest(&digest).unwrap();
            let record_id = format!("r{}", (n / ACCOUNTS) % RECORDS);
            let event_id = uuid::Uuid::now_v7().to_string();
            let event = StoredEvent {
                id: event_id.clone(),
                event_type: EventType::ReservationUpdated,
                timestamp: "2026-01-01T00:00:00.000Z".into(),
                integration_account_id: account_id.clone(),
                workspace_id: "ws".into(),
                record_id: record_id.clone(),
                record: (*record).clone(),
                result: EventResult::Success,
                failure_reason: None,
                inbox_id: inbox_id.to_string(),
                origin: Default::default(),
            };
            let outcome = InboxOutcome {
                status: InboxStatus::Done,
                plugin: Some("hostaway".into()),
                plugin_version: Some("0.2.0".into()),
                error_kind: None,
                error: None,
                event_ids: vec![event_id],
                n_unchanged: 0,
                generation: 0,
                at: "2026-01-01T00:00:00Z".into(),
            };
            let state = vec![StateWrite {
                account_id,
                kind: RecordKind::Reservation,
                record_id,
                record: Some(record.clone()),
                expected: Expected::Any,
            }];
            batches.push(NormalizedBatch { inbox_id, outcome, events: vec![event], state, deliveries: Vec::new() });
        }
        store.commit_normalized_blocking(batches).unwrap();
    }
    runtime.block_on(store.durable()).unwrap();
    store.flush_blocking().unwrap();
}

/// Run `stayhook` on `data_dir`; its wall time, peak RSS (KiB) and standard output. The source
/// store's threads let go of sled's lock shortly after it is dropped: a refusal is retried.
fn run(data_dir: &Path, args: &[&str]) -> (Duration, i64, String) {
    for _ in 0..100 {
        let started = Instant::now();
        let child = Command::new(env!("CARGO_BIN_EXE_stayhook"))
            .args(args)
            .env("STAYHOOK_DATA_DIR", data_dir)
            .env("STAYHOOK_LOG", "warn")
            .env_remove("STAYHOOK_CONFIG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id() as libc::pid_t;
        let output = std::thread::spawn(move || {
            use std::io::Read as _;
            let mut child = child;
            let (mut out, mut err) = (String::new(), String::new());
            child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
            child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            (out, err)
        });
        let mut status = 0;
        // SAFETY: a zeroed rusage is a valid value for wait4 to fill.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: waits for our own child, filling the two out-parameters.
        let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        assert_eq!(waited, pid, "wait4");
        let elapsed = started.elapsed();
        let (out, err) = output.join().unwrap();
        if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
            return (elapsed, usage.ru_maxrss, out);
        }
        assert!(err.contains("running daemon"), "stayhook {args:?} failed: {out}{err}");
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the data dir stayed locked");
}

fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let metadata = entry.metadata().unwrap();
        total += if metadata.is_dir() { dir_size(&entry.path()) } else { metadata.len() };
    }
    total
}
