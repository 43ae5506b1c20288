//! `peerlink` — run a node, talk to one, or run a local devnet and benchmarks.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use peerlink_net::control::ControlRequest;
use peerlink_net::{
    keyfile, resolve_peer_addr, Limits, Node, NodeConfig, PeerEvent, TransportAddr,
};

mod bench;
mod bench_registry;
mod devnet;
mod dht;
mod gossip;
mod registry;
mod sim;
mod tx;

#[derive(Parser)]
#[command(
    name = "peerlink",
    version,
    about = "Authenticated, encrypted peer-to-peer networking"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a new identity key file (mode 0600) and print its peer id.
    Keygen {
        #[arg(long, default_value_os_t = default_key_path())]
        key: PathBuf,
    },
    /// Print the peer id of a key file.
    Id {
        #[arg(long, default_value_os_t = default_key_path())]
        key: PathBuf,
    },
    /// Run a node until Ctrl-C.
    Node(NodeOpts),
    /// Store and fetch records through a running node.
    Dht(dht::Args),
    /// Topic gossip through a running node: subscribe, publish.
    Gossip(gossip::Args),
    /// Print a running node's peer id, addresses, connections and DHT state.
    Status {
        #[arg(long, default_value_os_t = default_control_path())]
        control: PathBuf,
    },
    /// Keep a peer out of a running node: its connection closes and it
    /// may not connect again until the ban ends.
    Ban {
        /// The peer id.
        peer: String,
        /// How long, e.g. 10m, 1h, 7d.
        #[arg(long = "for", default_value = "1h", value_parser = parse_ban)]
        duration: Duration,
        #[arg(long, default_value_os_t = default_control_path())]
        control: PathBuf,
    },
    /// Lift a ban: a peer id, or an address banned after repeated offences.
    Unban {
        peer: String,
        #[arg(long, default_value_os_t = default_control_path())]
        control: PathBuf,
    },
    /// Connect to a node and print round-trip times.
    Ping {
        /// The node, as <peer-id>@host:port (TCP) or <peer-id>@quic://host:port.
        peer: String,
        #[arg(long, short, default_value_t = 5)]
        count: u32,
        /// Milliseconds between pings.
        #[arg(long, default_value_t = 200)]
        interval_ms: u64,
    },
    #[command(flatten)]
    Registry(registry::Command),
    /// The transaction pool of a running node (`node --txpool`): submit,
    /// nonce, pool, show; and `tx genesis` to write a genesis file.
    Tx(tx::Args),
    /// Start a local network of nodes in this process, exercise it, report.
    Devnet(devnet::Args),
    /// Measure peerlink against raw TCP on loopback.
    Bench(bench::Args),
    /// Run protocol code in the deterministic simulator.
    Sim(sim::Args),
}

/// `$PEERLINK_HOME`, else `~/.peerlink`: the node's key, data and
/// control socket.
fn home_dir() -> PathBuf {
    std::env::var_os("PEERLINK_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".peerlink")))
        .unwrap_or_else(|| PathBuf::from(".peerlink"))
}

/// A ban's length: `90s`, `10m`, `1h`, `7d` (1 second to 365 days).
fn parse_ban(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 10m or 1h"))?;
    let unit_secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{s:?}: give a unit, s, m, h or d")),
    };
    let secs = n.saturating_mul(unit_secs);
    if !(1..=365 * 86_400).contains(&secs) {
        return Err(format!("{s:?} is not between 1s and 365d"));
    }
    Ok(Duration::from_secs(secs))
}

fn default_key_path() -> PathBuf {
    home_dir().join("node.key")
}

