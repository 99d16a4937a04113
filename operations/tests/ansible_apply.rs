//! `site.yml` applied for real: a Debian container booted with `systemd-nspawn`, with no
//! network but its own loopback, is reached by Ansible through `community.docker.nsenter`;
//! the play installs relaisd from a bundle built here (`cargo deb`), seals its keys on the
//! relay (with systemd's host key: the container has no TPM) and keeps the recovery key in
//! a Vault file on the control node, installs node_exporter, the firewall and the
//! monitoring, a second run changes nothing, Prometheus scrapes the relay and its host and
//! links every alert to a runbook, and two clients inside the container's network enroll
//! and exchange a message through the installed relay. Then `upgrade.yml` installs a newer
//! package with a message waiting in the queue, which is delivered after, `add_admin.yml`
//! gives Unix users the admin and reader roles on the admin socket, a backup restored by
//! the cookbook's steps, as root, serves again, and a relay whose TLS key waits for the
//! site's CA gets the certificate the CA signed for its fetched request.
//!
//! The Debian root directory (with Python for Ansible, procps, nftables, Prometheus,
//! Alertmanager and node_exporter, installed from the site's media in real life) is built
//! once with `mmdebstrap` and cached in `/var/cache/relais-test` under a hash of its inputs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod operator_checks;

use relais_testkit::clients::{enroll, receive_n};
use relais_testkit::packaging::{Collections, recap, text};
use relais_testkit::{Daemon, secret};

/// Everything the root directory is built from; a change here builds a new one.
const ROOTFS_INPUTS: &[&str] = &[
    "--variant=minbase",
    "--include=systemd,systemd-sysv,dbus,python3,procps,nftables,prometheus,prometheus-alertmanager,prometheus-node-exporter",
    "bookworm",
];

#[test]
fn site_yml_installs_a_working_relay_without_network_and_converges() {
    if !relais_testkit::require_root("booting a container") {
        return;
    }
    let tools = [
        "systemd-nspawn",
        "mmdebstrap",
        "nsenter",
        "ansible-playbook",
        "cargo-deb",
    ];
    if !relais_testkit::system_component(&tools, "the Ansible apply test") || !nsenter_connection()
    {
        return;
    }
    let root = relais_testkit::rootfs::cached(ROOTFS_INPUTS);
    let base = tempfile::tempdir_in("/var/tmp").expect("tempdir");
    let bundle = Bundle::build(base.path());
    let container = Container::boot(&root, base.path());
    // An existing host: the site's own Prometheus job and nftables rule, which the play
    // must leave as they are.
    container.site_configuration();

    let site = Site::new(base.path(), bundle, container);
    let plays = site.site_yml_applies_and_a_second_run_changes_nothing();
    site.the_relay_runs_beside_the_sites_own_configuration();
    site.the_keys_are_sealed_and_the_recovery_key_kept_on_the_control_node(&plays);
    site.prometheus_scrapes_the_relay_and_its_host_and_links_the_runbooks();
    let queued = site.clients_talk_through_the_installed_relay(base.path());
    site.upgrade_yml_leaves_the_same_version_running();
    site.a_rolling_upgrade_delivers_the_queued_message(queued);
    site.add_admin_yml_gives_roles_from_unix_groups();
    site.a_backup_restored_by_the_cookbook_serves_again();
    site.a_certificate_from_the_sites_ca_is_installed_for_the_relays_key(base.path());
}

/// The booted container as Ansible reaches it: the collection, an inventory naming the
/// container as relay and monitoring host, and the bundle the play installs from.
struct Site {
    collections: Collections,
    inventory: PathBuf,
    bundle: Bundle,
    container: Container,
    /// The password of the recovery key's Vault file, in a file of the control node's.
    vault_password: PathBuf,
    /// What the play keeps on the control node from the relay's keys (relais-keys/ beside
    /// the inventory, one directory per host).
    keys: PathBuf,
    /// The clients' homes, kept across the upgrade.
    devices: PathBuf,
}

impl Site {
    fn new(base: &Path, bundle: Bundle, container: Container) -> Site {
        let collections = Collections::new();
        let inventory = base.join("hosts.yml");
        let vault_password = base.join("vault-password");
        std::fs::write(&vault_password, hex::encode(rand::random::<[u8; 16]>()))
            .expect("vault password");
        std::fs::write(
            &inventory,
            bundle.inventory(container.leader, &vault_password),
        )
        .expect("inventory");
        Site {
            collections,
            inventory,
            bundle,
            container,
            vault_password,
            keys: base.join("relais-keys/relay"),
            devices: base.join("devices"),
        }
    }

