//! Gossip state machines driven against each other in memory, with a
//! fake clock: delivery, duplicate suppression, repair, validation and
//! hostile peers.

use std::collections::{HashMap, VecDeque};

use super::*;

type Filter = Box<dyn Fn(usize, usize, &Wire) -> bool>;
type Verdict = Box<dyn Fn(usize, &Bytes) -> Validation>;

/// A network of gossip nodes in memory. Messages are delivered in order
/// after `delay`; `lose` drops chosen messages; `verdict` validates.
struct Net {
    nodes: Vec<Gossip>,
    ids: Vec<PeerId>,
    index: HashMap<PeerId, usize>,
    queue: VecDeque<(Instant, usize, usize, Wire)>,
    now: Instant,
    delay: Duration,
    lose: Filter,
    verdict: Verdict,
    /// Per node: id -> times delivered to the application.
    delivered: Vec<HashMap<MessageId, u32>>,
    misbehaved: Vec<(usize, PeerId, &'static str)>,
    sent: Vec<(usize, usize, Wire)>,
}

fn pid(i: usize) -> PeerId {
    let mut b = [0u8; 32];
    b[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
    PeerId::unverified(b)
}

impl Net {
    fn new(n: usize, config: GossipConfig) -> Net {
        let now = Instant::now();
        let ids: Vec<PeerId> = (0..n).map(pid).collect();
        Net {
            nodes: ids
                .iter()
                .enumerate()
                .map(|(i, id)| Gossip::new(config.clone(), *id, now, i as u64 + 7))
                .collect(),
            index: ids.iter().enumerate().map(|(i, p)| (*p, i)).collect(),
            ids,
            queue: VecDeque::new(),
            now,
            delay: Duration::from_millis(5),
            lose: Box::new(|_, _, _| false),
            verdict: Box::new(|_, _| Validation::Accept),
            delivered: vec![HashMap::new(); n],
            misbehaved: Vec::new(),
            sent: Vec::new(),
        }
    }

    fn connect(&mut self, a: usize, b: usize) {
        let (ia, ib) = (self.ids[a], self.ids[b]);
        self.nodes[a].add_peer(ib);
        self.nodes[b].add_peer(ia);
        self.drain(a);
        self.drain(b);
    }

    /// Each node connects to `degree` random others.
    fn random_graph(&mut self, degree: usize, seed: u64) {
        let mut rng = Rng::new(seed);
        let n = self.nodes.len();
        for a in 0..n {
            for _ in 0..degree / 2 {
                let b = rng.below(n as u64) as usize;
                if b != a {
                    self.connect(a, b);
                }
            }
            // A ring keeps the graph connected.
            self.connect(a, (a + 1) % n);
        }
    }

    fn drain(&mut self, n: usize) {
        while let Some(a) = self.nodes[n].poll_action() {
            match a {
                Action::Send { to, message, .. } => {
                    let t = self.index[&to];
                    self.sent.push((n, t, message.clone()));
                    if !(self.lose)(n, t, &message) {
                        self.queue.push_back((self.now + self.delay, n, t, message));
                    }
                }
                Action::Validate { id, data, .. } => {
                    let v = (self.verdict)(n, &data);
                    if v == Validation::Accept {
                        *self.delivered[n].entry(id).or_default() += 1;
                    }
                    self.nodes[n].validated(id, v);
                    // validated() may queue forwards.
                    self.drain(n);
                }
                Action::Misbehaved { peer, reason } => self.misbehaved.push((n, peer, reason)),
            }
        }
    }

    /// Delivers every message due by now.
    fn deliver_due(&mut self) {
        while self.queue.front().is_some_and(|(t, ..)| *t <= self.now) {
            let Some((_, from, to, msg)) = self.queue.pop_front() else {
                break;
            };
            let from_id = self.ids[from];
            self.nodes[to].on_wire(self.now, from_id, msg);
            self.drain(to);
        }
    }

    /// Advances the clock in 1 ms steps, ticking nodes whose deadline passed.
    fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.now += Duration::from_millis(1);
            self.deliver_due();
            for i in 0..self.nodes.len() {
                if self.nodes[i].next_deadline() <= self.now {
                    self.nodes[i].tick(self.now);
                    self.drain(i);
                }
            }
        }
    }

    fn subscribe_all(&mut self, topic: &str) {
        for i in 0..self.nodes.len() {
            self.nodes[i].subscribe(self.now, topic).unwrap();
            self.drain(i);
        }
    }

