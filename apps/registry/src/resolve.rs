//! Dependency resolution with pubgrub.
//!
//! The installer first gathers the [`Universe`] (every release of every
//! package reachable from the request, with its requirements), then hands
//! it to pubgrub. Semver requirements become pubgrub ranges comparator by
//! comparator (`^1.2` is `>=1.2.0, <2.0.0`), so an unsatisfiable tree is
//! explained in ranges a person reads. Pre-release versions are left out
//! of resolution. A cycle in the chosen graph is refused: there is no
//! order in which to install it.

use std::collections::{BTreeMap, BTreeSet};

use pubgrub::{DefaultStringReporter, OfflineDependencyProvider, PubGrubError, Ranges, Reporter};
use semver::{Comparator, Op, Version, VersionReq};

/// Package → version → its dependencies.
pub type Universe = BTreeMap<String, BTreeMap<Version, BTreeMap<String, VersionReq>>>;

/// The pseudo-package that stands for what the user asked for.
const ROOT: &str = "your request";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResolveError {
    #[error("no package named {0} is known to this node or the network")]
    NotFound(String),
    #[error("no version of {name} matches {req} (known: {known})")]
    NoMatch {
        name: String,
        req: VersionReq,
        known: String,
    },
    #[error("the requirements cannot all be met:\n{0}")]
    Unsatisfiable(String),
    #[error("dependency cycle: {0}")]
    Cycle(String),
}

/// One comparator as a range. `None` for an operator this code does not
/// know (semver may add some).
fn comparator(c: &Comparator) -> Option<Ranges<Version>> {
    let v = |major, minor, patch| {
        let mut v = Version::new(major, minor, patch);
        v.pre = c.pre.clone();
        v
    };
    let (maj, min, pat) = (c.major, c.minor, c.patch);
    // `[low, high)`; no `high` (the bump passed u64::MAX, which a remote
    // release may ask for) means no upper bound.
    let from_to = |low: Version, high: Option<Version>| match high {
        Some(h) => Ranges::between(low, h),
        None => Ranges::higher_than(low),
    };
    // The versions `maj[.min[.pat]]` stands for, as a half-open interval.
    let span = || match (min, pat) {
        (Some(m), Some(p)) => Ranges::singleton(v(maj, m, p)),
        (m, _) => from_to(v(maj, m.unwrap_or(0), 0), bump(maj, m, None)),
    };
    let lowest = v(maj, min.unwrap_or(0), pat.unwrap_or(0));
    Some(match c.op {
        Op::Exact | Op::Wildcard => span(),
        Op::Greater => match (min, pat) {
            (Some(_), Some(_)) => Ranges::strictly_higher_than(lowest),
            (m, _) => bump(maj, m, None).map_or_else(Ranges::empty, Ranges::higher_than),
        },
        Op::GreaterEq => Ranges::higher_than(lowest),
        Op::Less => Ranges::strictly_lower_than(lowest),
        Op::LessEq => match (min, pat) {
            (Some(_), Some(_)) => Ranges::lower_than(lowest),
            (m, _) => bump(maj, m, None).map_or_else(Ranges::full, Ranges::strictly_lower_than),
        },
        Op::Tilde => from_to(lowest, bump(maj, min, None)),
        Op::Caret => {
            let upper = match (maj, min, pat) {
                (0, Some(0), Some(p)) => bump(0, Some(0), Some(p)),
                (0, Some(m), _) => bump(0, Some(m), None),
                (0, None, _) => Some(Version::new(1, 0, 0)),
                (major, _, _) => bump(major, None, None),
            };
            from_to(lowest, upper)
        }
        _ => return None,
    })
}

/// The first version after every `major[.minor[.patch]]`: the last
/// component given goes up by one, carrying into the one before it;
/// `None` past `u64::MAX.u64::MAX.u64::MAX`.
fn bump(major: u64, minor: Option<u64>, patch: Option<u64>) -> Option<Version> {
    let next_major = || major.checked_add(1).map(|j| Version::new(j, 0, 0));
    match (minor, patch) {
        (Some(m), Some(p)) => match p.checked_add(1) {
            Some(p) => Some(Version::new(major, m, p)),
            None => bump(major, Some(m), None),
        },
        (Some(m), None) => match m.checked_add(1) {
            Some(m) => Some(Version::new(major, m, 0)),
            None => next_major(),
        },
        (None, _) => next_major(),
    }
}

