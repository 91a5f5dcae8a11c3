//! The commands about protection: `status`, `check` and `policy`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, anyhow, bail};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use triad_agent::control::{Client, Request, answer};
use triad_agent::home::Home;
use triad_core::policy::{Policy, State};

use crate::cli::{AuditArgs, CheckArgs, PolicyCommand, StatusArgs};
use crate::{EXIT_OK, output, settings};

/// `status` and `check` exit with this when they cannot say (the agent is not running, or
/// another error).
const EXIT_UNKNOWN: u8 = 3;

/// Asks the agent and waits for its answer.
fn ask<A: DeserializeOwned>(home_path: &Path, request: &Request) -> Result<A> {
    Home::open(home_path)?;
    let mut client = Client::connect(home_path).map_err(|e| anyhow!("{e}"))?;
    client.send(request)?;
    match client.answer()? {
        Ok(answer) => Ok(answer),
        Err(failure) => bail!("{}", failure.error),
    }
}

/// Runs `f`; an error is printed and becomes exit code 3.
fn or_unknown(f: impl FnOnce() -> Result<u8>) -> Result<u8> {
    match f() {
        Ok(code) => Ok(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            Ok(EXIT_UNKNOWN)
        }
    }
}

fn exit_of(state: State) -> u8 {
    u8::try_from(state.exit_code()).unwrap_or(EXIT_UNKNOWN)
}

fn ago(secs: i64) -> String {
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let secs = now.saturating_sub(u64::try_from(secs).unwrap_or(0));
    format!("{} ago", triad_agent::status::span(secs))
}

pub(crate) fn status(home_path: &Path, a: StatusArgs) -> Result<u8> {
    or_unknown(|| {
        for name in &a.files {
            if State::parse(name).is_none() {
                bail!(
                    "{name:?} is not a state (PROTECTED, PENDING-OFFSITE, DEGRADED, AT-RISK, LOST)"
                );
            }
        }
        let status: answer::Status = ask(home_path, &Request::Status { files: a.files.clone() })?;
        if a.json {
            output::json_line(&status_json(&status)?)?;
            return Ok(exit_of(status.worst));
        }
        print_status(&status);
        Ok(exit_of(status.worst))
    })
}

fn print_status(status: &answer::Status) {
    println!("{} ({})", status.device, status.site);
    if status.folders.is_empty() {
        let answer::Holds { blobs, bytes, last_audited } = status.holds;
        let audited = last_audited
            .map(|at| {
                format!("; a device of the vault last checked them {}", ago(at.cast_signed()))
            })
            .unwrap_or_default();
        if blobs > 0 {
            println!(
                "This device protects no folder of its own; it keeps {} ({}) of the other \
                 devices' copies{audited}.",
                output::count(blobs, "blob"),
                output::size(bytes)
            );
        } else if status.storage_only {
            println!("This device keeps no copy yet: the other devices push theirs to it.");
        } else {
            println!(
                "This device protects no folder and keeps no copy yet: add a folder with \
                 `triad folder add PATH`, or a store with `triad store add PATH --media MEDIA`."
            );
        }
        print_vault(status);
        return;
    }
    for folder in &status.folders {
        let last = folder.snapshot.as_ref().map_or("never".to_owned(), |(_, at)| ago(*at));
        println!();
        println!("{}  (policy {}; last backup {last})", folder.folder, folder.policy);
        for state in State::ALL {
            let n = folder.counts.get(state.as_str()).copied().unwrap_or(0);
            let why: Vec<_> = folder.reasons.iter().filter(|r| r.0 == state.as_str()).collect();
            if n == 0 && why.is_empty() {
                continue;
            }
            println!("  {:<16} {n:>7} files", state.as_str());
            for (_, text, files) in why {
                if *files > 0 {
                    println!("  {:<16} {:>7}   {text} ({files})", "", "");
                } else {
                    println!("  {:<16} {:>7}   {text}", "", "");
                }
            }
        }
        let earlier: u64 = folder.history.values().sum();
        if earlier > 0 {
            let parts: Vec<String> = State::ALL
                .iter()
                .filter_map(|s| {
                    folder.history.get(s.as_str()).filter(|n| **n > 0).map(|n| format!("{n} {s}"))
                })
                .collect();
            println!(
                "  earlier versions (history, kept as they are): {earlier}: {}",
                parts.join(", ")
            );
        }
        for (path, state, reasons) in &folder.files {
            println!(
                "    {state:<16} {path}{}",
                if reasons.is_empty() {
                    String::new()
                } else {
                    format!("  ({})", reasons.join("; "))
                }
            );
        }
    }
    print_vault(status);
    println!();
    for refusing in &status.refusing {
        let what = match refusing.code.as_str() {
            "full" => "is full: it takes no more copies",
            "quota" => "is full for this vault (its quota): it takes no more copies",
            "removed" => "takes no copies from this device",
            "no_store" => "has no store: it takes no copies until one is added there",
            _ => "refuses copies",
        };
        println!(
            "{} {what} (since {}): {}.",
            refusing.device,
            ago(refusing.since.cast_signed()),
            refusing.reason
        );
    }
    let doing = &status.doing;
    let next = doing.next.map(|at| {
        let now =
            SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        format!("; next try in {}", triad_agent::status::span(at.saturating_sub(now)))
    });
    println!(
        "triad is {} (since {}){}.",
        doing.what,
        ago(doing.since.cast_signed()),
        next.unwrap_or_default()
    );
    println!(
        "Every file survives the loss of any one site: {}",
        if status.survives_site_loss { "yes" } else { "no" }
    );
}

