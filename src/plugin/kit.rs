//! The plugin authors' kit behind `stayhook plugin new` and `stayhook plugin test`.
//!
//! `new` writes a plugin crate from the template in `src/plugin/template/`: inside the stayhook
//! plugin workspace it becomes a member using the workspace's SDK; anywhere else it is its own
//! workspace with the SDK (and the contract) vendored beside it, so it builds with nothing but the
//! Rust toolchain and the wasm32-wasip2 target. `test` builds a plugin folder to a component with
//! cargo and runs its golden cases through the same runner the daemon's suite uses.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

use super::offline::{self, CaseOutcome};
use super::{PluginLimits, PluginRegistry};

/// The SDK's sources, vendored into standalone plugins (a test keeps this list complete).
const SDK_FILES: &[(&str, &str)] = &[
    ("src/lib.rs", include_str!("../../plugins/sdk/src/lib.rs")),
    ("src/api.rs", include_str!("../../plugins/sdk/src/api.rs")),
    ("src/contact.rs", include_str!("../../plugins/sdk/src/contact.rs")),
    ("src/json.rs", include_str!("../../plugins/sdk/src/json.rs")),
    ("src/language.rs", include_str!("../../plugins/sdk/src/language.rs")),
    ("src/money.rs", include_str!("../../plugins/sdk/src/money.rs")),
    ("src/status.rs", include_str!("../../plugins/sdk/src/status.rs")),
    ("src/testing.rs", include_str!("../../plugins/sdk/src/testing.rs")),
    ("src/time.rs", include_str!("../../plugins/sdk/src/time.rs")),
    ("wit/stayhook.wit", include_str!("../../wit/v0.2/stayhook.wit")),
];
const SDK_MANIFEST: &str = include_str!("template/sdk.Cargo.toml");
/// The wit-bindgen version the SDK is generated with (a test keeps it equal to the workspace's).
const WIT_BINDGEN_VERSION: &str = "0.61.1";

const TEMPLATE_FILES: &[(&str, &str)] = &[
    ("src/lib.rs", include_str!("template/lib.rs")),
    ("src/mapping.rs", include_str!("template/mapping.rs")),
    ("README.md", include_str!("template/README.md")),
    ("tests/cases/sample/body.json", include_str!("template/sample/body.json")),
    ("tests/cases/sample/case.json", include_str!("template/sample/case.json")),
    ("tests/cases/sample/expected.json", include_str!("template/sample/expected.json")),
    (".gitignore", "/target\n"),
];

/// What `plugin new` wrote.
#[derive(Debug)]
pub struct NewPlugin {
    /// The plugin's folder.
    pub dir: PathBuf,
    /// Whether it joined an existing plugin workspace (else it is standalone with a vendored SDK).
    pub workspace_member: bool,
}

/// Write a new plugin named `name` (for the PMS shown as `pms`) into `parent/name`.
///
/// `sdk` points a standalone plugin at an SDK folder instead of vendoring one.
pub fn new_plugin(parent: &Path, name: &str, pms: Option<&str>, sdk: Option<&Path>) -> anyhow::Result<NewPlugin> {
    let name_ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-' || byte == b'_')
        && name.as_bytes()[0].is_ascii_lowercase();
    if !name_ok {
        bail!("plugin name {name:?} must start with a lower-case letter and hold only lower-case letters, digits, '-' or '_' (at most 64)");
    }
    // From the root of a stayhook checkout the plugin goes into its `plugins/` workspace, as
    // docs/writing-a-plugin.md shows (`stayhook plugin new smoobu` in a clone).
    let checkout_plugins = parent.join("plugins");
    let parent = if sdk.is_none() && is_plugin_workspace(&checkout_plugins) { checkout_plugins.as_path() } else { parent };
    let dir = parent.join(name);
    if dir.exists() {
        bail!("{} already exists", dir.display());
    }
    let pms = pms.map(str::to_string).unwrap_or_else(|| title_case(name));
    let workspace_manifest = parent.join("Cargo.toml");
    let workspace_member = sdk.is_none() && is_plugin_workspace(parent);
    let sdk_path = match sdk {
        Some(path) => std::path::absolute(path)?.display().to_string(),
        None => "sdk".to_string(),
    };
    let fill = |text: &str| {
        text.replace("stayhook_plugin_{{name}}", &format!("stayhook_plugin_{}", name.replace('-', "_")))
            .replace("{{name}}", name)
            .replace("{{Pms}}", &pms)
            .replace("{{sdk}}", &sdk_path)
            .replace("{{wit_bindgen}}", WIT_BINDGEN_VERSION)
    };
    let manifest =
        if workspace_member { include_str!("template/Cargo.member.toml") } else { include_str!("template/Cargo.standalone.toml") };
    write(&dir.join("Cargo.toml"), &fill(manifest))?;
    for (path, text) in TEMPLATE_FILES {
        write(&dir.join(path), &fill(text))?;
    }
    if !workspace_member && sdk.is_none() {
        write(&dir.join("sdk").join("Cargo.toml"), &fill(SDK_MANIFEST))?;
        for (path, text) in SDK_FILES {
            write(&dir.join("sdk").join(path), text)?;
        }
    }
    if workspace_member {
        add_member(&workspace_manifest, name)?;
    }
    Ok(NewPlugin { dir, workspace_member })
}

