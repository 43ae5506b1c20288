//! Transactions and their wire form.
//!
//! ```text
//! version  u8 = 1
//! sender   32 bytes, an ed25519 public key
//! nonce    u64 little-endian
//! fee_rate u64 little-endian, per byte of this encoding
//! length   u32 little-endian, at most MAX_PAYLOAD
//! payload  length bytes
//! signature 64 bytes, ed25519 by sender over everything before it
//! ```
//!
//! A transaction's id is the BLAKE3 hash of the whole encoding. Decoding
//! checks the length against [`MAX_ENCODED`] before anything else, never
//! allocates more than the input, and verifies the signature last (the
//! cheap checks first).

use bytes::Bytes;
use peerlink_net::{Keypair, PeerId};

/// Largest payload.
pub const MAX_PAYLOAD: usize = 4096;
/// Fixed part of the encoding: version, sender, nonce, fee rate, length,
/// signature.
pub const OVERHEAD: usize = 1 + 32 + 8 + 8 + 4 + 64;
/// Largest encoding.
pub const MAX_ENCODED: usize = OVERHEAD + MAX_PAYLOAD;
const VERSION: u8 = 1;
const SIGNATURE: usize = 64;

/// A transaction's id: the BLAKE3 hash of its encoding.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TxId(pub [u8; 32]);

/// Hashes the first 16 bytes as two words (equality still compares all
/// 32). They are a cryptographic hash's output: ids sharing them cost
/// about 2^64 work each, so a seeded hasher's buckets stay out of a
/// peer's reach, and a lookup hashes two words instead of 32 bytes.
impl std::hash::Hash for TxId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let mut half = [0; 16];
        half.copy_from_slice(&self.0[..16]);
        state.write_u128(u128::from_le_bytes(half));
    }
}

impl std::fmt::Display for TxId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&blake3::Hash::from_bytes(self.0).to_hex())
    }
}

impl std::str::FromStr for TxId {
    type Err = TxError;
    /// 64 hex digits, as [`TxId`] prints.
    fn from_str(s: &str) -> Result<TxId, TxError> {
        blake3::Hash::from_hex(s.trim())
            .map(|h| TxId(*h.as_bytes()))
            .map_err(|_| TxError::BadId)
    }
}

impl std::fmt::Debug for TxId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TxId({self})")
    }
}

/// Why bytes are not a transaction.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    #[error("transaction of {0} bytes is over the {MAX_ENCODED}-byte limit")]
    TooLarge(usize),
    #[error("transaction truncated")]
    Truncated,
    #[error("unknown transaction version {0}")]
    Version(u8),
    #[error("payload of {0} bytes is over the {MAX_PAYLOAD}-byte limit")]
    PayloadTooLarge(usize),
    #[error("{0} bytes after the transaction")]
    TrailingBytes(usize),
    #[error("sender is not an ed25519 key")]
    BadSender,
    #[error("bad signature")]
    BadSignature,
    #[error("a transaction id is 64 hex digits")]
    BadId,
}

/// A signed transaction, as decoded or built.
#[derive(Clone, PartialEq, Eq)]
pub struct Transaction {
    pub sender: PeerId,
    pub nonce: u64,
    /// What the sender pays per byte of the encoding.
    pub fee_rate: u64,
    pub payload: Bytes,
    id: TxId,
    encoded: Bytes,
}

impl std::fmt::Debug for Transaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transaction")
            .field("id", &self.id)
            .field("sender", &self.sender)
            .field("nonce", &self.nonce)
            .field("fee_rate", &self.fee_rate)
            .field("payload", &self.payload.len())
            .finish()
    }
}

