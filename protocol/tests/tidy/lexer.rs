//! The function-length check, and the lexer it and the import-circle check read Rust with.

use std::fmt::Write as _;

use super::{read, rust_files};

/// Past this many lines a function usually holds two steps (TigerBeetle's hard limit is
/// 70). Longer functions are reported on standard error as a prompt to look, not a failure.
const FUNCTION_LINES_TARGET: usize = 70;

/// A function over this many lines fails the test: it is two steps and must be split.
const FUNCTION_LINES_MAX: usize = 100;

/// Directories whose functions are not measured: the fuzz targets are a separate workspace
/// whose shape follows `cargo fuzz`. Generated code (prost's output) lives under `target/`
/// and is never walked.
const FUNCTION_LINES_SKIPPED_DIRS: &[&str] = &["protocol/fuzz"];

/// Every function, tests included, is measured from the line of its `fn` keyword to the line
/// of its closing brace, both included. Over `FUNCTION_LINES_TARGET` lines it is reported on
/// standard error; over `FUNCTION_LINES_MAX` it fails the test. Braces inside strings,
/// characters and comments do not count.
#[test]
fn functions_stay_short() {
    let mut over_target = String::new();
    let mut over_max = String::new();
    for file in rust_files() {
        if FUNCTION_LINES_SKIPPED_DIRS
            .iter()
            .any(|dir| file.relative.starts_with(dir))
        {
            continue;
        }
        let relative = file.relative.to_string_lossy();
        let tokens = tokenize(&read(&file.absolute));
        if !braces_balance(&tokens) {
            let _ = writeln!(
                over_max,
                "  {relative}: its braces do not balance as tidy reads them; \
                 a syntax error, or a literal that tidy's lexer misreads"
            );
        }
        for function in functions(&tokens) {
            if function.lines <= FUNCTION_LINES_TARGET {
                continue;
            }
            let place = format!(
                "  {relative}:{} {} is {} lines",
                function.line, function.name, function.lines
            );
            if function.lines <= FUNCTION_LINES_MAX {
                let _ = writeln!(over_target, "{place}");
            } else {
                let _ = writeln!(over_max, "{place}; split it into its steps");
            }
        }
    }
    if !over_target.is_empty() {
        eprintln!(
            "functions over {FUNCTION_LINES_TARGET} lines (a prompt to look, not a failure):\n{over_target}"
        );
    }
    assert!(
        over_max.is_empty(),
        "functions over {FUNCTION_LINES_MAX} lines:\n{over_max}"
    );
}

// Function lengths.

/// Whether every `{` has its `}`: a compiled file always balances, so a file that does not is
/// one that the lexer misread, and whose function lengths cannot be trusted.
fn braces_balance(tokens: &[Token]) -> bool {
    let mut depth = 0usize;
    for token in tokens {
        match token.kind {
            Kind::Punct('{') => depth += 1,
            Kind::Punct('}') => match depth.checked_sub(1) {
                Some(outer) => depth = outer,
                None => return false,
            },
            _ => {}
        }
    }
    depth == 0
}

/// A function with a body: its name, the line of its `fn` keyword, and its length in lines.
#[derive(Debug, PartialEq)]
struct Function {
    name: String,
    line: usize,
    lines: usize,
}

/// Every function with a body, at any depth: free, in `impl` and trait blocks, in nested
/// modules and inside other functions. Declarations without a body (`fn f();`) and
/// function-pointer types (`fn(u8)`) are not functions here.
fn functions(tokens: &[Token]) -> Vec<Function> {
    let mut found = Vec::new();
    for (index, token) in tokens.iter().enumerate() {
        if !is_ident(tokens, index, "fn") {
            continue;
        }
        let Some(name) = ident_at(tokens, index + 1) else {
            continue;
        };
        let Some(close) = body_start(tokens, index + 2).and_then(|open| closing(tokens, open))
        else {
            continue;
        };
        found.push(Function {
            name: name.to_owned(),
            line: token.line,
            lines: tokens[close].line - token.line + 1,
        });
    }
    found
}

