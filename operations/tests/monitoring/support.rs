//! Readers for the monitoring files: promtool runs, the metrics reference, rules, alerts
//! and their unit tests.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use super::*;

/// Runs promtool in the workspace root, so that its messages show the repository's paths.
pub fn promtool(args: &[&str]) -> Output {
    match Command::new("promtool")
        .args(args)
        .current_dir(root())
        .output()
    {
        Ok(output) => output,
        Err(e) => panic!(
            "cannot run promtool ({e}): install Debian's prometheus package \
             (`apt-get install prometheus`), which provides it; these tests never skip"
        ),
    }
}

pub fn promtool_succeeds(args: &[&str]) -> String {
    let output = promtool(args);
    assert!(
        output.status.success(),
        "`promtool {}` failed:\n{}",
        args.join(" "),
        describe(&output)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn describe(output: &Output) -> String {
    format!(
        "status: {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The `N` of promtool's `SUCCESS: N rules found`.
pub fn promtool_rule_count(stdout: &str) -> usize {
    stdout
        .lines()
        .find_map(|line| {
            line.trim()
                .strip_prefix("SUCCESS: ")?
                .strip_suffix(" rules found")?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no `SUCCESS: N rules found` in promtool's output:\n{stdout}"))
}

/// Replaces Grafana's variables with values Prometheus accepts.
pub fn grafana_to_promql(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$__range", "1h")
        .replace("$instance", ".*")
}

// ---------------------------------------------------------------------- what is defined

/// Whether a name is one of relaisd's metrics: its own (`relais_`), or the standard
/// process metrics (`process_`).
pub fn is_metric_name(name: &str) -> bool {
    name.starts_with("relais_") || name.starts_with("process_")
}

/// The metrics documented in `docs/reference/metrics.md`, one `### name` heading each.
pub struct Documented {
    pub names: BTreeSet<String>,
    pub histograms: BTreeSet<String>,
}

impl Documented {
    /// Whether a series name belongs to a documented metric (a histogram's included).
    pub fn knows(&self, name: &str) -> bool {
        self.names.contains(name)
            || HISTOGRAM_SUFFIXES.iter().any(|suffix| {
                name.strip_suffix(suffix)
                    .is_some_and(|base| self.histograms.contains(base))
            })
    }
}

pub fn documented_metrics() -> Documented {
    let text = read(METRICS_DOC);
    let mut documented = Documented {
        names: BTreeSet::new(),
        histograms: BTreeSet::new(),
    };
    let mut current: Option<String> = None;
    for line in text.lines() {
        if line.starts_with('#') {
            current = line
                .strip_prefix("### ")
                .filter(|name| is_metric_name(name))
                .map(|name| name.trim().to_owned());
            if let Some(name) = &current {
                assert!(
                    documented.names.insert(name.clone()),
                    "{METRICS_DOC}: {name} is documented twice"
                );
            }
        } else if let Some(name) = &current {
            // The first cell of the metric's table row is its type.
            if line.starts_with("| histogram |") {
                documented.histograms.insert(name.clone());
            }
        }
    }
    assert!(
        !documented.names.is_empty(),
        "{METRICS_DOC}: no `### relais_...` headings"
    );
    documented
}

pub fn recording_rule_names() -> BTreeSet<String> {
    [RECORDING_RULES, RETENTION_RULES]
        .iter()
        .flat_map(|rules| yaml_entries(&read(rules)))
        .filter(|e| e.key == "record")
        .map(|e| e.value)
        .collect()
}

#[derive(Debug, Default)]
pub struct Alert {
    pub name: String,
    pub severity: String,
    pub summary: String,
    pub description: String,
    pub runbook_url: String,
}

pub fn alerts() -> Vec<Alert> {
    let mut alerts: Vec<Alert> = Vec::new();
    for entry in yaml_entries(&read(ALERTING_RULES)) {
        if entry.key == "alert" {
            alerts.push(Alert {
                name: entry.value,
                ..Alert::default()
            });
            continue;
        }
        let Some(alert) = alerts.last_mut() else {
            continue;
        };
        match entry.key.as_str() {
            "severity" => alert.severity = entry.value,
            "summary" => alert.summary = entry.value,
            "description" => alert.description = entry.value,
            "runbook_url" => alert.runbook_url = entry.value,
            _ => {}
        }
    }
    alerts
}

/// Which outcomes of one alert the unit tests check.
#[derive(Debug, Default)]
pub struct Coverage {
    /// Some test expects no alert at some time.
    pub quiet: bool,
    /// Severities some test expects firing.
    pub firing: BTreeSet<String>,
}

/// One `alert_rule_test` item: the alert and the severities expected firing (none: quiet).
pub struct AlertTest {
    pub alertname: String,
    pub severities: Vec<String>,
}

pub fn alert_test_blocks(text: &str) -> Vec<AlertTest> {
    let mut blocks: Vec<AlertTest> = Vec::new();
    let mut inside = false;
    for entry in yaml_entries(text) {
        match (entry.item, entry.key.as_str()) {
            (true, "eval_time") => {
                inside = true;
                blocks.push(AlertTest {
                    alertname: String::new(),
                    severities: Vec::new(),
                });
            }
            (true, "interval" | "series" | "expr") => inside = false,
            (_, "alertname") if inside => {
                if let Some(block) = blocks.last_mut() {
                    block.alertname = entry.value;
                }
            }
            (_, "severity") if inside => {
                if let Some(block) = blocks.last_mut() {
                    block.severities.push(entry.value);
                }
            }
            _ => {}
        }
    }
    blocks
}

/// `name` in `name{labels}`.
pub fn metric_name_of_series(series: &str) -> String {
    series
        .split('{')
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// `RelaisRelayLatencySLOBurn` → `relais-relay-latency-slo-burn`.
pub fn kebab_case(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::new();
    for (i, c) in chars.iter().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            let after_lower = chars[i - 1].is_ascii_lowercase();
            let ends_acronym = chars[i - 1].is_ascii_uppercase()
                && chars.get(i + 1).is_some_and(|n| n.is_ascii_lowercase());
            if after_lower || ends_acronym {
                out.push('-');
            }
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

// ----------------------------------------------------------------------------- parsing

/// One `key: value` line of a YAML file; `item` when it opens a list item (`- key: value`).
/// A block scalar (`key: |`) has the indented lines that follow as its value.
pub struct Entry {
    pub item: bool,
    pub key: String,
    pub value: String,
}

pub fn yaml_entries(text: &str) -> Vec<Entry> {
    let lines: Vec<&str> = text.lines().collect();
    let mut entries = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        i += 1;
        let content = line.trim_start();
        if content.starts_with('#') {
            continue;
        }
        let (item, content) = match content.strip_prefix("- ") {
            Some(rest) => (true, rest.trim_start()),
            None => (false, content),
        };
        let Some((key, value)) = content.split_once(':') else {
            continue;
        };
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let indent = line.len() - content.len();
        let value = value.trim();
        let value = if value.starts_with('|') || value.starts_with('>') {
            let mut block = Vec::new();
            while i < lines.len() {
                let next = lines[i];
                let next_indent = next.len() - next.trim_start().len();
                if !next.trim().is_empty() && next_indent <= indent {
                    break;
                }
                block.push(next.trim());
                i += 1;
            }
            block.join("\n").trim().to_owned()
        } else {
            unquote(value).to_owned()
        };
        entries.push(Entry {
            item,
            key: key.to_owned(),
            value,
        });
    }
    entries
}

pub fn unquote(value: &str) -> &str {
    for quote in ['"', '\''] {
        if let Some(inner) = value
            .strip_prefix(quote)
            .and_then(|v| v.strip_suffix(quote))
        {
            return inner;
        }
    }
    value
}

/// Names in a PromQL expression or source text: runs of letters, digits, `_` and `:`.
/// With `skip_strings`, quoted strings (label values, in PromQL) are left out.
pub fn identifiers(text: &str, skip_strings: bool) -> Vec<String> {
    let mut names = Vec::new();
    let mut current = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            current.push(c);
            continue;
        }
        if !current.is_empty() {
            names.push(std::mem::take(&mut current));
        }
        if skip_strings && matches!(c, '"' | '\'' | '`') {
            let mut escaped = false;
            for inner in chars.by_ref() {
                if inner == c && !escaped {
                    break;
                }
                escaped = inner == '\\' && !escaped;
            }
        }
    }
    if !current.is_empty() {
        names.push(current);
    }
    names
        .into_iter()
        .filter(|n| n.contains("relais_") || n.starts_with("process_"))
        .collect()
}

/// Every PromQL query of a dashboard: panel targets and template variable queries.
pub fn collect_queries(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, inner) in map {
                match (key.as_str(), inner.as_str()) {
                    ("expr" | "query" | "definition", Some(query)) => out.push(query.to_owned()),
                    _ => collect_queries(inner, out),
                }
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                collect_queries(item, out);
            }
        }
        _ => {}
    }
}

// ------------------------------------------------------------------------------- files

pub fn root() -> &'static Path {
    relais_testkit::repository()
}

pub fn read(relative: &str) -> String {
    let path = root().join(relative);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

pub fn dashboard(relative: &str) -> serde_json::Value {
    serde_json::from_str(&read(relative))
        .unwrap_or_else(|e| panic!("{relative} is not valid JSON: {e}"))
}

/// Files of a directory with an extension, as sorted paths relative to the workspace root.
pub fn files_with_extension(directory: &str, extension: &str) -> Vec<String> {
    let path = root().join(directory);
    let entries =
        fs::read_dir(&path).unwrap_or_else(|e| panic!("cannot list {}: {e}", path.display()));
    let mut files: Vec<String> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == extension))
        .filter_map(|p| Some(format!("{directory}/{}", p.file_name()?.to_str()?)))
        .collect();
    files.sort();
    files
}