/// The agent's answer to `status` as `--json` prints it (docs/JSON.md): times as RFC 3339,
/// and the rows the agent sends as tuples as objects with named fields.
fn status_json(status: &answer::Status) -> Result<Value> {
    let mut out = serde_json::to_value(status)?;
    if let Some(doing) = out.get_mut("doing") {
        output::set_time(doing, "since");
        output::set_time(doing, "next");
    }
    if let Some(holds) = out.get_mut("holds") {
        output::set_time(holds, "last_audited");
    }
    for refusing in output::rows_mut(&mut out, "refusing") {
        output::set_time(refusing, "since");
    }
    for folder in output::rows_mut(&mut out, "folders") {
        if let Some(snapshot) = folder.get_mut("snapshot")
            && let Some([id, at]) = snapshot.as_array().map(Vec::as_slice)
        {
            *snapshot = json!({"id": id, "time": output::json_time(at)});
        }
        name_reasons(folder);
        for file in output::rows_mut(folder, "files") {
            if let Some([path, state, reasons]) = file.as_array().map(Vec::as_slice) {
                *file = json!({"path": path, "state": state, "reasons": reasons});
            }
        }
    }
    for device in output::rows_mut(&mut out, "vault") {
        output::set_time(device, "evaluated");
        for folder in output::rows_mut(device, "folders") {
            output::set_time(folder, "last_backup");
            name_reasons(folder);
        }
    }
    Ok(out)
}

/// Each `[state, reason, files]` of a folder's `reasons` as an object.
fn name_reasons(folder: &mut Value) {
    for reason in output::rows_mut(folder, "reasons") {
        if let Some([state, text, files]) = reason.as_array().map(Vec::as_slice) {
            *reason = json!({"state": state, "reason": text, "files": files});
        }
    }
}

/// The other devices' folders, as their owners last judged them.
fn print_vault(status: &answer::Status) {
    if status.vault.is_empty() {
        return;
    }
    println!();
    println!("The other devices' folders, as each last judged them:");
    for device in &status.vault {
        let reach = if device.reachable { "reachable" } else { "not reachable now" };
        println!("{} ({}), {reach}, as of {}:", device.device, device.site, ago(device.evaluated));
        if device.folders.is_empty() {
            println!("  no folders");
        }
        for folder in &device.folders {
            let files: u64 = folder.counts.values().sum();
            let last = folder.last_backup.map_or("never".to_owned(), ago);
            println!(
                "  {}  {} ({}; last backup {last})",
                folder.folder,
                folder.worst,
                output::count(files, "file")
            );
            for (state, text, n) in &folder.reasons {
                if *n > 0 {
                    println!("    {state:<16} {text} ({n})");
                } else {
                    println!("    {state:<16} {text}");
                }
            }
        }
    }
}

