//! Layer 1 — identity: an ed25519 keypair, the [`PeerId`] derived from its
//! public key, and the address forms: `<peer-id>@host:port` (TCP) and
//! `<peer-id>@quic://host:port` (QUIC); see [`TransportAddr`].
//!
//! The text form of a [`PeerId`] is base58 (bitcoin alphabet) of the 32-byte
//! public key, and it is the only text form used anywhere in peerlink.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use ed25519_dalek::Signer;

/// Errors of the identity layer.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum IdentityError {
    #[error("peer id is not valid base58: {0}")]
    PeerIdEncoding(String),
    #[error("peer id must decode to 32 bytes, got {0}")]
    PeerIdLength(usize),
    #[error("peer id is not a valid ed25519 public key")]
    PeerIdNotAKey,
    #[error(
        "peer address must look like <peer-id>@host:port or <peer-id>@quic://host:port, got {0:?}"
    )]
    AddrSyntax(String),
    #[error("unknown transport {scheme:?} in {addr:?} (known: tcp://, quic://)")]
    UnknownTransport { addr: String, scheme: String },
    #[error("peer address {addr:?} has an invalid socket address: {reason}")]
    AddrSocket { addr: String, reason: String },
    #[error("secret key must be 32 bytes (64 hex characters), got {0} bytes")]
    SecretKeyLength(usize),
    #[error("secret key file is not hex: {0}")]
    SecretKeyEncoding(String),
    #[error("signature is invalid")]
    BadSignature,
    #[error("operating system random number generator failed: {0}")]
    Rng(String),
}

/// Length of a [`PeerId`] in bytes.
pub const PEER_ID_LEN: usize = 32;
/// Length of an ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;

/// A peer's identity: its ed25519 public key.
///
/// ```
/// use peerlink_proto::{Keypair, PeerId};
/// let kp = Keypair::generate().unwrap();
/// let text = kp.peer_id().to_string();
/// assert_eq!(text.parse::<PeerId>().unwrap(), kp.peer_id());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId([u8; PEER_ID_LEN]);

impl PeerId {
    /// Builds a peer id from raw public-key bytes, checking it is a valid key.
    pub fn from_bytes(bytes: [u8; PEER_ID_LEN]) -> Result<Self, IdentityError> {
        ed25519_dalek::VerifyingKey::from_bytes(&bytes)
            .map_err(|_| IdentityError::PeerIdNotAKey)?;
        Ok(PeerId(bytes))
    }

    /// Builds a peer id without checking that the bytes are a valid key
    /// (that check is a curve-point decompression, ~20 µs, and a DHT
    /// response carries 20 contacts). For ids that are only routed and
    /// dialled: a dial to a non-key fails at the handshake, which proves
    /// the key, and [`PeerId::verify`] checks it before any signature.
    pub fn unverified(bytes: [u8; PEER_ID_LEN]) -> Self {
        PeerId(bytes)
    }

    /// Builds a peer id from a slice, checking its length and that it is a key.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, IdentityError> {
        let arr: [u8; PEER_ID_LEN] = bytes
            .try_into()
            .map_err(|_| IdentityError::PeerIdLength(bytes.len()))?;
        Self::from_bytes(arr)
    }

    /// The raw 32 public-key bytes.
    pub fn as_bytes(&self) -> &[u8; PEER_ID_LEN] {
        &self.0
    }

    /// Verifies `signature` over `message` with this peer's key (strict
    /// verification: rejects malleable and small-order forms).
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), IdentityError> {
        let key = ed25519_dalek::VerifyingKey::from_bytes(&self.0)
            .map_err(|_| IdentityError::PeerIdNotAKey)?;
        let sig = ed25519_dalek::Signature::from_slice(signature)
            .map_err(|_| IdentityError::BadSignature)?;
        key.verify_strict(message, &sig)
            .map_err(|_| IdentityError::BadSignature)
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&bs58::encode(self.0).into_string())
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.to_string();
        write!(f, "PeerId({})", s.get(..10).unwrap_or(&s))
    }
}

impl FromStr for PeerId {
    type Err = IdentityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // 32 bytes are at most 44 base58 characters; refuse long input early.
        if s.len() > 64 {
            return Err(IdentityError::PeerIdLength(s.len()));
        }
        let mut buf = [0u8; 64];
        let n = bs58::decode(s)
            .onto(&mut buf[..])
            .map_err(|e| IdentityError::PeerIdEncoding(e.to_string()))?;
        Self::from_slice(&buf[..n])
    }
}

/// An ed25519 keypair: the node's long-term identity.
#[derive(Clone)]
pub struct Keypair {
    signing: ed25519_dalek::SigningKey,
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keypair({})", self.peer_id())
    }
}

