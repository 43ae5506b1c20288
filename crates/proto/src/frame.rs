//! Layer 2 — sealed frames.
//!
//! After the handshake every byte on the wire is a sealed frame:
//!
//! ```text
//! frame     := sealed_len:u32be  ciphertext(sealed_len - 16)  tag(16)
//! plaintext := record*
//! record    := channel:varint(<= u16::MAX)  len:varint  payload(len)
//! ```
//!
//! The 4-byte length is the AEAD's associated data, and the nonce is the
//! frame's position in its direction, so a tampered, replayed, dropped or
//! reordered frame fails to open. Many small messages are packed into one
//! frame, sealed in place in the buffer that is then written in one call.
//! The decoder checks the length against its limit before it reserves
//! memory, and every record length against what the frame holds.

use bytes::{BufMut, Bytes, BytesMut};

use crate::cipher::{CipherError, CipherState, TAG_LEN};
use crate::varint;

/// Bytes of the length prefix in front of every sealed frame.
pub const FRAME_HEADER_LEN: usize = 4;
/// No frame, whatever the configuration, may exceed this (16 MiB).
pub const ABSOLUTE_MAX_FRAME: usize = 16 << 20;
/// Plaintext size at which the encoder closes a frame and starts the next.
pub const DEFAULT_FRAME_TARGET: usize = 64 << 10;
/// Largest per-record overhead: a 3-byte channel and a 5-byte length.
pub const MAX_RECORD_OVERHEAD: usize = 8;

/// Errors while encoding or decoding frames and records.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum FrameError {
    #[error("input ends inside a field")]
    Truncated,
    #[error("varint longer than 10 bytes")]
    VarintOverflow,
    #[error("varint is not in its shortest form")]
    VarintNotCanonical,
    #[error("varint value {value} exceeds the limit {max}")]
    VarintTooLarge { value: u64, max: u64 },
    #[error("frame of {len} bytes is shorter than an AEAD tag")]
    FrameTooShort { len: usize },
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge { len: usize, max: usize },
    #[error("record declares {declared} bytes but only {remaining} remain in the frame")]
    RecordOverrun { declared: u64, remaining: usize },
    #[error("message of {len} bytes exceeds the limit of {max} bytes")]
    MessageTooLarge { len: usize, max: usize },
    #[error(transparent)]
    Cipher(#[from] CipherError),
}

/// One application or control message taken out of a frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub channel: u16,
    pub payload: Bytes,
}

/// Bytes `put_record` appends for a payload of `len` bytes on `channel`.
#[inline]
pub fn record_len(channel: u16, len: usize) -> usize {
    varint::len(u64::from(channel)) + varint::len(len as u64) + len
}

/// Starts a frame at the end of `buf`: room for the length header.
#[inline]
pub fn begin_frame(buf: &mut BytesMut) {
    buf.put_u32(0);
}

/// Appends one record to the frame being built in `buf`.
#[inline]
pub fn put_record(buf: &mut BytesMut, channel: u16, payload: &[u8]) {
    // The header goes in with one copy, not one call per byte.
    let mut header = [0u8; MAX_RECORD_OVERHEAD + 2];
    let n = varint::encode(u64::from(channel), &mut header);
    let n = n + varint::encode(payload.len() as u64, &mut header[n..]);
    buf.reserve(n + payload.len());
    buf.extend_from_slice(&header[..n]);
    buf.extend_from_slice(payload);
}

/// Seals frames in place: fills in the header and appends the tag.
///
/// A [`FrameSealer::plain`] one only fills in the header: for a transport
/// that encrypts and authenticates already (QUIC), a frame is its length
/// and its records.
pub struct FrameSealer {
    cipher: Option<CipherState>,
}

impl FrameSealer {
    pub fn new(cipher: CipherState) -> Self {
        FrameSealer {
            cipher: Some(cipher),
        }
    }

    /// Frames with a length header and no encryption.
    pub fn plain() -> Self {
        FrameSealer { cipher: None }
    }

    /// Seals the frame that starts at `start` in `buf` (begun with
    /// [`begin_frame`], records up to the end of `buf`).
    #[inline]
    pub fn seal(&mut self, buf: &mut BytesMut, start: usize) -> Result<(), FrameError> {
        let body = start + FRAME_HEADER_LEN;
        let Some(cipher) = self.cipher.as_mut() else {
            let header = ((buf.len() - body) as u32).to_be_bytes();
            buf[start..body].copy_from_slice(&header);
            return Ok(());
        };
        let sealed_len = buf.len() - body + TAG_LEN;
        let header = (sealed_len as u32).to_be_bytes();
        buf[start..body].copy_from_slice(&header);
        let tag = cipher.seal(&header, &mut buf[body..])?;
        buf.extend_from_slice(&tag);
        Ok(())
    }
}

