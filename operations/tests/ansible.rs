//! The Debian package and the Ansible collection in `ansible/`: `cargo deb` packs the binary,
//! units, sysusers and tmpfiles entries, configuration and man pages, `add-md5sums` gives it
//! the sums of its files, and lintian passes it; `ansible-lint` (production profile) and
//! `ansible-playbook --syntax-check` pass on every playbook; broken inventories stop in the
//! preflight, with a message naming the variable, before any task that could change a host
//! has run; the role's templates, rendered for a SQLite appliance and for a PostgreSQL node,
//! are configurations `relaisd check-config` accepts; and the alerts the monitoring role
//! installs link their runbooks under `relais_runbook_base_url`.
//!
//! The preflight runs for real against this machine over Ansible's local connection, in
//! check mode: its tasks only assert, and the first play that would change anything is
//! never reached. These tests need `ansible-playbook`, `ansible-lint` and `cargo-deb`
//! (scripts/test installs them); they fail without them when `CI=true`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use relais_testkit::packaging::{COLLECTION, Collections, recap, text};
const PLAYBOOKS: &[&str] = &["site.yml", "preflight.yml", "upgrade.yml", "add_admin.yml"];

#[test]
fn the_collection_passes_ansible_lint_on_the_production_profile() {
    if !relais_testkit::system_component(&["ansible-lint"], "linting the Ansible collection") {
        return;
    }
    // Exactly the line docs/cookbook/ansible.md gives, run from the repository's root as a
    // user would, with no collection installed and no environment of the tests' own.
    let cookbook = relais_testkit::repository().join("docs/cookbook/ansible.md");
    let cookbook = std::fs::read_to_string(cookbook).expect("docs/cookbook/ansible.md");
    let line = cookbook
        .lines()
        .find(|line| line.starts_with("cd ansible && ansible-lint"))
        .expect("docs/cookbook/ansible.md tells how to run ansible-lint");
    assert!(line.contains("--profile production"), "{line}");
    let out = Command::new("sh")
        .args(["-c", line])
        .current_dir(relais_testkit::repository())
        .env("NO_COLOR", "1")
        .output()
        .expect("ansible-lint");
    let text = text(&out);
    assert!(out.status.success(), "`{line}` failed:\n{text}");
    assert!(
        text.contains("Passed with production profile: 0 failure(s), 0 warning(s)"),
        "{text}"
    );
}

#[test]
fn the_collection_version_is_its_latest_changelog_release() {
    // ansible-galaxy installs a collection only over an older version: changes listed but
    // not released under a new version in galaxy.yml would never reach a control node
    // that has the previous build ("Nothing to do").
    let galaxy =
        std::fs::read_to_string(Path::new(COLLECTION).join("galaxy.yml")).expect("galaxy.yml");
    let version = galaxy
        .lines()
        .find_map(|line| line.strip_prefix("version: "))
        .expect("version in galaxy.yml")
        .trim();
    let changelog =
        std::fs::read_to_string(Path::new(COLLECTION).join("CHANGELOG.md")).expect("CHANGELOG.md");
    let latest = changelog
        .lines()
        .find_map(|line| line.strip_prefix("## "))
        .expect("a release in CHANGELOG.md")
        .trim();
    assert_eq!(
        latest, version,
        "the latest section of ansible/CHANGELOG.md must be galaxy.yml's version"
    );
}

#[test]
fn every_playbook_passes_the_syntax_check() {
    if !relais_testkit::system_component(&["ansible-playbook"], "checking the playbooks") {
        return;
    }
    let collections = Collections::new();
    for playbook in PLAYBOOKS {
        let out = collections
            .playbook(&example_inventory(), playbook)
            .arg("--syntax-check")
            .output()
            .expect("ansible-playbook");
        assert!(
            out.status.success(),
            "{playbook} fails the syntax check:\n{}",
            text(&out)
        );
    }
}

