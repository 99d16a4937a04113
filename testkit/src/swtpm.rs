//! A software TPM (`swtpm`) for the sealed-key tests: fresh state per test, on free
//! localhost ports, behind a resource manager (`tpm2-abrmd`, as `/dev/tpmrm0` is on an
//! appliance), shut down cleanly so that it never counts a dictionary-attack failure.

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The tools these tests run.
pub const TOOLS: &[&str] = &[
    "swtpm",
    "swtpm_ioctl",
    "tpm2_pcrextend",
    "tpm2_pcrread",
    "tpm2_shutdown",
    "tpm2-abrmd",
    "dbus-daemon",
    "systemd-creds",
];

/// A running swtpm, its resource manager and their state directory.
pub struct Swtpm {
    child: Child,
    port: u16,
    /// The session bus the resource manager is reached through, and the manager.
    bus: Child,
    broker: Child,
    bus_address: String,
    broker_name: String,
    _state: tempfile::TempDir,
}

impl Swtpm {
    /// Starts a TPM with a fresh state; `None` (the test is skipped) when the tools are
    /// missing outside CI.
    pub fn start() -> Option<Swtpm> {
        if !super::system_component(TOOLS, "this sealed-key test") {
            return None;
        }
        let mut last_error = String::new();
        // Two adjacent free ports are found by probing; another process may take one
        // between the probe and swtpm's bind, so a few attempts are allowed.
        for _ in 0..5 {
            let state = tempfile::tempdir().expect("tpm state dir");
            let port = free_port_pair();
            let mut child = Command::new("swtpm")
                .arg("socket")
                .arg("--tpm2")
                .arg("--tpmstate")
                .arg(format!("dir={}", state.path().display()))
                .arg("--server")
                .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
                .arg("--ctrl")
                .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1))
                .args(["--flags", "not-need-init,startup-clear"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start swtpm");
            if wait_for(
                || TcpStream::connect(("127.0.0.1", port + 1)).is_ok(),
                Some(&mut child),
            ) {
                return Some(Swtpm::with_broker(child, port, state));
            }
            let _ = child.kill();
            let output = child.wait_with_output().expect("swtpm output");
            last_error = String::from_utf8_lossy(&output.stderr).into_owned();
        }
        panic!("swtpm did not start: {last_error}");
    }

    /// swtpm keeps what each client leaves loaded (systemd-creds leaves a session per
    /// decryption, and the TPM holds three); tpm2-abrmd cleans up after each client, as
    /// the kernel's resource manager does for `/dev/tpmrm0` on an appliance.
    fn with_broker(mut child: Child, port: u16, state: tempfile::TempDir) -> Swtpm {
        let socket = state.path().join("bus");
        let bus_address = format!("unix:path={}", socket.display());
        let mut bus = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--nopidfile", "--syslog-only"])
            .arg(format!("--address={bus_address}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start dbus-daemon");
        if !wait_for(|| socket.exists(), Some(&mut bus)) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("dbus-daemon did not start");
        }
        let broker_name = format!("com.intel.tss2.Tabrmd.relais{port}");
        let broker = Command::new("tpm2-abrmd")
            .args(["--session", "--allow-root", "--flush-all"])
            .arg(format!("--dbus-name={broker_name}"))
            .arg(format!("--tcti=swtpm:host=127.0.0.1,port={port}"))
            .env("DBUS_SESSION_BUS_ADDRESS", &bus_address)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tpm2-abrmd");
        let tpm = Swtpm {
            child,
            port,
            bus,
            broker,
            bus_address,
            broker_name,
            _state: state,
        };
        let answers = || {
            tpm.command("tpm2_pcrread")
                .arg("sha256:7")
                .output()
                .is_ok_and(|o| o.status.success())
        };
        assert!(wait_for(answers, None), "tpm2-abrmd did not start");
        tpm
    }

    /// The TPM as systemd-creds (`SYSTEMD_TPM2_DEVICE`) and tpm2-tools (`TPM2TOOLS_TCTI`)
    /// name it: through the resource manager.
    pub fn tcti(&self) -> String {
        format!("tabrmd:bus_type=session,bus_name={}", self.broker_name)
    }

