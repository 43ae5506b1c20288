//! The DHT's wire messages and their bounded binary codec.
//!
//! A request is `sender-listen-addr | kind u8 | fields`; a response is
//! `kind u8 | fields`. An address is `form u8 | ip | port u16be`, where
//! the form's low nibble is the IP family (4 or 6; 0 alone: no address)
//! and its high nibble the transport (0 TCP, 1 QUIC), so a contact says
//! how to reach it; a form this version does not know is an error. Lists carry a `u8` count checked against
//! [`MAX_WIRE_CONTACTS`] before anything is allocated; a record's value
//! length is checked against [`MAX_WIRE_VALUE`]. Every failure is a named
//! [`WireError`]; trailing bytes are an error too.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::{BufMut, Bytes, BytesMut};

use super::key::Key;
use super::record::{Record, SIGNATURE_LEN};
use crate::{PeerId, Transport, TransportAddr};

/// Most contacts one message may carry (any `k` up to this works).
pub const MAX_WIRE_CONTACTS: usize = 64;
/// Largest record value the codec accepts; the node's own limit is lower.
pub const MAX_WIRE_VALUE: usize = 512 * 1024;

/// A peer and the address it listens on, with the transport there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Contact {
    pub id: PeerId,
    pub addr: SocketAddr,
    pub transport: Transport,
}

impl Contact {
    /// A peer listening on TCP at `addr`.
    pub fn new(id: PeerId, addr: SocketAddr) -> Self {
        Contact {
            id,
            addr,
            transport: Transport::Tcp,
        }
    }

    /// A peer listening at `at`.
    pub fn at(id: PeerId, at: TransportAddr) -> Self {
        Contact {
            id,
            addr: at.socket,
            transport: at.transport,
        }
    }

