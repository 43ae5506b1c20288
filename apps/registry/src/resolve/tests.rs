use super::*;

fn v(s: &str) -> Version {
    Version::parse(s).unwrap()
}

fn req(s: &str) -> VersionReq {
    VersionReq::parse(s).unwrap()
}

/// (package, version, [(dep, req)]).
type Spec<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)]);

fn universe(spec: &[Spec]) -> Universe {
    let mut u = Universe::new();
    for (p, ver, deps) in spec {
        u.entry(p.to_string()).or_default().insert(
            v(ver),
            deps.iter().map(|(d, r)| (d.to_string(), req(r))).collect(),
        );
    }
    u
}

#[test]
fn ranges_agree_with_semver_matching() {
    let versions: Vec<Version> = [
        "0.0.1", "0.0.2", "0.1.0", "0.1.5", "0.2.0", "1.0.0", "1.2.0", "1.2.3", "1.2.9", "1.3.0",
        "1.9.9", "2.0.0", "2.1.0", "3.0.0",
    ]
    .iter()
    .map(|s| v(s))
    .collect();
    let reqs = [
        "^1.2.3",
        "^1.2",
        "^1",
        "^0.1.2",
        "^0.0.1",
        "^0",
        "~1.2.3",
        "~1.2",
        "~1",
        "=1.2.3",
        "=1.2",
        "=1",
        ">1.2.3",
        ">1.2",
        ">1",
        ">=1.2.3",
        ">=1.2",
        "<1.2.3",
        "<1.2",
        "<=1.2.3",
        "<=1.2",
        "<=1",
        "1.*",
        "1.2.*",
        "*",
        ">=1.0.0, <2.0.0",
        ">1, <3",
        "1.2.3",
    ];
    for r in reqs {
        let rq = req(r);
        let range = ranges(&rq, &versions);
        for ver in &versions {
            assert_eq!(
                range.contains(ver),
                rq.matches(ver),
                "{r} vs {ver}: {range}"
            );
        }
    }
}

#[test]
fn picks_the_newest_compatible_versions_dependencies_first() {
    let u = universe(&[
        ("app", "1.0.0", &[("http", "^1.1"), ("log", "^0.4")]),
        ("app", "2.0.0", &[("http", "^2")]),
        ("http", "1.0.0", &[]),
        ("http", "1.1.0", &[("log", "^0.4.1")]),
        ("http", "1.5.0", &[("log", "^0.4.1")]),
        ("http", "2.0.0", &[]),
        ("log", "0.4.0", &[]),
        ("log", "0.4.8", &[]),
        ("log", "0.5.0", &[]),
    ]);
    let order = resolve("app", &req("^1"), &u).unwrap();
    let names: Vec<String> = order.iter().map(|(n, v)| format!("{n}@{v}")).collect();
    assert_eq!(names, ["log@0.4.8", "http@1.5.0", "app@1.0.0"]);
    let order = resolve("app", &VersionReq::STAR, &u).unwrap();
    assert_eq!(order.last().unwrap(), &("app".to_string(), v("2.0.0")));
}

#[test]
fn unsatisfiable_trees_are_explained() {
    let u = universe(&[
        ("app", "1.0.0", &[("a", "^1"), ("b", "^1")]),
        ("a", "1.0.0", &[("shared", "^1")]),
        ("b", "1.0.0", &[("shared", "^2")]),
        ("shared", "1.0.0", &[]),
        ("shared", "2.0.0", &[]),
    ]);
    let e = resolve("app", &req("^1"), &u).unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, ResolveError::Unsatisfiable(_)), "{text}");
    for want in [
        "shared >=2.0.0, <3.0.0",
        "b 1.0.0 depends on",
        "your request depends on app",
    ] {
        assert!(text.contains(want), "{want} missing from: {text}");
    }
    let missing = universe(&[("app", "1.0.0", &[("ghost", "^1")])]);
    let text = resolve("app", &req("*"), &missing).unwrap_err().to_string();
    assert!(text.contains("ghost"), "{text}");
}

#[test]
fn unknown_names_and_unmatched_requirements_say_what_is_known() {
    let u = universe(&[("app", "1.0.0", &[]), ("app", "1.1.0", &[])]);
    assert_eq!(
        resolve("nope", &req("*"), &u),
        Err(ResolveError::NotFound("nope".into()))
    );
    let e = resolve("app", &req("^2"), &u).unwrap_err().to_string();
    assert!(
        e.contains("no version of app matches ^2 (known: 1.0.0, 1.1.0)"),
        "{e}"
    );
}

#[test]
fn a_cycle_is_refused_with_its_path() {
    let u = universe(&[
        ("a", "1.0.0", &[("b", "^1")]),
        ("b", "1.0.0", &[("c", "^1")]),
        ("c", "1.0.0", &[("a", "^1")]),
    ]);
    let e = resolve("a", &req("*"), &u).unwrap_err();
    assert_eq!(
        e,
        ResolveError::Cycle("a 1.0.0 → b 1.0.0 → c 1.0.0 → a 1.0.0".into())
    );
}

#[test]
fn pre_releases_are_left_out() {
    let u = universe(&[("app", "1.0.0", &[]), ("app", "1.1.0-beta.1", &[])]);
    assert_eq!(
        resolve("app", &req("*"), &u).unwrap(),
        [("app".to_string(), v("1.0.0"))]
    );
}

#[test]
fn requirements_at_u64_max_do_not_wrap() {
    // A remote release may ask for any u64; bumping it must not wrap to 0
    // (which would make `^MAX` match nothing or everything below it).
    let max = u64::MAX;
    let top = Version::new(max, max, max);
    for r in [
        format!("^{max}"),
        format!("~{max}.{max}"),
        format!("={max}.{max}"),
        format!("^0.{max}"),
        format!("^0.0.{max}"),
        format!("<={max}.{max}"),
        format!(">{max}"),
        format!("~1.{max}"),
    ] {
        let q = req(&r);
        let range = ranges(&q, &[]);
        for probe in [
            top.clone(),
            Version::new(max, 0, 0),
            Version::new(1, max, 0),
            Version::new(2, 0, 0),
            Version::new(0, 0, max),
            Version::new(0, 1, 0),
            Version::new(1, 0, 0),
        ] {
            assert_eq!(range.contains(&probe), q.matches(&probe), "{r} on {probe}");
        }
    }
}
