//! A full disk under load: the daemon's data dir is on a small tmpfs (mounted by the test; the
//! suite runs as root in CI) that a ballast file fills while webhooks arrive. Where mounting is not
//! permitted (or with `STAYHOOK_FAULT_DISK=fsize`), the fallback makes writes fail for real too: the
//! daemon starts with SIGXFSZ ignored and the test lowers its RLIMIT_FSIZE (prlimit) just above the
//! store's current file sizes, so sled's next growing write gets `EFBIG`.
//!
//! The daemon must fail-stop: answer 503 `storage_unavailable` with `Retry-After` (never 500, never
//! 2xx for what is not durable), report 503 on `/healthz` and `/readyz` of both listeners, exit by
//! itself with code 75, not loop on deliveries; and after the space is freed and it is restarted,
//! deliver everything it acknowledged, under stable ids.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::sigterm::probe;
use super::{
    Account, Load, Seen, attempts_of, blocking, check_answers, check_ids_stable, check_no_tight_loop, check_nothing_lost, options, scaled,
    summary,
};
use crate::support::{Daemon, Receiver};

const SCHEDULE: &str = "100ms,500ms,1s,2s,5s";
/// The exit code of a fail-stop on a storage error (EX_TEMPFAIL).
const EXIT_STORAGE_FAILED: i32 = 75;
/// Room left beside the ballast: some webhooks fit, then the store runs out.
const MARGIN_BYTES: u64 = 2 * 1024 * 1024;

/// How the disk is made to fill up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// A tmpfs of a few MiB, filled by a ballast file.
    Tmpfs,
    /// RLIMIT_FSIZE on the daemon's process.
    FileSizeLimit,
}

/// A small filesystem for the store, unmounted on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
    mode: Mode,
}

impl SmallDisk {
    fn new(size_mib: u64) -> SmallDisk {
        let dir = tempfile::Builder::new().prefix("stayhook-full-disk").tempdir().expect("temp dir");
        if std::env::var("STAYHOOK_FAULT_DISK").as_deref() == Ok("fsize") {
            return SmallDisk { dir, mode: Mode::FileSizeLimit };
        }
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m,mode=0700"), "stayhook-faults"])
            .arg(dir.path())
            .output();
        match mounted {
            Ok(output) if output.status.success() => SmallDisk { dir, mode: Mode::Tmpfs },
            other => {
                eprintln!("fault-suite: full-disk: mounting a tmpfs failed ({other:?}); using RLIMIT_FSIZE instead");
                SmallDisk { dir, mode: Mode::FileSizeLimit }
            }
        }
    }

    fn store_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn ballast(&self) -> PathBuf {
        self.dir.path().join("ballast")
    }

    /// Leave only `MARGIN_BYTES` for the daemon `pid`.
    fn fill(&self, pid: u32) {
        match self.mode {
            Mode::Tmpfs => {
                let free = free_bytes(self.dir.path());
                let ballast = free.saturating_sub(MARGIN_BYTES);
                const CHUNK_BYTES: u64 = 1024 * 1024;
                let chunk = vec![0x5a_u8; usize::try_from(CHUNK_BYTES).unwrap()];
                let mut file = std::fs::File::create(self.ballast()).expect("create the ballast");
                let mut written = 0;
                while written < ballast {
                    let n = (ballast - written).min(CHUNK_BYTES);
                    std::io::Write::write_all(&mut file, &chunk[..usize::try_from(n).unwrap()]).expect("write the ballast");
                    written += n;
                }
                file.sync_all().expect("sync the ballast");
            }
            Mode::FileSizeLimit => {
                let limit = largest_file(&self.store_dir()) + MARGIN_BYTES;
                let rlimit = libc::rlimit { rlim_cur: limit, rlim_max: limit };
                let pid = libc::pid_t::try_from(pid).unwrap();
                // SAFETY: prlimit(2) on the daemon's pid with a valid new limit and no old-limit out pointer.
                let set = unsafe { libc::prlimit(pid, libc::RLIMIT_FSIZE, &rlimit, std::ptr::null_mut()) };
                assert_eq!(set, 0, "prlimit: {}", std::io::Error::last_os_error());
            }
        }
    }