/// Packs records into sealed frames in one reusable buffer.
pub struct FrameEncoder {
    sealer: FrameSealer,
    buf: BytesMut,
    /// Offset of the open frame's header in `buf`, if a frame is open.
    open: Option<usize>,
    frame_target: usize,
    max_message: usize,
}

impl FrameEncoder {
    /// `max_message` bounds a single record's payload; frames close at
    /// `frame_target` bytes of plaintext (a single larger record gets a
    /// frame of its own).
    pub fn new(cipher: CipherState, max_message: usize, frame_target: usize) -> Self {
        FrameEncoder {
            sealer: FrameSealer::new(cipher),
            buf: BytesMut::with_capacity(frame_target + 1024),
            open: None,
            frame_target: frame_target.max(1024),
            max_message,
        }
    }

    /// Appends one record, sealing the open frame first when it would grow
    /// past the target.
    #[inline]
    pub fn push(&mut self, channel: u16, payload: &[u8]) -> Result<(), FrameError> {
        if payload.len() > self.max_message {
            return Err(FrameError::MessageTooLarge {
                len: payload.len(),
                max: self.max_message,
            });
        }
        if let Some(start) = self.open {
            let plain = self.buf.len() - start - FRAME_HEADER_LEN;
            if plain > 0 && plain + record_len(channel, payload.len()) > self.frame_target {
                self.finish()?;
            }
        }
        if self.open.is_none() {
            self.open = Some(self.buf.len());
            begin_frame(&mut self.buf);
        }
        put_record(&mut self.buf, channel, payload);
        // Test only: one extra pass over the payload (a few percent).
        #[cfg(feature = "regression-probe")]
        std::hint::black_box(payload.iter().fold(0u8, |a, b| a ^ b));
        Ok(())
    }

    /// Seals the open frame, if any; afterwards [`Self::bytes`] is ready to write.
    pub fn finish(&mut self) -> Result<(), FrameError> {
        match self.open.take() {
            Some(start) => self.sealer.seal(&mut self.buf, start),
            None => Ok(()),
        }
    }

    /// Sealed bytes ready to write (call [`Self::finish`] first).
    pub fn bytes(&self) -> &[u8] {
        match self.open {
            Some(start) => &self.buf[..start],
            None => &self.buf[..],
        }
    }

    /// Bytes buffered, sealed or not.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Forgets the sealed bytes once they are written.
    pub fn clear(&mut self) {
        debug_assert!(self.open.is_none());
        self.buf.clear();
    }
}

/// Opens sealed frames from a receive buffer (or, made with
/// [`FrameDecoder::plain`], splits plain frames off it).
pub struct FrameDecoder {
    cipher: Option<CipherState>,
    max_sealed: usize,
}

impl FrameDecoder {
    /// `max_plain` is the largest plaintext frame accepted.
    pub fn new(cipher: CipherState, max_plain: usize) -> Self {
        FrameDecoder {
            cipher: Some(cipher),
            max_sealed: (max_plain + TAG_LEN).min(ABSOLUTE_MAX_FRAME),
        }
    }

    /// Frames written by [`FrameSealer::plain`].
    pub fn plain(max_plain: usize) -> Self {
        FrameDecoder {
            cipher: None,
            max_sealed: max_plain.min(ABSOLUTE_MAX_FRAME),
        }
    }

    /// How many bytes `buf` must hold before the next frame can be opened,
    /// after checking the declared length (so a reader can reserve exactly).
    pub fn needed(&self, buf: &[u8]) -> Result<usize, FrameError> {
        let Some(header) = buf.get(..FRAME_HEADER_LEN) else {
            return Ok(FRAME_HEADER_LEN);
        };
        let mut len = [0u8; 4];
        len.copy_from_slice(header);
        let len = u32::from_be_bytes(len) as usize;
        if len < TAG_LEN && self.cipher.is_some() {
            return Err(FrameError::FrameTooShort { len });
        }
        if len > self.max_sealed {
            return Err(FrameError::FrameTooLarge {
                len,
                max: self.max_sealed,
            });
        }
        Ok(FRAME_HEADER_LEN + len)
    }