/// The `{` that opens the body of the function whose signature starts at `from`, or `None`
/// for a declaration without a body. Parentheses and brackets are skipped so that an array
/// type's `;` does not end the signature.
fn body_start(tokens: &[Token], from: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (index, token) in tokens.iter().enumerate().skip(from) {
        match token.kind {
            Kind::Punct('(' | '[') => depth += 1,
            Kind::Punct(')' | ']') => depth = depth.checked_sub(1)?,
            Kind::Punct('{') if depth == 0 => return Some(index),
            Kind::Punct(';' | '}') if depth == 0 => return None,
            _ => {}
        }
    }
    None
}

// Tokens: just enough of Rust's lexical grammar that braces and paths inside comments,
// strings and character literals are never mistaken for code.

/// One token of Rust source and the line it starts on.
#[derive(Debug)]
pub(crate) struct Token {
    pub(crate) kind: Kind,
    pub(crate) line: usize,
}

#[derive(Debug, PartialEq)]
pub(crate) enum Kind {
    /// An identifier or keyword; a raw identifier keeps its `r#` so it is never a keyword.
    Ident(String),
    /// `::`.
    PathSeparator,
    /// A string, character or number literal, whose content never matters here.
    Literal,
    Lifetime,
    Punct(char),
}

/// Splits source text into tokens, dropping whitespace and comments (doc comments included).
pub(crate) fn tokenize(text: &str) -> Vec<Token> {
    let mut lexer = Lexer {
        chars: text.chars().collect(),
        at: 0,
        line: 1,
        tokens: Vec::new(),
    };
    while let Some(c) = lexer.peek(0) {
        lexer.step(c);
    }
    lexer.tokens
}

struct Lexer {
    chars: Vec<char>,
    at: usize,
    line: usize,
    tokens: Vec<Token>,
}

impl Lexer {
    fn step(&mut self, c: char) {
        let line = self.line;
        match c {
            '/' if self.peek(1) == Some('/') => {
                while self.peek(0).is_some_and(|c| c != '\n') {
                    self.bump();
                }
            }
            '/' if self.peek(1) == Some('*') => self.block_comment(),
            '"' => {
                self.bump();
                self.quoted('"');
                self.push(Kind::Literal, line);
            }
            '\'' => self.character_or_lifetime(),
            ':' if self.peek(1) == Some(':') => {
                self.bump();
                self.bump();
                self.push(Kind::PathSeparator, line);
            }
            c if c.is_ascii_digit() => {
                self.word();
                self.push(Kind::Literal, line);
            }
            c if c == '_' || c.is_alphabetic() => self.identifier_or_prefixed_literal(),
            c if c.is_whitespace() => {
                self.bump();
            }
            c => {
                self.bump();
                self.push(Kind::Punct(c), line);
            }
        }
    }

    fn peek(&self, ahead: usize) -> Option<char> {
        self.chars.get(self.at + ahead).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek(0)?;
        self.at += 1;
        if c == '\n' {
            self.line += 1;
        }
        Some(c)
    }

    fn push(&mut self, kind: Kind, line: usize) {
        self.tokens.push(Token { kind, line });
    }

    /// Consumes letters, digits and underscores: an identifier or a number's digits and suffix.
    fn word(&mut self) -> String {
        let mut word = String::new();
        while let Some(c) = self.peek(0).filter(|c| *c == '_' || c.is_alphanumeric()) {
            word.push(c);
            self.bump();
        }
        word
    }

    /// Block comments nest in Rust, unlike in C.
    fn block_comment(&mut self) {
        let mut depth = 0usize;
        while let Some(c) = self.bump() {
            if c == '/' && self.peek(0) == Some('*') {
                self.bump();
                depth += 1;
            } else if c == '*' && self.peek(0) == Some('/') {
                self.bump();
                depth -= 1;
                if depth == 0 {
                    return;
                }
            }
        }
    }

    /// The rest of a quoted literal after its opening quote, escapes included.
    fn quoted(&mut self, close: char) {
        while let Some(c) = self.bump() {
            if c == '\\' {
                self.bump();
            } else if c == close {
                return;
            }
        }
    }

