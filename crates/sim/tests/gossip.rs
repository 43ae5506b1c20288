//! Gossip in the simulator: 10,000 nodes with 5 % loss (the acceptance
//! run; BENCHMARKS.md has the 100-message `peerlink sim gossip --nodes
//! 10000 --loss 0.05`), churn, partitions, determinism.

use std::time::Duration;

use peerlink_sim::{GossipSim, GossipSimConfig, Latency};

fn config(nodes: usize, seed: u64) -> GossipSimConfig {
    GossipSimConfig {
        nodes,
        seed,
        ..GossipSimConfig::default()
    }
}

#[test]
fn ten_thousand_nodes_with_five_percent_loss_deliver_everything_with_few_duplicates() {
    let mut sim = GossipSim::new(GossipSimConfig {
        loss: 0.05,
        ..config(10_000, 3)
    });
    let r = sim.run(20);
    eprintln!("{r:?}");
    assert!(r.delivery >= 0.9999, "delivery {}", r.delivery);
    assert!(r.repaired > 0, "loss was repaired through IHAVE/IWANT");
    assert!(
        r.duplicates_per_node_per_message <= 1.5,
        "{} duplicates per node per message",
        r.duplicates_per_node_per_message
    );
}

#[test]
fn thirty_percent_killed_mid_stream_the_rest_still_get_every_message() {
    let mut sim = GossipSim::new(GossipSimConfig {
        kill: 0.3,
        ..config(1000, 4)
    });
    let r = sim.run(40);
    eprintln!("{r:?}");
    assert_eq!(r.killed, 300);
    assert!(r.delivery >= 0.9999, "delivery {}", r.delivery);
}

#[test]
fn a_partition_heals_and_delivery_resumes() {
    let mut sim = GossipSim::new(config(600, 5));
    sim.run(5);
    sim.partition(|i| (i % 2) as u32);
    let during = sim.publish(0, b"during the split".to_vec()).unwrap();
    sim.run_for(Duration::from_secs(2));
    let reached = sim.receivers(&during);
    assert!(reached < 400, "half the network is cut off: {reached}");
    sim.heal();
    sim.run_for(Duration::from_secs(3));
    for m in 0..5u8 {
        let id = sim.publish(m as usize * 7 + 1, vec![m; 32]).unwrap();
        sim.run_for(Duration::from_secs(2));
        assert_eq!(sim.receivers(&id), 599, "message {m} after the heal");
    }
}

#[test]
fn same_seed_same_run() {
    // Fixed delays make many events tie, so the order in which a node
    // sends matters: it must not depend on hash-map iteration.
    for latency in [Latency::Geo, Latency::Fixed(Duration::from_millis(20))] {
        let run = || {
            GossipSim::new(GossipSimConfig {
                latency: latency.clone(),
                ..config(300, 9)
            })
            .run(10)
        };
        let (a, b) = (run(), run());
        assert_eq!(
            (
                a.events,
                a.repaired,
                a.latency_ms_p99,
                a.duplicates_per_node_per_message
            ),
            (
                b.events,
                b.repaired,
                b.latency_ms_p99,
                b.duplicates_per_node_per_message
            ),
            "{latency:?}"
        );
    }
}
