//! Gossip wire messages and their bounded binary codec.
//!
//! Every message is `kind u8 | fields`. A topic is `len u8 | UTF-8`
//! (1..=[`MAX_TOPIC_LEN`] bytes); an id list is `count u16 | 16 bytes
//! each`, the count checked against [`MAX_WIRE_IDS`] and the remaining
//! length before anything is allocated. A data message's payload is the
//! rest of the buffer (a zero-copy slice), at most [`MAX_WIRE_DATA`]
//! bytes. Every failure is a named [`WireError`]; trailing bytes are an
//! error too.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

/// Longest topic name, in bytes.
pub const MAX_TOPIC_LEN: usize = 200;
/// Most message ids one IHAVE / IWANT / IDONTWANT may carry.
pub const MAX_WIRE_IDS: usize = 1024;
/// Largest payload the codec accepts; the node's own limit may be lower.
pub const MAX_WIRE_DATA: usize = 1 << 20;

/// A topic name (cheap to clone).
pub type Topic = Arc<str>;

/// A message id: the first 16 bytes of BLAKE3(topic, payload), so the
/// same payload on the same topic is one message however it travels.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(pub [u8; 16]);

impl MessageId {
    pub fn of(topic: &str, data: &[u8]) -> MessageId {
        let mut h = blake3::Hasher::new();
        h.update(&[topic.len() as u8]);
        h.update(topic.as_bytes());
        h.update(data);
        let mut id = [0u8; 16];
        id.copy_from_slice(&h.finalize().as_bytes()[..16]);
        MessageId(id)
    }
}

impl std::fmt::Debug for MessageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in &self.0[..6] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl std::fmt::Display for MessageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// One gossip message between two peers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Wire {
    /// The sender joined a topic.
    Subscribe(Topic),
    Unsubscribe(Topic),
    /// Add me to your mesh for this topic and push me full messages.
    Graft(Topic),
    /// You are out of my mesh; do not graft again for `backoff_secs`.
    Prune {
        topic: Topic,
        backoff_secs: u16,
    },
    /// Stay in my mesh, but send me ids (IHAVE) instead of full messages:
    /// I already get them from someone else (epidemic broadcast trees).
    Choke(Topic),
    /// A full message; `hops` counts forwards (diagnostic, not trusted).
    Data {
        topic: Topic,
        hops: u8,
        data: Bytes,
    },
    /// I have these messages of `topic`.
    IHave {
        topic: Topic,
        ids: Vec<MessageId>,
    },
    /// Send me these messages.
    IWant(Vec<MessageId>),
    /// Do not send me these (large) messages: I have them.
    IDontWant(Vec<MessageId>),
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("gossip message truncated")]
    Truncated,
    #[error("{0} trailing bytes after the gossip message")]
    Trailing(usize),
    #[error("unknown gossip message kind {0}")]
    UnknownKind(u8),
    #[error("empty topic")]
    EmptyTopic,
    #[error("topic of {0} bytes (max {MAX_TOPIC_LEN})")]
    TopicTooLong(usize),
    #[error("topic is not UTF-8")]
    TopicNotUtf8,
    #[error("{0} message ids in one message (max {MAX_WIRE_IDS})")]
    TooManyIds(usize),
    #[error("payload of {0} bytes (max {MAX_WIRE_DATA})")]
    DataTooLarge(usize),
}

const SUBSCRIBE: u8 = 1;
const UNSUBSCRIBE: u8 = 2;
const GRAFT: u8 = 3;
const PRUNE: u8 = 4;
const CHOKE: u8 = 5;
const DATA: u8 = 6;
const IHAVE: u8 = 7;
const IWANT: u8 = 8;
const IDONTWANT: u8 = 9;

/// Checks a topic name a local user gave (the same rules as the wire).
pub fn check_topic(topic: &str) -> Result<(), WireError> {
    if topic.is_empty() {
        return Err(WireError::EmptyTopic);
    }
    if topic.len() > MAX_TOPIC_LEN {
        return Err(WireError::TopicTooLong(topic.len()));
    }
    Ok(())
}

