//! Records the compiler that built this crate: instruction counts move
//! with it, so results and baselines carry its version.
fn main() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = std::process::Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    println!("cargo:rustc-env=PEERLINK_RUSTC_VERSION={version}");
    println!("cargo:rerun-if-env-changed=RUSTC");

    // The versions of the crates the figures depend on most, from the
    // workspace's lock file.
    const CRATES: [&str; 8] = [
        "tokio",
        "snow",
        "ring",
        "ed25519-dalek",
        "blake3",
        "bytes",
        "redb",
        "tantivy",
    ];
    let lock = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.lock");
    println!("cargo:rerun-if-changed={}", lock.display());
    let text = std::fs::read_to_string(&lock).unwrap_or_default();
    let mut found = Vec::new();
    let mut name = None;
    for line in text.lines() {
        if let Some(n) = line.strip_prefix("name = ") {
            name = Some(n.trim_matches('"').to_string());
        } else if let (Some(v), Some(n)) = (line.strip_prefix("version = "), name.take()) {
            if CRATES.contains(&n.as_str()) {
                found.push(format!("{n}={}", v.trim_matches('"')));
            }
        }
    }
    println!(
        "cargo:rustc-env=PEERLINK_CRATE_VERSIONS={}",
        found.join(",")
    );
}
