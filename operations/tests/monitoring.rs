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

mod support;
use support::*;

const CONFIG: &str = "monitoring/prometheus/prometheus.yml";
const RECORDING_RULES: &str = "monitoring/prometheus/rules/recording.yml";
const ALERTING_RULES: &str = "monitoring/prometheus/rules/alerts.yml";
/// The example of each relaisd's configured retention (the Ansible role writes its own).
const RETENTION_RULES: &str = "monitoring/prometheus/rules/retention.yml";
const RULE_TESTS: &str = "monitoring/prometheus/tests";
const DASHBOARDS: &str = "monitoring/grafana/dashboards";
const RUNBOOKS: &str = "docs/runbooks";
/// Where the alerts' `runbook_url` links point: the runbooks as relaisd's package installs
/// them (the Ansible role replaces this base with `relais_runbook_base_url`).
const RUNBOOK_BASE_URL: &str = "file:///usr/share/doc/relaisd/runbooks";
const METRICS_DOC: &str = "docs/reference/metrics.md";
/// The files that register the exposition; every metric name the daemon emits is in them,
/// written in full as the Prometheus text format writes it.
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
    for rules in [RECORDING_RULES, ALERTING_RULES, RETENTION_RULES] {
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
        // The tests below the code use other names (the crate's names without suffixes);
        // `\n` escapes in strings would glue an `n` to the name that follows.
        let text = read(source).replace("\\n", " ");
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        emitted.extend(
            identifiers(code, false)
                .into_iter()
                .filter(|name| is_metric_name(name) && !name.ends_with('_')),
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
    for rules in [RECORDING_RULES, ALERTING_RULES, RETENTION_RULES] {
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
                !is_metric_name(&name) || documented.knows(&name)
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
        let page = format!("{RUNBOOKS}/{}.md", kebab_case(name));
        let expected = format!("{RUNBOOK_BASE_URL}/{}.md", kebab_case(name));
        if alert.runbook_url != expected {
            problems.push(format!("{name}: runbook_url must be {expected:?}"));
        } else if !root().join(&page).is_file() {
            problems.push(format!("{name}: {page} does not exist"));
        }
        used.insert(page);
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