impl Wire {
    /// The encoded length.
    pub fn encoded_len(&self) -> usize {
        let topic = |t: &Topic| 1 + t.len();
        let ids = |v: &Vec<MessageId>| 2 + 16 * v.len();
        1 + match self {
            Wire::Subscribe(t) | Wire::Unsubscribe(t) | Wire::Graft(t) | Wire::Choke(t) => topic(t),
            Wire::Prune { topic: t, .. } => topic(t) + 2,
            Wire::Data { topic: t, data, .. } => topic(t) + 1 + data.len(),
            Wire::IHave { topic: t, ids: v } => topic(t) + ids(v),
            Wire::IWant(v) | Wire::IDontWant(v) => ids(v),
        }
    }

    /// Encodes the message. Topics and id lists must be within the limits
    /// (the state machine only builds such messages).
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(self.encoded_len());
        let topic = |b: &mut BytesMut, t: &Topic| {
            let t = &t.as_bytes()[..t.len().min(MAX_TOPIC_LEN)];
            b.put_u8(t.len() as u8);
            b.put_slice(t);
        };
        let ids = |b: &mut BytesMut, v: &[MessageId]| {
            let v = &v[..v.len().min(MAX_WIRE_IDS)];
            b.put_u16(v.len() as u16);
            for id in v {
                b.put_slice(&id.0);
            }
        };
        match self {
            Wire::Subscribe(t) => {
                b.put_u8(SUBSCRIBE);
                topic(&mut b, t);
            }
            Wire::Unsubscribe(t) => {
                b.put_u8(UNSUBSCRIBE);
                topic(&mut b, t);
            }
            Wire::Graft(t) => {
                b.put_u8(GRAFT);
                topic(&mut b, t);
            }
            Wire::Prune {
                topic: t,
                backoff_secs,
            } => {
                b.put_u8(PRUNE);
                topic(&mut b, t);
                b.put_u16(*backoff_secs);
            }
            Wire::Choke(t) => {
                b.put_u8(CHOKE);
                topic(&mut b, t);
            }
            Wire::Data {
                topic: t,
                hops,
                data,
            } => {
                b.put_u8(DATA);
                topic(&mut b, t);
                b.put_u8(*hops);
                b.put_slice(data);
            }
            Wire::IHave { topic: t, ids: v } => {
                b.put_u8(IHAVE);
                topic(&mut b, t);
                ids(&mut b, v);
            }
            Wire::IWant(v) => {
                b.put_u8(IWANT);
                ids(&mut b, v);
            }
            Wire::IDontWant(v) => {
                b.put_u8(IDONTWANT);
                ids(&mut b, v);
            }
        }
        b.freeze()
    }

    /// Decodes one message; a data payload is a slice of `input`.
    pub fn decode(input: &Bytes) -> Result<Wire, WireError> {
        let mut r = Reader { buf: input, pos: 0 };
        let msg = match r.u8()? {
            SUBSCRIBE => Wire::Subscribe(r.topic()?),
            UNSUBSCRIBE => Wire::Unsubscribe(r.topic()?),
            GRAFT => Wire::Graft(r.topic()?),
            PRUNE => Wire::Prune {
                topic: r.topic()?,
                backoff_secs: r.u16()?,
            },
            CHOKE => Wire::Choke(r.topic()?),
            DATA => {
                let topic = r.topic()?;
                let hops = r.u8()?;
                let len = input.len() - r.pos;
                if len > MAX_WIRE_DATA {
                    return Err(WireError::DataTooLarge(len));
                }
                let data = input.slice(r.pos..);
                r.pos = input.len();
                Wire::Data { topic, hops, data }
            }
            IHAVE => Wire::IHave {
                topic: r.topic()?,
                ids: r.ids()?,
            },
            IWANT => Wire::IWant(r.ids()?),
            IDONTWANT => Wire::IDontWant(r.ids()?),
            k => return Err(WireError::UnknownKind(k)),
        };
        match input.len() - r.pos {
            0 => Ok(msg),
            n => Err(WireError::Trailing(n)),
        }
    }
}

