//! The appliance image (`image/out`, from `image/build`) booted for real: QEMU without
//! KVM boots its disk with a software TPM, the first boot provisions the keys and seals
//! them to the TPM before relaisd starts, clients on the host enroll and exchange a
//! message through the forwarded port, and the next boot only unseals. A disk started
//! with another TPM refuses to unseal: the journal says why and relaisd does not start.
//! The machine's clock synchronizes from an NTP server on the host, as it would from the
//! site's.
//!
//! The admin socket is inside the machine; a command on the kernel command line
//! (`systemd.run=`, systemd-run-generator) issues the enrollment codes there and writes
//! them, with the certificate the clients pin, to the machine's second serial port.

use std::path::{Path, PathBuf};
use std::time::Duration;

use relais_testkit::Daemon;
use relais_testkit::clients::{enroll, receive_n};
use relais_testkit::qemu::{Image, Vm};

/// A first boot under TCG provisions keys with the TPM and starts everything: minutes
/// on a loaded two-core machine.
const BOOT: Duration = Duration::from_secs(600);
const END: &str = "relais-test: end";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_provisions_at_first_boot_serves_clients_then_reuses_its_sealed_keys() {
    let Some(image) = Image::find("the appliance boot test", relais_testkit::qemu::TOOLS) else {
        return;
    };
    let base = tempfile::tempdir_in("/var/tmp").expect("tempdir");
    let disk = image.disk_copy(base.path());
    let machine = Machine {
        image: &image,
        disk: &disk,
        tpm: base.path().join("tpm"),
        base: base.path(),
        port: relais_testkit::free_port(),
    };
    let (first, recovery) = machine.first_boot_provisions_and_serves().await;

    // The recovery key was shown on the console only: it is nowhere on the disk, the
    // journal included.
    let found = std::process::Command::new("grep")
        .args(["-c", "-a", "-F", &recovery])
        .arg(&disk)
        .output()
        .expect("grep");
    assert_eq!(
        found.status.code(),
        Some(1),
        "the recovery key is on the disk"
    );

    machine
        .the_next_boot_unseals_and_the_clients_reconnect(&first)
        .await;
}

/// One machine across its boots: its disk, its TPM's state and the host port forwarded to
/// its client port; each boot logs into a directory of its own under `base`.
struct Machine<'a> {
    image: &'a Image,
    disk: &'a Path,
    tpm: PathBuf,
    base: &'a Path,
    port: u16,
}

impl Machine<'_> {
    /// The first boot, with the clock from an NTP server on the host: keys provisioned and
    /// sealed, relaisd and the firewall up, and two clients that enroll and talk. Returns
    /// what the machine answered, and the recovery key its console showed.
    async fn first_boot_provisions_and_serves(&self) -> (Answers, String) {
        let ntp = relais_testkit::ntp::Server::start();
        let started = std::time::Instant::now();
        let mut vm = Vm::boot(
            self.image,
            self.disk,
            &self.tpm,
            &self.base.join("boot-1"),
            &in_machine(&["user add alice", "user add bob"], Clock::FromHost),
            self.port,
        );
        vm.wait_channel("the enrollment codes", BOOT, |c| c.contains(END));
        eprintln!(
            "first boot: provisioned, relaisd ready after {:?}",
            started.elapsed()
        );
        let console = vm.console();
        assert!(
            console.contains(
                "first boot: generating the appliance's keys and sealing them to the TPM (PCRs 7)"
            ),
            "{console}"
        );
        let recovery = console
            .lines()
            .map(str::trim)
            .find(|l| l.len() == 71 && l.split('-').count() == 8)
            .unwrap_or_else(|| panic!("no recovery key on the console:\n{console}"))
            .to_owned();
        let first = Answers::read(&vm.channel());
        assert_eq!(
            first.states,
            ["active", "active", "active", "clock: synchronized"],
            "relaisd, the firewall and timesyncd; the clock from the host's NTP server"
        );
        assert!(
            ntp.answered() > 0,
            "the machine asked the host's NTP server"
        );
        drop(ntp);
        let daemon = client_side(self.base, vm.client_port, &first);
        let devices = self.base.join("devices");
        let mut alice = enroll(&daemon, &devices.join("alice"), "alice", &first.admin[0]).await;
        let mut bob = enroll(&daemon, &devices.join("bob"), "bob", &first.admin[1]).await;
        alice_writes_to_bob(&mut alice, &mut bob, "first-boot").await;
        alice.close().await;
        bob.close().await;
        vm.power_off();
        (first, recovery)
    }

    /// The same disk and TPM: no provisioning, the sealed keys unseal, the clients
    /// reconnect to the certificate they pinned at the `first` boot.
    async fn the_next_boot_unseals_and_the_clients_reconnect(&self, first: &Answers) {
        let mut vm = Vm::boot(
            self.image,
            self.disk,
            &self.tpm,
            &self.base.join("boot-2"),
            &in_machine(&[], Clock::AsItIs),
            self.port,
        );
        let started = std::time::Instant::now();
        vm.wait_channel("relaisd's readiness", BOOT, |c| c.contains(END));
        eprintln!("second boot: relaisd ready after {:?}", started.elapsed());
        let console = vm.console();
        assert!(!console.contains("first boot: generating"), "{console}");
        assert!(
            console.contains(
                "checking that the keys in /etc/relais/credentials unseal with this machine's TPM"
            ),
            "{console}"
        );
        let second = Answers::read(&vm.channel());
        assert_eq!(
            second.states,
            ["active", "active", "active"],
            "relaisd, the firewall and timesyncd"
        );
        assert_eq!(
            second.certificate, first.certificate,
            "the same certificate"
        );
        let daemon = client_side(self.base, vm.client_port, &second);
        let devices = self.base.join("devices");
        let mut alice = relais_client::Client::open(&devices.join("alice"))
            .await
            .expect("alice's device");
        alice.connect().await.expect("alice reconnects");
        let mut bob = relais_client::Client::open(&devices.join("bob"))
            .await
            .expect("bob's device");
        bob.connect().await.expect("bob reconnects");
        alice_writes_to_bob(&mut alice, &mut bob, "second-boot").await;
        alice.close().await;
        bob.close().await;
        drop(daemon);
        vm.power_off();
    }
}

