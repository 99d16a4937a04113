//! The appliance image (`image/out`, built by `image/build`) booted in QEMU without KVM,
//! by direct kernel boot, with a software TPM and the client port forwarded to loopback.
//!
//! Two serial ports: the first is the console (kernel and journal, forwarded there), the
//! second a channel where a command given on the kernel command line (`systemd.run=`)
//! writes what the test needs from inside, such as enrollment codes.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The tools the boot tests run.
pub const TOOLS: &[&str] = &["qemu-system-x86_64", "swtpm"];

/// The tools `image/build` runs.
pub const BUILD_TOOLS: &[&str] = &[
    "mmdebstrap",
    "genext2fs",
    "sfdisk",
    "apt-ftparchive",
    "python3",
    "unshare",
];

/// The outputs of `image/build`.
pub struct Image {
    pub dir: PathBuf,
}

impl Image {
    /// `image/out` (or `$RELAIS_IMAGE_OUT`) when it holds a built image; `None` (skipped)
    /// without one or without QEMU outside CI, a failure under `CI=true`, where
    /// scripts/test builds the image before the tests.
    pub fn find(purpose: &str, tools: &[&str]) -> Option<Image> {
        if !super::require_root(purpose) || !super::system_component(tools, purpose) {
            return None;
        }
        let dir = std::env::var_os("RELAIS_IMAGE_OUT")
            .map_or_else(|| super::repository().join("image/out"), PathBuf::from);
        if dir.join("SHA256SUMS").exists() {
            return Some(Image { dir });
        }
        let message = format!(
            "{purpose} needs an image in {}: run image/build",
            dir.display()
        );
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{message}");
        eprintln!("skipped: {message}");
        None
    }

    /// A private, sparse copy of the disk: the machine writes to it, never to the image.
    pub fn disk_copy(&self, dir: &Path) -> PathBuf {
        let disk = dir.join("disk.raw");
        let status = Command::new("cp")
            .arg("--sparse=always")
            .arg(self.dir.join("disk.raw"))
            .arg(&disk)
            .status()
            .expect("cp");
        assert!(status.success(), "copying the disk failed");
        disk
    }

    /// The kernel command line the image boots with (`image/out/cmdline`).
    pub fn cmdline(&self) -> String {
        std::fs::read_to_string(self.dir.join("cmdline"))
            .expect("image/out/cmdline")
            .trim()
            .to_owned()
    }
}

/// A running machine; dropping it stops QEMU (and with it swtpm) if it still runs.
pub struct Vm {
    qemu: Child,
    tpm: Child,
    dir: PathBuf,
    /// The host's loopback port forwarded to the machine's client port (8443).
    pub client_port: u16,
}

impl Vm {
    /// Boots `disk` with the TPM whose state is in `tpm_state`, logging into `dir`, with
    /// `cmdline` added to the image's kernel command line and the machine's client port
    /// forwarded from the host's `client_port` (the same at every boot of a disk: its
    /// clients remember the server's address).
    pub fn boot(
        image: &Image,
        disk: &Path,
        tpm_state: &Path,
        dir: &Path,
        cmdline: &str,
        client_port: u16,
    ) -> Vm {
        std::fs::create_dir_all(dir).expect("machine dir");
        let (tpm, tpm_socket) = super::swtpm::start_for_vm(tpm_state);
        let append = format!(
            "{} console=ttyS0 systemd.journald.forward_to_console=1 systemd.log_color=0 {cmdline}",
            image.cmdline()
        );
        let qemu = Command::new("qemu-system-x86_64")
            .args([
                "-machine", "q35", "-accel", "tcg", "-cpu", "max", "-smp", "2",
            ])
            .args([
                "-m",
                "1024",
                "-nodefaults",
                "-display",
                "none",
                "-no-reboot",
            ])
            .arg("-kernel")
            .arg(image.dir.join("vmlinuz"))
            .arg("-initrd")
            .arg(image.dir.join("initrd.img"))
            .arg("-append")
            .arg(append)
            .arg("-drive")
            .arg(format!("file={},format=raw,if=virtio", disk.display()))
            .arg("-chardev")
            .arg(format!("socket,id=tpm,path={}", tpm_socket.display()))
            .args(["-tpmdev", "emulator,id=tpm0,chardev=tpm"])
            .args(["-device", "tpm-tis,tpmdev=tpm0"])
            .args(["-device", "virtio-rng-pci"])
            .arg("-netdev")
            .arg(format!(
                "user,id=net0,hostfwd=tcp:127.0.0.1:{client_port}-:8443"
            ))
            .args(["-device", "virtio-net-pci,netdev=net0"])
            .arg("-serial")
            .arg(format!("file:{}", dir.join("console.log").display()))
            .arg("-serial")
            .arg(format!("file:{}", dir.join("channel.log").display()))
            .arg("-monitor")
            .arg(format!(
                "unix:{},server=on,wait=off",
                dir.join("monitor.sock").display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("qemu.log")).expect("qemu log"))
            .spawn()
            .expect("start qemu-system-x86_64");
        Vm {
            qemu,
            tpm,
            dir: dir.to_owned(),
            client_port,
        }
    }

    /// Everything the machine wrote on its console so far.
    pub fn console(&self) -> String {
        read_lossy(&self.dir.join("console.log"))
    }

    /// Everything written to the second serial port so far.
    pub fn channel(&self) -> String {
        read_lossy(&self.dir.join("channel.log"))
    }

    /// Waits until `done` holds for the console, failing with the console's text when
    /// `timeout` passes or the machine stops first.
    pub fn wait_console(&mut self, what: &str, timeout: Duration, done: impl Fn(&str) -> bool) {
        self.wait(what, timeout, |vm| done(&vm.console()));
    }

    /// As [`Vm::wait_console`], for the channel.
    pub fn wait_channel(&mut self, what: &str, timeout: Duration, done: impl Fn(&str) -> bool) {
        self.wait(what, timeout, |vm| done(&vm.channel()));
    }

    fn wait(&mut self, what: &str, timeout: Duration, done: impl Fn(&Vm) -> bool) {
        let deadline = Instant::now() + timeout;
        while !done(self) {
            let stopped = matches!(self.qemu.try_wait(), Ok(Some(_)));
            assert!(
                !stopped && Instant::now() < deadline,
                "{what}: not seen {}; qemu: {}\nconsole:\n{}\nchannel:\n{}",
                if stopped {
                    "before the machine stopped"
                } else {
                    "in time"
                },
                read_lossy(&self.dir.join("qemu.log")),
                self.console(),
                self.channel()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Presses the power button (ACPI, handled by systemd-logind) and waits for an
    /// orderly power-off, so that the disk and the TPM are left as a shutdown leaves them.
    pub fn power_off(mut self) {
        let monitor = self.dir.join("monitor.sock");
        let mut stream = std::os::unix::net::UnixStream::connect(&monitor).expect("monitor");
        stream
            .write_all(b"system_powerdown\n")
            .expect("system_powerdown");
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.qemu.try_wait() {
                assert!(status.success(), "qemu exited with {status}");
                return;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!(
            "the machine did not power off; console:\n{}",
            self.console()
        );
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if !matches!(self.qemu.try_wait(), Ok(Some(_))) {
            let _ = self.qemu.kill();
            let _ = self.qemu.wait();
        }
        // swtpm ends with QEMU's connection (--terminate); a last wait reaps it.
        super::wait_timeout(&mut self.tpm, Duration::from_secs(10));
    }
}

fn read_lossy(path: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned()
}
