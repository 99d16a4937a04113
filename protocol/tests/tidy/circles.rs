//! The import-circle check: no crate's modules import each other in a circle.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Write as _};
use std::fs;
use std::path::Path;

use super::lexer::{Kind, Token, closing, ident_at, is_ident, is_punct, tokenize};
use super::{SKIPPED_DIRS, read, rust_files, workspace_root};

/// How many circles one scope lists before it only counts them: a tangle of many modules has
/// many circles, and the first ones already name the imports to undo.
const CIRCLES_LISTED_MAX: usize = 40;

/// No crate's modules import each other in a circle.
///
/// The rule, for every crate `X` with `X/Cargo.toml` and `X/src` at the workspace root:
///
/// - A module depends on another when its code names it by a `crate::` or `super::` path,
///   in a `use` or inline (`crate::store::Store::open(..)`). A path points at the deepest
///   module that has a file: `crate::store::writer::Queue` is `store/writer/mod.rs` or
///   `store/writer.rs` when that exists, else `store/mod.rs` or `store.rs`.
/// - Comments, strings and test code do not count: `#[cfg(test)]` items such as
///   `mod tests { .. }`, and every file of a module named `tests` or declared under
///   `#[cfg(test)]`. Test code may import anything.
/// - A module may depend on its own submodules and on its parents freely: a `mod.rs` that
///   re-exports its children while they use its shared items (`super::Config`) is the usual
///   shape of a directory module, not a circle.
/// - Between siblings it may not. Each dependency is read at the level where the two modules
///   part: from `store/writer/sql.rs` to `hub.rs`, it is `store/ -> hub.rs` among the crate's
///   top-level modules; from `store/writer/sql.rs` to `store/audit.rs`, it is
///   `store/writer/ -> store/audit.rs` among the children of `store`. A circle among the
///   children of any one module fails. `x/` stands for module `x` with all its submodules.
/// - `src/main.rs` beside `src/lib.rs`, and each `src/bin/*` program, is a crate of its own.
///
/// Each circle is listed with the paths that tie each step, so the one to undo can be chosen.
/// Paths that reach a module through a re-export are seen at the module that re-exports.
#[test]
fn no_import_circles_within_a_crate() {
    let files = rust_files();
    let crates = crate_dirs();
    let mut failures = String::new();
    for name in &crates {
        let src = Path::new(name).join("src");
        let sources: Vec<(String, String)> = files
            .iter()
            .filter_map(|file| {
                let inside = file.relative.strip_prefix(&src).ok()?;
                Some((inside.to_string_lossy().into_owned(), read(&file.absolute)))
            })
            .collect();
        for circle in circles_in_crate(&sources) {
            let _ = writeln!(failures, "  {name}/src: {circle}");
        }
    }
    assert!(
        failures.is_empty(),
        "import circles between modules (undo one import of each):\n{failures}"
    );
}

/// The workspace's crates: every top-level directory with a `Cargo.toml` and a `src/`,
/// sorted, so a crate added beside the others is checked without being listed here.
fn crate_dirs() -> Vec<String> {
    let root = workspace_root();
    let entries =
        fs::read_dir(&root).unwrap_or_else(|e| panic!("cannot list {}: {e}", root.display()));
    let mut crates: Vec<String> = entries
        .map(|entry| entry.unwrap_or_else(|e| panic!("cannot list {}: {e}", root.display())))
        .filter(|entry| entry.path().join("Cargo.toml").is_file())
        .filter(|entry| entry.path().join("src").is_dir())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| !SKIPPED_DIRS.contains(&name.as_str()))
        .collect();
    crates.sort();
    assert!(
        !crates.is_empty(),
        "no crates found under {}",
        root.display()
    );
    crates
}

/// One circle between sibling modules, and the paths that tie each step of it.
#[derive(Debug)]
struct Circle {
    /// `a.rs -> b/ -> a.rs`, with paths relative to the crate's `src/`.
    path: String,
    /// One line per step: `a.rs -> b/: `crate::b::Thing` (a.rs:3)`.
    ties: Vec<String>,
}

impl fmt::Display for Circle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.path)?;
        for tie in &self.ties {
            writeln!(f, "      {tie}")?;
        }
        Ok(())
    }
}