#[test]
fn valid_variables_pass_every_preflight_without_a_change() {
    if !relais_testkit::system_component(&["ansible-playbook"], "running the preflight") {
        return;
    }
    let collections = Collections::new();
    let run = Preflight::new(&collections);
    let out = run.site("preflight.yml", &[]);
    let text = text(&out);
    assert!(out.status.success(), "{text}");
    for task in [
        "relais.appliance.relais : Assert the storage backend is one relaisd supports",
        "relais.appliance.relais : Assert the recovery key can be kept on the control node",
        "relais.appliance.relais_node_exporter : Assert the collectors are node_exporter names",
        "relais.appliance.relais_firewall : Assert every opened port is from 1 to 65535",
        "relais.appliance.relais_monitoring : Assert the bundle holds the monitoring files",
    ] {
        assert!(text.contains(task), "{task} did not run:\n{text}");
    }
    assert!(recap(&text).contains("changed=0"), "{text}");
    assert!(recap(&text).contains("failed=0"), "{text}");
}

/// Inventories the preflight must stop: extra variables as JSON, and what the message says.
const BROKEN_VARIABLES: &[(&str, &str)] = &[
    (
        r#"{"relais_storage_backend": "mysql"}"#,
        r#"relais_storage_backend \"mysql\" is unknown: relaisd supports sqlite"#,
    ),
    (
        r#"{"relais_storage_backend": "postgres"}"#,
        "with relais_storage_backend: postgres, relais_storage_url must be postgres://USER@HOST:PORT/DATABASE",
    ),
    (
        r#"{"relais_storage_backend": "postgres", "relais_storage_url": "postgres://relais:hunter2@db/relais"}"#,
        "relais_storage_url contains a password: remove it from the URL",
    ),
    (
        r#"{"relais_storage_backend": "postgresql", "relais_storage_url": "postgres://relais@db/relais"}"#,
        "relais_storage_password is empty: set it to the password of the role the URL names, kept in Ansible Vault",
    ),
    (
        r#"{"relais_storage_backend": "postgres", "relais_storage_url": "postgres://relais@db/relais", "relais_storage_password": "x", "relais_storage_passwordless": true}"#,
        "relais_storage_passwordless is true but relais_storage_password is set",
    ),
    (
        r#"{"relais_storage_postgresql_url": "postgres://relais@db/relais"}"#,
        "relais_storage_postgresql_url was renamed relais_storage_url",
    ),
    (
        r#"{"relais_storage_migrate": true}"#,
        "relais_storage_migrate is for PostgreSQL",
    ),
    (
        r#"{"relais_domain": ""}"#,
        "relais_domain must be the domain this relay serves",
    ),
    (
        r#"{"relais_domain": "Not A Domain"}"#,
        "relais_domain must be the domain this relay serves",
    ),
    (
        r#"{"relais_listen_client": "0.0.0.0:70000"}"#,
        r#"relais_listen_client must be an address and a port from 1 to 65535 (for example 0.0.0.0:8443 or [::]:8443), got \"0.0.0.0:70000\""#,
    ),
    (
        r#"{"relais_public_address": "Relais.example:443"}"#,
        r#"relais_public_address must be the relay's address as clients reach it, HOST:PORT with a lowercase DNS name, an IPv4 address or an IPv6 address in brackets and a port from 1 to 65535 (for example relais.interieur.gouv.fr:443), or empty to leave enrollment links off; got \"Relais.example:443\""#,
    ),
    (
        r#"{"relais_public_address": "relais.example"}"#,
        "relais_public_address must be the relay's address as clients reach it, HOST:PORT",
    ),
    (
        r#"{"relais_listen_metrics": "127.0.0.1:0"}"#,
        "relais_listen_metrics must be an address and a port from 1 to 65535",
    ),
    (
        r#"{"relais_limits": {"connection_max": 10}}"#,
        "relais_limits.connection_max must be one of relaisd's limits",
    ),
    (
        r#"{"relais_limits": {"connections_max": 0}}"#,
        "relais_limits.connections_max must be one of relaisd's limits (frame_bytes_max",
    ),
    (
        r#"{"relais_keys_provision_sealed": true}"#,
        "relais_keys_provision_sealed was removed: with relais_keys_source: systemd-credentials (the default) the role seals the keys",
    ),
    (
        r#"{"relais_tls_private_key_src": "/srv/relais-bundle/tls/relay.key"}"#,
        "relais_tls_private_key_src is set, but with relais_keys_source: systemd-credentials (the default) the TLS key is made and sealed on the relay",
    ),
    (
        r#"{"relais_keys_recovery_vault_password": "too-short"}"#,
        "relais_keys_recovery_vault_password must be set, at least 16 characters",
    ),
    (
        r#"{"relais_keys_seal_with": "tpm3"}"#,
        r#"relais_keys_seal_with must be one of auto, tpm2, host (got \"tpm3\")"#,
    ),
    (
        r#"{"relais_keys_tpm2_pcrs": "7+x"}"#,
        r#"relais_keys_tpm2_pcrs PCR numbers joined by +, such as \"7\" or \"7+11\" (got \"7+x\")"#,
    ),
    (
        r#"{"relais_tls_names": ["relais.example; reboot"]}"#,
        "relais_tls_names must be a list of DNS names or IP addresses",
    ),
    (
        r#"{"relais_keys_source": "file"}"#,
        "with relais_keys_source: file, relais_tls_certificate_src and relais_tls_private_key_src must name",
    ),
    (
        r#"{"relais_node_exporter_listen": "9100"}"#,
        "relais_node_exporter_listen must be an address and a port from 1 to 65535",
    ),
    (
        r#"{"relais_node_exporter_collectors": ["systemd"]}"#,
        "and keep timex, which the clock alert reads",
    ),
    (
        r#"{"relais_monitoring_node_exporter_port": 0}"#,
        "relais_monitoring_node_exporter_port must be a port from 1 to 65535",
    ),
    (
        r#"{"relais_bundle_dir": "/nonexistent"}"#,
        "relais_bundle_dir must be a directory of the control node holding exactly one",
    ),
    (
        r#"{"relais_firewall_client_networks": ["10.0.0.0/8; accept"]}"#,
        "relais_firewall networks must be ADDRESS or ADDRESS/PREFIX",
    ),
    (
        r#"{"ansible_connection": "ssh"}"#,
        "relais_firewall_ssh_networks is empty: the firewall would close SSH",
    ),
];

