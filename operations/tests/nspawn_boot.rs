//! The real units under a real systemd: a Debian container booted with `systemd-nspawn`
//! runs `relaisd.socket` and `relaisd.service` from `systemd/`, systemd decrypts the
//! sealed credentials (`LoadCredentialEncrypted=`) and starts relaisd on the first
//! connection, a client on the host enrolls and sends a message through it, and
//! `systemctl reload relaisd` has the running relaisd reload its TLS certificate and key.
//!
//! The container has no TPM, so the credentials are sealed with systemd's host key
//! (`--with-key host`, kept in the container's `/var/lib/systemd`); the TPM path itself is
//! covered by `sealed_keys.rs` against swtpm. The Debian root directory is built once with
//! `mmdebstrap` and cached outside the repository, under a name that hashes its inputs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use relais_testkit::clients::{enroll, receive_n};
use relais_testkit::{Daemon, relaisd, secret};

/// Everything the root directory is built from; a change here builds a new one. procps
/// has the `/bin/kill` of the unit's `ExecReload=` (the package depends on it).
const ROOTFS_INPUTS: &[&str] = &[
    "--variant=minbase",
    "--include=systemd,systemd-sysv,dbus,procps",
    "bookworm",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_units_boot_in_a_container_and_serve_from_sealed_credentials() {
    if !relais_testkit::system_component(
        &["systemd-nspawn", "mmdebstrap", "nsenter"],
        "the container boot test",
    ) {
        return;
    }
    let root = relais_testkit::rootfs::cached(ROOTFS_INPUTS);
    // On a disk like the real /var/lib/systemd, where systemd-creds keeps its host key.
    let base = tempfile::tempdir_in("/var/tmp").expect("tempdir");
    let machine = Machine::prepare(base.path());
    machine.run(
        &[
            RELAISD_IN_CONTAINER,
            "keys",
            "provision",
            "--out",
            "/etc/relais/credentials",
            "--with-key",
            "host",
            "--self-signed",
            "--name",
            "localhost",
            "--name",
            "127.0.0.1",
        ],
        &root,
    );
    let daemon =
        the_units_serve_clients_from_the_sealed_credentials(&machine, &root, base.path()).await;
    another_host_key_keeps_relaisd_from_starting(&machine, &root, &daemon);
    keys_check_names_each_credential_and_why_it_does_not_open(&machine, &root);
}

/// The first boot: the socket units listen, a connection starts relaisd from the sealed
/// credentials, and two clients on the host talk through it. Returns the clients' view of
/// the relay, its admin socket included.
async fn the_units_serve_clients_from_the_sealed_credentials(
    machine: &Machine,
    root: &Path,
    base: &Path,
) -> Daemon {
    let booted = machine.boot(root);

    // The socket units listen first; this connection is what starts relaisd.
    let address = format!("127.0.0.1:{}", machine.client_port);
    wait_until(
        Duration::from_secs(60),
        "the client socket",
        || std::net::TcpStream::connect(&address).is_ok(),
        &booted,
    );
    let admin_socket = machine.state.join("admin.sock");
    wait_until(
        Duration::from_secs(60),
        "relaisd's admin socket",
        || admin_socket.exists(),
        &booted,
    );

    let mut daemon = Daemon::configure(
        &base.join("client"),
        "",
        machine.etc.join("credentials/relais-tls-cert.pem"),
        "",
    );
    daemon.admin_socket = admin_socket;
    daemon.server = format!("https://{address}");
    daemon.addr = address;
    let status = daemon.admin(&["status"]);
    assert!(
        status.contains("key_provider: systemd credentials in /run/credentials/relaisd.service"),
        "{status}"
    );
    let dir = base.join("devices");
    let mut alice = enroll(
        &daemon,
        &dir.join("alice"),
        "alice",
        &daemon.add_user("alice"),
    )
    .await;
    let mut bob = enroll(&daemon, &dir.join("bob"), "bob", &daemon.add_user("bob")).await;
    let text = secret("through-the-container");
    alice.send("bob", &text).await.expect("alice sends");
    let got = receive_n(&mut bob, 1).await;
    assert_eq!(
        got.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(),
        [text.as_str()]
    );
    alice.close().await;
    bob.close().await;
    systemctl_reload_reloads_the_tls_key_in_place(&booted);
    drop(booted);
    daemon
}

/// `systemctl reload relaisd` goes through the unit's `ExecReload=`, inside its sandbox:
/// the same relaisd process reloads its TLS certificate and key, and says so in the journal.
fn systemctl_reload_reloads_the_tls_key_in_place(booted: &Booted) {
    let main_pid = || {
        let out = booted.run(&["systemctl", "show", "--property=MainPID", "relaisd.service"]);
        assert!(!out.contains("MainPID=0"), "relaisd is not running: {out}");
        out
    };
    let before = main_pid();
    booted.run(&["systemctl", "reload", "relaisd.service"]);
    wait_until(
        Duration::from_secs(30),
        "the reload's journal line",
        || {
            booted
                .run(&[
                    "journalctl",
                    "--unit=relaisd.service",
                    "--output=cat",
                    "--no-pager",
                ])
                .contains("reloaded the TLS certificate and key")
        },
        booted,
    );
    assert_eq!(main_pid(), before, "the reload restarted relaisd");
    let state = booted.run(&["systemctl", "is-active", "relaisd.service"]);
    assert_eq!(state.trim(), "active");
}

/// The same disk in another machine: its host key is not the one the credentials were
/// sealed with. systemd refuses to start relaisd, without naming the credential.
fn another_host_key_keeps_relaisd_from_starting(machine: &Machine, root: &Path, daemon: &Daemon) {
    std::fs::remove_file(machine.systemd_state.join("credential.secret")).expect("host key");
    machine.run(&["systemd-creds", "setup"], root);
    let booted = machine.boot(root);
    wait_until(
        Duration::from_secs(60),
        "the client socket",
        || std::net::TcpStream::connect(&daemon.addr).is_ok(),
        &booted,
    );
    wait_until(
        Duration::from_secs(60),
        "systemd's refusal",
        || {
            booted
                .log_text()
                .contains("relaisd.service: Failed at step CREDENTIALS spawning /usr/bin/relaisd")
        },
        &booted,
    );
    assert!(!daemon.admin_socket.exists(), "relaisd never ran");
    drop(booted);
}

/// `relaisd keys check` names each credential and why it does not open.
fn keys_check_names_each_credential_and_why_it_does_not_open(machine: &Machine, root: &Path) {
    let out = machine.output(
        &[
            RELAISD_IN_CONTAINER,
            "keys",
            "check",
            "--out",
            "/etc/relais/credentials",
        ],
        root,
    );
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(78), "{report}");
    assert!(
        report.contains("relais-code-secret: cannot unseal credential relais-code-secret")
            && report.contains("it was sealed with another host key than this machine's"),
        "{report}"
    );
}