    fn publish(&mut self, n: usize, topic: &str, data: &[u8]) -> Published {
        let p = self.nodes[n]
            .publish(self.now, topic, Bytes::copy_from_slice(data))
            .unwrap();
        self.drain(n);
        p
    }

    fn receivers(&self, id: MessageId) -> usize {
        self.delivered
            .iter()
            .filter(|d| d.contains_key(&id))
            .count()
    }

    fn duplicates(&self) -> u64 {
        self.nodes.iter().map(|g| g.stats.duplicates).sum()
    }
}

#[test]
fn two_nodes_exchange_a_message_within_one_round_trip_of_subscribing() {
    let mut net = Net::new(2, GossipConfig::default());
    net.connect(0, 1);
    net.subscribe_all("t");
    // Subscriptions and grafts cross in one delay; no heartbeat needed.
    net.run_for(Duration::from_millis(6));
    assert_eq!(net.nodes[0].mesh("t"), vec![(net.ids[1], true)]);
    assert_eq!(net.nodes[1].mesh("t"), vec![(net.ids[0], true)]);
    let p = net.publish(0, "t", b"hello");
    assert_eq!(p.peers, 1);
    net.run_for(Duration::from_millis(6));
    assert_eq!(net.delivered[1].get(&p.id), Some(&1));
    assert!(
        net.delivered[0].is_empty(),
        "the publisher's own app gets nothing"
    );
}

#[test]
fn every_subscriber_gets_every_message_exactly_once_and_trees_cut_duplicates() {
    let mut net = Net::new(60, GossipConfig::default());
    net.random_graph(10, 1);
    net.subscribe_all("t");
    net.run_for(Duration::from_millis(50));
    let mut ids = Vec::new();
    let mut dups_per_msg = Vec::new();
    for m in 0..40u32 {
        let before = net.duplicates();
        let p = net.publish((m as usize * 7) % 60, "t", &m.to_le_bytes());
        net.run_for(Duration::from_millis(200));
        ids.push(p.id);
        dups_per_msg.push(net.duplicates() - before);
    }
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(net.receivers(*id), 59, "message {i} missed someone");
    }
    for d in &net.delivered {
        assert!(d.values().all(|n| *n == 1), "a message delivered twice");
    }
    // The first message floods the mesh; later ones ride the tree.
    let late: u64 = dups_per_msg[30..].iter().sum::<u64>() / 10;
    assert!(
        dups_per_msg[0] > 60 && late * 4 < dups_per_msg[0],
        "duplicates per message: {dups_per_msg:?}"
    );
}

#[test]
fn a_lost_push_is_repaired_through_ihave_and_iwant() {
    let mut net = Net::new(20, GossipConfig::default());
    net.random_graph(8, 2);
    net.subscribe_all("t");
    net.run_for(Duration::from_millis(50));
    let p0 = net.publish(0, "t", b"warm-up");
    net.run_for(Duration::from_millis(100));
    assert_eq!(net.receivers(p0.id), 19);
    let pushes_to_5 = std::rc::Rc::new(std::cell::Cell::new(0));
    let c = pushes_to_5.clone();
    // Drop every push to node 5 until it has asked (IWANT) once.
    net.lose = Box::new(move |from, to, m| {
        if from == 5 && matches!(m, Wire::IWant(_)) {
            c.set(c.get() + 1);
        }
        to == 5 && matches!(m, Wire::Data { .. }) && c.get() == 0
    });
    let p = net.publish(0, "t", b"lost once");
    net.run_for(Duration::from_millis(20));
    assert!(!net.delivered[5].contains_key(&p.id));
    net.run_for(Duration::from_millis(500));
    assert_eq!(net.delivered[5].get(&p.id), Some(&1));
    assert!(net.nodes[5].stats.repaired >= 1);
    assert!(pushes_to_5.get() >= 1);
}

