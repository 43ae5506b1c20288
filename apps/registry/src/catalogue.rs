//! A realistic test and benchmark catalogue from real package data:
//! `data/npm-packages-20k.tsv` (name, version, monthly downloads and
//! summary of 20,000 real npm packages; a copy of the project's shared
//! data set, embedded so `peerlink devnet` needs no files).
//!
//! Names are made registry-valid (`@scope/pkg` becomes `scope-pkg`,
//! lowercased), keywords come from the summary, and dependencies are
//! synthesised deterministically from the name's hash: each package
//! depends on 0–3 packages listed before it (so the graph has no cycles),
//! with a caret requirement on the dependency's version. File contents are
//! pseudo-random bytes from the name's hash (BLAKE3 XOF), so the same
//! catalogue packs to the same archives on every machine.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use semver::{Version, VersionReq};

use crate::manifest::{valid_name, Manifest, MAX_DESCRIPTION_LEN, MAX_KEYWORDS};

/// The largest catalogue file read.
pub const MAX_CATALOGUE_BYTES: u64 = 64 << 20;

/// One package of the source data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub version: Version,
    pub downloads: u64,
    pub summary: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogueError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {size} bytes, over the limit of {MAX_CATALOGUE_BYTES}", path.display())]
    TooLarge { path: PathBuf, size: u64 },
    #[error("line 1: the header must be `name\\tversion\\tdownloads_a_month\\tsummary`")]
    Header,
}

/// The catalogue: entries with valid, unique names, in file order.
#[derive(Clone, Debug, Default)]
pub struct Catalogue {
    pub entries: Vec<Entry>,
    /// Lines skipped (bad name, version or download count; duplicates).
    pub skipped: usize,
}

/// The embedded data set (1.7 MB of TSV).
pub const EMBEDDED_TSV: &str = include_str!("../data/npm-packages-20k.tsv");

fn hash64(parts: &[&[u8]]) -> u64 {
    let mut h = blake3::Hasher::new();
    for p in parts {
        h.update(p);
        h.update(&[0]);
    }
    let b = h.finalize();
    u64::from_le_bytes(b.as_bytes()[..8].try_into().unwrap_or_default())
}

/// A registry-valid form of an npm name, if there is one.
fn clean_name(npm: &str) -> Option<String> {
    let name: String = npm
        .trim_start_matches('@')
        .chars()
        .map(|c| match c {
            '/' => '-',
            c => c.to_ascii_lowercase(),
        })
        .collect();
    valid_name(&name).then_some(name)
}

impl Catalogue {
    pub fn load(path: &Path) -> Result<Catalogue, CatalogueError> {
        let io = |source| CatalogueError::Io {
            path: path.to_path_buf(),
            source,
        };
        let size = std::fs::metadata(path).map_err(io)?.len();
        if size > MAX_CATALOGUE_BYTES {
            return Err(CatalogueError::TooLarge {
                path: path.to_path_buf(),
                size,
            });
        }
        Catalogue::parse(&std::fs::read_to_string(path).map_err(io)?)
    }

    /// The embedded 20,000 real packages.
    pub fn embedded() -> Catalogue {
        Catalogue::parse(EMBEDDED_TSV).unwrap_or_default()
    }

    pub fn parse(text: &str) -> Result<Catalogue, CatalogueError> {
        let mut lines = text.lines();
        if !lines
            .next()
            .is_some_and(|h| h.starts_with("name\tversion\tdownloads"))
        {
            return Err(CatalogueError::Header);
        }
        let mut out = Catalogue::default();
        let mut seen = HashSet::new();
        for line in lines {
            let mut f = line.splitn(4, '\t');
            let entry = (|| {
                let name = clean_name(f.next()?)?;
                let version = Version::parse(f.next()?.trim()).ok()?;
                let downloads = f.next()?.trim().parse().ok()?;
                let summary: String = f
                    .next()
                    .unwrap_or_default()
                    .chars()
                    .filter(|c| !c.is_control())
                    .take(MAX_DESCRIPTION_LEN)
                    .collect();
                Some(Entry {
                    name,
                    version,
                    downloads,
                    summary,
                })
            })();
            match entry {
                Some(e) if version_ok(&e.version) && seen.insert(e.name.clone()) => {
                    out.entries.push(e)
                }
                _ => out.skipped += 1,
            }
        }
        Ok(out)
    }

    /// The first `n` entries (the source lists the most downloaded first).
    pub fn truncate(mut self, n: usize) -> Catalogue {
        self.entries.truncate(n);
        self
    }

