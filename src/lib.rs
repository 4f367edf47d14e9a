//! stayhook: receive PMS webhooks, store them durably, normalize them in WebAssembly plugins,
//! keep the latest state per record, and deliver unified, signed events to the operator.
//!
//! Layout, in the order a webhook meets it:
//! - [`ingest`]: the public listener, verification, duplicate suppression, durable append.
//! - [`store`]: four storage interfaces (catalog, inbox, ledger, delivery queue), the sled and
//!   in-memory backends, group commit, the store's fault state.
//! - [`normalize`]: OS threads that run plugins and decide state (created vs updated, no-ops).
//! - [`plugin`]: the wasmtime host, limits, the compiled-component cache, the WIT bindings.
//! - [`model`]: the unified records, validated and rendered as the seed's JSON.
//! - [`deliver`]: the envelope, Standard Webhooks signatures, retries, dead letters.
//! - [`retention`]: the pruner that deletes what retention no longer keeps.
//! - [`sync`]: initial sync and reconciliation, listing the PMS's records through the plugins.
//! - [`api`]: the admin API (and the [`console`] it serves); [`config`]: file and environment;
//!   [`http`]: the shared error shape, the servers, the destination policy of outgoing requests;
//!   [`health`]: `/healthz` and `/readyz`; [`metrics`]; [`signature`]: the HMAC of signatures.
//!
//! Each stage holds a context of its own ([`ingest::IngestContext`], [`normalize::NormalizeContext`],
//! [`deliver::DeliverContext`], [`api::ApiContext`]), built in [`run`]; the stages never import
//! each other's internals (a test below checks which `crate::` paths each module uses).
//!
//! [`run`] takes bound listeners and a shutdown future; `main` binds them (port zero picks a free
//! port, which the tests use) and maps [`StorageFailed`] to exit code 75.

pub mod api;
pub mod backup;
pub mod config;
pub mod console;
pub mod deliver;
pub mod health;
pub mod http;
pub mod ingest;
pub mod metrics;
pub mod model;
pub mod normalize;
pub mod plugin;
pub mod retention;
pub mod signature;
pub mod store;
pub mod sync;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;
use tokio::sync::Notify;

use config::Settings;
use plugin::{PluginLimits, PluginRegistry};
use store::Store;

/// The two sockets a daemon serves.
pub struct Listeners {
    /// Public: PMS webhooks.
    pub ingest: tokio::net::TcpListener,
    /// Admin API.
    pub admin: tokio::net::TcpListener,
}

/// Meta key of the generated admin token.
const ADMIN_TOKEN_KEY: &str = "admin_token";

/// The exit code of a daemon whose store failed (EX_TEMPFAIL): a supervisor should start it again.
pub const EXIT_STORAGE_FAILED: u8 = 75;

/// How long a daemon whose store failed keeps answering 503 (so load balancers and health checks
/// see why) before it exits.
const FAILED_STORE_GRACE: Duration = Duration::from_secs(2);

/// The store met an I/O error (a full or failing disk) and refuses writes until it is opened
/// again: the daemon stopped so that a supervisor restarts it. Nothing acknowledged was lost.
#[derive(Debug, thiserror::Error)]
#[error("the store failed ({0}); stopped so that a supervisor restarts the daemon (exit code 75)")]
pub struct StorageFailed(pub String);

