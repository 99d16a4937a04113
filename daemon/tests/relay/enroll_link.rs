//! Enrollment links with the real relaisd over real TLS (`docs/reference/enroll-link.md`):
//! an operator's `relaisd admin user add --link` (and `code issue --link`) prints a link
//! and its QR code (on the terminal and in a private PNG), from which `relais enroll
//! --link` enrolls a device that converses; the pin is the relay's CA when it serves its
//! chain, its own certificate when it serves that alone. A link cut short, altered or for
//! another relay is refused with what to do, and leaves the home empty: a pin mismatch
//! before anything but the TLS handshake reached the relay (its metrics and audit log saw
//! no enrollment), an unreachable relay with a message that says so; a link file others can
//! read is refused with the `chmod` to run. The audit log says which codes went out as
//! links. The pin is the chain the relay serves, taken when it loads it: a certificate
//! reloaded on SIGHUP changes it (`sealed_keys.rs` checks it under the sandbox of sealed
//! keys). A device links another of its user's with `relais devices link`, which then gets
//! the earlier history from it; a relay may turn that off, bounds it by waiting codes and
//! devices (counted one request at a time), and refuses a device whose standing ended while
//! its connection was open; the link it issues pins the CA of its home that verified the
//! relay's chain. The link's parser and its QR codes are unit-tested, hostile input
//! included, in `link/` (`relais-link`).

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use qrcode::{Color, EcLevel, QrCode};
use relais_client::{Client, ClientError, Connection, EnrollLink, ErrorCode, ReceivedMessage};
use relais_testkit::clients::{new_user, relais_cli, server_code};
use relais_testkit::{Daemon, free_port, relaisd};
use sha2::{Digest as _, Sha256};

/// Modules of quiet zone both QR renderings draw around the code.
const QUIET_ZONE: usize = 4;
/// Pixels per module in the PNG.
const MODULE_PIXELS: usize = 8;
/// How long the history test waits for the new device to hold the earlier history.
const HISTORY_WAIT: Duration = Duration::from_secs(30);

/// A relay whose public address is set, on a port chosen for it (the address must be in
/// its configuration before it starts); `extra` is appended to its configuration.
fn linking_relay(dir: &Path, extra: &str) -> Daemon {
    let port = free_port();
    Daemon::start(
        dir,
        &format!(
            "[listen]\nclient = \"127.0.0.1:{port}\"\n\n[server]\n\
             public_address = \"localhost:{port}\"\n\n{extra}"
        ),
    )
}

/// `relais --home HOME ARGS…`, with `stdin` as its standard input.
fn relais(home: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(relais_cli())
        .arg("--home")
        .arg(home)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start relais");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin.as_bytes()).expect("write stdin");
    drop(input);
    child.wait_with_output().expect("relais")
}

/// A command's standard output, which must have succeeded.
fn succeeded(output: &Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).expect("utf-8")
}

/// A command's standard error, which must have failed with `code`.
fn failed(output: &Output, code: i32, what: &str) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(code), "{what}: {stderr}");
    assert!(
        output.stdout.is_empty(),
        "{what} printed {:?}",
        output.stdout
    );
    stderr
}

/// Whether nothing is in `home` (or it does not exist).
fn empty(home: &Path) -> bool {
    std::fs::read_dir(home).map_or(true, |mut entries| entries.next().is_none())
}

/// The QR code of `link` as both renderings must draw it: modules with the quiet zone,
/// `true` for dark, row by row.
fn expected_modules(link: &str) -> Vec<Vec<bool>> {
    let code = QrCode::with_error_correction_level(link, EcLevel::M).expect("a QR code");
    let (width, colors) = (code.width(), code.to_colors());
    let side = width + 2 * QUIET_ZONE;
    (0..side)
        .map(|y| {
            (0..side)
                .map(|x| {
                    let (x, y) = (x.wrapping_sub(QUIET_ZONE), y.wrapping_sub(QUIET_ZONE));
                    x < width && y < width && colors[y * width + x] == Color::Dark
                })
                .collect()
        })
        .collect()
}

/// The modules a terminal rendering shows: two rows a line, in half blocks.
fn modules_of_text(text: &str, side: usize) -> Vec<Vec<bool>> {
    let mut rows = vec![Vec::new(); side + 1];
    for (line, y) in text.lines().zip((0..).step_by(2)) {
        for c in line.chars() {
            let (top, bottom) = match c {
                '█' => (true, true),
                '▀' => (true, false),
                '▄' => (false, true),
                ' ' => (false, false),
                other => panic!("{other:?} in the QR code's text"),
            };
            rows[y].push(top);
            rows[y + 1].push(bottom);
        }
    }
    rows.truncate(side);
    rows
}

