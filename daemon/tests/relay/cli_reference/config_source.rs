//! The configuration's documentation, read from its source: the `///` lines above `Config`'s
//! fields and those of the tables it names (`daemon/src/config/`), with the values of the
//! enums they use. The reader is strict: a line it does not understand inside one of those
//! items fails the test, so that a new field cannot go missing from the page unnoticed.

use std::collections::BTreeMap;

/// The files that define the configuration's types, relative to the repository: the store's
/// `Durability` is re-exported as `storage.durability`.
const SOURCES: &[&str] = &[
    "daemon/src/config/mod.rs",
    "daemon/src/config/sections.rs",
    "store/src/lib.rs",
];

/// What relaisd reads from its configuration file, in the order of the source.
pub struct Schema {
    /// The keys outside any table (`domain`, `data_dir`).
    pub top: Vec<Key>,
    pub tables: Vec<Table>,
}

/// One `[table]` of the file.
pub struct Table {
    /// The table's name in the file (`limits`).
    pub name: String,
    /// The doc comment of its struct.
    pub doc: String,
    pub keys: Vec<Key>,
}

/// One key of the file.
pub struct Key {
    pub name: String,
    pub doc: String,
    /// What the value is, as an operator writes it: `integer`, `path`, `"full" or "normal"`.
    pub kind: String,
    /// Whether the file must set it: neither `#[serde(default)]` nor an `Option`.
    pub required: bool,
    /// It is an `Option`: it may have no value at all.
    pub optional: bool,
}

impl Schema {
    /// Reads the schema from the source files, or panics saying which line it cannot read.
    pub fn read() -> Schema {
        let mut items = BTreeMap::new();
        for file in SOURCES {
            let path = relais_testkit::repository().join(file);
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
            for item in items_of(file, &text) {
                let place = item.place(item.line);
                if let Some(earlier) = items.insert(item.name.clone(), item) {
                    panic!("{place}: {} is defined twice", earlier.name);
                }
            }
        }
        let config = items
            .get("Config")
            .expect("daemon/src/config/mod.rs defines no `pub struct Config {`");
        let mut schema = Schema {
            top: Vec::new(),
            tables: Vec::new(),
        };
        for field in fields(config) {
            match items.get(&field.ty) {
                Some(item) if item.kind == ItemKind::Struct => {
                    assert!(
                        field.defaulted,
                        "{}: the table `{}` has no `#[serde(default)]`, but the page says a \
                         table may be left out",
                        config.place(field.line),
                        field.name
                    );
                    let keys = fields(item).iter().map(|f| key(item, f, &items)).collect();
                    schema.tables.push(Table {
                        name: field.name.clone(),
                        doc: item.doc.clone(),
                        keys,
                    });
                }
                _ => schema.top.push(key(config, &field, &items)),
            }
        }
        schema
    }

