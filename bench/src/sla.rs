//! Targets as data and the check of a run against them (`--check-sla`).
//!
//! `bench/targets.toml` holds every row of TARGETS.md that a `peerlink
//! bench` workload measures. A row names its workload, a metric, where the
//! figure sits in that workload's JSON results (`path`, a JSON pointer,
//! optionally inside the elements of `in`), the parameters the target is
//! stated at (`at`: pointer → value, matched against the element), a unit
//! and a `scale` from the JSON's unit to it, and one threshold: `min = …`
//! (higher is better) or `max = …` (lower is better). `kind` says whether
//! the figure is absolute (it drifts ±20 % between runs on a shared
//! machine) or a ratio against a `reference` measured in the same run (the
//! ones that mean something here).
//!
//! A row whose parameters the run did not use, or whose figure the run did
//! not produce, is *not measured*: never met, never missed.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The repository's targets file, built in (`--targets FILE` overrides).
pub const DEFAULT_TARGETS: &str = include_str!("../targets.toml");

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A figure on its own: drifts with the machine.
    Absolute,
    /// A figure over a reference measured in the same run.
    Ratio,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    pub workload: String,
    pub metric: String,
    /// A pointer to an array (or object) whose elements are candidates;
    /// `*` steps into every element of an array. The root when absent.
    #[serde(default, rename = "in")]
    pub within: Option<String>,
    /// Parameters the target is stated at: pointer (relative to the
    /// candidate) → the value it must have.
    #[serde(default)]
    pub at: BTreeMap<String, Value>,
    /// The figure, relative to the candidate.
    pub path: String,
    /// Multiplies the JSON's figure into `unit`.
    #[serde(default = "one")]
    pub scale: f64,
    pub unit: String,
    #[serde(default)]
    pub min: Option<f64>,
    #[serde(default)]
    pub max: Option<f64>,
    pub kind: Kind,
    /// What a ratio is against.
    #[serde(default)]
    pub reference: Option<String>,
    /// The TARGETS.md row it comes from.
    #[serde(default)]
    pub source: Option<String>,
}

fn one() -> f64 {
    1.0
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    target: Vec<Target>,
}

/// Why a targets file was refused.
#[derive(Debug, thiserror::Error)]
pub enum TargetsError {
    #[error("cannot read {0}: {1}")]
    Read(String, std::io::Error),
    #[error("targets file: {0}")]
    Syntax(String),
    #[error("target {index} ({metric}): {problem}")]
    Row {
        index: usize,
        metric: String,
        problem: &'static str,
    },
}

#[derive(Clone, Debug)]
pub struct Targets {
    pub rows: Vec<Target>,
}

impl Targets {
    pub fn parse(text: &str) -> Result<Targets, TargetsError> {
        let file: File = toml::from_str(text).map_err(|e| TargetsError::Syntax(e.to_string()))?;
        for (index, t) in file.target.iter().enumerate() {
            let problem = match (t.min, t.max) {
                (Some(_), Some(_)) | (None, None) => Some("needs exactly one of min and max"),
                (Some(v), None) | (None, Some(v)) if !v.is_finite() => {
                    Some("threshold is not a number")
                }
                _ if t.kind == Kind::Ratio && t.reference.is_none() => {
                    Some("a ratio needs its reference")
                }
                _ if !t.path.starts_with('/') => Some("path must be a JSON pointer (/…)"),
                _ if !t.scale.is_finite() || t.scale == 0.0 => {
                    Some("scale must be a non-zero number")
                }
                _ => None,
            };
            if let Some(problem) = problem {
                return Err(TargetsError::Row {
                    index,
                    metric: t.metric.clone(),
                    problem,
                });
            }
        }
        Ok(Targets { rows: file.target })
    }

    pub fn load(path: &Path) -> Result<Targets, TargetsError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| TargetsError::Read(path.display().to_string(), e))?;
        Targets::parse(&text)
    }

    /// The built-in file.
    pub fn builtin() -> Result<Targets, TargetsError> {
        Targets::parse(DEFAULT_TARGETS)
    }

    /// Every row of `workload` checked against its results.
    /// Which way is better for the figure at `pointer` of `workload`'s
    /// results, if a target row names it (by its path; `all` results
    /// start with the workload's name).
    pub fn direction_of(
        &self,
        workload: &str,
        pointer: &str,
    ) -> Option<crate::baseline::Direction> {
        let (workload, pointer) = match workload {
            "all" => {
                let rest = pointer.strip_prefix('/')?;
                let (w, _) = rest.split_once('/')?;
                (w, &rest[w.len()..])
            }
            w => (w, pointer),
        };
        let t = self
            .rows
            .iter()
            .find(|t| t.workload == workload && pointer.ends_with(&t.path))?;
        Some(match (t.min, t.max) {
            (Some(_), _) => crate::baseline::Direction::Higher,
            _ => crate::baseline::Direction::Lower,
        })
    }

    pub fn check(&self, workload: &str, results: &Value) -> Vec<Checked> {
        self.rows
            .iter()
            .filter(|t| t.workload == workload)
            .map(|t| t.check(results))
            .collect()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "verdict", content = "why", rename_all = "snake_case")]