#[test]
fn broken_variables_stop_in_the_preflight_before_any_change() {
    if !relais_testkit::system_component(&["ansible-playbook"], "running the preflight") {
        return;
    }
    let collections = Collections::new();
    let run = Preflight::new(&collections);
    for (vars, message) in BROKEN_VARIABLES {
        // The whole site.yml, not only the preflight: nothing after it may run.
        let out = run.site("site.yml", &["--check", "--extra-vars", vars]);
        let text = text(&out);
        assert!(!out.status.success(), "{vars} was accepted:\n{text}");
        assert!(
            text.contains(message),
            "{vars}: expected {message:?} in:\n{text}"
        );
        assert!(
            !text.contains("PLAY [Relays]"),
            "{vars}: the play that changes hosts started:\n{text}"
        );
        assert!(recap(&text).contains("changed=0"), "{vars}:\n{text}");
    }
}

#[test]
fn the_preflight_accepts_every_limit_relaisd_accepts() {
    if !relais_testkit::system_component(&["ansible-playbook"], "running the preflight") {
        return;
    }
    // The fields of relaisd's `[limits]` section, as its configuration parser has them.
    let sections =
        std::fs::read_to_string(relais_testkit::repository().join("daemon/src/config/sections.rs"))
            .expect("sections.rs");
    let (_, body) = sections
        .split_once("pub struct Limits {")
        .expect("struct Limits");
    let (body, _) = body.split_once("\n}").expect("end of struct Limits");
    let limits: Vec<&str> = body
        .lines()
        .filter_map(|line| line.trim().strip_prefix("pub "))
        .filter_map(|field| field.split_once(':').map(|(name, _)| name))
        .collect();
    assert!(limits.contains(&"claims_per_user_hour"), "{limits:?}");
    let vars = serde_json::json!({
        "relais_limits": limits
            .iter()
            .map(|name| (name.to_string(), serde_json::Value::from(1)))
            .collect::<serde_json::Map<_, _>>()
    });
    let collections = Collections::new();
    let run = Preflight::new(&collections);
    let out = run.site("preflight.yml", &["--extra-vars", &vars.to_string()]);
    assert!(out.status.success(), "{vars}:\n{}", text(&out));
}

