//! `relaisd.toml(5)`, the configuration file's manual page: every key from the doc comments
//! `config_source` reads, with its default from the code itself (the configuration parsed
//! from a file that sets only `domain`, written back as TOML). Also what checks
//! `docs/reference/config.md` against them.

use std::path::Path;

use clap_mangen::roff::{Inline, Roff, bold, roman};
use relaisd::config::Config;

use super::config_source::{Key, Schema};
use super::process::Facts;
use super::{APOSTROPHE_PREAMBLE, inline_markdown, see_also, without_preamble};

/// The smallest valid file; its defaults are the ones the page shows.
const MINIMAL: &str = "domain = \"interieur.gouv.fr\"\n";

/// A typical appliance's file, shown on the page.
const APPLIANCE: &str = r#"domain = "interieur.gouv.fr"

[admin]
# The socket's group may connect; relaisd decides from each
# operator's other groups what they may do.
mode = 0o660
admin_groups = ["relais-admin"]
reader_groups = ["relais-readers"]

[users]
allowed_domains = ["interieur.gouv.fr", "*.interieur.gouv.fr"]

[metrics]
# Under systemd, relaisd-metrics.socket's ListenStream= decides
# the address (systemctl edit relaisd-metrics.socket).
listen = "0.0.0.0:9464"
allow = ["10.20.0.0/16"]

[backup]
# Also writable by the unit: ReadWritePaths=/var/backups/relais
directory = "/var/backups/relais"
"#;

/// Keys whose value is a file mode, which TOML writes in octal.
const OCTAL_KEYS: &[&str] = &["admin.mode"];

/// The examples the page shows, by name.
pub fn examples() -> [(&'static str, &'static str); 2] {
    [("minimal file", MINIMAL), ("appliance file", APPLIANCE)]
}

/// The defaults of the code, as TOML.
pub struct Defaults {
    config: Config,
    table: toml::Table,
}

impl Defaults {
    /// The configuration of a file that sets only `domain`, written back as TOML; panics
    /// where it and `schema` disagree on the keys there are.
    pub fn of_code(schema: &Schema) -> Defaults {
        let config = Config::parse(Path::new("minimal.toml"), MINIMAL).expect("minimal file");
        let table = toml::Table::try_from(&config).expect("write the configuration as TOML");
        let defaults = Defaults { config, table };
        let mut written: Vec<String> = Vec::new();
        for (name, value) in &defaults.table {
            match value.as_table() {
                Some(inner) => written.extend(inner.keys().map(|key| format!("{name}.{key}"))),
                None => written.push(name.clone()),
            }
        }
        let keys = schema.dotted();
        for key in &written {
            assert!(
                keys.contains(key),
                "the configuration writes {key}, which config_source did not read in the source"
            );
        }
        for (dotted, key) in keys.iter().zip(keys_of(schema)) {
            assert!(
                key.optional || written.contains(dotted),
                "{dotted} is not optional, yet it has no value in the configuration written back"
            );
        }
        defaults
    }

    /// The configuration every key of which is defaulted.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The default of `table.key` (or `key`) as the file spells it, with its size in words
    /// for a count of bytes; `None` when it has no value unless set.
    fn spelled(&self, dotted: &str) -> Option<(String, String)> {
        let value = match dotted.split_once('.') {
            Some((table, key)) => self.table.get(table)?.as_table()?.get(key)?,
            None => self.table.get(dotted)?,
        };
        let integer = value.as_integer();
        let spelled = match integer {
            Some(n) if OCTAL_KEYS.contains(&dotted) => format!("0o{n:o}"),
            _ => value.to_string(),
        };
        let size = match integer {
            Some(n) if dotted.contains("_bytes") => bytes_in_words(n),
            _ => String::new(),
        };
        Some((spelled, size))
    }

    /// What is wrong with the type and default `config.md` gives a key: the type must name
    /// what the page says the value is; the default must say `required` for a required key,
    /// and be the code's value, as its first `code` span, for a defaulted one.
    pub fn disagreements(&self, schema: &Schema, row: &Row) -> Vec<String> {
        let keys = schema.dotted();
        let Some((key, _)) = keys_of(schema)
            .zip(&keys)
            .find(|(_, dotted)| **dotted == row.key)
        else {
            return Vec::new();
        };
        let mut problems = Vec::new();
        if !row.kind.replace('`', "").contains(&key.kind) {
            problems.push(format!(
                "a {}, but config.md's type is {:?}",
                key.kind, row.kind
            ));
        }
        if key.required {
            if !row.default.contains("required") {
                problems.push(format!(
                    "required, but config.md's default is {:?}",
                    row.default
                ));
            }
        } else if let Some((value, _)) = self.spelled(&row.key) {
            let normal = |s: &str| s.replace(['"', '_'], "");
            let shown = row.default.split('`').nth(1).map(normal);
            if shown.as_deref() != Some(normal(&value).as_str()) {
                problems.push(format!(
                    "the default is {value}, but config.md's is {:?}",
                    row.default
                ));
            }
        }
        problems
    }
}

