//! The layers of `docs/architecture.md`, held against the imports of
//! `src/`: every `crate::` path in a module must name a module on a lower
//! line of the list, so that no import runs upward and none closes a cycle,
//! and every module must be on the list, so that the page stays true.
//!
//! A scan, not a parse: each `crate::name` (or `crate::{a, b::c}` group)
//! outside a plain `//` comment counts, doc comments included, since an
//! intra-doc link is resolved like an import. `super::` paths stay inside a
//! module and are not read; `lib.rs` and `main.rs` stand above every layer.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// The layer list: the numbered lines under `## Layers`, top first, each
/// the backquoted module names on it.
fn layers(page: &str) -> Vec<Vec<String>> {
    page.lines()
        .skip_while(|line| line.trim() != "## Layers")
        .skip(1)
        .take_while(|line| !line.starts_with("## "))
        .filter(|line| {
            let line = line.trim_start();
            line.starts_with(|c: char| c.is_ascii_digit()) && line.contains(". ")
        })
        .map(|line| {
            line.split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_owned)
                .collect()
        })
        .collect()
}

/// The top-level modules a source file names, with the 1-based line of each
/// mention.
fn mentions(source: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(at) = source[from..].find("crate::").map(|i| from + i) {
        from = at + "crate::".len();
        let before = source[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let line_start = source[..at].rfind('\n').map_or(0, |i| i + 1);
        let line = source[line_start..].lines().next().unwrap_or("").trim();
        if line.starts_with("//") && !line.starts_with("///") && !line.starts_with("//!") {
            continue;
        }
        let line_number = source[..at].matches('\n').count() + 1;
        let rest = &source[from..];
        let names = match rest.strip_prefix('{') {
            Some(group) => group_items(group),
            None => vec![leading_name(rest)],
        };
        for name in names {
            if !name.is_empty() && name != "self" {
                found.push((line_number, name));
            }
        }
    }
    found
}

/// The first name of each item of a `{ ... }` group (its `{` already
/// taken), up to the matching `}`.
fn group_items(group: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut depth = 0;
    let mut item_start = 0;
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                items.push(leading_name(&group[item_start..i]));
                break;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(leading_name(&group[item_start..i]));
                item_start = i + 1;
            }
            _ => {}
        }
    }
    items
}

fn leading_name(text: &str) -> String {
    text.trim_start()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
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
fn no_import_in_src_runs_upward_or_sideways() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let page = fs::read_to_string(root.join("docs/architecture.md")).unwrap();
    let layers = layers(&page);
    assert!(
        layers.len() > 1,
        "docs/architecture.md: no layer list under '## Layers'"
    );
    let mut layer_of = BTreeMap::new();
    for (index, modules) in layers.iter().enumerate() {
        for module in modules {
            let again = layer_of.insert(module.clone(), index);
            assert!(again.is_none(), "{module} is listed twice");
        }
    }

    let src = root.join("src");
    let mut on_disk = Vec::new();
    for entry in fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap();
        match name.strip_suffix(".rs") {
            Some("lib" | "main") => {}
            Some(module) => on_disk.push(module.to_owned()),
            None if path.is_dir() => on_disk.push(name.to_owned()),
            None => {}
        }
    }
    on_disk.sort();
    let mut listed: Vec<_> = layer_of.keys().cloned().collect();
    listed.sort();
    assert_eq!(
        on_disk, listed,
        "the modules of src/ (left) and the layers of docs/architecture.md (right) differ"
    );

    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut wrong = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&src).unwrap();
        let first = relative.iter().next().unwrap().to_str().unwrap();
        let module = first.strip_suffix(".rs").unwrap_or(first);
        if module == "lib" || module == "main" {
            continue;
        }
        let own = layer_of[module];
        for (line, name) in mentions(&fs::read_to_string(file).unwrap()) {
            if name == module {
                continue;
            }
            let place = format!("src/{}:{line}", relative.display());
            match layer_of.get(&name) {
                None => wrong.push(format!("{place}: crate::{name} is not a module")),
                Some(&layer) if layer < own => {
                    wrong.push(format!("{place}: {module} imports {name}, a higher layer"))
                }
                Some(&layer) if layer == own => wrong.push(format!(
                    "{place}: {module} imports {name}, on the same line of the layers"
                )),
                Some(_) => {}
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against docs/architecture.md's layers:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_scan_reads_paths_groups_and_doc_links_but_not_comments() {
    let source = "use crate::service::Peer;\n\
                  use crate::{budget::Budget, config::{self, Config}, self};\n\
                  // crate::dispatcher only in a comment\n\
                  /// [`Server`](crate::dispatcher::Server)\n\
                  let x = mycrate::lifecycle::run;\n\
                  fn f(_: crate::close::Closed) {}\n";
    let found = mentions(source);
    let expected = [
        (1, "service"),
        (2, "budget"),
        (2, "config"),
        (4, "dispatcher"),
        (6, "close"),
    ];
    assert_eq!(
        found,
        expected
            .map(|(line, name)| (line, name.to_owned()))
            .to_vec()
    );
    let page = "# x\n\n## Layers\n\nText.\n\n1. `a`\n2. `b`, `c`\n\n## Next\n\n3. `d`\n";
    assert_eq!(
        layers(page),
        vec![vec!["a".to_owned()], vec!["b".to_owned(), "c".to_owned()]]
    );
}
