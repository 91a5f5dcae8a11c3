//! The commands about other devices: `agent`, `pair`, `join`, `devices`, `sync`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use serde::de::DeserializeOwned;
use serde::de::IgnoredAny;
use serde_json::{Value, json};
use triad_agent::control::{Client, ClientError, Line, Request, answer};
use triad_agent::daemon::{self, Options};
use triad_agent::home::Home;
use triad_agent::join::{self, Target};
use triad_agent::peers::Book;
use triad_net::Multiaddr;
use triad_net::pair::Secret;

use crate::cli::{
    AgentArgs, DevicesArgs, DevicesCommand, JoinArgs, PairArgs, RecoverArgs, SyncArgs,
};
use crate::{
    EXIT_ERROR, EXIT_OK, EXIT_PARTIAL, EXIT_REFUSED, EXIT_UNREACHABLE, output, run, settings,
};

/// The default listen port, UDP (QUIC) and TCP.
const DEFAULT_PORT: u16 = 41641;

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// glibc's allocator keeps up to eight arenas per core, each holding on to what the threads
/// that used it freed: a receiving agent's resident memory grows by tens of MiB over a large
/// push, too much for a Pi. Two arenas keep it within its budget at no measurable cost. The
/// setting is read once, when the process starts, so the agent starts itself again with it
/// (the same process id, as a service manager expects); it is left alone when it is set.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn with_few_malloc_arenas() -> Result<()> {
    use std::os::unix::process::CommandExt;
    const VAR: &str = "MALLOC_ARENA_MAX";
    if std::env::var_os(VAR).is_some() {
        return Ok(());
    }
    let exe = std::env::current_exe().context("cannot find the triad executable")?;
    let error =
        std::process::Command::new(exe).args(std::env::args_os().skip(1)).env(VAR, "2").exec();
    // Only returns if the exec failed: go on as this process.
    tracing::warn!(%error, "cannot start the agent with {VAR}=2; its memory may grow more");
    Ok(())
}

pub(crate) fn agent(home_path: &Path, a: AgentArgs) -> Result<u8> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    with_few_malloc_arenas()?;
    let mut config = settings::load(home_path)?;
    if !config.folders.is_empty()
        && let Ok(home) = triad_agent::home::Home::open(home_path)
        && triad_agent::storeless::ensure_catalog(&home, &mut config, output::now())
            .map_err(|e| anyhow!(e))?
    {
        settings::save(home_path, &config)?;
    }
    let listen: Vec<Multiaddr> = if a.listen.is_empty() {
        vec![
            format!("/ip4/0.0.0.0/udp/{DEFAULT_PORT}/quic-v1").parse()?,
            format!("/ip4/0.0.0.0/tcp/{DEFAULT_PORT}").parse()?,
        ]
    } else {
        a.listen
            .iter()
            .map(|s| s.parse().with_context(|| format!("{s:?} is not a multiaddress")))
            .collect::<Result<_>>()?
    };
    let json = a.json;
    let rt = runtime()?;
    let stopped = rt.block_on(daemon::run(
        home_path,
        config,
        Options { listen, mdns: !a.no_mdns, relay: !a.no_relay, upnp: !a.no_upnp },
        |ready| {
            let addrs: Vec<String> = ready.addrs.iter().map(ToString::to_string).collect();
            if json {
                let _ = output::json_line(
                    &json!({"event": "listening", "peer": ready.peer.to_string(), "addrs": addrs}),
                );
            } else {
                println!("Agent running as {}. Listening on:", ready.peer);
                for addr in &addrs {
                    println!("  {addr}");
                }
            }
        },
    ));
    // Work still under way (a backup between two puts) is abandoned: what it committed is
    // durable, and the rest is done again at the next start.
    rt.shutdown_timeout(std::time::Duration::from_secs(2));
    stopped?;
    Ok(EXIT_OK)
}

fn connect(home_path: &Path) -> Result<Client> {
    Client::connect(home_path).map_err(|e| match e {
        ClientError::NotRunning { .. } => anyhow!("{e}"),
        other => anyhow!(other),
    })
}