/// A source file of one crate target, and the module its path makes it.
struct ModuleSource<'a> {
    /// The path relative to the crate's `src/`, for messages.
    path: &'a str,
    /// `["store", "writer"]` for `store/writer/mod.rs`; empty for the crate root.
    module: Vec<String>,
    text: &'a str,
}

/// A module named by a `crate::` or `super::` path, where and as it was written.
struct Reference {
    written: String,
    /// The path from the crate root, with `super` and `self` resolved.
    absolute: Vec<String>,
    line: usize,
}

/// One use of a sibling module, for messages.
struct Tie {
    written: String,
    path: String,
    line: usize,
}

/// Two sibling modules (children of one scope): the one that names the other, and the other.
type Step = (Vec<String>, Vec<String>);

/// The circles of every target of one crate, from its files as (path relative to `src/`,
/// text) pairs. The check and its own tests both enter here.
fn circles_in_crate(sources: &[(String, String)]) -> Vec<Circle> {
    let has_library = sources.iter().any(|(path, _)| path == "lib.rs");
    let mut targets: BTreeMap<String, Vec<ModuleSource<'_>>> = BTreeMap::new();
    for (path, text) in sources {
        let parts: Vec<String> = path.split('/').map(str::to_owned).collect();
        let (target, module) = match parts.as_slice() {
            [bin, program, rest @ ..] if bin == "bin" && !rest.is_empty() => {
                (format!("bin/{program}"), module_of(rest))
            }
            [bin, program] if bin == "bin" => (format!("bin/{program}"), Vec::new()),
            [main] if main == "main.rs" && has_library => ("main.rs".to_owned(), Vec::new()),
            _ => (String::new(), module_of(&parts)),
        };
        targets
            .entry(target)
            .or_default()
            .push(ModuleSource { path, module, text });
    }
    targets
        .values()
        .flat_map(|target| circles_in_target(target))
        .collect()
}

/// The module a file's path makes it, from the path's parts below the target's root.
fn module_of(parts: &[String]) -> Vec<String> {
    let Some((file, dirs)) = parts.split_last() else {
        return Vec::new();
    };
    let mut module = dirs.to_vec();
    match file.strip_suffix(".rs") {
        Some("mod") => {}
        Some("lib" | "main") if dirs.is_empty() => {}
        Some(stem) => module.push(stem.to_owned()),
        None => module.push(file.clone()),
    }
    module
}

