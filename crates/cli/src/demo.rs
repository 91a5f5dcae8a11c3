//! `triad demo`: the whole single-device job in a temporary folder, with a few lines of
//! output. Everything is real: files on disk, a store with pack files and a redb index,
//! sealing, snapshots, verification and restore.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use triad_agent::catalog::Catalog;
use triad_agent::config::{FolderConfig, StoreConfig};
use triad_agent::home::{Home, NewDevice};
use triad_agent::{Config, backup, restore, verify};
use triad_core::keys::Phrase;
use triad_core::{FolderId, Media, StoreId};
use triad_store::{Access, Store};

use crate::cli::DemoArgs;
use crate::{EXIT_OK, output, run::random};

/// One generated file of the shoot.
struct ShootFile {
    rel: PathBuf,
    len: usize,
}

/// The shoot: raw files (incompressible), JPEGs and XMP sidecars, from a fixed seed.
fn shoot(scale: u32) -> Vec<ShootFile> {
    let frames = 12 * scale as usize;
    let mut files = Vec::new();
    for i in 0..frames {
        let day = if i < frames / 2 { "day1" } else { "day2" };
        let name = format!("IMG_{:04}", 1001 + i);
        files
            .push(ShootFile { rel: PathBuf::from(format!("{day}/raw/{name}.CR3")), len: 24 << 20 });
        files.push(ShootFile { rel: PathBuf::from(format!("{day}/jpg/{name}.JPG")), len: 6 << 20 });
        files.push(ShootFile { rel: PathBuf::from(format!("{day}/raw/{name}.xmp")), len: 0 });
    }
    files
}

fn xmp(name: &str, rating: u32) -> String {
    format!(
        "<?xpacket begin=\"\u{feff}\" id=\"W5M0MpCehiHzreSzNTczkc9d\"?>\n<x:xmpmeta xmlns:x=\"adobe:ns:meta/\">\n <rdf:RDF xmlns:rdf=\"http://www.w3.org/1999/02/22-rdf-syntax-ns#\">\n  <rdf:Description rdf:about=\"\" xmlns:xmp=\"http://ns.adobe.com/xap/1.0/\" xmp:Rating=\"{rating}\" xmp:Label=\"{name}\"/>\n </rdf:RDF>\n</x:xmpmeta>\n<?xpacket end=\"w\"?>\n"
    )
}

fn write_shoot(dir: &Path, files: &[ShootFile]) -> Result<u64> {
    let mut total = 0;
    for f in files {
        let path = dir.join(&f.rel);
        fs::create_dir_all(path.parent().expect("shoot files live in folders"))?;
        let bytes = if f.len == 0 {
            let stem =
                f.rel.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            xmp(&stem, 3).into_bytes()
        } else {
            // Incompressible, deterministic content: BLAKE3's output stream keyed by the name.
            let mut bytes = vec![0u8; f.len];
            let key = blake3::hash(f.rel.to_string_lossy().as_bytes());
            blake3::Hasher::new_keyed(key.as_bytes()).finalize_xof().fill(&mut bytes);
            bytes
        };
        total += bytes.len() as u64;
        fs::write(&path, bytes)?;
    }
    Ok(total)
}

fn request(folder: &FolderConfig) -> backup::Request<'_> {
    backup::Request { folder, now: output::now(), options: backup::Options::default() }
}

fn rate(bytes: u64, secs: f64) -> String {
    format!("{}/s", output::size((bytes as f64 / secs.max(1e-6)) as u64))
}

/// Runs the demo; prints a few lines per step.
pub(crate) fn run(args: DemoArgs) -> Result<u8> {
    let tmp = tempfile::Builder::new()
        .prefix("triad-demo-")
        .tempdir()
        .context("while creating a temporary folder")?;
    let root = tmp.path().to_path_buf();
    println!("triad demo: one device backs up a shoot, in {}", root.display());
    let result = steps(&root, args.scale);
    if args.keep {
        let kept = tmp.keep();
        println!("Kept the demo's files in {}", kept.display());
    }
    result?;
    Ok(EXIT_OK)
}

