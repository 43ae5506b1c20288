//! The 256-bit key space: keys, XOR distance and bucket indices.

use std::fmt;

use crate::PeerId;

/// A point in the DHT's key space: BLAKE3 of a peer id or of a user key,
/// so keys are uniform whatever the input.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(pub [u8; 32]);

impl Key {
    /// The key of arbitrary bytes (a record name).
    pub fn hash(data: &[u8]) -> Key {
        Key(*blake3::hash(data).as_bytes())
    }

    /// The key of a peer.
    pub fn of_peer(peer: &PeerId) -> Key {
        let mut h = blake3::Hasher::new();
        h.update(b"peerlink-dht-peer:");
        h.update(peer.as_bytes());
        Key(*h.finalize().as_bytes())
    }

    pub fn distance(&self, other: &Key) -> Distance {
        let mut d = [0u8; 32];
        for (i, b) in d.iter_mut().enumerate() {
            *b = self.0[i] ^ other.0[i];
        }
        Distance(d)
    }

    /// A key whose distance from `self` has exactly `leading` leading zero
    /// bits (so it falls in bucket `255 - leading`), other bits from `random`.
    pub fn random_at(&self, leading: usize, random: [u8; 32]) -> Key {
        let leading = leading.min(255);
        let mut d = random;
        let (byte, bit) = (leading / 8, leading % 8);
        for b in d.iter_mut().take(byte) {
            *b = 0;
        }
        // Clear the bits above `bit`, set the bit itself.
        d[byte] &= 0xFFu8 >> bit;
        d[byte] |= 0x80u8 >> bit;
        let mut k = [0u8; 32];
        for (i, b) in k.iter_mut().enumerate() {
            *b = self.0[i] ^ d[i];
        }
        Key(k)
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0[..6] {
            write!(f, "{b:02x}")?;
        }
        f.write_str("…")
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// A fast hasher for sets of peer ids, which are already uniform. Used
/// only for small bounded sets (a lookup's candidates), where a crafted
/// collision can cost little.
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for c in bytes.chunks(8) {
            let mut a = [0u8; 8];
            a[..c.len()].copy_from_slice(c);
            self.0 =
                (self.0.rotate_left(5) ^ u64::from_le_bytes(a)).wrapping_mul(0x517c_c1b7_2722_0a95);
        }
    }
}

pub type IdSet<T> = std::collections::HashSet<T, std::hash::BuildHasherDefault<IdHasher>>;

/// XOR distance; compares as a big-endian 256-bit number.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub struct Distance(pub [u8; 32]);

impl Distance {
    pub fn leading_zeros(&self) -> usize {
        let mut n = 0;
        for b in &self.0 {
            if *b == 0 {
                n += 8;
            } else {
                return n + b.leading_zeros() as usize;
            }
        }
        256
    }

    /// The bucket this distance falls in: 255 for the farthest half of
    /// the space, down to 0; `None` for distance zero (oneself).
    pub fn bucket(&self) -> Option<usize> {
        let lz = self.leading_zeros();
        (lz < 256).then(|| 255 - lz)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_and_buckets() {
        let a = Key::hash(b"a");
        assert_eq!(a.distance(&a).bucket(), None);
        for lz in [0usize, 1, 7, 8, 9, 100, 255] {
            let k = a.random_at(lz, [0xAB; 32]);
            assert_eq!(a.distance(&k).leading_zeros(), lz);
            assert_eq!(a.distance(&k).bucket(), Some(255 - lz));
        }
        let b = Key::hash(b"b");
        assert_eq!(a.distance(&b), b.distance(&a));
    }
}
