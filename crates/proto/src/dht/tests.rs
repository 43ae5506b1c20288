//! Unit tests of the DHT state machine against hostile peers, and a small
//! instant-delivery network. Whole networks with latency, loss and churn
//! are tested in `peerlink-sim`.

use std::net::SocketAddr;

use super::*;

const UNIX: u64 = 1_700_000_000_000;

fn kp(i: u32) -> Keypair {
    let mut s = [0u8; 32];
    s[..4].copy_from_slice(&i.to_le_bytes());
    s[31] = 0xEE;
    Keypair::from_secret(s)
}

fn addr(i: u32) -> SocketAddr {
    // One /24 per node, so per-subnet bucket limits do not interfere.
    SocketAddr::from(([10, i as u8, (i >> 8) as u8, 1], 4000))
}

fn node(i: u32, now: Instant, config: DhtConfig) -> Dht {
    Dht::new(
        config,
        kp(i),
        Some(TransportAddr::tcp(addr(i))),
        Box::new(MemoryStore::default()),
        now,
        UNIX,
        i as u64,
    )
}

fn drain(d: &mut Dht) -> Vec<Action> {
    std::iter::from_fn(|| d.poll_action()).collect()
}

/// Delivers every request instantly until quiet; dead nodes never answer.
fn run(nodes: &mut [Dht], dead: &HashSet<usize>, now: Instant) -> Vec<(usize, QueryResult)> {
    let index: HashMap<PeerId, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.local_id(), i))
        .collect();
    let mut done = Vec::new();
    loop {
        let mut progressed = false;
        for i in 0..nodes.len() {
            for a in drain(&mut nodes[i]) {
                progressed = true;
                match a {
                    Action::Send { id, to, request } => {
                        let Some(&j) = index.get(&to.id) else {
                            nodes[i].on_failure(now, id);
                            continue;
                        };
                        if dead.contains(&j) {
                            continue; // times out later
                        }
                        let from = nodes[i].local_id();
                        let resp = nodes[j].handle_request(now, from, request.listen, request.body);
                        nodes[i].on_response(now, id, resp);
                    }
                    Action::Done(r) => done.push((i, r)),
                    Action::Misbehaved { .. } => {}
                }
            }
        }
        if !progressed {
            return done;
        }
    }
}

fn network(n: u32, now: Instant, config: &DhtConfig) -> Vec<Dht> {
    let mut nodes: Vec<Dht> = (0..n).map(|i| node(i, now, config.clone())).collect();
    let seed = Contact::new(nodes[0].local_id(), addr(0));
    for i in 1..n as usize {
        nodes[i].bootstrap(now, vec![seed]);
        run(&mut nodes, &HashSet::new(), now);
    }
    nodes
}

