//! The commands.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result, anyhow, bail};
use serde_json::json;
use triad_agent::catalog::{Catalog, SnapshotInfo};
use triad_agent::config::{FolderConfig, StoreConfig};
use triad_agent::control::{Client, ClientError, Line, Request as ControlRequest, answer};
use triad_agent::home::{Home, NewDevice};
use triad_agent::{Config, backup, restore, verify};
use triad_core::keys::Phrase;
use triad_core::snapshot::{FileEntry, NodeKind, Tree};
use triad_core::{BlobId, FolderId, StoreId};
use triad_store::{Access, OpenError, Store};

use crate::cli::{
    Args, BackupArgs, Command, ConfigCommand, FolderCommand, InitArgs, LsArgs, RecoverArgs,
    RestoreArgs, SnapshotsArgs, StoreCommand, VerifyArgs,
};
use crate::{EXIT_DAMAGE, EXIT_OK, EXIT_PARTIAL, demo, health, network, output, phrase, settings};

/// Runs one command; returns the exit code.
pub(crate) fn run(args: Args) -> Result<u8> {
    let home_path = settings::home_dir(args.home.as_deref())?;
    match args.command {
        Command::Init(a) => init(&home_path, a),
        Command::Store(c) => store(&home_path, c),
        Command::Folder(c) => folder(&home_path, c),
        Command::Backup(a) => backup(&home_path, a),
        Command::Snapshots(a) => snapshots(&home_path, a),
        Command::Ls(a) => ls(&home_path, a),
        Command::Restore(a) => restore(&home_path, a),
        Command::Verify(a) => verify(&home_path, a),
        Command::Recover(a) => recover(&home_path, a),
        Command::Config(ConfigCommand::Show) => {
            let config = settings::load(&home_path)?;
            print!("{}", settings::to_toml(&config)?);
            Ok(EXIT_OK)
        }
        Command::Agent(a) => network::agent(&home_path, a),
        Command::Pair(a) => network::pair(&home_path, a),
        Command::Join(a) => network::join(&home_path, a),
        Command::Devices(a) => network::devices(&home_path, a),
        Command::Sync(a) => network::sync(&home_path, a),
        Command::Status(a) => health::status(&home_path, a),
        Command::Check(a) => health::check(&home_path, a),
        Command::Audit(a) => health::audit(&home_path, a),
        Command::Policy(c) => health::policy(&home_path, c),
        Command::Demo(a) => demo::run(a),
    }
}

/// Fills `buf` from the operating system's random source.
pub(crate) fn random(buf: &mut [u8]) -> Result<()> {
    getrandom::fill(buf).map_err(|e| anyhow!("cannot get random bytes from the system: {e}"))
}

pub(crate) fn random_array<const N: usize>() -> Result<[u8; N]> {
    let mut out = [0u8; N];
    random(&mut out)?;
    Ok(out)
}

/// A device's context: its home, settings and roster.
pub(crate) struct Device {
    pub(crate) home: Home,
    pub(crate) config: Config,
    /// While the agent runs, the lease on its stores this command holds (until it exits).
    lease: std::cell::OnceCell<Option<Client>>,
}

impl Device {
    pub(crate) fn open(home_path: &Path) -> Result<Device> {
        let home = Home::open(home_path)?;
        let config = settings::load(home_path)?;
        Ok(Device { home, config, lease: std::cell::OnceCell::new() })
    }

    /// While the agent runs, asks it for the stores: it finishes a transfer in progress and
    /// keeps off them until this command exits. Without an agent there is nothing to ask.
    fn lease_stores(&self) -> Result<()> {
        if self.lease.get().is_some() {
            return Ok(());
        }
        let lease = match Client::connect(self.home.path()) {
            Ok(mut client) => {
                client.send(&ControlRequest::Lease)?;
                match client.answer::<answer::Leased>()? {
                    Ok(answer::Leased { leased: true }) => {}
                    Ok(answer::Leased { leased: false }) => {
                        bail!("the agent did not lend its stores: no reason given")
                    }
                    Err(failure) => {
                        bail!("the agent did not lend its stores: {}", failure.error)
                    }
                }
                Some(client)
            }
            Err(ClientError::NotRunning { .. }) => None,
            Err(e) => return Err(e.into()),
        };
        let _ = self.lease.set(lease);
        Ok(())
    }

    /// Gives a device with no store its catalog in the home (see `triad_agent::storeless`);
    /// returns whether one was made.
    pub(crate) fn ensure_catalog(&mut self) -> Result<bool> {
        let made =
            triad_agent::storeless::ensure_catalog(&self.home, &mut self.config, output::now())
                .map_err(|e| anyhow!(e))?;
        if made {
            settings::save(self.home.path(), &self.config)?;
        }
        Ok(made)
    }

    /// Opens every store. Writers need `Access::ReadWrite`; readers fall back to a read-only
    /// open when the store's file system is read-only.
    pub(crate) fn stores(&self, access: Access) -> Result<Vec<Store>> {
        if self.config.stores.is_empty() {
            bail!(
                "this device has no store yet: add one with `triad store add PATH --media MEDIA`"
            );
        }
        self.config.stores.iter().map(|s| self.open_store(s, access)).collect()
    }

    fn open_store(&self, s: &StoreConfig, access: Access) -> Result<Store> {
        self.lease_stores()?;
        let vault = self.home.vault();
        let cfg = &self.config.store;
        match (Store::open(&s.path, Some(s.id), vault, Access::ReadWrite, cfg), access) {
            (Ok(store), _) => Ok(store),
            (Err(OpenError::ReadOnly { .. }), Access::ReadOnly) => {
                tracing::info!(store = %s.path.display(), "store is read-only; reading it without its index");
                Store::open(&s.path, Some(s.id), vault, Access::ReadOnly, cfg)
                    .with_context(|| format!("while opening store {}", s.path.display()))
            }
            (Err(e), _) => {
                Err(e).with_context(|| format!("while opening store {}", s.path.display()))
            }
        }
    }
}

