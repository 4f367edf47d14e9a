//! The plugin contract's versions: a component built against the frozen `wit/v0.1` still loads and
//! normalizes its golden cases through the host's conversion layer, and `sync` (new in v0.2) runs
//! offline page after page from recorded list answers.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use stayhook::plugin::offline::{self, CaseOutcome, SyncCase};
use stayhook::plugin::{PluginLimits, PluginRegistry};

use crate::support::repo_root;

fn registry() -> PluginRegistry {
    let limits = PluginLimits { memory_bytes: 64 << 20, timeout: Duration::from_secs(5), epoch_tick: Duration::from_millis(10) };
    PluginRegistry::new(limits, PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("plugin-cache-contract")).unwrap()
}

#[test]
fn a_v0_1_component_loads_and_normalizes_its_golden_cases() {
    let fixture = repo_root().join("tests/fixtures/contract-v0.1");
    let registry = registry();
    let name = registry.load_file(&fixture.join("smoobu.wasm")).expect("a v0.1 component loads");
    assert_eq!(name, "smoobu");
    let plugin = registry.get(&name).unwrap();
    assert!(plugin.info.sync_modes.is_empty(), "v0.1 has no sync, so none is declared");

    let mut dirs: Vec<PathBuf> =
        std::fs::read_dir(fixture.join("smoobu-cases")).unwrap().map(|entry| entry.unwrap().path()).filter(|path| path.is_dir()).collect();
    dirs.sort();
    assert!(dirs.len() >= 5, "the fixture's golden cases");
    for case_dir in &dirs {
        match offline::check_case(&plugin, case_dir, false) {
            CaseOutcome::Passed => {}
            other => panic!("{}: {other:?}", case_dir.display()),
        }
    }

    // Its sync is refused without entering guest code.
    let case = SyncCase { mode: "modified-since".into(), ..SyncCase::default() };
    let error = offline::run_sync(&plugin, &case).unwrap_err().to_string();
    assert!(error.contains("does not declare the sync mode"), "{error}");
}

#[test]
fn a_v0_2_sync_pass_runs_offline_page_after_page() {
    let registry = registry();
    registry.load_file(&PathBuf::from(env!("PLUGIN_ARTIFACTS_DIR")).join("stayhook_plugin_chaos.wasm")).unwrap();
    let plugin = registry.get("chaos").unwrap();
    let case = SyncCase::load(&repo_root().join("tests/fixtures/sync-chaos")).unwrap();
    let result = offline::run_sync(&plugin, &case).unwrap();
    let pages = result["pages"].as_array().unwrap();
    assert_eq!(pages.len(), 2);
    assert_eq!(pages[0]["more"], Value::Bool(true));
    assert_eq!(pages[0]["nextCursor"], "2");
    assert_eq!(pages[1]["more"], Value::Bool(false));
    let ids: Vec<&str> =
        pages.iter().flat_map(|page| page["events"].as_array().unwrap()).map(|event| event["record"]["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["r-1", "r-2", "r-3"]);
    assert_eq!(pages[1]["events"][0]["record"]["arrivalDate"], "2024-10-10T00:00:00.000Z");

    // A page whose recorded answer is missing names the page and the request.
    let mut short = case.clone();
    short.dir = repo_root().join("tests/fixtures/contract-v0.1");
    let error = offline::run_sync(&plugin, &short).unwrap_err().to_string();
    assert!(error.contains("on page 1"), "{error}");
}
