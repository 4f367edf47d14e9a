//! `stayhook export` and `stayhook import`: the data dir of a stopped daemon, opened directly.

use std::fs::File;
use std::io::{BufReader, BufWriter, IsTerminal as _, Seek as _, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::export::{ExportOptions, export_blocking};
use super::import::{ImportOptions, import_blocking, plan, validate};
use crate::config::{Settings, StoreKind};
use crate::store::nats::{NatsConfig, NatsStore};
use crate::store::{self, Store, StoreError};
use std::sync::Arc;

/// How often a long export or import says how far it is (on standard error).
const PROGRESS_EVERY: Duration = Duration::from_secs(3);

/// The configured store, with the runtime the NATS backend runs on (dropped after the store).
pub struct Opened {
    /// The store.
    pub store: Store,
    _runtime: Option<tokio::runtime::Runtime>,
}

/// Open the configured store: the data dir's sled store (saying clearly when a running daemon
/// holds it), or the NATS cluster (which running daemons share).
fn open(settings: &Settings) -> anyhow::Result<Opened> {
    match settings.store {
        StoreKind::Sled => Ok(Opened { store: open_sled(&settings.data_dir, settings)?, _runtime: None }),
        StoreKind::Nats => {
            let (store, runtime) = open_nats(settings.nats.clone())?;
            Ok(Opened { store, _runtime: Some(runtime) })
        }
    }
}

/// The NATS backend on a runtime of its own (the offline commands have none).
fn open_nats(config: NatsConfig) -> anyhow::Result<(Arc<NatsStore>, tokio::runtime::Runtime)> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().context("starting a runtime")?;
    let urls = config.urls.join(",");
    let store = runtime.block_on(NatsStore::open(config)).with_context(|| format!("opening the NATS store at {urls}"))?;
    Ok((Arc::new(store), runtime))
}

fn open_sled(data_dir: &Path, settings: &Settings) -> anyhow::Result<Store> {
    match store::open_data_dir(data_dir, settings.store_cache_bytes, settings.store_segment_bytes) {
        Ok(store) => Ok(store),
        Err(error) if is_locked(&error) => anyhow::bail!(
            "{} is in use: a running daemon holds its store (sled's lock); stop the daemon first, or export from it with GET /v1/export",
            data_dir.display()
        ),
        Err(error) => Err(anyhow::Error::new(error).context(format!("opening the store in {}", data_dir.display()))),
    }
}

/// sled reports a store another process holds as an I/O error about its lock file.
fn is_locked(error: &StoreError) -> bool {
    let text = error.to_string().to_ascii_lowercase();
    text.contains("lock") || text.contains("resource temporarily unavailable") || text.contains("wouldblock")
}

/// `stayhook export`.
pub fn export(settings: &Settings, out: &str, accounts: Vec<String>, webhooks: bool, since: Option<&str>) -> anyhow::Result<()> {
    let since_ms = since.map(parse_since).transpose()?;
    let data_dir = &settings.data_dir;
    if settings.store == StoreKind::Sled
        && !data_dir.join("store").exists()
        && store::sled_backend::migrate::format1_dir(data_dir).is_none()
    {
        anyhow::bail!("{} holds no store to export", data_dir.display());
    }
    let opened = open(settings)?;
    let store = &opened.store;
    let options = ExportOptions { accounts, webhooks, since_ms };
    let started = Instant::now();
    let mut last = Instant::now();
    let mut progress = |counts: &super::Counts| {
        if last.elapsed() >= PROGRESS_EVERY {
            last = Instant::now();
            eprintln!("exporting: {counts} so far ({:.0?})", started.elapsed());
        }
    };
    let counts = if out == "-" {
        if std::io::stdout().is_terminal() {
            anyhow::bail!("refusing to write the export (it holds secrets) to a terminal: give --out FILE or redirect standard output");
        }
        let mut stdout = BufWriter::new(std::io::stdout().lock());
        let counts = export_blocking(store.as_ref(), &options, &mut stdout, &mut progress)?;
        stdout.flush()?;
        counts
    } else {
        let path = PathBuf::from(out);
        let file = private_file(&path)?;
        let mut writer = BufWriter::new(file);
        let written =
            export_blocking(store.as_ref(), &options, &mut writer, &mut progress).map_err(anyhow::Error::from).and_then(|counts| {
                writer
                    .into_inner()
                    .map_err(|error| error.into_error())?
                    .sync_all()
                    .with_context(|| format!("writing {}", path.display()))?;
                Ok(counts)
            });
        match written {
            Ok(counts) => counts,
            Err(error) => {
                // A partial export would be refused by an import anyway (no `end` line): leave none.
                let _ = std::fs::remove_file(&path);
                return Err(error);
            }
        }
    };
    store.flush_blocking()?;
    let summary = format!("exported {counts} in {:.1?}", started.elapsed());
    // With the export on standard output, the summary goes to standard error.
    if out == "-" {
        eprintln!("{summary}");
    } else {
        println!("{summary} to {out} (mode 0600: it holds secrets)");
    }
    Ok(())
}

/// `stayhook import`.
pub fn import(settings: &Settings, file: &str, options: ImportOptions) -> anyhow::Result<()> {
    let started = Instant::now();
    crate::config::os::private_dir(&settings.data_dir).with_context(|| format!("creating {}", settings.data_dir.display()))?;
    // Standard input is read twice (checked, then written): it is kept in a private file first.
    let (mut input, spooled) = if file == "-" {
        let path = settings.data_dir.join(format!("import-{}.ndjson", std::process::id()));
        let mut spool = private_file(&path)?;
        std::io::copy(&mut std::io::stdin().lock(), &mut spool).context("reading standard input")?;
        spool.rewind()?;
        (spool, Some(path))
    } else {
        (File::open(file).with_context(|| format!("opening {file}"))?, None)
    };
    let outcome = import_file(settings, &mut input, file, options, started);
    if let Some(path) = spooled {
        let _ = std::fs::remove_file(path);
    }
    outcome
}

