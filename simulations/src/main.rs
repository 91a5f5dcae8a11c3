//! `simulate`: runs the vault for years under several policies and prints, per policy, the
//! yearly probability of losing a file and the repair windows; `--png` plots the windows.
//!
//!     cargo run --release -p triad-simulations -- --years 10 --runs 200 --png repairs.png
//!     cargo run --release -p triad-simulations -- --replay 1234 --policies 3-2-1

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use triad_simulations::{Scenario, Summary, parse_policy, plot, run, summarise};

#[derive(Parser)]
#[command(about = "Seeded runs of triad's decisions over years of virtual time")]
struct Args {
    /// Years of virtual time per run.
    #[arg(long, default_value_t = 10)]
    years: u32,
    /// Runs (seeds) per policy.
    #[arg(long, default_value_t = 50)]
    runs: usize,
    /// The first seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Devices in the vault, the laptop included (3 to 10).
    #[arg(long, default_value_t = 4)]
    devices: usize,
    /// Disk failures per disk and year.
    #[arg(long, default_value_t = 0.02)]
    disk_failures: f64,
    /// Policies, as copies-media-offsite.
    #[arg(long, value_delimiter = ',', default_value = "3-2-1,2-1-1,3-2-2")]
    policies: Vec<String>,
    /// Writes the plot of the repair windows here.
    #[arg(long)]
    png: Option<PathBuf>,
    /// Runs this one seed and prints all it found (what a failing run says to replay).
    #[arg(long)]
    replay: Option<u64>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let scenario = Scenario {
        years: args.years,
        devices: args.devices,
        disk_failures: args.disk_failures,
        ..Scenario::default()
    };
    let mut policies = Vec::new();
    for text in &args.policies {
        match parse_policy(text) {
            Some(policy) => policies.push(policy),
            None => {
                eprintln!("error: {text:?} is not a policy (write copies-media-offsite, as 3-2-1)");
                return ExitCode::from(2);
            }
        }
    }
    if let Some(seed) = args.replay {
        let mut bad = false;
        for policy in policies {
            let out = run(policy, &scenario, seed);
            println!("{policy} seed {seed}: {out:#?}");
            bad |= !out.violations.is_empty();
        }
        return if bad { ExitCode::FAILURE } else { ExitCode::SUCCESS };
    }
    println!(
        "{} runs of {} years per policy, {} devices, seeds {}..{}",
        args.runs,
        args.years,
        scenario.devices,
        args.seed,
        args.seed + args.runs as u64
    );
    println!(
        "{:<8} {:>10} {:>6} {:>14} {:>9} {:>9} {:>9} {:>9} {:>8} {:>10}",
        "policy",
        "file-years",
        "lost",
        "P(loss)/year",
        "repairs",
        "p50 h",
        "p90 h",
        "p99 h",
        "max h",
        "stale"
    );
    let mut summaries: Vec<Summary> = Vec::new();
    let started = std::time::Instant::now();
    for policy in policies {
        let s = summarise(policy, &scenario, args.seed, args.runs);
        let q = |q: f64| s.repair_quantile(q).map_or("-".to_owned(), |h| format!("{h:.0}"));
        println!(
            "{:<8} {:>10.0} {:>6} {:>14.2e} {:>9} {:>9} {:>9} {:>9} {:>8} {:>9.3}%",
            format!("{}-{}-{}", policy.copies, policy.media, policy.offsite),
            s.file_years,
            s.lost,
            s.yearly_loss,
            s.repairs.len(),
            q(0.5),
            q(0.9),
            q(0.99),
            q(1.0),
            s.stale_share * 100.0
        );
        summaries.push(s);
    }
    let secs = started.elapsed().as_secs_f64();
    let events: u64 = summaries.iter().map(|s| s.events).sum();
    println!(
        "the engine handled {events} events in {secs:.1} s of simulation: {:.0} events per second, the simulation's own work included",
        events as f64 / secs.max(f64::MIN_POSITIVE)
    );
    let mut failed = false;
    for s in &summaries {
        for (seed, v) in &s.violations {
            failed = true;
            eprintln!("{} seed {seed}: {v}", s.policy);
            eprintln!(
                "  replay: cargo run --release -p triad-simulations -- --replay {seed} --years {} --devices {} --policies {}-{}-{}",
                args.years, scenario.devices, s.policy.copies, s.policy.media, s.policy.offsite
            );
        }
    }
    if let Some(path) = &args.png {
        let written = std::fs::File::create(path).map_err(|e| e.to_string()).and_then(|f| {
            plot::repair_windows(&summaries, std::io::BufWriter::new(f)).map_err(|e| e.to_string())
        });
        match written {
            Ok(()) => println!(
                "repair windows plotted to {} (share of repairs done against hours, 1 h to 1 year, logarithmic; lines in the order of the table: blue, red, green, purple, orange)",
                path.display()
            ),
            Err(e) => {
                eprintln!("error: cannot write {}: {e}", path.display());
                failed = true;
            }
        }
    }
    if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}