    /// Where it listens, with the transport.
    pub fn transport_addr(&self) -> TransportAddr {
        TransportAddr {
            transport: self.transport,
            socket: self.addr,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestBody {
    Ping,
    FindNode {
        target: Key,
    },
    GetRecord {
        key: Key,
    },
    PutRecord {
        record: Record,
    },
    /// The sender offers the content under `key` (the provider is always
    /// the authenticated sender).
    AddProvider {
        key: Key,
    },
    GetProviders {
        key: Key,
    },
    /// Peer exchange: up to `max` peers the responder has seen answer.
    Peers {
        max: u8,
    },
}

/// A DHT request, with the address the sender listens on (if any): the
/// receiver may add the sender to its table once it has answered a ping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub listen: Option<TransportAddr>,
    pub body: RequestBody,
}

/// Why a request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    RateLimited = 1,
    InvalidRecord = 2,
    NotOwner = 3,
    Stale = 4,
    TooLarge = 5,
    StoreFull = 6,
    Unsupported = 7,
    /// The key is not one this node is close to.
    NotClose = 8,
}

impl ErrorCode {
    fn from_u8(v: u8) -> Result<Self, WireError> {
        Ok(match v {
            1 => ErrorCode::RateLimited,
            2 => ErrorCode::InvalidRecord,
            3 => ErrorCode::NotOwner,
            4 => ErrorCode::Stale,
            5 => ErrorCode::TooLarge,
            6 => ErrorCode::StoreFull,
            7 => ErrorCode::Unsupported,
            8 => ErrorCode::NotClose,
            _ => return Err(WireError::UnknownErrorCode(v)),
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    Pong,
    Nodes {
        closer: Vec<Contact>,
    },
    Record {
        record: Option<Record>,
        closer: Vec<Contact>,
    },
    Stored,
    Providers {
        providers: Vec<Contact>,
        closer: Vec<Contact>,
    },
    Peers {
        peers: Vec<Contact>,
    },
    Error(ErrorCode),
    /// The write was not taken: the writer is over its rate. Send it again
    /// after `retry_after_ms` (a slot of its own), and space further
    /// writes to this peer `interval_us` apart (the allowed rate).
    SlowDown {
        retry_after_ms: u32,
        interval_us: u32,
    },
}

impl Response {
    pub fn slow_down(wait: std::time::Duration, interval: std::time::Duration) -> Response {
        let clamp = |v: u128| u32::try_from(v).unwrap_or(u32::MAX);
        Response::SlowDown {
            retry_after_ms: clamp(wait.as_millis().saturating_add(1)),
            interval_us: clamp(interval.as_micros()),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("message truncated")]
    Truncated,
    #[error("{0} trailing bytes after the message")]
    Trailing(usize),
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    #[error("unknown address form {0:#04x} (family in the low nibble, transport in the high)")]
    UnknownAddrFamily(u8),
    #[error("{0} contacts in one message (max {MAX_WIRE_CONTACTS})")]
    TooManyContacts(usize),
    #[error("record value of {0} bytes (max {MAX_WIRE_VALUE})")]
    ValueTooLarge(u64),
    #[error("unknown error code {0}")]
    UnknownErrorCode(u8),
    #[error("bad flag byte {0}")]
    BadFlag(u8),
}

/// A cursor over peer input: every read is bounds-checked.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.0.len() < n {
            return Err(WireError::Truncated);
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, WireError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, WireError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(a))
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn key(&mut self) -> Result<Key, WireError> {
        Ok(Key(self.array()?))
    }
    /// Contacts, providers and publishers are not checked to be keys
    /// here: a dial proves the key, and a record's signature check does.
    fn peer(&mut self) -> Result<PeerId, WireError> {
        Ok(PeerId::unverified(self.array()?))
    }
    fn addr(&mut self) -> Result<Option<TransportAddr>, WireError> {
        let form = self.u8()?;
        if form == 0 {
            return Ok(None);
        }
        let transport = match form >> 4 {
            0 => Transport::Tcp,
            1 => Transport::Quic,
            _ => return Err(WireError::UnknownAddrFamily(form)),
        };
        let ip = match form & 0x0f {
            4 => IpAddr::V4(Ipv4Addr::from(self.array::<4>()?)),
            6 => IpAddr::V6(Ipv6Addr::from(self.array::<16>()?)),
            _ => return Err(WireError::UnknownAddrFamily(form)),
        };
        let socket = SocketAddr::new(ip, self.u16()?);
        Ok(Some(TransportAddr { transport, socket }))
    }
    fn contact(&mut self) -> Result<Contact, WireError> {
        let id = self.peer()?;
        match self.addr()? {
            Some(at) => Ok(Contact::at(id, at)),
            None => Err(WireError::UnknownAddrFamily(0)),
        }
    }
    fn contacts(&mut self) -> Result<Vec<Contact>, WireError> {
        let n = self.u8()? as usize;
        if n > MAX_WIRE_CONTACTS {
            return Err(WireError::TooManyContacts(n));
        }
        // Each contact is at least 39 bytes: a short message cannot make us
        // reserve much.
        let mut v = Vec::with_capacity(n.min(self.0.len() / 39));
        for _ in 0..n {
            v.push(self.contact()?);
        }
        Ok(v)
    }
    fn record(&mut self) -> Result<Record, WireError> {
        let key = self.key()?;
        let publisher = self.peer()?;
        let seq = self.u64()?;
        let expires_ms = self.u64()?;
        let (len, used) = crate::varint::get(self.0, u64::MAX).map_err(|_| WireError::Truncated)?;
        if len > MAX_WIRE_VALUE as u64 {
            return Err(WireError::ValueTooLarge(len));
        }
        self.take(used)?;
        let value = Bytes::copy_from_slice(self.take(len as usize)?);
        let signature = self.array::<SIGNATURE_LEN>()?;
        Ok(Record {
            key,
            value,
            publisher,
            seq,
            expires_ms,
            signature,
        })
    }
    fn finish(self) -> Result<(), WireError> {
        match self.0.len() {
            0 => Ok(()),
            n => Err(WireError::Trailing(n)),
        }
    }
}

fn put_addr(out: &mut BytesMut, addr: Option<TransportAddr>) {
    let Some(at) = addr else {
        out.put_u8(0);
        return;
    };
    let transport = match at.transport {
        Transport::Tcp => 0x00,
        Transport::Quic => 0x10,
    };
    match at.socket {
        SocketAddr::V4(a) => {
            out.put_u8(transport | 4);
            out.put_slice(&a.ip().octets());
            out.put_u16(a.port());
        }
        SocketAddr::V6(a) => {
            out.put_u8(transport | 6);
            out.put_slice(&a.ip().octets());
            out.put_u16(a.port());
        }
    }
}

fn put_contacts(out: &mut BytesMut, contacts: &[Contact]) {
    let n = contacts.len().min(MAX_WIRE_CONTACTS);
    out.put_u8(n as u8);
    for c in &contacts[..n] {
        out.put_slice(c.id.as_bytes());
        put_addr(out, Some(c.transport_addr()));
    }
}

/// One record on its own, with nothing after it.
pub(crate) fn decode_record(input: &[u8]) -> Result<Record, WireError> {
    let mut r = Reader(input);
    let record = r.record()?;
    r.finish()?;
    Ok(record)
}

pub(crate) fn put_record(out: &mut BytesMut, r: &Record) {
    out.put_slice(&r.key.0);
    out.put_slice(r.publisher.as_bytes());
    out.put_u64(r.seq);
    out.put_u64(r.expires_ms);
    crate::varint::put(out, r.value.len() as u64);
    out.put_slice(&r.value);
    out.put_slice(&r.signature);
}

impl Request {
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(64);
        put_addr(&mut out, self.listen);
        match &self.body {
            RequestBody::Ping => out.put_u8(0),
            RequestBody::FindNode { target } => {
                out.put_u8(1);
                out.put_slice(&target.0);
            }
            RequestBody::GetRecord { key } => {
                out.put_u8(2);
                out.put_slice(&key.0);
            }
            RequestBody::PutRecord { record } => {
                out.put_u8(3);
                put_record(&mut out, record);
            }
            RequestBody::AddProvider { key } => {
                out.put_u8(4);
                out.put_slice(&key.0);
            }
            RequestBody::GetProviders { key } => {
                out.put_u8(5);
                out.put_slice(&key.0);
            }
            RequestBody::Peers { max } => {
                out.put_u8(6);
                out.put_u8(*max);
            }
        }
        out.freeze()
    }

    pub fn decode(input: &[u8]) -> Result<Request, WireError> {
        let mut r = Reader(input);
        let listen = r.addr()?;
        let body = match r.u8()? {
            0 => RequestBody::Ping,
            1 => RequestBody::FindNode { target: r.key()? },
            2 => RequestBody::GetRecord { key: r.key()? },
            3 => RequestBody::PutRecord {
                record: r.record()?,
            },
            4 => RequestBody::AddProvider { key: r.key()? },
            5 => RequestBody::GetProviders { key: r.key()? },
            6 => RequestBody::Peers { max: r.u8()? },
            k => return Err(WireError::UnknownKind(k)),
        };
        r.finish()?;
        Ok(Request { listen, body })
    }
}

impl Response {
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(64);
        match self {
            Response::Pong => out.put_u8(0),
            Response::Nodes { closer } => {
                out.put_u8(1);
                put_contacts(&mut out, closer);
            }
            Response::Record { record, closer } => {
                out.put_u8(2);
                match record {
                    None => out.put_u8(0),
                    Some(rec) => {
                        out.put_u8(1);
                        put_record(&mut out, rec);
                    }
                }
                put_contacts(&mut out, closer);
            }
            Response::Stored => out.put_u8(3),
            Response::Providers { providers, closer } => {
                out.put_u8(4);
                put_contacts(&mut out, providers);
                put_contacts(&mut out, closer);
            }
            Response::Peers { peers } => {
                out.put_u8(5);
                put_contacts(&mut out, peers);
            }
            Response::Error(code) => {
                out.put_u8(6);
                out.put_u8(*code as u8);
            }
            Response::SlowDown {
                retry_after_ms,
                interval_us,
            } => {
                out.put_u8(7);
                out.put_u32(*retry_after_ms);
                out.put_u32(*interval_us);
            }
        }
        out.freeze()
    }