impl Keypair {
    /// A new random keypair from the operating system's RNG.
    pub fn generate() -> Result<Self, IdentityError> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| IdentityError::Rng(e.to_string()))?;
        Ok(Self::from_secret(secret))
    }

    /// A keypair from its 32-byte secret seed.
    pub fn from_secret(secret: [u8; 32]) -> Self {
        Keypair {
            signing: ed25519_dalek::SigningKey::from_bytes(&secret),
        }
    }

    /// The 32-byte secret seed.
    pub fn secret(&self) -> [u8; 32] {
        self.signing.to_bytes()
    }

    /// This keypair's peer id.
    pub fn peer_id(&self) -> PeerId {
        PeerId(self.signing.verifying_key().to_bytes())
    }

    /// Signs `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; SIGNATURE_LEN] {
        self.signing.sign(message).to_bytes()
    }

    /// The secret as 64 lowercase hex characters (the key file format).
    pub fn to_hex(&self) -> String {
        self.secret().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Parses the key file format (64 hex characters, surrounding white space ignored).
    pub fn from_hex(text: &str) -> Result<Self, IdentityError> {
        let text = text.trim();
        if text.len() != 64 {
            return Err(IdentityError::SecretKeyLength(text.len() / 2));
        }
        let mut secret = [0u8; 32];
        for (i, byte) in secret.iter_mut().enumerate() {
            let pair = text
                .get(2 * i..2 * i + 2)
                .ok_or(IdentityError::SecretKeyLength(i))?;
            *byte = u8::from_str_radix(pair, 16)
                .map_err(|_| IdentityError::SecretKeyEncoding(format!("bad hex pair {pair:?}")))?;
        }
        Ok(Self::from_secret(secret))
    }
}

/// A peer's address: who (the [`PeerId`]) and where (a socket address and
/// the [`Transport`] that reaches it), written `<peer-id>@host:port` for
/// TCP and `<peer-id>@quic://host:port` for QUIC.
///
/// ```
/// use peerlink_proto::{Keypair, PeerAddr};
/// let id = Keypair::generate().unwrap().peer_id();
/// let addr: PeerAddr = format!("{id}@127.0.0.1:4001").parse().unwrap();
/// assert_eq!(addr.id, id);
/// assert_eq!(addr.to_string(), format!("{id}@127.0.0.1:4001"));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PeerAddr {
    pub id: PeerId,
    pub addr: SocketAddr,
    pub transport: Transport,
}

impl PeerAddr {
    /// A TCP address.
    pub fn new(id: PeerId, addr: SocketAddr) -> Self {
        PeerAddr {
            id,
            addr,
            transport: Transport::Tcp,
        }
    }

    /// An address on `transport`.
    pub fn with(id: PeerId, at: TransportAddr) -> Self {
        PeerAddr {
            id,
            addr: at.socket,
            transport: at.transport,
        }
    }

    /// Where it is, without whose.
    pub fn at(&self) -> TransportAddr {
        TransportAddr {
            transport: self.transport,
            socket: self.addr,
        }
    }
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.id, self.at())
    }
}

impl FromStr for PeerAddr {
    type Err = IdentityError;
    /// Parses `<peer-id>@ip:port` or `<peer-id>@quic://ip:port`. Host
    /// names are resolved by the caller (see
    /// `peerlink_net::resolve_peer_addr`), so this stays I/O-free.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (id, addr) = s
            .split_once('@')
            .ok_or_else(|| IdentityError::AddrSyntax(s.to_string()))?;
        let id: PeerId = id.parse()?;
        Ok(PeerAddr::with(id, addr.parse()?))
    }
}

/// The transports a peer can be reached on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Transport {
    /// TCP with a Noise XX handshake and sealed frames.
    #[default]
    Tcp,
    /// QUIC (TLS 1.3, the ed25519 key as the certificate key).
    Quic,
}

impl Transport {
    /// The scheme in the text form (`tcp://`, `quic://`).
    pub fn scheme(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Quic => "quic",
        }
    }
}

/// A socket address and the transport that reaches it. Text form:
/// `quic://ip:port`, `tcp://ip:port`, or a bare `ip:port` for TCP.
///
/// ```
/// use peerlink_proto::identity::{Transport, TransportAddr};
/// let quic: TransportAddr = "quic://127.0.0.1:4001".parse().unwrap();
/// assert_eq!(quic.transport, Transport::Quic);
/// let tcp: TransportAddr = "[::1]:4001".parse().unwrap();
/// assert_eq!((tcp.transport, tcp.to_string().as_str()), (Transport::Tcp, "[::1]:4001"));
/// assert!("udp://127.0.0.1:1".parse::<TransportAddr>().is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TransportAddr {
    pub transport: Transport,
    pub socket: SocketAddr,
}

impl TransportAddr {
    pub fn tcp(socket: SocketAddr) -> Self {
        TransportAddr {
            transport: Transport::Tcp,
            socket,
        }
    }

    pub fn quic(socket: SocketAddr) -> Self {
        TransportAddr {
            transport: Transport::Quic,
            socket,
        }
    }
}