fn init(home_path: &Path, a: InitArgs) -> Result<u8> {
    if Home::exists(home_path) {
        let existing = Home::open(home_path).map(|h| h.identity().name.clone()).unwrap_or_default();
        bail!(
            "{} already holds a vault (device {existing:?}); use another --home / TRIAD_HOME for another device",
            home_path.display()
        );
    }
    let phrase = Phrase::from_entropy(random_array()?);
    let device = NewDevice { name: &a.name, site: &a.site, device_seed: random_array()? };
    let (home, _roster) = Home::init(home_path, &phrase, device)?;
    settings::save(home_path, &Config::default())?;
    if a.json {
        output::json_line(&json!({
            "vault": home.vault().to_hex(),
            "device": home.device_id().to_hex(),
            "name": a.name,
            "site": a.site,
            "home": home_path.to_string_lossy(),
            "phrase": phrase.words().join(" "),
        }))?;
        return Ok(EXIT_OK);
    }
    println!(
        "Created vault {} with device {:?} at site {:?}.",
        home.vault().short(),
        a.name,
        a.site
    );
    phrase::show(&phrase)?;
    if std::io::stdin().is_terminal() && std::io::stdout().is_terminal() {
        let r: [u8; 2] = random_array()?;
        let first = usize::from(r[0]) % 24;
        let second = (first + 1 + usize::from(r[1]) % 23) % 24;
        phrase::confirm(&phrase, [first, second])?;
    }
    println!(
        "\nNext: `triad folder add PATH`, then `triad backup`; `triad store add PATH --media MEDIA` keeps a copy of the data on this device too."
    );
    Ok(EXIT_OK)
}

fn store(home_path: &Path, c: StoreCommand) -> Result<u8> {
    let mut dev = Device::open(home_path)?;
    match c {
        StoreCommand::Add { path, media, quota } => {
            let path = settings::absolute(&path);
            if dev.config.stores.iter().any(|s| s.path == path) {
                bail!("{} is already a store of this device", path.display());
            }
            dev.config.check_store_place(&path)?;
            let id = StoreId::from_bytes(random_array()?);
            let store =
                Store::create(&path, dev.home.vault(), media, id, output::now(), &dev.config.store)
                    .with_context(|| format!("while creating a store at {}", path.display()))?;
            store
                .write_roster(&dev.home.roster()?)
                .with_context(|| format!("while writing the roster to {}", path.display()))?;
            dev.config.stores.push(StoreConfig {
                id,
                path: path.clone(),
                media,
                quota,
                catalog: false,
            });
            settings::save(home_path, &dev.config)?;
            let agent = settings::tell_agent(home_path)?;
            println!("Added store {} ({media}) at {}.", id.short(), path.display());
            if agent.is_some() {
                println!("The running agent keeps copies in it from now on.");
            }
        }
        StoreCommand::List { json } => {
            let mut rows = Vec::new();
            for s in &dev.config.stores {
                let state = match dev.open_store(s, Access::ReadOnly).and_then(|st| Ok(st.stats()?))
                {
                    Ok(stats) => {
                        json!({"state": "ok", "blobs": stats.blobs, "bytes": stats.bytes, "packs": stats.packs})
                    }
                    Err(e) => json!({"state": "unavailable", "error": format!("{e:#}")}),
                };
                rows.push(json!({"id": s.id.to_hex(), "path": s.path.to_string_lossy(), "media": s.media.as_str(), "catalog": s.catalog, "status": state}));
            }
            if json {
                output::json_line(&json!({ "stores": rows }))?;
            } else if rows.is_empty() {
                println!("No stores yet: add one with `triad store add PATH --media MEDIA`.");
            } else {
                for (s, row) in dev.config.stores.iter().zip(&rows) {
                    let status = &row["status"];
                    let detail = if status["state"] == "ok" {
                        format!(
                            "{} blobs, {}",
                            status["blobs"],
                            output::size(status["bytes"].as_u64().unwrap_or(0))
                        )
                    } else {
                        format!("UNAVAILABLE: {}", status["error"].as_str().unwrap_or(""))
                    };
                    let what = if s.catalog { "catalog" } else { s.media.as_str() };
                    let note =
                        if s.catalog { " (metadata only: the catalog in the home)" } else { "" };
                    println!("{}  {what:<8} {}  {detail}{note}", s.id.short(), s.path.display());
                }
            }
        }
        StoreCommand::Remove { store } => {
            let before = dev.config.stores.len();
            dev.config.stores.retain(|s| {
                s.id.to_hex() != store
                    && s.id.short() != store
                    && s.path != settings::absolute(Path::new(&store))
            });
            if dev.config.stores.len() == before {
                bail!("no store {store:?} on this device (see `triad store list`)");
            }
            settings::save(home_path, &dev.config)?;
            let agent = settings::tell_agent(home_path)?;
            println!("Removed store {store} from this device; its files are left in place.");
            if agent.is_some() {
                println!("The running agent no longer uses it.");
            }
        }
        StoreCommand::Scrub { json } => return scrub(&dev, json),
        StoreCommand::RebuildIndex { path } => {
            let paths: Vec<PathBuf> = match path {
                Some(p) => vec![settings::absolute(&p)],
                None => dev.config.stores.iter().map(|s| s.path.clone()).collect(),
            };
            if paths.is_empty() {
                bail!("this device has no store");
            }
            let mut code = EXIT_OK;
            dev.lease_stores()?;
            for p in paths {
                let report = Store::rebuild_index(&p, dev.home.vault(), &dev.config.store)
                    .with_context(|| format!("while rebuilding the index of {}", p.display()))?;
                println!(
                    "Rebuilt the index of {} from {} packs: {} blobs ({}), {} removed blobs honoured, {} heads.",
                    p.display(),
                    report.packs,
                    report.blobs,
                    output::size(report.bytes),
                    report.tombstones,
                    report.heads
                );
                for d in &report.damaged {
                    let blob =
                        d.blob.map_or_else(|| "an entry".to_owned(), |b| format!("blob {b}"));
                    println!(
                        "  DAMAGED, not indexed: {blob} in {} at offset {}: {}",
                        d.pack.display(),
                        d.offset,
                        d.problem
                    );
                }
                if !report.damaged.is_empty() {
                    code = EXIT_DAMAGE;
                }
            }
            return Ok(code);
        }
    }
    Ok(EXIT_OK)
}

