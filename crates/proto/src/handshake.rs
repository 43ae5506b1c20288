//! Layer 2 — the mutual-authentication handshake, as a sans-IO state machine.
//!
//! Noise XX (`Noise_XX_25519_ChaChaPoly_SHA256`, via `snow`) gives forward
//! secrecy and hides both identities from passive observers. Each side's
//! Noise static key is bound to its ed25519 identity by a signature carried
//! in the encrypted handshake payload, so completing the handshake proves
//! possession of the identity key. The dialler checks that the responder is
//! the peer it meant to reach.
//!
//! Every handshake message travels as `len:u16be body`:
//!
//! ```text
//! msg1 (dialler)   magic "peerlink" | version:u16 | suite:u8 | noise(-> e)
//! msg2 (listener)  magic "peerlink" | version:u16 | suite:u8 | noise(<- e, ee, s, es, identity)
//! msg3 (dialler)   noise(-> s, se, identity)
//! identity         ed25519 public key (32) | signature over CONTEXT || noise static (64)
//! ```
//!
//! The magic, version and suite are also the Noise prologue, so both sides
//! provably agree on them. A listener of another version answers msg1 with
//! a msg2 carrying only its header, so the dialler reports the mismatch by
//! version rather than as a decryption failure. Sealed frames use the
//! dialler's suite with keys from the Noise split (see [`crate::cipher`]).
//!
//! Drive it by writing [`Handshake::take_output`] and feeding received bytes
//! to [`Handshake::read`] until [`Handshake::is_complete`]; on an error, still
//! write any pending output (it tells the peer why) before closing.

use bytes::{Buf, BytesMut};

use crate::cipher::{CipherState, CipherSuite};
use crate::identity::{IdentityError, Keypair, PeerId, PEER_ID_LEN, SIGNATURE_LEN};

/// Bytes every connection starts with.
pub const MAGIC: &[u8; 8] = b"peerlink";
/// The wire protocol version this build speaks.
pub const PROTOCOL_VERSION: u16 = 1;
const NOISE_PATTERN: &str = "Noise_XX_25519_ChaChaPoly_SHA256";
const SIGNATURE_CONTEXT: &[u8] = b"peerlink-noise-static-v1:";
const HEADER_LEN: usize = MAGIC.len() + 2 + 1;
const IDENTITY_LEN: usize = PEER_ID_LEN + SIGNATURE_LEN;
/// No handshake message is longer than this (the real ones are < 256 bytes).
pub const MAX_HANDSHAKE_MESSAGE: usize = 512;

/// Why a handshake failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum HandshakeError {
    #[error("peer did not start with the peerlink magic bytes (not a peerlink node?)")]
    BadMagic,
    #[error("protocol version mismatch: we speak {ours}, the peer speaks {theirs}")]
    VersionMismatch { ours: u16, theirs: u16 },
    #[error("peer proposed unknown cipher suite {0}")]
    UnknownCipherSuite(u8),
    #[error("handshake message of {len} bytes exceeds {max}")]
    MessageTooLarge { len: usize, max: usize },
    #[error("handshake message of {len} bytes is too short")]
    MessageTooShort { len: usize },
    #[error("noise: {0}")]
    Noise(String),
    #[error("identity payload must be {IDENTITY_LEN} bytes, got {0}")]
    BadIdentityPayload(usize),
    #[error("identity signature does not match the noise key")]
    BadIdentitySignature,
    #[error("invalid identity: {0}")]
    Identity(#[from] IdentityError),
    #[error("dialled {expected} but the peer is {actual}")]
    PeerIdMismatch { expected: PeerId, actual: PeerId },
    #[error("connected to ourselves")]
    SelfConnection,
    #[error("handshake is not complete")]
    Incomplete,
    #[error("handshake already failed")]
    Failed,
}