/// Whether `dir` is a plugin workspace: an `sdk/` crate and a `[workspace]` manifest.
fn is_plugin_workspace(dir: &Path) -> bool {
    dir.join("sdk").join("Cargo.toml").exists()
        && std::fs::read_to_string(dir.join("Cargo.toml")).is_ok_and(|text| text.contains("[workspace]"))
}

fn title_case(name: &str) -> String {
    name.split(['-', '_'])
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map(|first| first.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Add `name` to the `members = [...]` list of a workspace manifest.
fn add_member(manifest: &Path, name: &str) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(manifest).with_context(|| format!("reading {}", manifest.display()))?;
    let start = text.find("members = [").with_context(|| format!("{} has no `members = [` list", manifest.display()))?;
    let end = start + text[start..].find(']').with_context(|| format!("{}: unterminated members list", manifest.display()))?;
    let list = &text[start..end];
    if list.contains(&format!("\"{name}\"")) {
        return Ok(());
    }
    let separator = if list.trim_end().ends_with('[') || list.trim_end().ends_with(',') { "" } else { ", " };
    let updated = format!("{}{separator}\"{name}\"{}", &text[..end], &text[end..]);
    std::fs::write(manifest, updated).with_context(|| format!("writing {}", manifest.display()))
}

/// Options of `plugin test`.
#[derive(Debug, Default)]
pub struct TestOptions {
    /// Rewrite every case's expected.json from the output.
    pub bless: bool,
    /// Use this component instead of building the folder.
    pub wasm: Option<PathBuf>,
    /// Cargo target dir for the build.
    pub target_dir: Option<PathBuf>,
    /// Only cases whose folder name contains this.
    pub filter: Option<String>,
}

/// Build the plugin in `dir` (unless a component is given) and run its golden cases, printing a
/// line per case and the differences. Returns the number of cases that failed.
pub fn test_plugin(dir: &Path, options: &TestOptions, out: &mut dyn std::io::Write) -> anyhow::Result<usize> {
    let wasm = match &options.wasm {
        Some(path) => path.clone(),
        None => build_component(dir, options.target_dir.as_deref())?,
    };
    let limits = PluginLimits {
        memory_bytes: 64 << 20,
        timeout: std::time::Duration::from_secs(5),
        epoch_tick: std::time::Duration::from_millis(10),
    };
    let registry = PluginRegistry::new(limits, std::env::temp_dir().join("stayhook-plugin-cache"))?;
    let name = registry.load_file(&wasm).with_context(|| format!("loading {}", wasm.display()))?;
    let plugin = registry.get(&name).context("the plugin vanished from the registry")?;
    writeln!(out, "plugin {name} {} ({})", plugin.info.version, wasm.display())?;
    let cases: Vec<PathBuf> = offline::case_dirs(dir)
        .into_iter()
        .filter(|case| {
            options.filter.as_deref().is_none_or(|filter| case.file_name().is_some_and(|n| n.to_string_lossy().contains(filter)))
        })
        .collect();
    if cases.is_empty() {
        bail!("no golden cases in {} (tests/cases/<case>/ with body.json and case.json)", dir.join("tests").join("cases").display());
    }
    let mut n_failed = 0;
    for case in &cases {
        let case_name = case.file_name().map(|name| name.to_string_lossy().to_string()).unwrap_or_default();
        match offline::check_case(&plugin, case, options.bless) {
            CaseOutcome::Passed => writeln!(out, "ok      {case_name}")?,
            CaseOutcome::Blessed => writeln!(out, "blessed {case_name} (check expected.json by hand against the source)")?,
            CaseOutcome::Differs(lines) => {
                n_failed += 1;
                writeln!(out, "FAIL    {case_name}: output differs from expected.json")?;
                for line in lines {
                    writeln!(out, "          {line}")?;
                }
            }
            CaseOutcome::Failed(error) => {
                n_failed += 1;
                writeln!(out, "FAIL    {case_name}: {error}")?;
            }
        }
    }
    writeln!(out, "{} passed, {n_failed} failed", cases.len() - n_failed)?;
    Ok(n_failed)
}

/// `cargo build --release --target wasm32-wasip2` in `dir`; the path of the component it made.
pub fn build_component(dir: &Path, target_dir: Option<&Path>) -> anyhow::Result<PathBuf> {
    let manifest = std::path::absolute(dir.join("Cargo.toml"))?;
    if !manifest.exists() {
        bail!("{} is not a plugin folder (no Cargo.toml)", dir.display());
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(dir)
        .args(["build", "--release", "--target", "wasm32-wasip2", "--message-format=json-render-diagnostics", "--manifest-path"])
        .arg(&manifest);
    if let Some(target_dir) = target_dir {
        command.arg("--target-dir").arg(target_dir);
    }
    // A parent cargo's settings (when run from `cargo test`) are not the plugin's.
    for variable in ["CARGO_TARGET_DIR", "CARGO_BUILD_TARGET", "RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "RUSTC_WRAPPER"] {
        command.env_remove(variable);
    }
    command.stderr(std::process::Stdio::inherit());
    let output = command.output().context("running cargo (is the Rust toolchain installed?)")?;
    if !output.status.success() {
        bail!("building {} failed (see the compiler's messages above; the target needs `rustup target add wasm32-wasip2`)", dir.display());
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let component = stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|message| message["reason"] == "compiler-artifact")
        .filter(|message| message["manifest_path"].as_str().is_some_and(|path| Path::new(path) == manifest))
        .flat_map(|message| message["filenames"].as_array().cloned().unwrap_or_default())
        .filter_map(|file| file.as_str().map(PathBuf::from))
        .find(|file| file.extension().is_some_and(|extension| extension == "wasm"));
    component.with_context(|| format!("cargo built {} but made no .wasm (is crate-type cdylib?)", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vendored_sdk_lists_every_sdk_file() {
        let sdk_src = Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins/sdk/src");
        let mut on_disk: Vec<String> =
            std::fs::read_dir(sdk_src).unwrap().map(|entry| format!("src/{}", entry.unwrap().file_name().to_string_lossy())).collect();
        on_disk.sort();
        let mut embedded: Vec<String> =
            SDK_FILES.iter().map(|(path, _)| path.to_string()).filter(|path| path.starts_with("src/")).collect();
        embedded.sort();
        assert_eq!(embedded, on_disk, "SDK_FILES in src/plugin/kit.rs must list every file of plugins/sdk/src");
    }

    #[test]
    fn the_vendored_sdk_uses_the_workspace_wit_bindgen() {
        let workspace = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins/Cargo.toml")).unwrap();
        assert!(workspace.contains(&format!("wit-bindgen = {{ version = \"{WIT_BINDGEN_VERSION}\"")), "update WIT_BINDGEN_VERSION");
        // The allocator the SDK installs inside wasm: the vendored manifest must bring it too.
        let sdk = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins/sdk/Cargo.toml")).unwrap();
        let wasm_section = |manifest: &str| {
            manifest.split("[target.'cfg(target_family = \"wasm\")'.dependencies]").nth(1).map(str::trim).map(String::from)
        };
        assert_eq!(
            wasm_section(SDK_MANIFEST),
            wasm_section(&sdk),
            "template/sdk.Cargo.toml must carry plugins/sdk's wasm-only dependencies"
        );
    }

    #[test]
    fn members_are_added_once() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = dir.path().join("Cargo.toml");
        std::fs::write(&manifest, "[workspace]\nmembers = [\"sdk\", \"a\"]\n").unwrap();
        add_member(&manifest, "b").unwrap();
        add_member(&manifest, "b").unwrap();
        assert_eq!(std::fs::read_to_string(&manifest).unwrap(), "[workspace]\nmembers = [\"sdk\", \"a\", \"b\"]\n");
    }

    #[test]
    fn names_are_checked_and_titled() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["", "Acme", "1acme", "ac me", "acme/x"] {
            assert!(new_plugin(dir.path(), bad, None, None).is_err(), "{bad:?}");
        }
        assert_eq!(title_case("acme-stays"), "Acme Stays");
    }
}