/// Every key of the schema, in the order of `Schema::dotted`.
fn keys_of(schema: &Schema) -> impl Iterator<Item = &Key> {
    schema
        .top
        .iter()
        .chain(schema.tables.iter().flat_map(|t| &t.keys))
}

/// `8 MiB` for 8388608; nothing for a number of bytes that is no whole number of KiB.
fn bytes_in_words(n: i64) -> String {
    [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")]
        .iter()
        .find(|(unit, _)| n >= *unit && n % unit == 0)
        .map_or(String::new(), |(unit, name)| format!("{} {name}", n / unit))
}

/// A key's row in a table of `config.md`.
pub struct Row {
    /// `table.key`, or `key` at the top level.
    pub key: String,
    /// The "Type" cell, as written.
    pub kind: String,
    /// The "Default" cell, as written.
    pub default: String,
}

/// The rows of `config.md`'s key tables: those under `## Top level` and ``## `[table]` ``.
pub fn reference_rows(text: &str) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut table: Option<String> = None;
    for (number, line) in text.lines().enumerate() {
        if let Some(heading) = line.strip_prefix("## ") {
            table = match heading {
                "Top level" => Some(String::new()),
                _ => heading
                    .strip_prefix("`[")
                    .and_then(|h| h.strip_suffix("]`"))
                    .map(|name| format!("{name}.")),
            };
            continue;
        }
        let (Some(prefix), Some(row)) = (&table, line.strip_prefix("| `")) else {
            continue;
        };
        let cells: Vec<&str> = row.split(" | ").collect();
        let (Some((key, "")), [_, kind, default, ..]) = (cells[0].split_once('`'), &cells[..])
        else {
            panic!(
                "config.md:{}: a key's row is | `key` | type | default | meaning |",
                number + 1
            );
        };
        rows.push(Row {
            key: format!("{prefix}{key}"),
            kind: (*kind).to_owned(),
            default: (*default).to_owned(),
        });
    }
    rows
}

/// What is wrong with `config.md`'s complete example, its first: it must set every key but
/// those the sentence introducing it names (`Every key is shown, ... but ...`).
pub fn complete_example_gaps(text: &str, schema: &Schema) -> Vec<String> {
    let introduction = text
        .lines()
        .find(|line| line.starts_with("Every key is shown"))
        .expect("config.md no longer introduces its complete example with \"Every key is shown\"");
    let left_out: Vec<&str> = introduction
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|span| span.contains('.'))
        .collect();
    let example = toml_blocks(text)
        .into_iter()
        .next()
        .expect("config.md has an example");
    let example: toml::Table = example.parse().expect("the complete example is TOML");
    let mut set = Vec::new();
    for (name, value) in &example {
        match value.as_table() {
            Some(inner) => set.extend(inner.keys().map(|key| format!("{name}.{key}"))),
            None => set.push(name.clone()),
        }
    }
    let mut gaps = Vec::new();
    for key in schema.dotted() {
        match (set.contains(&key), left_out.contains(&key.as_str())) {
            (false, false) => gaps.push(format!("{key}: neither set nor said to be left out")),
            (true, true) => gaps.push(format!("{key}: set, yet said to be left out")),
            _ => {}
        }
    }
    gaps
}