    fn playbook(&self, playbook: &str) -> Command {
        self.collections.playbook(&self.inventory, playbook)
    }

    /// The container's network namespace, where the clients run.
    fn netns(&self) -> String {
        format!("/proc/{}/ns/net", self.container.leader)
    }

    /// Returns both runs' output.
    fn site_yml_applies_and_a_second_run_changes_nothing(&self) -> [String; 2] {
        let first = self
            .playbook("site.yml")
            .output()
            .expect("ansible-playbook");
        let first_text = text(&first);
        assert!(
            first.status.success(),
            "site.yml failed:\n{first_text}\n{}",
            self.container.log()
        );
        assert!(recap(&first_text).contains("failed=0"), "{first_text}");
        let second = self
            .playbook("site.yml")
            .output()
            .expect("ansible-playbook");
        let second_text = text(&second);
        assert!(second.status.success(), "second run failed:\n{second_text}");
        assert!(
            recap(&second_text).contains("changed=0") && recap(&second_text).contains("failed=0"),
            "the second run changed something:\n{second_text}"
        );
        [first_text, second_text]
    }

    /// What the play left running, seen from inside, and the site's own configuration
    /// beside it.
    fn the_relay_runs_beside_the_sites_own_configuration(&self) {
        for unit in [
            "relaisd.service",
            "relaisd.socket",
            "relaisd-metrics.socket",
            "nftables.service",
            "prometheus.service",
            "prometheus-node-exporter.service",
        ] {
            let state = self.container.run(&["systemctl", "is-active", unit]);
            assert_eq!(state.trim(), "active", "{unit}");
        }
        let rules = self.container.run(&["nft", "list", "ruleset"]);
        assert!(
            rules.contains("policy drop;") && rules.contains("tcp dport 8443 accept"),
            "{rules}"
        );
        self.container.site_configuration_is_intact();
    }

    /// The relay serves: clients in the container's network enroll and talk through it.
    /// Returns the message Alice left queued for Bob, offline, across the upgrade.
    fn clients_talk_through_the_installed_relay(&self, base: &Path) -> String {
        // The self-signed certificate the play fetched, which the clients pin.
        let certificate = self.keys.join("relais-tls-cert.pem");
        let mut daemon = Daemon::configure(&base.join("client"), "", certificate, "");
        daemon.admin_socket = PathBuf::from(format!(
            "/proc/{}/root/run/relais/admin.sock",
            self.container.leader
        ));
        daemon.server = "https://127.0.0.1:8443".into();
        daemon.addr = "127.0.0.1:8443".into();
        let status = daemon.admin(&["status"]);
        assert!(
            status
                .contains("key_provider: systemd credentials in /run/credentials/relaisd.service"),
            "{status}"
        );
        let codes = (daemon.add_user("alice"), daemon.add_user("bob"));
        let first = secret("installed-by-ansible");
        let queued = secret("waits-through-the-upgrade");
        let got = in_network_namespace(&self.netns(), {
            let devices = self.devices.clone();
            let (first, queued) = (first.clone(), queued.clone());
            move || async move {
                let mut alice = enroll(&daemon, &devices.join("alice"), "alice", &codes.0).await;
                let mut bob = enroll(&daemon, &devices.join("bob"), "bob", &codes.1).await;
                alice.send("bob", &first).await.expect("alice sends");
                let got = receive_n(&mut bob, 1).await;
                bob.close().await;
                // Bob is offline: this one waits in the relay's queue across the upgrade.
                alice.send("bob", &queued).await.expect("alice sends again");
                alice.close().await;
                got.into_iter().map(|m| m.text).collect::<Vec<_>>()
            }
        });
        assert_eq!(got, [first]);
        queued
    }

    /// upgrade.yml with the version already installed leaves the relay running as it is.
    fn upgrade_yml_leaves_the_same_version_running(&self) {
        let invocation = || {
            self.container.run(&[
                "systemctl",
                "show",
                "--property=InvocationID",
                "relaisd.service",
            ])
        };
        let before = invocation();
        let same = self
            .playbook("upgrade.yml")
            .output()
            .expect("ansible-playbook");
        let same_text = text(&same);
        assert!(same.status.success(), "upgrade.yml failed:\n{same_text}");
        assert!(
            recap(&same_text).contains("changed=0"),
            "upgrade.yml changed a relay whose version is unchanged:\n{same_text}"
        );
        assert_eq!(invocation(), before, "relaisd was restarted");
    }

