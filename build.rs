//! Compiles the plugins in `plugins/` to WebAssembly components and embeds the official ones.
//!
//! The plugin workspace builds for `wasm32-wasip2` with its own target dir (`target/plugins`), so
//! this nested cargo never waits on the lock of the host's target dir. The target is installed with
//! rustup when missing, so a fresh machine with only the Rust toolchain builds everything.
//! Outputs: `$OUT_DIR/builtin_plugins.rs` (the official plugins as byte arrays) and the env var
//! `PLUGIN_ARTIFACTS_DIR`, the folder of every built `.wasm` (tests load the test-only plugins
//! from there).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Plugins shipped inside the binary (crate `stayhook-plugin-<name>`, artifact `stayhook_plugin_<name>.wasm`).
const OFFICIAL: &[&str] = &[
    "hostaway",
    "guesty",
    "hostfully",
    "lodgify",
    "smoobu",
    "hospitable",
    "ownerrez",
    "beds24",
    "cloudbeds",
    "hostex",
    "igms",
    "uplisting",
    "smily",
    "hostify",
];
/// Plugins built for the tests only.
const TEST_ONLY: &[&str] = &["chaos", "sns-probe"];
const WASM_TARGET: &str = "wasm32-wasip2";

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let plugins_dir = manifest_dir.join("plugins");
    println!("cargo:rerun-if-changed=plugins");
    println!("cargo:rerun-if-changed=wit");
    println!("cargo:rerun-if-env-changed=STAYHOOK_SKIP_PLUGIN_BUILD");

    let target_dir = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| manifest_dir.join("target")).join("plugins");
    ensure_wasm_target();
    build_plugins(&plugins_dir, &target_dir);

    let artifacts = target_dir.join(WASM_TARGET).join("release");
    let mut generated = String::from("pub(super) const PLUGINS: &[(&str, &[u8])] = &[\n");
    for name in OFFICIAL {
        let file = artifacts.join(format!("stayhook_plugin_{name}.wasm"));
        assert!(file.exists(), "plugin artifact {} is missing after the build", file.display());
        generated.push_str(&format!("    ({name:?}, include_bytes!({:?})),\n", file.display().to_string()));
    }
    generated.push_str("];\n");
    std::fs::write(out_dir.join("builtin_plugins.rs"), generated).expect("write builtin_plugins.rs");
    println!("cargo:rustc-env=PLUGIN_ARTIFACTS_DIR={}", artifacts.display());
}

fn ensure_wasm_target() {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).lines().any(|line| line.trim() == WASM_TARGET))
        .unwrap_or(false);
    if installed {
        return;
    }
    println!("cargo:warning=installing the {WASM_TARGET} target with rustup (needed to build the plugins)");
    let status = Command::new("rustup").args(["target", "add", WASM_TARGET]).status();
    if !matches!(status, Ok(status) if status.success()) {
        panic!("`rustup target add {WASM_TARGET}` failed; install the target and build again");
    }
}

fn build_plugins(plugins_dir: &Path, target_dir: &Path) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command.current_dir(plugins_dir).args(["build", "--release", "--target", WASM_TARGET, "--target-dir"]).arg(target_dir);
    // Only the plugins the daemon ships or tests: a plugin being written in the workspace does not
    // break the daemon's build.
    for name in OFFICIAL.iter().chain(TEST_ONLY) {
        command.arg("-p").arg(format!("stayhook-plugin-{name}"));
    }
    // The outer build's settings are not the plugins': clear what would leak into the nested cargo.
    for variable in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
        "MFLAGS",
    ] {
        command.env_remove(variable);
    }
    for (key, _) in std::env::vars() {
        if key.starts_with("CARGO_PROFILE_") || key.starts_with("CARGO_CFG_") || key.starts_with("CARGO_FEATURE_") {
            command.env_remove(key);
        }
    }
    let status = command.status().expect("run cargo for the plugins");
    assert!(status.success(), "building the plugins in {} failed", plugins_dir.display());
}