fn default_control_path() -> PathBuf {
    home_dir().join(peerlink_net::control::SOCKET_NAME)
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "peerlink=info,warn".into()),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Keygen { key } => {
            if key.exists() {
                anyhow::bail!(
                    "{} already exists; refusing to overwrite an identity",
                    key.display()
                );
            }
            let kp = keyfile::load_or_create(&key)
                .with_context(|| format!("creating {}", key.display()))?;
            println!("{}", kp.peer_id());
            eprintln!("wrote {}", key.display());
        }
        Command::Id { key } => {
            let kp = keyfile::load(&key).with_context(|| {
                format!("reading {} (run `peerlink keygen` first?)", key.display())
            })?;
            println!("{}", kp.peer_id());
        }
        Command::Node(opts) => run_node(opts).await?,
        Command::Dht(args) => dht::run(args).await?,
        Command::Gossip(args) => gossip::run(args).await?,
        Command::Status { control } => dht::status(&control).await?,
        Command::Ban {
            peer,
            duration,
            control,
        } => {
            let secs = duration.as_secs();
            dht::call(
                &control,
                ControlRequest::Ban {
                    peer: peer.clone(),
                    secs,
                },
            )
            .await?;
            println!("banned {peer} for {secs} s");
        }
        Command::Unban { peer, control } => {
            let v = dht::call(&control, ControlRequest::Unban { peer: peer.clone() }).await?;
            if v["unbanned"] == true {
                println!("unbanned {peer}");
            } else {
                anyhow::bail!("{peer} was not banned");
            }
        }
        Command::Ping {
            peer,
            count,
            interval_ms,
        } => ping(&peer, count, interval_ms).await?,
        Command::Registry(cmd) => registry::run(cmd).await?,
        Command::Tx(args) => tx::run(args).await?,
        Command::Devnet(args) => devnet::run(args).await?,
        Command::Bench(args) => bench::run(args).await?,
        Command::Sim(args) => tokio::task::spawn_blocking(move || sim::run(args)).await??,
    }
    Ok(())
}

#[derive(clap::Args)]
struct NodeOpts {
    /// Addresses to listen on (repeatable): 0.0.0.0:4001 or
    /// tcp://0.0.0.0:4001 for TCP, quic://0.0.0.0:4001 for QUIC.
    #[arg(long, default_value = "0.0.0.0:4001")]
    listen: Vec<TransportAddr>,
    /// Seed peers, as <peer-id>@host:port (TCP) or
    /// <peer-id>@quic://host:port (repeatable).
    #[arg(long)]
    bootstrap: Vec<String>,
    /// Identity key file; created if missing.
    #[arg(long, default_value_os_t = default_key_path())]
    key: PathBuf,
    /// Serve Prometheus metrics over HTTP on this address.
    #[arg(long)]
    metrics: Option<SocketAddr>,
    /// Maximum connected peers.
    #[arg(long, default_value_t = Limits::default().max_peers)]
    max_peers: usize,
    /// Where DHT records are kept across restarts.
    #[arg(long, default_value_os_t = home_dir().join("data"))]
    data_dir: PathBuf,
    /// The local control socket (`peerlink dht ...` talk to it).
    #[arg(long, default_value_os_t = default_control_path())]
    control: PathBuf,
    /// Run the transaction pool (needs --genesis); its chain is kept in
    /// <data-dir>/txpool.
    #[arg(long, requires = "genesis")]
    txpool: bool,
    /// The genesis file of the transaction network (`peerlink tx genesis`).
    #[arg(long)]
    genesis: Option<PathBuf>,
    /// Produce a block this often when it is this node's turn (its key
    /// must be a producer in the genesis), e.g. 500ms.
    #[arg(long, requires = "txpool", value_parser = bench::parse_duration)]
    produce_every: Option<Duration>,
}

