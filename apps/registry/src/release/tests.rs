use super::*;
use crate::manifest::Manifest;

fn manifest(name: &str, version: &str) -> Manifest {
    Manifest {
        name: name.into(),
        version: Version::parse(version).unwrap(),
        description: "a test package".into(),
        keywords: vec!["test".into()],
        license: "MIT".into(),
        dependencies: [("dep".to_string(), VersionReq::parse("^1").unwrap())].into(),
    }
}

fn signed(name: &str, version: &str, key: &Keypair) -> SignedRelease {
    let archive = vec![7u8; CHUNK_SIZE + 10];
    SignedRelease::sign(Release::new(&manifest(name, version), &archive, 1), key)
}

#[test]
fn a_release_round_trips_and_names_its_chunks() {
    let key = Keypair::generate().unwrap();
    let r = signed("pkg", "1.0.0", &key);
    assert_eq!(r.release.chunks.len(), 2);
    assert_eq!(r.release.size, CHUNK_SIZE as u64 + 10);
    let back = SignedRelease::decode(&r.encode()).unwrap();
    assert_eq!(back, r);
    assert_eq!(back.publisher, key.peer_id());
}

#[test]
fn tampering_is_caught_by_the_signature() {
    let key = Keypair::generate().unwrap();
    let bytes = signed("pkg", "1.0.0", &key).encode();
    // Flip one byte of the body, of the signature, of the key.
    for at in [HEADER + 10, 1 + 32 + 5, 3] {
        let mut b = bytes.clone();
        b[at] ^= 1;
        let e = SignedRelease::decode(&b).unwrap_err();
        assert!(
            matches!(e, ReleaseError::BadSignature | ReleaseError::BadKey),
            "byte {at}: {e}"
        );
    }
    // Somebody else re-signing a copy is a different publisher, not a forgery.
    let other = Keypair::generate().unwrap();
    let r = signed("pkg", "1.0.0", &other);
    assert_ne!(
        SignedRelease::decode(&r.encode()).unwrap().publisher,
        key.peer_id()
    );
}

#[test]
fn truncated_oversized_and_hostile_bytes_are_refused() {
    let key = Keypair::generate().unwrap();
    let bytes = signed("pkg", "1.0.0", &key).encode();
    for cut in [0, 1, 50, HEADER - 1, HEADER, bytes.len() - 1] {
        assert_eq!(
            SignedRelease::decode(&bytes[..cut]),
            Err(ReleaseError::Truncated),
            "cut at {cut}"
        );
    }
    let mut long = bytes.clone();
    long.push(0);
    assert_eq!(SignedRelease::decode(&long), Err(ReleaseError::Trailing(1)));
    let mut big = bytes.clone();
    big[1 + 32 + 64..HEADER].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(
        SignedRelease::decode(&big),
        Err(ReleaseError::TooLarge(_))
    ));
    let mut v2 = bytes.clone();
    v2[0] = 2;
    assert_eq!(SignedRelease::decode(&v2), Err(ReleaseError::Version(2)));
}

/// Signs an arbitrary body, as a hostile publisher could.
fn sign_body(body: &[u8], key: &Keypair) -> Vec<u8> {
    let mut out = vec![WIRE_VERSION];
    out.extend_from_slice(key.peer_id().as_bytes());
    out.extend_from_slice(&key.sign(body));
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

#[test]
fn validly_signed_nonsense_is_refused_by_validation() {
    let key = Keypair::generate().unwrap();
    let good = serde_json::to_value(&signed("pkg", "1.0.0", &key).release).unwrap();
    let cases: Vec<(serde_json::Value, &str)> = vec![
        (serde_json::json!("not an object"), "malformed"),
        (
            {
                let mut v = good.clone();
                v["name"] = "../etc".into();
                v
            },
            "package.name",
        ),
        (
            {
                let mut v = good.clone();
                v["size"] = (MAX_BLOB_SIZE + 1).into();
                v
            },
            "over the limit",
        ),
        (
            {
                let mut v = good.clone();
                v["chunks"] = serde_json::json!([]);
                v
            },
            "chunk hash",
        ),
        (
            {
                let mut v = good.clone();
                v["blob"] = "zz".into();
                v
            },
            "malformed",
        ),
        (
            {
                let mut v = good.clone();
                v["surprise"] = 1.into();
                v
            },
            "malformed",
        ),
        (
            {
                let mut v = good.clone();
                v["dependencies"] = serde_json::json!({"pkg": "^1"});
                v
            },
            "cannot depend on itself",
        ),
    ];
    for (body, want) in cases {
        let bytes = sign_body(&serde_json::to_vec(&body).unwrap(), &key);
        let e = SignedRelease::decode(&bytes).unwrap_err().to_string();
        assert!(e.contains(want), "{body}: {e}");
    }
}

#[test]
fn records_hold_one_publishers_releases_of_one_package() {
    let key = Keypair::generate().unwrap();
    let rec = PackageRecord {
        releases: vec![signed("pkg", "1.0.0", &key), signed("pkg", "1.1.0", &key)],
    };
    assert_eq!(PackageRecord::decode(&rec.encode()).unwrap(), rec);
    let other = Keypair::generate().unwrap();
    let mixed = PackageRecord {
        releases: vec![signed("pkg", "1.0.0", &key), signed("pkg", "1.1.0", &other)],
    };
    assert!(matches!(
        PackageRecord::decode(&mixed.encode()),
        Err(ReleaseError::MixedRecord(_))
    ));
    let names = PackageRecord {
        releases: vec![signed("pkg", "1.0.0", &key), signed("other", "1.0.0", &key)],
    };
    assert!(matches!(
        PackageRecord::decode(&names.encode()),
        Err(ReleaseError::MixedRecord(_))
    ));
    assert_eq!(PackageRecord::decode(&[]), Err(ReleaseError::Truncated));
    assert_eq!(
        PackageRecord::decode(&[0xff, 0xff]),
        Err(ReleaseError::TooManyReleases(0xffff))
    );
    assert_eq!(PackageRecord::decode(&[0, 1]), Err(ReleaseError::Truncated));
    assert!(matches!(
        PackageRecord::decode(&vec![0; MAX_RECORD_BYTES + 1]),
        Err(ReleaseError::RecordTooLarge(_))
    ));
}

#[test]
fn a_long_history_keeps_the_newest_releases_that_fit() {
    let key = Keypair::generate().unwrap();
    let releases: Vec<SignedRelease> = (0..300)
        .map(|i| signed("pkg", &format!("1.0.{i}"), &key))
        .collect();
    let bytes = PackageRecord { releases }.encode();
    assert!(bytes.len() <= MAX_RECORD_BYTES);
    let back = PackageRecord::decode(&bytes).unwrap();
    assert!(back.releases.len() > 50, "{}", back.releases.len());
    assert_eq!(
        back.releases.last().unwrap().release.version,
        Version::new(1, 0, 299)
    );
}
