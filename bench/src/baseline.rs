//! Baselines for the wall-clock workloads: a run repeated k times, every
//! numeric result kept as k samples, compared metric by metric with a
//! noise-aware verdict.
//!
//! A metric's figure is the median of its k samples; its interval is the
//! order-statistic confidence interval of that median (for k = 5, the
//! smallest and largest sample: 94 % coverage, whatever the
//! distribution). A change is a **regression** only when the median moved
//! more than the threshold (5 %) in the metric's bad direction *and* the
//! two intervals do not overlap, i.e. the interval supports it. The
//! direction comes from the targets file where it names the metric (min =
//! higher is better, max = lower is better) and otherwise from the unit in
//! the name (`_us`, `_ms`, `_bytes`... lower; `per_s`, `ratio`... higher);
//! metrics of unknown direction (counts, parameters) are shown, never
//! judged.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::sla::Targets;

pub const SCHEMA: u32 = 1;

/// A regression must move the median by more than this (percent).
pub const THRESHOLD_PCT: f64 = 5.0;

/// One metric over k runs.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Metric {
    pub samples: Vec<f64>,
    pub median: f64,
    pub lo: f64,
    pub hi: f64,
}

impl Metric {
    pub fn new(mut samples: Vec<f64>) -> Metric {
        samples.sort_by(f64::total_cmp);
        let (median, (lo, hi)) = (median(&samples), interval(&samples));
        Metric {
            samples,
            median,
            lo,
            hi,
        }
    }
}

fn median(sorted: &[f64]) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// The widest order-statistic interval [x(j), x(k+1-j)] around the median
/// of k samples whose coverage is still at least 90 %: returns j (1-based)
/// and the coverage. For k < 5 no interval reaches 90 % and the whole
/// range is used (coverage 1 - 2^(1-k)).
fn order_interval(k: usize) -> (usize, f64) {
    // P(Binomial(k, 1/2) < j), summed exactly.
    let below = |j: usize| -> f64 {
        let mut c = 1.0f64; // C(k, 0)
        let mut sum = 0.0;
        for i in 0..j {
            sum += c;
            c = c * (k - i) as f64 / (i + 1) as f64;
        }
        sum / 2f64.powi(k as i32)
    };
    let mut j = 1;
    while j < k.div_ceil(2) && 1.0 - 2.0 * below(j + 1) >= 0.90 {
        j += 1;
    }
    (j, 1.0 - 2.0 * below(j))
}

fn interval(sorted: &[f64]) -> (f64, f64) {
    let k = sorted.len();
    if k == 0 {
        return (f64::NAN, f64::NAN);
    }
    let (j, _) = order_interval(k);
    (sorted[j - 1], sorted[k - j])
}

/// The coverage of a metric's interval for k samples.
pub fn coverage(k: usize) -> f64 {
    order_interval(k).1
}

/// Every number in `results`, by JSON pointer (`/3/peerlink/p50_us`).
pub fn flatten(results: &Value) -> BTreeMap<String, f64> {
    fn walk(v: &Value, path: &mut String, out: &mut BTreeMap<String, f64>) {
        match v {
            Value::Number(n) => {
                if let Some(f) = n.as_f64().filter(|f| f.is_finite()) {
                    out.insert(path.clone(), f);
                }
            }
            Value::Object(m) => {
                for (k, v) in m {
                    let len = path.len();
                    path.push('/');
                    path.push_str(&k.replace('~', "~0").replace('/', "~1"));
                    walk(v, path, out);
                    path.truncate(len);
                }
            }
            Value::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    let len = path.len();
                    path.push_str(&format!("/{i}"));
                    walk(v, path, out);
                    path.truncate(len);
                }
            }
            _ => {}
        }
    }
    let mut out = BTreeMap::new();
    walk(results, &mut String::new(), &mut out);
    out
}

/// k runs' results, metric by metric (a metric missing from some run is
/// kept with the samples it has).
pub fn metrics(runs: &[Value]) -> BTreeMap<String, Metric> {
    let mut samples: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for r in runs {
        for (k, v) in flatten(r) {
            samples.entry(k).or_default().push(v);
        }
    }
    samples
        .into_iter()
        .map(|(k, v)| (k, Metric::new(v)))
        .collect()
}

/// A saved baseline: one workload (or `all`), k runs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Baseline {
    pub schema: u32,
    pub workload: String,
    pub repeats: usize,
    pub provenance: Value,
    pub metrics: BTreeMap<String, Metric>,
}

impl Baseline {
    pub fn new(workload: &str, runs: &[Value]) -> Baseline {
        Baseline {
            schema: SCHEMA,
            workload: workload.to_string(),
            repeats: runs.len(),
            provenance: serde_json::to_value(crate::provenance::Provenance::collect())
                .unwrap_or(Value::Null),
            metrics: metrics(runs),
        }
    }