/// Where the binary is bound inside the container.
const RELAISD_IN_CONTAINER: &str = "/usr/bin/relaisd";

/// The host directories bound into the container, and its ports.
struct Machine {
    name: String,
    machine_id: PathBuf,
    etc: PathBuf,
    state: PathBuf,
    systemd_state: PathBuf,
    units: PathBuf,
    log: PathBuf,
    client_port: u16,
}

impl Machine {
    fn prepare(base: &Path) -> Machine {
        let client_port = relais_testkit::free_port();
        let metrics_port = relais_testkit::free_port();
        let machine = Machine {
            name: format!("relais-test-{client_port}"),
            machine_id: base.join("machine-id"),
            etc: base.join("etc-relais"),
            state: base.join("state"),
            systemd_state: base.join("var-lib-systemd"),
            units: base.join("system"),
            log: base.join("boot.log"),
            client_port,
        };
        for dir in [&machine.etc, &machine.state, &machine.systemd_state] {
            std::fs::create_dir_all(dir).expect("dir");
        }
        // The same machine id for provisioning and boot: the host key is bound to it.
        std::fs::write(
            &machine.machine_id,
            format!("{}\n", hex::encode(rand::random::<[u8; 16]>())),
        )
        .expect("machine-id");
        std::fs::write(machine.etc.join("relaisd.toml"), "domain = \"localhost\"\n")
            .expect("config");
        // The repository's units, with the sockets moved to free ports and enabled.
        let wants = machine.units.join("sockets.target.wants");
        std::fs::create_dir_all(&wants).expect("units");
        let units = relais_testkit::repository().join("systemd");
        for (unit, from, to) in [
            ("relaisd.service", "", String::new()),
            (
                "relaisd.socket",
                "ListenStream=8443",
                format!("ListenStream=127.0.0.1:{client_port}"),
            ),
            (
                "relaisd-metrics.socket",
                "ListenStream=127.0.0.1:9464",
                format!("ListenStream=127.0.0.1:{metrics_port}"),
            ),
        ] {
            let text = std::fs::read_to_string(units.join(unit)).expect("unit");
            assert!(from.is_empty() || text.contains(from), "{unit} has {from}");
            let text = if from.is_empty() {
                text
            } else {
                text.replace(from, &to)
            };
            std::fs::write(machine.units.join(unit), text).expect("write unit");
            if unit.ends_with(".socket") {
                std::os::unix::fs::symlink(format!("../{unit}"), wants.join(unit)).expect("enable");
            }
        }
        machine
    }

