//! Where a result came from: every `--json` file carries the commit (and
//! whether the tree had uncommitted changes), the machine, the arguments,
//! the time and the versions, so a figure can be traced and compared.

use std::process::Command;

use serde::Serialize;

/// Bumped when the results document changes shape.
pub const SCHEMA: u32 = 1;

#[derive(Clone, Debug, Serialize)]
pub struct Provenance {
    /// `git rev-parse HEAD` of the source tree this binary was built from,
    /// if it is still there.
    pub commit: Option<String>,
    /// Tracked files changed since that commit.
    pub dirty: Option<bool>,
    pub machine: Machine,
    /// The command line.
    pub args: Vec<String>,
    /// RFC 3339, UTC.
    pub timestamp: String,
    pub peerlink_version: &'static str,
    /// Versions of the dependencies the figures hang on most (tokio,
    /// snow, ring, ...), from the lock file this was built with.
    pub crates: std::collections::BTreeMap<&'static str, &'static str>,
    pub rustc: Option<String>,
    /// `release` or `debug`.
    pub profile: &'static str,
}

#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub cpu_model: Option<String>,
    pub kernel: Option<String>,
    pub memory_bytes: Option<u64>,
}

fn run(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

impl Provenance {
    pub fn collect() -> Provenance {
        let tree = env!("CARGO_MANIFEST_DIR");
        // The binary's own compiler (build.rs), not whichever is on PATH now.
        let rustc = Some(env!("PEERLINK_RUSTC_VERSION").to_string()).filter(|v| !v.is_empty());
        let commit = run("git", &["-C", tree, "rev-parse", "HEAD"]);
        let dirty = commit.as_ref().and_then(|_| {
            run(
                "git",
                &["-C", tree, "status", "--porcelain", "--untracked-files=no"],
            )
            .map(|s| !s.is_empty())
        });
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, m)| m.trim().to_string());
        let memory_bytes = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                let line = m.lines().find(|l| l.starts_with("MemTotal:"))?.to_string();
                line.split_whitespace().nth(1)?.parse::<u64>().ok()
            })
            .map(|kib| kib * 1024);
        let timestamp = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        Provenance {
            commit,
            dirty,
            machine: Machine {
                cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
                cpu_model,
                kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                    .ok()
                    .map(|k| k.trim().to_string()),
                memory_bytes,
            },
            args: std::env::args().collect(),
            timestamp,
            peerlink_version: env!("CARGO_PKG_VERSION"),
            crates: env!("PEERLINK_CRATE_VERSIONS")
                .split(',')
                .filter_map(|kv| kv.split_once('='))
                .collect(),
            rustc,
            profile: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            },
        }
    }
}

/// The `--json` document of one workload: its results with their
/// provenance and, when checked, the verdict on every target row (`sla`,
/// null when not checked).
pub fn document(
    workload: &str,
    results: serde_json::Value,
    sla: serde_json::Value,
) -> serde_json::Value {
    serde_json::json!({
        "schema": SCHEMA,
        "workload": workload,
        "provenance": Provenance::collect(),
        "results": results,
        "sla": sla,
    })
}
