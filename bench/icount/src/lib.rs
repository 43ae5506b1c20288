//! # peerlink-icount — instruction counts that are stable in CI
//!
//! Wall-clock time on a shared 2-core machine moves by tens of percent
//! from run to run; the number of instructions a piece of code executes
//! does not. This crate runs each level-0/1 kernel ([`kernels`]) under
//! `valgrind --tool=callgrind`, counting only the measured call, and
//! compares the count per operation with a committed baseline
//! (`bench/icount/baseline.json`). It also times each kernel natively, so
//! both instructions and nanoseconds are reported.
//!
//! Counts are repeatable only for the same binary and inputs: every kernel
//! uses fixed keys and seeds. They move with the compiler, so the baseline
//! records the rustc and valgrind versions; regenerate it with
//! `cargo run --release -p peerlink-icount -- --save-baseline bench/icount/baseline.json`.
//!
//! [`provenance`] is the results document every peerlink benchmark
//! writes (here because this is the lightest crate they all share).

pub mod count;
pub mod kernels;
pub mod provenance;