#[test]
fn a_postgresql_node_passes_the_preflight() {
    if !relais_testkit::system_component(&["ansible-playbook"], "running the preflight") {
        return;
    }
    let collections = Collections::new();
    let run = Preflight::new(&collections);
    // The old spelling of the backend, a CA certificate the URL names, and the migration as
    // the schema owner: every PostgreSQL check runs, and passes.
    let vars = format!(
        r#"{{"relais_storage_backend": "postgresql", "relais_storage_url": "{POSTGRES_URL}",
            "relais_storage_password": "x", "relais_storage_ca_certificate_src": "{}",
            "relais_storage_migrate": true, "relais_storage_migrate_url": "postgres://owner@db/relais",
            "relais_storage_migrate_password": "y"}}"#,
        run.dir.path().join("tls.pem").display()
    );
    let out = run.site("preflight.yml", &["--extra-vars", &vars]);
    let text = text(&out);
    assert!(out.status.success(), "{text}");
    for task in [
        "Assert the PostgreSQL URL holds no password",
        "Assert the database password is given, or declared unneeded",
        "Assert the database's CA certificate exists and the URL names it",
        "Assert the migration's URL and password are valid",
    ] {
        let line = format!("TASK [relais.appliance.relais : {task}]");
        // The line after the task's banner is its result.
        let after = text
            .split_once(&line)
            .map(|(_, after)| after.lines().nth(1));
        assert_eq!(after, Some(Some("ok: [localhost]")), "{task}:\n{text}");
    }
    assert!(recap(&text).contains("failed=0"), "{text}");
}

#[test]
fn the_example_inventory_passes_the_preflight_with_its_bundle_and_vault() {
    if !relais_testkit::system_component(&["ansible-playbook"], "running the preflight") {
        return;
    }
    let collections = Collections::new();
    // Preflight's bundle, plus the database's CA certificate the example installs.
    let run = Preflight::new(&collections);
    let bundle = run.dir.path().join("bundle");
    std::fs::create_dir_all(bundle.join("tls")).expect("tls");
    std::fs::write(bundle.join("tls/db-ca.pem"), b"").expect("ca");
    let inventory = run.dir.path().join("example");
    let copy = Command::new("cp")
        .arg("--recursive")
        .arg(Path::new(COLLECTION).join("inventory/example"))
        .arg(&inventory)
        .status();
    assert!(copy.expect("cp").success());
    // The file the example asks the operator to create, and encrypt.
    let vault = inventory.join("group_vars/relais/vault.yml");
    std::fs::write(vault, "vault_relais_storage_password: x\n").expect("vault.yml");
    // No host of the example exists: the preflight asserts on the control node only.
    let out = collections
        .playbook(&inventory.join("hosts.yml"), "preflight.yml")
        .arg("--extra-vars")
        .arg(format!("relais_bundle_dir={}", bundle.display()))
        .output()
        .expect("ansible-playbook");
    let text = text(&out);
    assert!(out.status.success(), "{text}");
    let checks = text
        .split_once("TASK [relais.appliance.relais : Assert the PostgreSQL URL holds no password]")
        .map_or("", |(_, after)| after);
    for host in ["relais-1.interieur.gouv.fr", "relais-2.interieur.gouv.fr"] {
        assert!(checks.contains(&format!("ok: [{host}]")), "{host}:\n{text}");
    }
    assert!(recap(&text).contains("failed=0"), "{text}");
}

