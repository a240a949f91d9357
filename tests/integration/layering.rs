//! The layers of `src/` import downhill only: no import cycle between top-level
//! modules, and none between the children of one top-level module (see
//! docs/architecture.md for who may import whom).
//!
//! The check reads every `src/**/*.rs` of the library (test modules and comments left
//! out) and follows each `crate::…` and `super::…` path, `use` lists included, to the
//! module it names: a top-level module (`room`) or one of its children (`room::actor`).
//! A cycle fails the test, named with the files that make each of its steps.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Imports between modules: from → to → files (relative to `src/`) that import.
type Edges = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

#[test]
fn src_has_no_import_cycle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    collect(&root, &root, &mut files);
    assert!(
        files.len() > 50,
        "read the sources under {}",
        root.display()
    );
    let modules: BTreeSet<Vec<String>> = files.iter().map(|(path, _)| module_of(path)).collect();
    let (top, children) = graphs(&files, &modules);
    let mut cycles = Vec::new();
    cycles.extend(find_cycle(&top));
    for graph in children.values() {
        cycles.extend(find_cycle(graph));
    }
    assert!(
        cycles.is_empty(),
        "import cycles in src/:\n{}",
        cycles.join("\n")
    );
}

#[test]
fn the_check_names_a_cycle_between_modules_and_between_children() {
    let files = [
        ("a/mod.rs", "use crate::b::Thing;\n"),
        (
            "b.rs",
            "pub fn f() { crate::a::x::g() }\n// crate::c is a comment\n",
        ),
        ("a/x.rs", "use super::y::{self, Z};\n"),
        (
            "a/y.rs",
            "use crate::a::{x::W, z};\n#[cfg(test)]\nmod tests {\n    use crate::c;\n}\n",
        ),
        ("c.rs", "use crate::{b, d::E};\n"),
        ("d.rs", "\n"),
    ];
    let files: Vec<(String, String)> = files
        .iter()
        .map(|(path, text)| (path.to_string(), text.to_string()))
        .collect();
    let modules = files.iter().map(|(path, _)| module_of(path)).collect();
    let (top, children) = graphs(&files, &modules);
    let cycle = find_cycle(&top).expect("a and b import each other");
    assert!(
        cycle.contains("a -> b") && cycle.contains("b -> a"),
        "{cycle}"
    );
    assert!(
        cycle.contains("a/mod.rs") && cycle.contains("b.rs"),
        "{cycle}"
    );
    // Comments and test modules do not count: nothing imports c.
    assert!(!top["a"].contains_key("c"), "a test module does not count");
    assert!(!top["b"].contains_key("c"), "a comment does not count");
    let inner = find_cycle(&children["a"]).expect("a::x and a::y import each other");
    assert!(
        inner.contains("a::x -> a::y") && inner.contains("a::y -> a::x"),
        "{inner}"
    );
    assert!(find_cycle(&children["c"]).is_none());
    assert!(top["c"].contains_key("d"), "use lists count");
}

/// Every `.rs` file under `dir`, with its path relative to `root` ('/'-separated).
fn collect(root: &Path, dir: &Path, files: &mut Vec<(String, String)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("src/ is readable")
        .map(|entry| entry.expect("a directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            collect(root, &path, files);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            let relative = path.strip_prefix(root).expect("under root");
            let relative = relative.to_string_lossy().replace('\\', "/");
            // Crate roots: lib.rs declares the modules, main.rs is another crate.
            if relative == "lib.rs" || relative == "main.rs" || relative.starts_with("bin/") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("a readable source file");
            files.push((relative, text));
        }
    }
}

/// The module path of a file: `room/actor.rs` → room::actor, `room/mod.rs` → room.
fn module_of(path: &str) -> Vec<String> {
    let mut parts: Vec<String> = path
        .trim_end_matches(".rs")
        .split('/')
        .map(str::to_owned)
        .collect();
    if parts.last().is_some_and(|last| last == "mod") {
        parts.pop();
    }
    parts
}

/// The graph between top-level modules, and per top-level module the graph between
/// it and its children.
fn graphs(
    files: &[(String, String)],
    modules: &BTreeSet<Vec<String>>,
) -> (Edges, BTreeMap<String, Edges>) {
    let mut top = Edges::new();
    let mut children: BTreeMap<String, Edges> = BTreeMap::new();
    for (path, text) in files {
        let module = module_of(path);
        let from = node(&module, modules);
        children.entry(module[0].clone()).or_default();
        for target in imported_paths(&code_of(text), &module) {
            let to = node(&target, modules);
            if module[0] != target[0] {
                top.entry(module[0].clone())
                    .or_default()
                    .entry(target[0].clone())
                    .or_default()
                    .insert(path.clone());
            } else if from != to {
                children
                    .entry(module[0].clone())
                    .or_default()
                    .entry(from.clone())
                    .or_default()
                    .entry(to)
                    .or_default()
                    .insert(path.clone());
            }
        }
    }
    (top, children)
}

/// The node a module path belongs to: its top-level module, or the child of it that
/// the path goes through.
fn node(path: &[String], modules: &BTreeSet<Vec<String>>) -> String {
    match path {
        [top, child, ..]
            if modules
                .iter()
                .any(|m| m.len() >= 2 && &m[0] == top && &m[1] == child) =>
        {
            format!("{top}::{child}")
        }
        [top, ..] => top.clone(),
        [] => String::new(),
    }
}

