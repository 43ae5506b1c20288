//! Layer 3 — liveness and idleness of one connection, as a sans-IO timer
//! machine: feed it what was received and the time; ask it what to do.

use std::time::{Duration, Instant};

/// Keepalive settings.
#[derive(Clone, Copy, Debug)]
pub struct KeepaliveConfig {
    /// How often to ping a peer when nothing else is heard from it.
    pub interval: Duration,
    /// Close when nothing at all was received for this long.
    pub timeout: Duration,
    /// Close when no application message moved either way for this long.
    pub idle_timeout: Option<Duration>,
}

impl Default for KeepaliveConfig {
    fn default() -> Self {
        KeepaliveConfig {
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(30),
            idle_timeout: None,
        }
    }
}

/// What the driver should do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeepaliveAction {
    /// Nothing until [`Keepalive::next_deadline`].
    Wait,
    /// Send `Control::Ping(nonce)`.
    SendPing(u64),
    /// The peer has been silent past the timeout.
    TimedOut,
    /// No application traffic past the idle timeout.
    Idle,
}

/// The keepalive state machine of one connection.
#[derive(Debug)]
pub struct Keepalive {
    config: KeepaliveConfig,
    last_received: Instant,
    last_app_traffic: Instant,
    next_ping: Instant,
    outstanding: Option<(u64, Instant)>,
    next_nonce: u64,
    rtt: Option<Duration>,
}

impl Keepalive {
    pub fn new(config: KeepaliveConfig, now: Instant) -> Self {
        Keepalive {
            config,
            last_received: now,
            last_app_traffic: now,
            next_ping: now,
            outstanding: None,
            next_nonce: 1,
            rtt: None,
        }
    }

    /// Anything arrived from the peer.
    pub fn on_receive(&mut self, now: Instant) {
        self.last_received = now;
    }

    /// An application message was sent or received.
    pub fn on_app_traffic(&mut self, now: Instant) {
        self.last_app_traffic = now;
    }

    /// A pong arrived; returns the measured round-trip time if it answers
    /// our outstanding ping (stale or unsolicited pongs are ignored).
    pub fn on_pong(&mut self, nonce: u64, now: Instant) -> Option<Duration> {
        match self.outstanding {
            Some((n, sent)) if n == nonce => {
                self.outstanding = None;
                let rtt = now.saturating_duration_since(sent);
                // Smooth like TCP's SRTT (1/8 gain) after the first sample.
                self.rtt = Some(match self.rtt {
                    None => rtt,
                    Some(old) => (old * 7 + rtt) / 8,
                });
                Some(rtt)
            }
            _ => None,
        }
    }

    /// Asks for a ping now (e.g. the user wants a fresh RTT); returns its nonce.
    pub fn ping_now(&mut self, now: Instant) -> u64 {
        let nonce = self.next_nonce;
        self.next_nonce = self.next_nonce.wrapping_add(1);
        self.outstanding = Some((nonce, now));
        self.next_ping = now + self.config.interval;
        nonce
    }

    /// Smoothed round-trip time, once measured.
    pub fn rtt(&self) -> Option<Duration> {
        self.rtt
    }

    /// What to do at `now`.
    pub fn poll(&mut self, now: Instant) -> KeepaliveAction {
        if now.saturating_duration_since(self.last_received) >= self.config.timeout {
            return KeepaliveAction::TimedOut;
        }
        if let Some(idle) = self.config.idle_timeout {
            if now.saturating_duration_since(self.last_app_traffic) >= idle {
                return KeepaliveAction::Idle;
            }
        }
        if now >= self.next_ping {
            return KeepaliveAction::SendPing(self.ping_now(now));
        }
        KeepaliveAction::Wait
    }

    /// When [`Self::poll`] next has something to do.
    pub fn next_deadline(&self) -> Instant {
        let mut at = (self.last_received + self.config.timeout).min(self.next_ping);
        if let Some(idle) = self.config.idle_timeout {
            at = at.min(self.last_app_traffic + idle);
        }
        at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> KeepaliveConfig {
        KeepaliveConfig {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(3),
            idle_timeout: Some(Duration::from_secs(10)),
        }
    }

    #[test]
    fn pings_measure_rtt_and_ignore_stale_pongs() {
        let t0 = Instant::now();
        let mut k = Keepalive::new(cfg(), t0);
        let KeepaliveAction::SendPing(n) = k.poll(t0) else {
            panic!("expected a ping")
        };
        assert_eq!(k.poll(t0), KeepaliveAction::Wait);
        assert_eq!(k.on_pong(n + 1, t0), None);
        assert_eq!(
            k.on_pong(n, t0 + Duration::from_millis(5)),
            Some(Duration::from_millis(5))
        );
        assert_eq!(
            k.on_pong(n, t0 + Duration::from_millis(6)),
            None,
            "a pong counts once"
        );
        assert_eq!(k.rtt(), Some(Duration::from_millis(5)));
        assert_eq!(k.next_deadline(), t0 + Duration::from_secs(1));
    }

    #[test]
    fn silence_times_out_and_traffic_keeps_alive() {
        let t0 = Instant::now();
        let mut k = Keepalive::new(cfg(), t0);
        k.poll(t0);
        k.on_receive(t0 + Duration::from_secs(2));
        k.on_app_traffic(t0 + Duration::from_secs(2));
        assert!(matches!(
            k.poll(t0 + Duration::from_secs(4)),
            KeepaliveAction::SendPing(_)
        ));
        assert_eq!(
            k.poll(t0 + Duration::from_secs(5) + Duration::from_millis(1)),
            KeepaliveAction::TimedOut
        );
    }

    #[test]
    fn idle_connections_are_reported() {
        let t0 = Instant::now();
        let mut k = Keepalive::new(cfg(), t0);
        for s in 1..=10 {
            k.on_receive(t0 + Duration::from_secs(s));
        }
        assert_eq!(k.poll(t0 + Duration::from_secs(10)), KeepaliveAction::Idle);
    }
}