/// The modules of a PNG written by `--qr`, checked to be a greyscale image of whole
/// modules: its signature, size and file mode first.
fn modules_of_png(path: &Path, side: usize) -> Vec<Vec<bool>> {
    let bytes = std::fs::read(path).expect("the PNG");
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "a PNG signature");
    assert_eq!(&bytes[12..16], b"IHDR");
    let pixels = side * MODULE_PIXELS;
    let width = u32::from_be_bytes(bytes[16..20].try_into().expect("width"));
    let height = u32::from_be_bytes(bytes[20..24].try_into().expect("height"));
    assert_eq!((width as usize, height as usize), (pixels, pixels));
    let mode = std::fs::metadata(path).expect("mode").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the PNG holds the code: its owner's alone");
    let file = std::io::BufReader::new(std::fs::File::open(path).expect("open"));
    let mut reader = png::Decoder::new(file).read_info().expect("a readable PNG");
    let mut image = vec![0; reader.output_buffer_size().expect("size")];
    let frame = reader.next_frame(&mut image).expect("a frame");
    assert_eq!(frame.color_type, png::ColorType::Grayscale);
    let centre = MODULE_PIXELS / 2;
    (0..side)
        .map(|y| {
            (0..side)
                .map(|x| {
                    image[(y * MODULE_PIXELS + centre) * pixels + x * MODULE_PIXELS + centre] < 128
                })
                .collect()
        })
        .collect()
}

/// Checks a link command's output: the link alone on its first line, then its QR code as
/// text, which reads back as the link's code with its quiet zone; returns the link.
fn link_and_qr(stdout: &str) -> String {
    let (link, drawn) = stdout.split_once('\n').expect("the link, then its QR code");
    assert!(link.starts_with("relais://enroll?v=1&server="), "{link}");
    let expected = expected_modules(link);
    let side = expected.len();
    let drawn = drawn.trim_end_matches('\n');
    assert_eq!(drawn.lines().count(), side.div_ceil(2), "{drawn}");
    assert!(drawn.lines().all(|l| l.chars().count() == side), "{drawn}");
    assert_eq!(
        modules_of_text(drawn, side),
        expected,
        "the terminal's QR code"
    );
    link.to_owned()
}

