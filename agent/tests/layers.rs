//! The agent's layers (see `src/lib.rs`): each folder of `src/` imports only
//! the folders before it, and `plan/` does no I/O. Reads the source; no root.
use std::{
    fs,
    path::{Path, PathBuf},
};

/// Lowest first: a module may use `crate::<m>` only for `m` at or below its own.
const LAYERS: [&str; 5] = ["error", "plan", "host", "dataplane", "daemon"];

/// What the pure layer must not name: the runtime, the kernel, files, processes.
const IMPURE: [&str; 7] = ["tokio", "rtnetlink", "netlink_packet", "nix::", "std::fs", "std::process", "std::thread"];

fn rank(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| *l == module)
}

/// The source without `//` comments (doc links may point anywhere).
fn code(text: &str) -> String {
    text.lines().map(|l| l.split_once("//").map_or(l, |(c, _)| c)).collect::<Vec<_>>().join("\n")
}

fn ident(s: &str) -> String {
    s.trim_start().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect()
}

/// The top-level names after `prefix` (`crate::x`, `crate::{x, y::z}`, `std::{fs, …}`).
fn roots_after(code: &str, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (at, _) in code.match_indices(prefix) {
        // `weave_crate::` is not `crate::`.
        if code[..at].chars().last().is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let rest = &code[at + prefix.len()..];
        let Some(group) = rest.strip_prefix('{') else {
            out.push(ident(rest));
            continue;
        };
        let mut depth = 0;
        let mut item_start = true;
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => break,
                '}' => depth -= 1,
                ',' if depth == 0 => item_start = true,
                c if item_start && !c.is_whitespace() => {
                    out.push(ident(&group[i..]));
                    item_start = false;
                }
                _ => {}
            }
        }
    }
    out
}

/// Every way `file` (in layer `layer`) breaks the rules.
fn violations(layer: &str, file: &str, text: &str) -> Vec<String> {
    let code = code(text);
    let own = rank(layer).expect("a known layer");
    let mut found: Vec<String> = roots_after(&code, "crate::")
        .into_iter()
        .filter(|m| rank(m).is_some_and(|r| r > own) || (rank(m).is_none() && m != "self"))
        .map(|m| format!("{file}: the {layer} layer uses crate::{m}"))
        .collect();
    if layer == "plan" {
        found.extend(IMPURE.iter().filter(|w| code.contains(**w)).map(|w| format!("{file}: plan/ uses {w}")));
        found.extend(
            roots_after(&code, "std::")
                .into_iter()
                .filter(|m| ["fs", "process", "thread"].contains(&m.as_str()))
                .map(|m| format!("{file}: plan/ uses std::{m}")),
        );
    }
    found
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn each_layer_imports_only_downward_and_plan_does_no_io() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut problems = Vec::new();
    let mut checked = 0;
    for layer in LAYERS {
        let mut files = Vec::new();
        let dir = src.join(layer);
        if dir.is_dir() {
            rust_files(&dir, &mut files);
        } else {
            files.push(src.join(format!("{layer}.rs")));
        }
        for f in files {
            let name = f.strip_prefix(&src).unwrap().display().to_string();
            problems.extend(violations(layer, &name, &fs::read_to_string(&f).unwrap()));
            checked += 1;
        }
    }
    assert!(checked > 20, "only {checked} files found under {}", src.display());
    assert!(problems.is_empty(), "layering broken:\n{}", problems.join("\n"));
}

#[test]
fn the_check_catches_what_it_should() {
    let upward = "use crate::{\n    error::Error,\n    daemon::attach::Attacher,\n};";
    assert_eq!(violations("host", "x.rs", upward), ["x.rs: the host layer uses crate::daemon"]);
    assert!(violations("daemon", "x.rs", upward).is_empty());
    assert_eq!(violations("plan", "x.rs", "let x = crate::host::netlink::sysctl();").len(), 1);
    assert_eq!(violations("plan", "x.rs", "use std::{collections::HashMap, fs};"), ["x.rs: plan/ uses std::fs"]);
    assert_eq!(violations("plan", "x.rs", "use tokio::sync::watch;"), ["x.rs: plan/ uses tokio"]);
    assert!(violations("plan", "x.rs", "use super::kernel::TUN_NAME; // crate::daemon, tokio").is_empty());
    assert_eq!(violations("error", "x.rs", "use crate::plan::kernel;").len(), 1);
}

/// STYLE.md's sizes, kept by a test: no source file of a crate over 500
/// lines (past that, concerns are mixing), every `main.rs` under 100.
#[test]
fn source_files_stay_small_and_mains_thin() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut too_big = Vec::new();
    for krate in ["agent", "coordinator", "proto", "weavectl", "bench"] {
        let mut files = Vec::new();
        rust_files(&root.join(krate).join("src"), &mut files);
        assert!(!files.is_empty(), "no sources under {krate}/src");
        for f in files {
            let lines = std::fs::read_to_string(&f).unwrap().lines().count();
            let limit = if f.file_name().is_some_and(|n| n == "main.rs") { 99 } else { 500 };
            if lines > limit {
                too_big.push(format!("{} has {lines} lines (at most {limit})", f.display()));
            }
        }
    }
    assert!(too_big.is_empty(), "{too_big:#?}");
}
