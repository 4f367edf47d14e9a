//! Golden cases: every `plugins/<pms>/tests/cases/<case>/` runs through the real wasm plugin and
//! the host's renderer and must equal its `expected.json`, which a human checked field by field
//! against the source payload named in `case.json`.
//!
//! `STAYHOOK_BLESS=1 cargo test --release --test it golden` rewrites the expected files; check
//! every rewrite against the source before committing it.

use std::path::PathBuf;
use std::time::Duration;

use stayhook::plugin::offline::{self, CaseOutcome, CaseRequest};
use stayhook::plugin::{PluginLimits, PluginRegistry};

use crate::support::repo_root;

fn registry() -> PluginRegistry {
    let limits = PluginLimits { memory_bytes: 64 << 20, timeout: Duration::from_secs(5), epoch_tick: Duration::from_millis(10) };
    let registry = PluginRegistry::new(limits, PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("plugin-cache")).unwrap();
    registry.load_all(None).unwrap();
    registry
}

fn plugin_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(repo_root().join("plugins"))
        .unwrap()
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.join("tests").join("cases").is_dir())
        .collect();
    dirs.sort();
    dirs
}

#[test]
fn every_golden_case_matches() {
    let registry = registry();
    let bless = std::env::var_os("STAYHOOK_BLESS").is_some();
    let mut n_cases = 0;
    let mut failures = Vec::new();
    for plugin_dir in plugin_dirs() {
        let name = plugin_dir.file_name().unwrap().to_string_lossy().to_string();
        let plugin = registry.get(&name).unwrap_or_else(|| panic!("plugins/{name} has golden cases but is not built in"));
        for case_dir in offline::case_dirs(&plugin_dir) {
            n_cases += 1;
            let source = if case_dir.join("sync.json").exists() {
                offline::SyncCase::load(&case_dir).unwrap().source
            } else {
                CaseRequest::load(&case_dir).unwrap().source
            };
            assert!(
                source.as_deref().is_some_and(|source| source.contains("http")),
                "{}: case.json must name its source address",
                case_dir.display()
            );
            match offline::check_case(&plugin, &case_dir, bless) {
                CaseOutcome::Passed | CaseOutcome::Blessed => {}
                CaseOutcome::Differs(lines) => failures.push(format!("{}:\n  {}", case_dir.display(), lines.join("\n  "))),
                CaseOutcome::Failed(error) => failures.push(format!("{}: {error}", case_dir.display())),
            }
        }
    }
    assert!(n_cases >= 5, "expected golden cases, found {n_cases}");
    assert!(failures.is_empty(), "golden mismatches (expected vs actual):\n{}", failures.join("\n"));
}
