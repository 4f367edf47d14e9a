//! The plugins' own native unit tests (mapping logic in plain Rust), run as part of the one test
//! command so nothing in `plugins/` goes untested. They build natively in `target/plugins-native`.

use std::process::Command;

use crate::support::repo_root;

#[test]
fn plugin_workspace_unit_tests_pass() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(repo_root().join("plugins"))
        .args(["test", "--workspace", "--target-dir"])
        .arg(repo_root().join("target").join("plugins-native"));
    for variable in
        ["CARGO_TARGET_DIR", "CARGO_BUILD_TARGET", "RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "RUSTC_WRAPPER", "RUSTC_WORKSPACE_WRAPPER"]
    {
        command.env_remove(variable);
    }
    let output = command.output().expect("run cargo test in plugins/");
    let report = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "plugin unit tests failed:\n{report}");
    assert!(report.contains("test result: ok"), "no plugin tests ran:\n{report}");
}
