//! A strict reader of OpenMetrics 1.0 text, for the tests: it panics, saying which line and
//! which rule, on anything the specification forbids that an exposition could get wrong.

use std::collections::BTreeSet;

/// One metric family of an exposition.
#[derive(Debug)]
pub struct Family {
    pub name: String,
    pub kind: String,
    pub unit: Option<String>,
    /// Sample name, labels as written (without braces), value.
    pub samples: Vec<(String, String, f64)>,
}

impl Family {
    /// The name its samples are known by in the Prometheus text format, and in
    /// `docs/reference/metrics.md`: a counter's with `_total`, an info's with `_info`.
    pub fn exposed_name(&self) -> String {
        match self.kind.as_str() {
            "counter" => format!("{}_total", self.name),
            "info" => format!("{}_info", self.name),
            _ => self.name.clone(),
        }
    }
}

/// Reads `page`, checking: one `# EOF` that ends it, and no empty line; each family's
/// metadata (`# TYPE` once, before its samples; `# UNIT` a suffix of its name) and samples
/// together, never reopened; sample names that are the family's name with a suffix its
/// type allows (a counter's `_total`, never on the family's own name); numeric values; and
/// histograms' buckets in increasing order of `le`, ending with `+Inf` equal to `_count`.
pub fn parse(page: &str) -> Vec<Family> {
    let body = page
        .strip_suffix("# EOF\n")
        .unwrap_or_else(|| panic!("an OpenMetrics exposition ends with `# EOF`:\n{page}"));
    let mut families: Vec<Family> = Vec::new();
    let mut seen = BTreeSet::new();
    for (number, line) in body.lines().enumerate() {
        let at = format!("line {}: {line:?}", number + 1);
        assert!(
            !line.is_empty() && !line.contains('\r'),
            "{at}: empty line or CR"
        );
        match line.strip_prefix("# ") {
            Some(meta) => metadata(&mut families, &mut seen, meta, &at),
            None => {
                let family = families.last_mut();
                sample(
                    family.unwrap_or_else(|| panic!("{at}: a sample before any TYPE")),
                    line,
                    &at,
                );
            }
        }
    }
    for family in &families {
        assert!(!family.kind.is_empty(), "{}: no TYPE", family.name);
        assert!(
            !family.name.ends_with("_total"),
            "{}: family named _total",
            family.name
        );
        if family.kind == "histogram" {
            check_buckets(family);
        }
    }
    families
}

/// A `# HELP`, `# TYPE` or `# UNIT` line, which opens a family unless it continues the last.
fn metadata(families: &mut Vec<Family>, seen: &mut BTreeSet<String>, meta: &str, at: &str) {
    let mut words = meta.splitn(3, ' ');
    let (keyword, name) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let rest = words.next().unwrap_or("");
    assert_ne!(keyword, "EOF", "{at}: `# EOF` before the end");
    if families.last().is_none_or(|f| f.name != name) {
        assert!(seen.insert(name.to_owned()), "{at}: family {name} reopened");
        families.push(Family {
            name: name.to_owned(),
            kind: String::new(),
            unit: None,
            samples: Vec::new(),
        });
    }
    let family = families.last_mut().expect("pushed above");
    assert!(family.samples.is_empty(), "{at}: metadata after samples");
    match keyword {
        "TYPE" => {
            assert!(family.kind.is_empty(), "{at}: second TYPE");
            family.kind = rest.to_owned();
        }
        "UNIT" => {
            assert!(
                name.ends_with(&format!("_{rest}")),
                "{at}: unit not a suffix"
            );
            family.unit = Some(rest.to_owned());
        }
        "HELP" => {}
        other => panic!("{at}: unknown metadata {other}"),
    }
}

/// A sample line of `family`: `name{labels} value`, without timestamps or exemplars.
fn sample(family: &mut Family, line: &str, at: &str) {
    let (series, value) = line
        .rsplit_once(' ')
        .unwrap_or_else(|| panic!("{at}: no value"));
    let value: f64 = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other.parse().unwrap_or_else(|_| panic!("{at}: value")),
    };
    let (name, labels) = match series.split_once('{') {
        Some((name, labels)) => {
            let labels = labels.strip_suffix('}');
            (name, labels.unwrap_or_else(|| panic!("{at}: labels")))
        }
        None => (series, ""),
    };
    let suffix = name
        .strip_prefix(family.name.as_str())
        .unwrap_or_else(|| panic!("{at}: not a sample of family {}", family.name));
    let allowed: &[&str] = match family.kind.as_str() {
        "counter" => &["_total", "_created"],
        "gauge" | "unknown" => &[""],
        "histogram" => &["_bucket", "_count", "_sum", "_created"],
        "info" => &["_info"],
        other => panic!("{at}: type {other:?} not used by relaisd"),
    };
    assert!(
        allowed.contains(&suffix),
        "{at}: suffix {suffix:?} for a {}",
        family.kind
    );
    family
        .samples
        .push((name.to_owned(), labels.to_owned(), value));
}

/// A histogram without labels of its own: `le` increasing to `+Inf`, which equals `_count`.
fn check_buckets(family: &Family) {
    let name = &family.name;
    let mut last = f64::NEG_INFINITY;
    let mut count_at_infinity = None;
    for (sample, labels, value) in &family.samples {
        if *sample != format!("{name}_bucket") {
            continue;
        }
        let le = labels
            .strip_prefix("le=\"")
            .and_then(|l| l.strip_suffix('"'))
            .unwrap_or_else(|| panic!("{name}: bucket labels {labels}"));
        let bound: f64 = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().unwrap_or_else(|_| panic!("{name}: le {le}"))
        };
        assert!(bound > last, "{name}: le {le} out of order");
        last = bound;
        if bound.is_infinite() {
            count_at_infinity = Some(*value);
        }
    }
    let count = family
        .samples
        .iter()
        .find(|(sample, _, _)| *sample == format!("{name}_count"))
        .map(|(_, _, value)| *value);
    assert!(count_at_infinity.is_some(), "{name}: no +Inf bucket");
    assert_eq!(
        count_at_infinity, count,
        "{name}: +Inf bucket and _count differ"
    );
}
