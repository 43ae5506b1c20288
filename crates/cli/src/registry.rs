//! `peerlink publish | search | install | info`: the package registry
//! through a running node's control socket.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use peerlink_net::control::ControlClient;
use peerlink_registry::control::RegistryCommand;
use serde_json::Value;

use crate::dht::ControlOpts;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Sign and publish the package in DIR (a directory with package.toml):
    /// stores it, puts its record in the DHT and announces it.
    Publish {
        dir: PathBuf,
        #[command(flatten)]
        opts: ControlOpts,
    },
    /// Search package names, descriptions and keywords: the node's local
    /// index first, peers too with --remote or when it finds too little.
    Search {
        query: String,
        #[arg(long)]
        remote: bool,
        #[arg(long, default_value_t = 10)]
        limit: usize,
        #[command(flatten)]
        opts: ControlOpts,
    },
    /// Resolve, fetch, verify and unpack NAME[@REQUIREMENT] with its
    /// dependencies into --to (each as NAME-VERSION).
    Install {
        spec: String,
        #[arg(long, default_value = "packages")]
        to: PathBuf,
        #[command(flatten)]
        opts: ControlOpts,
    },
    /// Every known release of NAME, with its owner.
    Info {
        name: String,
        #[command(flatten)]
        opts: ControlOpts,
    },
}

fn absolute(p: &Path) -> Result<PathBuf> {
    Ok(if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()?.join(p)
    })
}

pub async fn run(cmd: Command) -> Result<()> {
    let (opts, req) = match &cmd {
        Command::Publish { dir, opts } => {
            let dir = dir
                .canonicalize()
                .with_context(|| format!("{}", dir.display()))?;
            (opts, RegistryCommand::RegistryPublish { dir })
        }
        Command::Search {
            query,
            remote,
            limit,
            opts,
        } => (
            opts,
            RegistryCommand::RegistrySearch {
                query: query.clone(),
                remote: *remote,
                limit: *limit,
            },
        ),
        Command::Install { spec, to, opts } => (
            opts,
            RegistryCommand::RegistryInstall {
                spec: spec.clone(),
                to: absolute(to)?,
            },
        ),
        Command::Info { name, opts } => {
            (opts, RegistryCommand::RegistryInfo { name: name.clone() })
        }
    };
    let mut client = ControlClient::connect(&opts.control).await?;
    let bars = MultiProgress::new();
    let mut by_id: HashMap<String, ProgressBar> = HashMap::new();
    let show_progress = !opts.json && matches!(cmd, Command::Install { .. });
    let v = client
        .call_extension(&req.to_value(), |p| {
            if let Some(note) = p["note"].as_str() {
                // Said even with --json, on stderr: why an install waits.
                if bars.is_hidden() {
                    eprintln!("{note}");
                } else {
                    let _ = bars.println(note);
                }
                return;
            }
            if !show_progress {
                return;
            }
            let id = p["id"].as_str().unwrap_or("?").to_string();
            let bar = by_id.entry(id.clone()).or_insert_with(|| {
                let b = bars.add(ProgressBar::new(p["total"].as_u64().unwrap_or(0)));
                b.set_style(
                    ProgressStyle::with_template("{msg:30} {bar:30} {bytes}/{total_bytes}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                b.set_message(id);
                b
            });
            bar.set_position(p["done"].as_u64().unwrap_or(0));
        })
        .await?;
    for b in by_id.values() {
        b.finish();
    }
    if opts.json {
        println!("{v}");
        return Ok(());
    }
    print_human(&cmd, &v);
    Ok(())
}

fn print_human(cmd: &Command, v: &Value) {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    match cmd {
        Command::Publish { .. } => println!(
            "published {}@{} ({} bytes, {}): record on {} peers, provider on {}, announced to {} in {:.1} ms",
            s(&v["name"]),
            s(&v["version"]),
            v["size"],
            &s(&v["blob"])[..12.min(s(&v["blob"]).len())],
            v["record_stored"],
            v["provider_stored"],
            v["announced_to"],
            v["elapsed_ms"].as_f64().unwrap_or(0.0)
        ),
        Command::Search { .. } => {
            let hits = v["hits"].as_array().cloned().unwrap_or_default();
            for h in &hits {
                println!(
                    "{:30} {:10} {}",
                    s(&h["name"]),
                    s(&h["version"]),
                    s(&h["description"])
                );
            }
            eprintln!(
                "{} hits ({} local; {} of {} peers answered) in {} µs",
                hits.len(),
                v["local_hits"],
                v["peers_answered"],
                v["peers_asked"],
                v["elapsed_us"]
            );
        }
        Command::Install { .. } => {
            for p in v["packages"].as_array().cloned().unwrap_or_default() {
                println!(
                    "installed {}@{} at {} (from {})",
                    s(&p["name"]),
                    s(&p["version"]),
                    s(&p["path"]),
                    s(&p["source"])
                );
            }
            eprintln!(
                "resolved in {:.1} ms, fetched in {:.1} ms, {:.1} ms in all; cache hit rate {:.0} %",
                v["resolve_ms"].as_f64().unwrap_or(0.0),
                v["fetch_ms"].as_f64().unwrap_or(0.0),
                v["elapsed_ms"].as_f64().unwrap_or(0.0),
                v["cache_hit_rate"].as_f64().unwrap_or(0.0) * 100.0
            );
        }
        Command::Info { .. } => {
            println!("{} (owner {})", s(&v["name"]), s(&v["owner"]));
            for r in v["releases"].as_array().cloned().unwrap_or_default() {
                let deps = r["dependencies"]
                    .as_object()
                    .map(|d| {
                        d.iter()
                            .map(|(k, v)| format!("{k} {}", v.as_str().unwrap_or_default()))
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default();
                println!(
                    "  {:10} {:>9} bytes  {}{}",
                    s(&r["version"]),
                    r["size"],
                    s(&r["description"]),
                    if deps.is_empty() {
                        String::new()
                    } else {
                        format!("  [needs {deps}]")
                    }
                );
            }
        }
    }
}
