//! The package manifest: `package.toml` at the root of a package
//! directory.
//!
//! ```toml
//! [package]
//! name = "http-client"
//! version = "1.2.3"
//! description = "A small HTTP client"
//! keywords = ["http", "client"]
//! license = "MIT"
//!
//! [dependencies]
//! url-parse = "^1.0"
//! ```
//!
//! Every error names the file, the field and the reason. The file is
//! read only up to [`MAX_MANIFEST_BYTES`]; every list and string has a
//! bound.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use semver::{Version, VersionReq};
use serde::{Deserialize, Serialize};

/// The manifest's file name inside a package directory.
pub const MANIFEST_FILE: &str = "package.toml";
pub const MAX_MANIFEST_BYTES: u64 = 64 * 1024;
pub const MAX_NAME_LEN: usize = 64;
pub const MAX_DESCRIPTION_LEN: usize = 1000;
pub const MAX_KEYWORDS: usize = 10;
pub const MAX_KEYWORD_LEN: usize = 32;
pub const MAX_LICENSE_LEN: usize = 64;
pub const MAX_DEPENDENCIES: usize = 100;

/// A validated manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub name: String,
    pub version: Version,
    pub description: String,
    pub keywords: Vec<String>,
    pub license: String,
    /// Dependency name → semver requirement.
    pub dependencies: BTreeMap<String, VersionReq>,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{}: {source}", file.display())]
    Io {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {size} bytes, more than the {MAX_MANIFEST_BYTES} a manifest may have", file.display())]
    TooLarge { file: PathBuf, size: u64 },
    #[error("{}: not valid TOML: {message}", file.display())]
    Syntax { file: PathBuf, message: String },
    #[error("{}: `{field}`: {reason}", file.display())]
    Field {
        file: PathBuf,
        field: String,
        reason: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    package: Option<RawPackage>,
    #[serde(default)]
    dependencies: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPackage {
    name: Option<String>,
    version: Option<String>,
    description: Option<String>,
    #[serde(default)]
    keywords: Vec<String>,
    license: Option<String>,
}

/// Whether `name` is a valid package name: 1–64 of `a-z 0-9 - _ .`,
/// starting with a letter or digit.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_' || b == b'.'
        })
}

impl Manifest {
    /// Reads and validates `dir/package.toml`.
    pub fn load(dir: &Path) -> Result<Manifest, ManifestError> {
        use std::io::Read;
        let file = dir.join(MANIFEST_FILE);
        let io = |source| ManifestError::Io {
            file: file.clone(),
            source,
        };
        let f = std::fs::File::open(&file).map_err(io)?;
        let mut text = String::new();
        f.take(MAX_MANIFEST_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(io)?;
        if text.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(ManifestError::TooLarge {
                size: std::fs::metadata(&file).map_or(0, |m| m.len()),
                file,
            });
        }
        Manifest::parse(&text, &file)
    }