/// A cursor over peer input: every read is bounds-checked.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], WireError> {
        let s = self
            .buf
            .get(self.pos..self.pos.saturating_add(n))
            .ok_or(WireError::Truncated)?;
        self.pos += n;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, WireError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn topic(&mut self) -> Result<Topic, WireError> {
        let len = self.u8()? as usize;
        if len == 0 {
            return Err(WireError::EmptyTopic);
        }
        if len > MAX_TOPIC_LEN {
            return Err(WireError::TopicTooLong(len));
        }
        let s = std::str::from_utf8(self.take(len)?).map_err(|_| WireError::TopicNotUtf8)?;
        Ok(Topic::from(s))
    }

    fn ids(&mut self) -> Result<Vec<MessageId>, WireError> {
        let n = self.u16()? as usize;
        if n > MAX_WIRE_IDS {
            return Err(WireError::TooManyIds(n));
        }
        let raw = self.take(n * 16)?;
        Ok(raw
            .chunks_exact(16)
            .map(|c| {
                let mut id = [0u8; 16];
                id.copy_from_slice(c);
                MessageId(id)
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(s: &str) -> Topic {
        Topic::from(s)
    }

    fn samples() -> Vec<Wire> {
        let ids = vec![MessageId([1; 16]), MessageId([2; 16])];
        vec![
            Wire::Subscribe(t("blocks")),
            Wire::Unsubscribe(t("blocks")),
            Wire::Graft(t("a")),
            Wire::Prune {
                topic: t("a"),
                backoff_secs: 60,
            },
            Wire::Choke(t("a")),
            Wire::Data {
                topic: t("tx"),
                hops: 3,
                data: Bytes::from_static(b"hello"),
            },
            Wire::Data {
                topic: t("tx"),
                hops: 0,
                data: Bytes::new(),
            },
            Wire::IHave {
                topic: t("tx"),
                ids: ids.clone(),
            },
            Wire::IWant(ids.clone()),
            Wire::IDontWant(vec![]),
        ]
    }

    #[test]
    fn every_message_round_trips_at_its_stated_length() {
        for m in samples() {
            let b = m.encode();
            assert_eq!(b.len(), m.encoded_len(), "{m:?}");
            assert_eq!(Wire::decode(&b), Ok(m));
        }
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        for m in samples() {
            let b = m.encode();
            // A data message cut inside its payload is a shorter payload.
            let header = match &m {
                Wire::Data { data, .. } => b.len() - data.len(),
                _ => b.len(),
            };
            for cut in 0..header {
                let r = Wire::decode(&b.slice(..cut));
                assert!(r.is_err(), "{m:?} cut at {cut} decoded as {r:?}");
            }
        }
    }

    #[test]
    fn hostile_inputs_get_named_errors() {
        let dec = |v: Vec<u8>| Wire::decode(&Bytes::from(v));
        assert_eq!(dec(vec![]), Err(WireError::Truncated));
        assert_eq!(dec(vec![99]), Err(WireError::UnknownKind(99)));
        assert_eq!(dec(vec![SUBSCRIBE, 0]), Err(WireError::EmptyTopic));
        assert_eq!(dec(vec![SUBSCRIBE, 255]), Err(WireError::TopicTooLong(255)));
        assert_eq!(
            dec(vec![SUBSCRIBE, 2, 0xff, 0xfe]),
            Err(WireError::TopicNotUtf8)
        );
        assert_eq!(
            dec(vec![SUBSCRIBE, 1, b'a', 0]),
            Err(WireError::Trailing(1))
        );
        // A count far beyond the bytes present, and beyond the cap.
        assert_eq!(
            dec(vec![IWANT, 0x04, 0x01]),
            Err(WireError::TooManyIds(1025))
        );
        assert_eq!(dec(vec![IWANT, 0x00, 0x10]), Err(WireError::Truncated));
        let mut big = vec![DATA, 1, b'a', 0];
        big.resize(4 + MAX_WIRE_DATA + 1, 0);
        assert_eq!(dec(big), Err(WireError::DataTooLarge(MAX_WIRE_DATA + 1)));
    }

    #[test]
    fn ids_depend_on_topic_and_payload() {
        let a = MessageId::of("t", b"x");
        assert_eq!(a, MessageId::of("t", b"x"));
        assert_ne!(a, MessageId::of("u", b"x"));
        assert_ne!(a, MessageId::of("t", b"y"));
        // The topic length is hashed, so ("ab","c") and ("a","bc") differ.
        assert_ne!(MessageId::of("ab", b"c"), MessageId::of("a", b"bc"));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(v in proptest::collection::vec(any::<u8>(), 0..300)) {
            let b = Bytes::from(v);
            if let Ok(m) = Wire::decode(&b) {
                prop_assert_eq!(m.encode(), b);
            }
        }
    }
}