impl HandshakeError {
    /// A short, stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            HandshakeError::BadMagic => "bad_magic",
            HandshakeError::VersionMismatch { .. } => "version_mismatch",
            HandshakeError::UnknownCipherSuite(_) => "unknown_cipher",
            HandshakeError::MessageTooLarge { .. } => "oversized",
            HandshakeError::MessageTooShort { .. } => "truncated",
            HandshakeError::Noise(_) => "noise",
            HandshakeError::BadIdentityPayload(_) | HandshakeError::Identity(_) => "bad_identity",
            HandshakeError::BadIdentitySignature => "bad_signature",
            HandshakeError::PeerIdMismatch { .. } => "peer_id_mismatch",
            HandshakeError::SelfConnection => "self_connection",
            HandshakeError::Incomplete | HandshakeError::Failed => "protocol",
        }
    }
}

fn noise_err(e: snow::Error) -> HandshakeError {
    HandshakeError::Noise(e.to_string())
}

/// A node's Noise static key, bound once to its ed25519 identity.
/// Build one per node and share it between handshakes.
pub struct NoiseIdentity {
    peer_id: PeerId,
    static_private: Vec<u8>,
    payload: [u8; IDENTITY_LEN],
}

impl NoiseIdentity {
    pub fn new(keypair: &Keypair) -> Result<Self, HandshakeError> {
        let params = NOISE_PATTERN.parse().map_err(noise_err)?;
        let static_kp = snow::Builder::new(params)
            .generate_keypair()
            .map_err(noise_err)?;
        let mut signed = SIGNATURE_CONTEXT.to_vec();
        signed.extend_from_slice(&static_kp.public);
        let mut payload = [0u8; IDENTITY_LEN];
        payload[..PEER_ID_LEN].copy_from_slice(keypair.peer_id().as_bytes());
        payload[PEER_ID_LEN..].copy_from_slice(&keypair.sign(&signed));
        Ok(NoiseIdentity {
            peer_id: keypair.peer_id(),
            static_private: static_kp.private,
            payload,
        })
    }

    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }
}

/// What a finished handshake yields: who the peer is and the frame ciphers.
pub struct Established {
    pub remote: PeerId,
    pub suite: CipherSuite,
    /// Seals frames we send.
    pub send: CipherState,
    /// Opens frames we receive.
    pub recv: CipherState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    AwaitMsg1,
    AwaitMsg2,
    AwaitMsg3,
    Done,
    Failed,
}

/// The handshake state machine; see the module docs.
pub struct Handshake {
    /// Built at once by the dialler; by the listener when msg1 names the suite.
    noise: Option<snow::HandshakeState>,
    static_private: Vec<u8>,
    initiator: bool,
    step: Step,
    suite: CipherSuite,
    local: PeerId,
    expected: Option<PeerId>,
    remote: Option<PeerId>,
    output: Vec<u8>,
    identity_payload: [u8; IDENTITY_LEN],
}

fn header(suite: CipherSuite) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(MAGIC);
    h[8..10].copy_from_slice(&PROTOCOL_VERSION.to_be_bytes());
    h[10] = suite.id();
    h
}

impl Handshake {
    fn build(
        static_private: &[u8],
        suite: CipherSuite,
        initiator: bool,
    ) -> Result<snow::HandshakeState, HandshakeError> {
        let params = NOISE_PATTERN.parse().map_err(noise_err)?;
        let prologue = header(suite);
        let builder = snow::Builder::new(params)
            .local_private_key(static_private)
            .map_err(noise_err)?
            .prologue(&prologue)
            .map_err(noise_err)?;
        if initiator {
            builder.build_initiator().map_err(noise_err)
        } else {
            builder.build_responder().map_err(noise_err)
        }
    }

    /// Starts a handshake as the dialler of `expected`; msg1 is queued at once.
    pub fn initiator(
        identity: &NoiseIdentity,
        expected: PeerId,
        suite: CipherSuite,
    ) -> Result<Self, HandshakeError> {
        let mut hs = Handshake {
            noise: Some(Self::build(&identity.static_private, suite, true)?),
            static_private: Vec::new(),
            initiator: true,
            step: Step::AwaitMsg2,
            suite,
            local: identity.peer_id,
            expected: Some(expected),
            remote: None,
            output: Vec::new(),
            identity_payload: identity.payload,
        };
        let mut body = header(suite).to_vec();
        hs.write_noise(&[], &mut body)?;
        hs.queue(&body);
        Ok(hs)
    }