#[test]
fn the_role_renders_configurations_relaisd_accepts_for_sqlite_and_postgresql() {
    if !relais_testkit::system_component(&["ansible-playbook"], "rendering the templates") {
        return;
    }
    let collections = Collections::new();
    let sqlite = render(&collections, "{}");
    assert_eq!(check_config(&sqlite), Ok(()));
    let config = read(&sqlite, "relaisd.toml");
    assert!(!config.contains("backend"), "{config}");
    let service = read(&sqlite, "relaisd.service.conf");
    assert!(!service.contains("RestrictAddressFamilies") && !service.contains("PrivateNetwork"));

    let postgres = render(
        &collections,
        &format!(
            r#"{{"relais_storage_backend": "postgresql", "relais_storage_url": "{POSTGRES_URL}",
                "relais_storage_password": "x", "relais_storage_catch_up_seconds": 12}}"#
        ),
    );
    assert_eq!(check_config(&postgres), Ok(()));
    let config = read(&postgres, "relaisd.toml");
    for line in [
        "backend = \"postgres\"",
        &format!("url = \"{POSTGRES_URL}\""),
        "password_file = \"/etc/relais/db-password\"",
        "catch_up_seconds = 12",
    ] {
        assert!(config.contains(line), "{line} missing:\n{config}");
    }
    let service = read(&postgres, "relaisd.service.conf");
    let drop_in = "\nPrivateNetwork=no\nRestrictAddressFamilies=AF_UNIX AF_INET AF_INET6\n";
    assert!(service.contains(drop_in), "{service}");

    // Without a password, no password file is named; and relaisd's own check is not a
    // formality: a URL with a password (which the preflight would stop) is refused.
    let passwordless = render(
        &collections,
        &format!(
            r#"{{"relais_storage_backend": "postgres", "relais_storage_url": "{POSTGRES_URL}", "relais_storage_passwordless": true}}"#
        ),
    );
    assert_eq!(check_config(&passwordless), Ok(()));
    assert!(!read(&passwordless, "relaisd.toml").contains("password_file"));
    let leaky = render(
        &collections,
        r#"{"relais_storage_backend": "postgres", "relais_storage_url": "postgres://relais:hunter2@db/relais"}"#,
    );
    let refused = check_config(&leaky).expect_err("accepted");
    assert!(refused.contains("the URL contains a password"), "{refused}");
}

#[test]
fn the_alerts_link_their_runbooks_under_relais_runbook_base_url() {
    if !relais_testkit::system_component(&["ansible-playbook"], "rendering the alerts") {
        return;
    }
    let collections = Collections::new();
    let source = std::fs::read_to_string(
        relais_testkit::repository().join("monitoring/prometheus/rules/alerts.yml"),
    )
    .expect("alerts.yml");
    let alerts = source.matches("runbook_url: ").count();
    assert!(alerts > 10, "{source}");
    // The default, then a site's web server, given with a trailing slash as people do.
    for (vars, base) in [
        ("{}", "file:///usr/share/doc/relaisd/runbooks/"),
        (
            r#"{"relais_runbook_base_url": "https://intranet.interieur.gouv.fr/relais/runbooks/"}"#,
            "https://intranet.interieur.gouv.fr/relais/runbooks/",
        ),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = collections
            .command("ansible-playbook")
            .args(["--inventory", "localhost,", "--extra-vars"])
            .arg(
                serde_json::json!({
                    "render_dir": dir.path(),
                    "relais_bundle_dir": relais_testkit::repository(),
                    "ansible_python_interpreter": "/usr/bin/python3",
                })
                .to_string(),
            )
            .args(["--extra-vars", vars])
            .arg(Path::new(COLLECTION).join("tests/render_monitoring_rules.yml"))
            .output()
            .expect("ansible-playbook");
        assert!(out.status.success(), "rendering {vars}:\n{}", text(&out));
        let rendered = std::fs::read_to_string(dir.path().join("alerts.yml")).expect("alerts");
        // The Go templates of the annotations reach Prometheus as they are.
        assert!(rendered.contains("{{ $labels.instance }}"), "{rendered}");
        let urls: Vec<&str> = rendered
            .lines()
            .filter_map(|line| line.trim().strip_prefix("runbook_url: "))
            .map(|url| url.trim_matches('"'))
            .collect();
        assert_eq!(urls.len(), alerts, "{rendered}");
        for url in urls {
            let page = url
                .strip_prefix(base)
                .unwrap_or_else(|| panic!("{url} is not under {base}"));
            assert!(
                !page.contains('/')
                    && relais_testkit::repository()
                        .join("docs/runbooks")
                        .join(page)
                        .is_file(),
                "{url}: no runbook {page}"
            );
        }
    }
}