/// The sum of every sample of `name` on the relay's metrics page (0 when none).
fn metric(daemon: &Daemon, name: &str) -> f64 {
    use std::io::Read as _;
    let mut stream = std::net::TcpStream::connect(&daemon.metrics_addr).expect("metrics");
    let request = format!(
        "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        daemon.metrics_addr
    );
    stream.write_all(request.as_bytes()).expect("request");
    let mut page = String::new();
    stream.read_to_string(&mut page).expect("response");
    page.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The audit log, one JSON object per entry.
fn audit(daemon: &Daemon) -> Vec<serde_json::Value> {
    daemon
        .admin(&["audit", "export"])
        .lines()
        .map(|l| serde_json::from_str(l).expect("an audit entry"))
        .collect()
}

/// `--link` prints the link and its QR code, `--qr` a PNG of it (0600), and `relais enroll
/// --link` enrolls from a file and from standard input: the two devices converse. The
/// relay serves its certificate alone here, so the link pins it, says so, and the home
/// keeps it as its CA. Without `--link` the code is alone on standard output, as before;
/// the code is in no log and no audit entry.
#[test]
fn an_operators_link_enrolls_a_device_that_converses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = linking_relay(dir.path(), "");
    let alice_link = a_link_with_its_png(&daemon, dir.path());
    let leaf = der_of(&std::fs::read(daemon.data.join("server.pem")).expect("server.pem"));

    // From a file, which must be private as a passphrase file must, then from standard
    // input.
    let link_file = dir.path().join("alice.link");
    std::fs::write(&link_file, format!("{alice_link}\n")).expect("write the link");
    let alice = dir.path().join("alice");
    let from_file = ["enroll", "--link", link_file.to_str().expect("path")];
    for mode in [0o644, 0o640] {
        std::fs::set_permissions(&link_file, std::fs::Permissions::from_mode(mode)).expect("chmod");
        let stderr = failed(
            &relais(&alice, &from_file, ""),
            64,
            "a link file others read",
        );
        let chmod = format!("run `chmod 600 {}`", link_file.display());
        assert!(stderr.contains(&chmod), "{mode:o}: {stderr}");
        assert!(
            !stderr.contains(&alice_link[alice_link.len() - 20..]),
            "{stderr}"
        );
        assert!(empty(&alice), "nothing written");
    }
    std::fs::set_permissions(&link_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let enrolled = succeeded(&relais(&alice, &from_file, ""), "enroll --link FILE");
    assert!(
        enrolled.starts_with("enrolled alice@localhost as device "),
        "{enrolled}"
    );
    let out = daemon.admin_raw(&["code", "issue", "bob", "--link"]);
    assert_eq!(out.status.code(), Some(1), "bob does not exist yet");
    let bob_out = daemon.admin_raw(&["user", "add", "bob", "--link"]);
    let bob_link = link_and_qr(&succeeded(&bob_out, "user add bob --link"));
    let bob = dir.path().join("bob");
    let enrolled = succeeded(
        &relais(&bob, &["enroll", "--link", "-"], &bob_link),
        "--link -",
    );
    assert!(
        enrolled.starts_with("enrolled bob@localhost as device "),
        "{enrolled}"
    );

    let text = relais_testkit::secret("bonjour par le lien");
    succeeded(&relais(&alice, &["send", "bob", &text], ""), "send");
    let got = succeeded(&relais(&bob, &["recv", "--wait", "10"], ""), "recv");
    assert!(
        got.contains("alice@localhost\t") && got.contains(&text),
        "{got}"
    );

    // The pinned certificate is the home's CA, private, and what later connections trust.
    let ca = alice.join("ca.pem");
    assert_eq!(der_of(&std::fs::read(&ca).expect("ca.pem")), leaf);
    let mode = std::fs::metadata(&ca).expect("mode").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    the_codes_stay_secret(&daemon, &[&alice_link, &bob_link]);
}

/// `user add alice --link --qr FILE`: the link and its QR code on standard output, what it
/// is for on standard error, the same code in a private PNG, the relay's public address
/// and, since the relay serves its certificate alone, that certificate's pin.
fn a_link_with_its_png(daemon: &Daemon, dir: &Path) -> String {
    let png = dir.join("alice.png");
    let png_arg = png.to_str().expect("path");
    let out = daemon.admin_raw(&["user", "add", "alice", "--link", "--qr", png_arg]);
    let link = link_and_qr(&succeeded(&out, "user add --link"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("enrollment link for alice@localhost"),
        "{stderr}"
    );
    assert!(stderr.contains("pins that certificate itself"), "{stderr}");
    let expected = expected_modules(&link);
    assert_eq!(
        modules_of_png(&png, expected.len()),
        expected,
        "the PNG's QR code"
    );
    let parsed = EnrollLink::parse(&link).expect("the link parses");
    let port = daemon.addr.rsplit(':').next().expect("port");
    assert_eq!(parsed.server(), format!("localhost:{port}"));
    assert_eq!(parsed.user(), "alice@localhost");
    let leaf = der_of(&std::fs::read(daemon.data.join("server.pem")).expect("server.pem"));
    assert_eq!(
        parsed.pin(),
        &Sha256::digest(&leaf)[..],
        "a lone certificate is pinned"
    );
    link
}

/// Without `--link` a code is alone on standard output, as scripts read it; no code of a
/// link nor that one is in the relay's files or log, and every issue is audited.
fn the_codes_stay_secret(daemon: &Daemon, links: &[&str]) {
    let plain = daemon.admin(&["user", "add", "carol"]);
    assert_eq!(plain.len(), 20, "the code alone and its newline: {plain:?}");
    let codes: Vec<String> = links
        .iter()
        .map(|l| EnrollLink::parse(l).expect("link").code().to_owned())
        .chain([plain.trim().to_owned(), plain.trim().replace('-', "")])
        .collect();
    daemon.assert_never_stored(&codes);
    let entries = audit(daemon);
    let exported = serde_json::to_string(&entries).expect("json");
    assert!(
        !codes.iter().any(|c| exported.contains(c.as_str())),
        "a code in the audit log"
    );
    let issued: Vec<&serde_json::Value> = entries
        .iter()
        .filter(|e| e["action"] == "user_add" && e["outcome"] == "ok")
        .collect();
    let details: Vec<(&str, &str)> = issued
        .iter()
        .map(|e| {
            (
                e["subject"].as_str().unwrap_or("?"),
                e["detail"].as_str().unwrap_or("?"),
            )
        })
        .collect();
    assert_eq!(
        details,
        [
            ("alice", "as an enrollment link"),
            ("bob", "as an enrollment link"),
            ("carol", "")
        ],
        "every code's issue is audited, with whether it went out as a link: {entries:#?}"
    );
    // `code issue bob --link` for a user who did not exist yet failed, and says how it was
    // asked for.
    let failed_link = entries
        .iter()
        .find(|e| e["action"] == "code_issue" && e["outcome"] == "failed")
        .expect("the failed code issue");
    let detail = failed_link["detail"].as_str().unwrap_or_default();
    assert!(
        detail.starts_with("as an enrollment link: no user bob@localhost"),
        "{detail}"
    );
}

/// The DER of a PEM file's first certificate.
fn der_of(pem: &[u8]) -> Vec<u8> {
    use rustls::pki_types::{CertificateDer, pem::PemObject as _};
    CertificateDer::pem_slice_iter(pem)
        .next()
        .expect("a certificate")
        .expect("PEM")
        .to_vec()
}

/// A relay that serves its chain up to its CA: the link pins the CA, says nothing of a
/// lone certificate, and `code issue --link` gives a second device of an existing user
/// a link the library enrolls from; the home's CA is then the relay's CA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_serving_its_chain_is_pinned_by_its_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut daemon = Daemon::unstarted(
        dir.path(),
        &format!(
            "[listen]\nclient = \"127.0.0.1:{port}\"\n\n[server]\n\
             public_address = \"127.0.0.1:{port}\"\n"
        ),
    );
    let chain = [
        std::fs::read(daemon.data.join("server.pem")).expect("leaf"),
        std::fs::read(&daemon.ca).expect("ca"),
    ]
    .concat();
    std::fs::write(daemon.data.join("chain.pem"), chain).expect("chain");
    let config = std::fs::read_to_string(&daemon.config).expect("config");
    std::fs::write(
        &daemon.config,
        config.replace("/server.pem\"", "/chain.pem\""),
    )
    .expect("config");
    daemon.launch();
    let mut phone = new_user(&daemon, dir.path(), "alice").await;

    let out = daemon.admin_raw(&["code", "issue", "alice", "--link"]);
    let link = link_and_qr(&succeeded(&out, "code issue --link"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("pins that certificate itself"), "{stderr}");
    let ca = der_of(&std::fs::read(&daemon.ca).expect("ca"));
    let link = EnrollLink::parse(&link).expect("link");
    assert_eq!(link.pin(), &Sha256::digest(&ca)[..], "the CA is pinned");

    let home = dir.path().join("laptop");
    let laptop = Client::enroll_from_link(&home, &link, None)
        .await
        .expect("enrolls");
    assert_eq!(
        der_of(&std::fs::read(home.join("ca.pem")).expect("ca.pem")),
        ca
    );
    laptop.close().await;
    let mut laptop = Client::open(&home).await.expect("open");
    laptop
        .connect()
        .await
        .expect("connects again, trusting the kept CA");
    let devices = phone.devices().await.expect("devices");
    assert_eq!(devices.len(), 2, "{devices:?}");
    laptop.close().await;
    phone.close().await;
}

/// A relay that sends, after its chain, a certificate no verification uses (another CA):
/// the link a device issues pins the CA of its home's CA file that verified the chain, not
/// the last certificate the relay sent, and the new device enrolls from it. A `--qr` file
/// that cannot be created fails before any code is issued, with an error that names the
/// file and holds no link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_pins_the_ca_that_verified_the_chain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let other = tempfile::tempdir().expect("tempdir");
    relaisd::tls::ensure_dev_certificates(other.path(), &["localhost".into()]).expect("another CA");
    let mut daemon = Daemon::unstarted(dir.path(), "");
    let chain = [
        std::fs::read(daemon.data.join("server.pem")).expect("leaf"),
        std::fs::read(&daemon.ca).expect("ca"),
        std::fs::read(other.path().join("ca.pem")).expect("other ca"),
    ]
    .concat();
    std::fs::write(daemon.data.join("chain.pem"), chain).expect("chain");
    let config = std::fs::read_to_string(&daemon.config).expect("config");
    std::fs::write(
        &daemon.config,
        config.replace("/server.pem\"", "/chain.pem\""),
    )
    .expect("config");
    daemon.launch();
    let mut phone = new_user(&daemon, dir.path(), "alice").await;
    let opened = Connection::open(&daemon.server, &daemon.ca)
        .await
        .expect("connects");
    assert_eq!(
        opened.connection.relay_chain().len(),
        3,
        "the relay sends its chain and the other CA"
    );
    opened.connection.close().await;
    let link = phone.link_device().await.expect("a link");
    let ca = der_of(&std::fs::read(&daemon.ca).expect("ca"));
    let stray = der_of(&std::fs::read(other.path().join("ca.pem")).expect("other ca"));
    assert_ne!(link.pin(), &Sha256::digest(&stray)[..], "the last sent");
    assert_eq!(link.pin(), &Sha256::digest(&ca)[..], "the home's CA");
    let home = dir.path().join("laptop");
    let laptop = Client::enroll_from_link(&home, &link, None)
        .await
        .expect("enrolls from the link");
    assert_eq!(
        der_of(&std::fs::read(home.join("ca.pem")).expect("ca.pem")),
        ca
    );
    laptop.close().await;
    phone.close().await;

    let waiting = daemon.admin(&["code", "list", "alice"]);
    let unwritable = dir.path().join("no such directory/link.png");
    let out = relais(
        &dir.path().join("alice"),
        &[
            "devices",
            "link",
            "--qr",
            unwritable.to_str().expect("path"),
        ],
        "",
    );
    let stderr = failed(&out, 78, "devices link --qr into no directory");
    assert!(stderr.contains("no such directory/link.png"), "{stderr}");
    assert!(!stderr.contains("relais://"), "{stderr}");
    assert!(out.stdout.is_empty(), "no link was made");
    assert_eq!(
        daemon.admin(&["code", "list", "alice"]),
        waiting,
        "no code was issued"
    );
}