    /// A rolling upgrade to a newer package in the bundle; Bob then gets `queued`.
    fn a_rolling_upgrade_delivers_the_queued_message(&self, queued: String) {
        std::fs::remove_file(&self.bundle.deb).expect("old package");
        relais_testkit::packaging::build_deb_version(&self.bundle.dir, "0.1.0-2");
        let upgrade = self
            .playbook("upgrade.yml")
            .output()
            .expect("ansible-playbook");
        let upgrade_text = text(&upgrade);
        assert!(
            upgrade.status.success(),
            "upgrade.yml failed:\n{upgrade_text}"
        );
        assert!(
            upgrade_text.contains("Drain and stop relaisd")
                && upgrade_text.contains("Install relaisd with dpkg, without any network"),
            "{upgrade_text}"
        );
        let version =
            self.container
                .run(&["dpkg-query", "--showformat=${Version}", "--show", "relaisd"]);
        assert_eq!(version, "0.1.0-2");
        assert_eq!(
            self.container
                .run(&["systemctl", "is-active", "relaisd.service"])
                .trim(),
            "active"
        );
        let got = in_network_namespace(&self.netns(), {
            let devices = self.devices.clone();
            move || async move {
                let mut bob = relais_client::Client::open(&devices.join("bob"))
                    .await
                    .expect("bob opens");
                bob.connect().await.expect("bob reconnects");
                let got = receive_n(&mut bob, 1).await;
                bob.close().await;
                got.into_iter().map(|m| m.text).collect::<Vec<_>>()
            }
        });
        assert_eq!(got, [queued], "the queued message after the upgrade");
    }

    /// Roles from Unix groups: carol administers, dave only reads, and a missing user is
    /// refused rather than created.
    fn add_admin_yml_gives_roles_from_unix_groups(&self) {
        for user in ["carol", "dave"] {
            self.container
                .run(&["useradd", "--create-home", "--shell", "/bin/sh", user]);
        }
        for (user, role) in [("carol", "admin"), ("dave", "reader")] {
            let out = self
                .playbook("add_admin.yml")
                .args([
                    "--extra-vars",
                    &format!("relais_admin_user={user} relais_admin_role={role}"),
                ])
                .output()
                .expect("ansible-playbook");
            assert!(out.status.success(), "add_admin {user}:\n{}", text(&out));
        }
        let missing = self
            .playbook("add_admin.yml")
            .args(["--extra-vars", "relais_admin_user=mallory"])
            .output()
            .expect("ansible-playbook");
        assert!(!missing.status.success());
        assert!(
            text(&missing)
                .contains("the Unix user mallory does not exist on relay; create it first"),
            "{}",
            text(&missing)
        );
        // A login shell, as an operator's: the role's profile script names the socket.
        let as_user = |user: &str, command: &str| {
            self.container
                .output(&["su", "--login", user, "--command", command])
        };
        let listed = as_user("dave", "relaisd admin user list");
        assert!(listed.status.success(), "{}", text(&listed));
        assert!(
            String::from_utf8_lossy(&listed.stdout).contains("alice"),
            "{}",
            text(&listed)
        );
        let refused = as_user("dave", "relaisd admin user add erin");
        assert!(
            !refused.status.success() && text(&refused).contains("is a read-only operator"),
            "a reader added a user: {}",
            text(&refused)
        );
        let added = as_user("carol", "relaisd admin user add erin");
        assert!(added.status.success(), "{}", text(&added));
    }
}