    pub fn load(path: &Path) -> Result<Baseline> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "no baseline at {} (save one with --save-baseline)",
                path.display()
            )
        })?;
        let b: Baseline = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a baseline file", path.display()))?;
        if b.schema != SCHEMA {
            bail!(
                "baseline {} has schema {}, this build reads {SCHEMA}",
                path.display(),
                b.schema
            );
        }
        Ok(b)
    }

    /// Whole file or nothing: temp, fsync, rename.
    pub fn save(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let text = serde_json::to_string_pretty(self)?;
        peerlink_net::fsutil::write_atomic(path, text.as_bytes(), true)?;
        Ok(())
    }
}

/// Where `--save-baseline NAME` / `--baseline NAME` live: NAME itself if
/// it looks like a path, else `target/bench-baselines/NAME.json`.
pub fn path_of(name: &str) -> std::path::PathBuf {
    if name.contains('/') || name.ends_with(".json") {
        name.into()
    } else {
        Path::new("target/bench-baselines").join(format!("{name}.json"))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Higher,
    Lower,
    Unknown,
}

/// Which way is better for the metric at `pointer` of `workload`.
pub fn direction(targets: Option<&Targets>, workload: &str, pointer: &str) -> Direction {
    if let Some(d) = targets.and_then(|t| t.direction_of(workload, pointer)) {
        return d;
    }
    let leaf = pointer.rsplit('/').next().unwrap_or("");
    let has = |words: &[&str]| words.iter().any(|w| leaf.contains(w));
    if has(&[
        "per_sec",
        "ratio",
        "success",
        "throughput",
        "hit_rate",
        "delivered_share",
    ]) {
        Direction::Higher
    } else if has(&[
        "_us",
        "_ms",
        "_ns",
        "_s",
        "bytes",
        "rss",
        "duplicates",
        "hops",
        "lost",
        "seconds",
    ]) {
        Direction::Lower
    } else {
        Direction::Unknown
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Within the threshold, or the intervals overlap.
    Same,
    Regressed,
    Improved,
    /// Beyond the threshold but the intervals overlap: noise.
    Noise,
    /// No direction is known for it; shown, not judged.
    Unjudged,
    /// In one of the two runs only.
    Missing,
}

#[derive(Clone, Debug, Serialize)]
pub struct Compared {
    pub metric: String,
    pub direction: Direction,
    pub baseline: Option<Metric>,
    pub now: Option<Metric>,
    pub change_pct: Option<f64>,
    pub verdict: Verdict,
}

/// Every metric of `now` and `base`, judged.
pub fn compare(
    base: &Baseline,
    now: &BTreeMap<String, Metric>,
    targets: Option<&Targets>,
    workload: &str,
) -> Vec<Compared> {
    let mut names: Vec<&String> = base.metrics.keys().chain(now.keys()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .map(|name| {
            let (b, n) = (base.metrics.get(name), now.get(name));
            let direction = direction(targets, workload, name);
            let (change_pct, verdict) = match (b, n) {
                (Some(b), Some(n)) => {
                    let change = if b.median == n.median {
                        0.0
                    } else {
                        (n.median - b.median) / b.median.abs().max(1e-12) * 100.0
                    };
                    let worse = match direction {
                        Direction::Higher => n.hi < b.lo,
                        Direction::Lower => n.lo > b.hi,
                        Direction::Unknown => false,
                    };
                    let better = match direction {
                        Direction::Higher => n.lo > b.hi,
                        Direction::Lower => n.hi < b.lo,
                        Direction::Unknown => false,
                    };
                    let verdict = if direction == Direction::Unknown {
                        Verdict::Unjudged
                    } else if change.abs() <= THRESHOLD_PCT {
                        Verdict::Same
                    } else if worse {
                        Verdict::Regressed
                    } else if better {
                        Verdict::Improved
                    } else {
                        Verdict::Noise
                    };
                    (Some(change), verdict)
                }
                _ => (None, Verdict::Missing),
            };
            Compared {
                metric: name.clone(),
                direction,
                baseline: b.cloned(),
                now: n.cloned(),
                change_pct,
                verdict,
            }
        })
        .collect()
}

/// The judged rows (regressed, improved, noise) as a table, and a count of
/// the rest.
pub fn table(rows: &[Compared]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let judged: Vec<&Compared> = rows
        .iter()
        .filter(|r| {
            matches!(
                r.verdict,
                Verdict::Regressed | Verdict::Improved | Verdict::Noise
            )
        })
        .collect();
    if !judged.is_empty() {
        let _ = writeln!(
            out,
            "{:<48} {:>26} {:>26} {:>9}  verdict",
            "metric", "baseline median [CI]", "now median [CI]", "change"
        );
    }
    let fmt = |m: &Option<Metric>| {
        m.as_ref().map_or("-".to_string(), |m| {
            format!("{} [{}, {}]", short(m.median), short(m.lo), short(m.hi))
        })
    };
    for r in judged {
        let _ = writeln!(
            out,
            "{:<48} {:>26} {:>26} {:>8.1}%  {:?}",
            r.metric,
            fmt(&r.baseline),
            fmt(&r.now),
            r.change_pct.unwrap_or(f64::NAN),
            r.verdict
        );
    }
    let count = |v: Verdict| rows.iter().filter(|r| r.verdict == v).count();
    let _ = writeln!(
        out,
        "{} same, {} regressed, {} improved, {} noise (beyond {THRESHOLD_PCT} % but inside the intervals), {} not judged (no known direction), {} in one run only",
        count(Verdict::Same),
        count(Verdict::Regressed),
        count(Verdict::Improved),
        count(Verdict::Noise),
        count(Verdict::Unjudged),
        count(Verdict::Missing),
    );
    out
}

fn short(v: f64) -> String {
    if v.abs() >= 1e6 || (v != 0.0 && v.abs() < 1e-2) {
        format!("{v:.3e}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_median_interval_has_the_stated_coverage() {
        let s: Vec<f64> = (1..=5).map(f64::from).collect();
        let m = Metric::new(s);
        assert_eq!((m.median, m.lo, m.hi), (3.0, 1.0, 5.0));
        assert!((coverage(5) - 0.9375).abs() < 1e-9);
        // k = 10: [x(2), x(9)], coverage 97.9 %.
        let m = Metric::new((1..=10).map(f64::from).collect());
        assert_eq!((m.median, m.lo, m.hi), (5.5, 2.0, 9.0));
        assert!(coverage(10) >= 0.9);
        let one = Metric::new(vec![7.0]);
        assert_eq!((one.median, one.lo, one.hi), (7.0, 7.0, 7.0));
    }

    #[test]
    fn numbers_are_found_by_pointer() {
        let f = flatten(&json!([{"p50_us": 1.5, "name": "x", "nested": {"a/b": 2}}]));
        assert_eq!(f.get("/0/p50_us"), Some(&1.5));
        assert_eq!(f.get("/0/nested/a~1b"), Some(&2.0));
        assert_eq!(f.len(), 2);
    }

    fn base(runs: &[Value]) -> Baseline {
        Baseline::new("rr", runs)
    }

    #[test]
    fn only_a_supported_change_beyond_the_threshold_is_a_regression() {
        let runs = |v: [f64; 3], t: [f64; 3]| -> Vec<Value> {
            (0..3)
                .map(|i| json!({"p50_us": v[i], "msgs_per_sec": t[i], "samples": 10 + i}))
                .collect()
        };
        let b = base(&runs([100.0, 101.0, 102.0], [1000.0, 1010.0, 990.0]));
        let verdict = |now: Vec<Value>, m: &str| {
            compare(&b, &metrics(&now), None, "rr")
                .into_iter()
                .find(|r| r.metric == m)
                .map(|r| r.verdict)
        };
        // Unchanged.
        let same = runs([100.5, 101.0, 101.5], [1000.0, 1005.0, 995.0]);
        assert_eq!(verdict(same.clone(), "/p50_us"), Some(Verdict::Same));
        assert_eq!(verdict(same.clone(), "/samples"), Some(Verdict::Unjudged));
        // Latency up 20 %, intervals apart: regression; throughput down too.
        let slow = runs([120.0, 121.0, 122.0], [800.0, 810.0, 790.0]);
        assert_eq!(verdict(slow.clone(), "/p50_us"), Some(Verdict::Regressed));
        assert_eq!(verdict(slow, "/msgs_per_sec"), Some(Verdict::Regressed));
        // Median up 20 % but one run as fast as before: noise.
        let noisy = runs([100.0, 121.0, 122.0], [1000.0, 1010.0, 990.0]);
        assert_eq!(verdict(noisy, "/p50_us"), Some(Verdict::Noise));
        // Faster: improved, never a failure.
        let fast = runs([80.0, 81.0, 82.0], [1000.0, 1010.0, 990.0]);
        assert_eq!(verdict(fast, "/p50_us"), Some(Verdict::Improved));
    }

    #[test]
    fn names_of_paths_and_baselines() {
        assert_eq!(path_of("a"), Path::new("target/bench-baselines/a.json"));
        assert_eq!(path_of("x/b.json"), Path::new("x/b.json"));
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("b.json");
        base(&[json!({"p50_us": 1})]).save(&p).unwrap();
        assert_eq!(Baseline::load(&p).unwrap().repeats, 1);
        std::fs::write(&p, "[]").unwrap();
        assert!(Baseline::load(&p).is_err());
    }
}