/// Run a daemon until `shutdown` resolves, then stop accepting, let in-flight work finish, and
/// flush the store. Prints `stayhook: webhooks on ...` and `stayhook: admin API on ...` once it
/// serves. Returns [`StorageFailed`] when the store fails: the daemon then answers 503 for a
/// moment, stops, and expects to be restarted.
///
/// This is the one place where the stages are wired: each gets a context of its own
/// ([`ingest::IngestContext`], [`normalize::NormalizeContext`], [`deliver::DeliverContext`],
/// [`api::ApiContext`]) holding the shared pieces it uses (the store handle, the plugin registry,
/// the metrics, its part of the settings) and the handles of the stages it hands work to.
pub async fn run(mut settings: Settings, listeners: Listeners, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    config::os::private_dir(&settings.data_dir).with_context(|| format!("creating {}", settings.data_dir.display()))?;
    // Opening may migrate an older format first (minutes for a large store): off the runtime.
    let (data_dir, cache_bytes, segment_bytes) = (settings.data_dir.clone(), settings.store_cache_bytes, settings.store_segment_bytes);
    let opened = match settings.store {
        config::StoreKind::Nats => store::nats::open(settings.nats.clone()).await,
        config::StoreKind::Sled => tokio::task::spawn_blocking(move || store::open_data_dir(&data_dir, cache_bytes, segment_bytes)).await?,
    };
    let store = match opened {
        Ok(store) => store,
        Err(store::StoreError::Unavailable(reason)) => return Err(StorageFailed(format!("opening the store: {reason}")).into()),
        Err(error) => return Err(anyhow::Error::new(error).context("opening the store")),
    };
    if let Some(largest) = store.largest_body()
        && settings.body_limit_bytes > largest
    {
        tracing::warn!(
            body_limit_bytes = settings.body_limit_bytes,
            largest,
            "the store takes no larger body: the listener's body limit is lowered to it"
        );
        settings.body_limit_bytes = largest;
    }
    let limits =
        PluginLimits { memory_bytes: settings.plugin_memory_bytes, timeout: settings.plugin_timeout, epoch_tick: settings.epoch_tick };
    let cache_dir = settings.plugin_cache_dir.clone();
    let plugin_dir = settings.plugin_dir.clone();
    std::fs::create_dir_all(&plugin_dir).with_context(|| format!("creating {}", plugin_dir.display()))?;
    let plugins = tokio::task::spawn_blocking(move || -> anyhow::Result<PluginRegistry> {
        let registry = PluginRegistry::new(limits, cache_dir)?;
        registry.load_all(Some(&plugin_dir))?;
        Ok(registry)
    })
    .await??;
    let plugins = Arc::new(plugins);
    let _plugin_watch = match plugin::watch::watch(plugins.clone(), &settings.plugin_dir) {
        Ok(watch) => Some(watch),
        Err(error) => {
            tracing::warn!(%error, dir = %settings.plugin_dir.display(), "cannot watch the plugin directory; uploads (PUT /v1/plugins/{{name}}) still work");
            None
        }
    };
    let admin_token = admin_token(&settings, &store).await?;
    let listener_urls = ingest::ListenerUrls::new(settings.public_url.as_deref(), listeners.ingest.local_addr()?);
    let health = Arc::new(health::Health::new(store.fault().clone()));
    let metrics = Arc::new(metrics::Metrics::default());
    let enrich_policy = normalize::enrich::EnrichPolicy {
        retry_schedule: settings.enrichment_retry_schedule.clone(),
        request_timeout: settings.enrichment_timeout,
        rate_per_second: settings.enrichment_rate_per_second,
        allow_private_destinations: settings.allow_private_destinations,
    };
    let enricher = Arc::new(normalize::enrich::Enricher::new(store.clone(), enrich_policy)?);
    let delivery_client = deliver::Client::new(settings.allow_private_destinations, settings.delivery_timeout)?;

    let normalizer = normalize::Normalizer::start(
        Arc::new(normalize::NormalizeContext {
            store: store.clone(),
            plugins: plugins.clone(),
            settings: normalize::NormalizeSettings::from(&settings),
            metrics: metrics.clone(),
            enricher: enricher.clone(),
            runtime: tokio::runtime::Handle::current(),
        }),
        settings.normalizer_threads,
    )?;
    let deliver = Arc::new(deliver::DeliverContext {
        store: store.clone(),
        settings: deliver::DeliverSettings::from(&settings),
        scheduler_wakeup: Notify::new(),
        retry_policy: deliver::RetryPolicy { schedule: settings.retry_schedule.clone(), jitter_percent: settings.retry_jitter_percent },
        http: delivery_client.clone(),
        metrics: metrics.clone(),
    });
    let ingest = Arc::new(ingest::IngestContext {
        store: store.clone(),
        plugins: plugins.clone(),
        settings: ingest::IngestSettings::from(&settings),
        metrics: metrics.clone(),
        listener_limits: ingest::ListenerLimits::new(
            settings.listener_requests_per_second,
            settings.listener_kib_per_second,
            settings.body_limit_bytes,
        ),
        health: health.clone(),
    });
    let pruner = Arc::new(retention::PrunerContext {
        store: store.clone(),
        settings: retention::PrunerSettings { retention: settings.retention.clone() },
        metrics: metrics.clone(),
    });
    let syncer = sync::Syncer::new(sync::SyncContext {
        store: store.clone(),
        plugins: plugins.clone(),
        settings: sync::SyncSettings::from(&settings),
        metrics: metrics.clone(),
        enricher: enricher.clone(),
    });
    let api = Arc::new(api::ApiContext {
        store: store.clone(),
        plugins,
        settings: api::ApiSettings::from(&settings),
        metrics,
        admin_token,
        enricher,
        http: delivery_client,
        listener_urls,
        health: health.clone(),
        syncer: syncer.clone(),
    });
    // From here on the store hands the normalizer what to normalize: what is pending now (after
    // a crash or a stop), then each webhook once it is durable and each requeued one.
    store.feed(Arc::new(normalizer.submit()))?;

    let stop_scheduler = Arc::new(Notify::new());
    let scheduler = tokio::spawn(deliver::run_scheduler(deliver, stop_scheduler.clone()));
    let window_ms = u64::try_from(settings.dedup_window.as_millis()).unwrap_or(u64::MAX);
    let expiry = tokio::spawn(expire_digests(store.clone(), window_ms));
    let pruner = tokio::spawn(retention::run_pruner(pruner));
    let stop_sync = Arc::new(Notify::new());
    let sync_scheduler = tokio::spawn(sync::run_scheduler(syncer, stop_sync.clone()));

    let ingest_server_address = listeners.ingest.local_addr()?;
    let admin_server_address = listeners.admin.local_addr()?;
    let (stop_servers, _) = tokio::sync::broadcast::channel::<()>(1);
    let ingest_server = {
        let mut stopped = stop_servers.subscribe();
        tokio::spawn(http::serve(listeners.ingest, ingest::router(ingest), http::ServeLimits::public(&settings), async move {
            let _ = stopped.recv().await;
        }))
    };
    let admin_server = {
        let mut stopped = stop_servers.subscribe();
        tokio::spawn(http::serve(listeners.admin, api::router(api), http::ServeLimits::admin(&settings), async move {
            let _ = stopped.recv().await;
        }))
    };

    health.set_phase(health::Phase::Ready);
    // Logged before the addresses are printed, so whoever reads them finds the log line written.
    tracing::info!(webhooks = %ingest_server_address, admin = %admin_server_address, data_dir = %settings.data_dir.display(), "serving");
    // The daemon's contract with scripts (and the tests): where it listens, printed once it answers.
    println!("stayhook: webhooks on http://{ingest_server_address}");
    println!("stayhook: admin API on http://{admin_server_address}");
    println!("stayhook: console on http://{admin_server_address}/");

    let fault = store.fault().clone();
    let failed = tokio::select! {
        () = shutdown => None,
        reason = fault.wait() => Some(reason),
    };
    health.set_phase(health::Phase::Stopping);
    if failed.is_some() {
        // Keep answering 503 (listener, health, readiness) for a moment, so whoever watches sees why.
        tokio::time::sleep(FAILED_STORE_GRACE).await;
    }
    tracing::info!("shutting down");
    let _ = stop_servers.send(());
    let _ = ingest_server.await;
    let _ = admin_server.await;
    stop_sync.notify_one();
    let _ = sync_scheduler.await;
    stop_scheduler.notify_one();
    let _ = scheduler.await;
    expiry.abort();
    pruner.abort();
    tokio::task::spawn_blocking(move || normalizer.stop()).await?;
    if let Some(reason) = failed.or_else(|| store.fault().reason()) {
        return Err(StorageFailed(reason).into());
    }
    let leaving = store.clone();
    tokio::task::spawn_blocking(move || leaving.leave_blocking()).await?;
    store.flush_blocking()?;
    Ok(())
}

