//! What an operator checks on the relay the play installed: its keys sealed with the recovery
//! key kept on the control node only, Prometheus scraping relaisd and node_exporter with
//! every alert linked to a runbook that is there, a backup restored by the cookbook's own
//! steps, and a certificate from the site's CA installed for the relay's own TLS key.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use relais_testkit::packaging::{recap, text};

use super::Site;

/// Where the alerts' `runbook_url` point by default: the runbooks relaisd's package installs.
const RUNBOOKS: &str = "file:///usr/share/doc/relaisd/runbooks/";
/// The recovery key as `relaisd keys provision` prints it: eight groups of eight hex digits.
const RECOVERY_KEY_CHARS: usize = 8 * 8 + 7;

impl Site {
    /// The play sealed the keys on the relay (the container has no TPM, so with systemd's
    /// host key, which the play warned about), relaisd serves from them without the
    /// development warning, and the recovery key is in the Vault file on the control node
    /// only, where it opens the recovery copy fetched beside it.
    pub(super) fn the_keys_are_sealed_and_the_recovery_key_kept_on_the_control_node(
        &self,
        plays: &[String],
    ) {
        let check = self.container.run(&[
            "relaisd",
            "keys",
            "check",
            "--out",
            "/etc/relais/credentials",
        ]);
        for name in ["relais-code-secret", "relais-signing-key", "relais-tls-key"] {
            assert!(check.contains(&format!("{name}: ok")), "{check}");
        }
        let config = self.container.run(&["cat", "/etc/relais/relaisd.toml"]);
        assert!(
            config.contains("source = \"systemd-credentials\""),
            "{config}"
        );
        let journal = self.container.run(&[
            "journalctl",
            "--unit=relaisd.service",
            "--output=cat",
            "--no-pager",
        ]);
        assert!(journal.contains("loading the server's keys"), "{journal}");
        assert!(!journal.contains("development only"), "{journal}");
        assert!(
            plays[0].contains(
                "WARNING: relay has no TPM 2.0, so its keys are sealed with systemd's host key"
            ),
            "no warning about the host key:\n{}",
            plays[0]
        );

        let key = self.recovery_key();
        for play in plays {
            assert!(
                !play.contains(&key),
                "the recovery key is in the play's output"
            );
        }
        let everything = self.container.run(&["journalctl", "--no-pager"]);
        assert!(
            !everything.contains(&key),
            "the recovery key is in the journal"
        );
        let disk = self.container.output(&[
            "grep",
            "--recursive",
            "--devices=skip",
            "--fixed-strings",
            "--files-with-matches",
            &key,
            "/etc",
            "/var",
            "/root",
        ]);
        assert_eq!(
            disk.status.code(),
            Some(1),
            "the recovery key is on the relay's disk: {}",
            text(&disk)
        );
        self.the_recovery_key_opens_the_copy_kept_beside_it(&key);
    }

    /// The recovery key, from the Vault file the play wrote, as the operator reads it.
    fn recovery_key(&self) -> String {
        let out = self
            .collections
            .command("ansible-vault")
            .arg("view")
            .arg("--vault-password-file")
            .arg(&self.vault_password)
            .arg(self.keys.join("recovery-key.vault"))
            .output()
            .expect("ansible-vault");
        assert!(out.status.success(), "ansible-vault view: {}", text(&out));
        let key = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let groups: Vec<&str> = key.split('-').collect();
        assert!(
            key.len() == RECOVERY_KEY_CHARS
                && groups.len() == 8
                && groups
                    .iter()
                    .all(|g| g.len() == 8 && g.bytes().all(|b| b.is_ascii_hexdigit())),
            "not a recovery key: {} characters",
            key.len()
        );
        key
    }

    /// What an operator does after a firmware update, into a scratch directory so that the
    /// relay's own credentials stay as they are: the control node's recovery copy and key
    /// re-seal the long-lived keys.
    fn the_recovery_key_opens_the_copy_kept_beside_it(&self, key: &str) {
        let scratch = "/var/tmp/recovery-check";
        self.container
            .run(&["install", "-d", "-m", "0700", scratch]);
        let copy = self.container.root().join(&scratch[1..]);
        std::fs::copy(
            self.keys.join("relais-recovery.bin"),
            copy.join("relais-recovery.bin"),
        )
        .expect("the recovery copy on the control node");
        let recovered = self.container.output_with_input(
            &[
                "relaisd",
                "keys",
                "recover",
                "--out",
                scratch,
                "--with-key",
                "host",
                "--self-signed",
                "--name",
                "localhost",
            ],
            &format!("{key}\n"),
        );
        assert!(recovered.status.success(), "{}", text(&recovered));
        let check = self
            .container
            .run(&["relaisd", "keys", "check", "--out", scratch]);
        assert!(check.contains("relais-signing-key: ok"), "{check}");
        self.container.run(&["rm", "-rf", scratch]);
    }

