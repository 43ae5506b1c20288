//! The registry on real networks of nodes over loopback: publish, search
//! and install across a 20-node testnet, ownership, hostile providers and
//! records, and installs that fail without leaving anything behind.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use peerlink_net::testnet::{Testnet, TestnetConfig};
use peerlink_net::Node;
use peerlink_registry::{
    Registry, RegistryConfig, RegistryError, Release, SignedRelease, ANNOUNCE_TOPIC, CHUNK_PROTOCOL,
};
use tempfile::TempDir;

/// Writes a package directory and returns it.
fn package(
    root: &Path,
    name: &str,
    version: &str,
    deps: &[(&str, &str)],
    payload: usize,
) -> PathBuf {
    let dir = root.join(format!("{name}-{version}-src"));
    std::fs::create_dir_all(dir.join("src/nested")).unwrap();
    let mut toml = format!(
        "[package]\nname = \"{name}\"\nversion = \"{version}\"\ndescription = \"The {name} package for tests\"\nkeywords = [\"{name}kw\"]\nlicense = \"MIT\"\n[dependencies]\n"
    );
    for (d, r) in deps {
        toml.push_str(&format!("{d} = \"{r}\"\n"));
    }
    std::fs::write(dir.join("package.toml"), toml).unwrap();
    let mut content = vec![0u8; payload];
    blake3::Hasher::new()
        .update(name.as_bytes())
        .finalize_xof()
        .fill(&mut content);
    std::fs::write(dir.join("src/nested/data.bin"), content).unwrap();
    std::fs::write(dir.join("src/main.sh"), "#!/bin/sh\necho hi\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        dir.join("src/main.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    dir
}

/// Relative path → (bytes, executable) of every file under `dir`.
fn tree(dir: &Path) -> BTreeMap<PathBuf, (Vec<u8>, bool)> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let exec = std::fs::metadata(&p).unwrap().permissions().mode() & 0o111 != 0;
                out.insert(
                    p.strip_prefix(dir).unwrap().to_path_buf(),
                    (std::fs::read(&p).unwrap(), exec),
                );
            }
        }
    }
    out
}

async fn registry(node: &Node, dir: &TempDir, i: usize) -> Registry {
    let mut config = RegistryConfig::new(dir.path().join(format!("node{i}")));
    config.chunk_timeout = Duration::from_millis(500);
    Registry::start(node.clone(), config).await.unwrap()
}

