//! The `peerlink` binary end to end: keys, two node processes joined by
//! --bootstrap, metrics over HTTP, and `peerlink ping` between them.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn peerlink() -> Command {
    Command::new(env!("CARGO_BIN_EXE_peerlink"))
}

/// A child process killed when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `peerlink node` and returns it with the lines it printed up to
/// and including the one starting with `until`.
fn start_node(args: &[&str], home: &std::path::Path, until: &str) -> (Running, Vec<String>) {
    let mut child = peerlink()
        .arg("node")
        .args(args)
        .env("PEERLINK_HOME", home)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn peerlink node");
    let stdout = child.stdout.take().expect("stdout");
    let running = Running(child);
    let mut lines = Vec::new();
    let mut reader = BufReader::new(stdout).lines();
    for line in reader.by_ref() {
        let line = line.expect("read stdout");
        let done = line.starts_with(until);
        lines.push(line);
        if done {
            // Keep reading what the node prints later: a closed pipe would
            // fail its next println and end it.
            std::thread::spawn(move || reader.for_each(drop));
            return (running, lines);
        }
    }
    panic!("node exited before printing {until:?}: {lines:?}");
}

/// Node A, and node B bootstrapped from it, each with its own home and
/// control socket.
fn two_controlled_nodes() -> (tempfile::TempDir, tempfile::TempDir, Running, Running) {
    let (home_a, home_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, lines) = start_node(
        &["--listen", "127.0.0.1:0"],
        home_a.path(),
        "control socket",
    );
    let a_addr = lines
        .iter()
        .find_map(|l| l.strip_prefix("listening on "))
        .unwrap()
        .to_string();
    let (b, _) = start_node(
        &["--listen", "127.0.0.1:0", "--bootstrap", &a_addr],
        home_b.path(),
        "control socket",
    );
    (home_a, home_b, a, b)
}

fn http_get(addr: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).expect("connect to metrics");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body
}

