//! Checks `monitoring/` against the daemon's metrics: Prometheus accepts the configuration,
//! rules and rule unit tests; dashboards and rules use only metrics documented in
//! `docs/reference/metrics.md`; the documentation lists exactly what the daemon emits; and
//! every alert has its annotations and a runbook.
//!
//! The rules files are read with a small line-based reader, not a YAML library: they are
//! written in a plain subset of YAML (one `key: value` per line, `|` blocks for long
//! expressions), and the test cross-checks its count of rules against promtool's own.
//! These tests need `promtool` (Debian's `prometheus` package); they fail without it.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const CONFIG: &str = "monitoring/prometheus/prometheus.yml";
const RECORDING_RULES: &str = "monitoring/prometheus/rules/recording.yml";
const ALERTING_RULES: &str = "monitoring/prometheus/rules/alerts.yml";
const RULE_TESTS: &str = "monitoring/prometheus/tests";
const DASHBOARDS: &str = "monitoring/grafana/dashboards";
const RUNBOOKS: &str = "docs/runbooks";
const METRICS_DOC: &str = "docs/reference/metrics.md";
/// The files that write the exposition; every metric name the daemon emits is in them.
const EXPOSITION_SOURCES: &[&str] = &[
    "daemon/src/metrics/render.rs",
    "daemon/src/metrics/process.rs",
];
/// Series a histogram adds to its base name.
const HISTOGRAM_SUFFIXES: &[&str] = &["_bucket", "_sum", "_count"];
const SEVERITIES: &[&str] = &["critical", "warning"];

#[test]
fn promtool_accepts_the_configuration_rules_and_rule_tests() {
    promtool_succeeds(&["check", "config", CONFIG]);
    for rules in [RECORDING_RULES, ALERTING_RULES] {
        let output = promtool_succeeds(&["check", "rules", rules]);
        let found = promtool_rule_count(&output);
        let read = yaml_entries(&read(rules))
            .iter()
            .filter(|e| e.item && (e.key == "record" || e.key == "alert"))
            .count();
        assert_eq!(
            found, read,
            "{rules}: promtool finds {found} rules but this test reads {read}; \
             keep one `- record:` or `- alert:` line per rule"
        );
    }
    let tests = files_with_extension(RULE_TESTS, "yml");
    assert!(!tests.is_empty(), "no rule unit tests in {RULE_TESTS}");
    for test in tests {
        promtool_succeeds(&["test", "rules", &test]);
    }
}

#[test]
fn rule_unit_tests_cover_every_rule() {
    let mut tested = BTreeMap::<String, Coverage>::new();
    let mut sampled = BTreeSet::new();
    for test in files_with_extension(RULE_TESTS, "yml") {
        for block in alert_test_blocks(&read(&test)) {
            let coverage = tested.entry(block.alertname).or_default();
            coverage.quiet |= block.severities.is_empty();
            coverage.firing.extend(block.severities);
        }
        for entry in yaml_entries(&read(&test)) {
            if entry.key == "labels" {
                sampled.insert(metric_name_of_series(&entry.value));
            }
        }
    }
    let mut missing = Vec::new();
    for alert in alerts() {
        let coverage = tested.get(&alert.name);
        if !coverage.is_some_and(|c| c.quiet) {
            missing.push(format!("{}: no test where it does not fire", alert.name));
        }
        if !coverage.is_some_and(|c| c.firing.contains(&alert.severity)) {
            missing.push(format!(
                "{} (severity {}): no test where it fires",
                alert.name, alert.severity
            ));
        }
    }
    for record in recording_rule_names() {
        if !sampled.contains(&record) {
            missing.push(format!(
                "{record}: no expected value in any promql_expr_test"
            ));
        }
    }
    assert!(
        missing.is_empty(),
        "rules without unit tests in {RULE_TESTS}:\n  {}",
        missing.join("\n  ")
    );
}

#[test]
fn the_metrics_reference_lists_exactly_what_the_daemon_emits() {
    let documented = documented_metrics().names;
    let mut emitted = BTreeSet::new();
    for source in EXPOSITION_SOURCES {
        // `\n` escapes in the format strings would glue an `n` to the name that follows.
        emitted.extend(
            identifiers(&read(source).replace("\\n", " "), false)
                .into_iter()
                .filter(|name| name.starts_with("relais_")),
        );
    }
    let undocumented: Vec<_> = emitted.difference(&documented).collect();
    let stale: Vec<_> = documented.difference(&emitted).collect();
    assert!(
        undocumented.is_empty() && stale.is_empty(),
        "{METRICS_DOC} and {EXPOSITION_SOURCES:?} disagree\n  \
         emitted but not documented (add a `### name` section): {undocumented:?}\n  \
         documented but not emitted (remove its section): {stale:?}"
    );
}