    fn nspawn(&self, root: &Path) -> Command {
        let units = relais_testkit::repository().join("systemd");
        let bind = |from: &Path, to: &str| format!("{}:{to}", from.display());
        let mut command = Command::new("systemd-nspawn");
        command
            .args([
                "--quiet",
                "--keep-unit",
                "--register=no",
                "--volatile=overlay",
            ])
            .arg(format!("--machine={}", self.name))
            .arg("--directory")
            .arg(root)
            .arg(format!(
                "--bind-ro={}",
                bind(&self.machine_id, "/etc/machine-id")
            ))
            .arg(format!(
                "--bind-ro={}",
                bind(relaisd(), RELAISD_IN_CONTAINER)
            ))
            .arg(format!("--bind={}", bind(&self.etc, "/etc/relais")))
            .arg(format!("--bind={}", bind(&self.state, "/var/lib/relais")))
            .arg(format!(
                "--bind={}",
                bind(&self.systemd_state, "/var/lib/systemd")
            ))
            .arg(format!(
                "--bind={}",
                bind(&self.units, "/etc/systemd/system")
            ))
            .arg(format!(
                "--bind-ro={}",
                bind(
                    &units.join("relaisd.sysusers"),
                    "/etc/sysusers.d/relaisd.conf"
                )
            ))
            .arg(format!(
                "--bind-ro={}",
                bind(
                    &units.join("relaisd.tmpfiles"),
                    "/etc/tmpfiles.d/relaisd.conf"
                )
            ));
        command
    }

    /// Runs one command in the container without booting it; it must succeed.
    fn run(&self, args: &[&str], root: &Path) {
        let out = self.output(args, root);
        assert!(
            out.status.success(),
            "{args:?} in the container failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn output(&self, args: &[&str], root: &Path) -> std::process::Output {
        self.nspawn(root)
            .args(args)
            .output()
            .expect("systemd-nspawn")
    }

    /// Boots systemd in the container; dropping the result powers it off.
    fn boot(&self, root: &Path) -> Booted {
        let log = std::fs::File::create(&self.log).expect("log");
        let child = self
            .nspawn(root)
            .arg("--boot")
            // The manager's own messages on the console, where the test reads them.
            .args(["--", "systemd.log_target=console", "systemd.log_color=0"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("systemd-nspawn --boot");
        Booted {
            child,
            log: self.log.clone(),
        }
    }
}

/// A booted container; dropping it asks systemd inside to power off (nspawn turns its
/// SIGTERM into SIGRTMIN+3 for the container's init) and waits.
struct Booted {
    child: Child,
    log: PathBuf,
}

impl Booted {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs a command inside the booted container, which must succeed; returns its output.
    fn run(&self, args: &[&str]) -> String {
        let leader = relais_testkit::rootfs::leader_of(self.child.id())
            .expect("the container's init is running");
        let out = Command::new("nsenter")
            .args(["--target", &leader.to_string(), "--all", "--"])
            .args(args)
            .output()
            .expect("nsenter (util-linux)");
        assert!(
            out.status.success(),
            "{args:?} in the container failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Booted {
    fn drop(&mut self) {
        relais_testkit::signal(&self.child, "TERM");
        relais_testkit::wait_timeout(&mut self.child, Duration::from_secs(60));
    }
}

fn wait_until(timeout: Duration, what: &str, mut ready: impl FnMut() -> bool, booted: &Booted) {
    let deadline = Instant::now() + timeout;
    while !ready() {
        assert!(
            Instant::now() < deadline,
            "{what} did not come up; boot log:\n{}",
            booted.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