    /// Parses and validates manifest text; `file` names it in errors.
    pub fn parse(text: &str, file: &Path) -> Result<Manifest, ManifestError> {
        let field = |field: &str, reason: String| ManifestError::Field {
            file: file.to_path_buf(),
            field: field.to_string(),
            reason,
        };
        if text.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(ManifestError::TooLarge {
                file: file.to_path_buf(),
                size: text.len() as u64,
            });
        }
        let raw: RawManifest = toml::from_str(text).map_err(|e| ManifestError::Syntax {
            file: file.to_path_buf(),
            message: e.to_string().trim().to_string(),
        })?;
        let pkg = raw
            .package
            .ok_or_else(|| field("package", "missing [package] table".into()))?;
        let name = pkg
            .name
            .ok_or_else(|| field("package.name", "missing".into()))?;
        let version = pkg
            .version
            .ok_or_else(|| field("package.version", "missing".into()))?;
        let version = Version::parse(&version).map_err(|e| {
            field(
                "package.version",
                format!("{version:?} is not a semantic version: {e}"),
            )
        })?;
        let license = pkg.license.ok_or_else(|| {
            field(
                "package.license",
                "missing (an SPDX expression such as \"MIT\")".into(),
            )
        })?;
        if raw.dependencies.len() > MAX_DEPENDENCIES {
            return Err(field(
                "dependencies",
                format!(
                    "{} dependencies, at most {MAX_DEPENDENCIES}",
                    raw.dependencies.len()
                ),
            ));
        }
        let mut dependencies = BTreeMap::new();
        for (dep, req) in raw.dependencies {
            let req = VersionReq::parse(&req).map_err(|e| {
                field(
                    &format!("dependencies.{dep}"),
                    format!("{req:?} is not a version requirement: {e}"),
                )
            })?;
            dependencies.insert(dep, req);
        }
        let manifest = Manifest {
            name,
            version,
            description: pkg.description.unwrap_or_default(),
            keywords: pkg.keywords,
            license,
            dependencies,
        };
        manifest.check().map_err(|(f, reason)| field(&f, reason))?;
        Ok(manifest)
    }

    /// Checks the bounds and names of an already typed manifest (one that
    /// came from a peer, say): `Err((field, reason))`.
    pub fn check(&self) -> Result<(), (String, String)> {
        let field = |f: &str, reason: String| Err((f.to_string(), reason));
        if !valid_name(&self.name) {
            return field(
                "package.name",
                format!("{:?} is not a valid name (1–{MAX_NAME_LEN} of a-z, 0-9, '-', '_', '.', starting with a letter or digit)", self.name),
            );
        }
        if self.description.chars().count() > MAX_DESCRIPTION_LEN {
            return field(
                "package.description",
                format!("longer than {MAX_DESCRIPTION_LEN} characters"),
            );
        }
        if self.keywords.len() > MAX_KEYWORDS {
            return field(
                "package.keywords",
                format!("{} keywords, at most {MAX_KEYWORDS}", self.keywords.len()),
            );
        }
        for (i, k) in self.keywords.iter().enumerate() {
            if k.is_empty()
                || k.chars().count() > MAX_KEYWORD_LEN
                || k.chars().any(char::is_control)
            {
                return field(
                    &format!("package.keywords[{i}]"),
                    format!("{k:?}: 1–{MAX_KEYWORD_LEN} printable characters"),
                );
            }
        }
        if self.license.is_empty() || self.license.len() > MAX_LICENSE_LEN {
            return field("package.license", format!("1–{MAX_LICENSE_LEN} characters"));
        }
        if self.dependencies.len() > MAX_DEPENDENCIES {
            return field(
                "dependencies",
                format!(
                    "{} dependencies, at most {MAX_DEPENDENCIES}",
                    self.dependencies.len()
                ),
            );
        }
        for dep in self.dependencies.keys() {
            let at = format!("dependencies.{dep}");
            if !valid_name(dep) {
                return field(&at, format!("{dep:?} is not a valid package name"));
            }
            if *dep == self.name {
                return field(&at, "a package cannot depend on itself".into());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Manifest, ManifestError> {
        Manifest::parse(text, Path::new("pkg/package.toml"))
    }

    const GOOD: &str = r#"
[package]
name = "http-client"
version = "1.2.3"
description = "A small HTTP client"
keywords = ["http", "client"]
license = "MIT"

[dependencies]
url-parse = "^1.0"
"#;

    #[test]
    fn a_good_manifest_parses() {
        let m = parse(GOOD).unwrap();
        assert_eq!(m.name, "http-client");
        assert_eq!(m.version, Version::new(1, 2, 3));
        assert_eq!(m.keywords, vec!["http", "client"]);
        assert_eq!(
            m.dependencies["url-parse"],
            VersionReq::parse("^1.0").unwrap()
        );
    }

    /// The error text for `text`, which must fail.
    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_the_file_the_field_and_the_reason() {
        let cases = [
            ("", "`package`: missing [package] table"),
            ("[package]\nversion = \"1.0.0\"\nlicense = \"MIT\"", "`package.name`: missing"),
            (
                "[package]\nname = \"Bad Name\"\nversion = \"1.0.0\"\nlicense = \"MIT\"",
                "`package.name`: \"Bad Name\" is not a valid name",
            ),
            (
                "[package]\nname = \"a\"\nversion = \"1.0\"\nlicense = \"MIT\"",
                "`package.version`: \"1.0\" is not a semantic version",
            ),
            ("[package]\nname = \"a\"\nversion = \"1.0.0\"", "`package.license`: missing"),
            (
                "[package]\nname = \"a\"\nversion = \"1.0.0\"\nlicense = \"MIT\"\n[dependencies]\nb = \"not a req\"",
                "`dependencies.b`: \"not a req\" is not a version requirement",
            ),
            (
                "[package]\nname = \"a\"\nversion = \"1.0.0\"\nlicense = \"MIT\"\n[dependencies]\na = \"1\"",
                "`dependencies.a`: a package cannot depend on itself",
            ),
            (
                "[package]\nname = \"a\"\nversion = \"1.0.0\"\nlicense = \"MIT\"\nkeywords = [\"\"]",
                "`package.keywords[0]`",
            ),
        ];
        for (text, want) in cases {
            let e = err(text);
            assert!(e.starts_with("pkg/package.toml: "), "{e}");
            assert!(e.contains(want), "{text:?}: {e}");
        }
        let e = err("[package]\nname = \"a\"\nsurprise = 1");
        assert!(
            e.contains("not valid TOML") && e.contains("surprise"),
            "{e}"
        );
        let e = err("[package\nname = ");
        assert!(e.contains("not valid TOML") && e.contains("line"), "{e}");
    }

    #[test]
    fn hostile_sizes_are_refused() {
        let many = (0..11)
            .map(|i| format!("\"k{i}\""))
            .collect::<Vec<_>>()
            .join(",");
        let e = err(&format!(
            "[package]\nname = \"a\"\nversion = \"1.0.0\"\nlicense = \"MIT\"\nkeywords = [{many}]"
        ));
        assert!(e.contains("11 keywords, at most 10"), "{e}");
        let long = "x".repeat(MAX_DESCRIPTION_LEN + 1);
        let e = err(&format!(
            "[package]\nname = \"a\"\nversion = \"1.0.0\"\nlicense = \"MIT\"\ndescription = \"{long}\""
        ));
        assert!(e.contains("longer than 1000"), "{e}");
        let deps: String = (0..101).map(|i| format!("d{i} = \"1\"\n")).collect();
        let e = err(&format!(
            "[package]\nname = \"a\"\nversion = \"1.0.0\"\nlicense = \"MIT\"\n[dependencies]\n{deps}"
        ));
        assert!(e.contains("101 dependencies"), "{e}");
        let huge = format!("{GOOD}\n# {}", "x".repeat(MAX_MANIFEST_BYTES as usize));
        assert!(matches!(parse(&huge), Err(ManifestError::TooLarge { .. })));
    }

    #[test]
    fn names() {
        for ok in ["a", "http-client", "lib_2", "0day", "a.b"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "-a", "A", "a b", "a/b", "..", &"a".repeat(65), "é"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