    /// The rest of a raw string after its `r`: `#`s, a quote, and the text up to a quote
    /// followed by as many `#`s. Escapes do not exist in raw strings.
    fn raw_string(&mut self) {
        let mut hashes = 0;
        while self.peek(0) == Some('#') {
            self.bump();
            hashes += 1;
        }
        self.bump();
        while let Some(c) = self.bump() {
            if c == '"' && (0..hashes).all(|ahead| self.peek(ahead) == Some('#')) {
                for _ in 0..hashes {
                    self.bump();
                }
                return;
            }
        }
    }

    /// `'x'` and `'\n'` are characters, `'a` and `'static` are lifetimes or labels.
    fn character_or_lifetime(&mut self) {
        let line = self.line;
        self.bump();
        if self.peek(0) == Some('\\') || self.peek(1) == Some('\'') {
            self.quoted('\'');
            self.push(Kind::Literal, line);
        } else {
            self.word();
            self.push(Kind::Lifetime, line);
        }
    }

    /// An identifier, or a literal that starts like one: `r"…"`, `r#"…"#`, `b"…"`, `b'…'`,
    /// `br"…"`, `c"…"`, `cr"…"`; and raw identifiers, `r#type`.
    fn identifier_or_prefixed_literal(&mut self) {
        let line = self.line;
        let word = self.word();
        let raw_string_follows = || {
            let hashes = (0..)
                .take_while(|ahead| self.peek(*ahead) == Some('#'))
                .count();
            self.peek(hashes) == Some('"')
        };
        match (word.as_str(), self.peek(0)) {
            ("r" | "br" | "cr", Some('"' | '#')) if raw_string_follows() => {
                self.raw_string();
                self.push(Kind::Literal, line);
            }
            ("r", Some('#')) => {
                self.bump();
                let name = self.word();
                self.push(Kind::Ident(format!("r#{name}")), line);
            }
            ("b" | "c", Some(quote @ ('"' | '\''))) => {
                self.bump();
                self.quoted(quote);
                self.push(Kind::Literal, line);
            }
            _ => self.push(Kind::Ident(word), line),
        }
    }
}

pub(crate) fn is_ident(tokens: &[Token], index: usize, word: &str) -> bool {
    matches!(tokens.get(index), Some(Token { kind: Kind::Ident(w), .. }) if w == word)
}

pub(crate) fn is_punct(tokens: &[Token], index: usize, punct: char) -> bool {
    matches!(tokens.get(index), Some(Token { kind: Kind::Punct(p), .. }) if *p == punct)
}

pub(crate) fn ident_at(tokens: &[Token], index: usize) -> Option<&str> {
    match tokens.get(index) {
        Some(Token {
            kind: Kind::Ident(word),
            ..
        }) => Some(word),
        _ => None,
    }
}

/// The index of the bracket that closes the one at `open` (`{`, `(` or `[`), counting all
/// three kinds, or `None` when the file ends first.
pub(crate) fn closing(tokens: &[Token], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (index, token) in tokens.iter().enumerate().skip(open) {
        match token.kind {
            Kind::Punct('{' | '(' | '[') => depth += 1,
            Kind::Punct('}' | ')' | ']') => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(index);
                }
            }
            _ => {}
        }
    }
    None
}

// The checks' own tests, on synthetic sources.

/// Braces in strings, raw strings, characters and comments do not end or extend a function.
#[test]
fn function_length_ignores_braces_in_literals_and_comments() {
    let source = r####"
impl Parser {
    fn tricky(&self) -> usize {
        let open = "{ {{";
        let raw = r#"}" } "#;
        let bytes = br"}}";
        let brace = '{';
        let escaped = '\'';
        let label: &'static str = "}";
        // A stray } in a comment.
        /* and { nested /* } */ block comments */
        open.len() + raw.len()
    }

    fn declared(&self);
}

mod nested {
    fn pointer(callback: fn(u8) -> u8, table: [u8; 4]) -> u8 {
        callback(table[0])
    }
}
"####;
    let found = functions(&tokenize(source));
    let expected = [("tricky", 3, 11), ("pointer", 19, 3)];
    let expected: Vec<Function> = expected
        .iter()
        .map(|&(name, line, lines)| Function {
            name: name.to_owned(),
            line,
            lines,
        })
        .collect();
    assert_eq!(found, expected);
}
