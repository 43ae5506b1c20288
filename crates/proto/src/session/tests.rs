//! Two sessions driven against each other in memory with a fake clock
//! (quinn-proto's `Pair`): every connection edge case without sockets.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};

use super::*;
use crate::frame::FRAME_HEADER_LEN;
use crate::identity::Keypair;

const APP: u16 = FIRST_APP_CHANNEL;

struct Pair {
    a: Session<u32>,
    b: Session<u32>,
    a_events: Vec<Event<u32>>,
    b_events: Vec<Event<u32>>,
    now: Instant,
    /// Frames moved each way.
    frames: (usize, usize),
}

fn config() -> Arc<SessionConfig> {
    Arc::new(SessionConfig {
        keepalive: KeepaliveConfig {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(3),
            idle_timeout: None,
        },
        channels: vec![
            ChannelConfig::new(APP + 1).max_queued_bytes(100),
            ChannelConfig::new(APP + 2)
                .max_queued_bytes(100)
                .policy(Policy::Drop),
        ],
        drain: Duration::from_secs(5),
    })
}

/// The plaintext a peer's driver would hand over after opening `frame`.
fn plain(frame: BytesMut) -> Bytes {
    Bytes::from(frame).slice(FRAME_HEADER_LEN..)
}

impl Pair {
    fn new() -> Pair {
        Pair::with(config())
    }

    fn with(config: Arc<SessionConfig>) -> Pair {
        let now = Instant::now();
        Pair {
            a: Session::new(config.clone(), now),
            b: Session::new(config, now),
            a_events: Vec::new(),
            b_events: Vec::new(),
            now,
            frames: (0, 0),
        }
    }

    /// Moves frames both ways until neither side has anything to send.
    fn drive(&mut self) -> Result<(), SessionError> {
        for _ in 0..100 {
            let mut moved = false;
            if let Some(t) = self.a.poll_transmit(self.now, true) {
                for f in t.frames {
                    moved = true;
                    self.frames.0 += 1;
                    self.b
                        .handle_frame(plain(f), self.now, &mut self.b_events)?;
                }
            }
            if let Some(t) = self.b.poll_transmit(self.now, true) {
                for f in t.frames {
                    moved = true;
                    self.frames.1 += 1;
                    self.a
                        .handle_frame(plain(f), self.now, &mut self.a_events)?;
                }
            }
            if !moved {
                return Ok(());
            }
        }
        panic!("sessions never went quiet");
    }

    /// Advances the clock, running both sides' timers on the way.
    fn advance(&mut self, by: Duration) -> (Result<(), TimedOut>, Result<(), TimedOut>) {
        self.now += by;
        (
            self.a.handle_timeout(self.now),
            self.b.handle_timeout(self.now),
        )
    }
}

fn messages(events: &mut Vec<Event<u32>>) -> Vec<(u16, Bytes)> {
    let mut out = Vec::new();
    events.retain(|e| match e {
        Event::Message { channel, payload } => {
            out.push((*channel, payload.clone()));
            false
        }
        _ => true,
    });
    out
}

#[test]
fn messages_are_packed_and_routed_per_channel() {
    let mut p = Pair::new();
    for i in 0..1000u32 {
        p.a.push(APP + (i % 3) as u16 * 10, &i.to_be_bytes(), false)
            .unwrap();
    }
    p.drive().unwrap();
    let got = messages(&mut p.b_events);
    assert_eq!(got.len(), 1000);
    // Per channel, order is kept.
    for ch in [APP, APP + 10, APP + 20] {
        let seq: Vec<u32> = got
            .iter()
            .filter(|(c, _)| *c == ch)
            .map(|(_, p)| u32::from_be_bytes(p[..].try_into().unwrap()))
            .collect();
        assert!(seq.windows(2).all(|w| w[0] < w[1]), "{ch}: {seq:?}");
    }
    // Three channels, one frame each: many small messages per frame.
    assert_eq!(p.frames.0, 3);
}

#[test]
fn gossip_channel_is_delivered_and_other_reserved_channels_are_refused() {
    let mut p = Pair::new();
    p.a.push(GOSSIP_CHANNEL, b"g", false).unwrap();
    p.drive().unwrap();
    assert_eq!(
        messages(&mut p.b_events),
        vec![(GOSSIP_CHANNEL, Bytes::from_static(b"g"))]
    );
    p.a.push(5, b"x", false).unwrap();
    assert_eq!(p.drive(), Err(SessionError::ReservedChannel(5)));
}

