//! Counting under callgrind, and the baseline gate.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::kernels::{self, Spec};

/// Bumped when the baseline file changes shape.
pub const BASELINE_SCHEMA: u32 = 1;

/// A baseline allows this much growth per kernel before the gate fails.
/// Counts repeat exactly for the same binary; what moves them run to run
/// is hash-table probing under per-process hash seeds (well under 0.5 %).
pub const DEFAULT_TOLERANCE_PCT: f64 = 1.0;

/// One kernel's figures.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Measured {
    pub op: String,
    pub ops: u64,
    pub instructions: u64,
    pub instructions_per_op: f64,
    /// Native median over repeats (not under valgrind); None when only
    /// counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ns_per_op: Option<f64>,
}

/// `valgrind --version`, or an error saying how to get it.
pub fn valgrind_version() -> Result<String> {
    let out = Command::new("valgrind")
        .arg("--version")
        .output()
        .context("valgrind is not installed (apt-get install valgrind)")?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Runs `exe kernel NAME` under callgrind, collecting only inside
/// [`kernels::icount_measured`], and returns (operations, instructions).
pub fn count(exe: &Path, spec: &Spec) -> Result<(u64, u64)> {
    let dir = tempfile::tempdir()?;
    let out_file = dir.path().join("callgrind.out");
    let out = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out_file.display()))
        .arg("--collect-atstart=no")
        .arg("--toggle-collect=icount_measured")
        .arg(exe)
        .args(["kernel", spec.name])
        // Nothing from the environment on the measured path.
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LOG")
        .output()
        .context("running valgrind")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(15).collect();
        bail!(
            "kernel {} failed under valgrind ({}):\n{}",
            spec.name,
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    let ops = stdout
        .lines()
        .find_map(|l| l.strip_prefix("ops "))
        .and_then(|n| n.trim().parse::<u64>().ok())
        .with_context(|| format!("kernel {} printed no operation count", spec.name))?;
    let text = std::fs::read_to_string(&out_file).context("reading callgrind's output")?;
    let instructions = total(&text).with_context(|| {
        format!(
            "no instruction total in callgrind's output for {}",
            spec.name
        )
    })?;
    if instructions == 0 {
        bail!(
            "callgrind counted nothing for {}: was icount_measured inlined or renamed?",
            spec.name
        );
    }
    Ok((ops, instructions))
}

/// The `totals:` (or, in older files, `summary:`) line of a callgrind
/// output file: the first event, Ir.
fn total(text: &str) -> Option<u64> {
    let pick = |prefix: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
    };
    pick("totals:").or_else(|| pick("summary:"))
}

/// Counts (and optionally times) every selected kernel.
pub fn measure(
    exe: &Path,
    selected: &[&'static Spec],
    time_repeats: usize,
) -> Result<BTreeMap<String, Measured>> {
    let mut all = BTreeMap::new();
    for spec in selected {
        let (ops, instructions) = count(exe, spec)?;
        let ns_per_op = if time_repeats > 0 {
            Some(kernels::time(spec, time_repeats)?.as_nanos() as f64)
        } else {
            None
        };
        all.insert(
            spec.name.to_string(),
            Measured {
                op: spec.op.to_string(),
                ops,
                instructions,
                instructions_per_op: instructions as f64 / ops.max(1) as f64,
                ns_per_op,
            },
        );
    }
    Ok(all)
}

/// The committed reference counts.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Baseline {
    pub schema: u32,
    pub rustc: String,
    pub valgrind: String,
    pub profile: String,
    pub tolerance_pct: f64,
    pub regenerate: String,
    pub kernels: BTreeMap<String, Measured>,
}

pub const REGENERATE: &str =
    "cargo run --release -p peerlink-icount -- --save-baseline bench/icount/baseline.json";

pub fn profile() -> &'static str {
    if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    }
}

impl Baseline {
    pub fn new(kernels: BTreeMap<String, Measured>, valgrind: String, tolerance_pct: f64) -> Self {
        let mut kernels = kernels;
        for m in kernels.values_mut() {
            m.ns_per_op = None; // time is not part of the gate
        }
        Baseline {
            schema: BASELINE_SCHEMA,
            rustc: env!("PEERLINK_RUSTC_VERSION").to_string(),
            valgrind,
            profile: profile().to_string(),
            tolerance_pct,
            regenerate: REGENERATE.to_string(),
            kernels,
        }
    }