/// The source without its test modules and comments.
fn code_of(text: &str) -> String {
    let mut code = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim();
        if trimmed == "#[cfg(test)]"
            && lines
                .peek()
                .is_some_and(|next| next.trim_start().starts_with("mod "))
        {
            skip_block(&mut lines);
            continue;
        }
        if trimmed.starts_with("//") {
            continue;
        }
        let line = line.find(" //").map_or(line, |at| &line[..at]);
        code.push_str(line);
        code.push('\n');
    }
    code
}

/// Skips a `mod name { … }` item (the `mod` line is next), by brace depth.
fn skip_block<'a>(lines: &mut std::iter::Peekable<impl Iterator<Item = &'a str>>) {
    let mut depth = 0i64;
    let mut opened = false;
    for line in lines.by_ref() {
        for c in line.chars() {
            match c {
                '{' => {
                    depth += 1;
                    opened = true;
                }
                '}' => depth -= 1,
                _ => {}
            }
        }
        if opened && depth <= 0 || !opened && line.trim_end().ends_with(';') {
            return;
        }
    }
}

/// Every module path named through `crate::` or `super::` in `code`, absolute.
fn imported_paths(code: &str, module: &[String]) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    for (start, _) in code
        .match_indices("crate::")
        .chain(code.match_indices("super::"))
    {
        let before = code[..start].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$' || c == ':') {
            continue;
        }
        let (base, rest) = match code[start..].strip_prefix("crate::") {
            Some(rest) => (Vec::new(), rest),
            None => {
                // `super::` (repeated) climbs from the file's module.
                let mut base = module.to_vec();
                let mut rest = &code[start..];
                while let Some(after) = rest.strip_prefix("super::") {
                    base.pop();
                    rest = after;
                }
                (base, rest)
            }
        };
        let mut paths = Vec::new();
        parse_path(rest, &[], &mut paths);
        for path in paths {
            let absolute: Vec<String> = base
                .iter()
                .cloned()
                .chain(path)
                .filter(|segment| segment != "self")
                .collect();
            if !absolute.is_empty() {
                found.push(absolute);
            }
        }
    }
    found
}

/// Parses `a::b::{c, d::e}` at the start of `text` into full segment lists, appended
/// to `paths` after `prefix`.
fn parse_path(text: &str, prefix: &[String], paths: &mut Vec<Vec<String>>) -> usize {
    let mut at = 0;
    let mut segments = prefix.to_vec();
    loop {
        let ident: String = text[at..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if !ident.is_empty() {
            at += ident.len();
            segments.push(ident);
            if text[at..].starts_with("::") {
                at += 2;
                continue;
            }
            paths.push(segments);
            return at;
        }
        if text[at..].starts_with('{') {
            at += 1;
            loop {
                at += text[at..].len() - text[at..].trim_start().len();
                if text[at..].starts_with('}') {
                    return at + 1;
                }
                at += parse_path(&text[at..], &segments, paths);
                at += text[at..].len() - text[at..].trim_start().len();
                // `as name` renames do not change the module.
                if text[at..].starts_with("as ") {
                    at += 3;
                    at += text[at..]
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_' || c.is_whitespace())
                        .count();
                }
                if text[at..].starts_with(',') {
                    at += 1;
                } else if text[at..].starts_with('}') {
                    return at + 1;
                } else {
                    return at;
                }
            }
        }
        if !segments.is_empty() && segments.len() > prefix.len() {
            paths.push(segments);
        }
        return at;
    }
}

/// One cycle of `graph`, written out with the files behind each step, if there is one.
fn find_cycle(graph: &Edges) -> Option<String> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    fn visit(
        graph: &Edges,
        node: &str,
        marks: &mut BTreeMap<String, Mark>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        marks.insert(node.to_owned(), Mark::Open);
        stack.push(node.to_owned());
        for next in graph.get(node).into_iter().flat_map(|to| to.keys()) {
            match marks.get(next).copied().unwrap_or(Mark::New) {
                Mark::Open => {
                    let from = stack.iter().position(|n| n == next).expect("on the stack");
                    let mut cycle = stack[from..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                Mark::New => {
                    if let Some(cycle) = visit(graph, next, marks, stack) {
                        return Some(cycle);
                    }
                }
                Mark::Done => {}
            }
        }
        stack.pop();
        marks.insert(node.to_owned(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for node in graph.keys() {
        if marks.get(node).copied().unwrap_or(Mark::New) == Mark::New
            && let Some(cycle) = visit(graph, node, &mut marks, &mut Vec::new())
        {
            let steps: Vec<String> = cycle
                .windows(2)
                .map(|step| {
                    let files: Vec<&str> = graph[&step[0]][&step[1]]
                        .iter()
                        .map(String::as_str)
                        .collect();
                    format!("  {} -> {} ({})", step[0], step[1], files.join(", "))
                })
                .collect();
            return Some(format!("{}:\n{}", cycle.join(" -> "), steps.join("\n")));
        }
    }
    None
}