/// A link cut short or altered is refused with what is wrong and what to do, the home left
/// empty; an altered code or user reaches the relay, which refuses it as a wrong code. The
/// link as issued still works afterwards.
#[test]
fn altered_links_are_refused_and_leave_the_home_empty() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = linking_relay(dir.path(), "");
    let out = daemon.admin_raw(&["user", "add", "alice", "--link"]);
    let link = link_and_qr(&succeeded(&out, "user add --link"));
    let code = EnrollLink::parse(&link).expect("link").code().to_owned();
    for (n, (what, text, exit, says)) in altered(&link, &code).into_iter().enumerate() {
        let home = dir.path().join(format!("home-{n}"));
        let out = relais(&home, &["enroll", "--link", "-"], &text);
        let stderr = failed(&out, exit, what);
        assert!(stderr.contains(says), "{what}: {stderr}");
        let what_to_do = stderr.contains("ask") || stderr.contains("copy");
        assert!(what_to_do, "{what}: the message says what to do: {stderr}");
        let reversed: String = code.chars().rev().collect();
        assert!(
            !stderr.contains(&code) && !stderr.contains(&reversed),
            "{what}: {stderr}"
        );
        assert!(empty(&home), "{what} left files in the home");
    }
    let home = dir.path().join("alice");
    let enrolled = relais(&home, &["enroll", "--link", "-"], &link);
    succeeded(&enrolled, "the link as issued");
}