#[test]
fn request_response_and_error_return_their_tokens() {
    let mut p = Pair::new();
    let id1 = p.a.request("echo/1", Bytes::from_static(b"hi"), 7).unwrap();
    let id2 = p.a.request("echo/1", Bytes::from_static(b"no"), 8).unwrap();
    assert!(p.a.is_busy() && p.a.awaits(id1));
    p.drive().unwrap();
    let reqs: Vec<_> = p
        .b_events
        .drain(..)
        .map(|e| match e {
            Event::Request(r) => (r.id, r.protocol, r.body),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].1, "echo/1");
    assert!(p.b.is_busy(), "two requests are being served");
    p.b.respond(reqs[0].0, reqs[0].2.clone()).unwrap();
    p.b.respond_error(reqs[1].0, RemoteErrorCode::Application, "nope")
        .unwrap();
    assert!(!p.b.is_busy());
    p.drive().unwrap();
    assert_eq!(
        p.a_events,
        vec![
            Event::Response(Box::new(Answer {
                token: 7,
                result: Ok(Bytes::from_static(b"hi"))
            })),
            Event::Response(Box::new(Answer {
                token: 8,
                result: Err(RemoteError {
                    code: RemoteErrorCode::Application,
                    message: "nope".into()
                })
            }))
        ]
    );
    assert!(!p.a.is_busy() && !p.a.awaits(id2));
}

#[test]
fn a_forgotten_request_ignores_its_late_answer() {
    let mut p = Pair::new();
    let id = p.a.request("slow/1", Bytes::new(), 1).unwrap();
    p.drive().unwrap();
    assert_eq!(p.a.forget_request(id), Some(1));
    let Event::Request(r) = p.b_events.remove(0) else {
        panic!()
    };
    let rid = r.id;
    p.b.respond(rid, Bytes::from_static(b"late")).unwrap();
    p.drive().unwrap();
    assert!(p.a_events.is_empty());
}

#[test]
fn answers_to_unknown_ids_are_ignored() {
    let mut p = Pair::new();
    let forged = RrMessage::Response {
        id: 99,
        body: Bytes::from_static(b"?"),
    }
    .encode();
    p.b.push(REQUEST_CHANNEL, &forged, false).unwrap();
    p.drive().unwrap();
    assert!(p.a_events.is_empty());
}

#[test]
fn keepalive_pings_measures_rtt_and_times_out_a_silent_peer() {
    let mut p = Pair::new();
    // At start both ping; the pongs give an RTT.
    assert_eq!(p.advance(Duration::ZERO), (Ok(()), Ok(())));
    p.now += Duration::from_millis(20);
    p.drive().unwrap();
    assert_eq!(p.a.rtt(), Some(Duration::from_millis(20)));
    // Traffic keeps it alive for any length of time.
    for _ in 0..10 {
        assert_eq!(p.advance(Duration::from_secs(1)), (Ok(()), Ok(())));
        p.drive().unwrap();
    }
    // b stops answering: a's pings go unheard; a times out, b (not
    // hearing a either, since we drop a's frames) too.
    let mut a_result = Ok(());
    for _ in 0..4 {
        a_result = p.advance(Duration::from_secs(1)).0;
        let _ = p.a.poll_transmit(p.now, true);
        let _ = p.b.poll_transmit(p.now, true);
    }
    assert_eq!(a_result, Err(TimedOut));
    assert!(p.a.poll_timeout() <= p.now);
}

#[test]
fn user_ping_comes_back_as_a_pong_event() {
    let mut p = Pair::new();
    let nonce = p.a.ping(42);
    assert_ne!(nonce & USER_PING_BIT, 0);
    p.drive().unwrap();
    assert_eq!(p.a_events, vec![Event::Pong { token: 42 }]);
    // A forgotten ping's pong is ignored.
    let nonce = p.a.ping(43);
    assert_eq!(p.a.forget_ping(nonce), Some(43));
    p.drive().unwrap();
    assert_eq!(p.a_events.len(), 1);
}

#[test]
fn idle_timeout_closes_both_sides_gracefully() {
    let mut cfg = (*config()).clone();
    cfg.keepalive.idle_timeout = Some(Duration::from_secs(2));
    let mut p = Pair::with(Arc::new(cfg));
    p.a.push(APP, b"x", false).unwrap();
    p.drive().unwrap();
    for _ in 0..3 {
        assert_eq!(p.advance(Duration::from_secs(1)), (Ok(()), Ok(())));
        p.drive().unwrap();
    }
    assert!(p.a.is_closing() && p.b.is_closing());
    assert!(p.a_events.contains(&Event::GoAway(GoAwayReason::Idle)));
    // Both went idle at once here; either way each names the idle close,
    // not the other's acknowledgement.
    assert_eq!(p.a.go_away_reason(), Some(GoAwayReason::Idle));
    assert_eq!(p.b.go_away_reason(), Some(GoAwayReason::Idle));
    assert_eq!(p.a.status(p.now), Status::Finished { linger: true });
    assert_eq!(p.b.status(p.now), Status::Finished { linger: true });
    // Finished means quiet: later timers queue no second go-away, and a
    // repeated close changes nothing.
    p.a.close(GoAwayReason::Normal, true);
    assert_eq!(p.advance(Duration::from_millis(100)), (Ok(()), Ok(())));
    assert!(!p.a.has_pending());
    let goaways = |t: Option<Transmit>| t.map_or(0, |t| t.frames.len());
    assert_eq!(goaways(p.a.poll_transmit(p.now, true)), 0);
}

