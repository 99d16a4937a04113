//! The command lines' references and manual pages are generated from the programs
//! themselves: the command pages from the real command-line definitions with
//! `clap_mangen`, and `relaisd.toml(5)` from the configuration's doc comments and the
//! defaults of its code. relaisd's are `docs/reference/cli.md` and `docs/man/`, which its
//! package installs; the client's, `relais`, are `docs/reference/relais-cli.md` and
//! `client/man/`, which no package installs yet (there is no client package), and which
//! stay out of relaisd's. These tests fail when they are stale, when a page names a page
//! its program's pages do not hold, when a page cites a file of the repository, and when
//! the hand-written `docs/reference/config.md` drifts from the configuration.
//! Regenerate with `RELAIS_BLESS=1 cargo test -p relaisd --test relay cli_reference`.

mod client_pages;
mod config_page;
mod config_source;
mod process;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use clap_mangen::roff::{Inline, Roff, bold, roman};

use config_page::Defaults;
use config_source::Schema;
use process::Facts;

const BLESS: &str = "run RELAIS_BLESS=1 cargo test -p relaisd --test relay cli_reference";

/// What `roff` writes at the start of every document it renders, so that apostrophes come
/// out straight; one page needs it once.
const APOSTROPHE_PREAMBLE: &str = ".ie \\n(.g .ds Aq \\(aq\n.el .ds Aq '\n";

/// A program whose reference and pages are generated here.
struct Program {
    /// The Markdown reference, from the repository's root.
    markdown: &'static str,
    /// The directory of its pages, from the repository's root; nothing else is in it.
    man_dir: &'static str,
    /// Pages of other packages its pages may name.
    system_pages: &'static [&'static str],
    /// Its reference as generated now.
    render_markdown: fn() -> String,
    /// Its pages as generated now, by file name.
    render_pages: fn() -> Vec<(String, String)>,
}

const RELAISD: Program = Program {
    markdown: "docs/reference/cli.md",
    man_dir: "docs/man",
    // systemd's, present wherever the package can be installed (it depends on systemd).
    system_pages: &[
        "journalctl(1)",
        "systemctl(1)",
        "systemd-creds(1)",
        "systemd.exec(5)",
        "systemd.socket(5)",
    ],
    render_markdown: cli_markdown,
    render_pages: man_pages,
};

const RELAIS: Program = Program {
    markdown: "docs/reference/relais-cli.md",
    // Not under `docs/man/`, whose every page relaisd's package installs.
    man_dir: "client/man",
    system_pages: &[],
    render_markdown: client_pages::markdown,
    render_pages: client_pages::pages,
};

const PROGRAMS: [&Program; 2] = [&RELAISD, &RELAIS];

/// What a program's command pages say beyond clap's sections.
trait Manual {
    /// The page of the command at `path`: `relaisd-admin-user` for `["admin", "user"]`.
    fn page_of(&self, path: &[String]) -> String;
    /// Its SIGNALS, EXIT STATUS, ENVIRONMENT and FILES, those it has.
    fn sections(&self, command: &clap::Command, path: &[String]) -> Roff;
    /// The pages its SEE ALSO names, as `name(section)`.
    fn see_also(&self, command: &clap::Command, path: &[String]) -> Vec<String>;
}

#[test]
fn cli_reference_and_man_pages_are_current() {
    let bless = std::env::var_os("RELAIS_BLESS").is_some();
    let problems: Vec<String> = PROGRAMS
        .iter()
        .flat_map(|program| program.stale(bless))
        .collect();
    assert!(problems.is_empty(), "{}; {BLESS}", problems.join("\n"));
}

impl Program {
    /// What is stale of its reference and pages, after writing them when `bless`.
    fn stale(&self, bless: bool) -> Vec<String> {
        let markdown = (self.render_markdown)();
        let pages = (self.render_pages)();
        let md_path = relais_testkit::repository().join(self.markdown);
        let man_dir = relais_testkit::repository().join(self.man_dir);
        let unknown: Vec<PathBuf> = list(&man_dir)
            .into_iter()
            .filter(|path| !pages.iter().any(|(name, _)| path.ends_with(name)))
            .collect();
        if bless {
            std::fs::write(&md_path, &markdown).expect("write the reference");
            std::fs::create_dir_all(&man_dir).expect("man dir");
            for (name, page) in &pages {
                std::fs::write(man_dir.join(name), page).expect("write man page");
            }
            for path in &unknown {
                std::fs::remove_file(path).expect("remove a page no longer generated");
            }
        }
        let mut problems = Vec::new();
        if std::fs::read_to_string(&md_path).unwrap_or_default() != markdown {
            problems.push(format!("{} is stale", self.markdown));
        }
        for (name, page) in &pages {
            if std::fs::read_to_string(man_dir.join(name)).unwrap_or_default() != *page {
                problems.push(format!("{}/{name} is stale", self.man_dir));
            }
        }
        for path in unknown.iter().filter(|path| path.exists()) {
            problems.push(format!(
                "{} is no longer generated, and would be installed with the others",
                path.display()
            ));
        }
        problems
    }