    /// Opens the next whole frame at the front of `buf`, returning its
    /// plaintext, or `None` when more bytes are needed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        let total = self.needed(buf)?;
        if buf.len() < total {
            return Ok(None);
        }
        let mut frame = buf.split_to(total);
        if let Some(cipher) = self.cipher.as_mut() {
            let mut header = [0u8; FRAME_HEADER_LEN];
            header.copy_from_slice(&frame[..FRAME_HEADER_LEN]);
            let plain_len = cipher.open(&header, &mut frame[FRAME_HEADER_LEN..])?;
            frame.truncate(FRAME_HEADER_LEN + plain_len);
        }
        let mut plain = frame.freeze();
        bytes::Buf::advance(&mut plain, FRAME_HEADER_LEN);
        Ok(Some(plain))
    }
}

/// Iterates the records of an opened frame without copying payloads.
pub struct Records {
    rest: Bytes,
}

impl Records {
    pub fn new(plain: Bytes) -> Self {
        Records { rest: plain }
    }
}

impl Iterator for Records {
    type Item = Result<Record, FrameError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let result = (|| {
            let (channel, a) = varint::get(&self.rest, u64::from(u16::MAX))?;
            let (len, b) =
                varint::get(self.rest.get(a..).unwrap_or_default(), u64::from(u32::MAX))?;
            let start = a + b;
            let remaining = self.rest.len() - start;
            if len > remaining as u64 {
                return Err(FrameError::RecordOverrun {
                    declared: len,
                    remaining,
                });
            }
            let end = start + len as usize;
            let payload = self.rest.slice(start..end);
            bytes::Buf::advance(&mut self.rest, end);
            Ok(Record {
                channel: channel as u16,
                payload,
            })
        })();
        if result.is_err() {
            self.rest = Bytes::new(); // stop after the first error
        }
        Some(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cipher::CipherSuite;
    use proptest::prelude::*;

    fn pair(max: usize) -> (FrameEncoder, FrameDecoder) {
        let key = [9u8; 32];
        (
            FrameEncoder::new(
                CipherState::new(CipherSuite::Aes256Gcm, &key),
                max,
                DEFAULT_FRAME_TARGET,
            ),
            FrameDecoder::new(
                CipherState::new(CipherSuite::Aes256Gcm, &key),
                max + MAX_RECORD_OVERHEAD,
            ),
        )
    }

    fn decode_all(dec: &mut FrameDecoder, wire: &[u8]) -> Result<Vec<Record>, FrameError> {
        let mut buf = BytesMut::from(wire);
        let mut out = Vec::new();
        while let Some(plain) = dec.decode(&mut buf)? {
            for r in Records::new(plain) {
                out.push(r?);
            }
        }
        if buf.is_empty() {
            Ok(out)
        } else {
            Err(FrameError::Truncated) // a frame that never completes
        }
    }

    proptest! {
        #[test]
        fn records_round_trip(msgs in proptest::collection::vec((any::<u16>(), proptest::collection::vec(any::<u8>(), 0..3000)), 0..200)) {
            let (mut enc, mut dec) = pair(1 << 20);
            for (ch, p) in &msgs {
                enc.push(*ch, p).unwrap();
            }
            enc.finish().unwrap();
            let got = decode_all(&mut dec, enc.bytes()).unwrap();
            prop_assert_eq!(got.len(), msgs.len());
            for (r, (ch, p)) in got.iter().zip(&msgs) {
                prop_assert_eq!(r.channel, *ch);
                prop_assert_eq!(&r.payload[..], &p[..]);
            }
        }

        #[test]
        fn records_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            for r in Records::new(Bytes::from(bytes)) {
                let _ = r;
            }
        }

        #[test]
        fn any_flipped_bit_is_rejected(pos in any::<prop::sample::Index>(), bit in 0u8..8) {
            let (mut enc, mut dec) = pair(1024);
            enc.push(3, b"some payload").unwrap();
            enc.finish().unwrap();
            let mut wire = enc.bytes().to_vec();
            let i = pos.index(wire.len());
            wire[i] ^= 1 << bit;
            prop_assert!(decode_all(&mut dec, &wire).is_err());
        }
    }