    /// Starts a handshake as the listener; waits for msg1.
    pub fn responder(identity: &NoiseIdentity) -> Result<Self, HandshakeError> {
        let suite = CipherSuite::default();
        Ok(Handshake {
            noise: None,
            static_private: identity.static_private.clone(),
            initiator: false,
            step: Step::AwaitMsg1,
            suite,
            local: identity.peer_id,
            expected: None,
            remote: None,
            output: Vec::new(),
            identity_payload: identity.payload,
        })
    }

    fn noise(&mut self) -> Result<&mut snow::HandshakeState, HandshakeError> {
        self.noise.as_mut().ok_or(HandshakeError::Incomplete)
    }

    fn write_noise(&mut self, payload: &[u8], out: &mut Vec<u8>) -> Result<(), HandshakeError> {
        let mut buf = [0u8; MAX_HANDSHAKE_MESSAGE];
        let n = self
            .noise()?
            .write_message(payload, &mut buf)
            .map_err(noise_err)?;
        out.extend_from_slice(&buf[..n]);
        Ok(())
    }

    fn queue(&mut self, body: &[u8]) {
        self.output
            .extend_from_slice(&(body.len() as u16).to_be_bytes());
        self.output.extend_from_slice(body);
    }

    /// Bytes to send to the peer, if any.
    pub fn take_output(&mut self) -> Option<Vec<u8>> {
        if self.output.is_empty() {
            None
        } else {
            Some(std::mem::take(&mut self.output))
        }
    }

    pub fn is_complete(&self) -> bool {
        self.step == Step::Done
    }

    /// A responder still waiting for the initiator's first message.
    pub fn awaiting_first_message(&self) -> bool {
        self.step == Step::AwaitMsg1
    }

    /// The remote identity, once it has been authenticated.
    pub fn remote(&self) -> Option<PeerId> {
        self.remote
    }

    /// Consumes whole handshake messages from the front of `input`. Bytes
    /// after the last handshake message (early frames) are left in `input`.
    pub fn read(&mut self, input: &mut BytesMut) -> Result<(), HandshakeError> {
        while !matches!(self.step, Step::Done | Step::Failed) {
            let Some(len) = input
                .get(..2)
                .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
            else {
                // Fail fast on a peer that is obviously not speaking peerlink.
                if self.step == Step::AwaitMsg1 && input.first().is_some_and(|&b| b != 0) {
                    self.step = Step::Failed;
                    return Err(HandshakeError::BadMagic);
                }
                return Ok(());
            };
            if len > MAX_HANDSHAKE_MESSAGE {
                // Before the magic, a length this large is what HTTP, TLS or
                // random bytes look like.
                let err = if self.step_expects_magic() {
                    HandshakeError::BadMagic
                } else {
                    HandshakeError::MessageTooLarge {
                        len,
                        max: MAX_HANDSHAKE_MESSAGE,
                    }
                };
                self.step = Step::Failed;
                return Err(err);
            }
            if input.len() < 2 + len {
                return Ok(());
            }
            input.advance(2);
            let body = input.split_to(len);
            if let Err(e) = self.on_message(&body) {
                self.step = Step::Failed;
                return Err(e);
            }
        }
        if self.step == Step::Failed {
            return Err(HandshakeError::Failed);
        }
        Ok(())
    }

    fn step_expects_magic(&self) -> bool {
        matches!(self.step, Step::AwaitMsg1 | Step::AwaitMsg2)
    }

    fn check_header(&self, body: &[u8]) -> Result<CipherSuite, HandshakeError> {
        if body.len() < HEADER_LEN {
            return Err(
                if body.len() >= MAGIC.len() && &body[..MAGIC.len()] != MAGIC {
                    HandshakeError::BadMagic
                } else {
                    HandshakeError::MessageTooShort { len: body.len() }
                },
            );
        }
        if &body[..MAGIC.len()] != MAGIC {
            return Err(HandshakeError::BadMagic);
        }
        let theirs = u16::from_be_bytes([body[8], body[9]]);
        if theirs != PROTOCOL_VERSION {
            return Err(HandshakeError::VersionMismatch {
                ours: PROTOCOL_VERSION,
                theirs,
            });
        }
        CipherSuite::from_id(body[10]).ok_or(HandshakeError::UnknownCipherSuite(body[10]))
    }