#[test]
fn go_away_with_requests_in_flight_answers_them_first() {
    let mut p = Pair::new();
    // b asks a; a decides to close before answering.
    p.b.request("work/1", Bytes::from_static(b"job"), 1)
        .unwrap();
    p.drive().unwrap();
    let Event::Request(r) = p.a_events.remove(0) else {
        panic!()
    };
    let id = r.id;
    p.a.close(GoAwayReason::Normal, true);
    p.drive().unwrap();
    assert_eq!(p.b_events, vec![Event::GoAway(GoAwayReason::Normal)]);
    assert_eq!(p.b.go_away_reason(), Some(GoAwayReason::Normal));
    // b still awaits its answer, so it has not said go-away back yet;
    // a is draining; b can no longer ask a for anything new.
    assert!(!p.b.is_open() && p.b.is_busy());
    assert!(matches!(
        p.a.status(p.now),
        Status::Draining { until: Some(_) }
    ));
    assert_eq!(p.a.push(APP, b"late", false), Err(Refused::Closed));
    // The answer still goes out; b, with nothing in flight, says go-away.
    p.a.respond(id, Bytes::from_static(b"done")).unwrap();
    p.drive().unwrap();
    assert_eq!(
        p.b_events[1],
        Event::Response(Box::new(Answer {
            token: 1,
            result: Ok(Bytes::from_static(b"done"))
        }))
    );
    assert!(p.a_events.contains(&Event::GoAway(GoAwayReason::Normal)));
    assert_eq!(p.a.status(p.now), Status::Finished { linger: true });
    assert_eq!(p.b.status(p.now), Status::Finished { linger: true });
}

#[test]
fn a_drain_ends_at_its_deadline_when_the_peer_never_settles() {
    let mut p = Pair::new();
    p.b.request("work/1", Bytes::new(), 1).unwrap();
    p.drive().unwrap();
    p.a.close(GoAwayReason::Normal, true);
    p.drive().unwrap();
    // a never answers: b stays busy, so a waits out its drain.
    p.now += Duration::from_secs(4);
    assert!(matches!(p.a.status(p.now), Status::Draining { .. }));
    p.now += Duration::from_secs(1);
    assert_eq!(p.a.status(p.now), Status::Finished { linger: true });
}

#[test]
fn an_aborting_close_discards_queued_data_but_says_why() {
    let mut p = Pair::new();
    p.a.push(APP, b"never sent", false).unwrap();
    p.a.close(GoAwayReason::ProtocolError, false);
    p.drive().unwrap();
    assert_eq!(p.b_events, vec![Event::GoAway(GoAwayReason::ProtocolError)]);
    assert_eq!(p.a.status(p.now), Status::Finished { linger: false });
    // A later graceful close does not soften an abort.
    p.a.close(GoAwayReason::Normal, true);
    assert_eq!(p.a.status(p.now), Status::Finished { linger: false });
}

#[test]
fn a_closing_session_hands_nothing_to_a_writing_sender() {
    let mut p = Pair::new();
    p.a.push(APP, b"x", false).unwrap();
    p.a.close(GoAwayReason::Normal, true);
    assert!(p.a.poll_transmit(p.now, false).is_none());
    let t = p.a.poll_transmit(p.now, true).unwrap();
    assert_eq!(t.frames.len(), 2, "the flushed message, then the go-away");
    assert!(t.app);
}

