//! Test harness shared by the workspace's integration tests, compiled once for all of
//! them: starts the real `relaisd` binary on `127.0.0.1:0` with a temporary data directory
//! and drives its admin socket through the real `relaisd admin` command; its modules bring
//! the clients, raw WebSocket sessions, several nodes, PostgreSQL, a software TPM, QEMU and
//! the packaging tools.

pub mod clients;
pub mod nodes;
pub mod ntp;
pub mod packaging;
pub mod postgres;
pub mod qemu;
pub mod raw;
pub mod rootfs;
pub mod swtpm;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The `relaisd` binary the tests run. Cargo names it to relaisd's own tests in
/// `CARGO_BIN_EXE_relaisd`, when it builds them and when it or nextest runs them; the tests
/// of other crates find it in the target directory their own binary runs from
/// (`target/debug/deps/`), where `cargo build --workspace --bins` (scripts/test) puts it.
pub fn relaisd() -> &'static Path {
    static RELAISD: OnceLock<PathBuf> = OnceLock::new();
    RELAISD.get_or_init(|| {
        let path = std::env::var_os("CARGO_BIN_EXE_relaisd").map_or_else(
            || {
                let test = std::env::current_exe().expect("the test binary's path");
                let profile = test.parent().and_then(Path::parent);
                profile
                    .expect("a test binary in target/PROFILE/deps")
                    .join("relaisd")
            },
            PathBuf::from,
        );
        assert!(
            path.is_file(),
            "{} is missing: build the workspace's binaries first (cargo build --workspace --bins)",
            path.display()
        );
        path
    })
}

/// The target directory the binaries were built in (`target/`, or `$CARGO_TARGET_DIR`).
pub fn target_dir() -> &'static Path {
    let profile = relaisd().parent().expect("relaisd in target/PROFILE/");
    profile
        .parent()
        .expect("target/PROFILE/ in the target directory")
}

/// The repository's root: the workspace, whose crates and `ansible/`, `docs/`, `image/`,
/// `monitoring/` and `systemd/` the tests read.
pub fn repository() -> &'static Path {
    // This crate's manifest directory, `testkit/`, is one level below the root.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit/ inside the workspace")
}

/// The unprivileged uid and gid a daemon started by the tests as root switches to (the
/// tests run as root in CI). No user database entry is needed for a numeric id.
pub const SERVICE_ID: u32 = 64990;

/// Whether the tests run as root. A test that needs root fails without it when `CI=true`
/// (CI runs as root), and otherwise is skipped with the reason printed.
pub fn require_root(why: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "this test must run as root in CI: {why}"
    );
    eprintln!("skipped, not root: {why}");
    false
}

/// A temporary directory the daemon's service user may write to, for tests that start
/// `relaisd serve --dev` themselves.
pub fn service_tempdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    give_to_service_user(dir.path());
    dir
}

/// Gives `path` to the service user when running as root (the daemon would otherwise not
/// reach a directory of root's).
pub fn give_to_service_user(path: &Path) {
    if nix::unistd::geteuid().is_root() {
        let id = Some(nix::unistd::Uid::from_raw(SERVICE_ID));
        nix::unistd::chown(path, id, Some(nix::unistd::Gid::from_raw(SERVICE_ID)))
            .expect("chown to the service user");
    }
}

/// Gives `path` and everything under it to the service user when running as root, as
/// systemd does with a unit's credentials and as an operator does for the `sealed` source.
pub fn give_tree_to_service_user(path: &Path) {
    give_to_service_user(path);
    if path.is_dir() {
        for entry in std::fs::read_dir(path).expect("read dir") {
            give_tree_to_service_user(&entry.expect("entry").path());
        }
    }
}

/// `relaisd`, run as the service user when the tests run as root: `serve --dev` has no
/// configuration to name a user in, and relaisd refuses to serve as root.
pub fn relaisd_command() -> Command {
    if nix::unistd::geteuid().is_root() {
        let mut command = Command::new("setpriv");
        command
            .arg(format!("--reuid={SERVICE_ID}"))
            .arg(format!("--regid={SERVICE_ID}"))
            .arg("--clear-groups")
            .arg(relaisd());
        command
    } else {
        Command::new(relaisd())
    }
}

/// A running daemon and where its state lives.
pub struct Daemon {
    child: Option<Child>,
    pub dir: PathBuf,
    pub data: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
    pub addr: String,
    /// The metrics listener's address.
    pub metrics_addr: String,
    pub server: String,
    pub ca: PathBuf,
    pub admin_socket: PathBuf,
    /// `backup.directory`: where the daemon may write backups.
    pub backups: PathBuf,
    /// Extra environment for the daemon (the TPM to use, for sealed keys).
    pub env: Vec<(String, String)>,
    /// Soft and hard open-file limits to start the daemon with (through `prlimit`).
    pub open_files: Option<(u64, u64)>,
}