    /// Every key as `table.key`, or `key` at the top, in the page's order.
    pub fn dotted(&self) -> Vec<String> {
        let top = self.top.iter().map(|k| k.name.clone());
        let tables = self
            .tables
            .iter()
            .flat_map(|t| t.keys.iter().map(move |k| format!("{}.{}", t.name, k.name)));
        top.chain(tables).collect()
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ItemKind {
    Struct,
    Enum,
}

/// A `pub struct` or `pub enum` with a braced body, as written.
struct Item {
    file: &'static str,
    /// The line of its `pub struct NAME {`.
    line: usize,
    kind: ItemKind,
    name: String,
    doc: String,
    attributes: Vec<String>,
    /// The lines between the braces, with their numbers.
    body: Vec<(usize, String)>,
}

impl Item {
    fn place(&self, line: usize) -> String {
        format!("{}:{line}", self.file)
    }
}

/// A field of a struct, as written.
struct Field {
    line: usize,
    name: String,
    ty: String,
    doc: String,
    /// It has `#[serde(default)]` or `#[serde(default = "...")]`.
    defaulted: bool,
}

/// The top-level structs and enums of a file whose header is one line ending in `{`, with
/// the doc comment and attributes right above. Other items are left alone: they matter
/// only if a field names them, and then `describe` fails on them.
fn items_of(file: &'static str, text: &str) -> Vec<Item> {
    let mut items = Vec::new();
    let (mut doc, mut attributes) = (Vec::new(), Vec::new());
    let mut lines = text.lines().enumerate().map(|(i, line)| (i + 1, line));
    while let Some((number, line)) = lines.next() {
        if let Some(text) = line.strip_prefix("///") {
            doc.push(text);
            continue;
        }
        if line.starts_with("#[") {
            attributes.push(line.to_owned());
            continue;
        }
        let header = [
            ("pub struct ", ItemKind::Struct),
            ("pub enum ", ItemKind::Enum),
        ]
        .into_iter()
        .find_map(|(prefix, kind)| Some((kind, line.strip_prefix(prefix)?)));
        if let Some((kind, rest)) = header
            && let Some(name) = rest.strip_suffix(" {")
            && is_identifier(name)
        {
            let mut body = Vec::new();
            loop {
                match lines.next() {
                    Some((_, "}")) => break,
                    Some((n, line)) => body.push((n, line.to_owned())),
                    None => panic!("{file}:{number}: {name} has no closing brace at column 0"),
                }
            }
            items.push(Item {
                file,
                line: number,
                kind,
                name: name.to_owned(),
                doc: doc_text(&doc),
                attributes: std::mem::take(&mut attributes),
                body,
            });
        }
        doc.clear();
        attributes.clear();
    }
    items
}

/// The fields of a struct, each documented; panics on any line that is not a doc comment,
/// a `#[serde(...)]` attribute this reader knows, or `pub name: Type,`.
fn fields(item: &Item) -> Vec<Field> {
    assert!(
        item.kind == ItemKind::Struct,
        "{}: {} is not a struct",
        item.place(item.line),
        item.name
    );
    for attribute in &item.attributes {
        assert!(
            attribute.starts_with("#[derive(") || attribute == "#[serde(deny_unknown_fields)]",
            "{}: {attribute} on {}: extend cli_reference/config_source.rs to read it",
            item.place(item.line),
            item.name
        );
    }
    assert!(
        item.attributes
            .iter()
            .any(|a| a == "#[serde(deny_unknown_fields)]"),
        "{}: {} lacks #[serde(deny_unknown_fields)], but the page says unknown keys are errors",
        item.place(item.line),
        item.name
    );
    let mut fields = Vec::new();
    let (mut doc, mut defaulted) = (Vec::new(), false);
    for (number, line) in &item.body {
        let trimmed = line.trim_start();
        if let Some(text) = trimmed.strip_prefix("///") {
            doc.push(text);
        } else if let Some(inside) = trimmed
            .strip_prefix("#[serde(")
            .and_then(|rest| rest.strip_suffix(")]"))
        {
            defaulted |= serde_field_attribute(inside, &item.place(*number));
        } else if let Some((name, ty)) = field_line(line) {
            assert!(
                !doc.is_empty(),
                "{}: {}.{name} has no doc comment",
                item.place(*number),
                item.name
            );
            fields.push(Field {
                line: *number,
                name: name.to_owned(),
                ty: ty.to_owned(),
                doc: doc_text(&doc),
                defaulted,
            });
            (doc, defaulted) = (Vec::new(), false);
        } else {
            assert!(
                trimmed.is_empty() && doc.is_empty() && !defaulted,
                "{}: cannot read {line:?} as a documented `pub name: Type,` field; extend \
                 cli_reference/config_source.rs to read it",
                item.place(*number)
            );
        }
    }
    fields
}

/// `    pub name: Type,` as `(name, Type)`.
fn field_line(line: &str) -> Option<(&str, &str)> {
    let (name, ty) = line
        .strip_prefix("    pub ")?
        .strip_suffix(',')?
        .split_once(": ")?;
    (is_identifier(name) && !ty.is_empty() && !ty.contains(' ')).then_some((name, ty))
}

/// Whether a field's `#[serde(...)]` defaults it; panics on an entry that could change the
/// key's name or hide it (`rename`, `flatten`, `skip`), which the page would then get wrong.
fn serde_field_attribute(inside: &str, place: &str) -> bool {
    let mut defaulted = false;
    for entry in inside.split(", ") {
        match entry.split_once(" = ").map_or(entry, |(name, _)| name) {
            "default" => defaulted = true,
            "serialize_with" => {}
            _ => panic!(
                "{place}: #[serde({inside})]: extend cli_reference/config_source.rs to read {entry:?}"
            ),
        }
    }
    defaulted
}

fn key(item: &Item, field: &Field, items: &BTreeMap<String, Item>) -> Key {
    let place = item.place(field.line);
    let (ty, optional) = match field
        .ty
        .strip_prefix("Option<")
        .and_then(|t| t.strip_suffix('>'))
    {
        Some(inner) => (inner, true),
        None => (field.ty.as_str(), false),
    };
    Key {
        name: field.name.clone(),
        doc: field.doc.clone(),
        kind: describe(ty, items, &place),
        required: !optional && !field.defaulted,
        optional,
    }
}

/// A Rust type as the value an operator writes.
fn describe(ty: &str, items: &BTreeMap<String, Item>, place: &str) -> String {
    let known = match ty {
        "String" => "string",
        "PathBuf" => "path",
        "bool" => "boolean",
        "SocketAddr" => "socket address",
        "u32" | "u64" | "usize" | "i64" => "integer",
        "Vec<String>" => "list of strings",
        "Vec<std::net::IpAddr>" | "Vec<IpAddr>" => "list of IP addresses",
        _ => "",
    };
    if !known.is_empty() {
        return known.to_owned();
    }
    match items.get(ty) {
        Some(item) if item.kind == ItemKind::Enum => {
            let values: Vec<String> = variants(item).iter().map(|v| format!("\"{v}\"")).collect();
            match values.as_slice() {
                [] => panic!("{}: {ty} has no variants", item.place(item.line)),
                [one] => one.clone(),
                [most @ .., last] => format!("{} or {last}", most.join(", ")),
            }
        }
        Some(_) => panic!("{place}: {ty} is a table inside a table, which the page cannot show"),
        None => panic!(
            "{place}: the type {ty} is unknown to cli_reference/config_source.rs: say there how \
             an operator writes it"
        ),
    }
}

/// An enum's variants as the file spells them (`#[serde(rename_all = "...")]`).
fn variants(item: &Item) -> Vec<String> {
    let mut rule = None;
    for attribute in &item.attributes {
        if let Some(r) = attribute
            .strip_prefix("#[serde(rename_all = \"")
            .and_then(|r| r.strip_suffix("\")]"))
        {
            rule = Some(r);
        } else {
            assert!(
                attribute.starts_with("#[derive("),
                "{}: {attribute} on {}: extend cli_reference/config_source.rs to read it",
                item.place(item.line),
                item.name
            );
        }
    }
    let rule = rule.unwrap_or_else(|| {
        panic!(
            "{}: {} has no #[serde(rename_all = ...)]",
            item.place(item.line),
            item.name
        )
    });
    let mut names = Vec::new();
    for (number, line) in &item.body {
        let trimmed = line.trim();
        if trimmed.starts_with("///") || trimmed == "#[default]" {
            continue;
        }
        match trimmed.strip_suffix(',').filter(|name| is_identifier(name)) {
            Some(name) => names.push(rename(rule, name)),
            None => panic!(
                "{}: cannot read {line:?} as a variant without data",
                item.place(*number)
            ),
        }
    }
    names
}

/// A variant's name under serde's `rename_all` rule.
fn rename(rule: &str, name: &str) -> String {
    match rule {
        "lowercase" => name.to_lowercase(),
        "kebab-case" => {
            let mut out = String::new();
            for (i, c) in name.chars().enumerate() {
                if c.is_ascii_uppercase() && i > 0 {
                    out.push('-');
                }
                out.push(c.to_ascii_lowercase());
            }
            out
        }
        _ => panic!("rename_all = {rule:?}: extend cli_reference/config_source.rs to apply it"),
    }
}

/// The text of `///` lines: lines joined by spaces, paragraphs (split by an empty `///`)
/// by a blank line.
fn doc_text(lines: &[&str]) -> String {
    let lines: Vec<&str> = lines
        .iter()
        .map(|l| l.strip_prefix(' ').unwrap_or(l).trim_end())
        .collect();
    lines
        .split(|l| l.is_empty())
        .filter(|p| !p.is_empty())
        .map(|p| p.join(" "))
        .collect::<Vec<_>>()
        .join("\n\n")
}

fn is_identifier(s: &str) -> bool {
    s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}