#[test]
fn queue_full_under_each_policy() {
    let mut s: Session<()> = Session::new(config(), Instant::now());
    let big = [0u8; 60];
    // Block: an empty queue takes one message however large, then refuses.
    s.push(APP + 1, &[0u8; 500], false).unwrap();
    assert_eq!(s.push(APP + 1, &big, false), Err(Refused::Blocked));
    assert!(s.take_space_waiters());
    assert!(!s.take_space_waiters());
    // Drop: refused as dropped.
    s.push(APP + 2, &big, false).unwrap();
    assert_eq!(s.push(APP + 2, &big, false), Err(Refused::Dropped));
    assert_eq!(s.queued_bytes(APP + 2), 60);
    // Forced pushes overrun up to FORCED_OVERRUN times the limit, no more.
    let mut forced = 0;
    while s.push(APP + 2, &big, true).is_ok() {
        forced += 1;
        assert!(forced < 100);
    }
    assert_eq!(s.push(APP + 2, &big, true), Err(Refused::Full));
    assert!(s.queued_bytes(APP + 2) > FORCED_OVERRUN * 100);
    // Taking the frames empties the queues.
    let mut counted = Vec::new();
    let t = s
        .poll_transmit_counted(Instant::now(), true, &mut |c, m, b| counted.push((c, m, b)))
        .unwrap();
    assert!(t.app);
    assert_eq!(s.queued_bytes(APP + 1), 0);
    assert_eq!(counted[0], (APP + 1, 1, 500));
    s.push(APP + 1, &big, false).unwrap();
}

#[test]
fn a_peer_that_pings_without_reading_pongs_is_a_flood() {
    let mut p = Pair::new();
    let mut frame = BytesMut::new();
    let ping = Control::Ping(1).encode();
    for _ in 0..(CONTROL_QUEUE / ping.len() + 10) {
        frame::put_record(&mut frame, CONTROL_CHANNEL, &ping);
    }
    let mut result = Ok(());
    for _ in 0..FORCED_OVERRUN + 2 {
        result =
            p.b.handle_frame(frame.clone().freeze(), p.now, &mut p.b_events);
        if result.is_err() {
            break;
        }
    }
    assert_eq!(result, Err(SessionError::Flood("pings")));
}

#[test]
fn malformed_records_are_named_errors() {
    let mut s: Session<()> = Session::new(config(), Instant::now());
    let mut events = Vec::new();
    let now = Instant::now();
    // A record that claims more than the frame holds.
    let mut f = BytesMut::new();
    f.put_u8(16);
    f.put_u8(50);
    f.put_slice(b"short");
    assert!(matches!(
        s.handle_frame(f.freeze(), now, &mut events),
        Err(SessionError::Frame(FrameError::RecordOverrun { .. }))
    ));
    // A control record with an unknown tag; an empty request.
    for (ch, payload) in [(CONTROL_CHANNEL, &[9u8][..]), (REQUEST_CHANNEL, &[][..])] {
        let mut f = BytesMut::new();
        frame::put_record(&mut f, ch, payload);
        assert!(matches!(
            s.handle_frame(f.freeze(), now, &mut events),
            Err(SessionError::Message(_))
        ));
    }
    assert!(events.is_empty());
}

#[test]
fn both_peers_agree_which_duplicate_to_keep() {
    let x = Keypair::generate().unwrap().peer_id();
    let y = Keypair::generate().unwrap().peer_id();
    for old_in in [false, true] {
        for new_in in [false, true] {
            // x's view: inbound means y dialled. y sees the same
            // connections with directions flipped.
            let kx = keep_newer(x, y, old_in, new_in);
            let ky = keep_newer(y, x, !old_in, !new_in);
            assert_eq!(kx, ky, "old_in {old_in} new_in {new_in}");
            if old_in == new_in {
                assert!(kx, "same dialler: the newer replaces the older");
            }
        }
    }
}

#[test]
fn a_duplicate_closed_with_requests_in_flight_still_answers_them() {
    // b asked a on the old connection; then a new connection wins, and a
    // closes the old one as a duplicate: the answer still arrives on it.
    let mut old = Pair::new();
    old.b.request("get/1", Bytes::from_static(b"k"), 5).unwrap();
    old.drive().unwrap();
    let Event::Request(r) = old.a_events.remove(0) else {
        panic!()
    };
    let id = r.id;
    old.a.close(GoAwayReason::Duplicate, true);
    old.drive().unwrap();
    old.a.respond(id, Bytes::from_static(b"v")).unwrap();
    old.drive().unwrap();
    assert_eq!(
        old.b_events,
        vec![
            Event::GoAway(GoAwayReason::Duplicate),
            Event::Response(Box::new(Answer {
                token: 5,
                result: Ok(Bytes::from_static(b"v"))
            }))
        ]
    );
    assert_eq!(old.a.status(old.now), Status::Finished { linger: true });
}

#[test]
fn abort_all_returns_every_token() {
    let mut s: Session<u8> = Session::new(config(), Instant::now());
    s.request("a/1", Bytes::new(), 1).unwrap();
    s.request("a/1", Bytes::new(), 2).unwrap();
    s.ping(3);
    let mut tokens: Vec<u8> = s.abort_all().collect();
    tokens.sort();
    assert_eq!(tokens, vec![1, 2]);
    assert!(!s.is_busy());
}
