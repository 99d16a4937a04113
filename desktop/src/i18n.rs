//! The app's catalogues: every string the user sees, in French (the default) and English,
//! in Project Fluent's format.
//!
//! Each view has its catalogue file per language, `desktop/i18n/{fr,en}/<view>.ftl`
//! (`common.ftl` holds what several views share); `build.rs` lists them all and they are
//! embedded in the binary, so nothing is read from disk at run time. A message missing from
//! the catalogue shows its id, which the tests below make impossible for ids the code uses.

use std::borrow::Cow;

use fluent_bundle::{FluentArgs, FluentBundle, FluentResource, FluentValue};

/// Every catalogue: (language, file stem, Fluent source), listed by `build.rs`.
const CATALOGUES: &[(&str, &str, &str)] = include!(concat!(env!("OUT_DIR"), "/catalogues.rs"));

/// The languages the app speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lang {
    /// French: the first users are French ministries.
    #[default]
    Fr,
    En,
}

impl Lang {
    /// Every language, in the order a language menu lists them.
    pub const ALL: [Lang; 2] = [Lang::Fr, Lang::En];

    /// The language the environment asks for: `RELAIS_LANG` (`fr` or `en`), else the
    /// locale (`LC_ALL`, `LC_MESSAGES`, `LANG`); French unless one of them says English.
    pub fn from_env() -> Lang {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let chosen = var("RELAIS_LANG")
            .or_else(|| var("LC_ALL"))
            .or_else(|| var("LC_MESSAGES"))
            .or_else(|| var("LANG"));
        chosen.as_deref().and_then(Lang::parse).unwrap_or_default()
    }

    /// A language from a tag or locale (`en`, `en_GB.UTF-8`, `fr-FR`); `None` for others.
    pub fn parse(tag: &str) -> Option<Lang> {
        let primary = tag
            .split(['_', '-', '.', '@'])
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        match primary.as_str() {
            "fr" => Some(Lang::Fr),
            "en" => Some(Lang::En),
            _ => None,
        }
    }

    /// The language's tag, as the catalogue directories are named.
    pub fn code(self) -> &'static str {
        match self {
            Lang::Fr => "fr",
            Lang::En => "en",
        }
    }

    /// The language's name in itself, for a language menu.
    pub fn native_name(self) -> &'static str {
        match self {
            Lang::Fr => "Français",
            Lang::En => "English",
        }
    }
}

/// One language's catalogue, ready to format messages.
pub struct I18n {
    lang: Lang,
    bundle: FluentBundle<FluentResource>,
}

impl std::fmt::Debug for I18n {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("I18n").field("lang", &self.lang).finish()
    }
}

impl I18n {
    /// Loads every catalogue file of `lang`. The catalogues are part of the binary and the
    /// tests parse them all, so a syntax error cannot reach a user; were one there anyway,
    /// the entries Fluent could read are kept and the others show their ids.
    pub fn new(lang: Lang) -> I18n {
        let tag = lang
            .code()
            .parse()
            .unwrap_or_else(|_| unic_langid::LanguageIdentifier::default());
        let mut bundle = FluentBundle::new(vec![tag]);
        // Without this, every argument is wrapped in Unicode isolation marks, which some
        // fonts draw as boxes and which screen readers and tests would have to strip.
        bundle.set_use_isolating(false);
        for (_, _, source) in CATALOGUES.iter().filter(|(l, _, _)| *l == lang.code()) {
            let resource = FluentResource::try_new((*source).to_owned()).unwrap_or_else(|(r, _)| r);
            // A message defined twice keeps its first definition.
            let _ = bundle.add_resource(resource);
        }
        I18n { lang, bundle }
    }

    pub fn lang(&self) -> Lang {
        self.lang
    }

    /// The message `id`, or `id` itself when the catalogue lacks it.
    pub fn t(&self, id: &str) -> String {
        self.format(id, None).into_owned()
    }