/// Every regular file under `root`, sorted.
fn files_under(root: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let meta = std::fs::symlink_metadata(&dir)
            .with_context(|| format!("cannot read {}", dir.display()))?;
        if meta.is_file() {
            out.push(dir);
            continue;
        }
        if !meta.is_dir() {
            continue;
        }
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))?
        {
            let entry = entry.with_context(|| format!("cannot read {}", dir.display()))?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                dirs.push(entry.path());
            } else if kind.is_file() {
                out.push(entry.path());
            }
        }
    }
    out.sort();
    Ok(out)
}

fn hash_file(path: &Path) -> Result<String> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().to_hex().to_string())
}

pub(crate) fn check(home_path: &Path, a: CheckArgs) -> Result<u8> {
    or_unknown(|| {
        let root = std::fs::canonicalize(&a.path)
            .with_context(|| format!("cannot read {}", a.path.display()))?;
        let files = files_under(&root)?;
        let hashes: Vec<String> = files.iter().map(|f| hash_file(f)).collect::<Result<_>>()?;
        let checked: answer::Checked =
            ask(home_path, &Request::Check { hashes: hashes.clone(), card: Some(root.clone()) })?;
        let mut worst = State::Protected;
        let mut rows = Vec::new();
        for (file, answer) in files.iter().zip(&checked.files) {
            let state = answer.state;
            // Not in the vault at all: the card holds the only copy.
            worst = worst.max(state.unwrap_or(State::AtRisk));
            let rel = file.strip_prefix(&root).unwrap_or(file).display().to_string();
            rows.push((rel, state));
        }
        let safe = rows.iter().filter(|(_, s)| *s == Some(State::Protected)).count();
        if a.json {
            output::json_line(&json!({
                "path": root.display().to_string(),
                "files": rows.len(),
                "protected": safe,
                "safe_to_format": worst == State::Protected,
                "not_protected": rows.iter().filter(|(_, s)| *s != Some(State::Protected)).map(|(p, s)| json!({
                    "path": p,
                    "state": s.map_or("NOT-BACKED-UP", State::as_str),
                })).collect::<Vec<_>>(),
            }))?;
            return Ok(exit_of(worst));
        }
        for (rel, state) in &rows {
            if *state != Some(State::Protected) {
                println!("{:<16} {rel}", state.map_or("NOT-BACKED-UP", State::as_str));
            }
        }
        if worst == State::Protected {
            println!(
                "All {} on {} are PROTECTED in the vault: safe to format.",
                output::count(rows.len() as u64, "file"),
                root.display()
            );
        } else {
            println!(
                "{} of {} on {} are not PROTECTED yet: do not format it.",
                rows.len() - safe,
                output::count(rows.len() as u64, "file"),
                root.display()
            );
        }
        Ok(exit_of(worst))
    })
}

fn parse_duration(value: &str) -> Result<u64> {
    let d: Duration = humantime::parse_duration(value)
        .with_context(|| format!("{value:?} is not a duration (e.g. 7d, 12h, 30s)"))?;
    Ok(d.as_secs())
}

