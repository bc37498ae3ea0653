//! The data plane's modules import each other in one direction: the request path → the
//! node's own endpoints → identification and login → cache, control client, virtual-proxy
//! data → the leaves (body, refusal). A cycle makes a second front end (forward
//! authentication) or a second forward phase drag in the whole crate, so this test reads the
//! crate's sources and fails on any cycle between its files.
//!
//! A file's dependencies are the modules its non-test code names: `crate::…`, `super::…`,
//! `self::…` paths (with `use` groups expanded), its child modules by name, and names
//! brought in by `use` that are modules. Declaring `mod child;` alone is no dependency.

// A test that cannot read the crate's own sources has nothing to say but why.
#![allow(clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Module = Vec<String>;

fn modules(src: &Path) -> BTreeMap<Module, PathBuf> {
    let mut found = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|ext| ext != "rs") {
                continue;
            }
            let relative = path.strip_prefix(src).expect("under src");
            let mut module: Module = relative
                .with_extension("")
                .components()
                .map(|part| part.as_os_str().to_string_lossy().into_owned())
                .collect();
            match module.last().map(String::as_str) {
                Some("main") if module.len() == 1 => continue,
                Some("lib") if module.len() == 1 => module.clear(),
                Some("mod") => {
                    module.pop();
                }
                _ => {}
            }
            found.insert(module, path);
        }
    }
    found
}

/// The file without comments, string contents and its `#[cfg(test)]` module.
fn code_of(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    };
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '"' => {
                let mut escaped = false;
                for c in chars.by_ref() {
                    if escaped {
                        escaped = false;
                    } else if c == '\\' {
                        escaped = true;
                    } else if c == '"' {
                        break;
                    }
                }
                out.push_str("\"\"");
            }
            // A char literal such as '"' or '{' must not open a string or a group; a
            // lifetime ('a) is left alone.
            '\'' => {
                let rest: String = chars.clone().take(3).collect();
                let close = if rest.starts_with('\\') {
                    rest.find('\'').filter(|&i| i > 1)
                } else {
                    (rest.chars().nth(1) == Some('\'')).then_some(1)
                };
                match close {
                    Some(_) if rest.starts_with('\\') => {
                        let mut escaped = false;
                        for c in chars.by_ref() {
                            if escaped {
                                escaped = false;
                            } else if c == '\\' {
                                escaped = true;
                            } else if c == '\'' {
                                break;
                            }
                        }
                    }
                    Some(_) => {
                        chars.next();
                        chars.next();
                    }
                    None => out.push(c),
                }
            }
            _ => out.push(c),
        }
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Every path written in `code` (`a::b::c`, with `a::{b, c::d}` groups expanded).
fn paths(code: &str) -> Vec<Vec<String>> {
    let bytes: Vec<char> = code.chars().collect();
    let mut found = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        if is_ident(bytes[at]) && (at == 0 || !is_ident(bytes[at - 1]) && bytes[at - 1] != ':') {
            let (trees, end) = tree(&bytes, at);
            if trees.iter().any(|path| path.len() > 1) {
                found.extend(trees);
            }
            at = end.max(at + 1);
        } else {
            at += 1;
        }
    }
    found
}

/// Parses a path (or use tree) starting at `at`; returns the expanded paths and where it
/// ended.
fn tree(chars: &[char], mut at: usize) -> (Vec<Vec<String>>, usize) {
    let mut prefix = Vec::new();
    loop {
        let start = at;
        while at < chars.len() && is_ident(chars[at]) {
            at += 1;
        }
        if start == at {
            return (vec![prefix], at);
        }
        prefix.push(chars[start..at].iter().collect::<String>());
        let after = skip_space(chars, at);
        if chars.get(after) == Some(&':') && chars.get(after + 1) == Some(&':') {
            at = skip_space(chars, after + 2);
            if chars.get(at) == Some(&'{') {
                let mut all = Vec::new();
                at += 1;
                loop {
                    at = skip_space(chars, at);
                    match chars.get(at) {
                        Some('}') => return (all, at + 1),
                        Some(',') => at += 1,
                        Some(c) if is_ident(*c) => {
                            let (inner, end) = tree(chars, at);
                            for path in inner {
                                let mut full = prefix.clone();
                                full.extend(path.into_iter().filter(|part| part != "self"));
                                all.push(full);
                            }
                            at = end;
                        }
                        Some('*') => at += 1,
                        _ => return (all, at),
                    }
                }
            }
            continue;
        }
        return (vec![prefix], at);
    }
}

fn skip_space(chars: &[char], mut at: usize) -> usize {
    while chars.get(at).is_some_and(|c| c.is_whitespace()) {
        at += 1;
    }
    at
}

