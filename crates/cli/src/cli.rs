//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args as ClapArgs, Parser, Subcommand};
use triad_core::Media;

/// Keeps every photo and video in three copies, on two kinds of media, one of them offsite.
#[derive(Debug, Parser)]
#[command(name = "triad", version, about, long_about = None, propagate_version = true)]
pub(crate) struct Args {
    /// The device's home: keys, settings and caches. Several devices can share a machine
    /// with different homes.
    #[arg(long, global = true, env = "TRIAD_HOME", value_name = "DIR")]
    pub(crate) home: Option<PathBuf>,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Create a new vault on this device and show its 24-word recovery phrase (once).
    Init(InitArgs),
    /// Manage the blob stores on this device.
    #[command(subcommand)]
    Store(StoreCommand),
    /// Manage the folders this device protects.
    #[command(subcommand)]
    Folder(FolderCommand),
    /// Back up every folder (or one) into every store.
    Backup(BackupArgs),
    /// List snapshots.
    Snapshots(SnapshotsArgs),
    /// List the files of a snapshot.
    Ls(LsArgs),
    /// Restore files from a snapshot, each checked against its recorded hash.
    Restore(RestoreArgs),
    /// Check that every snapshot can be restored; --read-data also re-hashes every blob.
    Verify(VerifyArgs),
    /// Regain a vault on a new device from the recovery phrase and a store.
    Recover(RecoverArgs),
    /// Show the effective settings.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Run the agent in the foreground: talk to the vault's other devices, serve pairing and
    /// pushes. Logs go to standard error (TRIAD_LOG=debug for more).
    Agent(AgentArgs),
    /// Invite a new device: shows a QR code, a link and a short code, valid for a few minutes.
    Pair(PairArgs),
    /// Join a vault with a code or link from `triad pair` on a device of the vault.
    Join(JoinArgs),
    /// List the vault's devices, or manage them.
    Devices(DevicesArgs),
    /// Push everything a device lacks of this device's snapshots, and wait until it has
    /// acknowledged every blob as durable.
    Sync(SyncArgs),
    /// Where every file stands: protected, or what is missing and why. Exit 0 protected,
    /// 1 pending offsite or degraded, 2 at risk or lost, 3 the agent is not running.
    Status(StatusArgs),
    /// Is this card safe to format? Every file on it, matched by content, must be PROTECTED
    /// in the vault (the card itself never counts). Exit codes as `status`.
    Check(CheckArgs),
    /// When each device was last proven to hold its copies; --now audits every device that can
    /// be reached (a failed audit makes its copies count for nothing until they are repaired).
    Audit(AuditArgs),
    /// Show or set the protection policy.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Run a self-contained demonstration in a temporary folder: three agents on this machine
    /// (a laptop, a NAS and a storage-only Pi) pair, a generated shoot becomes PROTECTED with
    /// no command typed, bit rot on the Pi is caught by an audit and repaired, and a new laptop
    /// restores every byte from the recovery phrase and the Pi alone.
    Demo(DemoArgs),
}

