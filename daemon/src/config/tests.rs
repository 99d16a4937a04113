//! Configuration parsing and checking, table-driven.

use super::*;

/// An appliance's configuration: the keys are systemd credentials.
const MINIMAL: &str = "domain = \"example.gouv.fr\"\n";
/// A development configuration with plain key files.
const FILES: &str = "domain = \"example.gouv.fr\"\n[tls]\ncertificate = \"/c.pem\"\nprivate_key = \"/k.pem\"\n[keys]\nsource = \"file\"\n";

#[test]
fn minimal_config_gets_defaults() {
    let config = Config::parse(Path::new("t.toml"), MINIMAL).expect("valid");
    assert_eq!(config.retention.days, 30);
    assert_eq!(config.storage.durability, Durability::Full);
    assert_eq!(
        config.database_path(),
        PathBuf::from("/var/lib/relais/relais.db")
    );
    assert_eq!(config.keys.source, KeySourceKind::SystemdCredentials);
    let files = Config::parse(Path::new("t.toml"), FILES).expect("valid");
    assert_eq!(files.keys_dir(), PathBuf::from("/var/lib/relais/keys"));
    let sealed = Config::parse(
        Path::new("t.toml"),
        &format!("{MINIMAL}[keys]\nsource = \"sealed\"\n"),
    )
    .expect("valid");
    assert_eq!(sealed.keys_dir(), PathBuf::from("/etc/relais/credentials"));
}

#[test]
fn tls_files_belong_to_the_file_source_only() {
    let cases = [
        (
            format!("{MINIMAL}[tls]\nprivate_key = \"/k.pem\"\n"),
            "t.toml:3: private_key: read only with keys.source = \"file\"",
        ),
        (
            FILES.replace("certificate = \"/c.pem\"\n", ""),
            "certificate: keys.source = \"file\" needs this PEM file",
        ),
        (
            format!("{MINIMAL}[keys]\ndirectory = \"/k\"\n"),
            "directory: not used with keys.source = \"systemd-credentials\"",
        ),
        (
            format!("{MINIMAL}[keys]\nsource = \"tpm\"\n"),
            "unknown variant `tpm`",
        ),
    ];
    for (text, expected) in cases {
        let error = Config::parse(Path::new("t.toml"), &text)
            .expect_err(&text)
            .to_string();
        assert!(
            error.contains(expected),
            "{error} should contain {expected}"
        );
    }
}

#[test]
fn broken_configs_name_line_and_key() {
    let cases = [
        (format!("{MINIMAL}bogus = 1\n"), "unknown field `bogus`"),
        (MINIMAL.replace("example.gouv.fr", "Bad Domain"), "domain:"),
        (
            format!("{MINIMAL}[limits]\nframe_bytes_max = 0\n"),
            "frame_bytes_max: must be greater than 0",
        ),
        (
            format!("{MINIMAL}[storage]\ndurability = \"fast\"\n"),
            "unknown variant `fast`",
        ),
        (
            format!("{MINIMAL}[admin]\nmode = 0o666\n"),
            "mode: the admin socket",
        ),
        (
            format!("{MINIMAL}[users]\nallowed_domains = [\"*.interieur.fr\"]\n"),
            "allowed_domains: must allow the server's own domain",
        ),
        (
            format!("{MINIMAL}[users]\nallowed_domains = [\"bad domain\"]\n"),
            "allowed_domains: \"bad domain\" is neither",
        ),
        (
            format!("{MINIMAL}[retention]\ndays = \"thirty\"\n"),
            "invalid type",
        ),
        (
            format!("{MINIMAL}[storage]\nbatch_max = -1\n"),
            "invalid value",
        ),
        (
            format!("{MINIMAL}[listen]\nclient = \"not an address\"\n"),
            "invalid socket address",
        ),
    ];
    for (text, expected) in cases {
        let error = Config::parse(Path::new("t.toml"), &text)
            .expect_err(&text)
            .to_string();
        assert!(error.starts_with("t.toml:"), "{error}");
        assert!(
            error.contains(expected),
            "{error} should contain {expected}"
        );
    }
}

#[test]
fn domain_patterns() {
    let users = Users {
        allowed_domains: vec!["*.gouv.fr".into(), "example.org".into()],
        expiry_warning_days: 14,
    };
    for (domain, allowed) in [
        ("interieur.gouv.fr", true),
        ("a.b.gouv.fr", true),
        ("gouv.fr", false),
        ("evilgouv.fr", false),
        ("example.org", true),
        ("sub.example.org", false),
    ] {
        assert_eq!(users.allows(domain, "x.gouv.fr"), allowed, "{domain}");
    }
    assert!(Users::default().allows("a.fr", "a.fr"));
    assert!(!Users::default().allows("b.fr", "a.fr"));
}

#[test]
fn unknown_key_reports_its_line() {
    let text = format!("{FILES}[limits]\nframe_bytes_max = 10\nnot_a_limit = 3\n");
    let error = Config::parse(Path::new("t.toml"), &text)
        .expect_err("unknown key")
        .to_string();
    assert!(error.starts_with("t.toml:9:"), "{error}");
}

/// `relaisd serve --dev --listen X`: the links it gives name where it listens, by a name of
/// its development certificate when it listens on loopback or every address.
#[test]
fn the_dev_public_address_follows_the_listener() {
    for (listen, expected) in [
        ("127.0.0.1:8443", "127.0.0.1:8443"),
        ("127.0.0.1:9443", "127.0.0.1:9443"),
        ("0.0.0.0:9443", "127.0.0.1:9443"),
        ("[::1]:9443", "localhost:9443"),
        ("[::]:9443", "localhost:9443"),
        ("192.0.2.7:9443", "192.0.2.7:9443"),
    ] {
        let config = Config::dev(PathBuf::from("/d"), listen.parse().expect("address"));
        assert_eq!(config.listen.client.to_string(), listen);
        assert_eq!(config.server.public_address.as_deref(), Some(expected));
        config.validate().expect("a dev configuration is valid");
    }
}
