//! One connection's session fed hostile frames interleaved with local
//! operations and time: it never panics, its queues stay within their
//! bounds, and every request token comes back exactly once.
#![no_main]
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use peerlink_proto::control::{GoAwayReason, RemoteErrorCode, CONTROL_CHANNEL};
use peerlink_proto::session::{
    ChannelConfig, Event, Policy, Session, SessionConfig, CONTROL_QUEUE, FORCED_OVERRUN,
};

fuzz_target!(|data: &[u8]| {
    let start = Instant::now();
    let mut now = start;
    let config = Arc::new(SessionConfig {
        channels: vec![
            ChannelConfig::new(16).max_queued_bytes(256),
            ChannelConfig::new(17).max_queued_bytes(256).policy(Policy::Drop),
        ],
        ..SessionConfig::default()
    });
    let mut s: Session<u32> = Session::new(config, now);
    let mut events = Vec::new();
    let (mut issued, mut returned) = (0u32, 0u32);
    let mut served = Vec::new();
    let mut failed = false;
    let mut rest = data;
    while let Some((&op, tail)) = rest.split_first() {
        let len = tail.first().map_or(0, |&n| n as usize).min(tail.len().saturating_sub(1));
        let arg = tail.get(1..1 + len).unwrap_or_default();
        rest = tail.get(1 + len..).unwrap_or_default();
        match op % 8 {
            // A frame from the peer: any bytes at all. What it produced
            // before an error in it still counts (a driver drops those
            // events with the connection, failing their waiters).
            0 | 1 => {
                failed = s
                    .handle_frame(Bytes::copy_from_slice(arg), now, &mut events)
                    .is_err()
            }
            2 => {
                let _ = s.push(16 + u16::from(op >> 6), arg, op & 0x20 != 0);
            }
            3 => {
                if s.request("f/1", Bytes::copy_from_slice(arg), issued).is_ok() {
                    issued += 1;
                }
            }
            4 => {
                if let Some(t) = s.poll_transmit(now, op & 0x80 != 0) {
                    for f in t.frames {
                        s.recycle(f);
                    }
                }
            }
            5 => {
                now += Duration::from_millis(u64::from(op) * 100);
                let _ = s.handle_timeout(now);
                let _ = s.status(now);
            }
            6 => {
                if let Some(id) = served.pop() {
                    let _ = match op & 1 {
                        0 => s.respond(id, Bytes::copy_from_slice(arg)),
                        _ => s.respond_error(id, RemoteErrorCode::Application, "no"),
                    };
                }
            }
            _ => s.close(GoAwayReason::Normal, op & 0x80 != 0),
        }
        for e in events.drain(..) {
            match e {
                Event::Request(r) => served.push(r.id),
                Event::Response(_) => returned += 1,
                _ => {}
            }
        }
        if failed {
            break;
        }
        for ch in [16u16, 17] {
            assert!(s.queued_bytes(ch) <= (FORCED_OVERRUN + 1) * 256 + 256);
        }
        assert!(s.queued_bytes(CONTROL_CHANNEL) <= CONTROL_QUEUE + 64);
    }
    let aborted = s.abort_all().count() as u32;
    assert_eq!(returned + aborted, issued);
});
