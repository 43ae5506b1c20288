//! Layer 3 and 7 codecs: the control channel (ping, pong, go-away) and
//! request/response messages. Both travel as records inside sealed frames.
//!
//! ```text
//! control   := 0x01 nonce:u64be          (ping)
//!            | 0x02 nonce:u64be          (pong)
//!            | 0x03 reason:u8            (go away)
//! rr        := 0x01 id:varint plen:u8 protocol(plen, utf-8) body   (request)
//!            | 0x02 id:varint body                                 (response)
//!            | 0x03 id:varint code:u8 message(utf-8)               (error response)
//! ```

use bytes::{BufMut, Bytes, BytesMut};

use crate::frame::FrameError;
use crate::varint;

/// Channel of pings, pongs and go-aways; always sent first.
pub const CONTROL_CHANNEL: u16 = 0;
/// Channel of request/response traffic.
pub const REQUEST_CHANNEL: u16 = 1;
/// Topic gossip ([`crate::gossip::Wire`] messages).
pub const GOSSIP_CHANNEL: u16 = 2;
/// Channels below this are reserved for peerlink itself.
pub const FIRST_APP_CHANNEL: u16 = 16;
/// Longest request/response protocol name.
pub const MAX_PROTOCOL_NAME: usize = 64;
/// Longest error message in an error response.
pub const MAX_ERROR_MESSAGE: usize = 256;

/// Errors decoding control or request/response messages.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum ControlError {
    #[error("empty message")]
    Empty,
    #[error("unknown message tag {0:#04x}")]
    UnknownTag(u8),
    #[error("message is truncated")]
    Truncated,
    #[error("{0} unexpected bytes after the message")]
    TrailingBytes(usize),
    #[error("unknown go-away reason {0}")]
    UnknownReason(u8),
    #[error("unknown error code {0}")]
    UnknownErrorCode(u8),
    #[error("protocol name is empty, longer than {MAX_PROTOCOL_NAME} bytes or not utf-8")]
    BadProtocolName,
    #[error("error message is longer than {MAX_ERROR_MESSAGE} bytes or not utf-8")]
    BadErrorMessage,
    #[error(transparent)]
    Varint(#[from] FrameError),
}

/// Why a peer is closing the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GoAwayReason {
    /// Ordinary shutdown.
    Normal = 0,
    /// Another connection to the same peer was kept instead.
    Duplicate = 1,
    /// No traffic for the idle timeout.
    Idle = 2,
    /// The node is at its connection limit.
    TooManyPeers = 3,
    /// The peer broke the protocol.
    ProtocolError = 4,
}

impl GoAwayReason {
    fn from_u8(v: u8) -> Result<Self, ControlError> {
        Ok(match v {
            0 => GoAwayReason::Normal,
            1 => GoAwayReason::Duplicate,
            2 => GoAwayReason::Idle,
            3 => GoAwayReason::TooManyPeers,
            4 => GoAwayReason::ProtocolError,
            other => return Err(ControlError::UnknownReason(other)),
        })
    }
}

/// A control-channel message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    Ping(u64),
    Pong(u64),
    GoAway(GoAwayReason),
}

impl Control {
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(9);
        match *self {
            Control::Ping(n) => {
                b.put_u8(1);
                b.put_u64(n);
            }
            Control::Pong(n) => {
                b.put_u8(2);
                b.put_u64(n);
            }
            Control::GoAway(r) => {
                b.put_u8(3);
                b.put_u8(r as u8);
            }
        }
        b.freeze()
    }

    pub fn decode(input: &[u8]) -> Result<Self, ControlError> {
        let (&tag, rest) = input.split_first().ok_or(ControlError::Empty)?;
        let expect = |n: usize| match rest.len().cmp(&n) {
            std::cmp::Ordering::Less => Err(ControlError::Truncated),
            std::cmp::Ordering::Greater => Err(ControlError::TrailingBytes(rest.len() - n)),
            std::cmp::Ordering::Equal => Ok(()),
        };
        let u64_at = |r: &[u8]| {
            let mut a = [0u8; 8];
            a.copy_from_slice(r);
            u64::from_be_bytes(a)
        };
        match tag {
            1 => expect(8).map(|_| Control::Ping(u64_at(rest))),
            2 => expect(8).map(|_| Control::Pong(u64_at(rest))),
            3 => {
                expect(1)?;
                Ok(Control::GoAway(GoAwayReason::from_u8(rest[0])?))
            }
            other => Err(ControlError::UnknownTag(other)),
        }
    }
}

/// Why a request failed on the serving side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemoteErrorCode {
    /// Nobody serves that protocol on the peer.
    UnknownProtocol = 1,
    /// The request exceeded the peer's size limit.
    TooLarge = 2,
    /// The handler dropped the request without answering.
    NoResponse = 3,
    /// The peer has too many requests in flight.
    Overloaded = 4,
    /// The handler answered with an application error.
    Application = 5,
}

impl RemoteErrorCode {
    fn from_u8(v: u8) -> Result<Self, ControlError> {
        Ok(match v {
            1 => RemoteErrorCode::UnknownProtocol,
            2 => RemoteErrorCode::TooLarge,
            3 => RemoteErrorCode::NoResponse,
            4 => RemoteErrorCode::Overloaded,
            5 => RemoteErrorCode::Application,
            other => return Err(ControlError::UnknownErrorCode(other)),
        })
    }
}

/// A request/response message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RrMessage {
    Request {
        id: u64,
        protocol: String,
        body: Bytes,
    },
    Response {
        id: u64,
        body: Bytes,
    },
    Error {
        id: u64,
        code: RemoteErrorCode,
        message: String,
    },
}

