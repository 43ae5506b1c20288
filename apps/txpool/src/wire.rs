//! The transaction gossip's wire forms, each bounded before anything is
//! reserved:
//!
//! * on [`TX_CHANNEL`]: `Txs` (full transactions, pushed by the node
//!   where they entered) and `Announce` (ids with size and fee rate);
//! * over [`GET_PROTOCOL`]: a request of ids and a response of
//!   transactions (the `Txs` body).

use crate::tx::{TxId, MAX_ENCODED};

/// The application channel transaction gossip uses.
pub const TX_CHANNEL: u16 = 40;
/// Fetch transactions by id.
pub const GET_PROTOCOL: &str = "txpool/get/1";
/// Blocks go out on this gossip topic.
pub const BLOCK_TOPIC: &str = "txpool/blocks/1";
/// Ask a peer for a block by height (to fill a gap).
pub const BLOCK_PROTOCOL: &str = "txpool/block/1";

/// Ids in one announcement or one fetch, at most.
pub const MAX_IDS: usize = 1024;
/// Transactions in one message, at most.
pub const MAX_TXS: usize = 256;

const TAG_TXS: u8 = 1;
const TAG_ANNOUNCE: u8 = 2;
const ANNOUNCED: usize = 32 + 4 + 8;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("message truncated")]
    Truncated,
    #[error("unknown message tag {0}")]
    Tag(u8),
    #[error("{0} items is over the limit")]
    TooMany(usize),
    #[error("transaction of {0} bytes is over the limit")]
    TxTooLarge(usize),
    #[error("{0} trailing bytes")]
    TrailingBytes(usize),
}

/// One announced transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Announced {
    pub id: TxId,
    pub size: u32,
    pub fee_rate: u64,
}

/// A message on [`TX_CHANNEL`]; transactions are still encoded (their
/// signatures are checked by the receiver, in a batch).
#[derive(Debug, PartialEq, Eq)]
pub enum TxMessage<'a> {
    Txs(Vec<&'a [u8]>),
    Announce(Vec<Announced>),
}

fn take<const N: usize>(r: &mut &[u8]) -> Result<[u8; N], WireError> {
    let (head, rest) = r.split_first_chunk::<N>().ok_or(WireError::Truncated)?;
    *r = rest;
    Ok(*head)
}

fn count(r: &mut &[u8], max: usize, least: usize) -> Result<usize, WireError> {
    let n = u16::from_le_bytes(take::<2>(r)?) as usize;
    if n > max {
        return Err(WireError::TooMany(n));
    }
    if n.saturating_mul(least) > r.len() {
        return Err(WireError::Truncated);
    }
    Ok(n)
}

fn done(r: &[u8]) -> Result<(), WireError> {
    match r.len() {
        0 => Ok(()),
        n => Err(WireError::TrailingBytes(n)),
    }
}

/// Encodes transactions (already encoded each) as a `Txs` body, without
/// the tag: the fetch response.
pub fn encode_txs<'a>(txs: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let txs: Vec<&[u8]> = txs.into_iter().take(MAX_TXS).collect();
    let mut out = Vec::with_capacity(2 + txs.iter().map(|t| 4 + t.len()).sum::<usize>());
    out.extend_from_slice(&(txs.len() as u16).to_le_bytes());
    for t in txs {
        out.extend_from_slice(&(t.len() as u32).to_le_bytes());
        out.extend_from_slice(t);
    }
    out
}

/// Decodes a `Txs` body (the fetch response).
pub fn decode_txs(mut r: &[u8]) -> Result<Vec<&[u8]>, WireError> {
    let n = count(&mut r, MAX_TXS, 4)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let len = u32::from_le_bytes(take::<4>(&mut r)?) as usize;
        if len > MAX_ENCODED {
            return Err(WireError::TxTooLarge(len));
        }
        let (tx, rest) = r.split_at_checked(len).ok_or(WireError::Truncated)?;
        out.push(tx);
        r = rest;
    }
    done(r)?;
    Ok(out)
}

/// A push of full transactions.
pub fn push<'a>(txs: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = vec![TAG_TXS];
    out.extend(encode_txs(txs));
    out
}

