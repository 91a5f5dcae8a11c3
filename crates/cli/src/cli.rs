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
    /// Run a self-contained demonstration in a temporary folder: back up a generated shoot,
    /// edit it, back up again, verify, and restore every byte.
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
    /// A store of the vault (a disk that survived).
    #[arg(long, value_name = "PATH")]
    pub(crate) store: PathBuf,
    /// The kind of media the store is on (default: as recorded in the store).
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