    /// Free the space again (a restarted process has no file size limit).
    fn free(&self) {
        if self.mode == Mode::Tmpfs {
            std::fs::remove_file(self.ballast()).expect("remove the ballast");
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        if self.mode == Mode::Tmpfs {
            let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
        }
    }
}

fn free_bytes(path: &Path) -> u64 {
    let path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: statvfs(3) with a NUL-terminated path and a zeroed out-struct of the right type.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    let done = unsafe { libc::statvfs(path.as_ptr(), &mut stat) };
    assert_eq!(done, 0, "statvfs: {}", std::io::Error::last_os_error());
    stat.f_bavail * stat.f_frsize
}

fn largest_file(dir: &Path) -> u64 {
    let mut largest = 0;
    for entry in std::fs::read_dir(dir).expect("read the store dir").flatten() {
        let Ok(metadata) = entry.metadata() else { continue };
        largest = largest.max(if metadata.is_dir() { largest_file(&entry.path()) } else { metadata.len() });
    }
    largest
}

/// One probe: when it was sent, the URL, the answer (none when the daemon did not answer).
type Probe = (Instant, String, Option<(u16, serde_json::Value)>);

/// Probes of `/healthz` and `/readyz` on both listeners, taken every 50 ms while the test runs.
struct HealthWatch {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
    /// (sent at, url, answer).
    probes: Arc<Mutex<Vec<Probe>>>,
}

impl HealthWatch {
    fn start(daemon: &Daemon) -> HealthWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let probes = Arc::new(Mutex::new(Vec::new()));
        let bases = [daemon.ingest_url.clone(), daemon.admin_url.clone()];
        let (stop_task, probes_task) = (stop.clone(), probes.clone());
        let task = tokio::spawn(async move {
            let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().unwrap();
            while !stop_task.load(Ordering::SeqCst) {
                for base in &bases {
                    for path in ["/healthz", "/readyz"] {
                        let sent = Instant::now();
                        let answer = probe(&http, base, path).await;
                        probes_task.lock().unwrap().push((sent, format!("{base}{path}"), answer));
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        HealthWatch { stop, task, probes }
    }

    async fn finish(self) -> Vec<Probe> {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.unwrap();
        std::mem::take(&mut *self.probes.lock().unwrap())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_stop_with_503_and_everything_acknowledged_is_delivered_after_space_is_freed() {
    const TEST: &str = "full-disk";
    let disk = SmallDisk::new(32);
    let mut daemon_options = options(SCHEDULE).store_dir(disk.store_dir());
    if disk.mode == Mode::FileSizeLimit {
        daemon_options = daemon_options.ignore_sigxfsz();
    }
    let receiver = Receiver::start().await;
    let mut daemon = Daemon::start(daemon_options).await;
    let account = Account::create(&daemon, "full-disk", &receiver.url).await;
    let load = Load::new(account);

    // Some webhooks while there is room.
    load.allow(40);
    for client in load.spawn_clients(&daemon.ingest_url, 2, Arc::new(AtomicBool::new(false))) {
        client.await.unwrap();
    }
    assert_eq!(load.ledger.lock().unwrap().acknowledged.len(), 80, "{TEST}: webhooks refused before the disk filled");

    // Fill the disk, then keep posting until the store fails and the daemon stops.
    disk.fill(daemon.pid().unwrap());
    let watch = HealthWatch::start(&daemon);
    load.allow(u64::try_from(scaled(4000)).unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let clients = load.spawn_clients(&daemon.ingest_url, 4, stop.clone());
    let first_failure = |load: &Load| {
        let ledger = load.ledger.lock().unwrap();
        ledger.answers.iter().find(|answer| !(200..300).contains(&answer.status)).map(|answer| answer.at)
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    while first_failure(&load).is_none() && daemon.is_running() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let failed_at = first_failure(&load);
    // Fail-stop: the process ends by itself (the contract says within 10 s; allow more on a busy machine).
    let exit = daemon.wait_exit(Duration::from_secs(30)).await;
    daemon.kill();
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.await.unwrap();
    }
    let probes = watch.finish().await;
    let mut seen = Seen::default();
    seen.drain(&receiver, Duration::ZERO).await;
    let posts_while_full = seen.posts.len();

    // A restart while the disk is still full may be refused; it must not lose anything.
    let restart_while_full = match blocking(|| daemon.try_start_again()) {
        Ok(()) => {
            tokio::time::sleep(Duration::from_secs(1)).await;
            daemon.kill();
            format!("started ({:?} after 1 s)", daemon.last_exit)
        }
        Err(error) => format!("refused: {error}"),
    };

    // Space freed: everything acknowledged arrives; the PMS's refused bodies are posted again.
    disk.free();
    blocking(|| daemon.start_again());
    load.stop_minting();
    for client in load.spawn_clients(&daemon.ingest_url, 4, Arc::new(AtomicBool::new(false))) {
        client.await.unwrap();
    }
    // The clients are done: the ledger is final.
    let ledger = std::mem::take(&mut *load.ledger.lock().unwrap());
    let all_arrived = seen.collect_until(&receiver, Duration::from_secs(90), |seen| seen.missing(&ledger.acknowledged).is_empty()).await;
    seen.drain(&receiver, Duration::from_millis(500)).await;

    let after_failure: Vec<&Probe> =
        probes.iter().filter(|(sent, _, answer)| failed_at.is_some_and(|failed_at| *sent > failed_at) && answer.is_some()).collect();
    let healthy_after_failure: Vec<String> = after_failure
        .iter()
        .filter(|(_, _, answer)| answer.as_ref().is_some_and(|(status, body)| *status != 503 || !body.is_object()))
        .map(|(_, url, answer)| format!("{url}: {answer:?}"))
        .collect();
    summary(
        TEST,
        &format!(
            "mode={:?} exit={exit:?} restart_while_full={restart_while_full:?} probes_after_failure={} healthy_after_failure={} \
             posts_while_full={posts_while_full} all_arrived={all_arrived}",
            disk.mode,
            after_failure.len(),
            healthy_after_failure.len()
        ),
        &ledger,
        &seen,
    );

    assert!(failed_at.is_some(), "{TEST}: the store never failed; the disk did not fill ({:?})", ledger.answer_counts());
    let without_retry_after = ledger.answers.iter().filter(|answer| answer.status == 503 && !answer.retry_after).count();
    assert_eq!(without_retry_after, 0, "{TEST}: 503 answers without Retry-After");
    // Never 500, never anything but the documented refusal.
    check_answers(TEST, &ledger, &[(503, "storage_unavailable")]);
    assert!(
        healthy_after_failure.is_empty(),
        "{TEST}: health or readiness not 503 while the store was failing: {healthy_after_failure:#?}"
    );
    assert_eq!(exit.and_then(|status| status.code()), Some(EXIT_STORAGE_FAILED), "{TEST}: the daemon did not fail-stop: {exit:?}");
    check_no_tight_loop(TEST, &seen, attempts_of(SCHEDULE) + 3);
    check_nothing_lost(TEST, &ledger, &seen);
    check_ids_stable(TEST, &seen);
}
