//! The client port as a TLS scanner sees it: Debian's testssl.sh runs against a live
//! relaisd (TLS, then HTTP and the WebSocket upgrade), and any finding it rates worse than
//! OK fails the test unless it is in the accepted list below, with its reason.
//!
//! The scan covers protocols, cipher categories, forward secrecy, server preferences,
//! server defaults (certificate and chain), HTTP headers and the known vulnerabilities;
//! it leaves out the per-cipher enumeration, which triples the time for nothing more
//! here (one TLS 1.3 stack, whose suites the categories already cover).

use std::process::Command;

use relais_testkit::Daemon;
use serde_json::Value;

/// Findings rated worse than OK that a daemon on loopback, with the test harness's
/// development certificate, is expected to get; each with why it is accepted.
const ACCEPTED: &[(&str, &str)] = &[
    (
        "engine_problem",
        "about the scanner's own OpenSSL build (no GOST engine), not about the server",
    ),
    (
        "cert_validityPeriod",
        "the development certificate keeps rcgen's default validity (until 4096); an installation uses certificates from its own PKI",
    ),
    (
        "cert_revocation",
        "the development CA publishes no CRL or OCSP responder; revocation belongs to the installation's PKI",
    ),
    (
        "DNS_CAArecord",
        "127.0.0.1 has no DNS name that could hold a CAA record",
    ),
    (
        "HSTS",
        "HSTS instructs browsers, and no browser uses the client port: clients are applications speaking WebSocket, which never fall back to plain HTTP",
    ),
    (
        "security_headers",
        "the port serves no HTML (only /healthz, /readyz and the WebSocket upgrade), so headers such as X-Frame-Options or a CSP protect nothing",
    ),
];

/// Checks that must have run and passed, so that a scan that silently skipped its work
/// cannot pass (ids of testssl 3.0, Debian 12's version).
const REQUIRED_CHECKS: &[&str] = &[
    "TLS1_3",
    "cipherlist_STRONG",
    "PFS",
    "cert_chain_of_trust",
    "heartbleed",
    "CCS",
    "ticketbleed",
    "ROBOT",
    "secure_renego",
    "CRIME_TLS",
    "BREACH",
    "POODLE_SSL",
    "fallback_SCSV",
    "FREAK",
    "DROWN",
    "LOGJAM",
    "BEAST",
    "LUCKY13",
    "RC4",
];

#[test]
fn testssl_finds_nothing_worse_than_ok_and_only_tls_1_3_is_offered() {
    let testssl_present = Command::new("testssl").arg("--version").output().is_ok();
    if !testssl_present {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "testssl is missing: scripts/test installs Debian's testssl.sh"
        );
        eprintln!("skipped: testssl is missing (apt-get install testssl.sh)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), "");
    let scan = |attempt: u32| -> Vec<Value> {
        let report = dir.path().join(format!("testssl-{attempt}.json"));
        let out = Command::new("testssl")
            .args(["--quiet", "--color", "0", "--warnings", "off"])
            // The chain is checked against the daemon's own CA, so a broken chain still fails.
            .arg("--add-ca")
            .arg(&daemon.ca)
            .arg("--jsonfile")
            .arg(&report)
            .args(["-p", "-s", "-f", "-P", "-S", "-h", "-U"])
            .arg(&daemon.addr)
            .output()
            .expect("run testssl");
        let text = std::fs::read_to_string(&report).unwrap_or_else(|e| {
            panic!(
                "testssl wrote no report ({e}): {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        serde_json::from_str(&text).expect("testssl's JSON report")
    };
    let field = |f: &Value, key: &str| f[key].as_str().unwrap_or_default().to_owned();
    let unexpected = |findings: &[Value]| -> Vec<String> {
        findings
            .iter()
            .filter(|f| !matches!(field(f, "severity").as_str(), "OK" | "INFO"))
            .filter(|f| !ACCEPTED.iter().any(|(id, _)| *id == field(f, "id")))
            .map(|f| {
                format!(
                    "{} {}: {}",
                    field(f, "severity"),
                    field(f, "id"),
                    field(f, "finding")
                )
            })
            .collect()
    };

    let mut findings = scan(1);
    let mut worse = unexpected(&findings);
    // testssl sometimes fails to open one of its hundreds of connections ("check failed
    // because of connect problem", seen on the session-ticket check on this loaded
    // 2-core machine). That is no finding about the server, but the check did not run:
    // scan once more, and then every check must have run and passed.
    if !worse.is_empty() && worse.iter().all(|w| w.contains("connect problem")) {
        eprintln!("testssl could not connect for {worse:?}; scanning again");
        findings = scan(2);
        worse = unexpected(&findings);
    }
    assert!(
        worse.is_empty(),
        "testssl findings worse than OK: {worse:#?}"
    );

    let finding = |id: &str| {
        findings
            .iter()
            .find(|f| field(f, "id") == id)
            .map(|f| (field(f, "severity"), field(f, "finding")))
            .unwrap_or_else(|| panic!("testssl reported nothing for {id}: did the check run?"))
    };
    for id in REQUIRED_CHECKS {
        let (severity, text) = finding(id);
        assert!(
            matches!(severity.as_str(), "OK" | "INFO"),
            "{id}: {severity} {text}"
        );
    }
    for old in ["SSLv2", "SSLv3", "TLS1", "TLS1_1", "TLS1_2"] {
        assert_eq!(finding(old).1, "not offered", "{old} is offered by default");
    }
    assert!(
        finding("TLS1_3").1.starts_with("offered"),
        "{:?}",
        finding("TLS1_3")
    );
}
