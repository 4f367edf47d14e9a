//! Hot reload: watch the plugin directory and reload a `.wasm` file when it appears or changes.
//!
//! Events are collected until the directory has been quiet for [`QUIET`], so a file copied in
//! several writes is loaded once, whole. A file that does not load is recorded as a load error
//! (`GET /v1/plugins`) and the running plugin of that name stays. Removing a file changes
//! nothing until the next start. Files starting with `.` are ignored (uploads write
//! `.<name>.wasm.partial` and rename it).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};

use super::PluginRegistry;

/// How long the directory must stay quiet before changed files are loaded.
const QUIET: Duration = Duration::from_millis(300);

/// Keeps the watch alive; dropping it stops watching.
pub struct PluginWatch {
    _watcher: notify::RecommendedWatcher,
}

/// Start watching `dir` (which must exist) and reloading into `registry`.
pub fn watch(registry: Arc<PluginRegistry>, dir: &Path) -> notify::Result<PluginWatch> {
    let (sender, receiver) = mpsc::channel::<notify::Result<notify::Event>>();
    let mut watcher = notify::recommended_watcher(sender)?;
    watcher.watch(dir, RecursiveMode::NonRecursive)?;
    std::thread::Builder::new()
        .name("stayhook-plugin-watch".into())
        .spawn(move || reload_loop(&registry, &receiver))
        .map_err(notify::Error::io)?;
    Ok(PluginWatch { _watcher: watcher })
}

fn reload_loop(registry: &PluginRegistry, receiver: &mpsc::Receiver<notify::Result<notify::Event>>) {
    // Ends when the watcher (the sender) is dropped.
    while let Ok(first) = receiver.recv() {
        let mut changed = BTreeSet::new();
        collect(first, &mut changed);
        loop {
            match receiver.recv_timeout(QUIET) {
                Ok(event) => collect(event, &mut changed),
                Err(mpsc::RecvTimeoutError::Timeout) => break,
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        }
        for path in changed.into_iter().filter(|path| path.is_file()) {
            registry.reload_file(&path);
        }
    }
}

fn collect(event: notify::Result<notify::Event>, changed: &mut BTreeSet<PathBuf>) {
    let event = match event {
        Ok(event) => event,
        Err(error) => {
            tracing::warn!(%error, "watching the plugin directory");
            return;
        }
    };
    if !matches!(event.kind, EventKind::Create(_) | EventKind::Modify(_)) {
        return;
    }
    for path in event.paths {
        let is_plugin = path.extension().is_some_and(|extension| extension == "wasm")
            && path.file_name().is_some_and(|name| !name.to_string_lossy().starts_with('.'));
        if is_plugin {
            changed.insert(path);
        }
    }
}