    /// The message `id` with its arguments (`&[("name", name.into())]`); numbers given as
    /// numbers select plural forms.
    pub fn t_args(&self, id: &str, args: &[(&str, FluentValue<'_>)]) -> String {
        let mut fluent = FluentArgs::with_capacity(args.len());
        for (name, value) in args {
            fluent.set(*name, value.clone());
        }
        self.format(id, Some(&fluent)).into_owned()
    }

    fn format<'a>(&'a self, id: &'a str, args: Option<&'a FluentArgs<'_>>) -> Cow<'a, str> {
        let Some(pattern) = self.bundle.get_message(id).and_then(|m| m.value()) else {
            return Cow::Borrowed(id);
        };
        let mut errors = Vec::new();
        self.bundle.format_pattern(pattern, args, &mut errors)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    use super::*;

    /// The message ids a catalogue defines (a line `id = …` at the start of a line).
    fn ids(lang: Lang) -> BTreeSet<String> {
        let mut ids = BTreeSet::new();
        for (_, file, source) in CATALOGUES.iter().filter(|(l, _, _)| *l == lang.code()) {
            for line in source.lines() {
                let Some((id, _)) = line.split_once('=') else {
                    continue;
                };
                let id = id.trim_end();
                let starts = id.chars().next().is_some_and(|c| c.is_ascii_alphabetic());
                if starts && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                    assert!(
                        ids.insert(id.to_owned()),
                        "{}/{file}.ftl: `{id}` is defined twice in the {} catalogues",
                        lang.code(),
                        lang.code()
                    );
                }
            }
        }
        ids
    }

    #[test]
    fn every_catalogue_parses() {
        for (lang, file, source) in CATALOGUES {
            if let Err((_, errors)) = FluentResource::try_new((*source).to_owned()) {
                panic!("{lang}/{file}.ftl does not parse: {errors:?}");
            }
        }
    }

    #[test]
    fn both_languages_define_the_same_messages() {
        let french = ids(Lang::Fr);
        let english = ids(Lang::En);
        let only_french: Vec<_> = french.difference(&english).collect();
        let only_english: Vec<_> = english.difference(&french).collect();
        assert!(
            only_french.is_empty() && only_english.is_empty(),
            "missing in English: {only_french:?}; missing in French: {only_english:?}"
        );
        assert!(french.len() > 10, "the catalogues were not found");
    }

    /// Every id the app's code names (`t("…")`, `Problem::new("…")`, a match arm…) is a
    /// message both languages define: a typo would show an id to the user.
    #[test]
    fn every_id_the_code_uses_exists() {
        let french = ids(Lang::Fr);
        let mut missing = Vec::new();
        let mut used = 0;
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        // This file's own tests ask for a missing id on purpose.
        for file in rust_files(&src)
            .into_iter()
            .filter(|f| !f.ends_with("i18n.rs"))
        {
            let text = std::fs::read_to_string(&file).expect("readable source");
            for id in used_ids(&text) {
                used += 1;
                if !french.contains(&id) {
                    missing.push(format!("{}: {id}", file.display()));
                }
            }
        }
        assert!(used > 10, "the scan found no ids: {used}");
        assert!(
            missing.is_empty(),
            "ids not in the catalogues:\n{missing:#?}"
        );
    }

    #[test]
    fn a_message_is_formatted_and_a_missing_one_shows_its_id() {
        let tr = I18n::new(Lang::En);
        assert_eq!(tr.t("no-such-message"), "no-such-message");
        let unread = tr.t_args("window-title-unread", &[("count", 3.into())]);
        assert!(unread.contains('3'), "{unread}");
        assert!(
            !unread.contains('\u{2068}'),
            "no isolation marks: {unread:?}"
        );
        assert_ne!(I18n::new(Lang::Fr).t("app-name-short"), "app-name-short");
    }

    #[test]
    fn languages_come_from_tags_and_locales() {
        assert_eq!(Lang::parse("en_GB.UTF-8"), Some(Lang::En));
        assert_eq!(Lang::parse("fr-FR"), Some(Lang::Fr));
        assert_eq!(Lang::parse("FR"), Some(Lang::Fr));
        assert_eq!(Lang::parse("de_DE.UTF-8"), None);
        assert_eq!(Lang::parse("C"), None);
        assert_eq!(Lang::default(), Lang::Fr);
    }

    fn rust_files(dir: &Path) -> Vec<std::path::PathBuf> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).expect("src lists") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                files.extend(rust_files(&path));
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
        files
    }

    /// Where the code names a catalogue id: the calls that format one, and the places
    /// that choose one to format later (a match arm, an error value, a problem's id set
    /// afterwards, a literal alone on its line as an argument or a branch's value). The
    /// second kind counts only literals shaped like an id (`word-word`), so that other
    /// strings there (an egui id salt is never in those places) are not taken for one.
    const CALLS: [&str; 4] = [".t(", ".t_args(", "Problem::new(", "Notice::new("];
    const CHOICES: [&str; 7] = ["=> ", "=> (", "Err(", "Some(", ".id = ", "id: ", "\n"];

    /// The ids the code in `text` names (see [`CALLS`] and [`CHOICES`]), each once.
    fn used_ids(text: &str) -> std::collections::BTreeSet<String> {
        let mut ids = std::collections::BTreeSet::new();
        for (openings, shaped) in [(&CALLS[..], false), (&CHOICES[..], true)] {
            for opening in openings {
                let opening = opening.replace("\\n", "\n");
                let mut rest = text;
                while let Some(at) = rest.find(&opening) {
                    rest = &rest[at + opening.len()..];
                    let literal = rest.trim_start_matches([' ', '\n']);
                    let Some(literal) = literal.strip_prefix('"') else {
                        continue;
                    };
                    let Some(end) = literal.find('"') else {
                        continue;
                    };
                    let id = &literal[..end];
                    if looks_like_id(id, shaped) {
                        ids.insert(id.to_owned());
                    }
                }
            }
        }
        ids
    }

    /// Whether `id` may be a catalogue id; `shaped`: only one of the catalogue's shape.
    fn looks_like_id(id: &str, shaped: bool) -> bool {
        if id.is_empty() || id.contains(char::is_whitespace) {
            return false;
        }
        !shaped
            || (id.contains('-')
                && id.starts_with(|c: char| c.is_ascii_lowercase())
                && id
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'))
    }

    #[test]
    fn the_scan_sees_ids_chosen_before_they_are_formatted() {
        let code = r#"
            let a = tr.t("one-id");
            let b = tr.t_args(
                "two-id",
                &[],
            );
            let c = match x { X => "three-id", Y => ("four-id", 1) };
            problem.id = "five-id";
            return Err("six-id");
            let d = if y {
                "seven-id" // a branch
            } else { Some("eight-id") };
            Notice::new("nine-id", &[]);
            ui.id_salt("not-counted");
        "#;
        let found: Vec<String> = used_ids(code).into_iter().collect();
        let expected = [
            "eight-id", "five-id", "four-id", "nine-id", "one-id", "seven-id", "six-id",
            "three-id", "two-id",
        ];
        assert_eq!(found, expected);
    }
}