/// `link` altered in each way a test tries, with the exit code and the words each gets:
/// 1 for what the relay or the TLS handshake refuses, 64 for what the link's reader does.
fn altered(link: &str, code: &str) -> Vec<(&'static str, String, i32, &'static str)> {
    let other_code: String = code.chars().rev().collect();
    let pin_at = link.find("pin=sha256:").expect("pin") + "pin=sha256:".len();
    let mut pin_changed = link.to_owned().into_bytes();
    pin_changed[pin_at] = if pin_changed[pin_at] == b'A' {
        b'B'
    } else {
        b'A'
    };
    let pin_changed = String::from_utf8(pin_changed).expect("ascii");
    let wrong_code = "invalid enrollment code";
    let no_pin = link[..link.find("&pin").expect("pin")].to_owned();
    vec![
        (
            "a changed code",
            link.replace(code, &other_code),
            1,
            wrong_code,
        ),
        (
            "a changed user",
            link.replace("alice@", "mallory@"),
            1,
            wrong_code,
        ),
        (
            "a changed pin",
            pin_changed,
            1,
            "is not the one this enrollment link is for",
        ),
        (
            "a cut link",
            link[..link.len() - 10].to_owned(),
            64,
            "pin (pin) is not valid",
        ),
        (
            "another version",
            link.replace("v=1", "v=2"),
            64,
            "of version 2",
        ),
        (
            "garbage",
            "relais://enrol?x".to_owned(),
            64,
            "not a Relais enrollment link",
        ),
        ("no pin", no_pin, 64, "has no certificate pin"),
    ]
}

/// A link whose pin is another CA's: the device refuses the relay in the TLS handshake, so
/// the relay sees a failed handshake and no enrollment (metrics, audit log, log), and the
/// home stays empty, encrypted or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pin_mismatch_sends_nothing_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = linking_relay(dir.path(), "");
    let out = daemon.admin_raw(&["user", "add", "alice", "--link"]);
    let link = EnrollLink::parse(&link_and_qr(&succeeded(&out, "user add --link"))).expect("link");
    let forged = pinning_another_ca(&link, &dir.path().join("elsewhere"));

    let failures_before = metric(&daemon, "relais_tls_handshake_failures_total");
    let handshakes_before = metric(&daemon, "relais_tls_handshakes_total");
    let passphrase = relais_client::Secret::passphrase("a passphrase long enough");
    for (home, secret) in [("plain", None), ("encrypted", Some(&passphrase))] {
        let home = dir.path().join(home);
        let refused = Client::enroll_from_link(&home, &forged, secret).await;
        let Err(error @ ClientError::PinMismatch { .. }) = refused else {
            panic!(
                "a pin mismatch: {:?}",
                refused.map(|c| c.device_id().to_owned())
            );
        };
        assert!(
            error
                .to_string()
                .contains("ask your administrator for a new link"),
            "{error}"
        );
        assert!(empty(&home), "the home stays empty");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&daemon, "relais_tls_handshake_failures_total") < failures_before + 2.0 {
        assert!(
            Instant::now() < deadline,
            "the relay did not see the refused handshakes"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        metric(&daemon, "relais_tls_handshakes_total"),
        handshakes_before
    );
    assert_eq!(metric(&daemon, "relais_enrollments_total"), 0.0);
    let entries = audit(&daemon);
    assert!(
        !entries.iter().any(|e| e["action"] == "enroll"),
        "{entries:#?}"
    );
    let log = daemon.log_text();
    assert!(
        !log.contains("device enrolled") && !log.contains("enrollment refused"),
        "the relay logged an enrollment"
    );

    // The honest link still works: its code was never sent.
    let home = dir.path().join("honest");
    Client::enroll_from_link(&home, &link, None)
        .await
        .expect("enrolls")
        .close()
        .await;
}

/// `link` with the pin of another relay's CA, made in `dir`, in place of its own.
fn pinning_another_ca(link: &EnrollLink, dir: &Path) -> EnrollLink {
    std::fs::create_dir_all(dir).expect("dir");
    relaisd::tls::ensure_dev_certificates(dir, &["localhost".into()]).expect("another CA");
    let other_ca = der_of(&std::fs::read(dir.join("ca.pem")).expect("ca"));
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let other_pin = base64::Engine::encode(&engine, Sha256::digest(&other_ca));
    let uri = link.to_uri();
    let (head, pin) = uri.split_once("pin=sha256:").expect("pin");
    assert_ne!(pin, other_pin);
    EnrollLink::parse(&format!("{head}pin=sha256:{other_pin}")).expect("a well-formed link")
}

/// A link to a relay nobody listens at: the message says the relay cannot be reached and
/// what to check; the home stays empty.
#[test]
fn an_unreachable_relay_is_said_so_and_the_home_stays_empty() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let pin = "sha256:47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU";
    let link = format!(
        "relais://enroll?v=1&server=127.0.0.1:{port}&user=alice@localhost&code=ABCD0123EFGH4567&pin={pin}"
    );
    let home = dir.path().join("alice");
    let stderr = failed(
        &relais(&home, &["enroll", "--link", &link], ""),
        1,
        "unreachable",
    );
    assert!(
        stderr.contains(&format!("cannot connect to the relay at 127.0.0.1:{port}"))
            && stderr.contains("check your network"),
        "{stderr}"
    );
    assert!(!stderr.contains("ABCD0123EFGH4567"), "{stderr}");
    assert!(empty(&home), "nothing written");
}