    #[test]
    fn many_small_messages_share_frames() {
        let (mut enc, _) = pair(1024);
        for _ in 0..10_000 {
            enc.push(1, &[0u8; 64]).unwrap();
        }
        enc.finish().unwrap();
        // 66 bytes per record; ~64 KiB frames: about 11 frames, not 10,000.
        let frames = enc.bytes().len() / (DEFAULT_FRAME_TARGET - 100);
        assert!(frames <= 11, "{frames}");
    }

    #[test]
    fn oversized_length_prefix_is_rejected_before_allocating() {
        let (_, mut dec) = pair(1024);
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff][..]);
        assert!(matches!(
            dec.decode(&mut buf),
            Err(FrameError::FrameTooLarge {
                len: 0xffff_ffff,
                ..
            })
        ));
        assert!(buf.capacity() < 1024);
        let mut short = BytesMut::from(&[0, 0, 0, 3, 1, 2, 3][..]);
        assert_eq!(
            dec.decode(&mut short),
            Err(FrameError::FrameTooShort { len: 3 })
        );
    }

    #[test]
    fn truncated_frames_wait_for_more() {
        let (mut enc, mut dec) = pair(1024);
        enc.push(1, b"abc").unwrap();
        enc.finish().unwrap();
        let wire = enc.bytes().to_vec();
        for cut in 0..wire.len() {
            let mut buf = BytesMut::from(&wire[..cut]);
            assert_eq!(dec.decode(&mut buf), Ok(None));
        }
    }

    #[test]
    fn replayed_and_reordered_frames_fail() {
        let (mut enc, mut dec) = pair(1024);
        enc.push(1, b"first").unwrap();
        enc.finish().unwrap();
        let first = enc.bytes().to_vec();
        enc.clear();
        enc.push(1, b"second").unwrap();
        enc.finish().unwrap();
        let second = enc.bytes().to_vec();
        // Reordered: the second frame first.
        let (_, mut dec2) = pair(1024);
        assert!(matches!(
            decode_all(&mut dec2, &second),
            Err(FrameError::Cipher(_))
        ));
        // Replayed: the first frame twice.
        decode_all(&mut dec, &first).unwrap();
        assert!(matches!(
            decode_all(&mut dec, &first),
            Err(FrameError::Cipher(_))
        ));
    }

    #[test]
    fn oversized_messages_are_refused_by_the_sender() {
        let (mut enc, _) = pair(16);
        assert_eq!(
            enc.push(1, &[0; 17]),
            Err(FrameError::MessageTooLarge { len: 17, max: 16 })
        );
    }

    #[test]
    fn hostile_records_are_named_errors() {
        let overrun = Bytes::from_static(&[1, 50, 0, 0]);
        assert!(matches!(
            Records::new(overrun).next(),
            Some(Err(FrameError::RecordOverrun {
                declared: 50,
                remaining: 2
            }))
        ));
        let big_channel = Bytes::from_static(&[0xff, 0xff, 0x7f, 0]);
        assert!(matches!(
            Records::new(big_channel).next(),
            Some(Err(FrameError::VarintTooLarge { .. }))
        ));
        let truncated = Bytes::from_static(&[1]);
        assert!(matches!(
            Records::new(truncated).next(),
            Some(Err(FrameError::Truncated))
        ));
    }

    #[test]
    fn plain_frames_carry_a_length_and_no_tag() {
        let mut sealer = FrameSealer::plain();
        let mut dec = FrameDecoder::plain(64);
        let mut buf = BytesMut::new();
        begin_frame(&mut buf);
        put_record(&mut buf, 16, b"hello");
        sealer.seal(&mut buf, 0).unwrap();
        assert_eq!(&buf[..4], &7u32.to_be_bytes());
        // A partial frame waits; a whole one comes out as its records.
        let mut partial = BytesMut::from(&buf[..6]);
        assert_eq!(dec.decode(&mut partial).unwrap(), None);
        let plain = dec.decode(&mut buf).unwrap().unwrap();
        let rec = Records::new(plain).next().unwrap().unwrap();
        assert_eq!((rec.channel, &rec.payload[..]), (16, &b"hello"[..]));
        // An empty frame is allowed (no tag to check); an oversized one is
        // refused before anything is buffered.
        let mut empty = BytesMut::from(&0u32.to_be_bytes()[..]);
        assert_eq!(dec.decode(&mut empty).unwrap().unwrap().len(), 0);
        let mut huge = BytesMut::from(&65u32.to_be_bytes()[..]);
        assert_eq!(
            dec.decode(&mut huge),
            Err(FrameError::FrameTooLarge { len: 65, max: 64 })
        );
    }
}
