//! Level 0: the frame codec (packing 64 B records into sealed frames and
//! reading them back), nonce construction and varints.
//! `cargo bench -p peerlink-bench --bench codec`

use bytes::BytesMut;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use peerlink_proto::cipher::nonce_for;
use peerlink_proto::frame::DEFAULT_FRAME_TARGET;
use peerlink_proto::{varint, CipherState, CipherSuite, FrameDecoder, FrameEncoder, Records};

const MESSAGES: usize = 1000;

fn codec(c: &mut Criterion) {
    let suite = CipherSuite::default();
    let msg = [0x42u8; 64];
    let mut group = c.benchmark_group("frame");
    group.throughput(Throughput::Elements(MESSAGES as u64));
    let mut enc = FrameEncoder::new(
        CipherState::new(suite, &[1; 32]),
        1 << 20,
        DEFAULT_FRAME_TARGET,
    );
    group.bench_function("encode+seal 1000×64B", |b| {
        b.iter(|| {
            for _ in 0..MESSAGES {
                enc.push(16, &msg).unwrap();
            }
            enc.finish().unwrap();
            let n = enc.bytes().len();
            enc.clear();
            n
        })
    });
    // One sealed run of frames to decode.
    let mut enc = FrameEncoder::new(
        CipherState::new(suite, &[1; 32]),
        1 << 20,
        DEFAULT_FRAME_TARGET,
    );
    for _ in 0..MESSAGES {
        enc.push(16, &msg).unwrap();
    }
    enc.finish().unwrap();
    let wire = enc.bytes().to_vec();
    group.bench_function("open+decode 1000×64B", |b| {
        b.iter_batched(
            || {
                (
                    FrameDecoder::new(CipherState::new(suite, &[1; 32]), 1 << 20),
                    BytesMut::from(&wire[..]),
                )
            },
            |(mut dec, mut buf)| {
                let mut n = 0;
                while let Some(plain) = dec.decode(&mut buf).unwrap() {
                    for r in Records::new(plain) {
                        n += r.unwrap().payload.len();
                    }
                }
                n
            },
            criterion::BatchSize::SmallInput,
        )
    });
    group.finish();

    c.bench_function("nonce", |b| {
        let mut i = 0u64;
        b.iter(|| {
            i += 1;
            nonce_for(black_box(i))
        })
    });
    c.bench_function("varint put+get", |b| {
        let mut buf = Vec::with_capacity(16);
        b.iter(|| {
            buf.clear();
            varint::put(&mut buf, black_box(300));
            varint::get(&buf, u64::MAX).unwrap()
        })
    });
}

criterion_group!(benches, codec);
criterion_main!(benches);