/// Reads answers until `done` or `error`; hands events to `on_event`.
fn finish<E: DeserializeOwned, A: DeserializeOwned>(
    client: &mut Client,
    mut on_event: impl FnMut(&E),
) -> Result<Result<A, answer::Failure>> {
    loop {
        match client.line::<E, A>()? {
            Line::Event(event) => on_event(&event),
            Line::Done(answer) => return Ok(Ok(answer)),
            Line::Failed(failure) => return Ok(Err(failure)),
        }
    }
}

pub(crate) fn pair(home_path: &Path, a: PairArgs) -> Result<u8> {
    Home::open(home_path)?;
    let mut client = connect(home_path)?;
    let seconds = a.seconds.unwrap_or(a.minutes.saturating_mul(60));
    client.send(&Request::Pair { storage_only: a.storage_only, seconds, yes: a.yes })?;
    let window = match client.answer::<answer::PairWindow>()? {
        Ok(window) => window,
        Err(failure) => bail!("{}", failure.error),
    };
    let (code, link) = (window.code, window.link);
    if let Some(path) = &a.png {
        write_qr_png(&link, path)?;
    }
    if a.json {
        output::json_line(&json!({"code": code, "link": link}))?;
    } else {
        let role = window.role.as_str();
        println!("{}", qr_terminal(&link)?);
        println!("Scan the code, or on the new device run:");
        println!("  triad join '{link}' --name NAME --site SITE");
        println!("or type the short code on the same network:");
        println!("  triad join {code} --name NAME --site SITE");
        // The agent says how many whole seconds are left, a moment after it opened the window.
        let left = window.expires_in_secs.div_ceil(30) * 30;
        println!(
            "The new device will be {role}. Valid for {}, for one device, one try.",
            triad_agent::status::span(left)
        );
    }
    let mut decisions = Vec::new();
    let outcome = loop {
        match client.line::<answer::PairEvent, answer::Paired>()? {
            Line::Event(answer::PairEvent::Confirm { name, site }) => {
                let accept =
                    ask(&format!("{name} ({site}) wants to join this vault. Accept? [y/N] "))?;
                decisions.push(accept);
                client.send(&Request::PairDecision { accept })?;
            }
            Line::Done(paired) => break Ok(paired),
            Line::Failed(failure) => break Err(failure),
        }
    };
    let paired = match outcome {
        Ok(paired) => paired,
        Err(failure) => {
            if a.json {
                output::json_line(&json!({"error": failure.error}))?;
            }
            bail!("pairing failed: {}", failure.error);
        }
    };
    if a.json {
        output::json_line(&serde_json::to_value(answer::Done::new(&paired))?)?;
    } else {
        println!("Paired {} ({}) as {}.", paired.name, paired.site, paired.role.as_str());
    }
    Ok(EXIT_OK)
}

/// Asks a yes/no question on the terminal; without one, the answer is no.
fn ask(question: &str) -> Result<bool> {
    if !std::io::stdin().is_terminal() {
        eprintln!("{question}(no terminal to ask; pass --yes to accept)");
        return Ok(false);
    }
    eprint!("{question}");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(matches!(line.trim().to_lowercase().as_str(), "y" | "yes"))
}

/// The QR code for the terminal: the link in its compact form, with as many of the inviter's
/// addresses as keep the code within [`QR_MODULES_MAX`], drawn two rows of modules per line
/// with a quiet zone of [`QR_QUIET`] modules, light on dark, so that it fits 80×24.
fn qr_terminal(link: &str) -> Result<String> {
    let (secret, inviter, addrs) = Secret::parse_link(link)?;
    let mut code = None;
    for addrs_max in (0..=3).rev() {
        let text = secret.qr_text(inviter, &addrs, addrs_max);
        let candidate = qrcode::QrCode::with_error_correction_level(&text, qrcode::EcLevel::L)
            .context("cannot make a QR code")?;
        let fits = candidate.width() <= QR_MODULES_MAX;
        code = Some(candidate);
        if fits {
            break;
        }
    }
    let code = code.expect("the loop runs at least once");
    Ok(draw_half_blocks(code.width(), &code.to_colors()))
}

/// The most modules a side of the terminal QR code has: version 5, which with the quiet zone
/// takes 21 lines of an 80×24 terminal.
const QR_MODULES_MAX: usize = 37;
/// The quiet zone around the terminal QR code, in modules (scanners read 2 on a screen).
const QR_QUIET: usize = 2;

