//! AEAD for sealed frames: ring's AES-GCM or ChaCha20-Poly1305 with 96-bit
//! nonces built from a per-direction 64-bit counter. The counter is never
//! sent: the receiver knows which frame comes next, so a replayed, dropped or
//! reordered frame fails authentication.
//!
//! The default suite is AES-256-GCM, chosen by measurement (`cargo bench -p
//! peerlink-bench --bench crypto`, figures in BENCHMARKS.md).

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};

/// Bytes an AEAD tag adds to a frame.
pub const TAG_LEN: usize = 16;

/// The AEAD used for frames once the handshake is done.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CipherSuite {
    /// AES-128-GCM, keyed with the first 16 bytes of the handshake's
    /// 32-byte HKDF output (the same bytes HKDF would give for L = 16).
    Aes128Gcm,
    #[default]
    Aes256Gcm,
    ChaCha20Poly1305,
}

impl CipherSuite {
    fn algorithm(self) -> (&'static aead::Algorithm, usize) {
        match self {
            CipherSuite::Aes128Gcm => (&aead::AES_128_GCM, 16),
            CipherSuite::Aes256Gcm => (&aead::AES_256_GCM, 32),
            CipherSuite::ChaCha20Poly1305 => (&aead::CHACHA20_POLY1305, 32),
        }
    }

    /// Wire id of the suite, agreed in the handshake.
    pub fn id(self) -> u8 {
        match self {
            CipherSuite::Aes128Gcm => 1,
            CipherSuite::Aes256Gcm => 2,
            CipherSuite::ChaCha20Poly1305 => 3,
        }
    }

    pub fn from_id(id: u8) -> Option<Self> {
        match id {
            1 => Some(CipherSuite::Aes128Gcm),
            2 => Some(CipherSuite::Aes256Gcm),
            3 => Some(CipherSuite::ChaCha20Poly1305),
            _ => None,
        }
    }
}

/// Errors of the AEAD layer.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum CipherError {
    #[error("frame failed authentication (tampered, replayed or reordered)")]
    Authentication,
    #[error("nonce counter exhausted; the connection must be re-established")]
    NonceExhausted,
}

/// One direction of a sealed session: a key and its nonce counter.
pub struct CipherState {
    key: LessSafeKey,
    counter: u64,
}

impl CipherState {
    /// A cipher for one direction from the handshake's 32-byte key.
    pub fn new(suite: CipherSuite, key: &[u8; 32]) -> Self {
        let (alg, key_len) = suite.algorithm();
        // The slice has exactly the length `alg` wants, so this cannot fail.
        let unbound = match UnboundKey::new(alg, &key[..key_len]) {
            Ok(k) => k,
            Err(_) => unreachable!("key length matches the algorithm"),
        };
        CipherState {
            key: LessSafeKey::new(unbound),
            counter: 0,
        }
    }

    fn next_nonce(&mut self) -> Result<Nonce, CipherError> {
        let n = self.counter;
        self.counter = n.checked_add(1).ok_or(CipherError::NonceExhausted)?;
        Ok(nonce_for(n))
    }

    /// Seals `data` in place and returns the tag to append.
    #[inline]
    pub fn seal(&mut self, aad: &[u8], data: &mut [u8]) -> Result<[u8; TAG_LEN], CipherError> {
        let nonce = self.next_nonce()?;
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce, Aad::from(aad), data)
            .map_err(|_| CipherError::Authentication)?;
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Opens `data` (ciphertext followed by the tag) in place, returning the
    /// plaintext length.
    #[inline]
    pub fn open(&mut self, aad: &[u8], data: &mut [u8]) -> Result<usize, CipherError> {
        let nonce = self.next_nonce()?;
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(aad), data)
            .map_err(|_| CipherError::Authentication)?;
        Ok(plain.len())
    }

    /// Number of frames processed in this direction.
    pub fn counter(&self) -> u64 {
        self.counter
    }
}

/// The 96-bit nonce for frame number `n`: four zero bytes, then `n` big-endian.
#[inline]
pub fn nonce_for(n: u64) -> Nonce {
    let mut bytes = [0u8; 12];
    bytes[4..].copy_from_slice(&n.to_be_bytes());
    Nonce::assume_unique_for_key(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_suite_round_trips_and_detects_tampering() {
        for suite in [
            CipherSuite::Aes128Gcm,
            CipherSuite::Aes256Gcm,
            CipherSuite::ChaCha20Poly1305,
        ] {
            assert_eq!(CipherSuite::from_id(suite.id()), Some(suite));
            let key = [7u8; 32];
            let (mut tx, mut rx) = (CipherState::new(suite, &key), CipherState::new(suite, &key));
            let mut data = b"hello world".to_vec();
            let tag = tx.seal(b"aad", &mut data).unwrap();
            let mut sealed = data.clone();
            sealed.extend_from_slice(&tag);
            let mut copy = sealed.clone();
            assert_eq!(rx.open(b"aad", &mut copy).unwrap(), 11);
            assert_eq!(&copy[..11], b"hello world");
            // The same frame again (a replay) uses the next nonce and fails.
            let mut replay = sealed.clone();
            assert_eq!(
                rx.open(b"aad", &mut replay),
                Err(CipherError::Authentication)
            );
        }
    }

    #[test]
    fn nonce_counter_cannot_wrap() {
        let mut tx = CipherState::new(CipherSuite::Aes256Gcm, &[1; 32]);
        tx.counter = u64::MAX;
        assert_eq!(tx.seal(b"", &mut []), Err(CipherError::NonceExhausted));
    }
}
