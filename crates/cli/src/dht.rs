//! `peerlink dht put|get|closest` and `peerlink status`: commands sent to a
//! running node over its control socket.

use std::path::{Path, PathBuf};

use anyhow::Result;
use peerlink_net::control::{ControlClient, ControlRequest};
use serde_json::Value;

/// How a command reaches a running node, and how it prints the answer.
#[derive(clap::Args)]
pub struct ControlOpts {
    /// The node's control socket.
    #[arg(long, global = true, default_value_os_t = crate::default_control_path())]
    pub control: PathBuf,
    /// Print the node's JSON answer (one line per message for `gossip sub`).
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    opts: ControlOpts,
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand)]
enum What {
    /// Sign VALUE with the node's key and store it under KEY on the peers
    /// closest to it (KEY is any text; it is hashed with BLAKE3).
    Put { key: String, value: String },
    /// Fetch the newest record under KEY; exits with status 1 if none.
    Get { key: String },
    /// The peers closest to KEY.
    Closest { key: String },
}

pub async fn call(control: &Path, req: ControlRequest) -> Result<Value> {
    let mut c = ControlClient::connect(control).await?;
    Ok(c.call(&req).await?)
}

fn ms(v: &Value) -> f64 {
    v["elapsed_ms"].as_f64().unwrap_or(0.0)
}

pub async fn run(args: Args) -> Result<()> {
    let req = match &args.what {
        What::Put { key, value } => ControlRequest::DhtPut {
            key: key.clone(),
            value: value.clone(),
        },
        What::Get { key } => ControlRequest::DhtGet { key: key.clone() },
        What::Closest { key } => ControlRequest::DhtClosest { key: key.clone() },
    };
    let v = call(&args.opts.control, req).await?;
    let found = v["found"].as_bool();
    if args.opts.json {
        println!("{v}");
    } else {
        match args.what {
            What::Put { .. } => eprintln!(
                "stored on {} peers ({} answered, {} failed, {:.1} ms)",
                v["stored"],
                v["answered"],
                v["failed"],
                ms(&v)
            ),
            What::Get { key } => match (v["value"].as_str(), v["value_hex"].as_str()) {
                (Some(text), _) => {
                    println!("{text}");
                    eprintln!(
                        "seq {} from {} ({} answered, {} hops, {:.1} ms)",
                        v["seq"],
                        v["publisher"],
                        v["answered"],
                        v["hops"],
                        ms(&v)
                    );
                }
                (None, Some(hex)) => println!("{hex}"),
                (None, None) => eprintln!(
                    "no record under {key:?} ({} peers answered, {:.1} ms)",
                    v["answered"],
                    ms(&v)
                ),
            },
            What::Closest { .. } => {
                for p in v["peers"].as_array().into_iter().flatten() {
                    println!("{}", p.as_str().unwrap_or_default());
                }
                eprintln!(
                    "{} answered, {} hops, {:.1} ms",
                    v["answered"],
                    v["hops"],
                    ms(&v)
                );
            }
        }
    }
    if found == Some(false) {
        std::process::exit(1);
    }
    Ok(())
}

pub async fn status(control: &Path) -> Result<()> {
    let v = call(control, ControlRequest::Info).await?;
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}
