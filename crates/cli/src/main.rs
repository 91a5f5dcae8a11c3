//! `triad`: keeps every photo and video in three copies, on two kinds of media, one of them
//! in another place.
//!
//! This binary parses arguments and the config file, installs logging (`TRIAD_LOG`), and
//! calls the agent. Exit codes (also in the README):
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | error: the command did not do what was asked (the message says why) |
//! | 2 | usage error (unknown command or flag) |
//! | 3 | damage: `verify` found missing or damaged data, or `restore` could not restore some files |
//! | 4 | partial: `backup` finished, but some files were skipped (listed) |
//! | 5 | unreachable: `sync` could not reach the device |
//! | 6 | refused: the device refused what `sync` sent (a full store, a quota) |

mod cli;
mod demo;
mod health;
mod network;
mod output;
mod phrase;
mod run;
mod settings;

use std::process::ExitCode;

use clap::Parser;

/// The command succeeded.
const EXIT_OK: u8 = 0;
/// The command failed.
const EXIT_ERROR: u8 = 1;
/// Data is missing or damaged.
const EXIT_DAMAGE: u8 = 3;
/// Backup finished with files skipped.
const EXIT_PARTIAL: u8 = 4;
/// The other device could not be reached.
const EXIT_UNREACHABLE: u8 = 5;
/// The other device refused.
const EXIT_REFUSED: u8 = 6;

fn main() -> ExitCode {
    quiet_on_broken_pipe();
    let args = cli::Args::parse();
    output::init_logging();
    match run::run(args) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            if is_broken_pipe(&err) {
                return ExitCode::from(EXIT_OK);
            }
            eprintln!("error: {err:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// `triad status --files | head -1`: a reader that went away is not a failure. Errors that
/// come back through `run` are handled there; this covers the `println!`s, which panic when
/// standard output is a closed pipe.
fn quiet_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(i32::from(EXIT_OK));
        }
        default(info);
    }));
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