/// Draws a square of modules with `▀▄█` characters, two rows a line. The terminal's
/// background is usually dark, so a dark module is drawn as background and a light one as a
/// block.
fn draw_half_blocks(modules: usize, colors: &[qrcode::Color]) -> String {
    let side = modules + 2 * QR_QUIET;
    let light = |x: usize, y: usize| {
        let inside = |v: usize| (QR_QUIET..QR_QUIET + modules).contains(&v);
        !(inside(x) && inside(y))
            || colors[(y - QR_QUIET) * modules + (x - QR_QUIET)] == qrcode::Color::Light
    };
    let mut out = String::new();
    for y in (0..side).step_by(2) {
        for x in 0..side {
            let top = light(x, y);
            let bottom = y + 1 < side && light(x, y + 1);
            out.push(match (top, bottom) {
                (true, true) => '█',
                (true, false) => '▀',
                (false, true) => '▄',
                (false, false) => ' ',
            });
        }
        out.push('\n');
    }
    out.pop();
    out
}

fn write_qr_png(link: &str, path: &Path) -> Result<()> {
    let code = qrcode::QrCode::new(link.as_bytes()).context("cannot make a QR code")?;
    let modules = code.width();
    let (scale, quiet) = (8usize, 4usize);
    let side = (modules + 2 * quiet) * scale;
    let colors = code.to_colors();
    let mut pixels = vec![255u8; side * side];
    for y in 0..modules {
        for x in 0..modules {
            if colors[y * modules + x] == qrcode::Color::Dark {
                for dy in 0..scale {
                    let row = (y + quiet) * scale + dy;
                    let start = row * side + (x + quiet) * scale;
                    pixels[start..start + scale].fill(0);
                }
            }
        }
    }
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let side = u32::try_from(side).expect("a QR code is small");
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), side, side);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().context("cannot write the PNG")?;
    writer.write_image_data(&pixels).context("cannot write the PNG")?;
    Ok(())
}

pub(crate) fn join(home_path: &Path, a: JoinArgs) -> Result<u8> {
    let target = if a.code.trim().starts_with("triad://") || triad_net::pair::is_qr_text(&a.code) {
        let (secret, inviter, addrs) = Secret::parse_link(&a.code)?;
        Target::Link { secret, inviter, addrs }
    } else {
        let secret = Secret::parse_code(&a.code)?;
        let peer = match &a.peer {
            Some(p) => Some(p.parse().with_context(|| format!("{p:?} is not a multiaddress"))?),
            None => None,
        };
        Target::Code { secret, peer }
    };
    let mut seed = [0u8; 32];
    run::random(&mut seed)?;
    let yes = a.yes;
    let joined = runtime()?.block_on(join::join(
        home_path,
        target,
        &a.name,
        &a.site,
        seed,
        a.wait,
        |offer| {
            let role = match offer.role {
                triad_proto::wire::PairRole::Trusted => "a trusted device",
                triad_proto::wire::PairRole::StorageOnly => "a storage-only device",
            };
            let question =
                format!("Join the vault of {} ({}) as {role}? [y/N] ", offer.name, offer.site);
            yes || ask(&question).unwrap_or(false)
        },
    ))?;
    let role = match joined.offer.role {
        triad_proto::wire::PairRole::Trusted => "trusted",
        triad_proto::wire::PairRole::StorageOnly => "storage-only",
    };
    if a.json {
        output::json_line(&json!({
            "vault": joined.home.vault().to_hex(),
            "device": joined.home.device_id().to_hex(),
            "inviter": {"name": joined.offer.name, "site": joined.offer.site},
            "role": role,
        }))?;
    } else {
        println!(
            "Joined the vault of {} ({}) as {} ({role}).",
            joined.offer.name,
            joined.offer.site,
            joined.home.identity().name
        );
        println!("Add a store with `triad store add PATH --media MEDIA`, then run `triad agent`.");
    }
    Ok(EXIT_OK)
}