/// `--link` needs the relay's public address: without it, it says what to set, exits as a
/// usage error and creates nothing; `check-config` refuses a malformed one; `--qr` never
/// writes over a file.
#[test]
fn a_link_needs_the_public_address_and_a_new_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), "");
    let stderr = failed(
        &daemon.admin_raw(&["user", "add", "alice", "--link"]),
        64,
        "no address",
    );
    assert!(stderr.contains("public_address"), "{stderr}");
    assert!(
        !daemon.admin(&["user", "list"]).contains("alice"),
        "nothing was created"
    );

    let taken = dir.path().join("taken.png");
    std::fs::write(&taken, b"keep me").expect("a file");
    let linking = tempfile::tempdir().expect("tempdir");
    let daemon = linking_relay(linking.path(), "");
    let out = daemon.admin_raw(&[
        "user",
        "add",
        "bob",
        "--link",
        "--qr",
        taken.to_str().expect("path"),
    ]);
    let stderr = failed(&out, 78, "an existing --qr file");
    assert!(stderr.contains("never written over"), "{stderr}");
    assert_eq!(std::fs::read(&taken).expect("kept"), b"keep me");
    assert!(
        !daemon.admin(&["user", "list"]).contains("bob"),
        "nothing was created"
    );

    for (address, valid) in [
        ("relais.interieur.gouv.fr:443", true),
        ("[2001:db8::1]:8443", true),
        ("10.0.0.1:443", true),
        ("relais.interieur.gouv.fr", false),
        ("Relais.example:443", false),
        ("relais.example:0", false),
        ("https://relais.example:443", false),
        // Mistyped IPv4 addresses, which a client would look up as names.
        ("10.0.0.256:443", false),
        ("relais.443:443", false),
    ] {
        let config = dir.path().join("check.toml");
        std::fs::write(
            &config,
            format!("domain = \"localhost\"\n[server]\npublic_address = \"{address}\"\n"),
        )
        .expect("config");
        let out = Command::new(relaisd())
            .arg("check-config")
            .arg(&config)
            .output()
            .expect("run");
        if valid {
            succeeded(&out, address);
        } else {
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(78), "{address}: {stderr}");
            assert!(
                stderr.contains("check.toml:3: public_address: "),
                "{address}: {stderr}"
            );
        }
    }
}

/// alice's first device (the CLI) links a laptop with `relais devices link --qr`: the
/// laptop enrolls from the link and gets the earlier history from that device; the code
/// was audited with the device as actor and is in no log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_links_another_which_gets_its_history() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), "");
    let mut bob = new_user(&daemon, dir.path(), "bob").await;
    let alice = dir.path().join("alice");
    let wanted = alice_and_bob_talk(&daemon, &alice, &mut bob).await;

    let png = dir.path().join("link.png");
    let out = relais(
        &alice,
        &["devices", "link", "--qr", png.to_str().expect("path")],
        "",
    );
    let link = link_and_qr(&succeeded(&out, "devices link"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("link for a new device of alice@localhost"),
        "{stderr}"
    );
    let expected = expected_modules(&link);
    assert_eq!(modules_of_png(&png, expected.len()), expected);
    let link = EnrollLink::parse(&link).expect("link");
    assert_eq!(format!("https://{}", link.server()), daemon.server);
    let leaf = der_of(&std::fs::read(daemon.data.join("server.pem")).expect("leaf"));
    assert_eq!(
        link.pin(),
        &Sha256::digest(&leaf)[..],
        "the chain's last certificate"
    );

    let mut laptop = Client::enroll_from_link(&dir.path().join("laptop"), &link, None)
        .await
        .expect("the laptop enrolls from the link");
    let started = Instant::now();
    loop {
        // alice's device answers the laptop's request for history when it connects.
        succeeded(
            &relais(&alice, &["recv", "--wait", "1"], ""),
            "alice's device runs",
        );
        laptop
            .sync(Duration::from_millis(500))
            .await
            .expect("the laptop syncs");
        if texts(&laptop.history("bob", 50).await.unwrap_or_default()) == wanted {
            break;
        }
        assert!(
            started.elapsed() < HISTORY_WAIT,
            "the laptop has no history after {HISTORY_WAIT:?}: {:?}",
            laptop.history("bob", 50).await
        );
    }
    let entries = audit(&daemon);
    let by_device = entries.iter().filter(|e| {
        e["action"] == "code_issue"
            && e["actor"]
                .as_str()
                .is_some_and(|a| a.starts_with("device:alice@localhost/"))
    });
    assert_eq!(by_device.count(), 1, "{entries:#?}");
    daemon.assert_never_stored(&[link.code().to_owned()]);
    laptop.close().await;
    bob.close().await;
}