/// The ```` ```toml ```` blocks of a Markdown page.
pub fn toml_blocks(text: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        match (&mut current, line) {
            (None, "```toml") => current = Some(String::new()),
            (Some(_), "```") => blocks.extend(current.take()),
            (Some(block), line) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

/// The configuration written as TOML reads back the same, spelling each enum's values as
/// the file does; `storage.durability` is written by a function of its own.
pub fn defaults_read_back() {
    let text = "domain = \"example.org\"\n\
                [keys]\nsource = \"sealed\"\n\
                [storage]\nbackend = \"postgres\"\n\
                url = \"postgres://relais@db.example.org:5432/relais\"\n\
                durability = \"normal\"\n";
    let config = Config::parse(Path::new("set.toml"), text).expect("a valid file");
    let written = toml::to_string(&config).expect("write the configuration");
    for line in [
        "source = \"sealed\"",
        "backend = \"postgres\"",
        "durability = \"normal\"",
    ] {
        assert!(
            written.contains(line),
            "{line} is written otherwise:\n{written}"
        );
    }
    let again = Config::parse(Path::new("written.toml"), &written)
        .unwrap_or_else(|e| panic!("the configuration written back is refused: {e}\n{written}"));
    assert_eq!(
        toml::to_string(&again).expect("write again"),
        written,
        "the configuration written back reads as another"
    );
}

/// The page, `docs/man/relaisd.toml.5`.
pub fn page(schema: &Schema, defaults: &Defaults, facts: &Facts, version: &str) -> String {
    let mut roff = Roff::new();
    roff.control("SH", ["NAME"]);
    roff.text([roman(
        "relaisd.toml - configuration file of relaisd, the Relais relay",
    )]);
    roff.control("SH", ["SYNOPSIS"]);
    roff.text([bold(&facts.config_file)]);
    roff.control("SH", ["DESCRIPTION"]);
    for (i, paragraph) in description(facts).iter().enumerate() {
        if i > 0 {
            roff.control("PP", []);
        }
        roff.text(inline_markdown(paragraph));
    }
    roff.control("SS", ["Top-level keys"]);
    for key in &schema.top {
        entry(&mut roff, key, defaults.spelled(&key.name));
    }
    for table in &schema.tables {
        roff.control("SS", [format!("[{}]", table.name).as_str()]);
        roff.text(inline_markdown(&table.doc));
        for key in &table.keys {
            entry(
                &mut roff,
                key,
                defaults.spelled(&format!("{}.{}", table.name, key.name)),
            );
        }
    }
    files(&mut roff, facts);
    examples_section(&mut roff);
    let body = roff.render();
    let mut page = format!(
        "{APOSTROPHE_PREAMBLE}.TH relaisd.toml 5 \"\" \"relaisd {version}\" \"File Formats Manual\"\n"
    );
    page.push_str(without_preamble(&body));
    let pages = [
        "relaisd(1)",
        "relaisd-serve(1)",
        "relaisd-check-config(1)",
        "relaisd-keys-provision(1)",
        "systemd-creds(1)",
        "systemd.exec(5)",
        "systemd.socket(5)",
    ]
    .map(str::to_owned);
    page.push_str(without_preamble(&see_also(&pages).render()));
    page
}

fn description(facts: &Facts) -> [String; 5] {
    [
        format!(
            "`relaisd serve --config FILE` reads its configuration from one file in TOML \
             (https://toml.io); `relaisd.service` passes `{}`. `relaisd migrate` reads the \
             same file.",
            facts.config_file
        ),
        "Only `domain` is required. Every other key has the default shown beside it, and a \
         table can be left out whole; a key unset by default has no value unless the file \
         gives one, and its description says what relaisd does then. `DATA` stands for the \
         value of `data_dir`."
            .to_owned(),
        "Unknown keys are errors, in every table: a misspelt key is reported, never silently \
         ignored."
            .to_owned(),
        "`relaisd check-config FILE` reads and checks a file without starting anything. It \
         prints `FILE: ok` and exits with 0 when the file is valid; otherwise it prints the \
         first mistake as `FILE:LINE: message`, naming the key, and exits with 78, as \
         `serve` does for a bad configuration. It checks the file only: `serve` opens the \
         certificate, the keys and the database when it starts."
            .to_owned(),
        "Secrets are never written in the file. On an appliance they are systemd credentials \
         sealed to the machine's TPM (see `[keys]`); in development the file names paths to \
         them, and relaisd refuses secret files the group or others can read. The file can \
         name the database and key paths: keep it readable by root and the `relais` group \
         only, as the package installs it."
            .to_owned(),
    ]
}

/// One key: its name, what its value is and its default, then its doc comment.
fn entry(roff: &mut Roff, key: &Key, default: Option<(String, String)>) {
    let mut tag: Vec<Inline> = vec![bold(&key.name), roman(format!(" ({}; ", key.kind))];
    match default {
        _ if key.required => tag.push(roman("required)")),
        Some((value, size)) => {
            tag.push(roman("default "));
            tag.push(bold(value));
            if !size.is_empty() {
                tag.push(roman(format!(", {size}")));
            }
            tag.push(roman(")"));
        }
        None => tag.push(roman("unset by default)")),
    }
    roff.control("TP", []);
    roff.text(tag);
    for (i, paragraph) in key.doc.split("\n\n").enumerate() {
        if i > 0 {
            roff.control("IP", []);
        }
        roff.text(inline_markdown(paragraph));
    }
}

fn files(roff: &mut Roff, facts: &Facts) {
    roff.control("SH", ["FILES"]);
    let files = [
        (
            &facts.config_file,
            "The configuration file `relaisd.service` reads.",
        ),
        (
            &facts.credentials,
            "The sealed keys: the unit's `LoadCredentialEncrypted=` lines decrypt them for the \
             default key source, and the `sealed` source reads them here unless \
             `keys.directory` says otherwise.",
        ),
        (&facts.data_dir, "The default `data_dir`."),
    ];
    for (file, text) in files {
        roff.control("TP", []);
        roff.text([bold(file)]);
        roff.text(inline_markdown(text));
    }
}

fn examples_section(roff: &mut Roff) {
    roff.control("SH", ["EXAMPLES"]);
    let introductions = [
        "The smallest valid file names the domain; everything else takes its default, the \
         keys included (systemd credentials, as `relaisd.service` delivers them):",
        "A typical appliance: operators in `relais-admin` administer and those in \
         `relais-readers` look; users of the ministry's subdomains are allowed too; \
         Prometheus scrapes from the monitoring network; backups go to a directory of their \
         own:",
    ];
    for (i, (introduction, (_, toml))) in introductions.iter().zip(examples()).enumerate() {
        if i > 0 {
            roff.control("PP", []);
        }
        roff.text(inline_markdown(introduction));
        roff.control("PP", []);
        roff.control("RS", ["4"]);
        roff.control("nf", []);
        for line in toml.lines() {
            if line.is_empty() {
                roff.control("sp", []);
            } else {
                roff.text([roman(line)]);
            }
        }
        roff.control("fi", []);
        roff.control("RE", []);
    }
}
