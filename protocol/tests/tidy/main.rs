//! Tidy checks over the whole workspace's Rust sources, run by `cargo test -p relais-protocol`.
//!
//! They enforce the house rules that a compiler cannot: every file says what it is for in
//! its first line, no test is hidden or unfinished, no function grows past what one reader
//! can hold, no crate's modules import each other in a circle, and the core reads no clock. Each check lists every
//! offending place, so one run shows all the work to do.
//!
//! Files have no length rule: a file is split where its meaning splits, never at a number.
//!
//! The file checks are here; the function-length check and the lexer that both token-based
//! checks read Rust with are in `lexer.rs`, the import-circle check in `circles.rs`.

mod circles;
mod lexer;

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

/// Directories (relative to the workspace root) that hold generated or foreign code.
const SKIPPED_DIRS: &[&str] = &[
    "target",
    ".git",
    "protocol/fuzz/target",
    "relais-dev",
    // What image/build writes: the image and its bundle, vendored crates included.
    "image/out",
];

/// Markers of hidden or unfinished work. They are assembled with `concat!` so that this
/// file does not contain them literally and pass its own check.
const FORBIDDEN: &[&str] = &[
    concat!("#[", "ignore"),
    concat!("#[", "should_panic"),
    concat!("todo", "!("),
    concat!("unimplemented", "!("),
];

/// What the core's code (its tests aside) may not call: it takes the time from its caller,
/// so that its decisions can be tested with a clock the test moves. Assembled with
/// `concat!`, like `FORBIDDEN`.
const CLOCK_READS: &[&str] = &[
    concat!("Instant", "::now"),
    concat!("SystemTime", "::now"),
    concat!("now_ms", "()"),
];

#[test]
fn the_core_reads_no_clock() {
    let mut failures = String::new();
    for file in rust_files() {
        let Ok(inside) = file.relative.strip_prefix("core/src") else {
            continue;
        };
        if inside.components().any(|c| c.as_os_str() == "tests.rs") {
            continue;
        }
        let text = read(&file.absolute);
        // A file's tests come last, after its `#[cfg(test)]` module declaration.
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        for (number, line) in code.lines().enumerate() {
            if CLOCK_READS.iter().any(|read| line.contains(read)) {
                let _ = writeln!(
                    failures,
                    "  {}:{}: {}",
                    file.relative.display(),
                    number + 1,
                    line.trim()
                );
            }
        }
    }
    assert!(
        failures.is_empty(),
        "relais-core reads a clock; take the time as an argument instead:\n{failures}"
    );
}

#[test]
fn every_file_starts_with_a_module_doc_comment() {
    let mut failures = String::new();
    for file in rust_files() {
        let text = read(&file.absolute);
        // Leading blank lines are tolerated; attributes or code before the `//!` line are not.
        let first = text.lines().find(|line| !line.trim().is_empty());
        if !first.is_some_and(|line| line.starts_with("//!")) {
            let _ = writeln!(
                failures,
                "  {}: the first line must be a `//!` comment saying what the file is for",
                file.relative.display()
            );
        }
    }
    assert!(
        failures.is_empty(),
        "files without a module doc comment:\n{failures}"
    );
}

#[test]
fn no_hidden_or_unfinished_code() {
    let mut failures = String::new();
    for file in rust_files() {
        let text = read(&file.absolute);
        for (index, line) in text.lines().enumerate() {
            for needle in FORBIDDEN.iter().filter(|needle| line.contains(*needle)) {
                let _ = writeln!(
                    failures,
                    "  {}:{}: contains `{needle}`; fix or delete the test or code instead of hiding it",
                    file.relative.display(),
                    index + 1
                );
            }
        }
    }
    assert!(
        failures.is_empty(),
        "hidden or unfinished code (the house style forbids hiding a test or leaving a stub):\n{failures}"
    );
}

/// A Rust source file, with its path relative to the workspace root for messages.
struct SourceFile {
    absolute: PathBuf,
    relative: PathBuf,
}

/// The workspace root: this crate's parent directory.
fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    // A crate's manifest directory always has a parent: `protocol/` sits in the workspace.
    manifest
        .parent()
        .expect("the protocol crate lives inside the workspace")
        .to_path_buf()
}

/// Every `.rs` file under the workspace root, outside the skipped directories, sorted.
fn rust_files() -> Vec<SourceFile> {
    let root = workspace_root();
    let mut files = Vec::new();
    let mut pending = vec![root.clone()];
    while let Some(dir) = pending.pop() {
        let entries =
            fs::read_dir(&dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
        for entry in entries {
            let entry = entry.unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
            let absolute = entry.path();
            let relative = absolute
                .strip_prefix(&root)
                .unwrap_or(&absolute)
                .to_path_buf();
            // `file_type` does not follow symbolic links, so a link cannot make the walk loop.
            let kind = entry
                .file_type()
                .unwrap_or_else(|e| panic!("cannot stat {}: {e}", absolute.display()));
            if kind.is_dir() {
                if !SKIPPED_DIRS.iter().any(|skip| relative == Path::new(skip)) {
                    pending.push(absolute);
                }
            } else if kind.is_file() && absolute.extension().is_some_and(|ext| ext == "rs") {
                files.push(SourceFile { absolute, relative });
            }
        }
    }
    files.sort_by(|a, b| a.relative.cmp(&b.relative));
    assert!(
        !files.is_empty(),
        "no Rust files found under {}; is the workspace root right?",
        root.display()
    );
    files
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}