#[test]
fn invalid_messages_never_reach_a_second_hop_and_the_sender_is_cut_off() {
    // A line 0 - 1 - 2: node 1 rejects everything starting with "bad".
    let mut net = Net::new(3, GossipConfig::default());
    net.connect(0, 1);
    net.connect(1, 2);
    net.subscribe_all("t");
    net.run_for(Duration::from_millis(20));
    net.verdict = Box::new(|n, d| {
        if n == 1 && d.starts_with(b"bad") {
            Validation::Reject
        } else {
            Validation::Accept
        }
    });
    let good = net.publish(0, "t", b"good");
    net.run_for(Duration::from_millis(20));
    assert_eq!(net.receivers(good.id), 2);
    // Three rejections graylist the sender (its messages are ignored);
    // pushing on regardless gets it reported for disconnection.
    for i in 0..8u8 {
        let bad = net.publish(0, "t", &[b'b', b'a', b'd', i]);
        net.run_for(Duration::from_millis(20));
        assert_eq!(net.receivers(bad.id), 0, "an invalid message was forwarded");
    }
    let reports: Vec<_> = net.misbehaved.iter().filter(|m| m.0 == 1).collect();
    assert_eq!(reports.len(), 1, "reported once: {:?}", net.misbehaved);
    assert_eq!(reports[0].1, net.ids[0]);
    assert_eq!(reports[0].2, "gossip_spam");
    assert_eq!(net.nodes[1].stats.rejected, 3);
    // The honest neighbour keeps its place in the mesh.
    assert!(net.nodes[1].mesh("t").iter().any(|(p, _)| *p == net.ids[2]));
    assert!(!net.nodes[1].mesh("t").iter().any(|(p, _)| *p == net.ids[0]));
}

#[test]
fn ihave_for_messages_never_sent_breaks_promises_and_the_liar_is_ignored() {
    let mut net = Net::new(2, GossipConfig::default());
    net.connect(0, 1);
    net.subscribe_all("t");
    net.run_for(Duration::from_millis(20));
    // Node 0 announces ids it never had, over and over.
    let mut asked = Vec::new();
    for round in 0..10u8 {
        let ids = (0..10u8).map(|i| MessageId([round * 16 + i; 16])).collect();
        let now = net.now;
        net.nodes[1].on_wire(
            now,
            net.ids[0],
            Wire::IHave {
                topic: Topic::from("t"),
                ids,
            },
        );
        net.drain(1);
        net.sent.clear();
        net.run_for(Duration::from_millis(1200));
        asked.push(
            net.sent
                .iter()
                .filter(|(f, _, m)| *f == 1 && matches!(m, Wire::IWant(_)))
                .count(),
        );
    }
    // The first round is asked for and broken; then the liar's score is
    // below the gossip threshold and its IHAVEs are ignored.
    assert_eq!(net.nodes[1].stats.broken_promises, 10);
    assert!(
        asked[0] > 0 && asked[2..].iter().all(|n| *n == 0),
        "{asked:?}"
    );
    assert!(
        net.nodes[1].score(&net.ids[0]).unwrap() < net.nodes[1].config().scoring.gossip_threshold
    );
    // Nothing waits forever.
    assert!(net.nodes[1].missing.is_empty());
}

#[test]
fn iwant_and_ihave_floods_are_capped_and_penalised() {
    let config = GossipConfig {
        max_iwant_per_heartbeat: 100,
        ..GossipConfig::default()
    };
    let mut net = Net::new(2, config);
    net.connect(0, 1);
    net.subscribe_all("t");
    net.run_for(Duration::from_millis(20));
    let p = net.publish(1, "t", b"cached");
    net.run_for(Duration::from_millis(20));
    net.sent.clear();
    let now = net.now;
    for _ in 0..10 {
        net.nodes[1].on_wire(now, net.ids[0], Wire::IWant(vec![p.id; 50]));
    }
    net.drain(1);
    let served = net
        .sent
        .iter()
        .filter(|(f, _, m)| *f == 1 && matches!(m, Wire::Data { .. }))
        .count();
    assert_eq!(served, 3, "one message goes to one peer 3 times at most");
    assert_eq!(net.nodes[1].stats.iwant_refused, 97, "asks past the cap");
    assert_eq!(net.nodes[1].stats.floods, 1, "one penalty per heartbeat");
    for _ in 0..200 {
        net.nodes[1].on_wire(
            now,
            net.ids[0],
            Wire::IHave {
                topic: Topic::from("t"),
                ids: vec![MessageId([9; 16])],
            },
        );
    }
    assert!(net.nodes[1].score(&net.ids[0]).unwrap() < 0.0);
}