#[test]
fn dashboards_are_grafana_json_with_valid_promql() {
    let dashboards = files_with_extension(DASHBOARDS, "json");
    assert!(!dashboards.is_empty(), "no dashboards in {DASHBOARDS}");
    let mut uids = BTreeSet::new();
    let mut rules = Vec::new();
    for path in &dashboards {
        let dashboard = dashboard(path);
        let uid = dashboard["uid"].as_str().unwrap_or_default().to_owned();
        assert!(!uid.is_empty(), "{path}: no `uid`");
        assert!(uids.insert(uid.clone()), "{path}: uid {uid} is used twice");
        assert!(
            dashboard["schemaVersion"].as_u64().is_some(),
            "{path}: no `schemaVersion`"
        );
        let variables = dashboard["templating"]["list"].as_array();
        assert!(
            variables.is_some_and(|list| list
                .iter()
                .any(|v| v["name"] == "datasource" && v["type"] == "datasource")),
            "{path}: needs a `datasource` variable of type datasource"
        );
        let panels = dashboard["panels"].as_array().cloned().unwrap_or_default();
        assert!(!panels.is_empty(), "{path}: no panels");
        for panel in panels.iter().filter(|p| p["type"] != "row") {
            let title = panel["title"].as_str().unwrap_or_default();
            assert!(
                matches!(panel["type"].as_str(), Some("timeseries" | "stat")),
                "{path}: panel {title:?} is neither timeseries nor stat"
            );
            assert_eq!(
                panel["datasource"]["uid"], "${datasource}",
                "{path}: panel {title:?} must use the `datasource` variable"
            );
            let targets = panel["targets"].as_array().cloned().unwrap_or_default();
            assert!(!targets.is_empty(), "{path}: panel {title:?} has no query");
            for target in targets {
                let expr = target["expr"].as_str().unwrap_or_default();
                assert!(
                    !expr.is_empty(),
                    "{path}: panel {title:?} has an empty query"
                );
                rules.push(serde_json::json!({
                    "record": format!("dashboard_query_{}", rules.len()),
                    "expr": grafana_to_promql(expr),
                }));
            }
        }
    }
    // Every dashboard query goes through Prometheus's own parser, as a recording rule
    // (JSON is YAML, so promtool reads the file as it is).
    let file = std::env::temp_dir().join(format!("relais-dashboards-{}.json", std::process::id()));
    let groups = serde_json::json!({ "groups": [{ "name": "dashboards", "rules": rules }] });
    fs::write(&file, groups.to_string()).expect("cannot write to the temporary directory");
    let checked = promtool(&["check", "rules", &file.to_string_lossy()]);
    let _ = fs::remove_file(&file);
    assert!(
        checked.status.success(),
        "a dashboard query is not valid PromQL:\n{}",
        describe(&checked)
    );
}

