//! The shared suite on the NATS backend: this test binary runs again, as a child process, with
//! `STAYHOOK_TEST_STORE=nats`, so that every daemon the shared modules start runs on a NATS
//! server of its own (`support::TestStore::Nats`) instead of its embedded sled store. The tests
//! are the same functions, asserting the same outcomes through the same API: only the store under
//! the daemon changes.
//!
//! Left out, each for a reason that is about sled itself, not about what a user sees:
//! the modules that start no daemon (`cli`, `golden`, `kit`, `contract`, `plugin_crates`) or
//! that are about NATS already, and the tests in [`SLED_ONLY`].

use std::process::Command;
use std::time::Instant;

use crate::support::{TestStore, test_store};

/// The modules whose tests run on both backends.
const SHARED_MODULES: &[&str] = &[
    "admin_api::",
    "admin_lists::",
    "backup::",
    "cloudbeds_hostex::",
    "console::",
    "deliver::",
    "enrich::",
    "faults::",
    "hot_reload::",
    "igms_uplisting::",
    "ingest::",
    "listener_fuzz::",
    "plugins::",
    "pms_replay::",
    "restart::",
    "retention::",
    "retry::",
    "sandbox::",
    "slow_clients::",
    "smily_hostify::",
    "sns::",
    "sync::",
];

/// Tests of the shared modules that are about the embedded store's files, and why.
const SLED_ONLY: &[(&str, &str)] = &[
    (
        "faults::full_disk::a_full_disk_fails_stop_with_503_and_everything_acknowledged_is_delivered_after_space_is_freed",
        "fills the daemon's data dir on a small filesystem; on NATS the store is on the servers' disks",
    ),
    ("restart::a_torn_segment_tail_after_sigkill_is_cut_and_nothing_acknowledged_is_lost", "cuts the embedded store's segment file"),
    ("retention::retention_deletes_whole_segment_files_and_the_store_shrinks", "counts the embedded store's segment files"),
    ("slow_clients::the_data_dir_and_its_files_are_private", "reads the modes of the embedded store's files"),
    (
        "backup::a_daemon_moves_to_a_fresh_data_dir_with_its_history_and_nothing_is_sent_twice",
        "moves a data dir offline (its lock, its digests); on NATS `migrate` moves one into a cluster (scale_out)",
    ),
    (
        "backup::an_import_refuses_a_bad_line_and_existing_ids_and_writes_nothing",
        "imports into fresh data dirs offline; on NATS the import goes into the cluster (scale_out's migrate)",
    ),
];

/// How many tests the child runs at once: one, beside the parent's own test threads.
const CHILD_THREADS: &str = "1";

#[test]
fn the_shared_suite_passes_on_the_nats_backend() {
    if test_store() == TestStore::Nats {
        // This is the child: the run is the parent's.
        return;
    }
    let started = Instant::now();
    let mut command = Command::new(std::env::current_exe().expect("the test binary's path"));
    command.env("STAYHOOK_TEST_STORE", "nats").arg("--test-threads").arg(CHILD_THREADS);
    command.args(SHARED_MODULES);
    for (test, _why) in SLED_ONLY {
        command.arg("--skip").arg(test);
    }
    let output = command.output().expect("running the test binary again");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let summary: Vec<&str> = stdout.lines().filter(|line| line.starts_with("test result:") || line.contains(" ... FAILED")).collect();
    println!("the shared suite on NATS ({:.0?}):\n{}", started.elapsed(), summary.join("\n"));
    if !output.status.success() {
        // The failures' own output (their daemons' logs) comes after the list of results.
        let failures = stdout.find("\nfailures:\n").map_or(&stdout[..], |at| &stdout[at..]);
        const BOUND: usize = 400 * 1024;
        let start = (failures.len().saturating_sub(BOUND)..failures.len()).find(|at| failures.is_char_boundary(*at)).unwrap_or(0);
        let shown = &failures[start..];
        panic!(
            "the shared suite failed on the NATS backend ({}):\n{shown}\n---- stderr ----\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    assert!(
        summary.iter().any(|line| line.starts_with("test result: ok") && !line.contains(" 0 passed")),
        "the child ran no test:\n{stdout}"
    );
}