fn folder(home_path: &Path, c: FolderCommand) -> Result<u8> {
    let mut dev = Device::open(home_path)?;
    match c {
        FolderCommand::Add { path, media, exclude } => {
            if dev.home.keys().is_err() {
                bail!(
                    "this device is storage-only: it keeps your other devices' copies without \
                     being able to read them, so it cannot protect a folder of its own; add the \
                     folder on a trusted device, or pair this one again as trusted"
                );
            }
            let path = std::fs::canonicalize(&path).with_context(|| {
                format!("cannot add folder {}: it does not exist", path.display())
            })?;
            if !path.is_dir() {
                bail!("{} is not a directory", path.display());
            }
            dev.config.check_folder_place(&path, home_path, None)?;
            triad_agent::scan::Excludes::new(exclude.iter().map(String::as_str))?;
            let id = FolderId::from_bytes(random_array()?);
            dev.config.folders.push(FolderConfig {
                id,
                path: path.clone(),
                media,
                exclude,
                policy: None,
            });
            settings::save(home_path, &dev.config)?;
            let catalog_made = dev.ensure_catalog()?;
            let agent = settings::tell_agent(home_path)?;
            println!("Protecting {} ({media}).", path.display());
            match agent {
                Some(answer) if answer.backs_up => println!(
                    "The agent backs it up now and watches it from now on; `triad status` shows \
                     how far it is."
                ),
                Some(_) => println!(
                    "The agent's own backups are off ([protect] auto = false): run `triad backup` \
                     to take its first snapshot."
                ),
                None => println!(
                    "Run `triad backup` to take its first snapshot, or start `triad agent` to \
                     protect it from now on."
                ),
            }
            if catalog_made {
                println!(
                    "This device has no store: it keeps the catalog of its snapshots in {} and reads \
                     the files again when it sends them to your other devices. Add a store \
                     (`triad store add PATH --media MEDIA`) to keep a copy here as well.",
                    home_path.join(triad_agent::config::CATALOG_DIR).display()
                );
            }
        }
        FolderCommand::List { json } => {
            if json {
                let rows: Vec<_> = dev.config.folders.iter().map(|f| json!({"id": f.id.to_hex(), "path": f.path.to_string_lossy(), "media": f.media.as_str(), "exclude": f.exclude})).collect();
                output::json_line(&json!({ "folders": rows }))?;
            } else {
                for f in &dev.config.folders {
                    println!("{}  {:<8} {}", f.id.short(), f.media.as_str(), f.path.display());
                }
            }
        }
        FolderCommand::Remove { folder } => {
            let id = dev
                .config
                .folder(&folder)
                .map(|f| f.id)
                .ok_or_else(|| anyhow!("no folder {folder:?} (see `triad folder list`)"))?;
            dev.config.folders.retain(|f| f.id != id);
            settings::save(home_path, &dev.config)?;
            let agent = settings::tell_agent(home_path)?;
            println!("No longer protecting {folder}; its snapshots stay in the stores.");
            if agent.is_some() {
                println!("The running agent no longer watches it.");
            }
        }
    }
    Ok(EXIT_OK)
}

fn backup(home_path: &Path, a: BackupArgs) -> Result<u8> {
    let mut dev = Device::open(home_path)?;
    dev.ensure_catalog()?;
    let folders: Vec<&FolderConfig> = match &a.folder {
        Some(name) => vec![
            dev.config
                .folder(name)
                .ok_or_else(|| anyhow!("no folder {name:?} (see `triad folder list`)"))?,
        ],
        None => dev.config.folders.iter().collect(),
    };
    if folders.is_empty() {
        bail!("no folder to back up: add one with `triad folder add PATH`");
    }
    let stores = std::sync::RwLock::new(dev.stores(Access::ReadWrite)?);
    print_repairs(&stores.read().expect("not poisoned"), a.json)?;
    let roster = dev.home.roster()?;
    let mut code = EXIT_OK;
    for folder in folders {
        let bar = output::bar(
            0,
            &folder.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        );
        let json = a.json;
        let bar_ref = &bar;
        let progress = move |event: &backup::Event| {
            if json {
                let _ = output::json_line(&backup_event_json(event));
                return;
            }
            match event {
                backup::Event::Scanned { bytes_to_read, .. } => bar_ref.set_length(*bytes_to_read),
                backup::Event::FileStored { bytes, .. } => bar_ref.inc(*bytes),
                backup::Event::Skipped { path, reason } => {
                    bar_ref.suspend(|| eprintln!("skipped {}: {reason}", path.display()))
                }
                backup::Event::HistoryLost { lost, from } => {
                    bar_ref.suspend(|| eprintln!("warning: {}", history_lost_text(lost, *from)))
                }
                _ => {}
            }
        };
        let request = backup::Request {
            folder,
            now: output::now(),
            options: backup::Options { allow_empty: a.allow_empty },
        };
        let report = backup::run(&dev.home, &dev.config, &roster, &stores, request, &progress)
            .with_context(|| format!("while backing up {}", folder.path.display()))?;
        bar.finish_and_clear();
        if !report.skipped.is_empty() {
            code = EXIT_PARTIAL;
        }
        if a.json {
            output::json_line(&json!({
                "event": "summary",
                "folder": report.folder,
                "snapshot": report.snapshot.to_hex(),
                "sequence": report.sequence,
                "unchanged": report.unchanged,
                "files": report.stats.files,
                "bytes": report.stats.bytes,
                "files_read": report.files_read,
                "bytes_read": report.bytes_read,
                "new_blobs": report.new_blobs,
                "new_data_blobs": report.new_data_blobs,
                "new_bytes": report.new_bytes,
                "skipped": report.skipped.iter().map(|s| json!({"path": s.rel.to_string_lossy(), "reason": s.reason})).collect::<Vec<_>>(),
            }))?;
        } else if report.unchanged {
            println!(
                "{}: nothing changed since snapshot {} (#{}); {}, {}.",
                report.folder,
                report.snapshot.short(),
                report.sequence,
                output::count(report.stats.files, "file"),
                output::size(report.stats.bytes)
            );
        } else {
            println!(
                "{}: snapshot {} (#{}) committed: {}, {}; read {} changed ({}), stored {} new blobs ({}).",
                report.folder,
                report.snapshot.short(),
                report.sequence,
                output::count(report.stats.files, "file"),
                output::size(report.stats.bytes),
                output::count(report.files_read, "file"),
                output::size(report.bytes_read),
                report.new_blobs,
                output::size(report.new_bytes),
            );
        }
        if !report.skipped.is_empty() && !a.json {
            println!("{} entries were skipped:", report.skipped.len());
            for s in &report.skipped {
                println!("  {}: {}", s.rel.display(), s.reason);
            }
        }
    }
    Ok(code)
}