#[test]
fn the_debian_package_holds_the_binary_units_configuration_and_man_pages() {
    if !relais_testkit::system_component(&["cargo-deb", "dpkg-deb"], "building the Debian package")
    {
        return;
    }
    let out_dir = tempfile::tempdir().expect("tempdir");
    let deb = relais_testkit::packaging::build_deb(out_dir.path());

    let contents = dpkg_deb(&["--contents"], &deb);
    let mut expected: Vec<String> = [
        "./usr/bin/relaisd",
        "./usr/lib/systemd/system/relaisd.service",
        "./usr/lib/systemd/system/relaisd.socket",
        "./usr/lib/systemd/system/relaisd-metrics.socket",
        "./usr/lib/sysusers.d/relaisd.conf",
        "./usr/lib/tmpfiles.d/relaisd.conf",
        "./etc/relais/relaisd.toml",
    ]
    .map(String::from)
    .to_vec();
    let man = relais_testkit::repository().join("docs/man");
    for page in std::fs::read_dir(&man).expect("docs/man") {
        let name = page.expect("entry").file_name();
        let name = name.to_string_lossy();
        // `relaisd.1` goes to man1, `relaisd.toml.5` to man5.
        let section = name.rsplit_once('.').map_or("", |(_, section)| section);
        expected.push(format!("./usr/share/man/man{section}/{name}"));
    }
    for path in &expected {
        // cargo-deb may compress man pages; either form is installed where man finds it.
        assert!(
            contents
                .lines()
                .any(|line| line.ends_with(path) || line.ends_with(&format!("{path}.gz"))),
            "{path} is not in the package:\n{contents}"
        );
    }
    // Owned by root, by number or, as dpkg-deb writes it, by name too.
    assert!(
        contents.lines().any(|line| {
            (line.starts_with("-rwxr-xr-x 0/0") || line.starts_with("-rwxr-xr-x root/root"))
                && line.ends_with("./usr/bin/relaisd")
        }),
        "{contents}"
    );

    let control = dpkg_deb(&["--info"], &deb);
    for needle in [
        "Package: relaisd",
        "systemd (>= 252)",
        "postinst",
        "prerm",
        "postrm",
    ] {
        assert!(control.contains(needle), "{needle} missing:\n{control}");
    }
    // The configuration is a conffile: an upgrade keeps the operator's (or Ansible's) file.
    let listed = dpkg_deb_member(&deb, "conffiles");
    assert_eq!(listed.trim(), "/etc/relais/relaisd.toml", "{listed}");

    // The packaged configuration is what relaisd accepts.
    let config = out_dir.path().join("relaisd.toml");
    std::fs::copy(
        relais_testkit::repository().join("daemon/debian/relaisd.toml"),
        &config,
    )
    .expect("copy config");
    let check = Command::new(relais_testkit::relaisd())
        .arg("check-config")
        .arg(&config)
        .output()
        .expect("relaisd check-config");
    assert!(check.status.success(), "{}", text(&check));
}