pub enum Verdict {
    Met,
    Missed,
    /// The run did not measure it at the target's parameters.
    NotMeasured(String),
}

#[derive(Clone, Debug, Serialize)]
pub struct Checked {
    #[serde(flatten)]
    pub target: Target,
    /// In the target's unit.
    pub measured: Option<f64>,
    #[serde(flatten)]
    pub verdict: Verdict,
}

impl Target {
    pub fn check(&self, results: &Value) -> Checked {
        let (measured, verdict) = match self.measure(results) {
            Ok(v) => {
                let met = match (self.min, self.max) {
                    (Some(min), _) => v >= min,
                    (_, Some(max)) => v <= max,
                    _ => false,
                };
                (Some(v), if met { Verdict::Met } else { Verdict::Missed })
            }
            Err(why) => (None, Verdict::NotMeasured(why)),
        };
        Checked {
            target: self.clone(),
            measured,
            verdict,
        }
    }

    fn measure(&self, results: &Value) -> Result<f64, String> {
        let candidates = expand(results, self.within.as_deref().unwrap_or(""));
        if candidates.is_empty() {
            return Err(format!(
                "no {} in this run",
                self.within.as_deref().unwrap_or("results")
            ));
        }
        let matching = candidates.into_iter().find(|c| {
            self.at
                .iter()
                .all(|(p, want)| c.pointer(p).is_some_and(|got| same(got, want)))
        });
        let Some(c) = matching else {
            let at: Vec<String> = self.at.iter().map(|(p, v)| format!("{p}={v}")).collect();
            return Err(format!("not run at {}", at.join(", ")));
        };
        c.pointer(&self.path)
            .and_then(|v| v.as_f64().or_else(|| v.as_bool().map(f64::from)))
            .map(|v| v * self.scale)
            .ok_or_else(|| format!("no figure at {}", self.path))
    }

    /// `≤ 500 ns`, `≥ 0.55 × raw TCP`.
    pub fn threshold(&self) -> String {
        let (sign, v) = match (self.min, self.max) {
            (Some(v), _) => ("≥", v),
            (_, Some(v)) => ("≤", v),
            _ => ("?", f64::NAN),
        };
        format!("{sign} {} {}", number(v), self.unit)
    }
}

/// The values `pointer` names, where each `*` segment stands for every
/// element of an array (or every value of an object).
fn expand<'a>(root: &'a Value, pointer: &str) -> Vec<&'a Value> {
    let mut out = vec![root];
    for seg in pointer.split('/').skip(1) {
        out = out
            .into_iter()
            .flat_map(|v| -> Vec<&Value> {
                match (seg, v) {
                    ("*", Value::Array(a)) => a.iter().collect(),
                    ("*", Value::Object(o)) => o.values().collect(),
                    _ => v.pointer(&format!("/{seg}")).into_iter().collect(),
                }
            })
            .collect();
    }
    // An array offers its elements (a workload's runs per size).
    out.into_iter()
        .flat_map(|v| match v {
            Value::Array(a) => a.iter().collect(),
            v => vec![v],
        })
        .collect()
}

/// Numbers compare as numbers (20 and 20.0 are the same parameter).
fn same(got: &Value, want: &Value) -> bool {
    match (got.as_f64(), want.as_f64()) {
        (Some(a), Some(b)) => (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0),
        _ => got == want,
    }
}