impl Daemon {
    /// Starts a daemon in `dir` (created if needed) with extra TOML appended to its config.
    ///
    /// Run as root, the daemon switches to [`SERVICE_ID`] unless `extra_config` has a
    /// `[process]` section of its own; `dir` is opened for that user to traverse.
    pub fn start(dir: &Path, extra_config: &str) -> Daemon {
        let mut daemon = Daemon::unstarted(dir, extra_config);
        daemon.launch();
        daemon
    }

    /// A daemon configured as [`Daemon::start`] configures it, not started yet.
    pub fn unstarted(dir: &Path, extra_config: &str) -> Daemon {
        let data = dir.join("data");
        std::fs::create_dir_all(&data).expect("create data dir");
        relaisd::tls::ensure_dev_certificates(&data, &["localhost".into(), "127.0.0.1".into()])
            .expect("dev certificates");
        let keys = format!(
            "[tls]\ncertificate = \"{data}/server.pem\"\nprivate_key = \"{data}/server.key\"\n\n[keys]\nsource = \"file\"\n",
            data = data.display()
        );
        Daemon::configure(dir, &keys, data.join("ca.pem"), extra_config)
    }

    /// Writes the configuration of a daemon whose keys come from `keys_config` (TOML for
    /// `[tls]` and `[keys]`) and whose clients trust `ca`, without starting it.
    pub fn configure(dir: &Path, keys_config: &str, ca: PathBuf, extra_config: &str) -> Daemon {
        use std::os::unix::fs::PermissionsExt;
        let data = dir.join("data");
        std::fs::create_dir_all(&data).expect("create data dir");
        let backups = dir.join("backups");
        std::fs::create_dir_all(&backups).expect("create backup dir");
        give_to_service_user(&backups);
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711)).expect("chmod");
        let process = if extra_config.contains("[process]") {
            String::new()
        } else {
            format!("[process]\nuser = \"{SERVICE_ID}\"\ngroup = \"{SERVICE_ID}\"\n")
        };
        // A test that sets `[listen]` itself names the client address there too.
        let listen = if extra_config.contains("[listen]") {
            ""
        } else {
            "[listen]\nclient = \"127.0.0.1:0\"\n"
        };
        let config = dir.join("relaisd.toml");
        std::fs::write(
            &config,
            format!(
                "domain = \"localhost\"\ndata_dir = \"{data}\"\n\n{listen}\n{keys_config}\n[metrics]\nlisten = \"127.0.0.1:0\"\n\n[backup]\ndirectory = \"{backups}\"\n\n{process}\n{extra_config}\n",
                data = data.display(),
                backups = backups.display(),
            ),
        )
        .expect("write config");
        Daemon {
            child: None,
            log: dir.join("relaisd.log"),
            ca,
            admin_socket: data.join("admin.sock"),
            backups,
            dir: dir.to_owned(),
            data,
            config,
            addr: String::new(),
            metrics_addr: String::new(),
            server: String::new(),
            env: Vec::new(),
            open_files: None,
        }
    }

    /// (Re)starts the process with the same configuration and data.
    pub fn launch(&mut self) {
        if let Err(e) = self.try_launch() {
            panic!("{e}");
        }
    }

    /// Starts the process; on failure to become ready, says why with its exit status and
    /// log.
    pub fn try_launch(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "daemon already running");
        if !self.addr.is_empty() {
            // Come back on the same port: clients remember the server's address.
            let config = std::fs::read_to_string(&self.config).expect("read config");
            let config = config.replace(
                "client = \"127.0.0.1:0\"",
                &format!("client = \"{}\"", self.addr),
            );
            std::fs::write(&self.config, config).expect("write config");
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open log");
        let mut command = match self.open_files {
            Some((soft, hard)) => {
                let mut command = Command::new("prlimit");
                command
                    .arg(format!("--nofile={soft}:{hard}"))
                    .arg(relaisd());
                command
            }
            None => Command::new(relaisd()),
        };
        let mut child = command
            .args(["serve", "--config"])
            .arg(&self.config)
            .env("RELAIS_LOG", "debug")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start relaisd");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let Some(first) = lines.next().and_then(Result::ok) else {
            let status = wait_timeout(&mut child, Duration::from_secs(30));
            let status = status.map_or_else(|| "still running".to_owned(), |s| s.to_string());
            return Err(format!(
                "relaisd exited early ({status}); log:\n{}",
                self.log_text()
            ));
        };
        let addr = first
            .split_whitespace()
            .find_map(|w| w.strip_prefix("clients="))
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
            .to_owned();
        self.metrics_addr = first
            .split_whitespace()
            .find_map(|w| w.strip_prefix("metrics="))
            .unwrap_or_default()
            .to_owned();
        // Keep draining stdout so the daemon never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        self.server = format!("https://{addr}");
        self.addr = addr;
        self.child = Some(child);
        self.wait_ready()
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon running").id()
    }

    /// The exit status of a daemon that stopped by itself, if it did.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status)
    }

    /// Sends a signal (`HUP`, `TERM`…) to the running daemon.
    pub fn signal(&self, name: &str) {
        if let Some(child) = &self.child {
            signal(child, name);
        }
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = self.exited() {
                return Err(format!(
                    "relaisd exited before it was ready ({status}); log:\n{}",
                    self.log_text()
                ));
            }
            if self.admin_raw(&["status"]).status.success() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!(
            "relaisd did not become ready; log:\n{}",
            self.log_text()
        ))
    }

    /// Stops the daemon with SIGTERM and waits for a clean exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(&child, "TERM");
            let status = wait_timeout(&mut child, Duration::from_secs(30));
            assert!(
                status.is_some_and(|s| s.success()),
                "relaisd did not stop cleanly: {status:?}"
            );
        }
    }

    /// Kills the daemon with SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn admin_raw(&self, args: &[&str]) -> std::process::Output {
        Command::new(relaisd())
            .arg("admin")
            .arg("--socket")
            .arg(&self.admin_socket)
            .args(args)
            .output()
            .expect("run relaisd admin")
    }

    /// Runs an admin command that must succeed; returns its standard output.
    pub fn admin(&self, args: &[&str]) -> String {
        let out = self.admin_raw(args);
        assert!(
            out.status.success(),
            "relaisd admin {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    }

    /// Creates a user and returns its enrollment code.
    pub fn add_user(&self, user: &str) -> String {
        self.admin(&["user", "add", user]).trim().to_owned()
    }

    /// Issues another enrollment code for an existing user.
    pub fn issue_code(&self, user: &str) -> String {
        self.admin(&["code", "issue", user]).trim().to_owned()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Fails if any of `secrets` appears in any file under the data directory or in the log.
    pub fn assert_never_stored(&self, secrets: &[String]) {
        let mut files = vec![self.log.clone()];
        collect_files(&self.data, &mut files);
        for file in files {
            let Ok(bytes) = std::fs::read(&file) else {
                continue;
            };
            for secret in secrets {
                assert!(
                    !contains(&bytes, secret.as_bytes()),
                    "{:?} was found in {}",
                    secret,
                    file.display()
                );
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_files(&path, out);
        } else if path.is_file() {
            out.push(path);
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Sends a signal (`TERM`, `HUP`…) to a child process.
pub fn signal(child: &Child, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status();
}

/// Waits for a child to exit; past `timeout` kills and reaps it and returns `None`.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// TLS 1.3 trusting only the CA in `ca`, as the client library connects: for tests that
/// speak to the relay below the client library (raw WebSocket frames, plain HTTPS).
pub fn tls_client_config(ca: &Path) -> std::sync::Arc<rustls::ClientConfig> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("ca") {
        roots.add(cert.expect("cert")).expect("add root");
    }
    std::sync::Arc::new(
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls13")
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

/// A port free on the host's loopback now (for a listener a test cannot ask for port 0:
/// a container's or a VM's forwarded port, a Prometheus scrape target).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Whether the system tools a test needs are installed. Without them the test is skipped
/// on a developer's machine and fails under CI (`CI=true`), where they must be.
pub fn system_component(tools: &[&str], purpose: &str) -> bool {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|tool| {
            Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .stdout(Stdio::null())
                .status()
                .map_or(true, |s| !s.success())
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    let message = format!(
        "{purpose} needs {} (scripts/test installs them)",
        missing.join(", ")
    );
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{message}");
    eprintln!("skipped: {message}");
    false
}

/// Fails if any of `needles` appears in any file under `roots` (files or directories).
pub fn assert_bytes_absent(roots: &[&Path], needles: &[(&str, Vec<u8>)]) {
    let mut files = Vec::new();
    for root in roots {
        if root.is_file() {
            files.push(root.to_path_buf());
        } else {
            collect_files(root, &mut files);
        }
    }
    assert!(!files.is_empty(), "nothing to scan under {roots:?}");
    for file in files {
        let Ok(bytes) = std::fs::read(&file) else {
            continue;
        };
        for (label, needle) in needles {
            assert!(
                !contains(&bytes, needle),
                "{label} was found in {}",
                file.display()
            );
        }
    }
}

/// A unique marker to send as message text, so a leak is unmistakable.
pub fn secret(label: &str) -> String {
    use rand::Rng;
    format!("{label}-{:016x}", rand::thread_rng().r#gen::<u64>())
}

pub use relais_protocol::time::now_ms;