/// `req` as a pubgrub range; `known` is used only when `req` holds an
/// operator without a range form (then: the known versions it matches).
pub fn ranges(req: &VersionReq, known: &[Version]) -> Ranges<Version> {
    let mut out = Ranges::full();
    for c in &req.comparators {
        match comparator(c) {
            Some(r) => out = out.intersection(&r),
            None => {
                return known
                    .iter()
                    .filter(|v| req.matches(v))
                    .fold(Ranges::empty(), |acc, v| {
                        acc.union(&Ranges::singleton(v.clone()))
                    })
            }
        }
    }
    out
}

/// Resolves `name@req` within `universe`: the packages to install, each
/// after its dependencies.
pub fn resolve(
    name: &str,
    req: &VersionReq,
    universe: &Universe,
) -> Result<Vec<(String, Version)>, ResolveError> {
    let stable = |versions: &BTreeMap<Version, _>| -> Vec<Version> {
        versions
            .keys()
            .filter(|v| v.pre.is_empty())
            .cloned()
            .collect()
    };
    let root_versions = universe
        .get(name)
        .map(stable)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ResolveError::NotFound(name.to_string()))?;
    if !root_versions.iter().any(|v| req.matches(v)) {
        return Err(ResolveError::NoMatch {
            name: name.to_string(),
            req: req.clone(),
            known: list(&root_versions),
        });
    }
    let mut provider = OfflineDependencyProvider::<String, Ranges<Version>>::new();
    let empty = Vec::new();
    let known: BTreeMap<&String, Vec<Version>> =
        universe.iter().map(|(n, vs)| (n, stable(vs))).collect();
    for (pkg, versions) in universe {
        for (version, deps) in versions.iter().filter(|(v, _)| v.pre.is_empty()) {
            let deps = deps.iter().map(|(d, r)| {
                let k = known.get(d).unwrap_or(&empty);
                (d.clone(), ranges(r, k))
            });
            provider.add_dependencies(pkg.clone(), version.clone(), deps);
        }
    }
    provider.add_dependencies(
        ROOT.to_string(),
        Version::new(0, 0, 0),
        [(name.to_string(), ranges(req, &root_versions))],
    );
    let chosen = match pubgrub::resolve(&provider, ROOT.to_string(), Version::new(0, 0, 0)) {
        Ok(chosen) => chosen,
        Err(PubGrubError::NoSolution(mut tree)) => {
            tree.collapse_no_versions();
            let report = DefaultStringReporter::report(&tree);
            return Err(ResolveError::Unsatisfiable(
                report.replace(&format!("{ROOT} 0.0.0"), ROOT),
            ));
        }
        Err(e) => return Err(ResolveError::Unsatisfiable(e.to_string())),
    };
    let chosen: BTreeMap<String, Version> = chosen
        .iter()
        .filter(|(p, _)| p.as_str() != ROOT)
        .map(|(p, v)| (p.clone(), v.clone()))
        .collect();
    install_order(name, &chosen, universe)
}

fn list(versions: &[Version]) -> String {
    let v: Vec<String> = versions.iter().map(Version::to_string).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// Dependencies first; a cycle is an error naming it.
fn install_order(
    root: &str,
    chosen: &BTreeMap<String, Version>,
    universe: &Universe,
) -> Result<Vec<(String, Version)>, ResolveError> {
    let deps_of = |p: &str| -> Vec<String> {
        chosen
            .get(p)
            .and_then(|v| universe.get(p)?.get(v))
            .map(|d| {
                d.keys()
                    .filter(|n| chosen.contains_key(*n))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut order = Vec::new();
    let mut done = BTreeSet::new();
    // Iterative depth-first search; `path` is the current chain.
    let mut path: Vec<(String, Vec<String>)> = vec![(root.to_string(), deps_of(root))];
    while let Some((pkg, pending)) = path.last_mut() {
        match pending.pop() {
            Some(dep) if done.contains(&dep) => {}
            Some(dep) => {
                if let Some(at) = path.iter().position(|(p, _)| *p == dep) {
                    let named = |p: &String| match chosen.get(p) {
                        Some(v) => format!("{p} {v}"),
                        None => p.clone(),
                    };
                    let cycle: Vec<String> = path
                        .iter()
                        .skip(at)
                        .map(|(p, _)| named(p))
                        .chain([named(&dep)])
                        .collect();
                    return Err(ResolveError::Cycle(cycle.join(" → ")));
                }
                let next = deps_of(&dep);
                path.push((dep, next));
            }
            None => {
                let pkg = pkg.clone();
                path.pop();
                if let Some(v) = chosen.get(&pkg) {
                    order.push((pkg.clone(), v.clone()));
                }
                done.insert(pkg);
            }
        }
    }
    Ok(order)
}

#[cfg(test)]
mod tests;
