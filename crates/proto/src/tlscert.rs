//! The peer id a QUIC peer's TLS certificate names.
//!
//! Over QUIC a node's certificate is self-signed with its own ed25519
//! key, so the certificate's subject public key *is* its peer id. The TLS
//! 1.3 handshake proves possession of that key (the CertificateVerify
//! signature, which the driver checks against the key read here), and the
//! dialling side compares it with the id it dialled. The certificate's own
//! signature, names and dates carry no trust and are not read.
//!
//! This reads exactly one path through the DER — Certificate,
//! tbsCertificate, its seventh field (subjectPublicKeyInfo) — with every
//! length checked against what is left, and refuses anything but an
//! Ed25519 key (RFC 8410).

use crate::identity::{IdentityError, PeerId};

/// Certificates larger than this are refused unread (ours are ~300 bytes).
pub const MAX_CERT_LEN: usize = 4096;

/// The algorithm identifier of an Ed25519 key: OID 1.3.101.112, no parameters.
const ED25519_ALGORITHM: [u8; 5] = [0x06, 0x03, 0x2b, 0x65, 0x70];

/// Why a certificate names no usable peer id.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum CertError {
    #[error("certificate of {0} bytes exceeds {MAX_CERT_LEN}")]
    TooLarge(usize),
    #[error("certificate ends inside a field")]
    Truncated,
    #[error("certificate field has tag {found:#04x}, expected {expected:#04x}")]
    UnexpectedTag { expected: u8, found: u8 },
    #[error("certificate length is not in DER's shortest form")]
    NonCanonicalLength,
    #[error("certificate has bytes after its end")]
    Trailing,
    #[error("certificate key is not Ed25519")]
    NotEd25519,
    #[error("certificate key: {0}")]
    Key(#[from] IdentityError),
}

/// One DER value: its tag, its contents, and what follows it.
fn tlv(input: &[u8]) -> Result<(u8, &[u8], &[u8]), CertError> {
    let (&tag, rest) = input.split_first().ok_or(CertError::Truncated)?;
    let (&first, rest) = rest.split_first().ok_or(CertError::Truncated)?;
    let (len, rest) = match first {
        n if n < 0x80 => (n as usize, rest),
        0x81 => {
            let (&n, rest) = rest.split_first().ok_or(CertError::Truncated)?;
            if n < 0x80 {
                return Err(CertError::NonCanonicalLength);
            }
            (n as usize, rest)
        }
        0x82 => {
            let b = rest.get(..2).ok_or(CertError::Truncated)?;
            let n = (b[0] as usize) << 8 | b[1] as usize;
            if n < 0x100 {
                return Err(CertError::NonCanonicalLength);
            }
            (n, &rest[2..])
        }
        // Longer forms are beyond MAX_CERT_LEN anyway.
        _ => return Err(CertError::TooLarge(usize::MAX)),
    };
    let contents = rest.get(..len).ok_or(CertError::Truncated)?;
    Ok((tag, contents, &rest[len..]))
}

/// The value of `tag` at the front of `input`, and what follows it.
fn expect(input: &[u8], expected: u8) -> Result<(&[u8], &[u8]), CertError> {
    let (found, contents, rest) = tlv(input)?;
    if found != expected {
        return Err(CertError::UnexpectedTag { expected, found });
    }
    Ok((contents, rest))
}

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const BIT_STRING: u8 = 0x03;
const VERSION: u8 = 0xa0;

