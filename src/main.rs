//! The `stayhook` command: parse the CLI, load config, bind, and call the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use stayhook::config::RawConfig;
use stayhook::plugin::kit;
use stayhook::plugin::offline::{self, CaseRequest};
use stayhook::plugin::{PluginLimits, PluginRegistry};

/// jemalloc instead of the system allocator: see BENCHMARKS.md ("What the profile showed", 2d).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Receive PMS webhooks, normalize them in WebAssembly plugins, deliver unified signed events.
#[derive(Parser)]
#[command(name = "stayhook", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (public listener, admin API, normalizers, deliveries).
    Serve {
        /// TOML configuration file (every key is optional; STAYHOOK_* variables override it).
        #[arg(long, env = "STAYHOOK_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Migrate the data dir's store to this release's storage format and exit (`serve` does the
    /// same at start; this does it without starting the daemon). With `--to nats://...`: move a
    /// stopped single node's store (accounts, subscriptions, state, webhooks, events, owed
    /// deliveries and dead letters) into a NATS JetStream cluster (README, "Scale out").
    Migrate {
        /// TOML configuration file (its `data_dir` is migrated; its `[nats]` section gives the
        /// cluster's other settings with `--to`).
        #[arg(long, env = "STAYHOOK_CONFIG")]
        config: Option<PathBuf>,
        /// The store to move: `sled:DIR` (a data dir); default: the configuration's `data_dir`.
        #[arg(long, value_name = "sled:DIR", requires = "to")]
        from: Option<String>,
        /// The cluster to move it into: its client URLs, comma-separated (`nats://host:4222,...`).
        #[arg(long, value_name = "nats://HOST:PORT,...")]
        to: Option<String>,
    },
    /// Export accounts, subscriptions, record state and webhooks (NDJSON, docs/export-format.md)
    /// from the data dir of a stopped daemon (`GET /v1/export` does it on a running one). The
    /// file holds every secret of the accounts and subscriptions: it is written with mode 0600.
    Export {
        /// TOML configuration file (its `data_dir` is exported).
        #[arg(long, env = "STAYHOOK_CONFIG")]
        config: Option<PathBuf>,
        /// The file to write, or `-` for standard output.
        #[arg(long, default_value = "-")]
        out: String,
        /// Only this account (repeatable; every account when absent).
        #[arg(long = "account", value_name = "ID")]
        accounts: Vec<String>,
        /// Accounts, subscriptions and state only: no webhooks, events or digests.
        #[arg(long)]
        no_webhooks: bool,
        /// Only webhooks, events and digests at or after this time (RFC 3339); all state.
        #[arg(long, value_name = "RFC3339")]
        since: Option<String>,
    },
    /// Import an export into the data dir of a stopped daemon. The whole file is checked first and
    /// nothing is written if any line is wrong or an id exists already. Webhooks are history
    /// (stored with their outcome and events, never delivered again) unless --replay.
    Import {
        /// The export to read, or `-` for standard input.
        file: String,
        /// TOML configuration file (its `data_dir` is imported into).
        #[arg(long, env = "STAYHOOK_CONFIG")]
        config: Option<PathBuf>,
        /// Store the webhooks pending, without the file's state and events: the next `serve`
        /// normalizes them in their original order and delivers their events.
        #[arg(long)]
        replay: bool,
        /// Skip accounts and subscriptions the store holds already (with every line of a skipped
        /// account) instead of refusing the file.
        #[arg(long)]
        skip_existing: bool,
    },
    /// Tools for plugin authors.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Normalize one payload offline and print the unified events as JSON.
    Run {
        /// A plugin name (built in, or in --plugin-dir) or the path of a .wasm component.
        plugin: String,
        /// The webhook body as the PMS sends it.
        payload: PathBuf,
        /// Content-Type of the payload.
        #[arg(long, default_value = "application/json")]
        content_type: String,
        /// Folder of extra plugins.
        #[arg(long, env = "STAYHOOK_PLUGIN_DIR")]
        plugin_dir: Option<PathBuf>,
        /// Account setting handed to the plugin, as name=value (repeatable).
        #[arg(long = "setting", value_parser = parse_pair)]
        settings: Vec<(String, String)>,
        /// Folder of recorded API responses (`<request-id>.json`, see docs/enrichment.md).
        #[arg(long)]
        responses: Option<PathBuf>,
    },
    /// Write a new plugin from the template: it builds, and its sample case passes.
    New {
        /// The plugin's name (lower case; accounts use it as their `pms`).
        name: String,
        /// Folder to create it in (inside stayhook's `plugins/` workspace it becomes a member).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// The PMS's display name (default: the name, capitalised).
        #[arg(long)]
        pms: Option<String>,
        /// Use this SDK folder instead of vendoring the SDK into the plugin.
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// Build a plugin folder and run its golden cases (tests/cases/*), with a diff on failure.
    Test {
        /// The plugin's folder (with Cargo.toml and tests/cases/).
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Rewrite each case's expected.json from the output (then check every field by hand).
        #[arg(long)]
        bless: bool,
        /// Test this component instead of building the folder.
        #[arg(long)]
        wasm: Option<PathBuf>,
        /// Cargo target dir for the build.
        #[arg(long)]
        target_dir: Option<PathBuf>,
        /// Only the cases whose folder name contains this.
        #[arg(long)]
        case: Option<String>,
    },
}

fn parse_pair(text: &str) -> Result<(String, String), String> {
    text.split_once('=').map(|(name, value)| (name.to_string(), value.to_string())).ok_or_else(|| format!("{text:?} is not name=value"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let outcome = match cli.command {
        Command::Serve { config } => serve(config),
        Command::Migrate { config, from, to: None } => match from {
            Some(_) => Err(anyhow::anyhow!("--from needs --to")),
            None => migrate(config),
        },
        Command::Migrate { config, from, to: Some(to) } => migrate_to_nats(config, from.as_deref(), &to),
        Command::Export { config, out, accounts, no_webhooks, since } => settings(config)
            .and_then(|settings| stayhook::backup::offline::export(&settings, &out, accounts, !no_webhooks, since.as_deref())),
        Command::Import { file, config, replay, skip_existing } => settings(config).and_then(|settings| {
            stayhook::backup::offline::import(&settings, &file, stayhook::backup::import::ImportOptions { replay, skip_existing })
        }),
        Command::Plugin { command: PluginCommand::Run { plugin, payload, content_type, plugin_dir, settings, responses } } => {
            let mut request = CaseRequest::post(Vec::new(), Some(content_type));
            request.settings = settings.into_iter().collect();
            request.responses_dir = responses;
            plugin_run(&plugin, &payload, request, plugin_dir)
        }
        Command::Plugin { command: PluginCommand::New { name, dir, pms, sdk } } => plugin_new(&dir, &name, pms.as_deref(), sdk.as_deref()),
        Command::Plugin { command: PluginCommand::Test { dir, bless, wasm, target_dir, case } } => {
            let options = kit::TestOptions { bless, wasm, target_dir, filter: case };
            match kit::test_plugin(&dir, &options, &mut std::io::stdout()) {
                Ok(0) => Ok(()),
                Ok(n_failed) => Err(anyhow::anyhow!("{n_failed} golden case(s) failed")),
                Err(error) => Err(error),
            }
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("stayhook: {error:#}");
            if error.downcast_ref::<stayhook::StorageFailed>().is_some() {
                return ExitCode::from(stayhook::EXIT_STORAGE_FAILED);
            }
            ExitCode::FAILURE
        }
    }
}

/// Logs go to standard error: coloured text on a terminal, plain text otherwise (a file, a pipe,
/// journald), and one JSON object per line with `STAYHOOK_LOG_FORMAT=json`.
fn init_logging() {
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_from_env("STAYHOOK_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match std::env::var("STAYHOOK_LOG_FORMAT").as_deref() {
        Ok("json") => builder.json().with_current_span(false).init(),
        Ok("text") | Err(_) => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        Ok(other) => {
            builder.with_ansi(false).init();
            tracing::warn!(format = other, "unknown STAYHOOK_LOG_FORMAT (text or json); logging text");
        }
    }
}

/// The settings of an offline command (export, import): the config file and environment, and a
/// private umask for whatever it writes.
fn settings(config: Option<PathBuf>) -> anyhow::Result<stayhook::config::Settings> {
    let settings = RawConfig::load(config.as_deref(), std::env::vars())?.resolve()?;
    stayhook::config::os::private_umask();
    Ok(settings)
}

fn migrate(config: Option<PathBuf>) -> anyhow::Result<()> {
    let settings = RawConfig::load(config.as_deref(), std::env::vars())?.resolve()?;
    stayhook::config::os::private_umask();
    let data_dir = &settings.data_dir;
    if data_dir.join("store").exists() {
        println!("{} already holds a store of format 2 or later; nothing to migrate", data_dir.display());
        return Ok(());
    }
    if stayhook::store::sled_backend::migrate::format1_dir(data_dir).is_none() {
        anyhow::bail!("{} holds no store to migrate (expected {})", data_dir.display(), data_dir.join("db").display());
    }
    let migrated = stayhook::store::sled_backend::migrate::migrate_data_dir(data_dir, settings.store_cache_bytes)?;
    println!(
        "migrated {} inbox entries, {} events, {} deliveries to storage format 3 in {}; the old database is kept in {} (delete it once satisfied)",
        migrated.inbox,
        migrated.events,
        migrated.deliveries,
        data_dir.join("store").display(),
        migrated.backup.display()
    );
    Ok(())
}

fn migrate_to_nats(config: Option<PathBuf>, from: Option<&str>, to: &str) -> anyhow::Result<()> {
    let mut raw = RawConfig::load(config.as_deref(), std::env::vars())?;
    raw.nats.urls = to.split(',').map(str::trim).filter(|url| !url.is_empty()).map(String::from).collect();
    let settings = raw.resolve()?;
    stayhook::config::os::private_umask();
    let from = match from {
        None => settings.data_dir.clone(),
        Some(from) => match from.strip_prefix("sled:") {
            Some(dir) if !dir.is_empty() => PathBuf::from(dir),
            _ => anyhow::bail!("--from {from:?}: give the store to move as sled:DIR"),
        },
    };
    stayhook::backup::offline::migrate_to_nats(&settings, &from, settings.nats.clone())
}

fn serve(config: Option<PathBuf>) -> anyhow::Result<()> {
    let mut settings = RawConfig::load(config.as_deref(), std::env::vars())?.resolve()?;
    // Everything the daemon writes (store, uploads, plugin cache) is its user's alone.
    stayhook::config::os::private_umask();
    match stayhook::config::os::raise_open_files_limit() {
        Ok(open_files) => {
            if let Some(configured) = settings.fit_open_files(open_files) {
                tracing::warn!(
                    configured,
                    max_connections = settings.max_connections,
                    open_files,
                    "max_connections lowered to fit the open-file limit (raise the hard limit: ulimit -Hn, LimitNOFILE=)"
                );
            }
        }
        Err(error) => tracing::warn!(%error, "cannot read the open-file limit; connection caps are as configured"),
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("stayhook-io").build()?;
    runtime.block_on(async move {
        let ingest = tokio::net::TcpListener::bind(&settings.listen).await.with_context(|| format!("binding {}", settings.listen))?;
        let admin =
            tokio::net::TcpListener::bind(&settings.admin_listen).await.with_context(|| format!("binding {}", settings.admin_listen))?;
        stayhook::run(settings, stayhook::Listeners { ingest, admin }, shutdown_signal()).await
    })
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {}
        _ = terminate => {}
    }
}

fn plugin_run(plugin: &str, payload: &PathBuf, mut request: CaseRequest, plugin_dir: Option<PathBuf>) -> anyhow::Result<()> {
    let defaults = RawConfig::default().resolve()?;
    let limits =
        PluginLimits { memory_bytes: defaults.plugin_memory_bytes, timeout: defaults.plugin_timeout, epoch_tick: defaults.epoch_tick };
    let cache_dir = std::env::temp_dir().join("stayhook-plugin-cache");
    let registry = PluginRegistry::new(limits, cache_dir)?;
    registry.load_all(plugin_dir.as_deref())?;
    let name = if plugin.ends_with(".wasm") { registry.load_file(plugin.as_ref())? } else { plugin.to_string() };
    let loaded = registry.get(&name).with_context(|| {
        let known: Vec<String> = registry.list().iter().map(|plugin| plugin.info.name.clone()).collect();
        format!("no plugin named {name:?}; known: {}", known.join(", "))
    })?;
    request.body = std::fs::read(payload).with_context(|| format!("reading {}", payload.display()))?;
    let events = offline::run(&loaded, &request)?;
    println!("{}", serde_json::to_string_pretty(&events)?);
    Ok(())
}

fn plugin_new(dir: &std::path::Path, name: &str, pms: Option<&str>, sdk: Option<&std::path::Path>) -> anyhow::Result<()> {
    let created = kit::new_plugin(dir, name, pms, sdk)?;
    let shown = created.dir.display();
    if created.workspace_member {
        println!("wrote {shown} (a member of the plugin workspace)");
    } else {
        println!("wrote {shown} (its own workspace, SDK in {shown}/sdk unless --sdk was given)");
    }
    println!("next: stayhook plugin test {shown}   (builds it, runs tests/cases; replace the placeholder sample with a documented one)");
    Ok(())
}