#[test]
fn small_network_put_get_and_providers() {
    let now = Instant::now();
    let config = DhtConfig::default();
    let mut nodes = network(60, now, &config);
    assert!(nodes.iter().all(|n| n.table().len() >= 20), "tables filled");
    let key = Key::hash(b"hello");
    nodes[5]
        .put(now, key, Bytes::from_static(b"world"))
        .unwrap();
    let done = run(&mut nodes, &HashSet::new(), now);
    let put = done.iter().find(|(i, _)| *i == 5).unwrap();
    assert_eq!(put.1.output, QueryOutput::Put { stored: 20 });

    nodes[40].get(now, key);
    let done = run(&mut nodes, &HashSet::new(), now);
    match &done.iter().find(|(i, _)| *i == 40).unwrap().1.output {
        QueryOutput::Get(Some(r)) => assert_eq!(&r.value[..], b"world"),
        other => panic!("{other:?}"),
    }
    // A value over the record limit is refused before anything is sent.
    let big = Bytes::from(vec![0; config.max_record_size + 1]);
    assert_eq!(
        nodes[5].put(now, Key::hash(b"big"), big),
        Err(RecordError::TooLarge {
            len: config.max_record_size + 1,
            max: config.max_record_size
        })
    );
    assert!(nodes[5].poll_action().is_none());
    // A second put by the publisher bumps the sequence number.
    nodes[5]
        .put(now, key, Bytes::from_static(b"again"))
        .unwrap();
    run(&mut nodes, &HashSet::new(), now);
    nodes[33].get(now, key);
    let done = run(&mut nodes, &HashSet::new(), now);
    match &done.iter().find(|(i, _)| *i == 33).unwrap().1.output {
        QueryOutput::Get(Some(r)) => assert_eq!((r.seq, &r.value[..]), (2, &b"again"[..])),
        other => panic!("{other:?}"),
    }

    let pk = Key::hash(b"blob");
    nodes[7].provide(now, pk);
    nodes[8].provide(now, pk);
    run(&mut nodes, &HashSet::new(), now);
    nodes[50].providers(now, pk);
    let done = run(&mut nodes, &HashSet::new(), now);
    match &done.iter().find(|(i, _)| *i == 50).unwrap().1.output {
        QueryOutput::Providers(p) => {
            let mut ids: Vec<_> = p.iter().map(|c| c.id).collect();
            ids.sort();
            let mut want = vec![nodes[7].local_id(), nodes[8].local_id()];
            want.sort();
            assert_eq!(ids, want);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn hostile_records_are_refused_with_named_errors() {
    let now = Instant::now();
    let mut d = node(
        1,
        now,
        DhtConfig {
            max_record_size: 100,
            ..Default::default()
        },
    );
    let owner = kp(2);
    let from = owner.peer_id();
    let key = Key::hash(b"k");
    let exp = UNIX + 60_000;
    let put = |d: &mut Dht, r: Record| {
        d.handle_request(now, from, None, RequestBody::PutRecord { record: r })
    };

    let good = Record::sign(&owner, key, Bytes::from_static(b"v"), 5, exp);
    assert_eq!(put(&mut d, good.clone()), Response::Stored);
    assert_eq!(
        put(&mut d, good.clone()),
        Response::Stored,
        "same record again is fine"
    );

    let mut forged = Record::sign(&owner, key, Bytes::from_static(b"v"), 6, exp);
    forged.value = Bytes::from_static(b"evil");
    assert_eq!(
        put(&mut d, forged),
        Response::Error(ErrorCode::InvalidRecord)
    );
    let older = Record::sign(&owner, key, Bytes::from_static(b"old"), 5, exp);
    assert_eq!(put(&mut d, older), Response::Error(ErrorCode::Stale));
    let lower = Record::sign(&owner, key, Bytes::from_static(b"old"), 4, exp);
    assert_eq!(put(&mut d, lower), Response::Error(ErrorCode::Stale));
    let far = Record::sign(&owner, key, Bytes::new(), 9, UNIX + 49 * 3600 * 1000);
    assert_eq!(put(&mut d, far), Response::Error(ErrorCode::InvalidRecord));
    let expired = Record::sign(&owner, key, Bytes::new(), 9, UNIX - 1);
    assert_eq!(
        put(&mut d, expired),
        Response::Error(ErrorCode::InvalidRecord)
    );
    let big = Record::sign(&owner, key, Bytes::from(vec![1u8; 101]), 9, exp);
    assert_eq!(put(&mut d, big), Response::Error(ErrorCode::TooLarge));
    let thief = Record::sign(&kp(3), key, Bytes::from_static(b"mine"), 99, exp);
    assert_eq!(put(&mut d, thief), Response::Error(ErrorCode::NotOwner));
    // The stored record is the first good one.
    assert_eq!(d.store().get(&key), Some(good));
    assert_eq!(d.stats.records_rejected, 7);
}

#[test]
fn put_flood_is_slowed_down_then_reported_per_peer() {
    let now = Instant::now();
    let mut d = node(
        1,
        now,
        DhtConfig {
            writes_per_sec: 10.0,
            write_burst: 20.0,
            ..Default::default()
        },
    );
    let flooder = kp(2);
    let honest = kp(3);
    let mut n = 0u64;
    let mut put = |d: &mut Dht, at: Instant| {
        n += 1;
        let r = Record::sign(
            &flooder,
            Key::hash(&n.to_le_bytes()),
            Bytes::new(),
            1,
            UNIX + 9000,
        );
        d.handle_request(
            at,
            flooder.peer_id(),
            None,
            RequestBody::PutRecord { record: r },
        )
    };
    // A burst: the first 20 are taken, the rest get slots 100 ms apart.
    let mut waits = Vec::new();
    for _ in 0..200 {
        match put(&mut d, now) {
            Response::Stored => {}
            Response::SlowDown {
                retry_after_ms,
                interval_us,
            } => {
                assert_eq!(interval_us, 100_000);
                waits.push(retry_after_ms)
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(waits.len(), 180);
    assert!(waits.windows(2).all(|w| w[1] >= w[0] + 99), "{waits:?}");
    // Writes already on their way when the first slow-down went out are
    // not held against the writer.
    assert!(drain(&mut d).is_empty());
    // One that keeps writing after the grace is reported.
    let later = now + Duration::from_secs(2);
    // (20 tokens have come back and are taken; 80 refusals are more than
    // those 20 plus the allowance of one burst.)
    for _ in 0..100 {
        put(&mut d, later);
    }
    assert!(drain(&mut d).iter().any(|a| matches!(
        a,
        Action::Misbehaved {
            reason: "write_flood",
            ..
        }
    )));
    // Another peer is unaffected.
    let r = Record::sign(&honest, Key::hash(b"h"), Bytes::new(), 1, UNIX + 1000);
    assert_eq!(
        d.handle_request(
            now,
            honest.peer_id(),
            None,
            RequestBody::PutRecord { record: r }
        ),
        Response::Stored
    );
}

/// Before: a writer over a peer's rate was refused (and reported), so a
/// node publishing a few hundred records at once stored most of them
/// nowhere while every put "succeeded". Now the writer takes the slots it
/// is given and paces itself: every write lands, nobody is reported.
#[test]
fn an_honest_bulk_writer_is_slowed_down_and_every_write_lands() {
    let start = Instant::now();
    let config = DhtConfig {
        writes_per_sec: 50.0,
        write_burst: 10.0,
        ..Default::default()
    };
    let mut nodes = network(4, start, &config);
    let mut now = start;
    let puts = 300;
    for i in 0..puts {
        nodes[1]
            .put(
                now,
                Key::hash(format!("bulk {i}").as_bytes()),
                Bytes::from_static(b"v"),
            )
            .unwrap();
    }
    for i in 0..100 {
        nodes[1].provide(now, Key::hash(format!("blob {i}").as_bytes()));
    }
    let index: HashMap<PeerId, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.local_id(), i))
        .collect();
    let mut done = Vec::new();
    let mut reported = Vec::new();
    while done.len() < puts + 100 {
        assert!(
            now < start + Duration::from_secs(60),
            "{} of {} writes done",
            done.len(),
            puts + 100
        );
        loop {
            let mut moved = false;
            for i in 0..nodes.len() {
                for a in drain(&mut nodes[i]) {
                    moved = true;
                    match a {
                        Action::Send { id, to, request } => {
                            let j = index[&to.id];
                            let from = nodes[i].local_id();
                            let resp =
                                nodes[j].handle_request(now, from, request.listen, request.body);
                            nodes[i].on_response(now, id, resp);
                        }
                        Action::Done(r) => done.push(r),
                        Action::Misbehaved { peer, reason } => reported.push((peer, reason)),
                    }
                }
            }
            if !moved {
                break;
            }
        }
        now = nodes
            .iter()
            .map(|n| n.next_deadline())
            .min()
            .unwrap()
            .max(now + Duration::from_millis(1));
        for n in nodes.iter_mut() {
            n.tick(now);
        }
    }
    assert!(reported.is_empty(), "{reported:?}");
    for r in &done {
        match r.output {
            QueryOutput::Put { stored } | QueryOutput::Provide { stored } => {
                assert_eq!(stored, 3, "{r:?}")
            }
            _ => {}
        }
    }
    assert!(nodes[1].stats.slowed_down > 0);
    // 400 writes to each of 3 peers at 50/s: paced, not refused.
    let last = done.iter().map(|r| r.elapsed).max().unwrap();
    eprintln!(
        "{} writes, the last done after {last:?} of virtual time",
        3 * (puts + 100)
    );
    assert!(
        last >= Duration::from_secs(7),
        "{last:?}: faster than the receivers allow"
    );
}

/// Starts a lookup on `d` with the given contacts and returns the requests
/// it sent.
fn sends(d: &mut Dht) -> Vec<(RequestId, Contact)> {
    drain(d)
        .into_iter()
        .filter_map(|a| match a {
            Action::Send { id, to, .. } => Some((id, to)),
            _ => None,
        })
        .collect()
}

#[test]
fn stuffed_duplicate_self_and_unusable_contacts_are_filtered() {
    let now = Instant::now();
    let config = DhtConfig {
        k: 5,
        bootstrap_alpha: 3,
        ..Default::default()
    };
    let mut d = node(0, now, config);
    let responder = Contact::new(kp(1).peer_id(), addr(1));
    d.bootstrap(now, vec![responder]);
    let (id, _) = sends(&mut d)[0];
    let mut closer: Vec<Contact> = (10..40)
        .map(|i| Contact::new(kp(i).peer_id(), addr(i)))
        .collect();
    closer.push(closer[0]); // duplicate
    closer.push(responder); // the responder itself
    closer.push(Contact::new(d.local_id(), addr(0))); // us
    closer.push(Contact::new(kp(99).peer_id(), "0.0.0.0:1".parse().unwrap()));
    closer.push(Contact::new(
        kp(98).peer_id(),
        "127.0.0.1:9".parse().unwrap(),
    ));
    d.on_response(now, id, Response::Nodes { closer });
    let actions = drain(&mut d);
    assert!(actions.iter().any(|a| matches!(
        a,
        Action::Misbehaved {
            reason: "too_many_contacts",
            ..
        }
    )));
    let asked: Vec<Contact> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { to, request, .. }
                if matches!(request.body, RequestBody::FindNode { .. }) =>
            {
                Some(*to)
            }
            _ => None,
        })
        .collect();
    assert_eq!(asked.len(), 3, "alpha requests in flight");
    for c in &asked {
        assert!(
            c.id != responder.id
                && c.id != d.local_id()
                && addr_usable(&c.addr)
                && !c.addr.ip().is_loopback()
        );
    }
    // 30 + 5 sent, at most k = 5 kept; the rest were filtered.
    assert_eq!(d.stats.contacts_filtered, 30);
    assert!(
        d.table().contains(&responder.id),
        "the responder answered, so it is in the table"
    );
}

#[test]
fn silent_peers_time_out_and_slow_peers_are_replaced() {
    let now = Instant::now();
    let config = DhtConfig {
        k: 3,
        alpha: 1,
        bootstrap_alpha: 1,
        slow_after: Duration::from_millis(100),
        request_timeout: Duration::from_secs(1),
        ..Default::default()
    };
    let mut d = node(0, now, config);
    let seeds: Vec<Contact> = (1..=4)
        .map(|i| Contact::new(kp(i).peer_id(), addr(i)))
        .collect();
    let q = d.bootstrap(now, seeds);
    assert_eq!(sends(&mut d).len(), 1, "alpha = 1");
    assert_eq!(d.next_deadline(), now + Duration::from_millis(100));
    // The first is slow: a second request goes out without waiting.
    d.tick(now + Duration::from_millis(100));
    assert_eq!(sends(&mut d).len(), 1);
    // Nobody ever answers: every request times out and the query ends.
    let mut t = now;
    for _ in 0..40 {
        t += Duration::from_millis(100);
        d.tick(t);
    }
    let done: Vec<QueryResult> = drain(&mut d)
        .into_iter()
        .filter_map(|a| match a {
            Action::Done(r) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].id, q);
    assert_eq!(done[0].failed, 4);
    assert_eq!(done[0].answered, 0);
}

#[test]
fn wrong_response_kind_and_bad_records_are_reported() {
    let now = Instant::now();
    let mut d = node(0, now, DhtConfig::default());
    let peer = Contact::new(kp(1).peer_id(), addr(1));
    d.get(now, Key::hash(b"x"));
    drain(&mut d);
    let q = d.bootstrap(now, vec![peer]);
    let _ = q;
    let (id, _) = sends(&mut d)[0];
    d.on_response(now, id, Response::Stored);
    assert!(drain(&mut d).iter().any(|a| matches!(
        a,
        Action::Misbehaved {
            reason: "wrong_response",
            ..
        }
    )));

    // A GET answered with a record for another key.
    let mut d = node(0, now, DhtConfig::default());
    d.get(now, Key::hash(b"wanted"));
    let mut d2 = d;
    d2.on_response(now, RequestId(999), Response::Pong); // unknown id: ignored
    let other = Record::sign(&kp(5), Key::hash(b"other"), Bytes::new(), 1, UNIX + 1000);
    let _ = other;
    assert!(drain(&mut d2)
        .iter()
        .all(|a| !matches!(a, Action::Misbehaved { .. })));
}

#[test]
fn inbound_requesters_are_pinged_before_joining_the_table() {
    let now = Instant::now();
    let mut d = node(0, now, DhtConfig::default());
    let asker = kp(7).peer_id();
    d.handle_request(
        now,
        asker,
        Some(TransportAddr::tcp(addr(7))),
        RequestBody::FindNode {
            target: Key::hash(b"t"),
        },
    );
    assert!(!d.table().contains(&asker));
    let s = sends(&mut d);
    assert_eq!(s.len(), 1);
    d.on_response(now, s[0].0, Response::Pong);
    assert!(d.table().contains(&asker));
    // An unusable advertised address is not even pinged.
    d.handle_request(
        now,
        kp(8).peer_id(),
        Some("0.0.0.0:1".parse().unwrap()),
        RequestBody::Ping,
    );
    assert!(sends(&mut d).is_empty());
}

#[test]
fn killed_nodes_do_not_lose_records_after_republish() {
    let now = Instant::now();
    let config = DhtConfig {
        request_timeout: Duration::from_millis(200),
        republish_interval: Duration::from_secs(60),
        ..Default::default()
    };
    let mut nodes = network(80, now, &config);
    for i in 0..10u32 {
        nodes[i as usize]
            .put(
                now,
                Key::hash(&i.to_le_bytes()),
                Bytes::from(vec![i as u8; 8]),
            )
            .unwrap();
    }
    run(&mut nodes, &HashSet::new(), now);
    // Kill 30 %, including every publisher.
    let dead: HashSet<usize> = (0..80).filter(|i| i % 10 < 3 || *i < 10).collect();
    // Timers run until republishing has repaired replication.
    let mut t = now;
    for _ in 0..700 {
        t += Duration::from_millis(100);
        for (i, n) in nodes.iter_mut().enumerate() {
            if !dead.contains(&i) {
                n.tick(t);
            }
        }
        run(&mut nodes, &dead, t);
    }
    let readers: Vec<usize> = (40..80).filter(|i| !dead.contains(i)).take(10).collect();
    for i in 0..10u32 {
        nodes[readers[i as usize]].get(t, Key::hash(&i.to_le_bytes()));
    }
    let done = run(&mut nodes, &dead, t);
    let mut t2 = t;
    let mut found = done
        .iter()
        .filter(|(i, r)| readers.contains(i) && matches!(r.output, QueryOutput::Get(Some(_))))
        .count();
    for _ in 0..30 {
        t2 += Duration::from_millis(100);
        for (i, n) in nodes.iter_mut().enumerate() {
            if !dead.contains(&i) {
                n.tick(t2);
            }
        }
        found += run(&mut nodes, &dead, t2)
            .iter()
            .filter(|(i, r)| readers.contains(i) && matches!(r.output, QueryOutput::Get(Some(_))))
            .count();
    }
    assert_eq!(found, 10);
}

#[test]
fn a_joining_node_asks_every_contact_at_once() {
    let now = Instant::now();
    let mut d = node(0, now, DhtConfig::default());
    let seeds: Vec<Contact> = (1..=12)
        .map(|i| Contact::new(kp(i).peer_id(), addr(i)))
        .collect();
    d.bootstrap(now, seeds);
    assert_eq!(sends(&mut d).len(), 12, "bootstrap_alpha (20) >= 12 seeds");
}

#[test]
fn one_liar_nearest_the_key_cannot_pick_the_owner_or_an_old_sequence() {
    let now = Instant::now();
    let config = DhtConfig::default();
    let mut nodes = network(60, now, &config);
    let (liar, honest) = (7usize, 20usize);
    // The key the liar is nearest to: it is asked first by everyone.
    let key = Key::of_peer(&nodes[liar].local_id());
    let expires = UNIX + 3_600_000;
    let forged = Record::sign(
        &kp(liar as u32),
        key,
        Bytes::from_static(b"forged"),
        99,
        expires,
    );
    assert!(nodes[liar].accept_record(now, forged, None).is_ok());
    nodes[honest]
        .put(now, key, Bytes::from_static(b"v1"))
        .unwrap();
    run(&mut nodes, &HashSet::new(), now);
    let get = |nodes: &mut Vec<Dht>, n: usize, first: bool| {
        if first {
            nodes[n].get_first(now, key);
        } else {
            nodes[n].get(now, key);
        }
        let done = run(nodes, &HashSet::new(), now);
        match &done.iter().find(|(i, _)| *i == n).unwrap().1.output {
            QueryOutput::Get(Some(r)) => r.clone(),
            other => panic!("{other:?}"),
        }
    };
    // Fresh nodes: no copy of their own.
    let fresh: Vec<usize> = (0..nodes.len())
        .filter(|&i| nodes[i].store.get(&key).is_none())
        .collect();
    // The fast path takes the first answer: the liar's (the trade-off).
    assert_eq!(
        get(&mut nodes, fresh[0], true).publisher,
        nodes[liar].local_id()
    );
    // A quorum get takes what most of the closest hold.
    let r = get(&mut nodes, fresh[1], false);
    assert_eq!(
        (r.publisher, &r.value[..]),
        (nodes[honest].local_id(), &b"v1"[..])
    );
    // The liar now serves the honest publisher's first version after a
    // second one is out: the newest sequence still wins.
    nodes[honest]
        .put(now, key, Bytes::from_static(b"v2"))
        .unwrap();
    run(&mut nodes, &HashSet::new(), now);
    let v1 = Record::sign(
        &kp(honest as u32),
        key,
        Bytes::from_static(b"v1"),
        1,
        expires,
    );
    nodes[liar].store.remove(&key);
    assert!(nodes[liar].store.put(v1).is_ok());
    let r = get(&mut nodes, fresh[2], false);
    assert_eq!((r.seq, &r.value[..]), (2, &b"v2"[..]));
}

#[test]
fn when_the_closest_known_peers_are_all_gone_lookups_ask_the_next_closest() {
    let now = Instant::now();
    let config = DhtConfig::default();
    let mut nodes = network(80, now, &config);
    let key = Key::hash(b"behind the dead");
    // Every contact the writer and the reader would ask first goes silent.
    let mut by_distance: Vec<usize> = (0..80).collect();
    by_distance.sort_by_key(|&i| Key::of_peer(&nodes[i].local_id()).distance(&key));
    let (writer, reader) = (by_distance[70], by_distance[75]);
    let index: HashMap<PeerId, usize> = (0..80).map(|i| (nodes[i].local_id(), i)).collect();
    let dead: HashSet<usize> = [writer, reader]
        .iter()
        .flat_map(|&n| nodes[n].table().closest(&key, 20))
        .filter_map(|c| index.get(&c.id).copied())
        .collect();
    assert!(!dead.contains(&writer) && !dead.contains(&reader));
    // Until each query is done: requests to the dead time out on ticks.
    let until_done = |nodes: &mut Vec<Dht>, t: &mut Instant, n: usize| -> QueryOutput {
        for _ in 0..600 {
            let done = run(nodes, &dead, *t);
            if let Some((_, r)) = done.into_iter().find(|(i, _)| *i == n) {
                return r.output;
            }
            *t += Duration::from_millis(100);
            for (i, d) in nodes.iter_mut().enumerate() {
                if !dead.contains(&i) {
                    d.tick(*t);
                }
            }
        }
        panic!("query never finished");
    };
    let mut t = now;
    nodes[writer].put(t, key, Bytes::from_static(b"v")).unwrap();
    match until_done(&mut nodes, &mut t, writer) {
        QueryOutput::Put { stored } => assert!(stored >= 10, "stored on {stored}"),
        other => panic!("{other:?}"),
    }
    nodes[reader].get(t, key);
    match until_done(&mut nodes, &mut t, reader) {
        QueryOutput::Get(Some(r)) => assert_eq!(&r.value[..], b"v"),
        other => panic!("{other:?}"),
    }
}

/// A node that knows `n` contacts (so closeness can be judged).
fn node_knowing(n: u32, now: Instant, config: DhtConfig) -> Dht {
    let mut d = node(0, now, config);
    for i in 1..=n {
        d.table
            .on_answered(Contact::new(kp(i).peer_id(), addr(i)), now);
    }
    d
}

/// A key nearer to `d` than to any of its contacts, and one nearer to
/// many of them than to `d`.
fn near_and_far_keys(d: &Dht) -> (Key, Key) {
    let near = *d.table.local();
    let far = (0u32..)
        .map(|i| Key::hash(&i.to_le_bytes()))
        .find(|k| d.table.closer_than_local(k, usize::MAX) >= d.config.store_radius)
        .unwrap();
    (near, far)
}

fn put_from(d: &mut Dht, now: Instant, writer: u32, ip: [u8; 4], r: Record) -> Response {
    d.handle_request(
        now,
        kp(writer).peer_id(),
        Some(TransportAddr::tcp(SocketAddr::from((ip, 4000)))),
        RequestBody::PutRecord { record: r },
    )
}

#[test]
fn records_and_providers_for_keys_we_are_far_from_are_refused() {
    let now = Instant::now();
    let mut d = node_knowing(300, now, DhtConfig::default());
    let (near, far) = near_and_far_keys(&d);
    let exp = UNIX + 60_000;
    let rec = |key| Record::sign(&kp(900), key, Bytes::from_static(b"v"), 1, exp);
    assert_eq!(
        put_from(&mut d, now, 900, [10, 9, 9, 9], rec(far)),
        Response::Error(ErrorCode::NotClose)
    );
    assert_eq!(
        put_from(&mut d, now, 900, [10, 9, 9, 9], rec(near)),
        Response::Stored
    );
    let provide = |d: &mut Dht, key| {
        d.handle_request(
            now,
            kp(900).peer_id(),
            Some(TransportAddr::tcp(SocketAddr::from(([10, 9, 9, 9], 4000)))),
            RequestBody::AddProvider { key },
        )
    };
    assert_eq!(provide(&mut d, far), Response::Error(ErrorCode::NotClose));
    assert_eq!(provide(&mut d, near), Response::Stored);
    assert_eq!(d.stats.refused_far, 2);
    assert!(d.store().get(&far).is_none());
}

#[test]
fn one_publisher_one_prefix_and_the_total_each_have_a_quota() {
    let now = Instant::now();
    // A node alone: every key is close to it.
    let mut d = node(
        0,
        now,
        DhtConfig {
            max_records_per_publisher: 10,
            max_records_per_prefix: 25,
            max_providers_per_prefix: 5,
            max_store_bytes: 60 * 400,
            write_burst: 1e9,
            ..Default::default()
        },
    );
    let exp = UNIX + 60_000;
    let rec = |publisher: u32, i: u32| {
        Record::sign(
            &kp(publisher),
            Key::hash(&[publisher, i].map(u32::to_le_bytes).concat()),
            Bytes::from(vec![7u8; 100]),
            1,
            exp,
        )
    };
    // One publisher: 10 records, whoever writes them.
    for i in 0..15 {
        let want = if i < 10 {
            Response::Stored
        } else {
            Response::Error(ErrorCode::StoreFull)
        };
        assert_eq!(
            put_from(&mut d, now, 500 + i, [10, 1, i as u8, 1], rec(1, i)),
            want,
            "record {i}"
        );
    }
    // One /24, many publishers (new keys are free): 25 records.
    let mut stored = 0;
    for p in 100..140 {
        if put_from(&mut d, now, p, [10, 2, 0, p as u8], rec(p, 0)) == Response::Stored {
            stored += 1;
        }
    }
    assert_eq!(stored, 25);
    assert_eq!(
        d.quotas.prefix_records(&Prefix::of([10, 2, 0, 1].into())),
        25
    );
    // A newer copy of a held record is still taken from a full prefix.
    let newer = Record::sign(&kp(100), rec(100, 0).key, Bytes::from_static(b"v2"), 2, exp);
    assert_eq!(
        put_from(&mut d, now, 100, [10, 2, 0, 100], newer),
        Response::Stored
    );
    // Bytes in total: others fill what is left, then the store refuses.
    let mut fresh = 0;
    for p in 200..260 {
        if put_from(&mut d, now, p, [10, 3, p as u8, 1], rec(p, 0)) == Response::Stored {
            fresh += 1;
        }
    }
    assert!(
        d.quotas.bytes() <= 60 * 400,
        "{} bytes held",
        d.quotas.bytes()
    );
    assert!(fresh > 0 && fresh < 60, "{fresh} stored");
    // Our own records are outside every quota.
    d.put(now, Key::hash(b"mine"), Bytes::from_static(b"ours"))
        .unwrap();
    assert!(d.store().get(&Key::hash(b"mine")).is_some());
    // Expired records free their share.
    let later = now + Duration::from_secs(120);
    d.republish(later);
    assert_eq!(d.quotas.bytes(), 0);
    // Provider records per announcing prefix.
    let mut provided = 0;
    for p in 0..10u32 {
        let resp = d.handle_request(
            later,
            kp(700 + p).peer_id(),
            Some(TransportAddr::tcp(SocketAddr::from((
                [10, 4, 0, p as u8 + 1],
                4000,
            )))),
            RequestBody::AddProvider {
                key: Key::hash(&p.to_le_bytes()),
            },
        );
        if resp == Response::Stored {
            provided += 1;
        }
    }
    assert_eq!(provided, 5);
    assert!(d.stats.refused_quota > 0);
}

#[test]
fn the_write_allowance_table_stays_bounded_under_fresh_identities() {
    let now = Instant::now();
    let mut d = node(
        0,
        now,
        DhtConfig {
            max_write_buckets: 1000,
            ..Default::default()
        },
    );
    let exp = UNIX + 60_000;
    for i in 0..20_000u32 {
        let r = Record::sign(&kp(1), Key::hash(b"k"), Bytes::from_static(b"v"), 1, exp);
        put_from(&mut d, now, 10_000 + i, [10, 1, 1, 1], r);
        assert!(d.write_buckets.len() <= 1000);
    }
}

#[test]
fn republishing_leaves_records_another_holder_refreshed_and_keeps_to_its_budget() {
    let now = Instant::now();
    let interval = Duration::from_secs(60);
    let mut d = node(
        0,
        now,
        DhtConfig {
            republish_interval: interval,
            republish_budget: 4,
            write_burst: 1e9,
            ..Default::default()
        },
    );
    d.table
        .on_answered(Contact::new(kp(1).peer_id(), addr(1)), now);
    let exp = UNIX + 3_600_000;
    let records: Vec<Record> = (0..10u32)
        .map(|i| {
            Record::sign(
                &kp(2),
                Key::hash(&i.to_le_bytes()),
                Bytes::from_static(b"v"),
                1,
                exp,
            )
        })
        .collect();
    for r in &records {
        assert_eq!(
            put_from(&mut d, now, 2, [10, 1, 1, 1], r.clone()),
            Response::Stored
        );
    }
    // Another holder re-stores 8 of them half an interval later.
    let half = now + interval / 2;
    for r in &records[..8] {
        assert_eq!(
            put_from(&mut d, half, 3, [10, 1, 1, 2], r.clone()),
            Response::Stored
        );
    }
    drain(&mut d);
    let puts = |d: &mut Dht| {
        drain(d)
            .into_iter()
            .filter(|a| matches!(a, Action::Send { request, .. } if matches!(request.body, RequestBody::FindNode { .. })))
            .count()
    };
    // One interval after the first store: only the 2 nobody refreshed.
    d.republish(now + interval);
    assert_eq!(puts(&mut d), 2);
    // Much later, all 10 are due: the budget takes 4.
    d.republish(now + 3 * interval);
    assert_eq!(puts(&mut d), 4);
}

#[test]
fn a_node_holding_a_provider_record_finds_it_itself() {
    let now = Instant::now();
    let mut d = node(0, now, DhtConfig::default());
    let key = Key::hash(b"blob");
    let provider = Contact::new(kp(9).peer_id(), addr(9));
    assert_eq!(
        d.handle_request(
            now,
            provider.id,
            Some(provider.transport_addr()),
            RequestBody::AddProvider { key }
        ),
        Response::Stored
    );
    // Alone: nobody else to ask.
    d.providers(now, key);
    match drain(&mut d).into_iter().find_map(|a| match a {
        Action::Done(r) => Some(r.output),
        _ => None,
    }) {
        Some(QueryOutput::Providers(p)) => assert_eq!(p, vec![provider]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_put_whose_lookup_runs_out_of_time_stores_on_the_closest_it_found() {
    let now = Instant::now();
    // Unanswered requests hold their slots past the query timeout: the
    // lookup cannot end in time (an overloaded network looks like this).
    let config = DhtConfig {
        request_timeout: Duration::from_secs(20),
        slow_after: Duration::from_secs(20),
        query_timeout: Duration::from_secs(2),
        ..Default::default()
    };
    let mut nodes = network(40, now, &config);
    let dead: HashSet<usize> = (1..40).filter(|i| i % 3 == 0).collect();
    nodes[1]
        .put(now, Key::hash(b"late"), Bytes::from_static(b"v"))
        .unwrap();
    let mut done = run(&mut nodes, &dead, now);
    let mut t = now;
    while done.iter().all(|(i, _)| *i != 1) {
        t += Duration::from_millis(250);
        assert!(t < now + Duration::from_secs(30), "the put never finished");
        for (i, n) in nodes.iter_mut().enumerate() {
            if !dead.contains(&i) {
                n.tick(t);
            }
        }
        done.extend(run(&mut nodes, &dead, t));
    }
    let (_, r) = done.into_iter().find(|(i, _)| *i == 1).unwrap();
    match r.output {
        QueryOutput::Put { stored } => assert!(stored > 0, "stored on none: {r:?}"),
        other => panic!("{other:?}"),
    }
}