/// alice, on the command line in `alice`, and bob write to each other; returns their
/// conversation as (sender, text).
async fn alice_and_bob_talk(
    daemon: &Daemon,
    alice: &Path,
    bob: &mut Client,
) -> Vec<(String, String)> {
    let code = daemon.add_user("alice");
    let ca = daemon.ca.to_str().expect("path");
    let args = [
        "enroll",
        "--server",
        &daemon.server,
        "--ca",
        ca,
        "--user",
        "alice",
        "--code",
        &code,
    ];
    succeeded(&relais(alice, &args, ""), "alice enrolls");
    let said = relais_testkit::secret("avant le nouvel appareil");
    succeeded(&relais(alice, &["send", "bob", &said], ""), "alice writes");
    bob.sync(Duration::from_secs(2)).await.expect("bob syncs");
    let answer = relais_testkit::secret("la réponse de Bob");
    bob.send("alice", &answer).await.expect("bob answers");
    succeeded(&relais(alice, &["recv", "--wait", "10"], ""), "alice reads");
    vec![
        ("alice@localhost".to_owned(), said),
        ("bob@localhost".to_owned(), answer),
    ]
}

/// A conversation's texts (not its membership lines) as (sender, text).
fn texts(entries: &[ReceivedMessage]) -> Vec<(String, String)> {
    entries
        .iter()
        .filter(|m| !m.event)
        .map(|m| (m.sender.clone(), m.text.clone()))
        .collect()
}

/// A relay that turned device linking off refuses it with its own code, for the library
/// and for `relais devices link`; an operator still issues codes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_linking_turned_off_is_refused_with_its_code() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), "[enrollment]\ndevice_linking = false\n");
    let mut alice = new_user(&daemon, dir.path(), "alice").await;
    let refused = alice.link_device().await.expect_err("turned off");
    assert_eq!(
        server_code(&refused),
        Some(ErrorCode::DeviceLinkingDisabled),
        "{refused}"
    );
    assert!(
        refused.to_string().contains("ask an administrator"),
        "{refused}"
    );
    alice.close().await;
    let out = relais(&dir.path().join("alice"), &["devices", "link"], "");
    let stderr = failed(&out, 1, "devices link");
    assert!(
        stderr.contains("linking devices is turned off on this relay"),
        "{stderr}"
    );
    daemon.issue_code("alice");
    let entries = audit(&daemon);
    assert!(
        !entries.iter().any(|e| e["actor"]
            .as_str()
            .is_some_and(|a| a.starts_with("device:"))),
        "{entries:#?}"
    );
}

/// A device links within the user's waiting codes and active devices: past either the
/// relay refuses with LIMIT_EXCEEDED and says what to do; an operator is not bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_links_are_bounded_by_waiting_codes_and_devices() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(
        dir.path(),
        "[enrollment]\ndevice_link_codes_max = 2\ndevice_link_devices_max = 2\n",
    );
    let mut alice = new_user(&daemon, dir.path(), "alice").await;
    let first = alice.link_device().await.expect("a first code");
    let second = alice.link_device().await.expect("a second code");
    assert_ne!(first.code(), second.code());
    assert!(
        first
            .expires_at_ms()
            .is_some_and(|at| at > relais_testkit::now_ms())
    );
    let refused = alice.link_device().await.expect_err("two codes wait");
    assert_eq!(
        server_code(&refused),
        Some(ErrorCode::LimitExceeded),
        "{refused}"
    );
    assert!(
        refused.to_string().contains("enrollment codes waiting"),
        "{refused}"
    );

    let laptop = Client::enroll_from_link(&dir.path().join("laptop"), &first, None)
        .await
        .expect("the laptop enrolls");
    let refused = alice.link_device().await.expect_err("two devices");
    assert_eq!(
        server_code(&refused),
        Some(ErrorCode::LimitExceeded),
        "{refused}"
    );
    assert!(
        refused.to_string().contains("revoke one you no longer use"),
        "{refused}"
    );
    daemon.issue_code("alice");
    laptop.close().await;
    alice.close().await;
}

/// A device whose standing ended while its connection was still open (revoked, its account
/// suspended or expired) gets no code: the relay reads its standing again rather than trust
/// its authentication. The change is written to storage directly here, as another node on
/// the same database would make it (or as a cut-off still on its way to the connection
/// leaves it), so that the connection is still open when the device asks. The refusal has
/// the standing's own code, no code waits for the user, the audit log has the refusal, and
/// the connection is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_no_longer_in_standing_gets_no_code() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), "");
    let url = format!("sqlite://{}", daemon.data.join("relais.db").display());
    let database = sqlx::SqlitePool::connect(&url).await.expect("the database");
    let cases = [
        (
            "alice",
            "UPDATE users SET suspended_at = $1 WHERE name = $2",
            ErrorCode::AccountSuspended,
        ),
        (
            "bob",
            "UPDATE users SET expires_at = $1 - 1000 WHERE name = $2",
            ErrorCode::AccountExpired,
        ),
        (
            "carol",
            "UPDATE devices SET revoked_at = $1
             WHERE user_id = (SELECT id FROM users WHERE name = $2)",
            ErrorCode::DeviceRevoked,
        ),
    ];
    for (name, change, expected) in cases {
        let mut device = new_user(&daemon, dir.path(), name).await;
        let user = format!("{name}@localhost");
        sqlx::query(change)
            .bind(relais_testkit::now_ms())
            .bind(&user)
            .execute(&database)
            .await
            .expect("change the account elsewhere");
        let refused = device.link_device().await.expect_err(name);
        assert_eq!(server_code(&refused), Some(expected), "{name}: {refused}");
        let waiting = daemon.admin(&["--json", "code", "list", name]);
        assert_eq!(waiting.trim(), "[]", "{name}: a code waits");
        let entries = audit(&daemon);
        let refusal = entries.iter().find(|e| {
            e["action"] == "code_issue"
                && e["outcome"] == "refused"
                && e["subject"] == user.as_str()
                && e["actor"]
                    .as_str()
                    .is_some_and(|a| a.starts_with(&format!("device:{user}/")))
        });
        assert!(refusal.is_some(), "{name}: {entries:#?}");
        // The connection reads the account again and closes: the device is served no more.
        let started = Instant::now();
        while device.devices().await.is_ok() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{name}: the connection stays open"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        device.close().await;
    }
    database.close().await;
}

