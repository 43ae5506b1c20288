//! Prometheus metrics: per-channel message and byte counters, connection
//! counts, handshake failures and peer errors by reason.
//!
//! Hot paths add to counters once per batch, not per message.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

/// Counters of one channel in one direction, cached by the hot paths.
#[derive(Clone)]
pub(crate) struct ChannelCounters {
    pub messages: Counter,
    pub bytes: Counter,
    pub dropped: Counter,
}

/// All of a node's metrics.
pub struct Metrics {
    registry: Registry,
    messages_sent: Family<Labels, Counter>,
    messages_received: Family<Labels, Counter>,
    bytes_sent: Family<Labels, Counter>,
    bytes_received: Family<Labels, Counter>,
    messages_dropped: Family<Labels, Counter>,
    pub(crate) connections: Family<Labels, Gauge>,
    pub(crate) connections_opened: Family<Labels, Counter>,
    pub(crate) connections_closed: Family<Labels, Counter>,
    pub(crate) connections_rejected: Family<Labels, Counter>,
    pub(crate) handshake_failures: Family<Labels, Counter>,
    pub(crate) peer_errors: Family<Labels, Counter>,
    pub(crate) requests: Family<Labels, Counter>,
    /// Times a peer over its share of request handling was not read, and
    /// for how long in all.
    serve_pauses: Counter,
    serve_paused_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
}

fn label(k: &'static str, v: impl ToString) -> Labels {
    vec![(k, v.to_string())]
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut m = Metrics {
            registry: Registry::with_prefix("peerlink"),
            messages_sent: Family::default(),
            messages_received: Family::default(),
            bytes_sent: Family::default(),
            bytes_received: Family::default(),
            messages_dropped: Family::default(),
            connections: Family::default(),
            connections_opened: Family::default(),
            connections_closed: Family::default(),
            connections_rejected: Family::default(),
            handshake_failures: Family::default(),
            peer_errors: Family::default(),
            requests: Family::default(),
            serve_pauses: Counter::default(),
            serve_paused_seconds: Counter::default(),
        };
        let r = &mut m.registry;
        r.register(
            "messages_sent",
            "Messages sent, by channel",
            m.messages_sent.clone(),
        );
        r.register(
            "messages_received",
            "Messages received, by channel",
            m.messages_received.clone(),
        );
        r.register(
            "bytes_sent",
            "Payload bytes sent, by channel",
            m.bytes_sent.clone(),
        );
        r.register(
            "bytes_received",
            "Payload bytes received, by channel",
            m.bytes_received.clone(),
        );
        r.register(
            "messages_dropped",
            "Messages dropped by a full queue, by channel and direction",
            m.messages_dropped.clone(),
        );
        r.register(
            "connections",
            "Established connections, by direction",
            m.connections.clone(),
        );
        r.register(
            "connections_opened",
            "Connections established, by direction",
            m.connections_opened.clone(),
        );
        r.register(
            "connections_closed",
            "Connections closed, by reason",
            m.connections_closed.clone(),
        );
        r.register(
            "connections_rejected",
            "Connections refused by a limit, by limit",
            m.connections_rejected.clone(),
        );
        r.register(
            "handshake_failures",
            "Failed handshakes, by reason",
            m.handshake_failures.clone(),
        );
        r.register(
            "peer_errors",
            "Protocol violations by peers (each closes the connection), by reason",
            m.peer_errors.clone(),
        );
        r.register(
            "requests",
            "Outbound requests, by outcome",
            m.requests.clone(),
        );
        r.register(
            "serve_pauses",
            "Times a peer over its share of request handling was not read",
            m.serve_pauses.clone(),
        );
        r.register(
            "serve_paused_seconds",
            "Time peers over their share of request handling were not read",
            m.serve_paused_seconds.clone(),
        );
        m
    }

    pub(crate) fn paused(&self, wait: std::time::Duration) {
        self.serve_pauses.inc();
        self.serve_paused_seconds.inc_by(wait.as_secs_f64());
    }

    pub(crate) fn outbound(&self, channel: u16) -> ChannelCounters {
        self.channel_counters(channel, &self.messages_sent, &self.bytes_sent, "out")
    }

    pub(crate) fn inbound(&self, channel: u16) -> ChannelCounters {
        self.channel_counters(channel, &self.messages_received, &self.bytes_received, "in")
    }

    fn channel_counters(
        &self,
        channel: u16,
        messages: &Family<Labels, Counter>,
        bytes: &Family<Labels, Counter>,
        direction: &'static str,
    ) -> ChannelCounters {
        let ch = label("channel", channel);
        let dropped = vec![
            ("channel", channel.to_string()),
            ("direction", direction.to_string()),
        ];
        ChannelCounters {
            messages: messages.get_or_create(&ch).clone(),
            bytes: bytes.get_or_create(&ch).clone(),
            dropped: self.messages_dropped.get_or_create(&dropped).clone(),
        }
    }

    pub(crate) fn inc(family: &Family<Labels, Counter>, key: &'static str, value: impl ToString) {
        family.get_or_create(&label(key, value)).inc();
    }

    pub(crate) fn gauge(&self, direction: &'static str) -> Gauge {
        self.connections
            .get_or_create(&label("direction", direction))
            .clone()
    }

    /// Reads one counter by metric name and label value, for tests and reports.
    pub fn counter(&self, name: &str, label_value: &str) -> u64 {
        let family = match name {
            "messages_sent" => &self.messages_sent,
            "messages_received" => &self.messages_received,
            "bytes_sent" => &self.bytes_sent,
            "bytes_received" => &self.bytes_received,
            "connections_opened" => &self.connections_opened,
            "connections_closed" => &self.connections_closed,
            "connections_rejected" => &self.connections_rejected,
            "handshake_failures" => &self.handshake_failures,
            "peer_errors" => &self.peer_errors,
            "requests" => &self.requests,
            _ => return 0,
        };
        let key = match name {
            "messages_sent" | "messages_received" | "bytes_sent" | "bytes_received" => "channel",
            "connections_opened" => "direction",
            "connections_rejected" => "limit",
            "requests" => "outcome",
            _ => "reason",
        };
        family.get_or_create(&label(key, label_value)).get()
    }

    /// A message for a channel nobody receives on: one series for all such
    /// channels, so a peer cannot grow the metrics without bound.
    pub(crate) fn dropped_unrouted(&self) {
        let labels = vec![
            ("channel", "unrouted".to_string()),
            ("direction", "in".to_string()),
        ];
        self.messages_dropped.get_or_create(&labels).inc();
    }

    /// Messages dropped on `channel` in direction `"in"` or `"out"`.
    pub fn dropped(&self, channel: u16, direction: &str) -> u64 {
        self.messages_dropped
            .get_or_create(&vec![
                ("channel", channel.to_string()),
                ("direction", direction.to_string()),
            ])
            .get()
    }

    /// Times a peer over its share of request handling was not read
    /// ([`crate::NodeConfig::peer_serve_rate`]).
    pub fn serve_pauses(&self) -> u64 {
        self.serve_pauses.get()
    }

    /// The sum of a counter family over all its labels, e.g.
    /// `sum("handshake_failures")`.
    pub fn sum(&self, name: &str) -> u64 {
        let prefix = format!("peerlink_{name}_total");
        self.encode()
            .lines()
            .filter(|l| l.starts_with(&prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