fn unsigned(sender: &PeerId, nonce: u64, fee_rate: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(OVERHEAD + payload.len());
    out.push(VERSION);
    out.extend_from_slice(sender.as_bytes());
    out.extend_from_slice(&nonce.to_le_bytes());
    out.extend_from_slice(&fee_rate.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

impl Transaction {
    /// Builds and signs a transaction; the payload must fit
    /// [`MAX_PAYLOAD`].
    pub fn sign(
        key: &Keypair,
        nonce: u64,
        fee_rate: u64,
        payload: impl Into<Bytes>,
    ) -> Result<Transaction, TxError> {
        let payload = payload.into();
        if payload.len() > MAX_PAYLOAD {
            return Err(TxError::PayloadTooLarge(payload.len()));
        }
        let sender = key.peer_id();
        let mut out = unsigned(&sender, nonce, fee_rate, &payload);
        let signature = key.sign(&out);
        out.extend_from_slice(&signature);
        let encoded = Bytes::from(out);
        // The payload is a view of the encoding, as decoding makes it: one
        // buffer per transaction.
        let start = OVERHEAD - SIGNATURE;
        Ok(Transaction {
            sender,
            nonce,
            fee_rate,
            payload: encoded.slice(start..start + payload.len()),
            id: TxId(*blake3::hash(&encoded).as_bytes()),
            encoded,
        })
    }

    /// Decodes and verifies a transaction.
    pub fn decode(input: &[u8]) -> Result<Transaction, TxError> {
        let tx = Self::decode_unverified(input)?;
        tx.verify()?;
        Ok(tx)
    }

    /// Checks the sender's signature (for one from
    /// [`Transaction::decode_unverified`]).
    pub fn verify(&self) -> Result<(), TxError> {
        let signed = self.encoded.len() - SIGNATURE;
        self.sender
            .verify(&self.encoded[..signed], &self.signature())
            .map_err(|_| TxError::BadSignature)
    }

    /// Checks the signatures of `txs` in one ed25519 batch verification
    /// (about twice as fast per signature as one by one; small-order
    /// keys are refused first, as strict verification does). When the
    /// batch fails, each is checked alone and the first bad one's index
    /// is the error.
    pub fn verify_many<'a>(txs: impl IntoIterator<Item = &'a Transaction>) -> Result<(), usize> {
        let txs: Vec<&Transaction> = txs.into_iter().collect();
        if txs.len() < 2 {
            return txs.first().map_or(Ok(()), |t| t.verify().map_err(|_| 0));
        }
        let mut keys = Vec::with_capacity(txs.len());
        for (i, t) in txs.iter().enumerate() {
            match ed25519_dalek::VerifyingKey::from_bytes(t.sender.as_bytes()) {
                Ok(k) if !k.is_weak() => keys.push(k),
                _ => return Err(i),
            }
        }
        let messages: Vec<&[u8]> = txs
            .iter()
            .map(|t| &t.encoded[..t.encoded.len() - SIGNATURE])
            .collect();
        let signatures: Vec<ed25519_dalek::Signature> = txs
            .iter()
            .map(|t| ed25519_dalek::Signature::from_bytes(&t.signature()))
            .collect();
        if ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok() {
            return Ok(());
        }
        match txs.iter().position(|t| t.verify().is_err()) {
            Some(i) => Err(i),
            None => Ok(()),
        }
    }

    /// Decodes without checking the signature (for a caller that checks
    /// many at once, or has checked this encoding before).
    pub fn decode_unverified(input: &[u8]) -> Result<Transaction, TxError> {
        if input.len() > MAX_ENCODED {
            return Err(TxError::TooLarge(input.len()));
        }
        let mut r = input;
        let version = take::<1>(&mut r)?[0];
        if version != VERSION {
            return Err(TxError::Version(version));
        }
        let sender = PeerId::from_bytes(take::<32>(&mut r)?).map_err(|_| TxError::BadSender)?;
        let nonce = u64::from_le_bytes(take::<8>(&mut r)?);
        let fee_rate = u64::from_le_bytes(take::<8>(&mut r)?);
        let len = u32::from_le_bytes(take::<4>(&mut r)?) as usize;
        if len > MAX_PAYLOAD {
            return Err(TxError::PayloadTooLarge(len));
        }
        r = r.get(len..).ok_or(TxError::Truncated)?;
        take::<SIGNATURE>(&mut r)?;
        if !r.is_empty() {
            return Err(TxError::TrailingBytes(r.len()));
        }
        let encoded = Bytes::copy_from_slice(input);
        Ok(Transaction {
            sender,
            nonce,
            fee_rate,
            payload: encoded.slice(OVERHEAD - SIGNATURE..OVERHEAD - SIGNATURE + len),
            id: TxId(*blake3::hash(input).as_bytes()),
            encoded,
        })
    }

    /// The last bytes of the encoding (kept only there: a pooled
    /// transaction is 64 bytes smaller).
    fn signature(&self) -> [u8; SIGNATURE] {
        self.encoded
            .last_chunk::<SIGNATURE>()
            .copied()
            .unwrap_or([0; SIGNATURE])
    }

    pub fn id(&self) -> TxId {
        self.id
    }

    /// The wire form.
    pub fn encoded(&self) -> &Bytes {
        &self.encoded
    }

    /// Bytes of the wire form.
    pub fn size(&self) -> usize {
        self.encoded.len()
    }

    /// What including it costs the sender: its fee rate times its size.
    pub fn cost(&self) -> u128 {
        u128::from(self.fee_rate) * self.size() as u128
    }
}

fn take<const N: usize>(r: &mut &[u8]) -> Result<[u8; N], TxError> {
    let (head, rest) = r.split_first_chunk::<N>().ok_or(TxError::Truncated)?;
    *r = rest;
    Ok(*head)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Keypair {
        Keypair::generate().unwrap()
    }

    #[test]
    fn a_transaction_round_trips_and_its_id_is_the_hash_of_its_bytes() {
        let k = key();
        let tx = Transaction::sign(&k, 7, 3, &b"pay bob"[..]).unwrap();
        let back = Transaction::decode(tx.encoded()).unwrap();
        assert_eq!(back, tx);
        assert_eq!(
            (back.nonce, back.fee_rate, &back.payload[..]),
            (7, 3, &b"pay bob"[..])
        );
        assert_eq!(back.sender, k.peer_id());
        assert_eq!(tx.id().0, *blake3::hash(tx.encoded()).as_bytes());
        assert_eq!(tx.size(), OVERHEAD + 7);
        assert_eq!(tx.cost(), 3 * tx.size() as u128);
    }

    #[test]
    fn malformed_truncated_oversized_and_forged_input_is_named() {
        let k = key();
        let tx = Transaction::sign(&k, 1, 1, vec![9u8; 100]).unwrap();
        let wire = tx.encoded().to_vec();
        for cut in 0..wire.len() {
            assert_eq!(
                Transaction::decode(&wire[..cut]),
                Err(TxError::Truncated),
                "cut at {cut}"
            );
        }
        let mut long = wire.clone();
        long.push(0);
        assert_eq!(Transaction::decode(&long), Err(TxError::TrailingBytes(1)));
        assert!(matches!(
            Transaction::decode(&vec![0u8; MAX_ENCODED + 1]),
            Err(TxError::TooLarge(_))
        ));
        let mut v = wire.clone();
        v[0] = 2;
        assert_eq!(Transaction::decode(&v), Err(TxError::Version(2)));
        // A length field claiming 4 GiB is refused before anything is read.
        let mut huge = wire.clone();
        huge[49..53].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            Transaction::decode(&huge),
            Err(TxError::PayloadTooLarge(u32::MAX as usize))
        );
        // Any flipped bit in the signed part or the signature is caught.
        for i in [1, 40, 45, 60, wire.len() - 1] {
            let mut f = wire.clone();
            f[i] ^= 1;
            assert!(Transaction::decode(&f).is_err(), "flip at {i}");
        }
        let mut other = wire.clone();
        other[1..33].copy_from_slice(key().peer_id().as_bytes());
        assert_eq!(Transaction::decode(&other), Err(TxError::BadSignature));
        assert!(matches!(
            Transaction::sign(&k, 0, 0, vec![0u8; MAX_PAYLOAD + 1]),
            Err(TxError::PayloadTooLarge(_))
        ));
    }

    #[test]
    fn a_batch_passes_whole_or_names_its_first_forgery() {
        let k = key();
        let txs: Vec<Transaction> = (0..10)
            .map(|n| Transaction::sign(&k, n, 1, vec![n as u8; 30]).unwrap())
            .collect();
        assert_eq!(Transaction::verify_many(&txs), Ok(()));
        assert_eq!(Transaction::verify_many(&txs[..1]), Ok(()));
        assert_eq!(Transaction::verify_many(&[]), Ok(()));
        let mut forged = txs.clone();
        for i in [6, 2] {
            let mut bytes = txs[i].encoded().to_vec();
            let last = bytes.len() - 1;
            bytes[last] ^= 1;
            forged[i] = Transaction::decode_unverified(&bytes).unwrap();
        }
        assert_eq!(Transaction::verify_many(&forged), Err(2));
        assert_eq!(Transaction::verify_many(&forged[6..7]), Err(0));
    }

    proptest::proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = Transaction::decode(&bytes);
        }
    }
}
