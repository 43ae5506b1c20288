//! The benchmark suite's inputs a user hands it: a targets file (TOML),
//! checked against a results document (JSON), flattened for a baseline
//! and judged against itself. Input: `TOML \n---\n JSON`.
#![no_main]
use libfuzzer_sys::fuzz_target;
use peerlink_bench::{baseline, sla};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (toml, json) = text.split_once("\n---\n").unwrap_or((&text, "{}"));
    let targets = sla::Targets::parse(toml).ok();
    let Ok(results) = serde_json::from_str::<serde_json::Value>(json) else {
        return;
    };
    if let Some(t) = &targets {
        for w in ["stream", "dht", "txpool", "all"] {
            let rows = t.check(w, &results);
            let _ = sla::table(&rows);
        }
        let _ = t.direction_of("all", "/dht/0/get/p50_us");
    }
    let runs = [results.clone(), results];
    // (Baseline::new would also collect provenance: git, per input.)
    let base = baseline::Baseline {
        schema: baseline::SCHEMA,
        workload: "all".into(),
        repeats: runs.len(),
        provenance: serde_json::Value::Null,
        metrics: baseline::metrics(&runs),
    };
    let rows = baseline::compare(&base, &baseline::metrics(&runs), targets.as_ref(), "all");
    // The same runs never regress against themselves.
    assert!(rows.iter().all(|r| r.verdict != baseline::Verdict::Regressed));
    let _ = baseline::table(&rows);
});