impl RrMessage {
    /// Encodes the message; protocol names and error messages must respect
    /// their limits (checked by the callers that build them).
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::new();
        match self {
            RrMessage::Request { id, protocol, body } => {
                b.reserve(12 + protocol.len() + body.len());
                b.put_u8(1);
                varint::put(&mut b, *id);
                b.put_u8(protocol.len().min(MAX_PROTOCOL_NAME) as u8);
                b.extend_from_slice(&protocol.as_bytes()[..protocol.len().min(MAX_PROTOCOL_NAME)]);
                b.extend_from_slice(body);
            }
            RrMessage::Response { id, body } => {
                b.reserve(11 + body.len());
                b.put_u8(2);
                varint::put(&mut b, *id);
                b.extend_from_slice(body);
            }
            RrMessage::Error { id, code, message } => {
                b.put_u8(3);
                varint::put(&mut b, *id);
                b.put_u8(*code as u8);
                let mut end = message.len().min(MAX_ERROR_MESSAGE);
                while !message.is_char_boundary(end) {
                    end -= 1;
                }
                b.extend_from_slice(&message.as_bytes()[..end]);
            }
        }
        b.freeze()
    }

    /// Decodes a message; bodies are zero-copy slices of `input`.
    pub fn decode(input: &Bytes) -> Result<Self, ControlError> {
        let (&tag, _) = input.split_first().ok_or(ControlError::Empty)?;
        let (id, n) = varint::get(input.get(1..).unwrap_or_default(), u64::MAX)?;
        let at = 1 + n;
        match tag {
            1 => {
                let plen = *input.get(at).ok_or(ControlError::Truncated)? as usize;
                let name = input
                    .get(at + 1..at + 1 + plen)
                    .ok_or(ControlError::Truncated)?;
                if plen == 0 || plen > MAX_PROTOCOL_NAME {
                    return Err(ControlError::BadProtocolName);
                }
                let protocol = std::str::from_utf8(name)
                    .map_err(|_| ControlError::BadProtocolName)?
                    .to_string();
                Ok(RrMessage::Request {
                    id,
                    protocol,
                    body: input.slice(at + 1 + plen..),
                })
            }
            2 => Ok(RrMessage::Response {
                id,
                body: input.slice(at..),
            }),
            3 => {
                let code =
                    RemoteErrorCode::from_u8(*input.get(at).ok_or(ControlError::Truncated)?)?;
                let text = input.get(at + 1..).unwrap_or_default();
                if text.len() > MAX_ERROR_MESSAGE {
                    return Err(ControlError::BadErrorMessage);
                }
                let message = std::str::from_utf8(text)
                    .map_err(|_| ControlError::BadErrorMessage)?
                    .to_string();
                Ok(RrMessage::Error { id, code, message })
            }
            other => Err(ControlError::UnknownTag(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn control_round_trips(n in any::<u64>(), r in 0u8..5) {
            for c in [Control::Ping(n), Control::Pong(n), Control::GoAway(GoAwayReason::from_u8(r).unwrap())] {
                prop_assert_eq!(Control::decode(&c.encode()).unwrap(), c);
            }
        }

        #[test]
        fn rr_round_trips(id in any::<u64>(), proto in "[a-z/0-9]{1,64}", body in proptest::collection::vec(any::<u8>(), 0..200), msg in ".{0,60}") {
            let body = Bytes::from(body);
            for m in [
                RrMessage::Request { id, protocol: proto.clone(), body: body.clone() },
                RrMessage::Response { id, body: body.clone() },
                RrMessage::Error { id, code: RemoteErrorCode::Application, message: msg.clone() },
            ] {
                prop_assert_eq!(RrMessage::decode(&m.encode()).unwrap(), m);
            }
        }

        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Control::decode(&bytes);
            let _ = RrMessage::decode(&Bytes::from(bytes));
        }
    }

    #[test]
    fn hostile_control_messages_are_named_errors() {
        assert_eq!(Control::decode(&[]), Err(ControlError::Empty));
        assert_eq!(Control::decode(&[9]), Err(ControlError::UnknownTag(9)));
        assert_eq!(Control::decode(&[1, 0, 0]), Err(ControlError::Truncated));
        assert_eq!(
            Control::decode(&[3, 0, 0]),
            Err(ControlError::TrailingBytes(1))
        );
        assert_eq!(
            Control::decode(&[3, 77]),
            Err(ControlError::UnknownReason(77))
        );
    }

    #[test]
    fn hostile_rr_messages_are_named_errors() {
        let d = |b: &'static [u8]| RrMessage::decode(&Bytes::from_static(b));
        assert_eq!(d(&[]), Err(ControlError::Empty));
        assert_eq!(d(&[1]), Err(ControlError::Varint(FrameError::Truncated)));
        assert_eq!(d(&[1, 0, 200, b'a']), Err(ControlError::Truncated));
        assert_eq!(d(&[1, 0, 0]), Err(ControlError::BadProtocolName));
        assert_eq!(
            d(&[1, 0, 2, 0xff, 0xfe]),
            Err(ControlError::BadProtocolName)
        );
        assert_eq!(d(&[3, 0, 42]), Err(ControlError::UnknownErrorCode(42)));
        assert_eq!(d(&[3, 0, 1, 0xff]), Err(ControlError::BadErrorMessage));
        assert_eq!(d(&[7, 0]), Err(ControlError::UnknownTag(7)));
    }
}