/// What a backup says when the folder's newest snapshots cannot be read.
fn history_lost_text(lost: &[u64], from: Option<u64>) -> String {
    let list: Vec<String> = lost.iter().map(|s| format!("#{s}")).collect();
    let what = if lost.len() == 1 { "snapshot" } else { "snapshots" };
    let start = match from {
        Some(seq) => format!("this backup goes on from #{seq}, the newest one that can"),
        None => "no earlier snapshot of it can be read either, so this backup starts a new \
                 chain (numbered after the lost ones)"
            .to_owned(),
    };
    format!(
        "{what} {} of this folder can no longer be read (their blobs are damaged or lost): \
         the files only they held are lost; {start}",
        list.join(", ")
    )
}

/// Says what opening the stores found wrong and mended (head files put back from the packs,
/// blobs lost with a pack's end); on standard error, or as JSON lines.
fn print_repairs(stores: &[Store], json: bool) -> Result<()> {
    for store in stores {
        for line in repair_lines(store) {
            if json {
                output::json_line(
                    &json!({"event": "repaired", "store": store.path().to_string_lossy(), "message": line}),
                )?;
            } else {
                eprintln!("warning: store {}: {line}", store.path().display());
            }
        }
    }
    Ok(())
}

fn repair_lines(store: &Store) -> Vec<String> {
    let repairs = store.repairs();
    let mut out: Vec<String> = repairs.heads.iter().map(ToString::to_string).collect();
    for lost in &repairs.lost {
        out.push(format!(
            "{} blobs ({}) of {} are lost ({}); they are stored again by the next backup of the \
             files that still hold them, or pushed again by a peer",
            lost.blobs,
            output::size(lost.bytes),
            lost.pack.display(),
            lost.problem
        ));
    }
    out
}

fn backup_event_json(event: &backup::Event) -> serde_json::Value {
    match event {
        backup::Event::Scanned { folder, files, files_to_read, bytes_to_read } => {
            json!({"event": "scanned", "folder": folder, "files": files, "files_to_read": files_to_read, "bytes_to_read": bytes_to_read})
        }
        backup::Event::FileStored { path, bytes } => {
            json!({"event": "file", "path": path.to_string_lossy(), "bytes": bytes})
        }
        backup::Event::Skipped { path, reason } => {
            json!({"event": "skipped", "path": path.to_string_lossy(), "reason": reason})
        }
        backup::Event::Committed { blobs, bytes } => {
            json!({"event": "committed", "blobs": blobs, "bytes": bytes})
        }
        backup::Event::SnapshotCommitted { snapshot, sequence } => {
            json!({"event": "snapshot", "snapshot": snapshot.to_hex(), "sequence": sequence})
        }
        backup::Event::HistoryLost { lost, from } => json!({
            "event": "history_lost", "lost": lost, "from": from,
            "message": history_lost_text(lost, *from),
        }),
        _ => json!({"event": "other"}),
    }
}

fn snapshot_json(s: &SnapshotInfo) -> serde_json::Value {
    json!({
        "id": s.id.to_hex(),
        "short_id": s.id.short(),
        "folder": s.snapshot.folder_name,
        "folder_id": s.snapshot.folder.to_hex(),
        "path": String::from_utf8_lossy(&s.snapshot.folder_path),
        "device": s.snapshot.device_name,
        "sequence": s.snapshot.sequence,
        "time": output::time(s.snapshot.time),
        "files": s.snapshot.stats.files,
        "dirs": s.snapshot.stats.dirs,
        "bytes": s.snapshot.stats.bytes,
        "parent": s.snapshot.parent.map(|p| p.to_hex()),
    })
}

fn snapshots(home_path: &Path, a: SnapshotsArgs) -> Result<u8> {
    let dev = Device::open(home_path)?;
    let stores = dev.stores(Access::ReadOnly)?;
    let catalog = Catalog::new(dev.home.keys()?, &stores);
    let mut list = catalog.snapshots()?;
    if let Some(f) = &a.folder {
        list.retain(|s| &s.snapshot.folder_name == f || s.snapshot.folder.to_hex() == *f);
    }
    list.sort_by(|x, y| {
        (&x.snapshot.folder_name, x.snapshot.time).cmp(&(&y.snapshot.folder_name, y.snapshot.time))
    });
    if a.json {
        let list: Vec<_> = list.iter().map(snapshot_json).collect();
        output::json_line(&json!({ "snapshots": list }))?;
        return Ok(EXIT_OK);
    }
    if list.is_empty() {
        println!("No snapshots yet: run `triad backup`.");
        return Ok(EXIT_OK);
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<16}  {:<20}  {:<12}  {:<12}  {:>4}  {:>8}  {:>10}",
        "ID", "TIME", "FOLDER", "DEVICE", "SEQ", "FILES", "SIZE"
    )?;
    for s in &list {
        writeln!(
            out,
            "{:<16}  {:<20}  {:<12}  {:<12}  {:>4}  {:>8}  {:>10}",
            s.id.short(),
            output::time(s.snapshot.time),
            s.snapshot.folder_name,
            s.snapshot.device_name,
            s.snapshot.sequence,
            s.snapshot.stats.files,
            output::size(s.snapshot.stats.bytes)
        )?;
    }
    Ok(EXIT_OK)
}

/// Resolves the snapshot selector; a path inside a folder needs exactly one folder.
fn choose(
    catalog: &Catalog<'_>,
    selector: &str,
    folder: Option<&str>,
    path: Option<&Path>,
) -> Result<Vec<SnapshotInfo>> {
    let chosen = catalog.resolve(selector, folder)?;
    if path.is_some() && chosen.len() > 1 {
        bail!("`{selector}` covers {} folders; choose one with --folder NAME", chosen.len());
    }
    Ok(chosen)
}