#[test]
fn dashboards_and_rules_use_only_documented_metrics() {
    let documented = documented_metrics();
    let records = recording_rule_names();
    let mut queries = Vec::new();
    for path in files_with_extension(DASHBOARDS, "json") {
        let mut found = Vec::new();
        collect_queries(&dashboard(&path), &mut found);
        queries.extend(found.into_iter().map(|q| (path.clone(), q)));
    }
    for rules in [RECORDING_RULES, ALERTING_RULES] {
        for entry in yaml_entries(&read(rules)) {
            if entry.key == "expr" {
                queries.push((rules.to_owned(), entry.value));
            }
        }
    }
    let mut unknown = Vec::new();
    for (file, query) in &queries {
        for name in identifiers(query, true) {
            let known = if name.contains(':') {
                records.contains(&name)
            } else {
                !name.starts_with("relais_") || documented.knows(&name)
            };
            if !known {
                unknown.push(format!("{file}: {name} in `{}`", query.trim()));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "metrics neither documented in {METRICS_DOC} nor recorded in {RECORDING_RULES}:\n  {}",
        unknown.join("\n  ")
    );
}

#[test]
fn every_alert_has_annotations_and_a_runbook() {
    let alerts = alerts();
    assert!(!alerts.is_empty(), "no alerts in {ALERTING_RULES}");
    let mut problems = Vec::new();
    let mut used = BTreeSet::new();
    for alert in &alerts {
        let name = &alert.name;
        if !SEVERITIES.contains(&alert.severity.as_str()) {
            problems.push(format!("{name}: severity must be one of {SEVERITIES:?}"));
        }
        for (field, value) in [
            ("summary", &alert.summary),
            ("description", &alert.description),
        ] {
            if value.trim().is_empty() {
                problems.push(format!("{name}: no `{field}` annotation"));
            }
        }
        let expected = format!("{RUNBOOKS}/{}.md", kebab_case(name));
        if alert.runbook_url != expected {
            problems.push(format!("{name}: runbook_url must be {expected:?}"));
        } else if !root().join(&alert.runbook_url).is_file() {
            problems.push(format!("{name}: {} does not exist", alert.runbook_url));
        }
        used.insert(alert.runbook_url.clone());
    }
    for page in files_with_extension(RUNBOOKS, "md") {
        if !used.contains(&page) {
            problems.push(format!("{page}: no alert links to this runbook"));
        }
    }
    assert!(
        problems.is_empty(),
        "alerts in {ALERTING_RULES}:\n  {}",
        problems.join("\n  ")
    );
}

// ----------------------------------------------------------------------------- promtool

/// Runs promtool in the workspace root, so that its messages show the repository's paths.
fn promtool(args: &[&str]) -> Output {
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

fn promtool_succeeds(args: &[&str]) -> String {
    let output = promtool(args);
    assert!(
        output.status.success(),
        "`promtool {}` failed:\n{}",
        args.join(" "),
        describe(&output)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn describe(output: &Output) -> String {
    format!(
        "status: {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The `N` of promtool's `SUCCESS: N rules found`.
fn promtool_rule_count(stdout: &str) -> usize {
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
fn grafana_to_promql(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$__range", "1h")
        .replace("$instance", ".*")
}

// ---------------------------------------------------------------------- what is defined

/// The metrics documented in `docs/reference/metrics.md`, one `### relais_...` heading each.
struct Documented {
    names: BTreeSet<String>,
    histograms: BTreeSet<String>,
}

impl Documented {
    /// Whether a series name belongs to a documented metric (a histogram's included).
    fn knows(&self, name: &str) -> bool {
        self.names.contains(name)
            || HISTOGRAM_SUFFIXES.iter().any(|suffix| {
                name.strip_suffix(suffix)
                    .is_some_and(|base| self.histograms.contains(base))
            })
    }
}

fn documented_metrics() -> Documented {
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
                .filter(|name| name.starts_with("relais_"))
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
        "{METRICS_DOC}: no `### relais_` headings"
    );
    documented
}

fn recording_rule_names() -> BTreeSet<String> {
    yaml_entries(&read(RECORDING_RULES))
        .into_iter()
        .filter(|e| e.key == "record")
        .map(|e| e.value)
        .collect()
}

#[derive(Debug, Default)]
struct Alert {
    name: String,
    severity: String,
    summary: String,
    description: String,
    runbook_url: String,
}

fn alerts() -> Vec<Alert> {
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
struct Coverage {
    /// Some test expects no alert at some time.
    quiet: bool,
    /// Severities some test expects firing.
    firing: BTreeSet<String>,
}

/// One `alert_rule_test` item: the alert and the severities expected firing (none: quiet).
struct AlertTest {
    alertname: String,
    severities: Vec<String>,
}

fn alert_test_blocks(text: &str) -> Vec<AlertTest> {
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
fn metric_name_of_series(series: &str) -> String {
    series
        .split('{')
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// `RelaisRelayLatencySLOBurn` → `relais-relay-latency-slo-burn`.
fn kebab_case(name: &str) -> String {
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
struct Entry {
    item: bool,
    key: String,
    value: String,
}

fn yaml_entries(text: &str) -> Vec<Entry> {
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

fn unquote(value: &str) -> &str {
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
fn identifiers(text: &str, skip_strings: bool) -> Vec<String> {
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
        .filter(|n| n.contains("relais_"))
        .collect()
}

/// Every PromQL query of a dashboard: panel targets and template variable queries.
fn collect_queries(value: &serde_json::Value, out: &mut Vec<String>) {
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

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(relative: &str) -> String {
    let path = root().join(relative);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn dashboard(relative: &str) -> serde_json::Value {
    serde_json::from_str(&read(relative))
        .unwrap_or_else(|e| panic!("{relative} is not valid JSON: {e}"))
}

/// Files of a directory with an extension, as sorted paths relative to the workspace root.
fn files_with_extension(directory: &str, extension: &str) -> Vec<String> {
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