/// The admin token: from config, or stored, or generated now, stored and printed once.
async fn admin_token(settings: &Settings, store: &Store) -> anyhow::Result<String> {
    if let Some(token) = &settings.admin_token {
        return Ok(token.clone());
    }
    if let Some(token) = store.get_meta(ADMIN_TOKEN_KEY)? {
        return Ok(token);
    }
    let bytes: [u8; 32] = rand::random();
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    store.insert_meta(ADMIN_TOKEN_KEY, &token).await?;
    eprintln!("stayhook: generated the admin API token (shown once; it is stored in the data dir):\n\n    {token}\n");
    Ok(token)
}

/// Every ten minutes, forget the duplicate-suppression digests older than `window_ms`.
async fn expire_digests(store: Store, window_ms: u64) {
    loop {
        tokio::time::sleep(digest_expiry_interval(window_ms)).await;
        let store = store.clone();
        let expired = tokio::task::spawn_blocking(move || store.expire_digests_blocking(model::time::unix_ms(), window_ms)).await;
        match expired {
            Ok(Ok(n_removed)) if n_removed > 0 => tracing::debug!(n_removed, "expired duplicate-suppression digests"),
            Ok(Err(error)) => tracing::warn!(%error, "expiring digests failed"),
            _ => {}
        }
    }
}