/// Lists paths relative to the folder, as `restore` takes them; with several folders, each
/// folder's rows come under a line that names it.
fn ls(home_path: &Path, a: LsArgs) -> Result<u8> {
    let dev = Device::open(home_path)?;
    let stores = dev.stores(Access::ReadOnly)?;
    let catalog = Catalog::new(dev.home.keys()?, &stores);
    let chosen = choose(&catalog, &a.snapshot, a.folder.as_deref(), a.path.as_deref())?;
    let mut groups = Vec::new();
    for snap in &chosen {
        let mut rows = Vec::new();
        let rel = a.path.clone().unwrap_or_default();
        let start = match catalog.find(snap, &rel)? {
            None => Some(snap.snapshot.root),
            Some(node) => match node.kind {
                NodeKind::Dir { tree } => Some(tree),
                _ => {
                    rows.push(ls_row(&catalog, &rel, &node)?);
                    None
                }
            },
        };
        if let Some(tree) = start {
            list_tree(&catalog, tree, &rel, &mut rows)?;
        }
        for row in &mut rows {
            row["folder"] = json!(snap.snapshot.folder_name);
            row["folder_id"] = json!(snap.snapshot.folder.to_hex());
        }
        groups.push((snap, rows));
    }
    if a.json {
        let rows: Vec<_> = groups.into_iter().flat_map(|(_, rows)| rows).collect();
        output::json_line(&json!({ "entries": rows }))?;
    } else {
        let mut out = std::io::stdout().lock();
        let several = groups.len() > 1;
        for (snap, rows) in &groups {
            if several {
                writeln!(
                    out,
                    "{} (snapshot {}, {}):",
                    snap.snapshot.folder_name,
                    snap.id.short(),
                    String::from_utf8_lossy(&snap.snapshot.folder_path)
                )?;
            }
            for r in rows {
                let size = r["size"].as_u64().map_or("-".to_owned(), output::size);
                writeln!(
                    out,
                    "{}{} {:>10}  {}  {}",
                    if several { "  " } else { "" },
                    r["type_mode"].as_str().unwrap_or(""),
                    size,
                    r["mtime"].as_str().unwrap_or(""),
                    r["path"].as_str().unwrap_or("")
                )?;
            }
        }
    }
    Ok(EXIT_OK)
}

fn list_tree(
    catalog: &Catalog<'_>,
    tree: triad_core::BlobId,
    prefix: &Path,
    rows: &mut Vec<serde_json::Value>,
) -> Result<()> {
    let tree: Tree = catalog.load(tree)?;
    for node in &tree.nodes {
        let path = prefix.join(String::from_utf8_lossy(&node.name).as_ref());
        rows.push(ls_row(catalog, &path, node)?);
        if let NodeKind::Dir { tree } = node.kind {
            list_tree(catalog, tree, &path, rows)?;
        }
    }
    Ok(())
}

fn ls_row(
    catalog: &Catalog<'_>,
    path: &Path,
    node: &triad_core::snapshot::Node,
) -> Result<serde_json::Value> {
    let (kind, size, hash) = match &node.kind {
        NodeKind::File { entry } => {
            let e: FileEntry = catalog.load(*entry)?;
            ('-', Some(e.size), Some(hex::encode(e.hash)))
        }
        NodeKind::Dir { .. } => ('d', None, None),
        NodeKind::Symlink { .. } => ('l', None, None),
    };
    Ok(json!({
        "path": path.to_string_lossy(),
        "type": match kind { '-' => "file", 'd' => "dir", _ => "symlink" },
        "type_mode": format!("{kind}{}", mode_string(node.mode)),
        "mode": node.mode,
        "size": size,
        "mtime": output::time(node.mtime),
        "blake3": hash,
    }))
}