/// Whether the nsenter connection (Debian's `ansible` package) is there; fails in CI.
fn nsenter_connection() -> bool {
    let found = Command::new("ansible-doc")
        .args(["-t", "connection", "community.docker.nsenter"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        let message = "the Ansible apply test needs community.docker.nsenter (Debian's ansible package, scripts/test installs it)";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{message}");
        eprintln!("skipped: {message}");
    }
    found
}

/// The air-gapped bundle: the package and the monitoring files.
struct Bundle {
    dir: PathBuf,
    deb: PathBuf,
}

impl Bundle {
    fn build(base: &Path) -> Bundle {
        let dir = base.join("bundle");
        std::fs::create_dir_all(&dir).expect("bundle");
        let deb = relais_testkit::packaging::build_deb(&dir);
        let monitoring = relais_testkit::repository().join("monitoring");
        let copied = Command::new("cp")
            .arg("-r")
            .arg(&monitoring)
            .arg(dir.join("monitoring"))
            .status()
            .expect("cp");
        assert!(copied.success(), "copy monitoring/");
        Bundle { deb, dir }
    }

    /// The container as both relay and monitoring host, reached through its leader. Its keys
    /// are the role's default, sealed on the relay; the recovery key's Vault password comes
    /// from a file, as the cookbook suggests.
    fn inventory(&self, leader: u32, vault_password: &Path) -> String {
        format!(
            "all:
  vars:
    ansible_connection: community.docker.nsenter
    ansible_nsenter_pid: {leader}
    ansible_python_interpreter: /usr/bin/python3
    # nsenter always runs as root; the container has no sudo to become with.
    ansible_become: false
    relais_bundle_dir: {bundle}
    relais_allow_network_packages: false
  children:
    relais:
      hosts:
        relay:
      vars:
        relais_domain: localhost
        relais_tls_names: [localhost, 127.0.0.1]
        relais_tls_self_signed: true
        relais_keys_recovery_vault_password: \"{{{{ lookup('ansible.builtin.file', '{vault_password}') }}}}\"
        relais_backup_directory: /var/backups/relais
        relais_limits:
          connections_max: 1000
        relais_firewall_client_networks: [10.0.0.0/8]
    relais_monitoring:
      hosts:
        relay:
",
            bundle = self.dir.display(),
            vault_password = vault_password.display(),
        )
    }
}

/// The site's own nftables configuration, as it was before Relais.
const SITE_NFTABLES: &str = "#!/usr/sbin/nft -f
flush ruleset

table inet site {
  chain input {
    type filter hook input priority filter; policy accept;
    tcp dport 2222 accept comment \"the site's own rule\"
  }
}
";
/// The site's rule as `nft list ruleset` shows it.
const SITE_RULE: &str = "tcp dport 2222 accept comment \"the site's own rule\"";
/// A scrape job of the site's own, appended to Debian's prometheus.yml.
const SITE_JOB: &str = "
  - job_name: site
    static_configs:
      - targets: ['127.0.0.1:9999']
";

/// A booted container with only a loopback interface; dropping it powers it off.
struct Container {
    child: Child,
    leader: u32,
    log: PathBuf,
}

impl Container {
    fn boot(root: &Path, base: &Path) -> Container {
        let machine_id = base.join("machine-id");
        std::fs::write(
            &machine_id,
            format!("{}\n", hex::encode(rand::random::<[u8; 16]>())),
        )
        .expect("machine-id");
        let log = base.join("boot.log");
        let file = std::fs::File::create(&log).expect("log");
        let child = Command::new("systemd-nspawn")
            .args([
                "--quiet",
                "--keep-unit",
                "--register=no",
                "--volatile=overlay",
                // No network but the container's own loopback: nothing can be downloaded.
                "--private-network",
                // node_exporter's timex collector reads the clock's state with adjtimex,
                // which nspawn forbids by default; without CAP_SYS_TIME (which the
                // container does not get) the call can only read, never set, the clock.
                "--system-call-filter=adjtimex clock_adjtime",
            ])
            .arg(format!("--machine=relais-ansible-{}", std::process::id()))
            .arg("--directory")
            .arg(root)
            .arg(format!(
                "--bind-ro={}:/etc/machine-id",
                machine_id.display()
            ))
            .args([
                "--boot",
                "--",
                "systemd.log_target=console",
                "systemd.log_color=0",
            ])
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log"))
            .stderr(file)
            .spawn()
            .expect("systemd-nspawn --boot");
        let mut container = Container {
            leader: 0,
            child,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            assert!(
                Instant::now() < deadline,
                "the container did not boot:\n{}",
                container.log()
            );
            if container.leader == 0 {
                container.leader =
                    relais_testkit::rootfs::leader_of(container.child.id()).unwrap_or(0);
            } else {
                let state = container.output(&["systemctl", "is-system-running"]);
                let state = String::from_utf8_lossy(&state.stdout);
                if matches!(state.trim(), "running" | "degraded") {
                    return container;
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn output(&self, args: &[&str]) -> std::process::Output {
        Command::new("nsenter")
            .args(["--target", &self.leader.to_string(), "--all", "--"])
            .args(args)
            .output()
            .expect("nsenter")
    }

    /// As [`Container::output`], with `input` on the command's standard input.
    fn output_with_input(&self, args: &[&str], input: &str) -> std::process::Output {
        use std::io::Write as _;
        let mut child = Command::new("nsenter")
            .args(["--target", &self.leader.to_string(), "--all", "--"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("nsenter");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write to the command");
        child.wait_with_output().expect("nsenter")
    }

    /// The container's root directory, as the host sees it.
    fn root(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root", self.leader))
    }

    /// Runs a command in the container, which must succeed, and returns its output.
    fn run(&self, args: &[&str]) -> String {
        let out = self.output(args);
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Gives the host a configuration of the site's own, as an existing Debian host has:
    /// an nftables table with a rule, and a Prometheus job beside Debian's.
    fn site_configuration(&self) {
        let root = self.root();
        std::fs::write(root.join("etc/nftables.conf"), SITE_NFTABLES).expect("nftables.conf");
        // The site's DNS names the relay as the inventory does: Prometheus scrapes it there.
        let hosts = std::fs::read_to_string(root.join("etc/hosts"))
            .unwrap_or_else(|_| "127.0.0.1 localhost\n".to_owned());
        let hosts = format!("{hosts}127.0.0.1 relay\n");
        std::fs::write(root.join("etc/hosts"), hosts).expect("/etc/hosts");
        let prometheus = root.join("etc/prometheus/prometheus.yml");
        let mut config = std::fs::read_to_string(&prometheus).expect("prometheus.yml");
        assert!(config.contains("scrape_configs:"), "{config}");
        config.push_str(SITE_JOB);
        std::fs::write(&prometheus, config).expect("prometheus.yml");
        self.run(&[
            "promtool",
            "check",
            "config",
            "--syntax-only",
            "/etc/prometheus/prometheus.yml",
        ]);
        self.run(&["systemctl", "enable", "--now", "nftables.service"]);
        self.run(&[
            "systemctl",
            "restart",
            "nftables.service",
            "prometheus.service",
        ]);
        let rules = self.run(&["nft", "list", "ruleset"]);
        assert!(rules.contains(SITE_RULE), "{rules}");
    }

    /// The site's configuration after the play: its files keep their text, the site's
    /// table and Prometheus job are loaded beside Relais's, and a reload of nftables
    /// leaves one Relais table.
    fn site_configuration_is_intact(&self) {
        let nftables = self.run(&["cat", "/etc/nftables.conf"]);
        assert!(nftables.starts_with(SITE_NFTABLES), "{nftables}");
        let prometheus = self.run(&["cat", "/etc/prometheus/prometheus.yml"]);
        assert!(
            prometheus.contains(SITE_JOB) && prometheus.contains("job_name: 'prometheus'"),
            "{prometheus}"
        );
        self.run(&["systemctl", "reload", "nftables.service"]);
        let rules = self.run(&["nft", "list", "ruleset"]);
        assert!(
            rules.contains(SITE_RULE),
            "the site's rule is gone:\n{rules}"
        );
        assert_eq!(rules.matches("table inet relais {").count(), 1, "{rules}");
        assert!(!rules.contains("table inet relais_filter"), "{rules}");
        // What Prometheus runs with, from its API: both jobs.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let loaded = self.output(&[
                "python3",
                "-c",
                "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:9090/api/v1/status/config').read().decode())",
            ]);
            let loaded = String::from_utf8_lossy(&loaded.stdout).into_owned();
            if loaded.contains("job_name: site") && loaded.contains("job_name: relais") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "Prometheus's configuration:\n{loaded}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        // nspawn turns SIGTERM into a clean power-off of the container's systemd.
        relais_testkit::signal(&self.child, "TERM");
        relais_testkit::wait_timeout(&mut self.child, Duration::from_secs(60));
    }
}

/// Runs the future `work` makes on a thread that joined the network namespace `netns`, so
/// that every socket it opens lives there. The future is made on that thread: the client's
/// futures are not `Send`.
fn in_network_namespace<T: Send + 'static, F: std::future::Future<Output = T>>(
    netns: &str,
    work: impl FnOnce() -> F + Send + 'static,
) -> T {
    let netns = std::fs::File::open(netns).expect("network namespace");
    std::thread::spawn(move || {
        nix::sched::setns(&netns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(work())
    })
    .join()
    .expect("client thread")
}
