//! The wasmtime engine, its epoch ticker and the on-disk cache of compiled components.
//!
//! One engine serves every plugin and every normalizer thread. Time limits use epoch interruption
//! rather than fuel: measured on this machine, fuel costs more per call (see BENCHMARKS.md), and
//! a deadline counted in ticks is what an operator means by "at most N milliseconds". The ticker is
//! one thread that bumps the engine's epoch every `epoch_tick_ms`; a call's deadline is therefore
//! precise to one tick, not to the millisecond. The thread holds only a weak reference, so it ends
//! once the engine is dropped.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Config, Engine};

use super::PluginError;

/// Build the engine every plugin runs in.
pub(crate) fn new_engine(epoch_tick: Duration) -> Result<Arc<Engine>, PluginError> {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    let engine = Engine::new(&config).map_err(|error| PluginError::Engine(format!("{error:#}")))?;
    let engine = Arc::new(engine);
    start_epoch_ticker(Arc::downgrade(&engine), epoch_tick);
    Ok(engine)
}

fn start_epoch_ticker(engine: Weak<Engine>, epoch_tick: Duration) {
    let spawned = std::thread::Builder::new().name("stayhook-epoch".into()).spawn(move || {
        loop {
            std::thread::sleep(epoch_tick);
            match engine.upgrade() {
                Some(engine) => engine.increment_epoch(),
                None => return,
            }
        }
    });
    if let Err(error) = spawned {
        tracing::error!(%error, "could not start the epoch ticker; plugin time limits will not fire");
    }
}

/// Compiled components on disk, keyed by the component's bytes and the engine's configuration, so a
/// restart maps the artifact instead of compiling again (about 300 ms per plugin otherwise).
pub(crate) struct ComponentCache {
    dir: PathBuf,
}

impl ComponentCache {
    pub(crate) fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// The compiled component for `wasm_bytes`, from the cache or compiled now and cached.
    pub(crate) fn load(&self, engine: &Engine, wasm_bytes: &[u8]) -> Result<Component, PluginError> {
        let path = self.artifact_path(engine, wasm_bytes);
        if path.exists() {
            // Safety: the artifact at this path was written by `precompile_component` of an engine
            // with the same compatibility hash (it is part of the file name), in a directory only
            // the daemon writes. A file that fails to load is recompiled below.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(component) => return Ok(component),
                Err(error) => tracing::warn!(path = %path.display(), %error, "cached component unusable; recompiling"),
            }
        }
        let artifact =
            engine.precompile_component(wasm_bytes).map_err(|error| PluginError::Invalid(format!("not a valid component: {error:#}")))?;
        if let Err(error) = write_atomically(&path, &artifact) {
            tracing::warn!(path = %path.display(), %error, "could not cache the compiled component");
        }
        // Safety: `artifact` was produced just now by this engine.
        unsafe { Component::deserialize(engine, &artifact) }.map_err(|error| PluginError::Engine(format!("{error:#}")))
    }

    fn artifact_path(&self, engine: &Engine, wasm_bytes: &[u8]) -> PathBuf {
        let mut engine_hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut engine_hasher);
        let digest = Sha256::digest(wasm_bytes);
        self.dir.join(format!("{}-{:016x}.cwasm", hex::encode(&digest[..16]), engine_hasher.finish()))
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let temporary = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&temporary, bytes)?;
    std::fs::rename(&temporary, path)
}

/// SHA-256 of `bytes`, lower-case hex.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}