#[test]
fn a_disk_started_with_another_tpm_does_not_unseal_and_relaisd_does_not_start() {
    let Some(image) = Image::find("the appliance boot test", relais_testkit::qemu::TOOLS) else {
        return;
    };
    let base = tempfile::tempdir_in("/var/tmp").expect("tempdir");
    let disk = image.disk_copy(base.path());
    let mut vm = Vm::boot(
        &image,
        &disk,
        &base.path().join("tpm"),
        &base.path().join("boot-1"),
        &in_machine(&[], Clock::AsItIs),
        relais_testkit::free_port(),
    );
    vm.wait_channel("relaisd's readiness", BOOT, |c| c.contains(END));
    assert_eq!(Answers::read(&vm.channel()).states[0], "active");
    vm.power_off();

    // The disk in another machine: a TPM that never saw these keys.
    let mut vm = Vm::boot(
        &image,
        &disk,
        &base.path().join("another-tpm"),
        &base.path().join("boot-2"),
        &in_machine(&[], Clock::AsItIs),
        relais_testkit::free_port(),
    );
    vm.wait_channel("the end of the boot", BOOT, |c| c.contains(END));
    let console = vm.console();
    for message in [
        "relais-code-secret: cannot unseal credential relais-code-secret",
        "it was sealed by another machine's TPM",
        "the appliance's keys do not unseal on this machine: relaisd will not start",
    ] {
        assert!(console.contains(message), "{message:?} not in:\n{console}");
    }
    let answers = Answers::read(&vm.channel());
    assert_eq!(
        answers.states[0], "inactive",
        "relaisd.service never started"
    );
    assert!(!console.contains("Started relaisd.service"), "{console}");
    assert!(!console.contains("Started Relais relay"), "{console}");
    vm.power_off();
}

/// Alice sends Bob a unique text through the machine, and Bob receives exactly that.
async fn alice_writes_to_bob(
    alice: &mut relais_client::Client,
    bob: &mut relais_client::Client,
    label: &str,
) {
    let text = relais_testkit::secret(label);
    alice.send("bob", &text).await.expect("alice sends");
    let got = receive_n(bob, 1).await;
    let texts: Vec<&str> = got.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, [text.as_str()]);
}

/// Where the machine's clock comes from in a test boot.
#[derive(PartialEq)]
enum Clock {
    /// The image's settings: no NTP server, since QEMU's DHCP announces none.
    AsItIs,
    /// The host's NTP server ([`relais_testkit::ntp`]), named as an operator would in a drop-in,
    /// and waited for (up to 90 s).
    FromHost,
}