/// How often expired digests are deleted: a tenth of the window, so the set holds at most about
/// 1.1 windows of webhooks, between a second and ten minutes (the default 24-hour window expires
/// every ten minutes; a 60-second window every six seconds, where ten minutes would keep eleven
/// windows of digests).
fn digest_expiry_interval(window_ms: u64) -> Duration {
    Duration::from_millis(window_ms / 10).clamp(Duration::from_secs(1), Duration::from_secs(600))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::{Path, PathBuf};

    /// The stages and what each may use of the others (a module, or one item of it). Every other
    /// module under `src/` is shared (store, plugin, model, config, http, metrics, health,
    /// signature, retention) and may use no stage at all; `lib.rs` wires them and is exempt.
    /// ARCHITECTURE.md ("Who holds what") draws the same graph.
    const STAGES: &[(&str, &[&str])] = &[
        ("ingest", &[]),
        ("normalize", &[]),
        ("deliver", &[]),
        ("sync", &["normalize::enrich::Enricher"]),
        ("api", &["ingest", "normalize", "deliver", "console", "sync"]),
        ("console", &[]),
    ];

    /// Uses outside the graph that only test code makes (file under `src/`, path): the store's
    /// model test builds event ids the way the normalizer derives them.
    const TEST_ONLY_USES: &[(&str, &str)] = &[("store/model_test.rs", "normalize::event_id")];

    /// Every `crate::` path in `code` (comments skipped), groups expanded: `use crate::a::{b, c::d}`
    /// gives `a::b` and `a::c::d`.
    fn crate_paths(code: &str) -> Vec<String> {
        let mut paths = Vec::new();
        for line in code.lines() {
            // Code only: a comment's text names paths it does not use.
            let code = line.split(" //").next().unwrap_or_default().trim_start();
            if code.starts_with("//") {
                continue;
            }
            let mut rest = code;
            while let Some(at) = rest.find("crate::") {
                let preceded_by_ident = rest[..at].chars().next_back().is_some_and(|c| c.is_alphanumeric() || c == '_');
                rest = &rest[at + "crate::".len()..];
                if !preceded_by_ident {
                    expand("", rest, &mut paths);
                }
            }
        }
        paths
    }

    /// The paths that start at `text` (after `crate::` or inside a group), each prefixed.
    fn expand(prefix: &str, text: &str, paths: &mut Vec<String>) {
        let end = text.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')).unwrap_or(text.len());
        let path = format!("{prefix}{}", &text[..end]);
        if text[end..].starts_with('{') {
            let mut depth = 0;
            let mut item_start = end + 1;
            for (idx, c) in text.char_indices().skip(end) {
                match c {
                    '{' => depth += 1,
                    '}' | ',' if depth == 1 => {
                        let item = text[item_start..idx].trim();
                        if !item.is_empty() && item != "self" {
                            expand(&path, item, paths);
                        } else if item == "self" {
                            paths.push(path.trim_end_matches("::").to_string());
                        }
                        item_start = idx + 1;
                        if c == '}' {
                            return;
                        }
                    }
                    '}' => depth -= 1,
                    _ => {}
                }
            }
        } else {
            paths.push(path.trim_end_matches("::").to_string());
        }
    }

    fn rust_files(dir: &Path, files: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                // The plugin template is the source of a plugin crate, not of this one.
                if !path.ends_with("plugin/template") {
                    rust_files(&path, files);
                }
            } else if path.extension().is_some_and(|extension| extension == "rs") {
                files.push(path);
            }
        }
    }

    #[test]
    fn digests_expire_at_a_tenth_of_their_window_within_bounds() {
        use std::time::Duration;
        assert_eq!(super::digest_expiry_interval(24 * 3_600_000), Duration::from_secs(600));
        assert_eq!(super::digest_expiry_interval(60_000), Duration::from_secs(6));
        assert_eq!(super::digest_expiry_interval(0), Duration::from_secs(1));
        assert_eq!(super::digest_expiry_interval(u64::MAX), Duration::from_secs(600));
    }

    #[test]
    fn the_stages_use_each_other_only_along_the_allowed_edges() {
        assert_eq!(crate_paths("use crate::a::{b, c::{d, self}};"), ["a::b", "a::c::d", "a::c"]);
        assert_eq!(crate_paths("let x = crate::a::f(); // crate::b"), ["a::f"]);
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        let stage_names: BTreeSet<&str> = STAGES.iter().map(|(name, _)| *name).collect();
        let mut n_checked = 0;
        let mut violations = Vec::new();
        for file in files {
            let relative = file.strip_prefix(&src).unwrap();
            let owner = relative.components().next().unwrap().as_os_str().to_str().unwrap().trim_end_matches(".rs");
            if owner == "lib" || owner == "main" {
                continue;
            }
            let allowed: &[&str] = STAGES.iter().find(|(name, _)| *name == owner).map_or(&[], |(_, allowed)| allowed);
            for path in crate_paths(&std::fs::read_to_string(&file).unwrap()) {
                n_checked += 1;
                let target = path.split("::").next().unwrap_or_default();
                if target == owner || !stage_names.contains(target) {
                    continue;
                }
                let permitted = allowed.iter().any(|edge| path == *edge || path.starts_with(&format!("{edge}::")))
                    || TEST_ONLY_USES.iter().any(|(test_file, test_path)| relative == Path::new(test_file) && path == *test_path);
                if !permitted {
                    violations.push(format!("{}: crate::{path}", relative.display()));
                }
            }
        }
        assert!(n_checked > 100, "found only {n_checked} crate paths under {}", src.display());
        assert!(violations.is_empty(), "uses outside the allowed edges (see STAGES and ARCHITECTURE.md):\n{}", violations.join("\n"));
    }

    #[test]
    fn the_allowed_edges_have_no_cycle() {
        // Depth-first: a stage may not reach itself through the allowed edges.
        fn reaches(from: &str, to: &str, seen: &mut Vec<String>) -> bool {
            let edges = STAGES.iter().find(|(name, _)| *name == from).map_or(&[][..], |(_, edges)| edges);
            edges.iter().map(|edge| edge.split("::").next().unwrap_or_default()).any(|next| {
                if next == to {
                    return true;
                }
                if seen.iter().any(|visited| visited == next) {
                    return false;
                }
                seen.push(next.to_string());
                reaches(next, to, seen)
            })
        }
        for (stage, _) in STAGES {
            assert!(!reaches(stage, stage, &mut Vec::new()), "{stage} reaches itself");
        }
    }
}