#[test]
fn one_iwant_repeating_an_id_gets_it_sent_a_bounded_number_of_times() {
    let mut net = Net::new(3, GossipConfig::default());
    net.connect(0, 1);
    net.connect(2, 1);
    net.subscribe_all("t");
    net.run_for(Duration::from_millis(20));
    let p = net.publish(1, "t", &[7; 100_000]);
    net.run_for(Duration::from_millis(20));
    net.sent.clear();
    let now = net.now;
    // 32 bytes in per repeat; without a cap, 100 kB out per repeat.
    net.nodes[1].on_wire(now, net.ids[0], Wire::IWant(vec![p.id; 4999]));
    net.nodes[1].on_wire(now, net.ids[0], Wire::IWant(vec![p.id]));
    // Another peer has its own allowance.
    net.nodes[1].on_wire(now, net.ids[2], Wire::IWant(vec![p.id]));
    net.drain(1);
    let served_to = |to: usize| {
        net.sent
            .iter()
            .filter(|(f, t, m)| *f == 1 && *t == to && matches!(m, Wire::Data { .. }))
            .count()
    };
    assert_eq!(served_to(0), 3);
    assert_eq!(served_to(2), 1);
    assert_eq!(net.nodes[1].stats.iwant_refused, 4997);
    assert_eq!(
        net.nodes[1].stats.floods, 0,
        "within the per-heartbeat allowance"
    );
}

#[test]
fn a_penalty_outlives_a_reconnect_and_decays_meanwhile() {
    let config = GossipConfig {
        max_iwant_per_heartbeat: 10,
        ..GossipConfig::default()
    };
    let mut net = Net::new(2, config);
    net.connect(0, 1);
    net.subscribe_all("t");
    net.run_for(Duration::from_millis(20));
    let now = net.now;
    let liar = net.ids[0];
    net.nodes[1].on_wire(now, liar, Wire::IWant(vec![MessageId([1; 16]); 11]));
    let penalised = net.nodes[1].score(&liar).unwrap();
    assert!(penalised < 0.0);
    net.nodes[1].remove_peer(&liar);
    net.nodes[1].add_peer(liar);
    assert_eq!(net.nodes[1].score(&liar), Some(penalised), "not wiped");
    // Away for a while: it decays as it would have connected.
    net.nodes[1].remove_peer(&liar);
    net.run_for(Duration::from_secs(3));
    net.nodes[1].add_peer(liar);
    let back = net.nodes[1].score(&liar).unwrap();
    assert!(penalised < back && back < 0.0, "{penalised} -> {back}");
}

#[test]
fn a_full_seen_cache_refuses_new_messages_rather_than_redeliver_old_ones() {
    let config = GossipConfig {
        max_seen: 4,
        ..GossipConfig::default()
    };
    let mut net = Net::new(2, config);
    net.connect(0, 1);
    net.subscribe_all("t");
    net.run_for(Duration::from_millis(20));
    let now = net.now;
    let data = |i: u8| Wire::Data {
        topic: Topic::from("t"),
        hops: 0,
        data: Bytes::from(vec![i; 10]),
    };
    for i in 0..6 {
        net.nodes[1].on_wire(now, net.ids[0], data(i));
        net.drain(1);
    }
    assert_eq!(net.delivered[1].len(), 4, "4 remembered, 2 refused");
    assert_eq!(net.nodes[1].stats.seen_full, 2);
    // The first one again is a duplicate, not a new message.
    net.nodes[1].on_wire(now, net.ids[0], data(0));
    net.drain(1);
    assert!(net.delivered[1].values().all(|n| *n == 1));
    assert_eq!(net.nodes[1].stats.duplicates, 1);
    // The local API says so by name.
    let r = net.nodes[1].publish(now, "t", Bytes::from_static(b"new"));
    assert_eq!(r, Err(PublishError::SeenFull { max: 4 }));
    // Once the window passes, ids expire and the cache's byte count is
    // back to zero: nothing was counted twice.
    net.run_for(Duration::from_secs(121));
    assert_eq!(net.nodes[1].cached_bytes(), 0);
    net.nodes[1].on_wire(net.now, net.ids[0], data(5));
    net.drain(1);
    assert_eq!(net.delivered[1].len(), 5);
}