async fn run_node(opts: NodeOpts) -> Result<()> {
    let NodeOpts {
        listen,
        bootstrap,
        key,
        metrics,
        max_peers,
        data_dir,
        control,
        txpool,
        genesis,
        produce_every,
    } = opts;
    let genesis = match (&genesis, txpool) {
        (Some(path), true) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading genesis {}", path.display()))?;
            Some(peerlink_txpool::Genesis::from_toml(&text)?)
        }
        _ => None,
    };
    let keypair =
        keyfile::load_or_create(&key).with_context(|| format!("loading key {}", key.display()))?;
    let mut seeds = Vec::new();
    for b in &bootstrap {
        seeds.push(
            resolve_peer_addr(b)
                .await
                .with_context(|| format!("bad --bootstrap {b:?}"))?,
        );
    }
    let config = NodeConfig {
        limits: Limits {
            max_peers,
            ..Limits::default()
        },
        ..NodeConfig::default()
    };
    let mut builder = Node::builder().keypair(keypair);
    for at in listen {
        builder = builder.listen_on(at);
    }
    let node = builder
        .bootstrap(seeds)
        .config(config)
        .data_dir(&data_dir)
        .build()
        .await?;
    for addr in node.addrs() {
        println!("listening on {addr}");
    }
    let registry = peerlink_registry::Registry::start(
        node.clone(),
        peerlink_registry::RegistryConfig::new(data_dir.join("registry")),
    )
    .await?;
    let mut extensions: Vec<Arc<dyn peerlink_net::control::ControlExtension>> =
        vec![Arc::new(registry)];
    let _pool = match genesis {
        Some(genesis) => {
            if produce_every.is_some() && !genesis.producers.contains(&node.peer_id()) {
                anyhow::bail!(
                    "--produce-every: this node ({}) is not a producer in the genesis file",
                    node.peer_id()
                );
            }
            let mut config = peerlink_txpool::TxPoolConfig::new(genesis);
            config.produce_every = produce_every;
            let pool =
                peerlink_txpool::TxPool::open(&node, config, &data_dir.join("txpool")).await?;
            let st = pool.status();
            println!(
                "txpool at height {} ({} pending, {} queued){}",
                st.height,
                st.pool.pending,
                st.pool.queued,
                if produce_every.is_some() {
                    ", producing"
                } else {
                    ""
                }
            );
            extensions.push(pool.control());
            Some(pool)
        }
        None => None,
    };
    let _control = peerlink_net::control::serve_with(node.clone(), &control, extensions).await?;
    println!("control socket {}", control.display());
    if let Some(addr) = metrics {
        let (bound, _task) = peerlink_net::serve_metrics(node.clone(), addr).await?;
        println!("metrics on http://{bound}/metrics");
    }
    let mut events = node.events();
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            ev = events.recv() => match ev {
                Ok(PeerEvent::Connected { peer, addr, inbound }) => {
                    tracing::info!("connected {} {peer}@{addr}", if inbound { "from" } else { "to" });
                }
                Ok(PeerEvent::Disconnected { peer, reason }) => tracing::info!("disconnected {peer}: {reason}"),
                Err(_) => {}
            },
        }
    }
    eprintln!("shutting down");
    node.shutdown().await;
    Ok(())
}

async fn ping(peer: &str, count: u32, interval_ms: u64) -> Result<()> {
    let target = resolve_peer_addr(peer)
        .await
        .with_context(|| format!("bad peer address {peer:?}"))?;
    let node = Node::builder().build().await?;
    let start = std::time::Instant::now();
    node.connect(target)
        .await
        .with_context(|| format!("connecting to {target}"))?;
    println!(
        "connected to {target} in {:.2} ms",
        start.elapsed().as_secs_f64() * 1e3
    );
    let mut rtts = Vec::new();
    for i in 0..count {
        let rtt = node.ping(&target.id).await?;
        println!("rtt {:>3}: {:.1} µs", i + 1, rtt.as_secs_f64() * 1e6);
        rtts.push(rtt);
        if i + 1 < count {
            tokio::time::sleep(Duration::from_millis(interval_ms)).await;
        }
    }
    if !rtts.is_empty() {
        rtts.sort();
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        println!(
            "{} pings: min {:.1} µs, median {:.1} µs, max {:.1} µs",
            rtts.len(),
            us(rtts[0]),
            us(rtts[rtts.len() / 2]),
            us(rtts[rtts.len() - 1])
        );
    }
    node.shutdown().await;
    Ok(())
}
