//! The layout's promises, read from the sources: modules import one another without a circle,
//! and the shim's side never reaches into the container's (`process`, the only code that runs
//! a workload and links WasmEdge).
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Every module of the library (`a::b` for src/a/b.rs or src/a/b/mod.rs) and its source.
fn modules() -> BTreeMap<String, String> {
    fn walk(dir: &Path, prefix: &[String], out: &mut BTreeMap<String, String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_stem().unwrap().to_string_lossy().to_string();
            if path.is_dir() {
                if name != "bin" && name != "js-runtime" {
                    let mut p = prefix.to_vec();
                    p.push(name);
                    walk(&path, &p, out);
                }
            } else if path.extension().is_some_and(|e| e == "rs") {
                let is_dir_module = name == "mod" || (prefix.is_empty() && name == "lib");
                let mut p = prefix.to_vec();
                if !is_dir_module {
                    p.push(name);
                }
                out.insert(p.join("::"), std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &[], &mut out);
    // build/ belongs to the wasmedge-image binary, not to the library.
    out.retain(|m, _| m != "build" && !m.starts_with("build::"));
    out
}

/// The code of a source, without comments and unit tests.
fn code(source: &str) -> String {
    let source = source.split("#[cfg(test)]\nmod tests").next().unwrap();
    source.lines().map(|l| l.split("//").next().unwrap()).collect::<Vec<_>>().join("\n")
}

/// The paths a source names after `crate::` or `super::`, braces expanded one level, as full
/// module paths from the crate root.
fn named_paths(module: &str, source: &str) -> Vec<Vec<String>> {
    let own: Vec<String> = module.split("::").filter(|s| !s.is_empty()).map(String::from).collect();
    // `super` is the module's parent, for a file module and a directory module (mod.rs) alike.
    let parent = if own.is_empty() { Vec::new() } else { own[..own.len() - 1].to_vec() };
    let code = code(source);
    let mut paths = Vec::new();
    for (kind, base) in [("crate::", Vec::new()), ("super::", parent)] {
        let mut rest = code.as_str();
        while let Some(at) = rest.find(kind) {
            let before = rest[..at].chars().last();
            rest = &rest[at + kind.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')).unwrap_or(rest.len());
            let mut path = base.clone();
            path.extend(rest[..end].split("::").filter(|s| !s.is_empty()).map(String::from));
            if rest[end..].starts_with('{') {
                let group = &rest[end + 1..rest[end..].find('}').map(|i| end + i).unwrap_or(rest.len())];
                for item in group.split(',') {
                    let first = item.trim().split([' ', ':']).next().unwrap_or("");
                    if !first.is_empty() && first != "self" {
                        let mut p = path.clone();
                        p.push(first.to_string());
                        paths.push(p);
                    }
                }
            }
            paths.push(path);
        }
    }
    paths
}

/// Module → the other modules it imports (not its own ancestors or descendants).
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let modules = modules();
    let resolve = |path: &[String]| (1..=path.len()).rev().map(|n| path[..n].join("::")).find(|m| modules.contains_key(m));
    modules
        .iter()
        .map(|(m, source)| {
            let related = |other: &str| m == other || m.starts_with(&format!("{other}::")) || other.starts_with(&format!("{m}::"));
            let targets = named_paths(m, source)
                .iter()
                .filter_map(|p| resolve(p))
                .filter(|t| !related(t))
                .collect();
            (m.clone(), targets)
        })
        .collect()
}

#[test]
fn the_modules_import_one_another_without_a_circle() {
    let graph = imports();
    assert!(graph.contains_key("launch::spawn") && graph["launch::spawn"].contains("protocol"), "the reading of imports works: {graph:#?}");
    // Depth-first search; a grey module met again closes a circle.
    fn visit<'a>(m: &'a str, graph: &'a BTreeMap<String, BTreeSet<String>>, path: &mut Vec<&'a str>, done: &mut BTreeSet<&'a str>) {
        if done.contains(m) {
            return;
        }
        if let Some(at) = path.iter().position(|p| *p == m) {
            panic!("an import circle: {} -> {m}", path[at..].join(" -> "));
        }
        path.push(m);
        for next in &graph[m] {
            visit(next, graph, path, done);
        }
        path.pop();
        done.insert(m);
    }
    let mut done = BTreeSet::new();
    for m in graph.keys() {
        visit(m, &graph, &mut Vec::new(), &mut done);
    }
}

#[test]
fn the_shims_side_never_imports_the_containers() {
    for (m, targets) in imports() {
        if ["shim", "launch", "protocol", "image", "trace"].iter().any(|side| m == *side || m.starts_with(&format!("{side}::"))) {
            let inside: Vec<_> = targets.iter().filter(|t| *t == "process" || t.starts_with("process::")).collect();
            assert!(inside.is_empty(), "{m} imports {inside:?}, code of the container's side");
        }
    }
}