/// Waits until every node has a mesh peer on the announce topic.
async fn mesh_formed(nodes: &[Node]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    for n in nodes {
        loop {
            let info = n.gossip().info().await.unwrap();
            if info
                .topics
                .iter()
                .any(|(t, mesh, _)| &**t == ANNOUNCE_TOPIC && *mesh > 0)
            {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "mesh never formed");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Polls `f` until it is true or 10 s pass.
async fn eventually(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !f().await {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_nodes_publish_search_and_install_byte_for_byte() {
    let net = Testnet::start(TestnetConfig {
        nodes: 20,
        ..TestnetConfig::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    // Node 19 joins the registry only after everything is published.
    let mut regs = Vec::new();
    for (i, n) in net.nodes[..19].iter().enumerate() {
        regs.push(registry(n, &dir, i).await);
    }
    mesh_formed(&net.nodes[..19]).await;

    let log = package(&src, "log", "1.0.0", &[], 1000);
    let http = package(&src, "http", "1.2.0", &[("log", "^1")], 300_000);
    let app = package(
        &src,
        "app",
        "1.0.0",
        &[("http", "^1.1"), ("log", "^1.0")],
        5000,
    );
    let r = regs[3].publish(&log).await.unwrap();
    assert!(r.record_stored >= 10, "{r:?}");
    regs[5].publish(&http).await.unwrap();
    let r = regs[0].publish(&app).await.unwrap();
    assert_eq!((r.name.as_str(), r.version.as_str()), ("app", "1.0.0"));
    assert!(r.announced_to > 0 && r.provider_stored > 0, "{r:?}");

    // Found by search on every other node (from gossip, in the local index).
    for (i, reg) in regs.iter().enumerate() {
        eventually(&format!("node {i} finds app"), async || {
            let found = reg.search("app", 5, false).await.unwrap();
            found.hits.first().is_some_and(|h| h.name == "app")
        })
        .await;
    }
    let found = regs[7].search("applkw", 5, false).await.unwrap();
    assert_eq!(found.hits.len(), 0, "no fuzzy nonsense");
    let found = regs[7]
        .search("the package for tests", 10, false)
        .await
        .unwrap();
    assert_eq!(found.hits.len(), 3, "{found:?}");

    // Installs with its dependencies on a node that never saw it.
    let late = registry(&net.nodes[19], &dir, 19).await;
    assert!(
        late.info("app").await.unwrap().is_some(),
        "the DHT knows app"
    );
    let to = dir.path().join("installed");
    let report = late.install("app@^1", &to, None).await.unwrap();
    let got: Vec<String> = report
        .packages
        .iter()
        .map(|p| format!("{}@{}", p.name, p.version))
        .collect();
    assert_eq!(got, ["log@1.0.0", "http@1.2.0", "app@1.0.0"]);
    for (name, src_dir) in [
        ("log-1.0.0", &log),
        ("http-1.2.0", &http),
        ("app-1.0.0", &app),
    ] {
        assert_eq!(
            tree(&to.join(name)),
            tree(src_dir),
            "{name} is byte-for-byte identical"
        );
    }
    // Installing again comes from the cache.
    let again = late
        .install("app", &dir.path().join("again"), None)
        .await
        .unwrap();
    assert!(
        again.packages.iter().all(|p| p.source == "cache"),
        "{again:?}"
    );
    assert!(late.stats().cache.hits >= 3);

    // A name belongs to its first publisher: everywhere.
    let stolen = package(&src, "app", "2.0.0", &[], 10);
    let e = regs[7].publish(&stolen).await.unwrap_err();
    assert!(
        e.to_string().contains("app belongs to") && e.to_string().contains("is refused"),
        "{e}"
    );
    // Injected straight into gossip, a foreign release is refused by the
    // validators and stored nowhere.
    let packed = peerlink_registry::pack(&stolen, &Default::default()).unwrap();
    let manifest = peerlink_registry::Manifest::load(&stolen).unwrap();
    let forged = SignedRelease::sign(
        Release::new(&manifest, &packed.bytes, 1),
        net.nodes[8].keypair(),
    );
    net.nodes[8]
        .gossip()
        .publish(ANNOUNCE_TOPIC, forged.encode())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut refused = 0;
    for reg in &regs {
        let info = reg.info("app").await.unwrap().unwrap();
        assert_eq!(info.releases.len(), 1, "only the owner's release");
        assert_eq!(info.owner, net.nodes[0].peer_id().to_string());
        refused += reg.stats().announcements_refused;
    }
    assert!(refused > 0, "validators refused the forgery");
    net.shutdown().await;
}

/// Serves `CHUNK_PROTOCOL` on `node` badly: garbage, or never answering.
fn hostile_provider(node: &Node, garbage: bool) {
    let mut reqs = node.serve(CHUNK_PROTOCOL).unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Some(req) = reqs.recv().await {
            if garbage {
                req.respond(Bytes::from(vec![0xAB; 1000]));
            } else {
                held.push(req); // stalls: never answers
            }
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_stalling_providers_are_replaced() {
    let net = Testnet::start(TestnetConfig {
        nodes: 5,
        ..TestnetConfig::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let publisher = registry(&net.nodes[0], &dir, 0).await;
    let installer = registry(&net.nodes[1], &dir, 1).await;
    let (liar, staller) = (&net.nodes[2], &net.nodes[3]);
    hostile_provider(liar, true);
    hostile_provider(staller, false);
    // 1 MiB of content: several chunks, spread over all providers.
    let big = package(dir.path(), "big", "1.0.0", &[], 1 << 20);
    let r = publisher.publish(&big).await.unwrap();
    for n in [liar, staller] {
        n.dht()
            .provide(format!("registry/blob/{}", r.blob))
            .await
            .unwrap();
    }
    let mut events = net.nodes[1].events();
    let to = dir.path().join("to");
    let report = installer.install("big", &to, None).await.unwrap();
    assert_eq!(tree(&to.join("big-1.0.0")), tree(&big));
    let s = installer.stats();
    assert!(s.bad_chunks >= 1, "the liar was caught: {s:?}");
    assert!(s.failovers >= 1, "{s:?}");
    let mut liar_dropped = false;
    while let Ok(e) = events.try_recv() {
        liar_dropped |= matches!(e, peerlink_net::PeerEvent::Disconnected { peer, .. } if peer == liar.peer_id());
    }
    assert!(liar_dropped, "the liar was disconnected");
    assert!(
        report.packages[0].source.contains("providers"),
        "{report:?}"
    );
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_records_and_failed_installs_leave_nothing_behind() {
    let net = Testnet::start(TestnetConfig {
        nodes: 4,
        ..TestnetConfig::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let a = registry(&net.nodes[0], &dir, 0).await;
    let b = registry(&net.nodes[1], &dir, 1).await;
    mesh_formed(&net.nodes[..2]).await;

    // A peer answering searches with garbage is dropped and counted; the
    // search still answers from the index and the other peers.
    let mut liar = net.nodes[3]
        .serve(peerlink_registry::SEARCH_PROTOCOL)
        .unwrap();
    tokio::spawn(async move {
        while let Some(req) = liar.recv().await {
            req.respond(&b"{not json"[..]);
        }
    });
    if !net.nodes[1].is_connected(&net.nodes[3].peer_id()) {
        net.nodes[1]
            .connect(net.nodes[3].addr().unwrap())
            .await
            .unwrap();
    }
    let found = b.search("anything", 5, true).await.unwrap();
    assert!(found.peers_asked > found.peers_answered, "{found:?}");
    assert_eq!(b.stats().bad_answers, 1);

    // A garbage package record in the DHT.
    net.nodes[2]
        .dht()
        .put("registry/pkg/evil", &b"\x00\x01garbage"[..])
        .await
        .unwrap();
    let e = b
        .install("evil", &dir.path().join("x"), None)
        .await
        .unwrap_err();
    assert!(matches!(e, RegistryError::BadRecord { .. }), "{e}");
    assert!(!dir.path().join("x").exists());

    // A record for one name holding a release of another.
    let other = package(dir.path(), "other", "1.0.0", &[], 10);
    let packed = peerlink_registry::pack(&other, &Default::default()).unwrap();
    let m = peerlink_registry::Manifest::load(&other).unwrap();
    let rec = peerlink_registry::PackageRecord {
        releases: vec![SignedRelease::sign(
            Release::new(&m, &packed.bytes, 1),
            net.nodes[2].keypair(),
        )],
    };
    net.nodes[2]
        .dht()
        .put("registry/pkg/sneaky", rec.encode())
        .await
        .unwrap();
    let e = b.info("sneaky").await.unwrap_err();
    assert!(e.to_string().contains("other@1.0.0"), "{e}");

    // An unsatisfiable requirement is explained.
    let lib = package(dir.path(), "lib", "1.0.0", &[], 10);
    let app = package(dir.path(), "app", "1.0.0", &[("lib", "^2")], 10);
    a.publish(&app).await.unwrap();
    let e = b
        .install("app", &dir.path().join("y"), None)
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("cannot all be met") && text.contains("lib"),
        "{text}"
    );
    // Publishing the same archive again only stores it again (how a
    // publish that reached too few peers is retried), with the first
    // signature; other content under the same version is refused.
    let first = a.publish(&lib).await.unwrap();
    let again = a.publish(&lib).await.unwrap();
    assert_eq!(again.blob, first.blob);
    assert!(
        again.record_stored >= 3 && again.provider_stored >= 3,
        "{again:?}"
    );
    std::fs::write(lib.join("src/main.sh"), "#!/bin/sh\necho changed\n").unwrap();
    let e = a.publish(&lib).await.unwrap_err();
    assert!(matches!(e, RegistryError::AlreadyPublished(_)), "{e}");

    // A failure while putting packages in place undoes the whole install.
    let tool = package(dir.path(), "tool", "1.0.0", &[("lib", "^1")], 10);
    a.publish(&tool).await.unwrap();
    let to = dir.path().join("z");
    std::fs::create_dir_all(&to).unwrap();
    std::fs::write(to.join("tool-1.0.0"), "a file in the way").unwrap();
    let e = b.install("tool", &to, None).await.unwrap_err();
    assert!(matches!(e, RegistryError::Io { .. }), "{e}");
    let mut left: Vec<_> = std::fs::read_dir(&to)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    left.sort();
    assert_eq!(
        left,
        [peerlink_registry::INSTALL_LOCK, "tool-1.0.0"],
        "lib was rolled back, no staging left (the lock file stays, as cargo's)"
    );
    // The node is intact and keeps serving.
    std::fs::remove_file(to.join("tool-1.0.0")).unwrap();
    b.install("tool", &to, None).await.unwrap();
    assert!(to.join("lib-1.0.0/package.toml").exists());
    assert_eq!(b.stats().packages, 3, "{:?}", b.stats());
    net.shutdown().await;
}

/// Before: receivers refused writes beyond their rate (a burst, then a
/// steady rate per peer) and reported the writer, so a node publishing a
/// few hundred packages stored most records nowhere while every publish
/// said "published", and installs elsewhere found no provider. Now the
/// writes are paced ("slow down, retry after") and a publish succeeds
/// only once stored: every package installs on a node that saw none of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_honest_publishes_is_stored_and_installs_elsewhere() {
    let mut config = TestnetConfig {
        nodes: 3,
        ..TestnetConfig::default()
    };
    // A low allowance, so a test-sized burst goes far past it: 2 writes
    // per publish to each peer, 300 per publisher, against 20 and 40/s.
    if let Some(dht) = config.node.dht.as_mut() {
        dht.write_burst = 20.0;
        dht.writes_per_sec = 40.0;
    }
    let net = Testnet::start(config).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let publishers = [
        registry(&net.nodes[0], &dir, 0).await,
        registry(&net.nodes[1], &dir, 1).await,
    ];
    let per_publisher = 150;
    let mut tasks = Vec::new();
    for (p, reg) in publishers.iter().enumerate() {
        // As fast as callers can: 6 publishes in flight per node.
        for lane in 0..6 {
            let (reg, root) = (reg.clone(), dir.path().join(format!("src{p}-{lane}")));
            tasks.push(tokio::spawn(async move {
                let mut out = Vec::new();
                for i in (lane..per_publisher).step_by(6) {
                    let name = format!("bulk{p}x{i}");
                    let src = package(&root, &name, "1.0.0", &[], 64);
                    out.push((name, reg.publish(&src).await));
                }
                out
            }));
        }
    }
    let mut names = Vec::new();
    for t in tasks {
        for (name, result) in t.await.unwrap() {
            let r = result.unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(
                r.record_stored >= 2 && r.provider_stored >= 2,
                "{name}: {r:?}"
            );
            names.push(name);
        }
    }
    assert_eq!(names.len(), 2 * per_publisher);
    for n in &net.nodes {
        let text = n.metrics().encode();
        assert!(
            !text.contains("write_flood"),
            "an honest publisher was reported:\n{text}"
        );
    }
    // The third node's registry starts now: it heard no announcement.
    let fresh = registry(&net.nodes[2], &dir, 2).await;
    let to = dir.path().join("installed");
    for name in names.iter().step_by(15) {
        let report = fresh
            .install(name, &to, None)
            .await
            .unwrap_or_else(|e| panic!("install {name}: {e}"));
        assert_eq!(report.packages.len(), 1, "{report:?}");
    }
    net.shutdown().await;
}

/// Before: 20 concurrent installs of three 2 MiB packages from one
/// provider saw chunk requests time out (each install asked for every
/// chunk at once and the provider's response queue overflowed), and
/// concurrent installs into one directory failed with "Directory not
/// empty". Now chunk requests wait their turn per provider, and installs
/// into one directory take turns and find the work done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_installs_all_succeed_even_into_one_directory() {
    let net = Testnet::start(TestnetConfig {
        nodes: 3,
        ..TestnetConfig::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let start = |i: usize| {
        let node = net.nodes[i].clone();
        let path = dir.path().join(format!("node{i}"));
        async move {
            Registry::start(node, RegistryConfig::new(path))
                .await
                .unwrap()
        }
    };
    let publisher = start(0).await;
    let mib2 = 2 << 20;
    for (name, deps) in [
        ("corelib", vec![]),
        ("netlib", vec![("corelib", "^1")]),
        ("bigapp", vec![("corelib", "^1"), ("netlib", "^1")]),
    ] {
        let src = package(dir.path(), name, "1.0.0", &deps, mib2);
        publisher.publish(&src).await.unwrap();
    }
    let installers = [start(1).await, start(2).await];
    let mut runs = Vec::new();
    for k in 0..20 {
        let reg = installers[k % 2].clone();
        let to = dir.path().join(format!("apart{k}"));
        runs.push(tokio::spawn(async move {
            reg.install("bigapp", &to, None).await
        }));
    }
    for k in 0..5 {
        let reg = installers[k % 2].clone();
        let to = dir.path().join("shared");
        runs.push(tokio::spawn(async move {
            reg.install("bigapp", &to, None).await
        }));
    }
    for (k, run) in runs.into_iter().enumerate() {
        let report = run
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("install {k}: {e}"));
        assert_eq!(report.packages.len(), 3, "{report:?}");
    }
    // From a warm cache the installs reach their unpacking together.
    let mut runs = Vec::new();
    for k in 0..5 {
        let reg = installers[k % 2].clone();
        let to = dir.path().join("shared-warm");
        runs.push(tokio::spawn(async move {
            reg.install("bigapp", &to, None).await
        }));
    }
    let mut fresh = 0;
    for (k, run) in runs.into_iter().enumerate() {
        let report = run
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("warm install {k}: {e}"));
        fresh += report
            .packages
            .iter()
            .filter(|p| p.source != "already installed")
            .count();
    }
    assert_eq!(
        fresh, 3,
        "each package put in place once, found there by the others"
    );
    let shared = dir.path().join("shared-warm");
    for name in ["corelib", "netlib", "bigapp"] {
        let src = dir.path().join(format!("{name}-1.0.0-src"));
        let mut want = tree(&src);
        want.remove(Path::new("package.toml"));
        let mut got = tree(&shared.join(format!("{name}-1.0.0")));
        got.remove(Path::new("package.toml"));
        assert_eq!(got, want, "{name} byte for byte");
    }
    net.shutdown().await;
}

/// An outside review had one identity get 58 of 60 new names stored in
/// 0.8 s, for archives that never existed. Now new releases from peers
/// are limited per publisher key and per network they arrive from, and
/// those no provider serves leave the store and the index after a grace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announcement_floods_are_limited_and_unserved_releases_leave_the_index() {
    let net = Testnet::start(TestnetConfig {
        nodes: 2,
        ..TestnetConfig::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let start = |i: usize| {
        let mut config = RegistryConfig::new(dir.path().join(format!("node{i}")));
        let slow = |burst| peerlink_registry::admit::Allowance {
            burst,
            per_sec: 0.001,
        };
        config.per_publisher = slow(10.0);
        config.per_prefix = slow(30.0);
        config.unserved_grace = Duration::from_secs(1);
        config.sweep_every = Duration::from_millis(100);
        Registry::start(net.nodes[i].clone(), config)
    };
    let (victim, honest) = (start(0).await.unwrap(), start(1).await.unwrap());
    mesh_formed(&net.nodes).await;
    let src = package(dir.path(), "realpkg", "1.0.0", &[], 100);
    honest.publish(&src).await.unwrap();
    eventually("the honest release arrives", async || {
        victim.stats().announcements_accepted == 1
    })
    .await;

    // The attacker: its own network (127.0.1.0/24), one connection, to
    // the victim (which dials it, so the connection's address is its own).
    let mut config = net.nodes[0].config().clone();
    config.limits.max_peers = 1;
    let attacker = Node::builder()
        .listen("127.0.1.1:0".parse().unwrap())
        .config(config)
        .without_dht()
        .build()
        .await
        .unwrap();
    net.nodes[0]
        .connect(attacker.addr().unwrap())
        .await
        .unwrap();
    let manifest = |name: String| peerlink_registry::Manifest {
        name,
        version: "1.0.0".parse().unwrap(),
        description: "spam".into(),
        keywords: vec!["spamkw".into()],
        license: "MIT".into(),
        dependencies: Default::default(),
    };
    // It joins the announce mesh, as any peer may.
    let _sub = attacker.gossip().subscribe(ANNOUNCE_TOPIC).unwrap();
    mesh_formed(std::slice::from_ref(&attacker)).await;
    let announce = async |signed: SignedRelease| {
        let sent = attacker
            .gossip()
            .publish(ANNOUNCE_TOPIC, signed.encode())
            .await;
        assert!(sent.unwrap().peers > 0);
    };
    // 40 new names under the attacker's key, then 40 under fresh keys.
    let key = attacker.keypair().clone();
    for i in 0..80 {
        let name = format!("spam{i}");
        let release = Release::new(&manifest(name.clone()), name.as_bytes(), 1);
        let signer = match i < 40 {
            true => key.clone(),
            false => peerlink_net::Keypair::generate().unwrap(),
        };
        announce(SignedRelease::sign(release, &signer)).await;
    }
    eventually("every announcement is judged", async || {
        let s = victim.stats();
        s.announcements_accepted + s.announcements_throttled == 81
    })
    .await;
    let s = victim.stats();
    // 10 under the key; 20 more under fresh keys, the rest of the
    // network's 30.
    assert_eq!(s.announcements_accepted, 1 + 30, "{s:?}");
    assert_eq!(s.announcements_throttled, 50, "{s:?}");
    // Nobody serves the spam: after the grace it is gone; the real
    // package, served by its publisher, stays.
    // The victim forwarded what it took to the honest node, which took
    // and evicts the same 30 (a search with few local hits asks it too).
    eventually("unserved releases are evicted everywhere", async || {
        victim.stats().unserved_evicted == 30 && honest.stats().unserved_evicted == 30
    })
    .await;
    let hits = victim.search("spamkw", 50, false).await.unwrap().hits;
    assert!(hits.is_empty(), "{hits:?}");
    let hits = victim.search("realpkg", 5, false).await.unwrap().hits;
    assert_eq!(hits.len(), 1);
    let s = victim.stats();
    assert_eq!((s.remote_releases, s.packages), (1, 1), "{s:?}");
    attacker.shutdown().await;
    net.shutdown().await;
}