/// The peer id (Ed25519 subject public key) of a DER certificate.
pub fn peer_id_of(cert: &[u8]) -> Result<PeerId, CertError> {
    if cert.len() > MAX_CERT_LEN {
        return Err(CertError::TooLarge(cert.len()));
    }
    let (certificate, rest) = expect(cert, SEQUENCE)?;
    if !rest.is_empty() {
        return Err(CertError::Trailing);
    }
    let (mut tbs, _signature_and_algorithm) = expect(certificate, SEQUENCE)?;
    // version [0] EXPLICIT is optional (absent means v1).
    if tbs.first() == Some(&VERSION) {
        tbs = expect(tbs, VERSION)?.1;
    }
    tbs = expect(tbs, INTEGER)?.1; // serialNumber
    for _field in ["signature", "issuer", "validity", "subject"] {
        tbs = expect(tbs, SEQUENCE)?.1;
    }
    let (spki, _) = expect(tbs, SEQUENCE)?;
    let (algorithm, rest) = expect(spki, SEQUENCE)?;
    if algorithm != ED25519_ALGORITHM {
        return Err(CertError::NotEd25519);
    }
    let (key, rest) = expect(rest, BIT_STRING)?;
    if !rest.is_empty() {
        return Err(CertError::Trailing);
    }
    // No unused bits, then the 32-byte key.
    let key = match key.split_first() {
        Some((0, key)) if key.len() == 32 => key,
        _ => return Err(CertError::NotEd25519),
    };
    Ok(PeerId::from_slice(key)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal certificate around `spki`, as a TLS library would build it.
    fn cert_with(spki: &[u8]) -> Vec<u8> {
        fn wrap(tag: u8, body: &[u8]) -> Vec<u8> {
            let mut v = vec![tag];
            match body.len() {
                n if n < 0x80 => v.push(n as u8),
                n if n < 0x100 => v.extend([0x81, n as u8]),
                n => v.extend([0x82, (n >> 8) as u8, n as u8]),
            }
            v.extend_from_slice(body);
            v
        }
        let name = wrap(
            SEQUENCE,
            &wrap(
                0x31,
                &wrap(SEQUENCE, b"\x06\x03\x55\x04\x03\x0c\x08peerlink"),
            ),
        );
        let mut tbs = wrap(VERSION, &wrap(INTEGER, &[2]));
        tbs.extend(wrap(INTEGER, &[1, 2, 3]));
        tbs.extend(wrap(SEQUENCE, &ED25519_ALGORITHM));
        tbs.extend(&name);
        tbs.extend(wrap(
            SEQUENCE,
            &[wrap(0x17, b"250101000000Z"), wrap(0x18, b"40960101000000Z")].concat(),
        ));
        tbs.extend(&name);
        tbs.extend(spki);
        let mut cert = wrap(SEQUENCE, &tbs);
        cert.extend(wrap(SEQUENCE, &ED25519_ALGORITHM));
        cert.extend(wrap(BIT_STRING, &[0u8; 65]));
        wrap(SEQUENCE, &cert)
    }

    fn ed25519_spki(key: &[u8; 32]) -> Vec<u8> {
        let mut bits = vec![BIT_STRING, 33, 0];
        bits.extend_from_slice(key);
        let mut body = vec![SEQUENCE, 5];
        body.extend(ED25519_ALGORITHM);
        body.extend(bits);
        let mut spki = vec![SEQUENCE, body.len() as u8];
        spki.extend(body);
        spki
    }

    #[test]
    fn reads_the_ed25519_key_of_a_certificate() {
        let id = crate::Keypair::generate().unwrap().peer_id();
        let cert = cert_with(&ed25519_spki(id.as_bytes()));
        assert_eq!(peer_id_of(&cert), Ok(id));
    }

    #[test]
    fn refuses_every_truncation_and_other_keys() {
        let id = crate::Keypair::generate().unwrap().peer_id();
        let cert = cert_with(&ed25519_spki(id.as_bytes()));
        for n in 0..cert.len() {
            assert!(peer_id_of(&cert[..n]).is_err(), "truncated at {n}");
        }
        let mut trailing = cert.clone();
        trailing.push(0);
        assert_eq!(peer_id_of(&trailing), Err(CertError::Trailing));
        // An EC key (id-ecPublicKey) where the Ed25519 one should be.
        let mut ec = ed25519_spki(id.as_bytes());
        ec[4..9].copy_from_slice(&[0x06, 0x03, 0x2a, 0x86, 0x48]);
        assert_eq!(peer_id_of(&cert_with(&ec)), Err(CertError::NotEd25519));
        assert_eq!(
            peer_id_of(&vec![0x30; MAX_CERT_LEN + 1]),
            Err(CertError::TooLarge(MAX_CERT_LEN + 1))
        );
        // A length in a longer form than needed.
        assert_eq!(
            peer_id_of(&[0x30, 0x81, 0x05, 0, 0, 0, 0, 0]),
            Err(CertError::NonCanonicalLength)
        );
    }
}