    fn read_noise(&mut self, msg: &[u8]) -> Result<Vec<u8>, HandshakeError> {
        let mut payload = [0u8; MAX_HANDSHAKE_MESSAGE];
        let n = self
            .noise()?
            .read_message(msg, &mut payload)
            .map_err(noise_err)?;
        Ok(payload[..n].to_vec())
    }

    fn on_message(&mut self, body: &[u8]) -> Result<(), HandshakeError> {
        match self.step {
            Step::AwaitMsg1 => {
                let suite = match self.check_header(body) {
                    Ok(suite) => suite,
                    Err(e @ HandshakeError::VersionMismatch { .. }) => {
                        // Tell the dialler which version we speak, then fail.
                        self.queue(&header(self.suite));
                        return Err(e);
                    }
                    Err(e) => return Err(e),
                };
                // The dialler chose the suite; the prologue binds it.
                self.noise = Some(Self::build(&self.static_private, suite, false)?);
                self.suite = suite;
                let payload = self.read_noise(&body[HEADER_LEN..])?;
                if !payload.is_empty() {
                    return Err(HandshakeError::BadIdentityPayload(payload.len()));
                }
                let mut out = header(suite).to_vec();
                let identity = self.identity_payload;
                self.write_noise(&identity, &mut out)?;
                self.queue(&out);
                self.step = Step::AwaitMsg3;
            }
            Step::AwaitMsg2 => {
                self.check_header(body)?;
                if body[10] != self.suite.id() {
                    return Err(HandshakeError::UnknownCipherSuite(body[10]));
                }
                let payload = self.read_noise(&body[HEADER_LEN..])?;
                let remote = self.verify_identity(&payload)?;
                if remote == self.local {
                    return Err(HandshakeError::SelfConnection);
                }
                if let Some(expected) = self.expected {
                    if expected != remote {
                        return Err(HandshakeError::PeerIdMismatch {
                            expected,
                            actual: remote,
                        });
                    }
                }
                let mut out = Vec::new();
                let identity = self.identity_payload;
                self.write_noise(&identity, &mut out)?;
                self.queue(&out);
                self.remote = Some(remote);
                self.step = Step::Done;
            }
            Step::AwaitMsg3 => {
                let payload = self.read_noise(body)?;
                let remote = self.verify_identity(&payload)?;
                if remote == self.local {
                    return Err(HandshakeError::SelfConnection);
                }
                self.remote = Some(remote);
                self.step = Step::Done;
            }
            Step::Done | Step::Failed => return Err(HandshakeError::Failed),
        }
        Ok(())
    }

    fn verify_identity(&self, payload: &[u8]) -> Result<PeerId, HandshakeError> {
        if payload.len() != IDENTITY_LEN {
            return Err(HandshakeError::BadIdentityPayload(payload.len()));
        }
        let remote = PeerId::from_slice(&payload[..PEER_ID_LEN])?;
        let remote_static = self
            .noise
            .as_ref()
            .and_then(|n| n.get_remote_static())
            .ok_or_else(|| HandshakeError::Noise("no remote static key".into()))?;
        let mut signed = SIGNATURE_CONTEXT.to_vec();
        signed.extend_from_slice(remote_static);
        remote
            .verify(&signed, &payload[PEER_ID_LEN..])
            .map_err(|_| HandshakeError::BadIdentitySignature)?;
        Ok(remote)
    }