    /// Its pages in the repository, as they are installed, by file name.
    fn shipped_pages(&self) -> Vec<(String, String)> {
        let dir = relais_testkit::repository().join(self.man_dir);
        let mut pages: Vec<(String, String)> = list(&dir)
            .into_iter()
            .map(|path| {
                let page = std::fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
                let name = path
                    .file_name()
                    .expect("a file")
                    .to_string_lossy()
                    .into_owned();
                (name, page)
            })
            .collect();
        pages.sort();
        pages
    }

    /// The pages generated now, then those of `shipped`, each named for messages.
    fn every_page(&self, shipped: Vec<(String, String)>) -> Vec<(String, String)> {
        let generated = (self.render_pages)()
            .into_iter()
            .map(|(file, page)| (format!("{file} as generated"), page));
        let shipped = shipped
            .into_iter()
            .map(|(file, page)| (format!("{}/{file}", self.man_dir), page));
        generated.chain(shipped).collect()
    }
}

/// Every `name(section)` a page mentions, in SEE ALSO or anywhere else, is a page of its
/// program's directory or one of its `system_pages`: relaisd's pages and the client's are
/// installed apart, so neither names the other's. Every page has a SEE ALSO. Both the pages
/// generated now and those in the repository, which are installed, are read.
#[test]
fn man_pages_name_only_pages_that_exist() {
    let mut problems = Vec::new();
    for program in PROGRAMS {
        let shipped = program.shipped_pages();
        let existing: BTreeSet<String> = shipped.iter().map(|(file, _)| page_name(file)).collect();
        for (file, page) in program.every_page(shipped) {
            for reference in references(&page) {
                if !existing.contains(&reference)
                    && !program.system_pages.contains(&reference.as_str())
                {
                    problems.push(format!("{file} names {reference}"));
                }
            }
            if !page.contains(".SH \"SEE ALSO\"") {
                problems.push(format!("{file} has no SEE ALSO section"));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "pages name pages that are not installed with them:\n{}",
        problems.join("\n")
    );
}

/// The pages are read where they are installed, without the rest of the repository: a page
/// that sends its reader to `docs/...` or to a source file sends them nowhere.
#[test]
fn man_pages_cite_nothing_the_package_leaves_out() {
    let mut cited = Vec::new();
    for program in PROGRAMS {
        for (file, page) in program.every_page(program.shipped_pages()) {
            for (number, line) in page.lines().enumerate() {
                let text = plain(line);
                let source = text.match_indices(".rs").any(|(at, _)| {
                    !text[at + 3..].starts_with(|c: char| c.is_ascii_alphanumeric())
                });
                if text.contains("docs/") || text.contains(".md") || source {
                    cited.push(format!("{file}:{}: {line}", number + 1));
                }
            }
        }
    }
    assert!(
        cited.is_empty(),
        "pages cite files that are not installed with them; cite a man page instead:\n{}",
        cited.join("\n")
    );
}

#[test]
fn config_reference_lists_every_key_with_its_type_and_default() {
    let schema = Schema::read();
    let defaults = Defaults::of_code(&schema);
    let path = docs().join("reference/config.md");
    let text = std::fs::read_to_string(&path).expect("read docs/reference/config.md");
    let rows = config_page::reference_rows(&text);
    let listed: BTreeSet<&str> = rows.iter().map(|row| row.key.as_str()).collect();
    let keys = schema.dotted();
    let mut problems: Vec<String> = keys
        .iter()
        .filter(|key| !listed.contains(key.as_str()))
        .map(|key| format!("{key}: in the configuration, missing from config.md"))
        .collect();
    problems.extend(
        listed
            .iter()
            .filter(|key| !keys.iter().any(|k| k == *key))
            .map(|key| format!("{key}: in config.md, not a key of the configuration")),
    );
    for row in &rows {
        for problem in defaults.disagreements(&schema, row) {
            problems.push(format!("{}: {problem}", row.key));
        }
    }
    for gap in config_page::complete_example_gaps(&text, &schema) {
        problems.push(format!("the complete example: {gap}"));
    }
    assert!(
        problems.is_empty(),
        "docs/reference/config.md is out of step with daemon/src/config/:\n{}",
        problems.join("\n")
    );
}

/// Every configuration shown to operators is one relaisd accepts: the examples of
/// `relaisd.toml(5)` and those of `config.md`; and the defaults written back as TOML read
/// the same, so the page shows them as the file spells them.
#[test]
fn configuration_examples_are_valid() {
    let text = std::fs::read_to_string(docs().join("reference/config.md")).expect("config.md");
    let mut examples: Vec<(String, String)> = config_page::examples()
        .into_iter()
        .map(|(name, toml)| (format!("relaisd.toml(5), {name}"), toml.to_owned()))
        .collect();
    let blocks = config_page::toml_blocks(&text);
    assert!(
        blocks.len() >= 3,
        "config.md shows fewer examples than it did"
    );
    examples.extend(
        blocks
            .into_iter()
            .enumerate()
            .map(|(i, toml)| (format!("config.md, example {}", i + 1), toml)),
    );
    for (name, toml) in &examples {
        if let Err(e) = relaisd::config::Config::parse(Path::new("example.toml"), toml) {
            panic!("{name} is refused: {e}\n{toml}");
        }
    }
    config_page::defaults_read_back();
}

fn docs() -> PathBuf {
    relais_testkit::repository().join("docs")
}

/// The files of `dir`: the pages of one program; none when it does not exist yet.
fn list(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .map(|entry| entry.expect("list a man page directory").path())
        .inspect(|path| {
            assert!(
                path.is_file(),
                "{} is not a page: a program's page directory holds its pages only",
                path.display()
            )
        })
        .collect()
}

/// `docs/reference/cli.md`: every command's full help.
fn cli_markdown() -> String {
    let mut command = relaisd::cli::command();
    command.build();
    let mut markdown = String::from(
        "# relaisd command line\n\n\
         Generated from the program's own definition by `daemon/tests/relay/cli_reference.rs`; do not edit by hand.\n\
         Exit codes: 0 success, 1 the daemon refused the request, 64 bad command line, 65 bad input data, \
         69 the daemon cannot be reached, 70 internal error, 78 bad configuration.\n\
         The manual pages (`man relaisd`, `man relaisd.toml`) say which command returns which.\n\
         The client's command line, `relais`, is in `relais-cli.md`.\n\n",
    );
    render_markdown(&mut command, "", &mut markdown);
    markdown
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

/// relaisd's pages, by file name: one per command, and `relaisd.toml.5`.
fn man_pages() -> Vec<(String, String)> {
    let schema = Schema::read();
    let defaults = Defaults::of_code(&schema);
    let facts = Facts::of_code(defaults.config());
    // `relaisd help` is the same as `--help`: it gets no page, and no page names one.
    let mut command = relaisd::cli::command().disable_help_subcommand(true);
    command.build();
    let mut pages = Vec::new();
    command_pages(&command, Vec::new(), &facts, &mut pages);
    let version = command.get_version().expect("relaisd has a version");
    pages.push((
        "relaisd.toml.5".to_owned(),
        config_page::page(&schema, &defaults, &facts, version),
    ));
    pages
}

/// The page of `command`, at `path` under its program, and those of every command under it.
fn command_pages(
    command: &clap::Command,
    path: Vec<String>,
    manual: &dyn Manual,
    out: &mut Vec<(String, String)>,
) {
    let name = manual.page_of(&path);
    out.push((format!("{name}.1"), command_page(command, &path, manual)));
    for sub in command.get_subcommands() {
        let mut path = path.clone();
        path.push(sub.get_name().to_owned());
        command_pages(sub, path, manual, out);
    }
}

/// The page of `PROGRAM PATH...`: clap_mangen's sections in its order, with SIGNALS,
/// EXIT STATUS, ENVIRONMENT and FILES after the options and subcommands, and SEE ALSO last.
fn command_page(command: &clap::Command, path: &[String], manual: &dyn Manual) -> String {
    let man = clap_mangen::Man::new(command.clone().name(manual.page_of(path)));
    let mut title = Vec::new();
    man.render_title(&mut title).expect("render the title");
    let mut page = String::from_utf8(title).expect("utf-8");
    let mut add = |render: &dyn Fn(&mut Vec<u8>) -> std::io::Result<()>| {
        let mut out = Vec::new();
        render(&mut out).expect("render a section");
        page.push_str(without_preamble(&String::from_utf8(out).expect("utf-8")));
    };
    add(&|w| man.render_name_section(w));
    add(&|w| man.render_synopsis_section(w));
    add(&|w| man.render_description_section(w));
    if command.get_arguments().any(|a| !a.is_hide_set()) {
        add(&|w| man.render_options_section(w));
    }
    if command.get_subcommands().any(|c| !c.is_hide_set()) {
        add(&|w| man.render_subcommands_section(w));
    }
    if command.get_after_long_help().is_some() || command.get_after_help().is_some() {
        add(&|w| man.render_extra_section(w));
    }
    add(&|w| manual.sections(command, path).to_writer(w));
    if command.get_version().is_some() {
        add(&|w| man.render_version_section(w));
    }
    if command.get_author().is_some() {
        add(&|w| man.render_authors_section(w));
    }
    add(&|w| see_also(&manual.see_also(command, path)).to_writer(w));
    page
}

/// A rendered section without the preamble `roff` puts before each document.
fn without_preamble(section: &str) -> &str {
    section
        .strip_prefix(APOSTROPHE_PREAMBLE)
        .unwrap_or_else(|| panic!("roff no longer starts a document with {APOSTROPHE_PREAMBLE:?}"))
}

/// SEE ALSO, naming `pages` (`relaisd.toml(5)`) in bold, as man-pages(7) asks.
fn see_also(pages: &[String]) -> Roff {
    let mut roff = Roff::new();
    roff.control("SH", ["SEE ALSO"]);
    let mut line = Vec::new();
    for (i, page) in pages.iter().enumerate() {
        let (name, section) = page.split_once('(').expect("a page is NAME(SECTION)");
        let separator = if i + 1 == pages.len() { "" } else { ", " };
        line.push(bold(name));
        line.push(roman(format!("({section}{separator}")));
    }
    roff.text(line);
    roff
}

/// A section of tagged paragraphs; nothing when there are none.
fn entries(roff: &mut Roff, heading: &str, entries: Vec<(String, Vec<Inline>)>) {
    if entries.is_empty() {
        return;
    }
    roff.control("SH", [heading]);
    for (tag, text) in entries {
        roff.control("TP", []);
        roff.text([bold(tag)]);
        roff.text(text);
    }
}

/// Text with Markdown's `code` spans in bold, as man pages show literal values.
fn inline_markdown(text: &str) -> Vec<Inline> {
    let parts: Vec<&str> = text.split('`').collect();
    assert!(
        parts.len() % 2 == 1,
        "unbalanced ` in {text:?}: every code span must close"
    );
    parts
        .iter()
        .enumerate()
        .filter(|(_, part)| !part.is_empty())
        .map(|(i, part)| {
            if i % 2 == 1 {
                bold(*part)
            } else {
                roman(*part)
            }
        })
        .collect()
}

/// `relaisd-serve.1` as the page it is, `relaisd-serve(1)`.
fn page_name(file: &str) -> String {
    let (name, section) = file.rsplit_once('.').expect("a page file is NAME.SECTION");
    format!("{name}({section})")
}

/// Every `name(section)` in a page's roff source, with font changes and escapes removed.
fn references(page: &str) -> BTreeSet<String> {
    let text = plain(page);
    let is_name = |c: char| c.is_ascii_alphanumeric() || "._-".contains(c);
    let mut found = BTreeSet::new();
    for (open, _) in text.match_indices('(') {
        let after = &text[open + 1..];
        let Some(close) = after.find(')') else {
            continue;
        };
        let section = &after[..close];
        let numbered = section.starts_with(|c: char| c.is_ascii_digit())
            && section.chars().all(|c| c.is_ascii_alphanumeric());
        let start = text[..open]
            .char_indices()
            .rev()
            .take_while(|(_, c)| is_name(*c))
            .last()
            .map_or(open, |(i, _)| i);
        let name = text[start..open].trim_start_matches(|c: char| !c.is_ascii_alphabetic());
        if numbered && !name.is_empty() {
            found.insert(format!("{name}({section})"));
        }
    }
    found
}

/// Roff source without font changes and with plain hyphens, as it reads.
fn plain(roff: &str) -> String {
    roff.replace("\\fB", "")
        .replace("\\fI", "")
        .replace("\\fR", "")
        .replace("\\-", "-")
}

/// Whether `word` is in `text` as a whole identifier.
fn contains_word(text: &str, word: &str) -> bool {
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    text.match_indices(word).any(|(at, _)| {
        !text[..at].ends_with(is_word) && !text[at + word.len()..].starts_with(is_word)
    })
}

/// A file of the repository.
fn read(path: &str) -> String {
    let path = relais_testkit::repository().join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}