/// The deepest module of the crate that `path`, written in `current`, names.
fn resolve(
    path: &[String],
    current: &Module,
    children: &BTreeSet<String>,
    aliases: &BTreeMap<String, Module>,
    all: &BTreeMap<Module, PathBuf>,
) -> Option<Module> {
    let (mut base, rest): (Module, &[String]) = match path.first()?.as_str() {
        "crate" => (Vec::new(), &path[1..]),
        "self" => (current.clone(), &path[1..]),
        "super" => {
            let mut base = current.clone();
            let mut rest = path;
            while rest.first().is_some_and(|part| part == "super") {
                base.pop();
                rest = &rest[1..];
            }
            (base, rest)
        }
        first if children.contains(first) => {
            let mut base = current.clone();
            base.push(first.to_owned());
            (base, &path[1..])
        }
        first => (aliases.get(first)?.clone(), &path[1..]),
    };
    for part in rest {
        let mut deeper = base.clone();
        deeper.push(part.clone());
        if !all.contains_key(&deeper) {
            break;
        }
        base = deeper;
    }
    all.contains_key(&base).then_some(base)
}

fn dependencies(all: &BTreeMap<Module, PathBuf>) -> BTreeMap<Module, BTreeSet<Module>> {
    let mut graph = BTreeMap::new();
    for (module, file) in all {
        let text = std::fs::read_to_string(file).expect("read source");
        let code = code_of(&text);
        let children: BTreeSet<String> = all
            .keys()
            .filter(|other| other.len() == module.len() + 1 && other.starts_with(module))
            .filter_map(|other| other.last().cloned())
            .collect();
        let written = paths(&code);
        // Names brought in by `use` that are modules, for paths written through them.
        let mut aliases = BTreeMap::new();
        for path in &written {
            if let Some(target) = resolve(path, module, &children, &BTreeMap::new(), all)
                && target.last() == path.last()
                && let Some(name) = path.last()
            {
                aliases.insert(name.clone(), target);
            }
        }
        let mut uses = BTreeSet::new();
        for path in &written {
            if path.first().is_some_and(|first| first == "mod") {
                continue;
            }
            if let Some(target) = resolve(path, module, &children, &aliases, all)
                && &target != module
            {
                uses.insert(target);
            }
        }
        graph.insert(module.clone(), uses);
    }
    graph
}

/// The strongly connected components with more than one module (Tarjan).
fn cycles(graph: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    struct Walk<'g> {
        graph: &'g BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<&'g Module, usize>,
        low: BTreeMap<&'g Module, usize>,
        stack: Vec<&'g Module>,
        on_stack: BTreeSet<&'g Module>,
        found: Vec<Vec<Module>>,
    }
    impl<'g> Walk<'g> {
        fn visit(&mut self, node: &'g Module) {
            let next = self.index.len();
            self.index.insert(node, next);
            self.low.insert(node, next);
            self.stack.push(node);
            self.on_stack.insert(node);
            for target in &self.graph[node] {
                if !self.index.contains_key(target) {
                    self.visit(target);
                    let low = self.low[node].min(self.low[target]);
                    self.low.insert(node, low);
                } else if self.on_stack.contains(target) {
                    let low = self.low[node].min(self.index[target]);
                    self.low.insert(node, low);
                }
            }
            if self.low[node] == self.index[node] {
                let mut component = Vec::new();
                while let Some(member) = self.stack.pop() {
                    self.on_stack.remove(member);
                    component.push(member.clone());
                    if member == node {
                        break;
                    }
                }
                if component.len() > 1 {
                    self.found.push(component);
                }
            }
        }
    }
    let mut walk = Walk {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for node in graph.keys() {
        if !walk.index.contains_key(node) {
            walk.visit(node);
        }
    }
    walk.found
}

fn name(module: &Module) -> String {
    if module.is_empty() {
        "crate".to_owned()
    } else {
        module.join("::")
    }
}

#[test]
fn the_data_planes_modules_have_no_import_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let all = modules(&src);
    let graph = dependencies(&all);
    let found = cycles(&graph);
    let described: Vec<String> = found
        .iter()
        .map(|component| {
            let members: BTreeSet<&Module> = component.iter().collect();
            let edges: Vec<String> = component
                .iter()
                .flat_map(|from| {
                    graph[from]
                        .iter()
                        .filter(|to| members.contains(to))
                        .map(move |to| format!("{} -> {}", name(from), name(to)))
                })
                .collect();
            edges.join(", ")
        })
        .collect();
    assert!(
        found.is_empty(),
        "import cycles between data-plane modules:\n{}",
        described.join("\n")
    );
}