    /// Entry `i`'s manifest, with its synthesised dependencies.
    pub fn manifest(&self, i: usize) -> Option<Manifest> {
        let e = self.entries.get(i)?;
        let mut dependencies = BTreeMap::new();
        let deps = if i == 0 {
            0
        } else {
            hash64(&[e.name.as_bytes(), b"deps"]) % 4
        };
        for k in 0..deps {
            let j = (hash64(&[e.name.as_bytes(), &k.to_le_bytes()]) % i as u64) as usize;
            if let Some(d) = self.entries.get(j) {
                let req = format!("^{}.{}", d.version.major, d.version.minor);
                if let Ok(req) = VersionReq::parse(&req) {
                    dependencies.insert(d.name.clone(), req);
                }
            }
        }
        let keywords: Vec<String> = e
            .summary
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| w.len() >= 4 && w.len() <= 32)
            .map(str::to_lowercase)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .take(MAX_KEYWORDS.min(4))
            .collect();
        Some(Manifest {
            name: e.name.clone(),
            version: e.version.clone(),
            description: e.summary.clone(),
            keywords,
            license: "MIT".into(),
            dependencies,
        })
    }

    /// Writes entry `i` as a package directory `dir/NAME` with a manifest,
    /// a README and `content_bytes` of deterministic content.
    pub fn write_package(
        &self,
        i: usize,
        dir: &Path,
        content_bytes: usize,
    ) -> std::io::Result<PathBuf> {
        let m = self
            .manifest(i)
            .ok_or_else(|| std::io::Error::other(format!("no catalogue entry {i}")))?;
        write_package(&m, dir, content_bytes)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn position(&self, name: &str) -> Option<usize> {
        self.entries.iter().position(|e| e.name == name)
    }
}

/// The registry leaves pre-releases out of resolution; so does the
/// catalogue.
fn version_ok(v: &Version) -> bool {
    v.pre.is_empty()
}

/// Writes `m` as a package directory `dir/NAME`: `package.toml`,
/// `README.md` and `lib/index.js` of `content_bytes` deterministic bytes.
pub fn write_package(m: &Manifest, dir: &Path, content_bytes: usize) -> std::io::Result<PathBuf> {
    let root = dir.join(&m.name);
    std::fs::create_dir_all(root.join("lib"))?;
    let mut toml = format!(
        "[package]\nname = {:?}\nversion = \"{}\"\ndescription = {}\nkeywords = {:?}\nlicense = \"{}\"\n\n[dependencies]\n",
        m.name,
        m.version,
        toml_string(&m.description),
        m.keywords,
        m.license
    );
    for (d, r) in &m.dependencies {
        toml.push_str(&format!("{d:?} = \"{r}\"\n"));
    }
    std::fs::write(root.join(crate::MANIFEST_FILE), toml)?;
    std::fs::write(
        root.join("README.md"),
        format!("# {}\n\n{}\n", m.name, m.description),
    )?;
    let mut content = vec![0u8; content_bytes];
    blake3::Hasher::new()
        .update(m.name.as_bytes())
        .update(m.version.to_string().as_bytes())
        .finalize_xof()
        .fill(&mut content);
    std::fs::write(root.join("lib/index.js"), content)?;
    Ok(root)
}

/// A TOML basic string (escapes quotes, backslashes and control
/// characters).
fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_real_data_makes_a_valid_acyclic_catalogue() {
        let cat = Catalogue::parse(EMBEDDED_TSV).unwrap();
        assert!(
            cat.len() > 19_000,
            "{} entries, {} skipped",
            cat.len(),
            cat.skipped
        );
        let dir = tempfile::tempdir().unwrap();
        for i in [0, 1, 2, 100, 5000, cat.len() - 1] {
            let m = cat.manifest(i).unwrap();
            for d in m.dependencies.keys() {
                assert!(cat.position(d).unwrap() < i, "deps point backwards");
            }
            let path = cat.write_package(i, dir.path(), 100).unwrap();
            assert_eq!(Manifest::load(&path).unwrap(), m, "round trip through TOML");
        }
        let with_deps = (0..1000)
            .filter(|&i| !cat.manifest(i).unwrap().dependencies.is_empty())
            .count();
        assert!(with_deps > 500, "{with_deps} of 1000 have dependencies");
    }

    #[test]
    fn malformed_lines_are_skipped_and_a_bad_header_refused() {
        let text = "name\tversion\tdownloads_a_month\tsummary\n\
                    good\t1.0.0\t5\tA good one\n\
                    Bad Name!\t1.0.0\t5\tx\n\
                    nover\tone\t5\tx\n\
                    nodl\t1.0.0\tmany\tx\n\
                    good\t2.0.0\t5\tduplicate\n\
                    pre\t1.0.0-beta\t5\tx\n\
                    @scope/pkg\t1.2.3\t7\tscoped\n\
                    short\n";
        let cat = Catalogue::parse(text).unwrap();
        let names: Vec<&str> = cat.entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["good", "scope-pkg"]);
        assert_eq!(cat.skipped, 6);
        assert!(matches!(
            Catalogue::parse("nope\n"),
            Err(CatalogueError::Header)
        ));
    }
}