    /// node_exporter runs with its timex collector, Prometheus scrapes it and relaisd
    /// (both up), and every alert Prometheus loaded links a runbook that is on this host.
    pub(super) fn prometheus_scrapes_the_relay_and_its_host_and_links_the_runbooks(&self) {
        let defaults = self
            .container
            .run(&["cat", "/etc/default/prometheus-node-exporter"]);
        assert!(
            defaults.contains("ARGS=\"--web.listen-address=127.0.0.1:9100 --collector.timex\""),
            "{defaults}"
        );
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let up = self.prometheus("query?query=up");
            let timex = self.prometheus("query?query=node_timex_sync_status");
            let job_up = |job: &str| {
                up["data"]["result"].as_array().is_some_and(|series| {
                    series
                        .iter()
                        .any(|s| s["metric"]["job"] == job && s["value"][1] == "1")
                })
            };
            let timex_scraped = timex["data"]["result"]
                .as_array()
                .is_some_and(|series| series.iter().any(|s| s["metric"]["job"] == "relais_node"));
            if job_up("relais") && job_up("relais_node") && timex_scraped {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "Prometheus does not scrape both jobs:\n{up}\n{timex}"
            );
            std::thread::sleep(Duration::from_secs(1));
        }

        let rules = self.prometheus("rules?type=alert");
        let mut alerts = Vec::new();
        for group in rules["data"]["groups"].as_array().expect("rule groups") {
            for rule in group["rules"].as_array().expect("rules") {
                let name = rule["name"].as_str().expect("alert name").to_owned();
                let url = rule["annotations"]["runbook_url"].as_str().unwrap_or("");
                let page = url.strip_prefix(RUNBOOKS).unwrap_or_else(|| {
                    panic!("{name}: runbook_url {url:?} is not under {RUNBOOKS}")
                });
                let path = format!("/usr/share/doc/relaisd/runbooks/{page}");
                let there = self.container.output(&["test", "-f", &path]);
                assert!(there.status.success(), "{name}: {url} is not on the host");
                alerts.push(name);
            }
        }
        for name in [
            "RelaisDown",
            "RelaisClockNotSynchronised",
            "RelaisDiskFillingUp",
        ] {
            assert!(
                alerts.iter().any(|a| a == name),
                "{name} not loaded: {alerts:?}"
            );
        }
    }

    /// Prometheus's HTTP API (`/api/v1/PATH`), asked from inside the container.
    fn prometheus(&self, path: &str) -> serde_json::Value {
        let script = format!(
            "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:9090/api/v1/{path}').read().decode())"
        );
        let out = self.container.run(&["python3", "-c", &script]);
        serde_json::from_str(&out).expect("Prometheus's JSON")
    }

    /// A backup taken through the admin socket and restored, as root, by the very commands
    /// `docs/cookbook/backups.md` gives into an emptied data directory: the service's user
    /// can then open the database, and relaisd serves the users it had.
    pub(super) fn a_backup_restored_by_the_cookbook_serves_again(&self) {
        let backup = "/var/backups/relais/relais-restore-test.db";
        let admin = ["relaisd", "admin", "--socket", "/run/relais/admin.sock"];
        self.container
            .run(&[&admin[..], &["backup", "--to", backup]].concat());
        self.container.run(&[
            "systemctl",
            "stop",
            "relaisd.socket",
            "relaisd-metrics.socket",
            "relaisd.service",
        ]);
        // Emptied the way the package left it: the directory, owned by relais.
        self.container
            .run(&["mv", "/var/lib/relais", "/var/lib/relais.before-restore"]);
        self.container
            .run(&["systemd-tmpfiles", "--create", "relaisd.conf"]);

        for line in cookbook_restore_lines(backup) {
            let out = self.container.output(&["sh", "-c", &line]);
            assert!(out.status.success(), "`{line}`: {}", text(&out));
        }
        let started = self.container.output(&[
            "systemctl",
            "start",
            "relaisd.socket",
            "relaisd-metrics.socket",
            "relaisd.service",
        ]);
        assert!(
            started.status.success(),
            "relaisd does not start on the restored database: {}\n{}",
            text(&started),
            self.container.run(&[
                "journalctl",
                "--unit=relaisd.service",
                "--output=cat",
                "--no-pager",
                "--lines=20",
            ])
        );
        let owner = self
            .container
            .run(&["stat", "--format=%U:%G", "/var/lib/relais/relais.db"]);
        assert_eq!(owner.trim(), "relais:relais");
        let users = self
            .container
            .run(&[&admin[..], &["user", "list"]].concat());
        assert!(users.contains("alice") && users.contains("erin"), "{users}");
    }

    /// A relay whose certificate the site's CA signs: without `relais_tls_self_signed` the
    /// play makes the TLS key, fetches its signing request and stops saying what to do;
    /// with the chain the CA issued as `relais_tls_certificate_src`, the next run installs
    /// it and relaisd serves it; the run after changes nothing.
    pub(super) fn a_certificate_from_the_sites_ca_is_installed_for_the_relays_key(
        &self,
        base: &Path,
    ) {
        // As on a relay provisioned before its CA answered: no TLS key yet.
        self.container.run(&[
            "rm",
            "/etc/relais/credentials/relais-tls-key.cred",
            "/etc/relais/credentials/relais-tls-cert.pem",
        ]);
        let asked = self
            .playbook("site.yml")
            .args(["--extra-vars", r#"{"relais_tls_self_signed": false}"#])
            .output()
            .expect("ansible-playbook");
        let asked_text = text(&asked);
        assert!(!asked.status.success(), "{asked_text}");
        assert!(
            asked_text
                .contains("relay's TLS key waits for its certificate: have the site's CA sign"),
            "{asked_text}"
        );
        let request = self.keys.join("relais-tls.csr");
        let chain = base.join("relay-signed.pem");
        let ca = sign_with_a_test_ca(base, &request, &chain);

        let vars = serde_json::json!({
            "relais_tls_self_signed": false,
            "relais_tls_certificate_src": chain,
        })
        .to_string();
        for run in ["installs", "changes nothing"] {
            let out = self
                .playbook("site.yml")
                .args(["--extra-vars", &vars])
                .output()
                .expect("ansible-playbook");
            let out_text = text(&out);
            assert!(out.status.success(), "the run that {run}:\n{out_text}");
            if run == "changes nothing" {
                assert!(recap(&out_text).contains("changed=0"), "{out_text}");
            }
        }
        // relaisd serves the CA's certificate: a client trusting only that CA connects.
        let in_container = self.container.root().join("var/tmp/site-ca.pem");
        std::fs::copy(&ca, &in_container).expect("the CA in the container");
        let handshake = self.container.run(&[
            "python3",
            "-c",
            "import socket, ssl; c = ssl.create_default_context(cafile='/var/tmp/site-ca.pem'); \
             s = c.wrap_socket(socket.create_connection(('127.0.0.1', 8443)), server_hostname='localhost'); \
             print(s.getpeercert()['issuer'])",
        ]);
        assert!(handshake.contains("Relais test CA"), "{handshake}");
    }
}

/// A CA of the test's own (`openssl`), which signs `request` into `chain` (leaf, then the
/// CA) with the names the request asks for; returns the CA's certificate.
fn sign_with_a_test_ca(base: &Path, request: &Path, chain: &Path) -> PathBuf {
    let (ca, ca_key, leaf) = (
        base.join("site-ca.pem"),
        base.join("site-ca.key"),
        base.join("relay-leaf.pem"),
    );
    let openssl = |command: &mut Command| {
        let out = command.output().expect("openssl");
        assert!(out.status.success(), "{command:?}: {}", text(&out));
    };
    openssl(
        Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .args([
                "-nodes",
                "-days",
                "30",
                "-subj",
                "/CN=Relais test CA",
                "-keyout",
            ])
            .arg(&ca_key)
            .arg("-out")
            .arg(&ca),
    );
    openssl(
        Command::new("openssl")
            .args([
                "x509",
                "-req",
                "-days",
                "30",
                "-copy_extensions",
                "copy",
                "-in",
            ])
            .arg(request)
            .arg("-CA")
            .arg(&ca)
            .arg("-CAkey")
            .arg(&ca_key)
            .arg("-out")
            .arg(&leaf),
    );
    let mut bytes = std::fs::read(&leaf).expect("leaf");
    bytes.extend(std::fs::read(&ca).expect("ca"));
    std::fs::write(chain, bytes).expect("chain");
    ca
}

/// The commands of the backup cookbook's restore, with `backup` for its example file.
fn cookbook_restore_lines(backup: &str) -> Vec<String> {
    let cookbook = relais_testkit::repository().join("docs/cookbook/backups.md");
    let cookbook = std::fs::read_to_string(cookbook).expect("docs/cookbook/backups.md");
    let (_, after) = cookbook
        .split_once("```sh\nrelaisd restore ")
        .expect("docs/cookbook/backups.md restores with relaisd restore");
    let (block, _) = after.split_once("```").expect("the end of the block");
    let example = "/var/backups/relais/relais-20261126T2100Z.db";
    assert!(block.contains(example), "{block}");
    format!("relaisd restore {block}")
        .lines()
        .filter(|line| !line.trim().is_empty() && !line.trim_start().starts_with('#'))
        .map(|line| line.replace(example, backup))
        .collect()
}
