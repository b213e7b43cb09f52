//! `core` stays layered: its top-level modules, linked by the `crate::<module>` paths their
//! non-test code names, form no cycle (ARCHITECTURE: "core stays acyclic and layered").
//!
//! A source-level check rather than a crate: the dependency-graph tools on crates.io work at the
//! crate level (cargo-modules needs rust-analyzer and a nightly-free build of its own), and the
//! rule here is about paths inside one crate, which a few lines of text scanning cover.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`, recursively.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The file's code without its test module and comments.
fn non_test_code(src: &str) -> String {
    let cut = src.find("#[cfg(test)]").unwrap_or(src.len());
    src.get(..cut)
        .unwrap_or(src)
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn ident_at(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// Top-level modules named after `crate::`: `crate::a::X` → a; `crate::{a::X, b}` → a, b.
fn referenced_modules(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0usize;
            let mut start = true;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => start = true,
                    c if start && !c.is_whitespace() => {
                        out.insert(ident_at(&group[j..]).to_string());
                        start = false;
                    }
                    _ => {}
                }
            }
        } else {
            out.insert(ident_at(rest).to_string());
        }
    }
    out
}

/// `pub use module::{A, B};` and `pub use module::A;` lines of lib.rs: name → module.
fn reexported_names(lib: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in lib.lines() {
        let Some(path) = line.trim().strip_prefix("pub use ") else {
            continue;
        };
        let path = path.trim_end_matches(';');
        let Some((module, names)) = path.split_once("::") else {
            continue;
        };
        let names = names.trim_start_matches('{').trim_end_matches('}');
        for name in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            out.insert(name.to_string(), module.to_string());
        }
    }
    out
}

#[test]
fn core_top_level_modules_form_no_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap();
        let name = rel.file_name().unwrap().to_string_lossy();
        // lib.rs only re-exports; files named *tests* are test code.
        if rel == Path::new("lib.rs") || name.contains("tests") {
            continue;
        }
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        let code = non_test_code(&std::fs::read_to_string(f).unwrap());
        let deps = graph.entry(top.clone()).or_default();
        deps.extend(referenced_modules(&code).into_iter().filter(|d| *d != top));
    }
    assert!(graph.len() > 10, "found only {:?}", graph.keys());
    // `crate::Pcs` is `crate::pcs::Pcs` re-exported by lib.rs: follow the re-export.
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let reexports = reexported_names(&lib);
    let known: BTreeSet<String> = graph.keys().cloned().collect();
    for (top, deps) in graph.iter_mut() {
        *deps = deps
            .iter()
            .filter_map(|d| reexports.get(d).or(Some(d)))
            .filter(|d| known.contains(*d) && *d != top)
            .cloned()
            .collect();
    }

    // Depth-first search with colours; a grey successor closes a cycle.
    fn visit<'a>(
        n: &'a str,
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<&'a str, bool>,
        path: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        state.insert(n, false);
        path.push(n);
        for d in &graph[n] {
            match state.get(d.as_str()) {
                Some(false) => {
                    let from = path.iter().position(|m| m == d).unwrap();
                    let mut cycle: Vec<String> =
                        path[from..].iter().map(|s| s.to_string()).collect();
                    cycle.push(d.clone());
                    return Some(cycle);
                }
                Some(true) => {}
                None => {
                    if let Some(c) = visit(d, graph, state, path) {
                        return Some(c);
                    }
                }
            }
        }
        path.pop();
        state.insert(n, true);
        None
    }
    let mut state = BTreeMap::new();
    for n in graph.keys() {
        if !state.contains_key(n.as_str()) {
            if let Some(cycle) = visit(n, &graph, &mut state, &mut Vec::new()) {
                panic!("module cycle in core: {}", cycle.join(" -> "));
            }
        }
    }
}

#[test]
fn reexports_resolve_to_their_module() {
    let m = reexported_names("pub use pcs::{parse, Pcs};\npub use verify::verify;\n");
    assert_eq!(m["Pcs"], "pcs");
    assert_eq!(m["parse"], "pcs");
    assert_eq!(m["verify"], "verify");
}

#[test]
fn grouped_and_plain_paths_are_both_seen() {
    let code = "use crate::{bundle::{A, B}, verify};\nfn f() { crate::pcs::parse(); }";
    let got: Vec<_> = referenced_modules(code).into_iter().collect();
    assert_eq!(got, ["bundle", "pcs", "verify"]);
}