pub(crate) fn devices(home_path: &Path, a: DevicesArgs) -> Result<u8> {
    let home = Home::open(home_path)?;
    if let Some(DevicesCommand::Remove { name }) = &a.command {
        let mut client = connect(home_path)?;
        client.send(&Request::RemoveDevice { device: name.clone() })?;
        let removed = match finish::<IgnoredAny, answer::Removed>(&mut client, |_| {})? {
            Ok(removed) => removed,
            Err(failure) => bail!("{}", failure.error),
        };
        if a.json {
            output::json_line(&serde_json::to_value(&removed)?)?;
        } else {
            let told = &removed.told;
            println!(
                "Removed {name}. Told now: {}.",
                if told.is_empty() { "no device".to_owned() } else { told.join(", ") }
            );
        }
        return Ok(EXIT_OK);
    }
    if let Some(DevicesCommand::Addr { name, addr }) = a.command {
        let parsed: Multiaddr =
            addr.parse().with_context(|| format!("{addr:?} is not a multiaddress"))?;
        return match Client::connect(home_path) {
            Ok(mut client) => {
                client.send(&Request::AddAddress {
                    device: name.clone(),
                    addr: parsed.to_string(),
                })?;
                let added = finish::<IgnoredAny, answer::AddressAdded>(&mut client, |_| {})?;
                if let Err(failure) = added {
                    bail!("{}", failure.error);
                }
                if a.json {
                    output::json_line(&addr_json(&name, &parsed, true))?;
                } else {
                    println!("{name} is at {parsed} from now on; the agent dials it there.");
                }
                Ok(EXIT_OK)
            }
            Err(ClientError::NotRunning { .. }) => {
                let roster = home.roster()?;
                let entry = roster
                    .devices()
                    .into_iter()
                    .find(|e| e.name == name)
                    .cloned()
                    .ok_or_else(|| anyhow!("no device named {name:?} in this vault"))?;
                let mut book = Book::load(home_path);
                book.add(entry.device, &parsed.to_string());
                book.save(home_path)?;
                if a.json {
                    output::json_line(&addr_json(&name, &parsed, false))?;
                } else {
                    println!(
                        "{name} is at {parsed} from now on; the agent dials it there when it starts."
                    );
                }
                Ok(EXIT_OK)
            }
            Err(e) => Err(e.into()),
        };
    }
    let (devices, running) = match Client::connect(home_path) {
        Ok(mut client) => {
            client.send(&Request::Devices)?;
            match finish::<IgnoredAny, answer::Devices>(&mut client, |_| {})? {
                Ok(answer) => (answer.devices, true),
                Err(failure) => bail!("{}", failure.error),
            }
        }
        Err(ClientError::NotRunning { .. }) => {
            let book = Book::load(home_path);
            let me = home.device_id();
            let list = home
                .roster()?
                .devices()
                .into_iter()
                .map(|e| {
                    let known = book.get(e.device);
                    answer::Device {
                        name: e.name.clone(),
                        site: e.site.clone(),
                        role: e.role.into(),
                        device: e.device.to_hex(),
                        this: e.device == me,
                        online: None,
                        last_seen: known.and_then(|p| p.last_seen),
                        address: known.and_then(|p| p.addrs.first().cloned()),
                        stores: Vec::new(),
                        path: None,
                        relay: None,
                        rtt_ms: None,
                        sent_bytes: 0,
                        received_bytes: 0,
                        send_rate: None,
                        receive_rate: None,
                        last_error: None,
                        last_error_at: None,
                    }
                })
                .collect();
            (list, false)
        }
        Err(e) => return Err(e.into()),
    };
    if a.json {
        let mut out = json!({"agent_running": running, "devices": serde_json::to_value(&devices)?});
        for device in output::rows_mut(&mut out, "devices") {
            output::set_time(device, "last_seen");
            output::set_time(device, "last_error_at");
            for store in output::rows_mut(device, "stores") {
                // The agent says u64::MAX when it cannot tell (no quota, no file system answer).
                if store["free"] == u64::MAX {
                    store["free"] = Value::Null;
                }
            }
        }
        output::json_line(&out)?;
        return Ok(EXIT_OK);
    }
    if !running {
        println!("(the agent is not running: online state unknown; start it with `triad agent`)");
    }
    for d in &devices {
        let this = if d.this { " (this device)" } else { "" };
        let state = match d.online {
            Some(true) => "online".to_owned(),
            Some(false) => match d.last_seen {
                Some(t) => format!(
                    "offline, last seen {}",
                    output::time(triad_core::Timestamp { secs: t.cast_signed(), nanos: 0 })
                ),
                None => "offline, never seen".to_owned(),
            },
            None => "unknown".to_owned(),
        };
        println!("{}{this}: {}, site {}, {state}", d.name, d.role.as_str(), d.site);
        if let Some(addr) = &d.address {
            println!("  address {addr}");
        }
        if let Some(path) = &d.path {
            let how = match (path.as_str(), &d.relay) {
                ("lan", _) => "on this network".to_owned(),
                ("relayed", Some(relay)) => format!("relayed through {relay}"),
                ("relayed", None) => "through a relay".to_owned(),
                _ => "direct, across the internet".to_owned(),
            };
            let rtt = d.rtt_ms.map(|ms| format!(", round trip {ms} ms")).unwrap_or_default();
            println!("  path: {how}{rtt}");
        }
        if d.sent_bytes > 0 || d.received_bytes > 0 {
            let rate = |r: Option<u64>| {
                r.map(|r| format!(" (last at {}/s)", output::size(r))).unwrap_or_default()
            };
            println!(
                "  sent {}{}, received {}{}",
                output::size(d.sent_bytes),
                rate(d.send_rate),
                output::size(d.received_bytes),
                rate(d.receive_rate)
            );
        }
        if let (Some(error), Some(at)) = (&d.last_error, d.last_error_at) {
            let at = output::time(triad_core::Timestamp { secs: at.cast_signed(), nanos: 0 });
            println!("  last error ({at}): {error}");
        }
        for s in &d.stores {
            let free = match s.free {
                u64::MAX => String::new(),
                bytes => format!(", {} free", output::size(bytes)),
            };
            println!("  store {} on {}{free}", s.id, s.media);
        }
    }
    Ok(EXIT_OK)
}

