//! Level 0: sealing and opening one frame with each AEAD suite, plus
//! snow's own (RustCrypto) transport cipher for reference.
//! `cargo bench -p peerlink-bench --bench crypto`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use peerlink_proto::{CipherState, CipherSuite};

fn seal_open(c: &mut Criterion) {
    let mut group = c.benchmark_group("seal");
    for size in [64usize, 1024, 16384] {
        group.throughput(Throughput::Bytes(size as u64));
        for suite in [
            CipherSuite::Aes128Gcm,
            CipherSuite::Aes256Gcm,
            CipherSuite::ChaCha20Poly1305,
        ] {
            let mut tx = CipherState::new(suite, &[7; 32]);
            let mut buf = vec![0u8; size];
            group.bench_with_input(
                BenchmarkId::new(format!("{suite:?}"), size),
                &size,
                |b, _| b.iter(|| tx.seal(&[0, 0, 0, 1], &mut buf).unwrap()),
            );
        }
        // snow's transport mode (RustCrypto ChaCha20-Poly1305), for reference.
        let params: snow::params::NoiseParams = "Noise_NN_25519_ChaChaPoly_SHA256".parse().unwrap();
        let mut i = snow::Builder::new(params.clone())
            .build_initiator()
            .unwrap();
        let mut r = snow::Builder::new(params).build_responder().unwrap();
        let (mut m, mut p) = ([0u8; 1024], [0u8; 1024]);
        let n = i.write_message(&[], &mut m).unwrap();
        r.read_message(&m[..n], &mut p).unwrap();
        let n = r.write_message(&[], &mut m).unwrap();
        i.read_message(&m[..n], &mut p).unwrap();
        let mut t = i.into_transport_mode().unwrap();
        let plain = vec![0u8; size];
        let mut out = vec![0u8; size + 16];
        group.bench_with_input(
            BenchmarkId::new("snow-RustCrypto-ChaChaPoly", size),
            &size,
            |b, _| b.iter(|| t.write_message(&plain, &mut out).unwrap()),
        );
    }
    group.finish();

    // Open needs the next nonce in order, so measure seal then open of the
    // same buffer (both counters advance together); open ≈ this − seal.
    let mut group = c.benchmark_group("seal+open");
    for size in [64usize, 1024, 16384] {
        group.throughput(Throughput::Bytes(size as u64));
        for suite in [
            CipherSuite::Aes128Gcm,
            CipherSuite::Aes256Gcm,
            CipherSuite::ChaCha20Poly1305,
        ] {
            let (mut tx, mut rx) = (
                CipherState::new(suite, &[7; 32]),
                CipherState::new(suite, &[7; 32]),
            );
            let mut buf = Vec::with_capacity(size + 16);
            group.bench_with_input(
                BenchmarkId::new(format!("{suite:?}"), size),
                &size,
                |b, _| {
                    b.iter(|| {
                        buf.clear();
                        buf.resize(size, 0);
                        let tag = tx.seal(&[0, 0, 0, 1], &mut buf).unwrap();
                        buf.extend_from_slice(&tag);
                        rx.open(&[0, 0, 0, 1], &mut buf).unwrap()
                    })
                },
            );
        }
    }
    group.finish();
}

criterion_group!(benches, seal_open);
criterion_main!(benches);
