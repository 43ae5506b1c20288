//! `peerlink-icount`: instruction counts of the level-0/1 kernels under
//! callgrind, with native time beside them, gated against a baseline.
//!
//! ```text
//! cargo run --release -p peerlink-icount                      # table
//! cargo run --release -p peerlink-icount -- --baseline bench/icount/baseline.json --strict
//! cargo run --release -p peerlink-icount -- --save-baseline bench/icount/baseline.json
//! ```

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};
use peerlink_icount::count::{self, Baseline, Change};
use peerlink_icount::kernels;

#[derive(Parser)]
#[command(name = "peerlink-icount", about)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// Only these kernels (repeatable; default all).
    #[arg(long)]
    kernel: Vec<String>,
    /// Compare with this baseline: change per kernel.
    #[arg(long)]
    baseline: Option<PathBuf>,
    /// With --baseline: exit 1 if a kernel grew beyond the baseline's
    /// tolerance.
    #[arg(long, requires = "baseline")]
    strict: bool,
    /// Write the counts as a new baseline (whole file, atomically).
    #[arg(long)]
    save_baseline: Option<PathBuf>,
    /// Tolerance written into a saved baseline, in percent.
    #[arg(long, default_value_t = count::DEFAULT_TOLERANCE_PCT)]
    tolerance: f64,
    /// Native timing repeats per kernel (0: count only).
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// Also write the results document (with provenance) to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Runs one kernel once and prints its operation count (what the
    /// counting run executes under valgrind).
    #[command(hide = true)]
    Kernel { name: String },
    /// Lists the kernels.
    List,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Some(Cmd::Kernel { name }) => {
            let spec = kernels::find(&name)?;
            let mut k = (spec.setup)()?;
            let ops = kernels::icount_measured(k.as_mut())?;
            println!("ops {ops}");
            return Ok(());
        }
        Some(Cmd::List) => {
            for s in kernels::ALL {
                println!("{:<18} {}", s.name, s.op);
            }
            return Ok(());
        }
        None => {}
    }
    if !(0.0..=100.0).contains(&cli.tolerance) {
        bail!("--tolerance must be between 0 and 100 percent");
    }
    let selected = if cli.kernel.is_empty() {
        kernels::ALL.iter().collect()
    } else {
        cli.kernel
            .iter()
            .map(|n| kernels::find(n))
            .collect::<Result<Vec<_>>>()?
    };
    // A bad baseline is refused before anything runs.
    let baseline = cli.baseline.as_deref().map(Baseline::load).transpose()?;
    let valgrind = count::valgrind_version()?;
    if cfg!(debug_assertions) {
        eprintln!(
            "note: a debug build; the committed baseline is from a release build (--release)"
        );
    }
    let exe = std::env::current_exe()?;
    let measured = count::measure(&exe, &selected, cli.repeats)?;

    println!(
        "{:<18} | {:>14} | {:>10} | op",
        "kernel", "instr/op", "ns/op"
    );
    for (name, m) in &measured {
        let ns = m.ns_per_op.map_or("-".to_string(), |n| format!("{n:.0}"));
        println!(
            "{name:<18} | {:>14.1} | {ns:>10} | {}",
            m.instructions_per_op, m.op
        );
    }

    let mut regressed = 0;
    let mut compared = None;
    if let Some(base) = &baseline {
        let path = cli.baseline.as_deref().unwrap_or(std::path::Path::new(""));
        println!(
            "\nagainst {} (tolerance {} %):",
            path.display(),
            base.tolerance_pct
        );
        for note in count::toolchain_notes(base, &valgrind) {
            println!("  note: {note}: counts may move for that reason alone");
        }
        let rows = count::compare(base, &measured);
        for r in &rows {
            let (b, c) = match (r.baseline, r.change_pct) {
                (Some(b), Some(c)) => (format!("{b:.1}"), format!("{c:+.2} %")),
                _ => ("-".into(), "-".into()),
            };
            let verdict = match r.verdict {
                Change::Same => "same",
                Change::Regressed => "REGRESSED",
                Change::Improved => "improved (regenerate the baseline)",
                Change::New => "new (not in the baseline)",
            };
            println!(
                "  {:<18} {b:>12} -> {:>12.1}  {c:>9}  {verdict}",
                r.kernel, r.measured
            );
        }
        regressed = rows
            .iter()
            .filter(|r| r.verdict == Change::Regressed)
            .count();
        compared = Some(rows);
    }
    if let Some(path) = &cli.save_baseline {
        Baseline::new(measured.clone(), valgrind.clone(), cli.tolerance).save(path)?;
        println!("\nsaved baseline {}", path.display());
    }
    if let Some(path) = &cli.json {
        let results = serde_json::json!({
            "valgrind": valgrind,
            "kernels": measured,
            "baseline": compared,
        });
        let doc =
            peerlink_icount::provenance::document("instructions", results, serde_json::Value::Null);
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)?;
        eprintln!("wrote {}", path.display());
    }
    if cli.strict && regressed > 0 {
        bail!(
            "{regressed} kernel(s) regressed beyond the baseline's tolerance (if intended: {})",
            count::REGENERATE
        );
    }
    Ok(())
}
