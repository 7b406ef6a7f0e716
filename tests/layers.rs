//! The crate's layering, checked: every `crate::X` a module names must be
//! in its own layer or a lower one, and the modules' import graph has no
//! cycle. The layers are the ones written in the crate doc of `src/lib.rs`
//! (this test also checks that the doc and this table agree), so a change
//! that imports upward fails here instead of in a reviewer's head.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Bottom first. A module may use modules of its own layer or below.
const LAYERS: &[&[&str]] = &[
    &["name", "units", "progress", "ratelimit"],
    &["format", "store"],
    &["cache", "trace", "snapshot", "metrics"],
    &["predict", "fetch", "create", "catalog"],
    &["prefetch"],
    &["fs"],
    &["config"],
    &["cli"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("src/ is readable") {
        let p = e.expect("directory entry").path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a file of `src/` belongs to (`None`: the crate
/// root, the binaries).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?.to_string();
    match first.as_str() {
        "lib.rs" | "main.rs" | "bin" => None,
        f => Some(f.trim_end_matches(".rs").to_string()),
    }
}

/// Every `crate::NAME` in the text (comments included: a doc link to a
/// higher layer is a dependency of the reader's understanding, too).
fn crate_refs(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("crate::") {
        let after = &rest[i + "crate::".len()..];
        let name: String = after
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        // `snapahead::crate::` does not occur; a preceding identifier char
        // would make this some other path (`foo_crate::`).
        let before = rest[..i].chars().last();
        if !name.is_empty() && !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            out.insert(name);
        }
        rest = after;
    }
    out
}

#[test]
fn no_module_imports_from_a_higher_layer_and_there_is_no_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut upward = Vec::new();
    for f in &files {
        let Some(m) = module_of(&src, f) else {
            continue;
        };
        let lm = layer_of(&m).unwrap_or_else(|| {
            panic!(
                "module {m} ({}) is in no layer of tests/layers.rs",
                f.display()
            )
        });
        let text = std::fs::read_to_string(f).expect("source is readable");
        for r in crate_refs(&text) {
            if r == m {
                continue;
            }
            let Some(lr) = layer_of(&r) else {
                panic!("{} names crate::{r}, a module in no layer", f.display());
            };
            if lr > lm {
                upward.push(format!(
                    "{} ({m}, layer {lm}) -> {r} (layer {lr})",
                    f.display()
                ));
            }
            graph.entry(m.clone()).or_default().insert(r);
        }
    }
    assert!(
        upward.is_empty(),
        "imports from a higher layer:\n{}",
        upward.join("\n")
    );
    // Cycles: depth-first search for a back edge.
    fn visit(
        m: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match state.get(m) {
            Some(2) => return None,
            Some(1) => {
                let at = path.iter().position(|p| p == m).unwrap_or(0);
                let mut cycle = path[at..].to_vec();
                cycle.push(m.to_string());
                return Some(cycle);
            }
            _ => {}
        }
        state.insert(m.to_string(), 1);
        path.push(m.to_string());
        for n in graph.get(m).into_iter().flatten() {
            if let Some(c) = visit(n, graph, state, path) {
                return Some(c);
            }
        }
        path.pop();
        state.insert(m.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for m in graph.keys() {
        if let Some(c) = visit(m, &graph, &mut state, &mut Vec::new()) {
            panic!("module cycle: {}", c.join(" -> "));
        }
    }
}

#[test]
fn the_crate_doc_states_the_same_layers() {
    let lib = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs"))
        .expect("src/lib.rs is readable");
    let doc: Vec<&str> = lib
        .lines()
        .take_while(|l| l.starts_with("//!"))
        .map(|l| l.trim_start_matches("//!").trim())
        .collect();
    for (i, layer) in LAYERS.iter().enumerate() {
        // The numbered item and its continuation lines.
        let start = doc
            .iter()
            .position(|l| l.starts_with(&format!("{}. ", i + 1)))
            .unwrap_or_else(|| panic!("src/lib.rs states no layer {}", i + 1));
        let item: String = doc[start..]
            .iter()
            .enumerate()
            .take_while(|(k, l)| {
                *k == 0 || !(l.is_empty() || l.starts_with(&format!("{}. ", i + 2)))
            })
            .map(|(_, l)| *l)
            .collect::<Vec<_>>()
            .join(" ");
        for m in *layer {
            assert!(
                item.contains(&format!("[`{m}`]")),
                "src/lib.rs layer {} ({item:?}) does not name {m}",
                i + 1
            );
        }
    }
}

#[test]
fn crate_refs_finds_paths_and_ignores_lookalikes() {
    let r = crate_refs("use crate::store::Store; x_crate::no; crate::fs::X; `crate::a`");
    assert_eq!(
        r.into_iter().collect::<Vec<_>>(),
        vec!["a".to_string(), "fs".into(), "store".into()]
    );
}

/// Every repository path the docs and the code's comments name
/// (`docs/...`, `bench/...`, `src/...`, ...) exists, so a reader who
/// follows one finds the file.
#[test]
fn paths_named_in_docs_and_comments_exist() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("README.md")];
    for e in std::fs::read_dir(root.join("docs")).expect("docs/ is readable") {
        let p = e.expect("directory entry").path();
        if p.extension().is_some_and(|x| x == "md") {
            files.push(p);
        }
    }
    rust_files(&root.join("src"), &mut files);
    let tops = [
        "docs/",
        "bench/",
        "scripts/",
        "examples/",
        "tests/",
        "src/",
        "fuzz/",
    ];
    let mut missing = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).expect("readable");
        for (i, _) in text.char_indices() {
            let rest = &text[i..];
            let Some(top) = tops.iter().find(|t| rest.starts_with(**t)) else {
                continue;
            };
            // A path starts a word (not `foo/src/...`).
            let before = text[..i].chars().last();
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '/' || c == '.')
            {
                continue;
            }
            let path: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || "_./-".contains(*c))
                .collect();
            let path = path.trim_end_matches(['.', ',']);
            if path.len() > top.len() && !path.contains('*') && !root.join(path).exists() {
                missing.push(format!("{}: {path}", f.display()));
            }
        }
    }
    missing.sort();
    missing.dedup();
    assert!(
        missing.is_empty(),
        "named but missing:\n{}",
        missing.join("\n")
    );
}