fn steps(root: &Path, scale: u32) -> Result<()> {
    let pictures = root.join("Pictures").join("2026-11-wedding");
    let files = shoot(scale);
    let total = write_shoot(&pictures, &files)?;
    let raws = files.iter().filter(|f| f.rel.extension().is_some_and(|e| e == "CR3")).count();
    println!(
        "  shoot:    {} files ({raws} raw, {raws} jpeg, {raws} xmp sidecars), {}",
        files.len(),
        output::size(total)
    );

    // init, store add, folder add
    let home_path = root.join("home-laptop");
    let mut entropy = [0u8; 32];
    random(&mut entropy)?;
    let phrase = Phrase::from_entropy(entropy);
    let mut seed = [0u8; 32];
    random(&mut seed)?;
    let (home, roster) = Home::init(
        &home_path,
        &phrase,
        NewDevice { name: "laptop", site: "home", device_seed: seed },
    )?;
    let mut config = Config::default();
    let mut store_id = [0u8; 16];
    random(&mut store_id)?;
    let store_path = root.join("ssd").join("triad");
    let store_id = StoreId::from_bytes(store_id);
    let store = Store::create(
        &store_path,
        home.vault(),
        Media::UsbSsd,
        store_id,
        output::now(),
        &config.store,
    )?;
    let mut folder_id = [0u8; 16];
    random(&mut folder_id)?;
    let folder = FolderConfig {
        id: FolderId::from_bytes(folder_id),
        path: pictures.clone(),
        media: Media::Ssd,
        exclude: Vec::new(),
        policy: None,
    };
    config.stores.push(StoreConfig {
        id: store_id,
        path: store_path.clone(),
        media: Media::UsbSsd,
        quota: None,
    });
    config.folders.push(folder.clone());
    println!(
        "  init:     vault {}, device \"laptop\" at \"home\", store on a usb-ssd (24-word phrase made, not shown here)",
        home.vault().short()
    );

    // backup 1
    let mut stores = vec![store];
    let quiet = |_: &backup::Event| {};
    let started = Instant::now();
    let first = backup::run(&home, &config, &roster, &mut stores, request(&folder), &quiet)?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "  backup 1: {} files, {} in {secs:.1} s ({}): snapshot {}, {} blobs sealed and stored",
        first.stats.files,
        output::size(first.stats.bytes),
        rate(first.bytes_read, secs),
        first.snapshot.short(),
        first.new_blobs
    );

    // edit sidecars
    let sidecars: Vec<&ShootFile> = files.iter().filter(|f| f.len == 0).take(3).collect();
    for f in &sidecars {
        let stem = f.rel.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        fs::write(pictures.join(&f.rel), xmp(&stem, 5))?;
    }
    let second = backup::run(&home, &config, &roster, &mut stores, request(&folder), &quiet)?;
    println!(
        "  edit:     re-rated {} sidecars; backup 2 read only those {} files and stored {} new data blobs ({} in all with metadata); the other {} files were not read",
        sidecars.len(),
        second.files_read,
        second.new_data_blobs,
        output::size(second.new_bytes),
        second.stats.files - second.files_read
    );
    ensure!(
        second.files_read == sidecars.len() as u64,
        "backup 2 read {} files, expected {}",
        second.files_read,
        sidecars.len()
    );
    ensure!(
        second.new_data_blobs <= sidecars.len() as u64,
        "backup 2 stored {} data blobs",
        second.new_data_blobs
    );

    // verify
    let catalog = Catalog::new(home.keys()?, &stores);
    let report = verify::verify(&catalog, verify::Options { read_data: true }, &|_| {})?;
    if !report.is_ok() {
        bail!("verify found {} problems", report.problems.len());
    }
    println!(
        "  verify:   {} snapshots, {} files, {} blobs re-hashed ({}): intact",
        report.snapshots,
        report.files,
        report.blobs_read,
        output::size(report.bytes_read)
    );

    // restore
    let restored = root.join("restored");
    let latest = catalog.resolve("latest", None)?;
    let started = Instant::now();
    let r = restore::restore(
        &catalog,
        home.keys()?,
        &latest[0],
        None,
        &restored,
        restore::Options::default(),
        &|_| {},
    )?;
    let secs = started.elapsed().as_secs_f64();
    ensure!(r.failed.is_empty(), "{} files failed to restore", r.failed.len());
    let compared = compare(&pictures, &restored.join("2026-11-wedding"))?;
    println!(
        "  restore:  {} files, {} in {secs:.1} s ({}); all {compared} files byte-identical to the originals, mtimes and modes too",
        r.files,
        output::size(r.bytes),
        rate(r.bytes, secs)
    );
    drop(stores);

    // recover on a new device from the phrase and the store alone
    let words = phrase.words().join(" ");
    let typed = Phrase::parse(&words)?;
    let new_home = root.join("home-new-laptop");
    let store = Store::open(&store_path, None, typed.vault_id(), Access::ReadWrite, &config.store)?;
    let roster = store.roster()?.context("the store holds the roster")?;
    random(&mut seed)?;
    let (new, _) = Home::recover(
        &new_home,
        &typed,
        roster,
        NewDevice { name: "new-laptop", site: "home", device_seed: seed },
    )?;
    let stores = vec![store];
    let catalog = Catalog::new(new.keys()?, &stores);
    let latest = catalog.resolve("latest", None)?;
    let again = root.join("recovered");
    let r = restore::restore(
        &catalog,
        new.keys()?,
        &latest[0],
        None,
        &again,
        restore::Options::default(),
        &|_| {},
    )?;
    ensure!(r.failed.is_empty(), "{} files failed to restore after recovery", r.failed.len());
    let compared = compare(&pictures, &again.join("2026-11-wedding"))?;
    println!(
        "  recover:  a new device with only the phrase and the store restored all {compared} files, byte-identical"
    );
    println!("Done: the shoot is sealed, deduplicated, verified and restorable.");
    Ok(())
}

/// Compares two trees file by file (content, mtime, mode); returns the number of files.
fn compare(original: &Path, restored: &Path) -> Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut count = 0;
    for entry in fs::read_dir(original)? {
        let entry = entry?;
        let a = entry.path();
        let b = restored.join(entry.file_name());
        let (ma, mb) = (
            fs::symlink_metadata(&a)?,
            fs::symlink_metadata(&b)
                .with_context(|| format!("{} was not restored", b.display()))?,
        );
        if ma.is_dir() {
            count += compare(&a, &b)?;
            continue;
        }
        ensure!(fs::read(&a)? == fs::read(&b)?, "{} differs from the original", b.display());
        ensure!(
            ma.mtime() == mb.mtime() && ma.mtime_nsec() == mb.mtime_nsec(),
            "{} has another mtime",
            b.display()
        );
        ensure!(ma.mode() == mb.mode(), "{} has another mode", b.display());
        count += 1;
    }
    Ok(count)
}