fn mode_string(mode: u32) -> String {
    let mut s = String::with_capacity(9);
    for shift in [6, 3, 0] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

fn restore(home_path: &Path, a: RestoreArgs) -> Result<u8> {
    let dev = Device::open(home_path)?;
    let mut stores = dev.stores(Access::ReadOnly)?;
    let chosen = choose(
        &Catalog::new(dev.home.keys()?, &stores),
        &a.snapshot,
        a.folder.as_deref(),
        a.path.as_deref(),
    )?;
    let dest = settings::absolute(&a.to);
    // Where each folder goes, its name checked, before anything is fetched or written.
    let dirs = restore::folder_dirs(&Catalog::new(dev.home.keys()?, &stores), &chosen, &dest)?;
    check_restore_places(&dev, home_path, &a, &chosen, &dirs)?;
    let fetched = fetch_missing(&dev, &stores, &chosen, a.path.as_deref(), a.json)?;
    if let Some(fetched) = &fetched {
        let store =
            Store::open(&fetched.0, None, dev.home.vault(), Access::ReadOnly, &dev.config.store)
                .with_context(|| format!("while opening {}", fetched.0.display()))?;
        stores.push(store);
    }
    let catalog = Catalog::new(dev.home.keys()?, &stores);
    let total: u64 = chosen.iter().map(|s| s.snapshot.stats.bytes).sum();
    let bar = output::bar(total, "restoring");
    let progress = |event: &restore::Event| match event {
        restore::Event::FileRestored { bytes, .. } | restore::Event::FileSkipped { bytes, .. } => {
            bar.inc(*bytes)
        }
        _ => {}
    };
    let mut totals = restore::Report::default();
    for (snap, dir) in chosen.iter().zip(&dirs) {
        let options = restore::Options { overwrite: a.overwrite, threads: 0 };
        let report = restore::restore(
            &catalog,
            dev.home.keys()?,
            snap,
            a.path.as_deref(),
            dir,
            options,
            &progress,
        )
        .with_context(|| format!("while restoring snapshot {}", snap.id.short()))?;
        totals.files += report.files;
        totals.bytes += report.bytes;
        totals.skipped += report.skipped;
        totals.skipped_bytes += report.skipped_bytes;
        totals.dirs += report.dirs;
        totals.links += report.links;
        totals.failed.extend(report.failed);
    }
    bar.finish_and_clear();
    let mut taken = Vec::new();
    if a.take_over {
        let mut config = dev.config.clone();
        for (snap, dir) in chosen.iter().zip(&dirs) {
            if config.folders.iter().any(|f| f.id == snap.snapshot.folder) {
                continue;
            }
            config.folders.push(FolderConfig {
                id: snap.snapshot.folder,
                path: dir.clone(),
                media: a.media.unwrap_or(triad_core::Media::Ssd),
                exclude: Vec::new(),
                policy: None,
            });
            taken.push((dir.clone(), snap.snapshot.device_name.clone()));
        }
        settings::save(home_path, &config)?;
    }
    let placed: Vec<_> = chosen
        .iter()
        .zip(&dirs)
        .map(|(s, d)| {
            json!({
                "folder": s.snapshot.folder_name,
                "folder_id": s.snapshot.folder.to_hex(),
                "snapshot": s.id.to_hex(),
                "to": d.to_string_lossy(),
            })
        })
        .collect();
    if a.json {
        output::json_line(&json!({
            "taken_over": taken.iter().map(|(p, _)| p.to_string_lossy()).collect::<Vec<_>>(),
            "files": totals.files, "bytes": totals.bytes, "dirs": totals.dirs, "links": totals.links,
            "skipped": totals.skipped, "skipped_bytes": totals.skipped_bytes,
            "folders": placed,
            "failed": totals.failed.iter().map(|(p, r)| json!({"path": p.to_string_lossy(), "reason": r})).collect::<Vec<_>>(),
            "to": dest.to_string_lossy(),
        }))?;
    } else {
        println!(
            "Restored {} ({}) into {}; every file matched its recorded hash.",
            output::count(totals.files, "file"),
            output::size(totals.bytes),
            dest.display()
        );
        if totals.skipped > 0 {
            println!(
                "Skipped {} ({}) already there with the recorded content.",
                output::count(totals.skipped, "file"),
                output::size(totals.skipped_bytes)
            );
        }
        let renamed = chosen.iter().zip(&dirs).any(|(s, d)| {
            d.file_name().is_none_or(|n| n.to_string_lossy() != s.snapshot.folder_name)
        });
        if chosen.len() > 1 || renamed {
            for (snap, dir) in chosen.iter().zip(&dirs) {
                println!(
                    "  {} ({} on {}) -> {}",
                    snap.snapshot.folder_name,
                    String::from_utf8_lossy(&snap.snapshot.folder_path),
                    snap.snapshot.device_name,
                    dir.display()
                );
            }
            if renamed {
                println!(
                    "Folders that share a name are restored into directories named after their folder id."
                );
            }
        }
        for (path, from) in &taken {
            println!(
                "This device protects {} from now on (taken over from {from}); start or restart `triad agent`.",
                path.display()
            );
        }
        if !totals.failed.is_empty() {
            println!(
                "{} could NOT be restored:",
                output::count(totals.failed.len() as u64, "file")
            );
            for (p, r) in &totals.failed {
                println!("  {}: {r}", p.display());
            }
        }
    }
    Ok(if totals.failed.is_empty() { EXIT_OK } else { EXIT_DAMAGE })
}

/// Refuses a restore that would write into a protected folder (its files would be backed up
/// again as that folder's), except a folder restored onto itself, and checks before anything
/// is written that `--take-over` can protect every restored folder where it lands.
fn check_restore_places(
    dev: &Device,
    home_path: &Path,
    a: &RestoreArgs,
    chosen: &[SnapshotInfo],
    dirs: &[PathBuf],
) -> Result<()> {
    use triad_agent::config::resolve;
    for (snap, dir) in chosen.iter().zip(dirs) {
        let real = resolve(dir);
        for folder in &dev.config.folders {
            let protected = resolve(&folder.path);
            let itself = folder.id == snap.snapshot.folder && real == protected;
            if real.starts_with(&protected) && !itself {
                bail!(
                    "{} is inside the protected folder {}: restored files would be backed up \
                     again as part of it; restore somewhere else (--to)",
                    dir.display(),
                    folder.path.display()
                );
            }
        }
    }
    if !a.take_over {
        return Ok(());
    }
    if a.path.is_some() {
        bail!("--take-over restores whole folders: leave out the path");
    }
    let mut config = dev.config.clone();
    for (snap, dir) in chosen.iter().zip(dirs) {
        if config.folders.iter().any(|f| f.id == snap.snapshot.folder) {
            continue;
        }
        config
            .check_folder_place(dir, home_path, None)
            .with_context(|| format!("cannot take over {}", snap.snapshot.folder_name))?;
        config.folders.push(FolderConfig {
            id: snap.snapshot.folder,
            path: dir.clone(),
            media: triad_core::Media::Ssd,
            exclude: Vec::new(),
            policy: None,
        });
    }
    Ok(())
}

/// A store of blobs fetched for one restore, removed when the restore is done.
struct Fetched(PathBuf);

impl Drop for Fetched {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Has the agent fetch, from the other devices, the chunks of what is restored that no store
/// of this device holds (a device without a store holds none). `None` if every one is here.
fn fetch_missing(
    dev: &Device,
    stores: &[Store],
    chosen: &[SnapshotInfo],
    path: Option<&Path>,
    json: bool,
) -> Result<Option<Fetched>> {
    let catalog = Catalog::new(dev.home.keys()?, stores);
    let mut seen = std::collections::HashSet::new();
    let mut missing = Vec::new();
    for snap in chosen {
        for id in restore::chunks_of(&catalog, snap, path)? {
            let here = dev.config.holding_data(stores).any(|s| s.contains(id).unwrap_or(false));
            if !here && seen.insert(id) {
                missing.push(id.to_hex());
            }
        }
    }
    if missing.is_empty() {
        return Ok(None);
    }
    // Without the agent, everything that is here is restored and the rest is reported.
    let mut client = match Client::connect(dev.home.path()) {
        Ok(client) => client,
        Err(ClientError::NotRunning { .. }) => {
            eprintln!(
                "note: {} pieces of these files are in no store of this device; the files that \
                 need them are not restored. Start `triad agent` and restore again: it fetches \
                 them from your other devices.",
                missing.len()
            );
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
    };
    let into = dev.home.path().join(format!("restore-{}", hex::encode(random_array::<8>()?)));
    let asked = missing.len();
    client.send(&ControlRequest::Fetch { blobs: missing, into: into.clone() })?;
    let fetched = Fetched(into);
    // The agent gives up on a device that stops answering and goes on with the next; it says
    // how far it is as it goes.
    let answer = loop {
        let event = match client.line::<answer::FetchEvent, answer::Fetched>()? {
            Line::Event(event) => event,
            Line::Done(answer) => break answer,
            Line::Failed(failure) => {
                eprintln!(
                    "note: cannot fetch from the other devices ({}); the files that need what \
                     is missing are not restored.",
                    failure.error
                );
                return Ok(None);
            }
        };
        if json {
            continue;
        }
        match event {
            answer::FetchEvent::Fetching { from, fetched, .. } => {
                eprintln!("  fetching the missing pieces from {from} ({fetched} of {asked} so far)")
            }
            answer::FetchEvent::Progress { fetched, .. } => {
                eprintln!("  {fetched} of {asked} pieces fetched")
            }
            answer::FetchEvent::Gone { device, reason } => eprintln!(
                "  {device} stopped answering ({reason}); going on with your other devices"
            ),
        }
    };
    if !json {
        eprintln!(
            "Fetched {} of {asked} pieces from {}.",
            answer.fetched,
            if answer.from.is_empty() { "no device".to_owned() } else { answer.from.join(", ") }
        );
        for failed in &answer.failed {
            eprintln!("note: {} did not answer: {}", failed.device, failed.reason);
        }
        let missing = answer.missing;
        if missing > 0 {
            eprintln!(
                "note: {missing} pieces are on no device that answered; the files that need them \
                 are not restored. Restore again once your other devices are on."
            );
        }
    }
    Ok(Some(fetched))
}

/// `triad store scrub`: re-hashes every blob of every store, drops the damaged ones from the
/// index (so that the next backup or push stores them again) and says what was found.
fn scrub(dev: &Device, json: bool) -> Result<u8> {
    let mut stores = dev.stores(Access::ReadWrite)?;
    let mut rows = Vec::new();
    let mut damaged_total = 0usize;
    for store in &mut stores {
        let report = store
            .scrub(&mut |_| {})
            .with_context(|| format!("while reading store {}", store.path().display()))?;
        let ids: Vec<BlobId> = report.damaged.iter().filter_map(|d| d.blob).collect();
        let dropped = store.forget_damaged(&ids).with_context(|| {
            format!("while dropping damaged blobs of {}", store.path().display())
        })?;
        let mut problems: Vec<String> = report.damaged.iter().map(damage_text).collect();
        problems.extend(repair_lines(store));
        problems.extend(store.check_heads().unwrap_or_default().iter().map(ToString::to_string));
        damaged_total += problems.len();
        rows.push((store.path().to_path_buf(), report.blobs, report.bytes, dropped, problems));
    }
    if json {
        output::json_line(&json!({
            "ok": damaged_total == 0,
            "stores": rows.iter().map(|(path, blobs, bytes, dropped, problems)| json!({
                "store": path.to_string_lossy(), "blobs_read": blobs, "bytes_read": bytes,
                "dropped": dropped, "problems": problems,
            })).collect::<Vec<_>>(),
        }))?;
    } else {
        for (path, blobs, bytes, dropped, problems) in &rows {
            println!(
                "Store {}: re-hashed {blobs} blobs ({}).",
                path.display(),
                output::size(*bytes)
            );
            for p in problems {
                println!("  DAMAGED {p}");
            }
            if *dropped > 0 {
                println!(
                    "  {dropped} damaged blobs were dropped from the index: the next `triad backup` stores them again from the source files, or a peer pushes them again."
                );
            }
        }
        if damaged_total == 0 {
            println!("Every blob matches its address.");
        }
    }
    Ok(if damaged_total == 0 { EXIT_OK } else { EXIT_DAMAGE })
}

/// One line for a damaged blob or pack entry.
fn damage_text(d: &triad_store::Damage) -> String {
    let pack = d.pack.display();
    match (d.blob, &d.problem) {
        (Some(blob), problem) => format!("blob {blob} in {pack} at offset {}: {problem}", d.offset),
        (None, triad_store::Problem::PackHeader) => format!(
            "the header of pack {pack} is damaged: its blobs are still read entry by entry, but the file may be failing; copy the store to a sound disk"
        ),
        (None, triad_store::Problem::PackMissing) => {
            format!("pack {pack} is missing: its blobs are lost")
        }
        (None, problem) => format!(
            "an entry of {pack} at offset {} is damaged ({problem}): the blob it held is not known",
            d.offset
        ),
    }
}

/// A storage-only device cannot open snapshots; it can re-hash every blob it holds against
/// its address, which is what it is trusted with.
fn verify_ciphertext(stores: &[Store], a: &VerifyArgs) -> Result<u8> {
    if !a.read_data {
        bail!(
            "this device is storage-only: it cannot read snapshots; `triad verify --read-data` re-hashes every blob it holds"
        );
    }
    let (mut blobs, mut bytes, mut damaged) = (0u64, 0u64, Vec::new());
    for store in stores {
        let report = store
            .scrub(&mut |_| {})
            .with_context(|| format!("while reading store {}", store.path().display()))?;
        blobs += report.blobs;
        bytes += report.bytes;
        for d in report.damaged {
            let blob = d.blob.map_or_else(|| "(unknown blob)".to_owned(), |b| b.to_hex());
            damaged.push(format!(
                "{blob} in {} at offset {}: {}",
                d.pack.display(),
                d.offset,
                d.problem
            ));
        }
    }
    if a.json {
        output::json_line(
            &json!({"ok": damaged.is_empty(), "blobs_read": blobs, "bytes_read": bytes, "damaged": damaged}),
        )?;
    } else {
        println!(
            "Re-hashed {blobs} blobs ({}) in {} stores (storage-only: contents are not readable here).",
            output::size(bytes),
            stores.len()
        );
        if damaged.is_empty() {
            println!("Every blob matches its address.");
        }
        for d in &damaged {
            println!("  DAMAGED {d}");
        }
    }
    Ok(if damaged.is_empty() { EXIT_OK } else { EXIT_DAMAGE })
}

fn verify(home_path: &Path, a: VerifyArgs) -> Result<u8> {
    let dev = Device::open(home_path)?;
    let mut stores = dev.stores(Access::ReadOnly)?;
    let Ok(keys) = dev.home.keys() else {
        return verify_ciphertext(&stores, &a);
    };
    let catalog = Catalog::new(keys, &stores);
    let total: u64 = if a.read_data {
        stores.iter().filter_map(|s| s.stats().ok()).map(|s| s.bytes).sum()
    } else {
        0
    };
    let bar = output::bar(total, "re-hashing");
    let last = Mutex::new(std::collections::HashMap::<PathBuf, u64>::new());
    let progress = |event: &verify::Event| {
        if let verify::Event::DataRead { store, bytes } = event {
            let mut last = last.lock().expect("not poisoned");
            let before = last.insert(store.clone(), *bytes).unwrap_or(0);
            bar.inc(bytes.saturating_sub(before));
        }
    };
    let report = verify::verify(
        &catalog,
        &verify::Options { read_data: a.read_data, catalogs: dev.config.catalog_ids() },
        &progress,
    )?;
    bar.finish_and_clear();
    // What the scrub found damaged is dropped from the index: the next backup stores it again.
    let mut dropped = 0;
    for store in stores.iter_mut().filter(|s| s.access() == Access::ReadWrite) {
        let ids: Vec<BlobId> =
            report.damaged.iter().filter(|(p, _)| p == store.path()).map(|(_, b)| *b).collect();
        dropped += store.forget_damaged(&ids).with_context(|| {
            format!("while dropping damaged blobs of {}", store.path().display())
        })?;
    }
    // A laptop without a store checks only its catalog here; its copies are audited instead.
    let catalog_only = dev.config.holding_data(&stores).next().is_none();
    if a.json {
        output::json_line(&json!({
            "ok": report.is_ok(),
            "catalog_only": catalog_only,
            "snapshots": report.snapshots, "trees": report.trees, "files": report.files, "chunks": report.chunks,
            "blobs_read": report.blobs_read, "bytes_read": report.bytes_read,
            "dropped": dropped,
            "unused": report.unused.iter().map(|u| json!({"store": u.store.to_string_lossy(), "blobs": u.blobs, "bytes": u.bytes})).collect::<Vec<_>>(),
            "store_problems": report.unattributed.iter().chain(&report.store_repairs).map(|(s, w)| json!({"store": s.to_string_lossy(), "problem": w})).collect::<Vec<_>>(),
            "problems": report.problems.iter().map(|p| json!({
                "blob": p.blob.to_hex(), "kind": p.kind,
                "stores": p.stores.iter().map(|(s, w)| json!({"store": s.to_string_lossy(), "problem": w})).collect::<Vec<_>>(),
                "used_by": p.used_by.iter().map(|(f, path, snaps)| json!({"folder": f, "path": path, "snapshots": snaps})).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        }))?;
    } else {
        let data = if a.read_data {
            format!("; re-hashed {} blobs ({})", report.blobs_read, output::size(report.bytes_read))
        } else {
            String::new()
        };
        println!(
            "Checked {} snapshots, {} trees, {} files, {} chunks in {} stores{data}.",
            report.snapshots,
            report.trees,
            report.files,
            report.chunks,
            stores.len()
        );
        if report.is_ok() && catalog_only {
            println!("The catalog is intact.");
            println!(
                "This device keeps no copy of the file data: its copies are on your other devices. \
                 `triad audit --now` proves that they still hold every byte."
            );
        } else if report.is_ok() {
            println!("Everything is intact.");
        }
        for (store, what) in report.store_repairs.iter().chain(&report.unattributed) {
            println!("DAMAGED in {}: {what}", store.display());
        }
        for unused in &report.unused {
            println!(
                "In {}: {} ({}) that no snapshot uses, left by a backup that stopped or a file \
                 that changed while it was read. They take space; nothing depends on them.",
                unused.store.display(),
                output::count(unused.blobs, "blob"),
                output::size(unused.bytes)
            );
        }
        if !report.problems.is_empty() {
            println!("{} blobs are MISSING or DAMAGED:", report.problems.len());
            for p in &report.problems {
                println!("  {} {}", p.kind, p.blob);
                for (store, what) in &p.stores {
                    println!("    in {}: {what}", store.display());
                }
                if p.used_by.is_empty() {
                    println!("    used by no snapshot");
                }
                for (folder, path, snaps) in &p.used_by {
                    println!("    used by {folder}/{path} (snapshots {})", snaps.join(", "));
                }
            }
        }
        if dropped > 0 {
            println!(
                "{dropped} damaged blobs were dropped from the index: the next `triad backup` stores them again from the source files, or a peer pushes them again."
            );
        }
    }
    Ok(if report.is_ok() { EXIT_OK } else { EXIT_DAMAGE })
}

fn recover(home_path: &Path, a: RecoverArgs) -> Result<u8> {
    if Home::exists(home_path) {
        bail!(
            "{} already holds a vault; recover into a new --home / TRIAD_HOME",
            home_path.display()
        );
    }
    let store_path = settings::absolute(&a.store);
    let phrase = phrase::read()?;
    if let Some(peer) = &a.peer {
        return network::recover_from_peer(
            home_path,
            &a,
            peer,
            &store_path,
            &phrase,
            random_array()?,
        );
    }
    let vault = phrase.vault_id();
    let config = Config::default();
    let store = match Store::open(&store_path, None, vault, Access::ReadWrite, &config.store) {
        Err(OpenError::ReadOnly { .. }) => {
            Store::open(&store_path, None, vault, Access::ReadOnly, &config.store)
        }
        other => other,
    }
    .with_context(|| format!("while opening store {}", store_path.display()))?;
    let roster = store
        .roster()
        .with_context(|| format!("while reading the roster of {}", store_path.display()))?
        .ok_or_else(|| anyhow!("store {} holds no roster of the vault", store_path.display()))?;
    let device = NewDevice { name: &a.name, site: &a.site, device_seed: random_array()? };
    let (home, roster) = Home::recover(home_path, &phrase, roster, device)?;
    drop(phrase);
    if let Err(e) = store.write_roster(&roster) {
        eprintln!(
            "note: could not record this device in the store's roster ({e}); it will be recorded at the next backup"
        );
    }
    let media = a.media.unwrap_or(store.media());
    let mut config = config;
    config.stores.push(StoreConfig {
        id: store.id(),
        path: store_path.clone(),
        media,
        quota: None,
        catalog: false,
    });
    settings::save(home_path, &config)?;
    let stores = vec![store];
    let catalog = Catalog::new(home.keys()?, &stores);
    let latest = catalog.latest()?;
    println!(
        "Recovered vault {} as device {:?} at site {:?}, using store {}.",
        vault.short(),
        a.name,
        a.site,
        store_path.display()
    );
    if latest.is_empty() {
        println!("The store holds no snapshots.");
    } else {
        println!(
            "The store holds the latest snapshots of {}:",
            output::count(latest.len() as u64, "folder")
        );
        for s in &latest {
            println!(
                "  {} from {} ({}, {}), snapshot {}",
                s.snapshot.folder_name,
                s.snapshot.device_name,
                output::count(s.snapshot.stats.files, "file"),
                output::size(s.snapshot.stats.bytes),
                s.id.short()
            );
        }
        println!("Restore everything with `triad restore latest --to DIR`.");
    }
    Ok(EXIT_OK)
}