    pub fn decode(input: &[u8]) -> Result<Response, WireError> {
        let mut r = Reader(input);
        let resp = match r.u8()? {
            0 => Response::Pong,
            1 => Response::Nodes {
                closer: r.contacts()?,
            },
            2 => {
                let record = match r.u8()? {
                    0 => None,
                    1 => Some(r.record()?),
                    f => return Err(WireError::BadFlag(f)),
                };
                Response::Record {
                    record,
                    closer: r.contacts()?,
                }
            }
            3 => Response::Stored,
            4 => Response::Providers {
                providers: r.contacts()?,
                closer: r.contacts()?,
            },
            5 => Response::Peers {
                peers: r.contacts()?,
            },
            6 => Response::Error(ErrorCode::from_u8(r.u8()?)?),
            7 => Response::SlowDown {
                retry_after_ms: r.u32()?,
                interval_us: r.u32()?,
            },
            k => return Err(WireError::UnknownKind(k)),
        };
        r.finish()?;
        Ok(resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Keypair;
    use proptest::prelude::*;

    fn contact(i: u8) -> Contact {
        let kp = Keypair::from_secret([i; 32]);
        let socket = SocketAddr::from(([10, 0, 0, i], 4000 + i as u16));
        // Every other contact listens on QUIC: both forms round-trip.
        match i % 2 {
            0 => Contact::new(kp.peer_id(), socket),
            _ => Contact::at(kp.peer_id(), TransportAddr::quic(socket)),
        }
    }

    #[test]
    fn unknown_address_forms_are_refused() {
        // The high nibble 2 is no transport this version knows; 0x15 is
        // QUIC with no IP family.
        for form in [0x24u8, 0x15, 0x07] {
            let mut wire = vec![form];
            wire.extend_from_slice(&[0u8; 40]);
            assert!(matches!(
                Request::decode(&wire),
                Err(WireError::UnknownAddrFamily(f)) if f == form
            ));
        }
    }

    fn record() -> Record {
        let kp = Keypair::from_secret([9; 32]);
        Record::sign(
            &kp,
            Key::hash(b"k"),
            Bytes::from_static(b"value"),
            3,
            1_000_000,
        )
    }

    fn all_messages() -> (Vec<Request>, Vec<Response>) {
        let listen = Some(TransportAddr::tcp(SocketAddr::from(([1, 2, 3, 4], 5))));
        let v6 = Some("quic://[::1]:7".parse().unwrap());
        let bodies = vec![
            RequestBody::Ping,
            RequestBody::FindNode {
                target: Key::hash(b"t"),
            },
            RequestBody::GetRecord {
                key: Key::hash(b"g"),
            },
            RequestBody::PutRecord { record: record() },
            RequestBody::AddProvider {
                key: Key::hash(b"a"),
            },
            RequestBody::GetProviders {
                key: Key::hash(b"p"),
            },
            RequestBody::Peers { max: 9 },
        ];
        let reqs = bodies
            .into_iter()
            .enumerate()
            .map(|(i, body)| Request {
                listen: [None, listen, v6][i % 3],
                body,
            })
            .collect();
        let cs: Vec<_> = (1..=20).map(contact).collect();
        let resps = vec![
            Response::Pong,
            Response::Nodes { closer: cs.clone() },
            Response::Record {
                record: Some(record()),
                closer: cs[..3].to_vec(),
            },
            Response::Record {
                record: None,
                closer: vec![],
            },
            Response::Stored,
            Response::Providers {
                providers: cs[..2].to_vec(),
                closer: cs.clone(),
            },
            Response::Peers { peers: cs },
            Response::Error(ErrorCode::NotOwner),
            Response::SlowDown {
                retry_after_ms: 1234,
                interval_us: 50_000,
            },
        ];
        (reqs, resps)
    }

    #[test]
    fn round_trip_and_every_truncation_fails() {
        let (reqs, resps) = all_messages();
        for r in reqs {
            let b = r.encode();
            assert_eq!(Request::decode(&b).unwrap(), r);
            for cut in 0..b.len() {
                assert!(Request::decode(&b[..cut]).is_err(), "{r:?} cut {cut}");
            }
            let mut long = b.to_vec();
            long.push(0);
            assert_eq!(Request::decode(&long), Err(WireError::Trailing(1)));
        }
        for r in resps {
            let b = r.encode();
            assert_eq!(Response::decode(&b).unwrap(), r);
            for cut in 0..b.len() {
                assert!(Response::decode(&b[..cut]).is_err(), "{r:?} cut {cut}");
            }
        }
    }

    #[test]
    fn hostile_lengths_are_refused_before_allocating() {
        // 255 contacts claimed in a 3-byte message.
        assert_eq!(
            Response::decode(&[1, 255]),
            Err(WireError::TooManyContacts(255))
        );
        // A 4 GiB value length.
        let mut b = BytesMut::new();
        b.put_u8(0);
        b.put_u8(3);
        b.put_slice(&[0u8; 32]);
        b.put_slice(record().publisher.as_bytes());
        b.put_u64(1);
        b.put_u64(1);
        crate::varint::put(&mut b, 1 << 32);
        assert_eq!(Request::decode(&b), Err(WireError::ValueTooLarge(1 << 32)));
        assert_eq!(Request::decode(&[9]), Err(WireError::UnknownAddrFamily(9)));
        assert_eq!(Request::decode(&[0, 42]), Err(WireError::UnknownKind(42)));
        assert_eq!(
            Response::decode(&[6, 99]),
            Err(WireError::UnknownErrorCode(99))
        );
        assert_eq!(Response::decode(&[2, 7]), Err(WireError::BadFlag(7)));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = Request::decode(&data);
            let _ = Response::decode(&data);
        }
    }
}
