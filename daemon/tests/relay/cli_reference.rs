//! `docs/reference/cli.md` and the man pages in `docs/man/` are generated from the real
//! command-line definition; this test fails when they are stale. Regenerate them with
//! `RELAIS_BLESS=1 cargo test -p relaisd --test relay cli_reference`.

use std::path::{Path, PathBuf};

fn docs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs")
}

/// Every command's full help, depth first, under a heading with its whole path.
fn render_markdown(command: &mut clap::Command, path: &str, out: &mut String) {
    let path = if path.is_empty() {
        command.get_name().to_owned()
    } else {
        format!("{path} {}", command.get_name())
    };
    let help = command.render_long_help().to_string();
    out.push_str(&format!(
        "## `{path}`\n\n```text\n{}\n```\n\n",
        help.trim_end()
    ));
    let mut subcommands: Vec<clap::Command> = command
        .get_subcommands()
        .filter(|c| c.get_name() != "help")
        .cloned()
        .collect();
    for sub in &mut subcommands {
        render_markdown(sub, &path, out);
    }
}

fn man_pages(command: &clap::Command, prefix: &str, out: &mut Vec<(String, Vec<u8>)>) {
    let name = if prefix.is_empty() {
        command.get_name().to_owned()
    } else {
        format!("{prefix}-{}", command.get_name())
    };
    let mut page = Vec::new();
    clap_mangen::Man::new(command.clone().name(name.clone()))
        .render(&mut page)
        .expect("render man page");
    out.push((format!("{name}.1"), page));
    for sub in command.get_subcommands().filter(|c| c.get_name() != "help") {
        man_pages(sub, &name, out);
    }
}

#[test]
fn cli_reference_and_man_pages_are_current() {
    let mut command = relaisd::cli::command();
    command.build();
    let mut markdown = String::from(
        "# relaisd command line\n\n\
         Generated from the program's own definition by `daemon/tests/relay/cli_reference.rs`; do not edit by hand.\n\
         Exit codes: 0 success, 1 the daemon refused the request, 64 bad command line, 65 bad input data, \
         69 the daemon cannot be reached, 70 internal error, 78 bad configuration.\n\n",
    );
    render_markdown(&mut command, "", &mut markdown);
    let mut pages = Vec::new();
    man_pages(&command, "", &mut pages);

    let md_path = docs().join("reference/cli.md");
    let man_dir = docs().join("man");
    if std::env::var_os("RELAIS_BLESS").is_some() {
        std::fs::write(&md_path, &markdown).expect("write cli.md");
        std::fs::create_dir_all(&man_dir).expect("man dir");
        for (name, page) in &pages {
            std::fs::write(man_dir.join(name), page).expect("write man page");
        }
    }
    let current = std::fs::read_to_string(&md_path).unwrap_or_default();
    assert!(
        current == markdown,
        "docs/reference/cli.md is stale; run RELAIS_BLESS=1 cargo test -p relaisd --test relay cli_reference"
    );
    for (name, page) in &pages {
        let current = std::fs::read(man_dir.join(name)).unwrap_or_default();
        assert!(
            &current == page,
            "docs/man/{name} is stale; run RELAIS_BLESS=1 cargo test -p relaisd --test relay cli_reference"
        );
    }
}