#[derive(Debug, ClapArgs)]
pub(crate) struct InitArgs {
    /// This device's name, e.g. laptop.
    #[arg(long)]
    pub(crate) name: String,
    /// Where this device is, e.g. home, studio, parents.
    #[arg(long)]
    pub(crate) site: String,
    /// Print the result (phrase included) as JSON, and ask nothing back.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum StoreCommand {
    /// Create a blob store at PATH (a new or empty directory) and use it.
    Add {
        /// Where the store goes, e.g. /media/ssd/triad.
        path: PathBuf,
        /// The kind of media it is on: ssd, hdd, raid, usb-ssd, usb-hdd, sd, optical, cloud.
        #[arg(long)]
        media: Media,
        /// The most this store may hold for the vault, e.g. 500G or 2T (K, M, G, T are
        /// powers of 1024); pushes beyond it are refused.
        #[arg(long, value_parser = parse_size)]
        quota: Option<u64>,
    },
    /// List the stores with their state.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Stop using a store (its files are left in place).
    Remove {
        /// The store's path or id.
        store: String,
    },
    /// Rebuild a store's index from its pack files alone.
    RebuildIndex {
        /// The store's path (default: every store of this device).
        path: Option<PathBuf>,
    },
    /// Re-read every blob of every store and check it against its address; damaged blobs are
    /// dropped from the index, so that the next backup (or a push from a peer) stores them
    /// again. Exits 3 when something is damaged.
    Scrub {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum FolderCommand {
    /// Protect a folder.
    Add {
        /// The folder, e.g. ~/Pictures/2026.
        path: PathBuf,
        /// The kind of media the folder is on.
        #[arg(long, default_value = "ssd")]
        media: Media,
        /// Extra patterns to exclude (glob syntax); repeat for several.
        #[arg(long)]
        exclude: Vec<String>,
    },
    /// List protected folders.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Stop protecting a folder (its snapshots stay in the stores).
    Remove {
        /// The folder's path, name or id.
        folder: String,
    },
}

#[derive(Debug, ClapArgs)]
pub(crate) struct BackupArgs {
    /// Back up only this folder (path, name or id).
    #[arg(long)]
    pub(crate) folder: Option<String>,
    /// Allow a snapshot of a folder that is now empty although its last snapshot was not.
    #[arg(long)]
    pub(crate) allow_empty: bool,
    /// Print one JSON object per event and a summary, instead of a progress bar.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, ClapArgs)]
pub(crate) struct SnapshotsArgs {
    /// Only this folder.
    #[arg(long)]
    pub(crate) folder: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, ClapArgs)]
pub(crate) struct LsArgs {
    /// `latest`, or the first characters of a snapshot id.
    pub(crate) snapshot: String,
    /// A path inside the folder.
    pub(crate) path: Option<PathBuf>,
    /// The folder (needed when `latest` covers several).
    #[arg(long)]
    pub(crate) folder: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, ClapArgs)]
pub(crate) struct RestoreArgs {
    /// `latest`, or the first characters of a snapshot id.
    pub(crate) snapshot: String,
    /// A file or directory inside the folder (default: all of it).
    pub(crate) path: Option<PathBuf>,
    /// Where to restore: `DIR/<folder name>/...` is created.
    #[arg(long, value_name = "DIR")]
    pub(crate) to: PathBuf,
    /// The folder (needed with a PATH when `latest` covers several).
    #[arg(long)]
    pub(crate) folder: Option<String>,
    /// Replace files that already exist.
    #[arg(long)]
    pub(crate) overwrite: bool,
    /// Take the restored folders over: this device protects them from now on, continuing
    /// their history (after a recovery, for the lost device's folders).
    #[arg(long)]
    pub(crate) take_over: bool,
    /// With --take-over, the kind of media the restored folders are on (default ssd).
    #[arg(long, requires = "take_over")]
    pub(crate) media: Option<Media>,
    /// Print a JSON summary.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, ClapArgs)]
pub(crate) struct VerifyArgs {
    /// Also re-read and re-hash every blob in every store.
    #[arg(long)]
    pub(crate) read_data: bool,
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, ClapArgs)]
pub(crate) struct RecoverArgs {
    /// A store of the vault (a disk that survived); with --peer, where to make this device's
    /// new store, into which everything the peer holds is copied.
    #[arg(long, value_name = "PATH")]
    pub(crate) store: PathBuf,
    /// Copy the vault from this surviving device (its address, e.g.
    /// /ip4/192.0.2.7/udp/41641/quic-v1), which admits this device once it proves the phrase.
    #[arg(long, value_name = "ADDR")]
    pub(crate) peer: Option<String>,
    /// The kind of media the store is on (default: as recorded in the store; with --peer, ssd).
    #[arg(long)]
    pub(crate) media: Option<Media>,
    /// This new device's name.
    #[arg(long, default_value = "recovered")]
    pub(crate) name: String,
    /// This new device's site.
    #[arg(long, default_value = "home")]
    pub(crate) site: String,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ConfigCommand {
    /// Print the effective settings as TOML.
    Show,
}

#[derive(Debug, ClapArgs)]
pub(crate) struct DemoArgs {
    /// Keep the demo's folder instead of deleting it, and print where it is.
    #[arg(long)]
    pub(crate) keep: bool,
    /// Scale of the generated shoot (1 = 12 raw files of 24 MiB).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub(crate) scale: u32,
}

#[derive(Debug, ClapArgs)]
pub(crate) struct AgentArgs {
    /// An address to listen on (repeatable). Default: UDP (QUIC) and TCP port 41641 on every
    /// interface. `/ip4/0.0.0.0/udp/0/quic-v1` picks a free port.
    #[arg(long, value_name = "MULTIADDR")]
    pub(crate) listen: Vec<String>,
    /// Do not find or announce devices on the LAN (mDNS).
    #[arg(long)]
    pub(crate) no_mdns: bool,
    /// Do not relay connections for the vault's devices that cannot reach each other. By
    /// default every agent offers it; only the devices that reach this one across the internet
    /// use it, and only devices of the roster are admitted.
    #[arg(long)]
    pub(crate) no_relay: bool,
    /// Do not ask the router for a port mapping (UPnP IGD).
    #[arg(long)]
    pub(crate) no_upnp: bool,
    /// Print one JSON line when listening (peer id and addresses).
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, ClapArgs)]
pub(crate) struct PairArgs {
    /// The new device stores the vault's blobs encrypted and never receives its keys.
    #[arg(long)]
    pub(crate) storage_only: bool,
    /// Minutes the code stays valid.
    #[arg(long, default_value_t = 10)]
    pub(crate) minutes: u64,
    /// Seconds the code stays valid, instead of minutes (for tests).
    #[arg(long, hide = true)]
    pub(crate) seconds: Option<u64>,
    /// Accept the joining device without asking.
    #[arg(long)]
    pub(crate) yes: bool,
    /// Print {"code","link"} as the first JSON line, then the outcome as JSON.
    #[arg(long)]
    pub(crate) json: bool,
    /// Also write the QR code as a PNG image.
    #[arg(long, value_name = "FILE")]
    pub(crate) png: Option<PathBuf>,
}

#[derive(Debug, ClapArgs)]
pub(crate) struct JoinArgs {
    /// The code (like 7-guitar-orbit) or the link (triad://pair?...).
    pub(crate) code: String,
    /// This device's name, e.g. laptop.
    #[arg(long)]
    pub(crate) name: String,
    /// Where this device is, e.g. home, studio, parents.
    #[arg(long)]
    pub(crate) site: String,
    /// The inviting device's address, when it cannot be found on the LAN.
    #[arg(long, value_name = "MULTIADDR")]
    pub(crate) peer: Option<String>,
    /// Accept the inviting device's offer without asking.
    #[arg(long)]
    pub(crate) yes: bool,
    /// How long to look for the inviting device.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub(crate) wait: std::time::Duration,
    /// Print the outcome as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, ClapArgs)]
pub(crate) struct DevicesArgs {
    #[command(subcommand)]
    pub(crate) command: Option<DevicesCommand>,
    /// Print JSON.
    #[arg(long, global = true)]
    pub(crate) json: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum DevicesCommand {
    /// Remove a device from the vault for good; every device that is reachable is told now,
    /// the others at their next contact. It can no longer connect to any device that knows.
    Remove {
        /// The device's name.
        name: String,
    },
    /// Remember an address of a device (a multiaddress, e.g. /ip4/192.0.2.7/udp/41641/quic-v1).
    Addr {
        /// The device's name.
        name: String,
        /// Its address.
        addr: String,
    },
}

#[derive(Debug, ClapArgs)]
pub(crate) struct SyncArgs {
    /// The device to push to.
    pub(crate) device: String,
    /// Give up after this long.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub(crate) timeout: std::time::Duration,
    /// Print the outcome as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// A size like `500G`: a number and an optional K, M, G or T (powers of 1024).
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, shift) = match text.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&text[..text.len() - 1], 10),
        Some('M') => (&text[..text.len() - 1], 20),
        Some('G') => (&text[..text.len() - 1], 30),
        Some('T') => (&text[..text.len() - 1], 40),
        _ => (text, 0),
    };
    let n: u64 = digits.trim().parse().map_err(|_| format!("{text:?} is not a size like 500G"))?;
    n.checked_mul(1 << shift).ok_or_else(|| format!("{text} is too large"))
}

#[derive(Debug, ClapArgs)]
pub(crate) struct StatusArgs {
    /// List the files in this state (PROTECTED, PENDING-OFFSITE, DEGRADED, AT-RISK, LOST;
    /// any letter case); repeat for several.
    #[arg(long, value_name = "STATE")]
    pub(crate) files: Vec<String>,
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, ClapArgs)]
pub(crate) struct CheckArgs {
    /// The card, disk or folder to check.
    pub(crate) path: PathBuf,
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum PolicyCommand {
    /// Show the policy of the device and of each folder.
    Show {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Set rules, e.g. `copies=3 media=2 offsite=1`; also `audit-window=7d` and `grace=30d`
    /// (device-wide only).
    Set {
        /// KEY=VALUE pairs.
        #[arg(required = true)]
        rules: Vec<String>,
        /// Set the policy of this folder only (its path, name or id).
        #[arg(long)]
        folder: Option<String>,
    },
}

#[derive(Debug, ClapArgs)]
pub(crate) struct AuditArgs {
    /// Audit every device that can be reached, now.
    #[arg(long)]
    pub(crate) now: bool,
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
}