    /// The environment that points systemd-creds and tpm2-tools at this TPM.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("SYSTEMD_TPM2_DEVICE".into(), self.tcti()),
            ("TPM2TOOLS_TCTI".into(), self.tcti()),
            ("DBUS_SESSION_BUS_ADDRESS".into(), self.bus_address.clone()),
        ]
    }

    /// A command whose TPM is this one.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new(program);
        command.envs(self.env());
        command
    }

    /// Extends PCR `pcr` with the SHA-256 of `event`, as firmware measures what it boots.
    pub fn extend_pcr(&self, pcr: u32, event: &str) {
        use sha2::Digest as _;
        let digest = hex::encode(sha2::Sha256::digest(event.as_bytes()));
        let out = self
            .command("tpm2_pcrextend")
            .arg(format!("{pcr}:sha256={digest}"))
            .output()
            .expect("tpm2_pcrextend");
        assert_ok(&out, "tpm2_pcrextend");
    }

    /// Decrypts a credential as the test's own witness of what is sealed in it.
    pub fn decrypt(&self, path: &Path, name: &str) -> Vec<u8> {
        let out = self
            .command("systemd-creds")
            .args(["decrypt", &format!("--name={name}")])
            .arg(path)
            .arg("-")
            .output()
            .expect("systemd-creds");
        assert_ok(&out, "systemd-creds decrypt");
        out.stdout
    }
}

impl Drop for Swtpm {
    /// The resource manager first, then an orderly TPM2_Shutdown straight to swtpm: a TPM
    /// stopped without it counts the stop as a possible attack, and three of those lock
    /// it out.
    fn drop(&mut self) {
        stop(&mut self.broker, "TERM");
        let _ = Command::new("tpm2_shutdown")
            .env(
                "TPM2TOOLS_TCTI",
                format!("swtpm:host=127.0.0.1,port={}", self.port),
            )
            .output();
        let _ = Command::new("swtpm_ioctl")
            .args(["--tcp", &format!("127.0.0.1:{}", self.port + 1), "-s"])
            .output();
        let mut stopped = false;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !stopped && Instant::now() < deadline {
            stopped = matches!(self.child.try_wait(), Ok(Some(_)));
            std::thread::sleep(Duration::from_millis(20));
        }
        if !stopped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        stop(&mut self.bus, "TERM");
    }
}

/// A software TPM for a virtual machine: QEMU reaches it through a Unix control socket
/// (`-chardev socket` + `-tpmdev emulator`) and initialises it as firmware would; its
/// state lives in `state`, so that the same directory is the same TPM at the next boot.
/// swtpm exits by itself when the machine powers off.
pub fn start_for_vm(state: &Path) -> (Child, std::path::PathBuf) {
    std::fs::create_dir_all(state).expect("tpm state dir");
    let socket = state.join("swtpm.sock");
    let _ = std::fs::remove_file(&socket);
    let mut child = Command::new("swtpm")
        .args(["socket", "--tpm2", "--terminate"])
        .arg("--tpmstate")
        .arg(format!("dir={}", state.display()))
        .arg("--ctrl")
        .arg(format!("type=unixio,path={}", socket.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start swtpm");
    assert!(
        wait_for(|| socket.exists(), Some(&mut child)),
        "swtpm did not open {}",
        socket.display()
    );
    (child, socket)
}

/// Signals a child and waits for it, killing it if it lingers.
fn stop(child: &mut Child, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Polls `ready` for up to ten seconds, giving up early if `child` exits.
fn wait_for(mut ready: impl FnMut() -> bool, mut child: Option<&mut Child>) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if ready() {
            return true;
        }
        if let Some(Ok(Some(_))) = child.as_mut().map(|c| c.try_wait()) {
            return ready();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A port P with P+1 also free (swtpm's command and control ports).
fn free_port_pair() -> u16 {
    loop {
        let first = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = first.local_addr().expect("addr").port();
        if port < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
}