/// An announcement of at most [`MAX_IDS`] transactions.
pub fn announce(items: &[Announced]) -> Vec<u8> {
    let items = &items[..items.len().min(MAX_IDS)];
    let mut out = Vec::with_capacity(3 + items.len() * ANNOUNCED);
    out.push(TAG_ANNOUNCE);
    out.extend_from_slice(&(items.len() as u16).to_le_bytes());
    for a in items {
        out.extend_from_slice(&a.id.0);
        out.extend_from_slice(&a.size.to_le_bytes());
        out.extend_from_slice(&a.fee_rate.to_le_bytes());
    }
    out
}

impl<'a> TxMessage<'a> {
    pub fn decode(input: &'a [u8]) -> Result<TxMessage<'a>, WireError> {
        let mut r = input;
        match take::<1>(&mut r)?[0] {
            TAG_TXS => Ok(TxMessage::Txs(decode_txs(r)?)),
            TAG_ANNOUNCE => {
                let n = count(&mut r, MAX_IDS, ANNOUNCED)?;
                let mut out = Vec::with_capacity(n);
                for _ in 0..n {
                    out.push(Announced {
                        id: TxId(take::<32>(&mut r)?),
                        size: u32::from_le_bytes(take::<4>(&mut r)?),
                        fee_rate: u64::from_le_bytes(take::<8>(&mut r)?),
                    });
                }
                done(r)?;
                Ok(TxMessage::Announce(out))
            }
            tag => Err(WireError::Tag(tag)),
        }
    }
}

/// A fetch request: the ids wanted.
pub fn encode_get(ids: &[TxId]) -> Vec<u8> {
    let ids = &ids[..ids.len().min(MAX_IDS)];
    let mut out = Vec::with_capacity(2 + 32 * ids.len());
    out.extend_from_slice(&(ids.len() as u16).to_le_bytes());
    for id in ids {
        out.extend_from_slice(&id.0);
    }
    out
}

pub fn decode_get(mut r: &[u8]) -> Result<Vec<TxId>, WireError> {
    let n = count(&mut r, MAX_IDS, 32)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(TxId(take::<32>(&mut r)?));
    }
    done(r)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(i: u8) -> TxId {
        TxId([i; 32])
    }

    #[test]
    fn round_trips() {
        let items = vec![
            Announced {
                id: id(1),
                size: 200,
                fee_rate: 7,
            },
            Announced {
                id: id(2),
                size: 4000,
                fee_rate: u64::MAX,
            },
        ];
        let a = announce(&items);
        assert_eq!(TxMessage::decode(&a).unwrap(), TxMessage::Announce(items));
        let txs: Vec<&[u8]> = vec![b"abc", b"", b"defg"];
        let p = push(txs.iter().copied());
        assert_eq!(TxMessage::decode(&p).unwrap(), TxMessage::Txs(txs));
        let g = encode_get(&[id(3), id(4)]);
        assert_eq!(decode_get(&g).unwrap(), vec![id(3), id(4)]);
    }

    #[test]
    fn hostile_input_is_named() {
        assert_eq!(TxMessage::decode(&[]), Err(WireError::Truncated));
        assert_eq!(TxMessage::decode(&[9]), Err(WireError::Tag(9)));
        // A count larger than the bytes that follow: refused before any
        // allocation.
        assert_eq!(
            TxMessage::decode(&[TAG_ANNOUNCE, 0xff, 0x03]),
            Err(WireError::Truncated)
        );
        assert_eq!(
            TxMessage::decode(&[TAG_ANNOUNCE, 0xff, 0xff]),
            Err(WireError::TooMany(0xffff))
        );
        let mut big = vec![TAG_TXS, 1, 0];
        big.extend_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            TxMessage::decode(&big),
            Err(WireError::TxTooLarge(u32::MAX as usize))
        );
        let mut short = vec![TAG_TXS, 1, 0];
        short.extend_from_slice(&10u32.to_le_bytes());
        short.extend_from_slice(b"abc");
        assert_eq!(TxMessage::decode(&short), Err(WireError::Truncated));
        let mut trailing = encode_get(&[id(1)]);
        trailing.push(0);
        assert_eq!(decode_get(&trailing), Err(WireError::TrailingBytes(1)));
        // Every truncation of a valid message is an error, never a panic.
        let a = announce(&[Announced {
            id: id(5),
            size: 1,
            fee_rate: 1,
        }]);
        for n in 0..a.len() {
            assert!(TxMessage::decode(&a[..n]).is_err());
        }
    }
}
