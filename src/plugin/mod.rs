//! The plugin host: loads PMS plugins (WebAssembly components) and runs them under limits.
//!
//! It owns the wasmtime engine, the epoch ticker thread, the compiled-component cache on disk and
//! the registry of loaded plugins. It does not decide what to do with a plugin's output (that is
//! `normalize`), and plugin code never touches the network or secrets: the linker grants only the
//! `host` interface of the contract, and every other import (the WASI interfaces the Rust standard
//! library links) is defined as a trap. Invariant: a trap, a timeout, exhausted memory or invalid
//! output fails that one call, reported as a [`CallError`]; the daemon and other plugins go on.
//! Loading is guest code too (start functions, `describe`): it runs under the same limits, so a
//! component that never finishes instantiating or over-allocates is refused ([`PluginError::Load`]).

pub mod bindings;
mod compat;
mod engine;
pub mod kit;
pub mod offline;
mod session;
pub mod watch;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Serialize;
use wasmtime::Engine;
use wasmtime::component::{Component, Linker, types::ComponentItem};

pub use session::{CallError, PluginSession};

use bindings::stayhook::plugin::types as wit;
use engine::ComponentCache;

/// The current contract version: the package version in `wit/v0.2`.
pub const CONTRACT_VERSION: &str = "0.2.0";
/// Every contract version this host loads, oldest first (`wit/v0.1`, `wit/v0.2`).
pub const CONTRACT_VERSIONS: &[&str] = &["0.1.0", "0.2.0"];
const CONTRACT_PACKAGE: &str = "stayhook:plugin/";

/// Plugins compiled from `plugins/` by build.rs and shipped inside the binary.
mod builtin {
    include!(concat!(env!("OUT_DIR"), "/builtin_plugins.rs"));
}

/// Why a plugin could not be loaded or set up.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The bytes are not a component this engine can compile.
    #[error("invalid plugin: {0}")]
    Invalid(String),
    /// The component was built against a contract version this host does not implement.
    #[error("plugin uses contract {found}, this host implements {}", CONTRACT_VERSIONS.join(" and "))]
    UnsupportedContract {
        /// The version the component imports.
        found: String,
    },
    /// `describe` returned something unusable.
    #[error("plugin describe failed: {0}")]
    Describe(String),
    /// Instantiating the component or calling `describe` failed: a trap, the time limit (a start
    /// function or `describe` that never returns) or the memory cap.
    #[error("plugin failed to load: {0}")]
    Load(CallError),
    /// The engine itself failed (configuration, out of resources).
    #[error("plugin engine: {0}")]
    Engine(String),
    /// An upload's bytes declare another name than the one it was uploaded as.
    #[error("the component declares the name {found:?}, not {expected:?}")]
    NameMismatch {
        /// The name in the URL.
        expected: String,
        /// The name `describe` returned.
        found: String,
    },
    /// Reading or writing a plugin file failed.
    #[error("{path}: {message}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// Resource limits of one plugin instance and each of its calls.
#[derive(Debug, Clone, Copy)]
pub struct PluginLimits {
    /// Linear memory a plugin instance may grow to, summed over every memory of every core
    /// instance inside the component.
    pub memory_bytes: usize,
    /// Wall time one call (or one instantiation, whose start functions are guest code too) may
    /// take before it is interrupted.
    pub timeout: Duration,
    /// How often the epoch ticks; a deadline is a whole number of ticks.
    pub epoch_tick: Duration,
}

/// Where a plugin came from.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PluginSource {
    /// Compiled from `plugins/` and shipped inside the binary.
    BuiltIn,
    /// Loaded from a `.wasm` file in the plugin directory.
    File(PathBuf),
}

/// A loaded plugin, ready to be instantiated by any normalizer thread.
pub struct LoadedPlugin {
    /// What the plugin said about itself.
    pub info: wit::PluginInfo,
    /// Where it came from.
    pub source: PluginSource,
    /// Increases every time a plugin is (re)loaded, so sessions notice a replacement.
    pub generation: u64,
    /// SHA-256 of the component's bytes, hex.
    pub sha256: String,
    /// Unix time (ms) it was loaded.
    pub loaded_at_ms: u64,
    code: session::PluginCode,
}

impl LoadedPlugin {
    /// A new session (store and instance) for this plugin, for one thread's use.
    pub fn session(&self) -> Result<PluginSession, CallError> {
        PluginSession::new(self.code.clone(), self.info.name.clone())
    }
}

/// A plugin file that failed to load, kept so the admin API can show it.
#[derive(Debug, Clone, Serialize)]
pub struct LoadFailure {
    /// The file.
    pub path: PathBuf,
    /// Why it failed.
    pub error: String,
    /// Unix time (ms) of the attempt.
    pub at_ms: u64,
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|elapsed| elapsed.as_millis() as u64).unwrap_or(0)
}