fn import_file(settings: &Settings, input: &mut File, name: &str, options: ImportOptions, started: Instant) -> anyhow::Result<()> {
    let mut last = Instant::now();
    let mut say = |stage: &str, lines: u64| {
        if last.elapsed() >= PROGRESS_EVERY {
            last = Instant::now();
            eprintln!("{stage}: line {lines} ({:.0?})", started.elapsed());
        }
    };
    let checked = validate(&mut BufReader::new(&mut *input), &mut |lines| say("checking", lines))
        .with_context(|| format!("{name} is refused; nothing was imported"))?;
    let opened = open(settings)?;
    let store = &opened.store;
    let plan = plan(store.as_ref(), &checked, &options)?;
    input.rewind()?;
    let report =
        import_blocking(store.as_ref(), &mut BufReader::new(&mut *input), &plan, &options, &mut |lines| say("importing", lines))
            .context("the import stopped; what was written so far stays (import into a fresh data dir, and delete it to start over)")?;
    let skipped = &report.skipped;
    println!("imported {} in {:.1?} into {}", report.imported, started.elapsed(), describe(settings));
    if *skipped != super::Counts::default() {
        println!("skipped {skipped}");
    }
    if report.pending > 0 {
        println!("{} webhooks are pending: the next `stayhook serve` normalizes them (and delivers their events)", report.pending);
    }
    Ok(())
}

/// Where the configured store is, for people.
fn describe(settings: &Settings) -> String {
    match settings.store {
        StoreKind::Sled => settings.data_dir.display().to_string(),
        StoreKind::Nats => format!("the NATS store at {}", settings.nats.urls.join(",")),
    }
}

/// `stayhook migrate --from sled:DIR --to nats://...`: everything of a single node's stopped
/// store into a NATS cluster: an export of it (accounts, subscriptions, state, webhooks with their
/// outcomes and events, pending webhooks) imported into the cluster, then the deliveries it still
/// owes and its dead letters ([`NatsStore::adopt_deliveries_blocking`]). The export goes through a
/// private file in `from`, removed at the end whether the move worked or not (it holds secrets).
pub fn migrate_to_nats(settings: &Settings, from: &Path, nats: NatsConfig) -> anyhow::Result<()> {
    let spool = from.join(format!("migrate-{}.ndjson", std::process::id()));
    let moved = move_to_nats(settings, from, nats, &spool);
    let _ = std::fs::remove_file(&spool);
    moved
}

fn move_to_nats(settings: &Settings, from: &Path, nats: NatsConfig, spool: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    if !from.join("store").exists() {
        anyhow::bail!("{} holds no store to migrate (run `stayhook migrate` on it first if it is of an older format)", from.display());
    }
    let source = open_sled(from, settings)?;
    let urls = nats.urls.join(",");
    let (target, _runtime) = open_nats(nats)?;
    let mut file = private_file(spool)?;
    let options = ExportOptions { accounts: Vec::new(), webhooks: true, since_ms: None };
    let exported = {
        let mut writer = std::io::BufWriter::new(&mut file);
        let counts = export_blocking(source.as_ref(), &options, &mut writer, &mut |_| {})?;
        writer.flush()?;
        counts
    };
    file.sync_all().with_context(|| format!("writing {}", spool.display()))?;
    println!("exported {exported} from {}", from.display());
    file.rewind()?;
    let checked = validate(&mut BufReader::new(&mut file), &mut |_| {}).context("the export does not read back")?;
    let target_store: Store = target.clone();
    let import = ImportOptions::default();
    let plan = plan(target_store.as_ref(), &checked, &import).context("the cluster refuses the import; nothing was written")?;
    file.rewind()?;
    let report = import_blocking(target_store.as_ref(), &mut BufReader::new(&mut file), &plan, &import, &mut |_| {})
        .context("the import into the cluster stopped; what was written so far stays")?;
    println!("imported {} into the NATS store at {urls}", report.imported);
    let adopted = target.adopt_deliveries_blocking(source.as_ref()).context("moving the owed deliveries")?;
    println!(
        "moved {} owed deliveries (attempted by the cluster) and {} dead letters in {:.1?}; {} pending webhooks are normalized by the first node that serves",
        adopted.pending,
        adopted.dead,
        started.elapsed(),
        report.pending
    );
    Ok(())
}

/// A new file only this user can read (it holds secrets), replacing one of that name.
fn private_file(path: &Path) -> anyhow::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        options.mode(0o600);
        let file = options.open(path).with_context(|| format!("creating {}", path.display()))?;
        // An existing file keeps its mode on open: narrow it.
        file.set_permissions(std::fs::Permissions::from_mode(0o600)).with_context(|| format!("restricting {}", path.display()))?;
        Ok(file)
    }
    #[cfg(not(unix))]
    options.open(path).with_context(|| format!("creating {}", path.display()))
}

/// `--since`: an RFC 3339 instant, as Unix ms.
pub fn parse_since(text: &str) -> anyhow::Result<u64> {
    let instant = chrono::DateTime::parse_from_rfc3339(text)
        .with_context(|| format!("--since {text:?} is not an RFC 3339 time (2026-12-01T00:00:00Z)"))?;
    u64::try_from(instant.timestamp_millis()).map_err(|_| anyhow::anyhow!("--since {text:?} is before 1970"))
}
