use peerlink_sim::{Sim, SimConfig};
use std::time::Instant;
fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    let t = Instant::now();
    let mut sim = Sim::new(SimConfig {
        nodes: n,
        seed: 1,
        ..SimConfig::default()
    });
    println!("create {:?}", t.elapsed());
    let t = Instant::now();
    sim.join_all();
    let e = t.elapsed();
    println!(
        "join {:?} events {} msgs {} -> {:.0} ev/s, virtual {:?}, table entries/node {}",
        e,
        sim.stats.events,
        sim.stats.messages,
        sim.stats.events as f64 / e.as_secs_f64(),
        sim.now(),
        sim.table_entries() / n
    );
    let q: usize = (0..n).map(|i| sim.dht(i).queries_in_flight()).sum();
    println!("queries in flight {q}");
}
