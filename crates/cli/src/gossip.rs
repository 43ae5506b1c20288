//! `peerlink gossip sub|pub`: topic gossip through a running node's
//! control socket.

use anyhow::Result;
use peerlink_net::control::{ControlClient, ControlRequest};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    opts: crate::dht::ControlOpts,
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand)]
enum What {
    /// Subscribe to TOPIC and print its messages as they arrive (until
    /// interrupted, or after --count messages).
    Sub {
        topic: String,
        #[arg(long)]
        count: Option<u64>,
    },
    /// Publish MESSAGE on TOPIC.
    Pub { topic: String, message: String },
}

pub async fn run(args: Args) -> Result<()> {
    let mut c = ControlClient::connect(&args.opts.control).await?;
    match args.what {
        What::Pub { topic, message } => {
            let v = c
                .call(&ControlRequest::GossipPublish {
                    topic: topic.clone(),
                    message,
                })
                .await?;
            if args.opts.json {
                println!("{v}");
            } else if v["peers"].as_u64() == Some(0) {
                eprintln!(
                    "published {}, but no connected peer subscribes to {topic:?} yet: it stays \
                     available to peers that ask for it for a few seconds",
                    v["id"]
                );
            } else {
                eprintln!("published {} to {} peers", v["id"], v["peers"]);
            }
        }
        What::Sub { topic, count } => {
            c.call(&ControlRequest::GossipSubscribe {
                topic: topic.clone(),
            })
            .await?;
            eprintln!("subscribed to {topic:?}");
            let mut n = 0;
            while count.is_none_or(|c| n < c) {
                let v = c.next().await?;
                n += 1;
                let m = &v["message"];
                if args.opts.json {
                    println!("{m}");
                } else {
                    match m["data"].as_str() {
                        Some(text) => println!("{text}"),
                        None => println!("{}", m["data_hex"].as_str().unwrap_or_default()),
                    }
                }
            }
        }
    }
    Ok(())
}