fn circles_in_target(sources: &[ModuleSource<'_>]) -> Vec<Circle> {
    let scans: Vec<(&ModuleSource<'_>, FileScan)> = sources
        .iter()
        .map(|source| (source, scan(&tokenize(source.text), &source.module)))
        .collect();
    let test_modules: Vec<Vec<String>> = scans
        .iter()
        .flat_map(|(_, file_scan)| file_scan.test_modules.iter().cloned())
        .collect();
    let is_test = |module: &Vec<String>| {
        module.iter().any(|segment| segment == "tests")
            || test_modules.iter().any(|test| module.starts_with(test))
    };
    let scans: Vec<_> = scans
        .into_iter()
        .filter(|(s, _)| !is_test(&s.module))
        .collect();
    let files: BTreeMap<Vec<String>, &str> = scans
        .iter()
        .map(|(s, _)| (s.module.clone(), s.path))
        .collect();
    let mut scopes: BTreeMap<Vec<String>, BTreeMap<Step, Vec<Tie>>> = BTreeMap::new();
    for (source, file_scan) in &scans {
        for reference in &file_scan.references {
            let target = deepest_file(&files, &reference.absolute);
            let Some((scope, step)) = sibling_step(&source.module, &target) else {
                continue;
            };
            scopes
                .entry(scope)
                .or_default()
                .entry(step)
                .or_default()
                .push(Tie {
                    written: reference.written.clone(),
                    path: source.path.to_owned(),
                    line: reference.line,
                });
        }
    }
    scopes
        .values()
        .flat_map(|steps| circles_in_scope(&files, steps))
        .collect()
}

/// The deepest module along `path` that has a file: the module a path depends on.
fn deepest_file(files: &BTreeMap<Vec<String>, &str>, path: &[String]) -> Vec<String> {
    (0..=path.len())
        .rev()
        .map(|length| &path[..length])
        .find(|module| files.contains_key(*module))
        .unwrap_or_default()
        .to_vec()
}

/// Where a dependency from module `from` to module `to` counts: the module where their paths
/// part, and the two children of it that hold them. `None` when one holds the other, since a
/// module may use its parents and its children.
fn sibling_step(from: &[String], to: &[String]) -> Option<(Vec<String>, Step)> {
    let shared = from.iter().zip(to).take_while(|(a, b)| a == b).count();
    if shared == from.len() || shared == to.len() {
        return None;
    }
    let step = (from[..=shared].to_vec(), to[..=shared].to_vec());
    Some((from[..shared].to_vec(), step))
}

/// The circles among the children of one module, each listed once, from its first child in
/// sorted order.
fn circles_in_scope(
    files: &BTreeMap<Vec<String>, &str>,
    steps: &BTreeMap<Step, Vec<Tie>>,
) -> Vec<Circle> {
    let mut next: BTreeMap<&Vec<String>, BTreeSet<&Vec<String>>> = BTreeMap::new();
    for (from, to) in steps.keys() {
        next.entry(from).or_default().insert(to);
    }
    let mut found = Vec::new();
    let mut unlisted = 0;
    for start in next.keys() {
        let mut walk = vec![*start];
        walk_circles(&next, &mut walk, &mut |circle| {
            if found.len() < CIRCLES_LISTED_MAX {
                found.push(describe_circle(files, steps, circle));
            } else {
                unlisted += 1;
            }
        });
    }
    if unlisted > 0 {
        found.push(Circle {
            path: format!("and {unlisted} more circles among the same modules"),
            ties: Vec::new(),
        });
    }
    found
}

/// Depth-first search for the simple circles through `walk[0]` whose other modules all sort
/// after it, so that each circle is found once, from its first module.
fn walk_circles<'a>(
    next: &BTreeMap<&'a Vec<String>, BTreeSet<&'a Vec<String>>>,
    walk: &mut Vec<&'a Vec<String>>,
    found: &mut dyn FnMut(&[&Vec<String>]),
) {
    let (start, last) = (walk[0], walk[walk.len() - 1]);
    for &module in next.get(last).into_iter().flatten() {
        if module == start {
            found(walk);
        } else if module > start && !walk.contains(&module) {
            walk.push(module);
            walk_circles(next, walk, found);
            walk.pop();
        }
    }
}

fn describe_circle(
    files: &BTreeMap<Vec<String>, &str>,
    steps: &BTreeMap<Step, Vec<Tie>>,
    circle: &[&Vec<String>],
) -> Circle {
    let names: Vec<String> = circle
        .iter()
        .map(|module| module_label(files, module))
        .collect();
    let mut ties = Vec::new();
    for (index, from) in circle.iter().enumerate() {
        let to = circle[(index + 1) % circle.len()];
        let mut uses: Vec<&Tie> = steps[&((*from).clone(), to.clone())].iter().collect();
        uses.sort_by(|a, b| (&a.path, a.line).cmp(&(&b.path, b.line)));
        let mut seen = BTreeSet::new();
        uses.retain(|tie| seen.insert((&tie.written, &tie.path)));
        let shown: Vec<String> = uses
            .iter()
            .take(3)
            .map(|tie| format!("`{}` ({}:{})", tie.written, tie.path, tie.line))
            .collect();
        let more = match uses.len().saturating_sub(shown.len()) {
            0 => String::new(),
            more => format!(" and {more} more"),
        };
        let to_name = &names[(index + 1) % names.len()];
        ties.push(format!(
            "{} -> {to_name}: {}{more}",
            names[index],
            shown.join(", ")
        ));
    }
    Circle {
        path: format!("{} -> {}", names.join(" -> "), names[0]),
        ties,
    }
}

/// A module's file, or `dir/` when the module has submodules, since then it stands for all
/// of them.
fn module_label(files: &BTreeMap<Vec<String>, &str>, module: &[String]) -> String {
    let has_submodules = files
        .keys()
        .any(|other| other.len() > module.len() && other.starts_with(module));
    match files.get(module) {
        Some(path) if !has_submodules => (*path).to_owned(),
        Some(path) => {
            let stem = path.trim_end_matches(".rs").trim_end_matches("/mod");
            format!("{stem}/")
        }
        None => format!("{}/", module.join("/")),
    }
}

/// What one file's code names, outside its test code.
#[derive(Default)]
struct FileScan {
    references: Vec<Reference>,
    /// Modules declared `#[cfg(test)] mod name;`, whose files are test code.
    test_modules: Vec<Vec<String>>,
}

/// Collects the `crate::` and `super::` paths of a file's code: in `use` trees, expanded
/// (`use crate::{a::B, c::D}` names `crate::a::B` and `crate::c::D`), and inline. Inline
/// `mod name { .. }` blocks are followed, so that `super::` inside them resolves right; items
/// under `#[cfg(test)]` are skipped.
fn scan(tokens: &[Token], module: &[String]) -> FileScan {
    let mut found = FileScan::default();
    // Inline modules around the current token, each with the brace depth inside it.
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut index = 0;
    while index < tokens.len() {
        if let Some(end) = test_attribute_end(tokens, index) {
            let (next, declared) = skip_item(tokens, end);
            if let Some(name) = declared {
                let mut test_module = current_module(module, &inline);
                test_module.push(name);
                found.test_modules.push(test_module);
            }
            index = next;
            continue;
        }
        let mut paths = Vec::new();
        match &tokens[index].kind {
            Kind::Punct('{') => depth += 1,
            Kind::Punct('}') => {
                if inline.last().is_some_and(|(_, inside)| *inside == depth) {
                    inline.pop();
                }
                depth = depth.saturating_sub(1);
            }
            Kind::Ident(word) if word == "mod" && is_punct(tokens, index + 2, '{') => {
                if let Some(name) = ident_at(tokens, index + 1) {
                    inline.push((name.to_owned(), depth + 1));
                }
            }
            Kind::Ident(word) if word == "use" && starts_use_tree(tokens, index + 1) => {
                index = use_tree(tokens, index + 1, Vec::new(), &mut paths) - 1;
            }
            Kind::Ident(word)
                if (word == "crate" || word == "super")
                    && matches!(tokens.get(index + 1), Some(t) if t.kind == Kind::PathSeparator)
                    && !(index > 0 && is_punct(tokens, index - 1, '$')) =>
            {
                index = inline_path(tokens, index, &mut paths) - 1;
            }
            _ => {}
        }
        let current = current_module(module, &inline);
        found
            .references
            .extend(paths.into_iter().filter_map(|(segments, line)| {
                Some(Reference {
                    absolute: absolute_path(&current, &segments)?,
                    written: segments.join("::"),
                    line,
                })
            }));
        index += 1;
    }
    found
}

/// The module at a point of a file: the file's module, then the inline modules around it.
fn current_module(module: &[String], inline: &[(String, usize)]) -> Vec<String> {
    let names = inline.iter().map(|(name, _)| name.clone());
    module.iter().cloned().chain(names).collect()
}

/// The index after `#[cfg(test)]` or `#[cfg(all(test, ..))]` at `index`, if one is there.
fn test_attribute_end(tokens: &[Token], index: usize) -> Option<usize> {
    let opens = is_punct(tokens, index, '#')
        && is_punct(tokens, index + 1, '[')
        && is_ident(tokens, index + 2, "cfg")
        && is_punct(tokens, index + 3, '(');
    let test = (is_ident(tokens, index + 4, "test") && is_punct(tokens, index + 5, ')'))
        || (is_ident(tokens, index + 4, "all")
            && is_punct(tokens, index + 5, '(')
            && is_ident(tokens, index + 6, "test"));
    if !(opens && test) {
        return None;
    }
    closing(tokens, index + 1).map(|close| close + 1)
}

/// Skips the item after a test-only attribute, and its other attributes: up to its `;`, the
/// end of its block, or the bracket that closes what holds it. Returns the index after it
/// and, for `mod name;`, the name of the module it declares.
fn skip_item(tokens: &[Token], mut index: usize) -> (usize, Option<String>) {
    let mut declared = None;
    let mut depth = 0usize;
    while let Some(token) = tokens.get(index) {
        match token.kind {
            Kind::Punct('{' | '(' | '[') => depth += 1,
            Kind::Punct(close @ ('}' | ')' | ']')) => {
                let Some(inside) = depth.checked_sub(1) else {
                    return (index, declared);
                };
                depth = inside;
                // An attribute's `]` ends the attribute, not the item.
                if depth == 0 && close == '}' {
                    return (index + 1, declared);
                }
            }
            Kind::Punct(';') if depth == 0 => return (index + 1, declared),
            Kind::Ident(ref word)
                if word == "mod" && depth == 0 && is_punct(tokens, index + 2, ';') =>
            {
                declared = ident_at(tokens, index + 1).map(str::to_owned);
            }
            _ => {}
        }
        index += 1;
    }
    (index, declared)
}

/// Whether a use tree starts at `index`; `use<'a>` in `impl Trait + use<'a>` is not one.
fn starts_use_tree(tokens: &[Token], index: usize) -> bool {
    matches!(
        tokens.get(index).map(|token| &token.kind),
        Some(Kind::Ident(_) | Kind::PathSeparator | Kind::Punct('{'))
    )
}

/// Reads the use tree at `index` below `prefix`, adding each path it names with its line to
/// `paths`, and returns the index after it.
fn use_tree(
    tokens: &[Token],
    mut index: usize,
    mut prefix: Vec<String>,
    paths: &mut Vec<(Vec<String>, usize)>,
) -> usize {
    let line = tokens.get(index).map_or(0, |token| token.line);
    while let Some(token) = tokens.get(index) {
        match &token.kind {
            Kind::PathSeparator => index += 1,
            Kind::Ident(name) => {
                prefix.push(name.clone());
                index += 1;
                if !matches!(tokens.get(index), Some(t) if t.kind == Kind::PathSeparator) {
                    break;
                }
            }
            Kind::Punct('*') => {
                index += 1;
                break;
            }
            Kind::Punct('{') => return use_group(tokens, index + 1, &prefix, paths),
            _ => break,
        }
    }
    if is_ident(tokens, index, "as") {
        index += 2;
    }
    // `use a::{self, B}` names `a` itself.
    if prefix.last().is_some_and(|last| last == "self") {
        prefix.pop();
    }
    if !prefix.is_empty() {
        paths.push((prefix, line));
    }
    index
}

/// Reads the trees of a `{ .. }` group after its `{`, and returns the index after its `}`.
fn use_group(
    tokens: &[Token],
    mut index: usize,
    prefix: &[String],
    paths: &mut Vec<(Vec<String>, usize)>,
) -> usize {
    while let Some(token) = tokens.get(index) {
        match token.kind {
            Kind::Punct('}') => return index + 1,
            Kind::Punct(',') => index += 1,
            _ => {
                let after = use_tree(tokens, index, prefix.to_vec(), paths);
                // Something that is not a use tree is stepped over rather than looped on.
                index = after.max(index + 1);
            }
        }
    }
    index
}

/// Reads an inline path such as `crate::store::Store::open` at `index`, adds it to `paths`,
/// and returns the index after it.
fn inline_path(tokens: &[Token], index: usize, paths: &mut Vec<(Vec<String>, usize)>) -> usize {
    let mut segments = Vec::new();
    let mut at = index;
    while let Some(segment) = ident_at(tokens, at) {
        segments.push(segment.to_owned());
        if !matches!(tokens.get(at + 1), Some(t) if t.kind == Kind::PathSeparator) {
            at += 1;
            break;
        }
        at += 2;
    }
    paths.push((segments, tokens[index].line));
    at
}

/// The path from the crate root that `segments`, written in module `current`, names; `None`
/// for paths into other crates or local names, which cannot reach a sibling module.
fn absolute_path(current: &[String], segments: &[String]) -> Option<Vec<String>> {
    let (first, rest) = segments.split_first()?;
    let mut path = match first.as_str() {
        "crate" => Vec::new(),
        "self" => current.to_vec(),
        "super" => current.split_last()?.1.to_vec(),
        _ => return None,
    };
    for segment in rest {
        match segment.as_str() {
            "super" => {
                path.pop()?;
            }
            "self" => {}
            name => path.push(name.to_owned()),
        }
    }
    Some(path)
}

// The checks' own tests, on synthetic sources.

fn crate_sources(files: &[(&str, &str)]) -> Vec<(String, String)> {
    files
        .iter()
        .map(|(path, text)| ((*path).to_owned(), (*text).to_owned()))
        .collect()
}

#[test]
fn import_circle_between_files_is_found() {
    let sources = crate_sources(&[
        (
            "lib.rs",
            "//! Root.\nmod a;\nmod b;\npub use crate::a::Alpha;\n",
        ),
        (
            "a.rs",
            "//! A.\nuse crate::b::{Beta, self};\npub struct Alpha;\n",
        ),
        (
            "b.rs",
            "//! B.\npub struct Beta;\nfn f() { let _ = crate::a::Alpha; }\n",
        ),
    ]);
    let circles = circles_in_crate(&sources);
    assert_eq!(circles.len(), 1, "{circles:?}");
    assert_eq!(circles[0].path, "a.rs -> b.rs -> a.rs");
    assert_eq!(
        circles[0].ties,
        [
            "a.rs -> b.rs: `crate::b::Beta` (a.rs:2), `crate::b` (a.rs:2)",
            "b.rs -> a.rs: `crate::a::Alpha` (b.rs:3)",
        ]
    );
}

/// Siblings inside a directory module form a circle of their own, and a directory module
/// counts as one node among the crate's top-level modules.
#[test]
fn import_circles_inside_and_between_directory_modules_are_found() {
    let sources = crate_sources(&[
        ("lib.rs", "//! Root.\nmod hub;\nmod store;\n"),
        ("hub.rs", "//! Hub.\nuse crate::store::writer::Queue;\n"),
        ("store/mod.rs", "//! Store.\nmod audit;\nmod writer;\n"),
        (
            "store/audit.rs",
            "//! Audit.\nuse super::writer::sql::Row;\n",
        ),
        (
            "store/writer/mod.rs",
            "//! Writer.\nmod sql;\npub struct Queue;\n",
        ),
        (
            "store/writer/sql.rs",
            "//! Sql.\nuse crate::hub::Push;\nuse super::super::audit::Log;\n",
        ),
    ]);
    let paths: Vec<String> = circles_in_crate(&sources)
        .into_iter()
        .map(|c| c.path)
        .collect();
    assert_eq!(
        paths,
        [
            "hub.rs -> store/ -> hub.rs",
            "store/audit.rs -> store/writer/ -> store/audit.rs"
        ]
    );
}

/// Parents and children may use each other; comments, strings, test code and other crates'
/// paths are not dependencies.
#[test]
fn code_without_import_circles_passes() {
    let sources = crate_sources(&[
        (
            "lib.rs",
            "//! Root.\nmod a;\nmod b;\nmod c;\npub use crate::a::Alpha;\n",
        ),
        ("a.rs", "//! A.\nuse crate::b::Beta;\npub struct Alpha;\n"),
        (
            "b.rs",
            "//! B.\nuse crate::c::{Gamma, gamma::Deep};\npub struct Beta;\n",
        ),
        (
            "c/mod.rs",
            "//! C.\nmod gamma;\npub use gamma::Deep;\npub struct Gamma(Deep);\n",
        ),
        (
            "c/gamma.rs",
            "//! Deep.\nuse super::Gamma;\nuse relais_core::a::Alpha;\n// crate::a::Alpha\n\
             const NOTE: &str = \"crate::a::Alpha\";\npub struct Deep;\n\
             #[cfg(test)]\nmod tests {\n    use crate::a::Alpha;\n}\n\
             mod inner {\n    use super::Deep;\n}\n",
        ),
        ("c/tests.rs", "//! Tests.\nuse crate::a::Alpha;\n"),
        ("main.rs", "//! Program.\nuse crate::run;\nfn run() {}\n"),
        (
            "bin/tool.rs",
            "//! Tool.\nmod helper { pub fn f() { super::g() } }\nfn g() {}\n",
        ),
    ]);
    let circles = circles_in_crate(&sources);
    assert!(circles.is_empty(), "{circles:?}");
}
