//! The crate's modules form layers, and imports only go down them: the layer table in
//! ARCHITECTURE.md (its ```layers block, top layer first) is the one statement of the order,
//! and this test holds the source to it. A cycle, an import of a module of the same or a
//! higher layer, a module missing from the table or a table naming a module that does not
//! exist fails, naming the file and the import.
use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// The layers, top first: each a set of top-level module names.
fn layers() -> Vec<BTreeSet<String>> {
    let doc = std::fs::read_to_string(root().join("../ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let block = doc
        .split("```layers\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("ARCHITECTURE.md has a ```layers block");
    block
        .lines()
        .filter_map(|l| l.split_once(':').map(|(_, mods)| mods))
        .map(|mods| mods.split_whitespace().map(str::to_string).collect())
        .collect()
}

/// The top-level modules `lib.rs` declares.
fn modules() -> BTreeSet<String> {
    let lib = std::fs::read_to_string(root().join("src/lib.rs")).unwrap();
    lib.lines()
        .filter_map(|l| {
            l.trim()
                .strip_prefix("pub mod ")
                .or_else(|| l.trim().strip_prefix("mod "))
        })
        .map(|l| l.trim_end_matches(';').to_string())
        .collect()
}

/// Every source file of top-level module `m`.
fn files_of(m: &str) -> Vec<PathBuf> {
    let src = root().join("src");
    let mut out = Vec::new();
    let file = src.join(format!("{m}.rs"));
    if file.exists() {
        out.push(file);
    }
    let mut dirs = vec![src.join(m)];
    while let Some(d) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    assert!(!out.is_empty(), "module {m} has no source file");
    out
}

/// The source without comments and without its `#[cfg(test)]` modules (tests may reach
/// anywhere; they come last in a file, so everything from the first is cut).
fn code(text: &str) -> String {
    let cut = text
        .match_indices("#[cfg(test)]")
        .find(|(i, _)| text[i + 12..].trim_start().starts_with("mod "))
        .map_or(text.len(), |(i, _)| i);
    text[..cut]
        .lines()
        .map(|l| match l.find("//") {
            Some(i) if !l[..i].contains('"') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level modules named after `crate::` in `code`: `crate::a::b` and each first name
/// of a group, `crate::{a, b::{c, d}}`.
fn imports(code: &str) -> BTreeSet<String> {
    let ident = |s: &str| {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect::<String>()
    };
    let mut out = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + 7..];
        if let Some(group) = rest.strip_prefix('{') {
            let (mut depth, mut start) = (0usize, 0usize);
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        out.insert(ident(&group[start..j]));
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.insert(ident(&group[start..j]));
                        start = j + 1;
                    }
                    _ => {}
                }
            }
        } else {
            out.insert(ident(rest));
        }
    }
    out.remove("");
    out
}

#[test]
fn imports_only_go_down_the_layers_of_architecture_md() {
    let layers = layers();
    let modules = modules();
    let mut level: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, l) in layers.iter().enumerate() {
        for m in l {
            assert!(level.insert(m, i).is_none(), "ARCHITECTURE.md names {m} in two layers");
            assert!(
                modules.contains(m),
                "ARCHITECTURE.md names {m}, which lib.rs does not declare"
            );
        }
    }
    let mut problems = Vec::new();
    for m in &modules {
        let Some(&mine) = level.get(m.as_str()) else {
            problems.push(format!("{m}: in no layer of ARCHITECTURE.md"));
            continue;
        };
        for f in files_of(m) {
            let text = std::fs::read_to_string(&f).unwrap();
            for dep in imports(&code(&text)) {
                if &dep == m || dep == "self" {
                    continue;
                }
                match level.get(dep.as_str()) {
                    // Layers are listed top first: a lower layer has a higher index.
                    Some(&theirs) if theirs > mine => {}
                    Some(_) => problems.push(format!(
                        "{}: imports crate::{dep}, which is not in a layer below {m}'s",
                        f.strip_prefix(root()).unwrap().display()
                    )),
                    None => problems.push(format!(
                        "{}: imports crate::{dep}, which is in no layer",
                        f.strip_prefix(root()).unwrap().display()
                    )),
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "imports against the layers:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_import_reader_sees_paths_and_groups() {
    let c = code(
        "use crate::{a, b::{c, d}, e::f};\nfn x() { crate::g::h(); } // crate::comment\n#[cfg(test)]\nmod tests { use crate::t; }\n",
    );
    assert_eq!(
        imports(&c),
        ["a", "b", "e", "g"].map(String::from).into_iter().collect()
    );
}