/// Every loaded plugin, by name.
pub struct PluginRegistry {
    engine: Arc<Engine>,
    linker: Linker<session::HostState>,
    cache: ComponentCache,
    limits: PluginLimits,
    plugins: RwLock<HashMap<String, Arc<LoadedPlugin>>>,
    failures: RwLock<Vec<LoadFailure>>,
    next_generation: AtomicU64,
}

impl PluginRegistry {
    /// An empty registry with its engine; `cache_dir` holds compiled components.
    pub fn new(limits: PluginLimits, cache_dir: PathBuf) -> Result<Self, PluginError> {
        let engine = engine::new_engine(limits.epoch_tick)?;
        let linker = session::new_linker(&engine)?;
        Ok(Self {
            engine,
            linker,
            cache: ComponentCache::new(cache_dir),
            limits,
            plugins: RwLock::new(HashMap::new()),
            failures: RwLock::new(Vec::new()),
            next_generation: AtomicU64::new(1),
        })
    }

    /// Load the plugins built into the binary, then every `*.wasm` in `plugin_dir` (a file plugin
    /// replaces a built-in one of the same name). A file that fails is recorded, not fatal.
    pub fn load_all(&self, plugin_dir: Option<&Path>) -> Result<(), PluginError> {
        for (file_name, wasm_bytes) in builtin::PLUGINS {
            let plugin = self
                .compile(wasm_bytes, PluginSource::BuiltIn)
                .map_err(|error| PluginError::Invalid(format!("built-in plugin {file_name}: {error}")))?;
            self.insert(plugin);
        }
        let Some(dir) = plugin_dir else { return Ok(()) };
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(error) => {
                return Err(PluginError::Io { path: dir.to_path_buf(), message: error.to_string() });
            }
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .filter(|path| path.extension().is_some_and(|extension| extension == "wasm"))
            .collect();
        paths.sort();
        for path in paths {
            self.reload_file(&path);
        }
        Ok(())
    }

    /// Load one plugin file and register it under the name it declares.
    pub fn load_file(&self, path: &Path) -> Result<String, PluginError> {
        let wasm_bytes = std::fs::read(path).map_err(|error| PluginError::Io { path: path.to_path_buf(), message: error.to_string() })?;
        let plugin = self.compile(&wasm_bytes, PluginSource::File(path.to_path_buf()))?;
        let name = plugin.info.name.clone();
        self.insert(plugin);
        Ok(name)
    }

    /// (Re)load a file of the plugin directory: a plugin that loads replaces the one of its name
    /// (sessions pick it up at their next call) and clears the file's load error; one that fails
    /// is recorded as the file's load error and the running plugin stays. A file whose bytes are
    /// those of the loaded plugin is left alone (an upload's own write, a touched file).
    pub fn reload_file(&self, path: &Path) -> Option<String> {
        let loaded = std::fs::read(path)
            .map_err(|error| PluginError::Io { path: path.to_path_buf(), message: error.to_string() })
            .and_then(|wasm_bytes| {
                let digest = engine::sha256_hex(&wasm_bytes);
                if let Some(current) = self.list().into_iter().find(|plugin| plugin.sha256 == digest) {
                    return Ok(current.info.name.clone());
                }
                let plugin = self.compile(&wasm_bytes, PluginSource::File(path.to_path_buf()))?;
                let name = plugin.info.name.clone();
                self.insert(plugin);
                Ok(name)
            });
        let mut failures = self.failures.write().expect("plugin failure list lock poisoned");
        failures.retain(|failure| failure.path != path);
        match loaded {
            Ok(name) => {
                tracing::info!(plugin = %name, path = %path.display(), "loaded plugin");
                Some(name)
            }
            Err(error) => {
                tracing::error!(path = %path.display(), %error, "plugin failed to load; the running plugin of that name (if any) stays");
                failures.push(LoadFailure { path: path.to_path_buf(), error: error.to_string(), at_ms: unix_ms() });
                None
            }
        }
    }

    /// Install uploaded bytes as the plugin `name`: compile and check them first (a broken upload
    /// is refused and the running plugin stays), then write them atomically to `dir/<name>.wasm`
    /// (so a restart loads them) and swap them in. In-flight calls finish on the old code; every
    /// later call of any worker runs the new one.
    pub fn install(&self, name: &str, wasm_bytes: &[u8], dir: &Path) -> Result<Arc<LoadedPlugin>, PluginError> {
        let path = dir.join(format!("{name}.wasm"));
        let plugin = self.compile(wasm_bytes, PluginSource::File(path.clone()))?;
        if plugin.info.name != name {
            return Err(PluginError::NameMismatch { expected: name.to_string(), found: plugin.info.name.clone() });
        }
        let io_error = |error: std::io::Error| PluginError::Io { path: path.clone(), message: error.to_string() };
        std::fs::create_dir_all(dir).map_err(io_error)?;
        let partial = dir.join(format!(".{name}.wasm.partial"));
        std::fs::write(&partial, wasm_bytes).map_err(io_error)?;
        std::fs::rename(&partial, &path).map_err(io_error)?;
        self.failures.write().expect("plugin failure list lock poisoned").retain(|failure| failure.path != path);
        self.insert(plugin);
        Ok(self.get(name).expect("just inserted"))
    }