/// What `devices addr --json` prints: the address remembered, and whether the running agent
/// dials it now (or, not running, when it starts).
fn addr_json(name: &str, addr: &Multiaddr, agent_running: bool) -> Value {
    json!({"device": name, "address": addr.to_string(), "agent_running": agent_running})
}

pub(crate) fn sync(home_path: &Path, a: SyncArgs) -> Result<u8> {
    Home::open(home_path)?;
    let mut client = connect(home_path)?;
    client.send(&Request::Sync { device: a.device.clone(), timeout_secs: a.timeout.as_secs() })?;
    let started = std::time::Instant::now();
    let outcome = finish::<answer::SyncEvent, answer::Synced>(&mut client, |event| {
        if a.json {
            if let Ok(line) = serde_json::to_value(event) {
                let _ = output::json_line(&line);
            }
            return;
        }
        let answer::SyncEvent::Progress { blobs: done, bytes, of } = *event;
        // The time left, from the pace so far.
        let left = (done > 0 && of > done).then(|| {
            let secs = started.elapsed().as_secs_f64() * (of - done) as f64 / done as f64;
            format!(", about {} left", triad_agent::status::span(secs.ceil() as u64))
        });
        eprintln!(
            "  {done} of {of} blobs acknowledged, {} sent{}",
            output::size(bytes),
            left.unwrap_or_default()
        );
    })?;
    let synced = match outcome {
        Ok(synced) => synced,
        Err(failure) => {
            if a.json {
                output::json_line(&serde_json::to_value(&failure)?)?;
            }
            eprintln!("error: {}", failure.error);
            return Ok(match failure.kind {
                Some(answer::FailureKind::Unreachable) => EXIT_UNREACHABLE,
                Some(answer::FailureKind::Refused) => EXIT_REFUSED,
                Some(answer::FailureKind::Error) | None => EXIT_ERROR,
            });
        }
    };
    if a.json {
        output::json_line(&serde_json::to_value(answer::Done::new(&synced))?)?;
    }
    let not_sent = synced.versions_not_sent;
    if !a.json {
        let sent = format!(
            "{} blobs sent ({}), {} were already there",
            synced.blobs_sent,
            output::size(synced.bytes_sent),
            synced.blobs_already_there
        );
        let lacking = synced.versions_lacking;
        if not_sent == 0 && lacking == 0 {
            println!("{} has everything: {sent}.", a.device);
        } else if not_sent == 0 {
            println!(
                "{} has everything this device can send: {sent}. It lacks {lacking} earlier file \
                 versions whose files changed before any device held them (`triad status`).",
                a.device
            );
        } else {
            let versions = if not_sent == 1 {
                "1 file version could not be sent: its file".to_owned()
            } else {
                format!("{not_sent} file versions could not be sent: their files")
            };
            println!(
                "{} has everything this device could send: {sent}. {versions} changed before any \
                 other device held it (`triad status` reports what is LOST).",
                a.device
            );
        }
    }
    Ok(if not_sent == 0 { EXIT_OK } else { EXIT_PARTIAL })
}