    pub fn load(path: &Path) -> Result<Baseline> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading baseline {}", path.display()))?;
        let b: Baseline = serde_json::from_str(&text)
            .with_context(|| format!("baseline {} is not a baseline file", path.display()))?;
        if b.schema != BASELINE_SCHEMA {
            bail!(
                "baseline {} has schema {}, this build reads {BASELINE_SCHEMA}: regenerate it ({REGENERATE})",
                path.display(),
                b.schema
            );
        }
        if !(0.0..=100.0).contains(&b.tolerance_pct) {
            bail!("baseline tolerance {} % is out of range", b.tolerance_pct);
        }
        Ok(b)
    }

    /// Writes the file whole or not at all (temp, fsync, rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut text = serde_json::to_string_pretty(self)?;
        text.push('\n');
        peerlink_net::fsutil::write_atomic(path, text.as_bytes(), true)?;
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    Same,
    Regressed,
    /// Fewer instructions than the baseline by more than the tolerance:
    /// not a failure, but the baseline should be regenerated so the gate
    /// guards the new figure.
    Improved,
    New,
}

#[derive(Clone, Debug, Serialize)]
pub struct Compared {
    pub kernel: String,
    pub baseline: Option<f64>,
    pub measured: f64,
    pub change_pct: Option<f64>,
    pub verdict: Change,
}

/// Each measured kernel against the baseline.
pub fn compare(base: &Baseline, now: &BTreeMap<String, Measured>) -> Vec<Compared> {
    now.iter()
        .map(|(name, m)| {
            let b = base.kernels.get(name).map(|b| b.instructions_per_op);
            let change_pct = b.map(|b| (m.instructions_per_op - b) / b.max(1e-9) * 100.0);
            let verdict = match change_pct {
                None => Change::New,
                Some(c) if c > base.tolerance_pct => Change::Regressed,
                Some(c) if c < -base.tolerance_pct => Change::Improved,
                Some(_) => Change::Same,
            };
            Compared {
                kernel: name.clone(),
                baseline: b,
                measured: m.instructions_per_op,
                change_pct,
                verdict,
            }
        })
        .collect()
}

/// What differs between the baseline's toolchain and this one (counts
/// are only comparable with the same compiler and valgrind).
pub fn toolchain_notes(base: &Baseline, valgrind: &str) -> Vec<String> {
    let mut notes = Vec::new();
    let rustc = env!("PEERLINK_RUSTC_VERSION");
    if base.rustc != rustc {
        notes.push(format!("baseline built by {}, this by {rustc}", base.rustc));
    }
    if base.valgrind != valgrind {
        notes.push(format!(
            "baseline counted by {}, this by {valgrind}",
            base.valgrind
        ));
    }
    if base.profile != profile() {
        notes.push(format!(
            "baseline from a {} build, this is a {} build",
            base.profile,
            profile()
        ));
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(per_op: f64) -> Measured {
        Measured {
            op: "op".into(),
            ops: 100,
            instructions: (per_op * 100.0) as u64,
            instructions_per_op: per_op,
            ns_per_op: None,
        }
    }

    fn baseline(entries: &[(&str, f64)]) -> Baseline {
        let kernels = entries
            .iter()
            .map(|(n, v)| (n.to_string(), measured(*v)))
            .collect();
        Baseline::new(kernels, "valgrind-test".into(), 1.0)
    }

    #[test]
    fn growth_beyond_the_tolerance_is_a_regression() {
        let base = baseline(&[("a", 1000.0), ("b", 1000.0), ("c", 1000.0)]);
        let now: BTreeMap<String, Measured> = [
            ("a".to_string(), measured(1009.0)),
            ("b".to_string(), measured(1011.0)),
            ("c".to_string(), measured(980.0)),
            ("d".to_string(), measured(5.0)),
        ]
        .into_iter()
        .collect();
        let v: Vec<Change> = compare(&base, &now).iter().map(|c| c.verdict).collect();
        assert_eq!(
            v,
            [
                Change::Same,
                Change::Regressed,
                Change::Improved,
                Change::New
            ]
        );
    }

    #[test]
    fn callgrind_totals_are_read_from_either_line() {
        assert_eq!(total("events: Ir\nsummary: 1234\n"), Some(1234));
        assert_eq!(total("events: Ir\ntotals: 99 7\n"), Some(99));
        assert_eq!(total("events: Ir\n"), None);
        assert_eq!(total("totals: lots\n"), None);
    }

    #[test]
    fn a_baseline_survives_a_round_trip_and_bad_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.json");
        baseline(&[("a", 10.0)]).save(&path).unwrap();
        let back = Baseline::load(&path).unwrap();
        assert_eq!(back.kernels["a"].instructions_per_op, 10.0);
        std::fs::write(&path, "{\"schema\": 1}").unwrap();
        assert!(Baseline::load(&path).is_err());
        std::fs::write(&path, "not json").unwrap();
        assert!(Baseline::load(&path).is_err());
        assert!(Baseline::load(&dir.path().join("missing.json")).is_err());
    }

    #[test]
    fn every_kernel_runs_and_counts_its_operations() {
        for spec in kernels::ALL {
            let mut k = (spec.setup)().unwrap();
            let ops = kernels::icount_measured(k.as_mut()).unwrap();
            assert!(ops > 0, "{}", spec.name);
        }
    }
}