pub(crate) fn policy(home_path: &Path, c: PolicyCommand) -> Result<u8> {
    Home::open(home_path)?;
    let mut config = settings::load(home_path)?;
    match c {
        PolicyCommand::Show { json } => {
            let folders: Vec<Value> = config
                .folders
                .iter()
                .map(|f| {
                    json!({
                        "folder": f.path.display().to_string(),
                        "policy": config.policy_of(f).to_string(),
                        "own": f.policy.is_some(),
                    })
                })
                .collect();
            let p = &config.policy;
            if json {
                output::json_line(&json!({
                    "policy": p.policy().to_string(),
                    "copies": p.copies, "media": p.media, "offsite": p.offsite,
                    "audit_window_secs": p.audit_window_secs, "grace_secs": p.grace_secs,
                    "folders": folders,
                }))?;
            } else {
                println!("device: {}", p.policy());
                println!(
                    "  every copy proven at least every {}; a device unseen for {} no longer counts",
                    triad_agent::status::span(p.audit_window_secs),
                    triad_agent::status::span(p.grace_secs),
                );
                for (f, v) in config.folders.iter().zip(&folders) {
                    let own = if f.policy.is_some() { " (its own)" } else { "" };
                    println!("{}: {}{own}", f.path.display(), v["policy"].as_str().unwrap_or("?"));
                }
            }
            Ok(EXIT_OK)
        }
        PolicyCommand::Set { rules, folder } => {
            let index = match &folder {
                Some(name) => Some(
                    config
                        .folders
                        .iter()
                        .position(|f| config.folder(name).is_some_and(|g| g.id == f.id))
                        .ok_or_else(|| anyhow!("no folder {name:?} on this device"))?,
                ),
                None => None,
            };
            let mut policy: Policy =
                index.map_or(config.policy.policy(), |i| config.policy_of(&config.folders[i]));
            let mut windows = (config.policy.audit_window_secs, config.policy.grace_secs);
            for rule in &rules {
                let (key, value) =
                    rule.split_once('=').ok_or_else(|| anyhow!("{rule:?} is not KEY=VALUE"))?;
                let count = || -> Result<u8> {
                    value.parse().with_context(|| format!("{value:?} is not a small number"))
                };
                match (key, index) {
                    ("copies", _) => policy.copies = count()?,
                    ("media", _) => policy.media = count()?,
                    ("offsite", _) => policy.offsite = count()?,
                    ("audit-window", None) => windows.0 = parse_duration(value)?,
                    ("grace", None) => windows.1 = parse_duration(value)?,
                    ("audit-window" | "grace", Some(_)) => {
                        bail!("{key} is set for the whole device, not per folder")
                    }
                    _ => {
                        bail!("unknown rule {key:?} (copies, media, offsite, audit-window, grace)")
                    }
                }
            }
            if policy.copies == 0 || policy.media == 0 {
                bail!("a policy needs at least one copy on one kind of media");
            }
            if policy.media > policy.copies || policy.offsite > policy.copies {
                bail!("{policy} cannot hold: more media or offsite copies than copies");
            }
            if windows.1 < windows.0 {
                bail!("the grace period must be at least the audit window");
            }
            match index {
                Some(i) => config.folders[i].policy = Some(policy),
                None => {
                    config.policy.copies = policy.copies;
                    config.policy.media = policy.media;
                    config.policy.offsite = policy.offsite;
                    config.policy.audit_window_secs = windows.0;
                    config.policy.grace_secs = windows.1;
                }
            }
            settings::save(home_path, &config)?;
            let agent = settings::tell_agent(home_path)?;
            match index {
                Some(i) => println!("{}: {policy}", config.folders[i].path.display()),
                None => println!("device: {policy}"),
            }
            if agent.is_some() {
                println!("The running agent works by it from now on.");
            }
            Ok(EXIT_OK)
        }
    }
}

pub(crate) fn audit(home_path: &Path, a: AuditArgs) -> Result<u8> {
    let audits: answer::Audits = ask(home_path, &Request::Audit { now: a.now })?;
    let failed = audits
        .devices
        .iter()
        .any(|r| matches!(r.audit, Some(answer::AuditOutcome::Failed { .. })) || r.bad);
    if a.json {
        let mut out = serde_json::to_value(&audits)?;
        for row in output::rows_mut(&mut out, "devices") {
            output::set_time(row, "last_proven");
        }
        output::json_line(&out)?;
    } else if audits.devices.is_empty() {
        println!("No other device to audit.");
    } else {
        for r in &audits.devices {
            let proven = r.last_proven.map_or("never".to_owned(), ago);
            let outcome = match &r.audit {
                Some(answer::AuditOutcome::Passed { ranges, restored: Some(restored) }) => {
                    format!(
                        "audit passed ({ranges} ranges proven; {} read back whole and matched)",
                        restored.path
                    )
                }
                Some(answer::AuditOutcome::Passed { ranges, restored: None }) => {
                    format!("audit passed ({ranges} ranges proven)")
                }
                Some(answer::AuditOutcome::Failed { reason }) => format!(
                    "AUDIT FAILED: {reason}; its copies no longer count and are being repaired"
                ),
                Some(answer::AuditOutcome::Unreachable) => {
                    "not reachable now (offline is not lost)".to_owned()
                }
                Some(answer::AuditOutcome::Nothing) => "nothing to audit".to_owned(),
                None if r.bad => "its copies failed the last audit".to_owned(),
                None => String::new(),
            };
            println!("{:<12} ({}) last proven {proven}  {outcome}", r.device, r.site);
        }
    }
    Ok(if failed { crate::EXIT_DAMAGE } else { EXIT_OK })
}