#[test]
fn the_module_graph_sees_imports() {
    // The reader must see the kinds of reference the crate uses, or the test above could
    // pass on a crate full of cycles.
    let all: BTreeMap<Module, PathBuf> = [
        vec![],
        vec!["a".to_owned()],
        vec!["a".to_owned(), "b".to_owned()],
        vec!["c".to_owned()],
    ]
    .into_iter()
    .map(|module| (module, PathBuf::new()))
    .collect();
    let code = code_of(
        "use crate::a::{self, b::Thing}; // crate::c::x\nfn f() { let s = \"crate::c\"; super::super::c::go(); }\n#[cfg(test)]\nmod tests { use crate::c; }",
    );
    let written = paths(&code);
    let current = vec!["a".to_owned(), "b".to_owned()];
    let targets: BTreeSet<Module> = written
        .iter()
        .filter_map(|path| resolve(path, &current, &BTreeSet::new(), &BTreeMap::new(), &all))
        .collect();
    assert!(targets.contains(&vec!["a".to_owned()]));
    assert!(targets.contains(&vec!["a".to_owned(), "b".to_owned()]));
    assert!(targets.contains(&vec!["c".to_owned()]), "{written:?}");
    assert_eq!(targets.len(), 3, "comments, strings and tests are not code");
    let graph: BTreeMap<Module, BTreeSet<Module>> = [
        (vec!["x".to_owned()], [vec!["y".to_owned()]].into()),
        (vec!["y".to_owned()], [vec!["x".to_owned()]].into()),
        (vec!["z".to_owned()], [vec!["x".to_owned()]].into()),
    ]
    .into_iter()
    .collect();
    assert_eq!(cycles(&graph).len(), 1);
}

#[test]
fn only_the_control_client_reads_grpc_codes() {
    // Control-plane errors are decoded once, in `control/errors.rs`, into what they mean for
    // the answer; everything else decides on those meanings.
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let offenders: Vec<String> = modules(&src)
        .into_iter()
        .filter(|(module, _)| module.first().is_none_or(|first| first != "control"))
        .filter(|(_, file)| {
            let code = code_of(&std::fs::read_to_string(file).expect("read source"));
            code.contains("tonic::Code")
                || code.match_indices("Code::").any(|(at, _)| {
                    !code[..at].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
                })
        })
        .map(|(module, _)| name(&module))
        .collect();
    assert!(
        offenders.is_empty(),
        "gRPC codes read outside control/: {offenders:?}"
    );
}

/// The parameters of every function in `code`, by function name (`self` not counted).
fn parameter_counts(code: &str) -> Vec<(String, usize)> {
    let chars: Vec<char> = code.chars().collect();
    let mut found = Vec::new();
    let mut at = 0;
    while let Some(offset) = code[at..].find("fn ") {
        let start = at + offset;
        at = start + 3;
        if start > 0 && is_ident(chars[start - 1]) {
            continue;
        }
        let name: String = code[at..].chars().take_while(|c| is_ident(*c)).collect();
        let Some(open) = code[at..].find('(').map(|i| at + i) else {
            break;
        };
        if name.is_empty() || code[at + name.len()..open].contains(['{', ';']) {
            continue;
        }
        let (mut depth, mut count, mut seen, mut index) = (0usize, 0usize, false, open + 1);
        let mut current = String::new();
        while index < chars.len() {
            let c = chars[index];
            match c {
                '(' | '[' | '<' | '{' => depth += 1,
                ')' | ']' | '>' | '}' if depth > 0 => depth -= 1,
                ')' => break,
                ',' if depth == 0 => {
                    if !current.trim().is_empty() && !current.contains("self") {
                        count += 1;
                    }
                    current.clear();
                    seen = false;
                    index += 1;
                    continue;
                }
                _ => {}
            }
            current.push(c);
            seen = true;
            index += 1;
        }
        if seen && !current.trim().is_empty() && !current.contains("self") {
            count += 1;
        }
        found.push((name, count));
        at = index;
    }
    found
}

#[test]
fn no_data_plane_function_takes_more_than_five_parameters() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut over = Vec::new();
    for (module, file) in modules(&src) {
        let code = code_of(&std::fs::read_to_string(&file).expect("read source"));
        for (function, count) in parameter_counts(&code) {
            if count > 5 {
                over.push(format!("{}::{function} ({count})", name(&module)));
            }
        }
    }
    assert!(over.is_empty(), "functions over five parameters: {over:?}");
    let sample = parameter_counts("fn f(a: A, b: Vec<(B, C)>) {} fn g(&self, x: X) {}");
    assert_eq!(sample, [("f".to_owned(), 2), ("g".to_owned(), 1)]);
}

#[test]
fn no_source_file_is_over_about_600_lines_before_its_tests() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut over = Vec::new();
    for crate_src in [
        "data-plane/src",
        "control-plane/src",
        "proto/src",
        "proto/runtime/src",
    ] {
        for file in modules(&root.join(crate_src)).into_values() {
            let text = std::fs::read_to_string(&file).expect("read source");
            let before_tests = text.split("#[cfg(test)]").next().unwrap_or_default();
            let lines = before_tests.lines().count();
            if lines > 620 {
                over.push(format!("{} ({lines})", file.display()));
            }
        }
    }
    assert!(
        over.is_empty(),
        "source files over about 600 lines: {over:?}"
    );
}