/// `triad recover --peer`: a new device with only the phrase copies the vault from one
/// surviving device into a new store.
pub(crate) fn recover_from_peer(
    home_path: &Path,
    a: &RecoverArgs,
    peer: &str,
    store_path: &Path,
    phrase: &triad_core::keys::Phrase,
    device_seed: [u8; 32],
) -> Result<u8> {
    let addr: Multiaddr =
        peer.parse().with_context(|| format!("{peer:?} is not a multiaddress"))?;
    let media = a.media.unwrap_or(triad_core::Media::Ssd);
    let store_id = triad_core::StoreId::from_bytes(run::random_array()?);
    let request = triad_agent::fetch::FromPeer {
        home: home_path,
        phrase,
        peer: addr,
        name: &a.name,
        site: &a.site,
        device_seed,
        store: (store_path, store_id, media),
        now: output::now(),
    };
    let bar = output::bar(0, "copying");
    let recovered = runtime()?
        .block_on(triad_agent::fetch::from_peer(request, &mut |blobs, _| bar.set_position(blobs)))
        .map_err(|e| anyhow!("{e}"))?;
    bar.finish_and_clear();
    settings::save(home_path, &recovered.config)?;
    println!(
        "Recovered vault {} as device {:?} at site {:?}: copied {} blobs ({}) and {} heads from {peer} into {}.",
        phrase.vault_id().short(),
        a.name,
        a.site,
        recovered.blobs,
        output::size(recovered.bytes),
        recovered.heads,
        store_path.display()
    );
    if !recovered.unreadable.is_empty() {
        println!(
            "WARNING: {} blobs could not be read on {peer}; the files that need them cannot be restored from it. `triad verify` names them.",
            recovered.unreadable.len()
        );
    }
    if !recovered.incomplete.is_empty() {
        println!(
            "WARNING: {} (in the latest or earlier snapshots) cannot be restored from {peer}: part of their data is not there:",
            output::count(recovered.incomplete.len() as u64, "file")
        );
        for (folder, path) in recovered.incomplete.iter().take(20) {
            println!("  {folder}/{path}");
        }
        if recovered.incomplete.len() > 20 {
            println!("  ... `triad verify` names them all.");
        }
    }
    println!("Restore everything with `triad restore latest --to DIR`.");
    let whole = recovered.unreadable.is_empty() && recovered.incomplete.is_empty();
    Ok(if whole { EXIT_OK } else { crate::EXIT_DAMAGE })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_terminal_qr_code_fits_80_by_24_and_carries_the_invitation() {
        let secret = Secret::strong([0x5c; 16], 1077);
        let inviter = triad_net::PeerId::random();
        let addrs: Vec<Multiaddr> = [
            "/ip4/127.0.0.1/udp/41641/quic-v1",
            "/ip4/192.168.1.20/udp/41641/quic-v1",
            "/ip6/2001:db8:4006:812::200e/udp/41641/quic-v1",
            "/ip4/127.0.0.1/tcp/41641",
            "/ip4/192.168.1.20/tcp/41641",
            "/ip6/2001:db8:4006:812::200e/tcp/41641",
        ]
        .iter()
        .map(|a| a.parse().expect("addr"))
        .collect();
        let link = secret.link(inviter, &addrs);
        let drawn = qr_terminal(&link).expect("a code");
        let lines: Vec<&str> = drawn.lines().collect();
        assert!(lines.len() <= 21, "{} lines", lines.len());
        assert!(lines.iter().all(|l| l.chars().count() <= 80));
        // What it encodes is the same invitation, with some of the addresses.
        let text = secret.qr_text(inviter, &addrs, 3);
        let (back, peer, some) = Secret::parse_link(&text).expect("parses");
        assert_eq!((back, peer), (secret, inviter));
        assert!(!some.is_empty() && some.iter().all(|a| addrs.contains(a)));
    }
}