    /// The plugin registered under `name`.
    pub fn get(&self, name: &str) -> Option<Arc<LoadedPlugin>> {
        self.plugins.read().expect("plugin registry lock poisoned").get(name).cloned()
    }

    /// Every loaded plugin, sorted by name.
    pub fn list(&self) -> Vec<Arc<LoadedPlugin>> {
        let mut plugins: Vec<_> = self.plugins.read().expect("plugin registry lock poisoned").values().cloned().collect();
        plugins.sort_by(|a, b| a.info.name.cmp(&b.info.name));
        plugins
    }

    /// Plugin files that failed to load.
    pub fn failures(&self) -> Vec<LoadFailure> {
        self.failures.read().expect("plugin failure list lock poisoned").clone()
    }

    fn insert(&self, plugin: LoadedPlugin) {
        let name = plugin.info.name.clone();
        self.plugins.write().expect("plugin registry lock poisoned").insert(name, Arc::new(plugin));
    }

    fn compile(&self, wasm_bytes: &[u8], source: PluginSource) -> Result<LoadedPlugin, PluginError> {
        let component = self.cache.load(&self.engine, wasm_bytes)?;
        let version = check_contract(&self.engine, &component)?;
        // The Rust standard library links a dozen WASI interfaces even when a plugin does no I/O;
        // they become traps, so a plugin that tries to print or read the clock fails its call.
        let mut linker = self.linker.clone();
        linker.define_unknown_imports_as_traps(&component).map_err(|error| PluginError::Invalid(format!("{error:#}")))?;
        let instance_pre = linker.instantiate_pre(&component).map_err(|error| PluginError::Invalid(format!("{error:#}")))?;
        // The version the component imports decides its bindings; one that imports nothing of the
        // contract is tried against the current version, then the older ones.
        let not_a_plugin = |error: wasmtime::Error| PluginError::Invalid(format!("does not implement the plugin world: {error:#}"));
        let pre = match version {
            Some("0.1.0") => session::ContractPre::V0_1(bindings::v0_1::PluginPre::new(instance_pre).map_err(not_a_plugin)?),
            Some(_) => session::ContractPre::V0_2(bindings::PluginPre::new(instance_pre).map_err(not_a_plugin)?),
            None => match bindings::PluginPre::new(instance_pre.clone()) {
                Ok(pre) => session::ContractPre::V0_2(pre),
                Err(error) => match bindings::v0_1::PluginPre::new(instance_pre) {
                    Ok(pre) => session::ContractPre::V0_1(pre),
                    Err(_) => return Err(not_a_plugin(error)),
                },
            },
        };
        let code = session::PluginCode { pre, engine: self.engine.clone(), limits: self.limits };
        // Instantiation and `describe` run guest code: both are under the call's time limit and
        // the instance's memory budget, so a hostile component is refused here, not hung on.
        let info = PluginSession::new(code.clone(), String::from("(loading)"))
            .and_then(|mut session| session.describe())
            .map_err(PluginError::Load)?;
        validate_info(&info)?;
        Ok(LoadedPlugin {
            info,
            source,
            generation: self.next_generation.fetch_add(1, Ordering::Relaxed),
            sha256: engine::sha256_hex(wasm_bytes),
            loaded_at_ms: unix_ms(),
            code,
        })
    }
}

/// The contract version a component was built against (the version of the `stayhook:plugin`
/// interfaces it imports; none when it imports none), refusing before instantiation a version this
/// host does not load or a component that mixes versions.
fn check_contract(engine: &Engine, component: &Component) -> Result<Option<&'static str>, PluginError> {
    let component_type = component.component_type();
    let imports = component_type.imports(engine).map(|(name, item)| (name.to_string(), item));
    let mut found: Option<&'static str> = None;
    for (name, item) in imports {
        if let Some(rest) = name.strip_prefix(CONTRACT_PACKAGE) {
            let version = rest.split_once('@').map(|(_, version)| version).unwrap_or("none");
            let Some(known) = CONTRACT_VERSIONS.iter().copied().find(|known| *known == version) else {
                return Err(PluginError::UnsupportedContract { found: version.to_string() });
            };
            if found.is_some_and(|earlier| earlier != known) {
                return Err(PluginError::Invalid(format!(
                    "imports more than one contract version ({} and {known})",
                    found.unwrap_or_default()
                )));
            }
            found = Some(known);
            if !matches!(item.ty, ComponentItem::ComponentInstance(_)) {
                return Err(PluginError::Invalid(format!("import {name} is not an interface")));
            }
        }
    }
    Ok(found)
}

fn validate_info(info: &wit::PluginInfo) -> Result<(), PluginError> {
    let name_ok = !info.name.is_empty()
        && info.name.len() <= 64
        && info.name.bytes().all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-' || byte == b'_');
    if !name_ok {
        return Err(PluginError::Describe(format!("plugin name {:?} must be 1 to 64 lower-case letters, digits, '-' or '_'", info.name)));
    }
    Ok(())
}