    /// Turns a completed handshake into the frame ciphers.
    pub fn finish(mut self) -> Result<Established, HandshakeError> {
        let remote = self.remote.ok_or(HandshakeError::Incomplete)?;
        let noise = self.noise.as_mut().ok_or(HandshakeError::Incomplete)?;
        if self.step != Step::Done || !noise.is_handshake_finished() {
            return Err(HandshakeError::Incomplete);
        }
        // Keys go to ring: its AEADs are several times faster than snow's.
        let (i_to_r, r_to_i) = noise.dangerously_get_raw_split();
        let (send, recv) = if self.initiator {
            (i_to_r, r_to_i)
        } else {
            (r_to_i, i_to_r)
        };
        Ok(Established {
            remote,
            suite: self.suite,
            send: CipherState::new(self.suite, &send),
            recv: CipherState::new(self.suite, &recv),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Side {
        id: NoiseIdentity,
    }

    fn side() -> Side {
        Side {
            id: NoiseIdentity::new(&Keypair::generate().unwrap()).unwrap(),
        }
    }

    /// Runs a handshake to the end, moving bytes between the two machines.
    fn run(
        mut i: Handshake,
        mut r: Handshake,
    ) -> (
        Result<Established, HandshakeError>,
        Result<Established, HandshakeError>,
    ) {
        for _ in 0..4 {
            if let Some(out) = i.take_output() {
                if let Err(e) = r.read(&mut BytesMut::from(&out[..])) {
                    return (i.finish(), Err(e));
                }
            }
            if let Some(out) = r.take_output() {
                if let Err(e) = i.read(&mut BytesMut::from(&out[..])) {
                    return (Err(e), r.finish());
                }
            }
        }
        (i.finish(), r.finish())
    }

    #[test]
    fn handshake_authenticates_both_sides_and_keys_match() {
        for suite in [
            CipherSuite::Aes128Gcm,
            CipherSuite::Aes256Gcm,
            CipherSuite::ChaCha20Poly1305,
        ] {
            let (a, b) = (side(), side());
            let i = Handshake::initiator(&a.id, b.id.peer_id(), suite).unwrap();
            let r = Handshake::responder(&b.id).unwrap();
            let (i, r) = run(i, r);
            let (mut i, mut r) = (i.unwrap(), r.unwrap());
            assert_eq!(i.remote, b.id.peer_id());
            assert_eq!(r.remote, a.id.peer_id());
            assert_eq!((i.suite, r.suite), (suite, suite));
            let mut data = b"ping".to_vec();
            let tag = i.send.seal(b"", &mut data).unwrap();
            data.extend_from_slice(&tag);
            assert_eq!(r.recv.open(b"", &mut data).unwrap(), 4);
            assert_eq!(&data[..4], b"ping");
        }
    }

    #[test]
    fn dialling_the_wrong_key_fails() {
        let (a, b, c) = (side(), side(), side());
        let i = Handshake::initiator(&a.id, c.id.peer_id(), CipherSuite::default()).unwrap();
        let r = Handshake::responder(&b.id).unwrap();
        let (i, _) = run(i, r);
        assert_eq!(
            i.err(),
            Some(HandshakeError::PeerIdMismatch {
                expected: c.id.peer_id(),
                actual: b.id.peer_id()
            })
        );
    }

    #[test]
    fn dialling_ourselves_is_detected() {
        let a = side();
        let i = Handshake::initiator(&a.id, a.id.peer_id(), CipherSuite::default()).unwrap();
        let r = Handshake::responder(&a.id).unwrap();
        assert_eq!(run(i, r).0.err(), Some(HandshakeError::SelfConnection));
    }

    #[test]
    fn a_stolen_identity_payload_does_not_verify() {
        // Mallory presents Bob's signed payload with her own Noise key.
        let (a, b, mallory) = (side(), side(), side());
        let impostor = NoiseIdentity {
            peer_id: b.id.peer_id(),
            static_private: mallory.id.static_private.clone(),
            payload: b.id.payload,
        };
        let i = Handshake::initiator(&a.id, b.id.peer_id(), CipherSuite::default()).unwrap();
        let r = Handshake::responder(&impostor).unwrap();
        assert_eq!(
            run(i, r).0.err(),
            Some(HandshakeError::BadIdentitySignature)
        );
    }

    #[test]
    fn version_mismatch_is_reported_to_both_sides() {
        let (a, b) = (side(), side());
        let mut i = Handshake::initiator(&a.id, b.id.peer_id(), CipherSuite::default()).unwrap();
        let mut r = Handshake::responder(&b.id).unwrap();
        let mut msg1 = i.take_output().unwrap();
        msg1[2 + 9] = 9; // version 9 from the dialler
        let err = r.read(&mut BytesMut::from(&msg1[..])).unwrap_err();
        assert_eq!(err, HandshakeError::VersionMismatch { ours: 1, theirs: 9 });
        // The listener still answers with its header so the dialler learns why.
        let mut reply = r.take_output().unwrap();
        reply[2 + 9] = 7; // pretend the listener speaks version 7
        assert_eq!(
            i.read(&mut BytesMut::from(&reply[..])),
            Err(HandshakeError::VersionMismatch { ours: 1, theirs: 7 })
        );
    }

    #[test]
    fn garbage_is_bad_magic() {
        let b = side();
        for garbage in [
            &b"GET / HTTP/1.1\r\n\r\n"[..],
            &[0x16, 0x03, 0x01, 0x02, 0x00][..],
            &[
                0, 20, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20,
            ][..],
        ] {
            let mut r = Handshake::responder(&b.id).unwrap();
            assert_eq!(
                r.read(&mut BytesMut::from(garbage)),
                Err(HandshakeError::BadMagic),
                "{garbage:?}"
            );
        }
    }

    #[test]
    fn truncated_messages_wait_and_oversized_ones_fail() {
        let (a, b) = (side(), side());
        let mut i = Handshake::initiator(&a.id, b.id.peer_id(), CipherSuite::default()).unwrap();
        let msg1 = i.take_output().unwrap();
        let mut r = Handshake::responder(&b.id).unwrap();
        let mut partial = BytesMut::from(&msg1[..msg1.len() - 1]);
        assert_eq!(r.read(&mut partial), Ok(()));
        assert!(r.take_output().is_none());
        // msg2 with a huge length prefix.
        let mut big = BytesMut::from(&[0x7f, 0xff][..]);
        assert_eq!(i.read(&mut big), Err(HandshakeError::BadMagic));
        // After the headers, oversized lengths are called what they are.
        let mut r2 = Handshake::responder(&b.id).unwrap();
        r2.read(&mut BytesMut::from(&msg1[..])).unwrap();
        assert_eq!(
            r2.read(&mut BytesMut::from(&[0x10, 0x00][..])),
            Err(HandshakeError::MessageTooLarge {
                len: 4096,
                max: MAX_HANDSHAKE_MESSAGE
            })
        );
    }

    #[test]
    fn tampered_messages_fail() {
        let (a, b) = (side(), side());
        let mut i = Handshake::initiator(&a.id, b.id.peer_id(), CipherSuite::default()).unwrap();
        let mut r = Handshake::responder(&b.id).unwrap();
        r.read(&mut BytesMut::from(&i.take_output().unwrap()[..]))
            .unwrap();
        let mut msg2 = r.take_output().unwrap();
        let last = msg2.len() - 1;
        msg2[last] ^= 1;
        assert!(matches!(
            i.read(&mut BytesMut::from(&msg2[..])),
            Err(HandshakeError::Noise(_))
        ));
        assert!(i.finish().is_err());
    }

    #[test]
    fn early_frames_after_msg3_stay_in_the_buffer() {
        let (a, b) = (side(), side());
        let mut i = Handshake::initiator(&a.id, b.id.peer_id(), CipherSuite::default()).unwrap();
        let mut r = Handshake::responder(&b.id).unwrap();
        r.read(&mut BytesMut::from(&i.take_output().unwrap()[..]))
            .unwrap();
        i.read(&mut BytesMut::from(&r.take_output().unwrap()[..]))
            .unwrap();
        let mut wire = BytesMut::from(&i.take_output().unwrap()[..]);
        wire.extend_from_slice(b"EARLY");
        r.read(&mut wire).unwrap();
        assert!(r.is_complete());
        assert_eq!(&wire[..], b"EARLY");
    }

    #[test]
    fn arbitrary_input_never_panics() {
        let b = side();
        let mut seed = 0x1234_5678_u64;
        for _ in 0..2000 {
            let mut r = Handshake::responder(&b.id).unwrap();
            let len = (seed % 80) as usize;
            let mut input = BytesMut::new();
            input.extend_from_slice(&[0, len as u8]);
            input.extend_from_slice(MAGIC);
            for _ in 0..len {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                input.extend_from_slice(&[(seed >> 33) as u8]);
            }
            let _ = r.read(&mut input);
        }
    }
}