#[test]
fn every_runbook_is_packaged_and_names_only_paths_the_package_has() {
    if !relais_testkit::system_component(&["cargo-deb", "dpkg-deb"], "building the Debian package")
    {
        return;
    }
    let out_dir = tempfile::tempdir().expect("tempdir");
    let deb = relais_testkit::packaging::build_deb(out_dir.path());
    // Every path in the package, files and directories, without the leading `.`.
    let shipped: Vec<String> = dpkg_deb(&["--contents"], &deb)
        .lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .map(|path| {
            path.trim_start_matches('.')
                .trim_end_matches('/')
                .to_owned()
        })
        .collect();
    // The text of the package's own files but the runbooks: a path they name (the units'
    // credentials, the tmpfiles directories) exists once the package is installed and set up.
    let unpacked = out_dir.path().join("unpacked");
    let out = Command::new("dpkg-deb")
        .arg("--extract")
        .arg(&deb)
        .arg(&unpacked)
        .output()
        .expect("dpkg-deb");
    assert!(out.status.success(), "{}", text(&out));
    let named_by_package: String = shipped
        .iter()
        .filter(|path| !path.starts_with(RUNBOOKS_INSTALLED))
        .filter_map(|path| {
            std::fs::read_to_string(unpacked.join(path.trim_start_matches('/'))).ok()
        })
        .collect::<Vec<_>>()
        .join("\n");

    let runbooks = relais_testkit::repository().join("docs/runbooks");
    let mut problems = Vec::new();
    for entry in std::fs::read_dir(&runbooks).expect("docs/runbooks") {
        let name = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        let installed = format!("{RUNBOOKS_INSTALLED}/{name}");
        if !shipped.contains(&installed) {
            problems.push(format!("{name}: not installed as {installed}"));
        }
        let page = std::fs::read_to_string(runbooks.join(&name)).expect("runbook");
        for path in absolute_paths(&page) {
            if !shipped.contains(&path) && !named_by_package.contains(&path) {
                problems.push(format!(
                    "{name}: {path} is neither in the package nor named by its files"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_debian_package_passes_lintian() {
    if !relais_testkit::system_component(&["cargo-deb", "lintian"], "checking the Debian package") {
        return;
    }
    let out_dir = tempfile::tempdir().expect("tempdir");
    // Stripped, as a release is: the debug information goes to the .ddeb beside it.
    let deb = relais_testkit::packaging::build_deb_stripped(out_dir.path());
    // With the informational tags too, which is where a missing md5sums file shows.
    let out = Command::new("lintian")
        .arg("--display-info")
        .arg(&deb)
        .output()
        .expect("lintian");
    let report = text(&out);
    let findings: Vec<&str> = report
        .lines()
        .filter(|line| line.starts_with("E: ") || line.starts_with("W: "))
        .collect();
    assert!(
        findings.is_empty() && out.status.success(),
        "lintian on the package:\n{report}"
    );
    assert!(!report.contains("no-md5sums-control-file"), "{report}");
    the_md5sums_cover_every_file_but_the_conffile(&deb, out_dir.path());
    // What lintian would not say by default: the Debian changelog and copyright are there.
    let contents = dpkg_deb(&["--contents"], &deb);
    for path in [
        "./usr/share/doc/relaisd/changelog.Debian.gz",
        "./usr/share/doc/relaisd/copyright",
    ] {
        assert!(contents.contains(path), "{path} missing:\n{contents}");
    }
}

/// cargo-deb writes no md5sums; `daemon/debian/add-md5sums` adds one, as dh_md5sums would:
/// a sum for every regular file of the package but the conffile (dpkg keeps that one's in
/// its database), each matching the file, so that `dpkg --verify` and debsums can check an
/// installed relay.
fn the_md5sums_cover_every_file_but_the_conffile(deb: &Path, dir: &Path) {
    let sums = dpkg_deb_member(deb, "md5sums");
    let listed: BTreeSet<&str> = sums
        .lines()
        .map(|line| line.split_once("  ").map_or(line, |(_, path)| path))
        .collect();
    let contents = dpkg_deb(&["--contents"], deb);
    let conffiles = dpkg_deb_member(deb, "conffiles");
    let files: BTreeSet<&str> = contents
        .lines()
        .filter(|line| line.starts_with('-'))
        .filter_map(|line| line.split_whitespace().nth(5)?.strip_prefix("./"))
        .filter(|path| {
            !conffiles
                .lines()
                .any(|c| c.trim_start_matches('/') == *path)
        })
        .collect();
    assert_eq!(listed, files, "md5sums:\n{sums}");
    let unpacked = dir.join("md5sums-unpacked");
    let extract = Command::new("dpkg-deb")
        .arg("--extract")
        .arg(deb)
        .arg(&unpacked)
        .output()
        .expect("dpkg-deb");
    assert!(extract.status.success(), "{}", text(&extract));
    std::fs::write(dir.join("md5sums"), &sums).expect("md5sums");
    let check = Command::new("md5sum")
        .args(["--check", "--strict", "--quiet"])
        .arg(dir.join("md5sums"))
        .current_dir(&unpacked)
        .output()
        .expect("md5sum");
    assert!(check.status.success(), "md5sum --check: {}", text(&check));
}

// ------------------------------------------------------------------------------- helpers

/// Where the package installs `docs/runbooks/`, which the alerts' `runbook_url` name.
const RUNBOOKS_INSTALLED: &str = "/usr/share/doc/relaisd/runbooks";

/// The absolute paths under the usual top directories that a page names, without a
/// trailing slash, glob or punctuation.
fn absolute_paths(page: &str) -> Vec<String> {
    let is_path = |c: char| c.is_ascii_alphanumeric() || "/._-*".contains(c);
    let mut found = Vec::new();
    let mut rest = page;
    while let Some(start) = rest.find('/') {
        let before = rest[..start].chars().next_back();
        let token: String = rest[start..].chars().take_while(|&c| is_path(c)).collect();
        rest = &rest[start + token.len().max(1)..];
        if before.is_some_and(is_path) || before == Some(':') {
            continue;
        }
        let path = token
            .trim_end_matches(['.', ','])
            .trim_end_matches('*')
            .trim_end_matches('/');
        if [
            "/etc/", "/usr/", "/var/", "/run/", "/lib/", "/srv/", "/opt/",
        ]
        .iter()
        .any(|top| path.starts_with(top))
        {
            found.push(path.to_owned());
        }
    }
    found
}

/// An inventory making this machine a relay and a monitoring host over the local
/// connection, with variables that pass every preflight (the bundle and TLS files exist).
struct Preflight<'a> {
    collections: &'a Collections,
    dir: tempfile::TempDir,
}

impl<'a> Preflight<'a> {
    fn new(collections: &'a Collections) -> Preflight<'a> {
        let dir = tempfile::tempdir().expect("tempdir");
        let bundle = dir.path().join("bundle");
        let rules = bundle.join("monitoring/prometheus/rules");
        std::fs::create_dir_all(&rules).expect("bundle");
        std::fs::write(bundle.join("relaisd_0.1.0-1_amd64.deb"), b"").expect("deb");
        for rule in ["recording.yml", "alerts.yml"] {
            std::fs::write(rules.join(rule), b"groups: []\n").expect("rule");
        }
        std::fs::write(dir.path().join("tls.pem"), b"").expect("cert");
        let inventory = format!(
            "all:
  vars:
    ansible_connection: local
    ansible_python_interpreter: /usr/bin/python3
    relais_bundle_dir: {dir}/bundle
    relais_domain: interieur.gouv.fr
    relais_keys_recovery_vault_password: sixteen-characters-or-more
  children:
    relais:
      hosts:
        localhost:
    relais_monitoring:
      hosts:
        localhost:
",
            dir = dir.path().display()
        );
        std::fs::write(dir.path().join("hosts.yml"), inventory).expect("inventory");
        Preflight { collections, dir }
    }

    fn site(&self, playbook: &str, args: &[&str]) -> Output {
        self.collections
            .playbook(&self.dir.path().join("hosts.yml"), playbook)
            .args(args)
            .output()
            .expect("ansible-playbook")
    }
}

/// A PostgreSQL URL as the cookbook writes it.
const POSTGRES_URL: &str = "postgres://relais@db.interieur.gouv.fr:5432/relais?sslmode=verify-full&sslrootcert=/etc/relais/db-ca.pem";

/// Renders the relais role's configuration and service drop-in with
/// `ansible/tests/render_relais_templates.yml`, `vars` (JSON) on top, into a new directory.
fn render(collections: &Collections, vars: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = collections
        .command("ansible-playbook")
        .args(["--inventory", "localhost,", "--extra-vars"])
        .arg(format!(
            r#"{{"relais_domain": "interieur.gouv.fr", "render_dir": "{}",
                "ansible_python_interpreter": "/usr/bin/python3"}}"#,
            dir.path().display()
        ))
        .args(["--extra-vars", vars])
        .arg(Path::new(COLLECTION).join("tests/render_relais_templates.yml"))
        .output()
        .expect("ansible-playbook");
    assert!(out.status.success(), "rendering {vars}:\n{}", text(&out));
    dir
}

fn read(dir: &tempfile::TempDir, file: &str) -> String {
    std::fs::read_to_string(dir.path().join(file)).expect("rendered file")
}

/// `relaisd check-config` on a rendered relaisd.toml: Ok, or its message.
fn check_config(rendered: &tempfile::TempDir) -> Result<(), String> {
    let out = Command::new(relais_testkit::relaisd())
        .arg("check-config")
        .arg(rendered.path().join("relaisd.toml"))
        .output()
        .expect("relaisd check-config");
    if out.status.success() {
        Ok(())
    } else {
        Err(text(&out))
    }
}

fn example_inventory() -> PathBuf {
    Path::new(COLLECTION).join("inventory/example/hosts.yml")
}

fn dpkg_deb(args: &[&str], deb: &Path) -> String {
    let out = Command::new("dpkg-deb")
        .args(args)
        .arg(deb)
        .output()
        .expect("dpkg-deb");
    assert!(out.status.success(), "dpkg-deb {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One file of the package's control archive.
fn dpkg_deb_member(deb: &Path, member: &str) -> String {
    let out = Command::new("dpkg-deb")
        .args(["--info"])
        .arg(deb)
        .arg(member)
        .output()
        .expect("dpkg-deb");
    assert!(
        out.status.success(),
        "dpkg-deb --info {member}: {}",
        text(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
