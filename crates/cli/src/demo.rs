//! `triad demo`: three devices on this machine, end to end, with a few lines per step. Each
//! device is its own home and store in a temporary folder, and its agent a real `triad agent`
//! process on loopback QUIC: a laptop (its folder on the internal SSD, at home, and no store:
//! it keeps its catalog in its home and sends from the folder), the studio NAS (RAID, at the studio) and the parents' Raspberry Pi (a USB disk,
//! at the parents', storage-only). They pair; a shoot lands on the laptop and the agents make
//! it PROTECTED by themselves; bit rot on the Pi is caught by an audit and repaired; then the
//! laptop and the NAS are lost and a fresh device gets everything back from the recovery
//! phrase and the Pi alone, every byte checked.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use serde_json::Value;

use crate::cli::DemoArgs;
use crate::{EXIT_OK, output, settings};

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

/// A `triad` process for one device.
fn triad(home: &Path, args: &[&str]) -> Result<std::process::Output> {
    let exe = std::env::current_exe().context("cannot find the triad binary")?;
    Command::new(exe)
        .args(args)
        .env("TRIAD_HOME", home)
        .env_remove("TRIAD_LOG")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run triad {}", args.join(" ")))
}

/// Runs `triad ARGS` for `home` and insists on success; returns its standard output.
fn ok(home: &Path, args: &[&str]) -> Result<String> {
    let out = triad(home, args)?;
    if !out.status.success() {
        bail!(
            "triad {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn last_json(text: &str) -> Result<Value> {
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .ok_or_else(|| anyhow!("no JSON in {text:?}"))?;
    Ok(serde_json::from_str(line)?)
}

/// A running agent; stopped (killed) when dropped.
struct Agent {
    child: Child,
    addr: String,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_agent(home: &Path) -> Result<Agent> {
    let exe = std::env::current_exe().context("cannot find the triad binary")?;
    let log = fs::File::create(home.with_extension("agent.log"))?;
    let mut child = Command::new(exe)
        .args(["agent", "--listen", "/ip4/127.0.0.1/udp/0/quic-v1", "--no-mdns", "--json"])
        .env("TRIAD_HOME", home)
        .env("TRIAD_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .context("cannot start an agent")?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
    let ready: Value = serde_json::from_str(&line).context("the agent did not start")?;
    let addr = ready["addrs"][0].as_str().ok_or_else(|| anyhow!("the agent has no address"))?;
    Ok(Agent { child, addr: addr.to_owned() })
}

/// Pairs a new device into the vault of `inviter` (whose agent runs), gives it a store, starts
/// its agent, and tells the inviter where it is.
fn pair(
    inviter: &Path,
    home: &Path,
    name: &str,
    site: &str,
    store: (&Path, &str),
    storage_only: bool,
) -> Result<Agent> {
    let exe = std::env::current_exe().context("cannot find the triad binary")?;
    let mut args = vec!["pair", "--json", "--yes"];
    if storage_only {
        args.push("--storage-only");
    }
    let mut pairing = Command::new(exe)
        .args(&args)
        .env("TRIAD_HOME", inviter)
        .env_remove("TRIAD_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(pairing.stdout.take().expect("piped")).read_line(&mut line)?;
    let first: Value = serde_json::from_str(&line).context("pairing did not start")?;
    let link = first["link"].as_str().ok_or_else(|| anyhow!("no pairing link"))?;
    ok(home, &["join", link, "--name", name, "--site", site, "--yes"])?;
    ensure!(pairing.wait()?.success(), "the pairing did not complete");
    ok(home, &["store", "add", &store.0.to_string_lossy(), "--media", store.1])?;
    manual(home)?;
    let agent = start_agent(home)?;
    ok(inviter, &["devices", "addr", name, agent.addr.split("/p2p/").next().unwrap_or_default()])?;
    Ok(agent)
}

/// The NAS and the Pi only receive; only the laptop's agent works on its own.
fn manual(home: &Path) -> Result<()> {
    let mut config = settings::load(home)?;
    config.protect.auto = false;
    settings::save(home, &config)
}

fn status(home: &Path) -> Result<Value> {
    let out = triad(home, &["status", "--json"])?;
    serde_json::from_slice(&out.stdout).context("status did not answer")
}

fn counts(answer: &Value) -> String {
    let counts = &answer["folders"][0]["counts"];
    let mut parts = Vec::new();
    for state in ["PROTECTED", "PENDING-OFFSITE", "DEGRADED", "AT-RISK", "LOST"] {
        if let Some(n) = counts[state].as_u64().filter(|n| *n > 0) {
            parts.push(format!("{n} {state}"));
        }
    }
    if answer["folders"][0]["snapshot"].is_null() {
        "not backed up yet".to_owned()
    } else if parts.is_empty() {
        "no files yet".to_owned()
    } else {
        parts.join(", ")
    }
}

/// Asks `status` until every one of `files` files is PROTECTED; prints each change.
fn until_protected(home: &Path, files: u64, since: Instant) -> Result<()> {
    let mut last = String::new();
    let deadline = since + Duration::from_secs(180);
    loop {
        let answer = status(home)?;
        let now = counts(&answer);
        if now != last {
            println!("     {:>5.1} s  {now}", since.elapsed().as_secs_f64());
            last = now;
        }
        let protected = answer["folders"][0]["counts"]["PROTECTED"].as_u64() == Some(files);
        if answer["worst"] == "PROTECTED" && protected {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "not protected after three minutes: {answer}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs the demo; prints a few lines per step.
pub(crate) fn run(args: DemoArgs) -> Result<u8> {
    let tmp = tempfile::Builder::new()
        .prefix("triad-demo-")
        .tempdir()
        .context("while creating a temporary folder")?;
    let root = tmp.path().to_path_buf();
    println!("triad demo: three devices on this machine, in {}", root.display());
    let started = Instant::now();
    let result = steps(&root, args.scale);
    if args.keep {
        let kept = tmp.keep();
        println!("Kept the demo's files in {}", kept.display());
    }
    result?;
    println!("Done in {:.0} s.", started.elapsed().as_secs_f64());
    Ok(EXIT_OK)
}

fn steps(root: &Path, scale: u32) -> Result<()> {
    let (laptop, nas, pi, fresh) =
        (root.join("laptop"), root.join("nas"), root.join("pi"), root.join("new-laptop"));
    let pictures = root.join("Pictures").join("2026-11-wedding");
    fs::create_dir_all(&pictures)?;

    // 1. The vault and its three devices.
    let t = Instant::now();
    let init = last_json(&ok(&laptop, &["init", "--name", "laptop", "--site", "home", "--json"])?)?;
    let phrase = init["phrase"].as_str().ok_or_else(|| anyhow!("no phrase"))?.to_owned();
    ok(&laptop, &["folder", "add", &pictures.to_string_lossy(), "--media", "ssd"])?;
    // Two copies away from home: the studio and the parents' house.
    ok(&laptop, &["policy", "set", "copies=3", "media=2", "offsite=2"])?;
    let mut config = settings::load(&laptop)?;
    config.protect.settle_ms = 500;
    config.protect.retry_secs = 1;
    settings::save(&laptop, &config)?;
    let laptop_agent = start_agent(&laptop)?;
    let nas_agent = pair(&laptop, &nas, "nas", "studio", (&root.join("raid"), "raid"), false)?;
    let pi_agent = pair(&laptop, &pi, "pi", "parents", (&root.join("usb-hdd"), "usb-hdd"), true)?;
    println!(
        "1. A vault on the laptop (folder on its SSD, at home; no store: it sends from the folder);"
    );
    println!(
        "   the NAS (RAID, studio) and the Pi (USB disk, parents, storage-only) join. [{:.1} s]",
        t.elapsed().as_secs_f64()
    );
    println!("   Policy: 3 copies, 2 kinds of media, 2 of them away from home.");

    // 2. A shoot lands; nobody types a command.
    let files = shoot(scale);
    let t = Instant::now();
    let total = write_shoot(&pictures, &files)?;
    println!(
        "2. A shoot lands on the laptop: {} files, {}. Nobody types a command:",
        files.len(),
        output::size(total)
    );
    until_protected(&laptop, files.len() as u64, t)?;
    let answer = status(&laptop)?;
    println!(
        "   PROTECTED: the file on the laptop, the NAS and the Pi; survives losing any one site: {}.",
        if answer["survives_site_loss"] == true { "yes" } else { "no" }
    );

    // 3. Bit rot on the Pi.
    let mut flipped = 0;
    for entry in fs::read_dir(root.join("usb-hdd").join("packs"))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "pack") {
            let mut bytes = fs::read(&path)?;
            for at in (4096..bytes.len()).step_by(64 << 10) {
                bytes[at] ^= 0x5a;
                flipped += 1;
            }
            fs::write(&path, bytes)?;
        }
    }
    let t = Instant::now();
    let out = triad(&laptop, &["audit", "--now", "--json"])?;
    let audit = last_json(&String::from_utf8_lossy(&out.stdout))?;
    let pi_row = audit["devices"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|d| d["device"] == "pi")
        .cloned()
        .unwrap_or_default();
    ensure!(pi_row["audit"]["result"] == "failed", "the audit missed the damage: {audit}");
    println!(
        "3. Bit rot on the Pi's disk ({flipped} bytes flipped). An audit asks it for verified slices:"
    );
    println!(
        "   {}: its copies no longer count.",
        pi_row["audit"]["reason"].as_str().unwrap_or("failed")
    );
    until_protected(&laptop, files.len() as u64, t)?;
    let again = last_json(&ok(&laptop, &["audit", "--now", "--json"])?)?;
    let passed =
        again["devices"].as_array().into_iter().flatten().all(|d| d["audit"]["result"] == "passed");
    ensure!(passed, "the audit after the repair failed: {again}");
    println!(
        "   Repaired from the laptop's own files; audited again, every device passes. [{:.1} s]",
        t.elapsed().as_secs_f64()
    );

    // 4. The laptop and the NAS are lost.
    drop(laptop_agent);
    drop(nas_agent);
    for gone in [&laptop, &nas, &root.join("raid")] {
        fs::remove_dir_all(gone)?;
    }
    let t = Instant::now();
    let exe = std::env::current_exe()?;
    let mut recover = Command::new(exe)
        .args([
            "recover",
            "--peer",
            &pi_agent.addr,
            "--store",
            &root.join("new-ssd").to_string_lossy(),
            "--media",
            "ssd",
            "--name",
            "laptop",
            "--site",
            "home",
        ])
        .env("TRIAD_HOME", &fresh)
        .env_remove("TRIAD_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    recover.stdin.take().expect("piped").write_all(phrase.as_bytes())?;
    let out = recover.wait_with_output()?;
    ensure!(out.status.success(), "recovery failed: {}", String::from_utf8_lossy(&out.stderr));
    let restored = root.join("restored");
    ok(&fresh, &["restore", "latest", "--to", &restored.to_string_lossy(), "--take-over"])?;
    let mut checked = 0u64;
    for f in &files {
        let original = fs::read(pictures.join(&f.rel))?;
        let back = fs::read(restored.join("2026-11-wedding").join(&f.rel))
            .with_context(|| format!("{} was not restored", f.rel.display()))?;
        ensure!(original == back, "{} differs after recovery", f.rel.display());
        checked += back.len() as u64;
    }
    println!(
        "4. The laptop and the NAS are lost. A new laptop with the 24-word phrase and the Pi alone:"
    );
    println!(
        "   {} files, {} restored, every byte identical. [{:.1} s]",
        files.len(),
        output::size(checked),
        t.elapsed().as_secs_f64()
    );
    ensure!(!pi.join("vault.key").exists(), "the storage-only Pi holds a key");
    println!(
        "   The new laptop protects the restored folder from now on; the Pi never held a key:"
    );
    println!("   it stored ciphertext it cannot read.");
    drop(pi_agent);
    Ok(())
}