/// Kernel command line for a test boot: the names the self-signed certificate must
/// carry for a client on the forwarded loopback port, and a command run inside the
/// machine once relaisd.service's start job is over. systemd-run-generator would boot
/// into the command instead of multi-user.target: `systemd.unit` keeps the appliance's
/// own target and `systemd.wants` adds the command beside it. It writes the state of
/// relaisd.service, nftables.service and systemd-timesyncd.service (`systemctl
/// is-active`), whether the clock synchronized (with [`Clock::FromHost`]), then the
/// output of `relaisd admin ARGS` for each of `admin`, the certificate, and `END`, each on
/// a line of its own, to the second serial port ([`Answers`]). No `$` in it: systemd
/// would expand it in the generated unit; `set -f` keeps `[Time]` from being a pattern.
fn in_machine(admin: &[&str], clock: Clock) -> String {
    let mut script = String::from(
        "exec >/dev/ttyS1 2>&1; set -f; systemctl start relaisd.service >/dev/null 2>&1; ",
    );
    // What timesyncd touches at every successful synchronization.
    const SYNCHRONIZED: &str = "/run/systemd/timesync/synchronized";
    if clock == Clock::FromHost {
        let dir = "/run/systemd/timesyncd.conf.d";
        script.push_str(&format!(
            "mkdir -p {dir}; echo [Time] >{dir}/test.conf; echo NTP=10.0.2.2 >>{dir}/test.conf; \
             systemctl restart systemd-timesyncd.service; \
             for i in `seq 90`; do test -e {SYNCHRONIZED} && break; sleep 1; done; "
        ));
    }
    script.push_str(
        "systemctl is-active relaisd.service nftables.service systemd-timesyncd.service; ",
    );
    if clock == Clock::FromHost {
        script.push_str(&format!(
            "test -e {SYNCHRONIZED} && echo clock: synchronized || echo clock: not synchronized; "
        ));
    }
    script.push_str("echo relais-test: answers; ");
    for args in admin {
        script.push_str(&format!("relaisd admin {args} 2>/dev/null; "));
    }
    script.push_str("cat /etc/relais/credentials/relais-tls-cert.pem; echo relais-test: end");
    format!(
        "relais.name=127.0.0.1 relais.name=localhost systemd.unit=multi-user.target \
         systemd.wants=kernel-command-line.service systemd.run=\"/bin/sh -c '{script}'\" \
         systemd.run_success_action=none systemd.run_failure_action=none"
    )
}

/// What the command inside the machine wrote on the channel.
struct Answers {
    /// `systemctl is-active` of relaisd.service, nftables.service and
    /// systemd-timesyncd.service, then whether the clock synchronized.
    states: Vec<String>,
    /// One line per admin command.
    admin: Vec<String>,
    /// The certificate clients pin.
    certificate: String,
}

impl Answers {
    fn read(channel: &str) -> Answers {
        let lines: Vec<&str> = channel
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let mut parts = lines.split(|l| *l == "relais-test: answers");
        let states = parts.next().unwrap_or_default();
        let rest = parts.next().unwrap_or_default();
        let admin = rest
            .iter()
            .take_while(|l| !l.starts_with("-----BEGIN") && **l != END);
        let begin = rest.iter().position(|l| l.starts_with("-----BEGIN"));
        let end = rest.iter().position(|l| l.starts_with("-----END"));
        let certificate = match (begin, end) {
            (Some(begin), Some(end)) => format!("{}\n", rest[begin..=end].join("\n")),
            _ => String::new(),
        };
        Answers {
            states: states.iter().map(|l| l.to_string()).collect(),
            admin: admin.map(|l| l.to_string()).collect(),
            certificate,
        }
    }
}

/// The clients' view of the machine: its forwarded port and the certificate it wrote.
fn client_side(base: &Path, port: u16, answers: &Answers) -> Daemon {
    let pem = &answers.certificate;
    assert!(pem.contains("BEGIN CERTIFICATE"), "no certificate");
    let ca = base.join("appliance.pem");
    std::fs::write(&ca, pem).expect("certificate");
    let mut daemon = Daemon::configure(&base.join("client"), "", ca, "");
    daemon.addr = format!("127.0.0.1:{port}");
    daemon.server = format!("https://{}", daemon.addr);
    daemon
}