fn number(v: f64) -> String {
    if v.abs() >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// The verdict table, one row per target.
pub fn table(rows: &[Checked]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<9} {:<46} {:<24} {:>14} {:>14}  verdict",
        "workload", "metric", "kind", "target", "measured"
    );
    for c in rows {
        let t = &c.target;
        let measured = c
            .measured
            .map_or_else(|| "-".to_string(), |v| format!("{} {}", number(v), t.unit));
        let verdict = match &c.verdict {
            Verdict::Met => "met".to_string(),
            Verdict::Missed => "MISSED".to_string(),
            Verdict::NotMeasured(why) => format!("not measured ({why})"),
        };
        let kind = match (t.kind, &t.reference) {
            (Kind::Ratio, Some(r)) => format!("ratio to {r}"),
            _ => "absolute".to_string(),
        };
        let _ = writeln!(
            out,
            "{:<9} {:<46} {:<24} {:>14} {:>14}  {verdict}",
            t.workload,
            t.metric,
            kind,
            t.threshold(),
            measured
        );
    }
    let missed = rows.iter().filter(|c| c.verdict == Verdict::Missed).count();
    let met = rows.iter().filter(|c| c.verdict == Verdict::Met).count();
    let _ = writeln!(
        out,
        "{met} met, {missed} missed, {} not measured",
        rows.len() - met - missed
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ROWS: &str = r#"
[[target]]
workload = "txpool"
metric = "insert p50"
path = "/core/insert_ns/p50_us"
scale = 1000
unit = "ns"
max = 500
kind = "absolute"
at = { "/core/senders" = 10000 }

[[target]]
workload = "gossip"
metric = "time to all p99, 50 nodes, 20 ms"
path = "/time_to_all/p99_us"
scale = 0.001
unit = "ms"
max = 150
kind = "absolute"
at = { "/nodes" = 50, "/link_delay_ms" = 20 }

[[target]]
workload = "stream"
metric = "16 KiB, share of raw TCP"
path = "/ratio_to_raw"
unit = "×"
min = 0.55
kind = "ratio"
reference = "raw TCP"
at = { "/size" = 16384 }
"#;

    #[test]
    fn rows_are_met_missed_or_not_measured_by_their_parameters() {
        let t = Targets::parse(ROWS).unwrap();
        let txpool = json!({"core": {"senders": 10000, "insert_ns": {"p50_us": 0.4}}});
        assert_eq!(t.check("txpool", &txpool)[0].verdict, Verdict::Met);
        let slow = json!({"core": {"senders": 10000, "insert_ns": {"p50_us": 0.9}}});
        let c = &t.check("txpool", &slow)[0];
        assert_eq!(c.verdict, Verdict::Missed);
        assert!((c.measured.unwrap() - 900.0).abs() < 1e-6);
        // Quick size: another parameter, not measured (never met).
        let quick = json!({"core": {"senders": 200, "insert_ns": {"p50_us": 0.1}}});
        assert!(matches!(
            t.check("txpool", &quick)[0].verdict,
            Verdict::NotMeasured(_)
        ));
        // An array of runs: the one at the target's parameters is checked.
        let gossip = json!([
            {"nodes": 10, "link_delay_ms": 20.0, "time_to_all": {"p99_us": 900000.0}},
            {"nodes": 50, "link_delay_ms": 20.0, "time_to_all": {"p99_us": 120000.0}},
        ]);
        assert_eq!(t.check("gossip", &gossip)[0].verdict, Verdict::Met);
        let stream = json!([{"size": 16384, "ratio_to_raw": 0.5}]);
        assert_eq!(t.check("stream", &stream)[0].verdict, Verdict::Missed);
        // A skipped part (null) is not measured.
        let none = json!({"core": {"senders": 10000, "insert_ns": null}});
        assert!(matches!(
            t.check("txpool", &none)[0].verdict,
            Verdict::NotMeasured(_)
        ));
        let printed = table(&t.check("stream", &stream));
        assert!(
            printed.contains("MISSED") && printed.contains("0 met, 1 missed"),
            "{printed}"
        );
    }

    #[test]
    fn nested_runs_are_reached_through_wildcards() {
        let t = Targets::parse(
            r#"
[[target]]
workload = "registry"
metric = "install p50"
in = "/publish_install/*/rows/*"
at = { "/nodes" = 100, "/latency_ms" = 0 }
path = "/install/p50_us"
scale = 0.001
unit = "ms"
max = 100
kind = "absolute"
"#,
        )
        .unwrap();
        let r = json!({"publish_install": [
            {"link_delay_ms": 0, "rows": [{"nodes": 100, "latency_ms": 0.0, "install": {"p50_us": 40000.0}}]},
            {"link_delay_ms": 20, "rows": [{"nodes": 100, "latency_ms": 20.0, "install": {"p50_us": 400000.0}}]},
        ]});
        let c = &t.check("registry", &r)[0];
        assert_eq!(c.verdict, Verdict::Met);
        assert_eq!(c.measured, Some(40.0));
    }

    #[test]
    fn a_bad_targets_file_is_refused_by_name() {
        let both = ROWS.replace("max = 500", "max = 500\nmin = 1");
        assert!(matches!(
            Targets::parse(&both),
            Err(TargetsError::Row { index: 0, .. })
        ));
        let no_ref = ROWS.replace("reference = \"raw TCP\"\n", "");
        assert!(matches!(
            Targets::parse(&no_ref),
            Err(TargetsError::Row { index: 2, .. })
        ));
        assert!(matches!(
            Targets::parse("[[target]]\nworkload = 1"),
            Err(TargetsError::Syntax(_))
        ));
        let unknown = ROWS.replace("kind = \"absolute\"", "kind = \"absolute\"\nwhen = 3");
        assert!(matches!(
            Targets::parse(&unknown),
            Err(TargetsError::Syntax(_))
        ));
    }

    #[test]
    fn the_repository_targets_file_parses() {
        let t = Targets::builtin().unwrap();
        assert!(t.rows.len() >= 20, "{}", t.rows.len());
    }
}
