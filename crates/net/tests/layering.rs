//! `crates/net` has no import loop: no module uses a module that uses it
//! back, directly or through others. Read from the sources (code, not
//! comments), so a new `use crate::…` or `crate::…` path that closes a
//! loop fails here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Modules each module of `src/` names through `crate::…` (a name
/// re-exported at the root counts as the module it comes from).
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut modules = BTreeMap::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "rs") {
            let name = path.file_stem().unwrap().to_string_lossy().to_string();
            modules.insert(name, std::fs::read_to_string(&path).unwrap());
        }
    }
    let lib = modules.remove("lib").expect("src/lib.rs");
    // `pub use module::{A, B}` / `pub use module::A` at the root.
    let mut reexports = BTreeMap::new();
    for line in lib.lines().map(str::trim) {
        let Some(rest) = line.strip_prefix("pub use ") else {
            continue;
        };
        let Some((module, names)) = rest.trim_end_matches(';').split_once("::") else {
            continue;
        };
        if !modules.contains_key(module) {
            continue;
        }
        for name in names.trim_matches(|c| c == '{' || c == '}').split(',') {
            let name = name.trim().split(" as ").last().unwrap_or("").trim();
            reexports.insert(name.to_string(), module.to_string());
        }
    }
    let mut graph = BTreeMap::new();
    for (name, text) in &modules {
        // Code only: a doc link is not an import.
        let text: String = text
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        let mut uses = BTreeSet::new();
        for (i, _) in text.match_indices("crate::") {
            let rest = &text[i + "crate::".len()..];
            let idents: Vec<&str> = match rest.strip_prefix('{') {
                Some(group) => group
                    .split('}')
                    .next()
                    .unwrap_or("")
                    .split(',')
                    .map(|s| s.trim())
                    .collect(),
                None => vec![rest],
            };
            for ident in idents {
                let ident: String = ident
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                let target = match modules.contains_key(&ident) {
                    true => Some(ident),
                    false => reexports.get(&ident).cloned(),
                };
                if let Some(t) = target.filter(|t| t != name) {
                    uses.insert(t);
                }
            }
        }
        graph.insert(name.clone(), uses);
    }
    graph
}

/// A path `from` … `to` along `graph`'s edges, if there is one.
fn path(
    graph: &BTreeMap<String, BTreeSet<String>>,
    from: &str,
    to: &str,
    seen: &mut BTreeSet<String>,
) -> Option<Vec<String>> {
    if !seen.insert(from.to_string()) {
        return None;
    }
    for next in graph.get(from).into_iter().flatten() {
        if next == to {
            return Some(vec![from.to_string(), to.to_string()]);
        }
        if let Some(mut rest) = path(graph, next, to, seen) {
            rest.insert(0, from.to_string());
            return Some(rest);
        }
    }
    None
}

#[test]
fn no_module_imports_a_module_that_imports_it_back() {
    let graph = graph();
    assert!(graph.contains_key("node") && graph.contains_key("conn"));
    let mut loops = Vec::new();
    for (module, uses) in &graph {
        for used in uses {
            if let Some(back) = path(&graph, used, module, &mut BTreeSet::new()) {
                loops.push(format!("{module} -> {}", back.join(" -> ")));
            }
        }
    }
    assert!(loops.is_empty(), "import loops:\n{}", loops.join("\n"));
}

#[test]
fn the_checker_sees_a_loop() {
    let mut g = BTreeMap::new();
    g.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    g.insert("b".to_string(), BTreeSet::from(["c".to_string()]));
    g.insert("c".to_string(), BTreeSet::from(["a".to_string()]));
    assert!(path(&g, "b", "a", &mut BTreeSet::new()).is_some());
    g.insert("c".to_string(), BTreeSet::new());
    assert!(path(&g, "b", "a", &mut BTreeSet::new()).is_none());
}
