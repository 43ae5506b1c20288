//! Bounded LEB128 unsigned varints: at most 10 bytes for a u64, the
//! canonical (shortest) form only, so every value has exactly one encoding.

use crate::frame::FrameError;

/// Appends `v` as a varint.
#[inline]
pub fn put(buf: &mut impl bytes::BufMut, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

/// Writes `v` into the front of `out` (at least 10 bytes); returns the length.
#[inline]
pub fn encode(mut v: u64, out: &mut [u8]) -> usize {
    let mut i = 0;
    while v >= 0x80 {
        if let Some(b) = out.get_mut(i) {
            *b = (v as u8) | 0x80;
        }
        v >>= 7;
        i += 1;
    }
    if let Some(b) = out.get_mut(i) {
        *b = v as u8;
    }
    i + 1
}

/// Number of bytes `put` writes for `v`.
#[inline]
pub fn len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// Decodes a varint from the front of `input`, returning it and the bytes
/// used. Truncated, overlong, non-canonical and > `max` values are errors.
#[inline]
pub fn get(input: &[u8], max: u64) -> Result<(u64, usize), FrameError> {
    let mut v: u64 = 0;
    for (i, &b) in input.iter().enumerate().take(10) {
        let part = u64::from(b & 0x7f);
        if i == 9 && b > 1 {
            return Err(FrameError::VarintOverflow);
        }
        v |= part << (7 * i);
        if b & 0x80 == 0 {
            if b == 0 && i > 0 {
                return Err(FrameError::VarintNotCanonical);
            }
            if v > max {
                return Err(FrameError::VarintTooLarge { value: v, max });
            }
            return Ok((v, i + 1));
        }
    }
    if input.len() >= 10 {
        Err(FrameError::VarintOverflow)
    } else {
        Err(FrameError::Truncated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip(v in any::<u64>()) {
            let mut buf = Vec::new();
            put(&mut buf, v);
            prop_assert_eq!(buf.len(), len(v));
            let mut arr = [0u8; 10];
            let n = encode(v, &mut arr);
            prop_assert_eq!(&arr[..n], &buf[..]);
            prop_assert_eq!(get(&buf, u64::MAX).unwrap(), (v, buf.len()));
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..16)) {
            let _ = get(&bytes, u64::MAX);
        }
    }

    #[test]
    fn hostile_varints_are_rejected() {
        assert_eq!(get(&[], 9), Err(FrameError::Truncated));
        assert_eq!(get(&[0x80, 0x80], 9), Err(FrameError::Truncated));
        assert_eq!(get(&[0x80, 0x00], 9), Err(FrameError::VarintNotCanonical));
        assert_eq!(get(&[0xff; 11], u64::MAX), Err(FrameError::VarintOverflow));
        assert_eq!(
            get(&[0x0a], 9),
            Err(FrameError::VarintTooLarge { value: 10, max: 9 })
        );
        let mut over = vec![0xff; 9];
        over.push(0x02);
        assert_eq!(get(&over, u64::MAX), Err(FrameError::VarintOverflow));
    }
}
