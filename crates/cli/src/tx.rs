//! `peerlink tx genesis | submit | nonce | pool | show`: the transaction
//! pool through a running node's control socket (`peerlink node
//! --txpool`), and the genesis file such a network starts from.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use peerlink_net::control::ControlClient;
use peerlink_net::{keyfile, PeerId};
use peerlink_txpool::control::TxCommand;
use peerlink_txpool::{Genesis, Transaction};
use serde_json::Value;

use crate::dht::ControlOpts;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand)]
enum What {
    /// Write a genesis file: the producers (taking heights in turn) and
    /// the opening balances.
    Genesis {
        /// A producer's peer id (repeatable, in turn order).
        #[arg(long = "producer", required = true)]
        producers: Vec<String>,
        /// An opening balance, as <peer-id>=<amount> (repeatable).
        #[arg(long = "fund")]
        funds: Vec<String>,
        /// Where to write it (refuses to overwrite); stdout without.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Sign a transaction and submit it to the node: with the node's own
    /// key, or with --key FILE (signed here; the key never reaches the
    /// node). Answers once the node has it on disk.
    Submit {
        /// Sign with this key file instead of the node's key.
        #[arg(long)]
        key: Option<PathBuf>,
        /// The payload, as text.
        #[arg(long, default_value = "")]
        payload: String,
        /// Fee per byte (default: the pool's floor).
        #[arg(long)]
        fee_rate: Option<u64>,
        /// Default: the sender's next free nonce, asked of the node.
        #[arg(long)]
        nonce: Option<u64>,
        #[command(flatten)]
        opts: ControlOpts,
    },
    /// The nonce a sender's next transaction should carry (default: the
    /// node's own).
    Nonce {
        sender: Option<String>,
        #[command(flatten)]
        opts: ControlOpts,
    },
    /// Pending and queued counts, the chain height and the best N
    /// executable transactions.
    Pool {
        #[arg(long, default_value_t = 10)]
        best: usize,
        #[command(flatten)]
        opts: ControlOpts,
    },
    /// One transaction: pending, queued, or included at a height.
    Show {
        id: String,
        #[command(flatten)]
        opts: ControlOpts,
    },
}

/// `<peer-id>=<amount>`.
fn parse_fund(s: &str) -> Result<(PeerId, u128)> {
    let (id, amount) = s
        .split_once('=')
        .with_context(|| format!("--fund {s:?}: write <peer-id>=<amount>"))?;
    let id: PeerId = id
        .trim()
        .parse()
        .with_context(|| format!("--fund {s:?}: {id:?} is not a peer id"))?;
    let amount: u64 = amount
        .trim()
        .parse()
        .with_context(|| format!("--fund {s:?}: {amount:?} is not an amount (0 to 2^63 - 1)"))?;
    if amount > i64::MAX as u64 {
        bail!("--fund {s:?}: amounts go up to 2^63 - 1");
    }
    Ok((id, amount.into()))
}

async fn call(opts: &ControlOpts, cmd: &TxCommand) -> Result<Value> {
    let mut client = ControlClient::connect(&opts.control)
        .await
        .with_context(|| {
            format!(
                "no node answers on {} (start one with `peerlink node --txpool --genesis FILE`)",
                opts.control.display()
            )
        })?;
    Ok(client.call_extension(&cmd.to_value(), |_| {}).await?)
}

pub async fn run(args: Args) -> Result<()> {
    match args.what {
        What::Genesis {
            producers,
            funds,
            out,
        } => {
            let producers = producers
                .iter()
                .map(|p| {
                    p.parse::<PeerId>()
                        .with_context(|| format!("--producer {p:?} is not a peer id"))
                })
                .collect::<Result<Vec<_>>>()?;
            let accounts = funds
                .iter()
                .map(|f| parse_fund(f))
                .collect::<Result<Vec<_>>>()?;
            let text = Genesis {
                producers,
                accounts,
            }
            .to_toml();
            // Read back as a node would, so a file written is one that loads.
            Genesis::from_toml(&text)?;
            match out {
                Some(path) => {
                    peerlink_net::fsutil::write_atomic(&path, text.as_bytes(), false)
                        .with_context(|| format!("writing {}", path.display()))?;
                    eprintln!("wrote {}", path.display());
                }
                None => print!("{text}"),
            }
        }
        What::Submit {
            key,
            payload,
            fee_rate,
            nonce,
            opts,
        } => {
            let cmd = match key {
                None => TxCommand::TxSubmit {
                    tx: None,
                    payload: Some(hex::encode(payload.as_bytes())),
                    fee_rate,
                    nonce,
                },
                Some(path) => {
                    let key = keyfile::load(&path)
                        .with_context(|| format!("reading key {}", path.display()))?;
                    let nonce = match nonce {
                        Some(n) => n,
                        None => {
                            let sender = key.peer_id().to_string();
                            let v = call(&opts, &TxCommand::TxNonce { sender }).await?;
                            v["nonce"].as_u64().context("the node sent no nonce")?
                        }
                    };
                    let tx = Transaction::sign(
                        &key,
                        nonce,
                        fee_rate.unwrap_or(1),
                        payload.into_bytes(),
                    )?;
                    TxCommand::TxSubmit {
                        tx: Some(hex::encode(tx.encoded())),
                        payload: None,
                        fee_rate: None,
                        nonce: None,
                    }
                }
            };
            let v = call(&opts, &cmd).await?;
            if opts.json {
                println!("{v}");
            } else {
                println!(
                    "{} ({} nonce {}, fee rate {}, {} bytes): {}",
                    v["id"].as_str().unwrap_or("?"),
                    v["sender"].as_str().unwrap_or("?"),
                    v["nonce"],
                    v["fee_rate"],
                    v["size"],
                    v["placed"].as_str().unwrap_or("?")
                );
            }
        }
        What::Nonce { sender, opts } => {
            let sender = match sender {
                Some(s) => s,
                None => {
                    let v = crate::dht::call(
                        &opts.control,
                        peerlink_net::control::ControlRequest::Info,
                    )
                    .await?;
                    v["peer_id"]
                        .as_str()
                        .context("the node sent no peer id")?
                        .to_string()
                }
            };
            let v = call(&opts, &TxCommand::TxNonce { sender }).await?;
            if opts.json {
                println!("{v}");
            } else {
                println!("{}", v["nonce"]);
            }
        }
        What::Pool { best, opts } => {
            let v = call(&opts, &TxCommand::TxPool { best }).await?;
            if opts.json {
                println!("{v}");
                return Ok(());
            }
            println!(
                "height {}: {} pending, {} queued ({} bytes, {} senders); {} announced and wanted, {} blocks held, {} equivocations",
                v["height"], v["pending"], v["queued"], v["bytes"], v["senders"], v["wanted"], v["held_blocks"], v["equivocations"]
            );
            for t in v["best"].as_array().cloned().unwrap_or_default() {
                println!(
                    "  {}  fee rate {:>6}  {} nonce {}",
                    t["id"].as_str().unwrap_or("?"),
                    t["fee_rate"],
                    t["sender"].as_str().unwrap_or("?"),
                    t["nonce"]
                );
            }
        }
        What::Show { id, opts } => {
            let v = call(&opts, &TxCommand::TxShow { id }).await?;
            if opts.json {
                println!("{v}");
                return Ok(());
            }
            let state = v["state"].as_str().unwrap_or("?");
            match v["height"].as_u64() {
                Some(h) => println!("{}: {state} at height {h}", v["id"].as_str().unwrap_or("?")),
                None => println!("{}: {state}", v["id"].as_str().unwrap_or("?")),
            }
            if v["sender"].is_string() {
                println!(
                    "  sender {} nonce {} fee rate {} size {} payload {}",
                    v["sender"].as_str().unwrap_or("?"),
                    v["nonce"],
                    v["fee_rate"],
                    v["size"],
                    v["payload"].as_str().unwrap_or("")
                );
            }
        }
    }
    Ok(())
}
