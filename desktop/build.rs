//! Lists every catalogue under `i18n/<language>/*.ftl` for `src/i18n.rs`, which embeds
//! them: a view's catalogue added beside the others is loaded without being named in code.

use std::fmt::Write as _;
use std::path::Path;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("i18n");
    println!("cargo:rerun-if-changed={}", root.display());
    let mut listed = String::from("&[\n");
    for language in ["fr", "en"] {
        let dir = root.join(language);
        println!("cargo:rerun-if-changed={}", dir.display());
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
            .map(|entry| {
                entry
                    .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                    .path()
            })
            .filter(|path| path.extension().is_some_and(|ext| ext == "ftl"))
            .collect();
        files.sort();
        for file in files {
            println!("cargo:rerun-if-changed={}", file.display());
            let name = file.file_stem().unwrap_or_default().to_string_lossy();
            let _ = writeln!(
                listed,
                "    ({language:?}, {name:?}, include_str!({:?})),",
                file.display().to_string()
            );
        }
    }
    listed.push(']');
    let out =
        Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("catalogues.rs");
    std::fs::write(&out, listed).unwrap_or_else(|e| panic!("cannot write {}: {e}", out.display()));
}