#[test]
fn malformed_and_oversized_messages_get_the_sender_reported() {
    let config = GossipConfig {
        max_message_size: 100,
        ..GossipConfig::default()
    };
    let mut net = Net::new(3, config);
    net.connect(0, 1);
    net.connect(2, 1);
    net.subscribe_all("t");
    net.run_for(Duration::from_millis(20));
    let now = net.now;
    net.nodes[1].on_message(now, net.ids[0], &Bytes::from_static(&[6, 200]));
    net.nodes[1].on_wire(
        now,
        net.ids[2],
        Wire::Data {
            topic: Topic::from("t"),
            hops: 0,
            data: Bytes::from(vec![0; 101]),
        },
    );
    net.drain(1);
    assert_eq!(
        net.misbehaved,
        vec![
            (1, net.ids[0], "gossip_malformed"),
            (1, net.ids[2], "gossip_oversized")
        ]
    );
    assert!(net.delivered[1].is_empty());
    // The local API refuses the same sizes with a named error.
    let r = net.nodes[0].publish(now, "t", Bytes::from(vec![0; 101]));
    assert_eq!(
        r,
        Err(PublishError::TooLarge {
            size: 101,
            max: 100
        })
    );
    let long = "x".repeat(MAX_TOPIC_LEN + 1);
    assert!(matches!(
        net.nodes[0].publish(now, &long, Bytes::new()),
        Err(PublishError::Topic(WireError::TopicTooLong(_)))
    ));
}

#[test]
fn publishing_alone_fanout_and_duplicates_are_reported_clearly() {
    let mut net = Net::new(3, GossipConfig::default());
    let alone = net.publish(0, "t", b"anyone?");
    assert_eq!(alone.peers, 0);
    let again = net.nodes[0].publish(net.now, "t", Bytes::from_static(b"anyone?"));
    assert_eq!(again, Err(PublishError::Duplicate));
    // Node 0 is not subscribed; it publishes to subscribers via fanout.
    net.connect(0, 1);
    net.connect(0, 2);
    for i in 1..3 {
        net.nodes[i].subscribe(net.now, "t").unwrap();
        net.drain(i);
    }
    net.run_for(Duration::from_millis(20));
    let p = net.publish(0, "t", b"fanout");
    assert_eq!(p.peers, 2);
    net.run_for(Duration::from_millis(20));
    assert_eq!(net.receivers(p.id), 2);
}

#[test]
fn grafts_beyond_the_high_bound_or_for_unknown_topics_are_pruned() {
    let config = GossipConfig::default();
    let high = config.mesh_n_high;
    let mut net = Net::new(high + 4, config);
    for i in 1..net.nodes.len() {
        net.connect(0, i);
    }
    net.nodes[0].subscribe(net.now, "t").unwrap();
    net.drain(0);
    let now = net.now;
    for i in 1..net.nodes.len() {
        let from = net.ids[i];
        net.nodes[0].on_wire(now, from, Wire::Graft(Topic::from("t")));
        net.nodes[0].on_wire(now, from, Wire::Graft(Topic::from("other")));
    }
    assert_eq!(net.nodes[0].mesh("t").len(), high);
    assert!(net.nodes[0].mesh("other").is_empty());
    net.run_for(Duration::from_secs(2));
    let len = net.nodes[0].mesh("t").len();
    assert!(len <= high, "heartbeat keeps the mesh bounded: {len}");
}

#[test]
fn large_messages_trigger_idontwant_to_eager_peers() {
    let mut net = Net::new(4, GossipConfig::default());
    for (a, b) in [(0, 1), (1, 2), (1, 3), (2, 3)] {
        net.connect(a, b);
    }
    net.subscribe_all("t");
    net.run_for(Duration::from_millis(20));
    net.sent.clear();
    let p = net.publish(0, "t", &[7u8; 2000]);
    net.run_for(Duration::from_millis(30));
    let dont: Vec<_> = net
        .sent
        .iter()
        .filter(|(_, _, m)| matches!(m, Wire::IDontWant(ids) if ids == &vec![p.id]))
        .collect();
    assert!(!dont.is_empty());
    assert_eq!(net.receivers(p.id), 3);
}

#[test]
fn unsubscribing_prunes_the_mesh_and_stops_delivery() {
    let mut net = Net::new(2, GossipConfig::default());
    net.connect(0, 1);
    net.subscribe_all("t");
    net.run_for(Duration::from_millis(20));
    net.nodes[1].unsubscribe("t");
    net.drain(1);
    net.run_for(Duration::from_millis(20));
    assert!(net.nodes[0].mesh("t").is_empty());
    assert_eq!(net.nodes[0].topic_peers("t"), 0);
    let p = net.publish(0, "t", b"x");
    assert_eq!(p.peers, 0);
}