#[test]
fn keygen_and_id_agree_and_the_key_is_private() {
    let home = tempfile::tempdir().unwrap();
    let out = peerlink()
        .arg("keygen")
        .env("PEERLINK_HOME", home.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let id = String::from_utf8(out.stdout).unwrap();
    let again = peerlink()
        .arg("id")
        .env("PEERLINK_HOME", home.path())
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(again.stdout).unwrap(), id);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(home.path().join("node.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // A second keygen must not overwrite the identity.
    let twice = peerlink()
        .arg("keygen")
        .env("PEERLINK_HOME", home.path())
        .output()
        .unwrap();
    assert!(!twice.status.success());
}

#[test]
fn two_nodes_join_by_bootstrap_and_ping_prints_rtts() {
    let (home_a, home_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (_a, lines) = start_node(&["--listen", "127.0.0.1:0"], home_a.path(), "listening on");
    let a_addr = lines
        .last()
        .unwrap()
        .trim_start_matches("listening on ")
        .to_string();
    let (_b, lines) = start_node(
        &[
            "--listen",
            "127.0.0.1:0",
            "--bootstrap",
            &a_addr,
            "--metrics",
            "127.0.0.1:0",
        ],
        home_b.path(),
        "metrics on",
    );
    let metrics = lines
        .last()
        .unwrap()
        .trim_start_matches("metrics on http://")
        .trim_end_matches("/metrics")
        .to_string();

    // B dials its seed A (the seed redial and the DHT bootstrap may race;
    // the duplicate is closed), so its metrics show one outbound connection.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let body = http_get(&metrics);
        if body.contains("peerlink_connections{direction=\"out\"} 1") {
            break;
        }
        assert!(Instant::now() < deadline, "B never connected to A:\n{body}");
        std::thread::sleep(Duration::from_millis(50));
    }

    let out = peerlink()
        .args(["ping", &a_addr, "--count", "3", "--interval-ms", "10"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        text.lines().filter(|l| l.starts_with("rtt")).count(),
        3,
        "{text}"
    );
    assert!(text.contains("3 pings: min"), "{text}");
}

#[test]
fn ping_reports_a_bad_address_clearly() {
    let out = peerlink()
        .args(["ping", "not-an-address"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad peer address"), "{err}");
}

#[test]
fn simulations_refuse_impossible_sizes_by_name() {
    for (args, says) in [
        (&["sim", "dht", "--nodes", "0"][..], "at least one node"),
        (&["sim", "gossip", "--nodes", "0"][..], "at least one node"),
        (&["sim", "gossip", "--kill", "2"][..], "not between 0 and 1"),
        (&["sim", "dht", "--loss=-0.5"][..], "not between 0 and 1"),
    ] {
        let out = peerlink().args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

fn dht(home: &std::path::Path, args: &[&str]) -> std::process::Output {
    peerlink()
        .arg("dht")
        .args(args)
        .env("PEERLINK_HOME", home)
        .output()
        .unwrap()
}

#[test]
fn dht_put_on_one_node_and_get_on_another_through_the_control_socket() {
    let (home_a, home_b, _a, _b) = two_controlled_nodes();
    // The socket is private to its owner.
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(home_a.path().join("control.sock"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    // Wait until A has B in its routing table, then put on A.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = peerlink()
            .arg("status")
            .env("PEERLINK_HOME", home_a.path())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}");
        if !text.contains("\"routing_table\": 0") {
            break;
        }
        assert!(Instant::now() < deadline, "A never learned B: {text}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = dht(home_a.path(), &["put", "greeting", "hello, world"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("stored on 1 peers"), "{err}");

    let out = dht(home_b.path(), &["get", "greeting"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello, world\n");
    let out = dht(home_b.path(), &["get", "greeting", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["found"], true);
    assert_eq!(v["seq"], 1);

    // A key nobody stored: exit status 1 and a clear message.
    let out = dht(home_b.path(), &["get", "no such key"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no record under"));

    // No node running on that home: a clear error, not a hang.
    let empty = tempfile::tempdir().unwrap();
    let out = dht(empty.path(), &["get", "greeting"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no node is listening"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn gossip_sub_on_one_node_receives_gossip_pub_from_another() {
    let (home_a, home_b, _a, _b) = two_controlled_nodes();
    // `gossip sub` on A prints each message on its own line.
    let mut sub = peerlink()
        .args(["gossip", "sub", "news", "--count", "1"])
        .env("PEERLINK_HOME", home_a.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut sub_err = BufReader::new(sub.stderr.take().unwrap());
    let mut line = String::new();
    sub_err.read_line(&mut line).unwrap();
    assert!(line.contains("subscribed to \"news\""), "{line}");
    let sub = Running(sub);
    // Publish from B until A's subscription reached B (a fresh payload
    // each time: ids are content hashes).
    let deadline = Instant::now() + Duration::from_secs(10);
    for i in 0.. {
        let out = peerlink()
            .args(["gossip", "pub", "news", &format!("hello {i}")])
            .env("PEERLINK_HOME", home_b.path())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{err}");
        if err.contains("to 1 peers") {
            break;
        }
        assert!(err.contains("no connected peer subscribes"), "{err}");
        assert!(
            Instant::now() < deadline,
            "A's subscription never reached B"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut out = String::new();
    let mut child = sub;
    child
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(out.starts_with("hello "), "{out:?}");
    assert!(child.0.wait().unwrap().success());
}

fn run_in(home: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = peerlink()
        .args(args)
        .env("PEERLINK_HOME", home)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn publish_on_one_node_then_search_info_and_install_on_another() {
    let (home_a, home_b, _a, _b) = two_controlled_nodes();
    let work = tempfile::tempdir().unwrap();
    let pkg = work.path().join("greeter");
    std::fs::create_dir_all(pkg.join("src")).unwrap();
    std::fs::write(
        pkg.join("package.toml"),
        "[package]\nname = \"greeter\"\nversion = \"0.3.1\"\ndescription = \"Says hello to peers\"\nkeywords = [\"hello\"]\nlicense = \"MIT\"\n",
    )
    .unwrap();
    std::fs::write(pkg.join("src/lib.rs"), "pub fn hello() {}\n").unwrap();

    // A bad manifest is refused with its file, field and reason.
    let bad = work.path().join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("package.toml"), "[package]\nname = \"Bad\"\n").unwrap();
    let (ok, _, err) = run_in(home_a.path(), &["publish", bad.to_str().unwrap()]);
    assert!(
        !ok && err.contains("package.toml") && err.contains("package.version"),
        "{err}"
    );

    // Publish once the gossip mesh has B (else B learns of it from the DHT
    // only, which `search` does not consult).
    let deadline = Instant::now() + Duration::from_secs(10);
    let (ok, out, err) = run_in(home_a.path(), &["publish", pkg.to_str().unwrap(), "--json"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["name"], "greeter");
    loop {
        let (ok, out, err) = run_in(home_b.path(), &["search", "hello peers", "--remote"]);
        assert!(ok, "{err}");
        if out.contains("greeter") {
            assert!(out.contains("0.3.1") && out.contains("Says hello"), "{out}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "B never found greeter: {out} {err}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (ok, out, err) = run_in(home_b.path(), &["info", "greeter"]);
    assert!(
        ok && out.contains("greeter (owner ") && out.contains("0.3.1"),
        "{out} {err}"
    );
    let to = work.path().join("deps");
    let (ok, out, err) = run_in(
        home_b.path(),
        &[
            "install",
            "greeter@^0.3",
            "--to",
            to.to_str().unwrap(),
            "--json",
        ],
    );
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["packages"][0]["name"], "greeter");
    assert_eq!(
        std::fs::read(to.join("greeter-0.3.1/src/lib.rs")).unwrap(),
        b"pub fn hello() {}\n"
    );
    // Unknown names and impossible requirements are clear errors.
    let (ok, _, err) = run_in(
        home_b.path(),
        &["install", "greeter@^2", "--to", to.to_str().unwrap()],
    );
    assert!(
        !ok && err.contains("no version of greeter matches ^2 (known: 0.3.1)"),
        "{err}"
    );
    let (ok, _, err) = run_in(home_b.path(), &["info", "nothing-here"]);
    assert!(
        !ok && err.contains("no package named nothing-here"),
        "{err}"
    );
}

fn status(home: &std::path::Path) -> serde_json::Value {
    let out = peerlink()
        .arg("status")
        .env("PEERLINK_HOME", home)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn ban_lists_in_status_keeps_the_peer_out_and_unban_lifts_it() {
    let (home_a, home_b, _a, _b) = two_controlled_nodes();
    let b_id = status(home_b.path())["peer_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (ok, out, err) = run_in(home_a.path(), &["ban", &b_id, "--for", "10m"]);
    assert!(ok, "{err}");
    assert!(out.contains("banned"), "{out}");
    let v = status(home_a.path());
    assert_eq!(v["bans"][0]["peer"], b_id.as_str(), "{v}");
    assert_eq!(v["bans"][0]["reason"], "manual");
    assert!(v["bans"][0]["remaining_s"].as_u64().unwrap() > 590);
    // B redials its seed (A) and is refused every time.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(status(home_a.path())["connections"], 0);
    let (ok, _, err) = run_in(home_a.path(), &["unban", &b_id]);
    assert!(ok, "{err}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while status(home_a.path())["connections"] == 0 {
        assert!(Instant::now() < deadline, "B never came back");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (ok, _, err) = run_in(home_a.path(), &["unban", &b_id]);
    assert!(!ok && err.contains("was not banned"), "{err}");
    let (ok, _, err) = run_in(home_a.path(), &["ban", &b_id, "--for", "forever"]);
    assert!(!ok && err.contains("not a duration"), "{err}");
}

#[test]
fn bench_flood_runs_rounds_and_keeps_the_flooded_node_under_its_memory_bound() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("flood.json");
    let out = peerlink()
        .args([
            "bench", "flood", "--secs", "1", "--rounds", "2", "--honest", "2",
        ])
        .arg("--json")
        .arg(&json)
        .stderr(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("p99 ratio, median of 2 rounds"), "{stdout}");
    let doc = bench_document(&json);
    assert_eq!(doc["workload"], "flood");
    let v = &doc["results"];
    let rounds = v["rounds"].as_array().unwrap();
    assert_eq!(rounds.len(), 2);
    for r in rounds {
        assert!(r["no_flood"]["samples"].as_u64().unwrap() > 0);
        assert!(r["flood"]["samples"].as_u64().unwrap() > 0);
        assert_eq!(r["phases"].as_array().unwrap().len(), 4);
    }
    // Every phase flooded, each round under fresh identities.
    let f = &v["flooder"];
    for k in [
        "requests_sent",
        "dht_writes_sent",
        "gossip_sent",
        "announcements_sent",
    ] {
        assert!(f[k].as_u64().unwrap() > 0, "{k}: {f}");
    }
    let (peak, bound) = (
        v["rss_peak"].as_u64().unwrap(),
        v["rss_bound"].as_u64().unwrap(),
    );
    assert!(peak > 0 && peak < bound, "{peak} of {bound}");
}

/// A `peerlink bench --json` document.
fn bench_document(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn json_in(home: &std::path::Path, args: &[&str]) -> serde_json::Value {
    let (ok, out, err) = run_in(home, args);
    assert!(ok, "{args:?} failed: {err}");
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
}

#[test]
fn txpool_node_takes_transactions_produces_blocks_and_keeps_its_chain_across_a_crash() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let key = h.join("node.key");
    let user_key = h.join("user.key");
    let (ok, node_id, err) = run_in(h, &["keygen", "--key", key.to_str().unwrap()]);
    assert!(ok, "{err}");
    let (ok, user_id, err) = run_in(h, &["keygen", "--key", user_key.to_str().unwrap()]);
    assert!(ok, "{err}");
    let (node_id, user_id) = (node_id.trim(), user_id.trim());
    let genesis = h.join("genesis.toml");
    let (ok, _, err) = run_in(
        h,
        &[
            "tx",
            "genesis",
            "--producer",
            node_id,
            "--fund",
            &format!("{node_id}=1000000"),
            "--fund",
            &format!("{user_id}=1000000"),
            "--out",
            genesis.to_str().unwrap(),
        ],
    );
    assert!(ok, "{err}");
    // A bad genesis entry is refused by name.
    let (ok, _, err) = run_in(h, &["tx", "genesis", "--producer", "nope"]);
    assert!(!ok && err.contains("not a peer id"), "{err}");

    let node_args = [
        "--listen",
        "127.0.0.1:0",
        "--txpool",
        "--genesis",
        genesis.to_str().unwrap(),
    ];
    let mut producing = node_args.to_vec();
    producing.extend(["--produce-every", "200ms"]);
    let (node, lines) = start_node(&producing, h, "control socket");
    assert!(
        lines.iter().any(|l| l.starts_with("txpool at height 0")),
        "{lines:?}"
    );

    // Signed with the node's key, then with a key file (signed by the CLI).
    let a = json_in(h, &["tx", "submit", "--payload", "hello", "--json"]);
    assert_eq!(a["nonce"], 0);
    assert_eq!(a["sender"], node_id);
    let b = json_in(
        h,
        &[
            "tx",
            "submit",
            "--key",
            user_key.to_str().unwrap(),
            "--fee-rate",
            "3",
            "--json",
        ],
    );
    assert_eq!(b["sender"], user_id);
    // Nonce 0 again, same fee, while it waits: a replacement without the bump.
    let (ok, _, err) = run_in(h, &["tx", "submit", "--nonce", "0", "--payload", "again"]);
    assert!(!ok && err.contains("replacement fee rate"), "{err}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let a_id = a["id"].as_str().unwrap().to_string();
    // Blocks include both.
    loop {
        let s = json_in(h, &["tx", "show", &a_id, "--json"]);
        let t = json_in(h, &["tx", "show", b["id"].as_str().unwrap(), "--json"]);
        if s["state"] == "included" && t["state"] == "included" {
            break;
        }
        assert!(Instant::now() < deadline, "never included: {s} {t}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Once included, nonce 0 is stale.
    let (ok, _, err) = run_in(h, &["tx", "submit", "--nonce", "0", "--payload", "again"]);
    assert!(!ok && err.contains("nonce 0"), "{err}");
    let pool = json_in(h, &["tx", "pool", "--json"]);
    assert!(pool["height"].as_u64().unwrap() >= 1, "{pool}");
    assert_eq!(json_in(h, &["tx", "nonce", "--json"])["nonce"], 1);
    // One more, answered once on disk; then the node is killed (no
    // shutdown) and restarted without producing.
    let c = json_in(h, &["tx", "submit", "--payload", "after", "--json"]);
    let height_before = json_in(h, &["tx", "pool", "--json"])["height"]
        .as_u64()
        .unwrap();
    drop(node);
    let (_node, lines) = start_node(&node_args, h, "control socket");
    let restarted = lines
        .iter()
        .find_map(|l| l.strip_prefix("txpool at height "))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("{lines:?}"));
    assert!(
        restarted >= height_before.saturating_sub(1),
        "{restarted} < {height_before}"
    );
    // The included transaction is still known; the last one is pending
    // or was included before the crash.
    assert_eq!(
        json_in(h, &["tx", "show", &a_id, "--json"])["state"],
        "included"
    );
    let c = json_in(h, &["tx", "show", c["id"].as_str().unwrap(), "--json"]);
    assert!(c["state"] == "pending" || c["state"] == "included", "{c}");
    let (ok, _, err) = run_in(h, &["tx", "show", "zz"]);
    assert!(!ok && err.contains("64 hex digits"), "{err}");
}

#[test]
fn check_sla_exits_1_on_a_missed_target_0_when_met_and_refuses_a_bad_targets_file() {
    let dir = tempfile::tempdir().unwrap();
    let row = |threshold: &str| {
        format!(
            "[[target]]\nworkload = \"txpool\"\nmetric = \"insert p50\"\npath = \"/core/insert_ns/p50_us\"\nscale = 1000\nunit = \"ns\"\n{threshold}\nkind = \"absolute\"\n\n[[target]]\nworkload = \"txpool\"\nmetric = \"propagation p99\"\nat = {{ \"/propagation/nodes\" = 100 }}\npath = \"/propagation/time_to_all/p99_us\"\nunit = \"us\"\nmax = 1\nkind = \"absolute\"\n"
        )
    };
    let bench = |targets: &std::path::Path, json: &std::path::Path| {
        peerlink()
            .args([
                "bench",
                "txpool",
                "--nodes",
                "0",
                "--sustained-nodes",
                "0",
                "--senders",
                "100",
            ])
            .arg("--check-sla")
            .arg("--targets")
            .arg(targets)
            .arg("--json")
            .arg(json)
            .stderr(Stdio::piped())
            .output()
            .unwrap()
    };
    // No pool inserts in a nanosecond: missed, exit 1, the table says so.
    let impossible = dir.path().join("impossible.toml");
    std::fs::write(&impossible, row("max = 0.000001")).unwrap();
    let json = dir.path().join("missed.json");
    let out = bench(&impossible, &json);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("MISSED"), "{stdout}");
    // The propagation row was not run (--nodes 0): not measured, not met.
    assert!(
        stdout.contains("0 met, 1 missed, 1 not measured"),
        "{stdout}"
    );
    let doc = bench_document(&json);
    assert_eq!(doc["sla"][0]["verdict"], "missed");
    assert_eq!(doc["sla"][1]["verdict"], "not_measured");
    assert!(doc["provenance"]["machine"]["cores"].as_u64().unwrap() >= 1);
    assert!(
        doc["results"]["core"]["insert_ns"]["p50_us"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    // A generous target is met: exit 0.
    let easy = dir.path().join("easy.toml");
    std::fs::write(&easy, row("max = 1e12")).unwrap();
    let out = bench(&easy, &dir.path().join("met.json"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("1 met, 0 missed, 1 not measured"),
        "{stdout}"
    );
    // Both thresholds on one row: refused by name before anything runs.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, row("max = 1\nmin = 0")).unwrap();
    let out = bench(&bad, &dir.path().join("bad.json"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("needs exactly one of min and max"),
        "{stderr}"
    );
    assert!(!out.stdout.starts_with(b"transaction pool"));
}

/// The quick suite is what CI runs of the benchmarks: every workload at
/// CI size still works and the document holds them all with provenance.
#[test]
fn bench_all_quick_runs_every_workload_into_one_document() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("all.json");
    let out = peerlink()
        .args(["bench", "all", "--quick", "--json"])
        .arg(&json)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc = bench_document(&json);
    assert_eq!(doc["schema"], 1);
    assert_eq!(doc["workload"], "all");
    assert!(doc["provenance"]["timestamp"].as_str().unwrap().len() >= 20);
    let results = doc["results"].as_object().unwrap();
    for w in [
        "stream",
        "rr",
        "handshake",
        "idle",
        "bootstrap",
        "dht",
        "gossip",
        "churn",
        "registry",
        "flood",
        "txpool",
    ] {
        assert!(results.get(w).is_some_and(|r| !r.is_null()), "{w} missing");
        assert!(stdout.contains(&format!("== bench {w} ")), "{stdout}");
    }

    // The report: tables for every workload and the plots this run has
    // data for, from the one document.
    let plots = dir.path().join("plots");
    let md = dir.path().join("report.md");
    let out = peerlink()
        .args(["bench", "report"])
        .arg(&json)
        .arg("--plots")
        .arg(&plots)
        .arg("--out")
        .arg(&md)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let md = std::fs::read_to_string(&md).unwrap();
    for w in ["stream", "dht", "gossip", "txpool"] {
        assert!(
            md.contains(&format!("### {w}\n")),
            "{w} missing from the report"
        );
    }
    for svg in [
        "latency-cdf.svg",
        "dht-latency-vs-nodes.svg",
        "gossip-time-to-all-vs-nodes.svg",
        "throughput-vs-size.svg",
    ] {
        let text = std::fs::read_to_string(plots.join(svg)).unwrap();
        assert!(text.starts_with("<svg"), "{svg}");
        let png = std::fs::read(plots.join(svg).with_extension("png")).unwrap();
        assert!(png.starts_with(b"\x89PNG"), "{svg}: no PNG beside it");
        assert!(md.contains(&format!("(plots/{svg})")), "{svg} not linked");
    }
}

/// `--save-baseline`, then `--baseline --strict` against baselines made
/// to differ by far more than noise: exit 1 when the run is worse on
/// every judged metric, exit 0 when it is better. (An unchanged tree
/// against its own baseline is judged by noise; that is measured by hand,
/// never asserted in a timed test.)
#[test]
fn a_strict_baseline_fails_a_regression_and_passes_an_improvement() {
    use peerlink_bench::baseline::{direction, Baseline, Direction};
    let targets = peerlink_bench::sla::Targets::builtin().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("a.json");
    let bench = |extra: &[&str]| {
        peerlink()
            .args(["bench", "txpool", "--nodes", "0", "--sustained-nodes", "0"])
            .args(["--senders", "100", "--repeat", "3"])
            .args(extra)
            .stderr(Stdio::piped())
            .output()
            .unwrap()
    };
    let out = bench(&["--save-baseline", saved.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let base = Baseline::load(&saved).unwrap();
    assert_eq!((base.workload.as_str(), base.repeats), ("txpool", 3));
    assert!(base.metrics["/core/insert_ns/p50_us"].samples.len() == 3);

    // Every judged metric moved 1000× in one direction.
    let doctored = |better: bool| {
        let mut b = base.clone();
        for (name, m) in b.metrics.iter_mut() {
            let up = match direction(Some(&targets), "txpool", name) {
                Direction::Higher => better,
                Direction::Lower => !better,
                Direction::Unknown => continue,
            };
            let f = if up { 1000.0 } else { 0.001 };
            let samples = m.samples.iter().map(|v| (v.abs() + 1.0) * f).collect();
            *m = peerlink_bench::baseline::Metric::new(samples);
        }
        let path = dir.path().join(format!("better-{better}.json"));
        b.save(&path).unwrap();
        path
    };
    let out = bench(&["--baseline", doctored(true).to_str().unwrap(), "--strict"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("Regressed") && stdout.contains("/core/insert_ns/p50_us"),
        "{stdout}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("regressed against the baseline"));

    let out = bench(&["--baseline", doctored(false).to_str().unwrap(), "--strict"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("Improved") && stdout.contains(" 0 regressed"),
        "{stdout}"
    );

    // A baseline of another workload is refused before anything runs.
    let out = peerlink()
        .args(["bench", "rr", "--baseline", saved.to_str().unwrap()])
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is of workload txpool"));
}