impl fmt::Display for TransportAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.transport {
            // The bare form stays the TCP form, as it always was.
            Transport::Tcp => write!(f, "{}", self.socket),
            t => write!(f, "{}://{}", t.scheme(), self.socket),
        }
    }
}

impl FromStr for TransportAddr {
    type Err = IdentityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (transport, rest) = match s.split_once("://") {
            None => (Transport::Tcp, s),
            Some(("tcp", rest)) => (Transport::Tcp, rest),
            Some(("quic", rest)) => (Transport::Quic, rest),
            Some((scheme, _)) => {
                return Err(IdentityError::UnknownTransport {
                    addr: s.to_string(),
                    scheme: scheme.to_string(),
                })
            }
        };
        let socket =
            rest.parse()
                .map_err(|e: std::net::AddrParseError| IdentityError::AddrSocket {
                    addr: s.to_string(),
                    reason: e.to_string(),
                })?;
        Ok(TransportAddr { transport, socket })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_id_round_trips_through_text() {
        let kp = Keypair::generate().unwrap();
        let id = kp.peer_id();
        assert_eq!(id.to_string().parse::<PeerId>().unwrap(), id);
    }

    #[test]
    fn an_unverified_id_that_is_not_a_key_fails_every_signature_check() {
        let bytes = (0..=255u8)
            .map(|b| {
                let mut a = [0u8; PEER_ID_LEN];
                a[0] = b;
                a[31] = 0x7f;
                a
            })
            .find(|a| PeerId::from_bytes(*a).is_err())
            .expect("some 32-byte string is not a curve point");
        let id = PeerId::unverified(bytes);
        assert_eq!(id.as_bytes(), &bytes);
        assert!(matches!(
            id.verify(b"m", &[0u8; 64]),
            Err(IdentityError::PeerIdNotAKey)
        ));
    }

    #[test]
    fn bad_peer_ids_are_named_errors() {
        assert!(matches!(
            "0OIl".parse::<PeerId>(),
            Err(IdentityError::PeerIdEncoding(_))
        ));
        assert!(matches!(
            "abc".parse::<PeerId>(),
            Err(IdentityError::PeerIdLength(_))
        ));
        assert!(matches!(
            "".parse::<PeerId>(),
            Err(IdentityError::PeerIdLength(0))
        ));
        let long = "1".repeat(500);
        assert!(matches!(
            long.parse::<PeerId>(),
            Err(IdentityError::PeerIdLength(500))
        ));
    }

    #[test]
    fn bad_addresses_are_named_errors() {
        let id = Keypair::generate().unwrap().peer_id();
        assert!(matches!(
            "127.0.0.1:1".parse::<PeerAddr>(),
            Err(IdentityError::AddrSyntax(_))
        ));
        let quic: PeerAddr = format!("{id}@quic://10.0.0.1:9").parse().unwrap();
        assert_eq!(quic.transport, Transport::Quic);
        assert_eq!(quic.to_string(), format!("{id}@quic://10.0.0.1:9"));
        assert_eq!(quic.to_string().parse::<PeerAddr>().unwrap(), quic);
        assert!(matches!(
            format!("{id}@ws://10.0.0.1:9").parse::<PeerAddr>(),
            Err(IdentityError::UnknownTransport { .. })
        ));
        assert!(matches!(
            format!("{id}@quic://nowhere").parse::<PeerAddr>(),
            Err(IdentityError::AddrSocket { .. })
        ));
        assert!(matches!(
            format!("{id}@nowhere").parse::<PeerAddr>(),
            Err(IdentityError::AddrSocket { .. })
        ));
        assert!(format!("{id}@[::1]:9").parse::<PeerAddr>().is_ok());
    }

    #[test]
    fn signatures_verify_and_tampering_fails() {
        let kp = Keypair::generate().unwrap();
        let sig = kp.sign(b"hello");
        kp.peer_id().verify(b"hello", &sig).unwrap();
        assert_eq!(
            kp.peer_id().verify(b"hellO", &sig),
            Err(IdentityError::BadSignature)
        );
        assert_eq!(
            kp.peer_id().verify(b"hello", &sig[..10]),
            Err(IdentityError::BadSignature)
        );
    }

    #[test]
    fn key_hex_round_trips_and_rejects_garbage() {
        let kp = Keypair::generate().unwrap();
        let back = Keypair::from_hex(&format!("{}\n", kp.to_hex())).unwrap();
        assert_eq!(back.peer_id(), kp.peer_id());
        assert!(matches!(
            Keypair::from_hex("abcd"),
            Err(IdentityError::SecretKeyLength(2))
        ));
        assert!(matches!(
            Keypair::from_hex(&"zz".repeat(32)),
            Err(IdentityError::SecretKeyEncoding(_))
        ));
        assert!(Keypair::from_hex(&"é".repeat(32)).is_err());
    }
}