/// A renewed certificate, loaded on SIGHUP, is what `status` pins from then on, and what new
/// links carry: the relay reports the chain it serves, taken when it loaded it, without
/// reading its file again. Here the relay first serves its certificate alone, then a chain
/// from another CA, whose pin a device enrolls with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reloaded_certificate_changes_the_pin() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = linking_relay(dir.path(), "");
    let status = |daemon: &Daemon| -> serde_json::Value {
        serde_json::from_str(&daemon.admin(&["--json", "status"])).expect("status")
    };
    let leaf = der_of(&std::fs::read(daemon.data.join("server.pem")).expect("leaf"));
    let before = status(&daemon);
    assert_eq!(before["ca_pin"], pin_text(&leaf), "{before}");
    assert_eq!(before["ca_pin_is_leaf"], true, "{before}");

    // The renewed certificate, from a CA of its own, served with that CA.
    let renewed = dir.path().join("renewed");
    std::fs::create_dir_all(&renewed).expect("dir");
    relaisd::tls::ensure_dev_certificates(&renewed, &["localhost".into(), "127.0.0.1".into()])
        .expect("a renewed certificate");
    let ca = std::fs::read(renewed.join("ca.pem")).expect("ca");
    let chain = [
        std::fs::read(renewed.join("server.pem")).expect("leaf"),
        ca.clone(),
    ]
    .concat();
    for (name, bytes) in [
        (
            "server.key",
            std::fs::read(renewed.join("server.key")).expect("key"),
        ),
        ("server.pem", chain),
    ] {
        let path = daemon.data.join(name);
        std::fs::write(&path, bytes).expect("install");
        relais_testkit::give_to_service_user(&path);
    }
    daemon.signal("HUP");
    let started = Instant::now();
    while !daemon
        .log_text()
        .contains("reloaded the TLS certificate and key")
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no reload; log:\n{}",
            daemon.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = status(&daemon);
    assert_eq!(after["ca_pin"], pin_text(&der_of(&ca)), "{after}");
    assert_eq!(after["ca_pin_is_leaf"], false, "{after}");

    let out = daemon.admin_raw(&["user", "add", "alice", "--link"]);
    let link = link_and_qr(&succeeded(&out, "user add --link"));
    let link = EnrollLink::parse(&link).expect("link");
    assert_eq!(link.pin(), &Sha256::digest(der_of(&ca))[..]);
    Client::enroll_from_link(&dir.path().join("alice"), &link, None)
        .await
        .expect("a device enrolls with the renewed chain's pin")
        .close()
        .await;
}

/// A certificate's pin as `status` and links write it.
fn pin_text(der: &[u8]) -> String {
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!(
        "sha256:{}",
        base64::Engine::encode(&engine, Sha256::digest(der))
    )
}

/// Two devices of one user asking for a code at the same moment are counted one after the
/// other: with room for one waiting code, exactly one gets it, round after round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_asking_at_once_are_counted_one_after_the_other() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), "[enrollment]\ndevice_link_codes_max = 1\n");
    let mut phone = new_user(&daemon, dir.path(), "alice").await;
    let mut laptop = relais_testkit::clients::enroll(
        &daemon,
        &dir.path().join("laptop"),
        "alice",
        &daemon.issue_code("alice"),
    )
    .await;
    for round in 0..5 {
        let (first, second) = tokio::join!(phone.link_device(), laptop.link_device());
        let refused = match (first, second) {
            (Ok(_), Err(refused)) | (Err(refused), Ok(_)) => refused,
            (first, second) => panic!(
                "round {round}: one code for two devices: {:?} and {:?}",
                first.map(|l| l.user().to_owned()),
                second.map(|l| l.user().to_owned())
            ),
        };
        assert_eq!(
            server_code(&refused),
            Some(ErrorCode::LimitExceeded),
            "{refused}"
        );
        let waiting: serde_json::Value =
            serde_json::from_str(&daemon.admin(&["--json", "code", "list", "alice"]))
                .expect("codes");
        let ids: Vec<i64> = waiting
            .as_array()
            .expect("a list")
            .iter()
            .filter_map(|c| c["id"].as_i64())
            .collect();
        assert_eq!(ids.len(), 1, "round {round}: {waiting}");
        daemon.admin(&["code", "cancel", "alice", &ids[0].to_string()]);
    }
    phone.close().await;
    laptop.close().await;
}
