//! Sealed keys against a real software TPM (swtpm): `relaisd keys provision` seals the
//! appliance's secrets to PCR 7, relaisd serves real clients from them (enrolled from an
//! enrollment link too, whose pin the relay reports from the chain it loaded, since its
//! sandbox hides the chain's file), a changed PCR stops start-up with a message that says
//! why, the recovery key re-seals, and a rotated TLS key is served, and pinned, after a
//! restart on the same port (SIGHUP cannot unseal in the sandbox, and says so).

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;

use base64::Engine as _;
use relais_client::{Client, EnrollLink};
use relais_testkit::clients::{enroll, new_user, receive_n};
use relais_testkit::swtpm::Swtpm;
use relais_testkit::{Daemon, assert_bytes_absent, free_port, relaisd, secret};
use sha2::{Digest as _, Sha256};

const NAMES: [&str; 4] = ["--name", "localhost", "--name", "127.0.0.1"];

/// Runs `relaisd keys ARGS --out DIR` against the TPM, with `stdin` as its input.
fn keys(tpm: &Swtpm, args: &[&str], out: &Path, stdin: &str) -> Output {
    use std::io::Write as _;
    let mut child = tpm
        .command(relaisd())
        .arg("keys")
        .args(args)
        .arg("--out")
        .arg(out)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run relaisd keys");
    if let Some(mut input) = child.stdin.take() {
        input.write_all(stdin.as_bytes()).expect("stdin");
    }
    child.wait_with_output().expect("relaisd keys")
}

fn assert_success(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("utf-8")
}

/// Provisions a self-signed appliance in `dir/credentials` and returns it with the
/// recovery key printed once.
fn provision(tpm: &Swtpm, dir: &Path) -> (PathBuf, String) {
    // What firmware measured at boot: the Secure Boot state the keys are sealed to.
    tpm.extend_pcr(7, "secure boot: enabled, db v1");
    let credentials = dir.join("credentials");
    let mut args = vec!["provision", "--self-signed", "--tpm2-pcrs", "7"];
    args.extend(NAMES);
    let stdout = assert_success(&keys(tpm, &args, &credentials, ""), "keys provision");
    let recovery = stdout
        .lines()
        .map(str::trim)
        .find(|l| l.len() == 71 && l.split('-').count() == 8)
        .unwrap_or_else(|| panic!("no recovery key in {stdout}"))
        .to_owned();
    (credentials, recovery)
}

/// A relay serving the sealed keys in `credentials`, on a port of its own that its
/// public address names, so that it gives enrollment links.
fn sealed_daemon(tpm: &Swtpm, dir: &Path, credentials: &Path) -> Daemon {
    let keys = format!(
        "[keys]\nsource = \"sealed\"\ndirectory = \"{}\"\n",
        credentials.display()
    );
    let port = free_port();
    let listen = format!(
        "[listen]\nclient = \"127.0.0.1:{port}\"\n\n[server]\npublic_address = \"localhost:{port}\"\n"
    );
    let certificate = credentials.join("relais-tls-cert.pem");
    let mut daemon = Daemon::configure(dir, &keys, certificate, &listen);
    daemon.env = tpm.env();
    daemon
}

/// The pin `relaisd admin status` reports.
fn status_pin(daemon: &Daemon) -> String {
    let status: serde_json::Value =
        serde_json::from_str(&daemon.admin(&["--json", "status"])).expect("status");
    status["ca_pin"]
        .as_str()
        .unwrap_or_else(|| panic!("no pin: {status}"))
        .to_owned()
}

/// The pin `relaisd admin status` reports, which must be the SHA-256 of the last
/// certificate of the chain in `certificate` (in unpadded base64url).
fn assert_pins(daemon: &Daemon, certificate: &Path) -> String {
    let last = chain(certificate).pop().expect("a certificate");
    let expected = format!(
        "sha256:{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(&last))
    );
    assert_eq!(status_pin(daemon), expected);
    expected
}

/// `relaisd admin user add NAME --link` on the sealed relay: the link pins the last
/// certificate of the chain it serves, and a device enrolls from it.
async fn a_link_enrolls_from_the_sealed_relay(daemon: &Daemon, dir: &Path, name: &str) -> Client {
    let pinned = assert_pins(daemon, &daemon.ca);
    let out = daemon.admin_raw(&["user", "add", name, "--link"]);
    let stdout = assert_success(&out, "user add --link");
    let link = EnrollLink::parse(stdout.lines().next().expect("the link")).expect("a link");
    assert_eq!(link.user(), format!("{name}@localhost"));
    let last = chain(&daemon.ca).pop().expect("a certificate");
    assert_eq!(link.pin(), &Sha256::digest(&last)[..]);
    assert!(link.to_uri().ends_with(&pinned), "the pin status reported");
    Client::enroll_from_link(&dir.join(name), &link, None)
        .await
        .expect("a device enrolls from the sealed relay's link")
}

/// Every way a secret could be written out: raw, hex, base64.
fn encodings(label: &str, secret: &[u8]) -> Vec<(String, Vec<u8>)> {
    vec![
        (format!("{label} (raw)"), secret.to_vec()),
        (format!("{label} (hex)"), hex::encode(secret).into_bytes()),
        (
            format!("{label} (base64)"),
            base64::engine::general_purpose::STANDARD
                .encode(secret)
                .into_bytes(),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_keys_serve_clients_and_a_changed_pcr_stops_start_up() {
    let Some(tpm) = Swtpm::start() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let (credentials, recovery) = provision(&tpm, dir.path());
    for name in [
        "relais-code-secret.cred",
        "relais-signing-key.cred",
        "relais-tls-key.cred",
        "relais-recovery.bin",
    ] {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(credentials.join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{name} is private");
    }

    let mut daemon = sealed_daemon(&tpm, dir.path(), &credentials);
    relais_testkit::give_tree_to_service_user(&credentials);
    daemon.launch();
    let status = daemon.admin(&["status"]);
    assert!(status.contains("sealed credentials in"), "{status}");
    let mut alice = a_link_enrolls_from_the_sealed_relay(&daemon, dir.path(), "alice").await;
    let mut bob = new_user(&daemon, dir.path(), "bob").await;
    let text = secret("sealed-hello");
    alice.send("bob", &text).await.expect("alice sends");
    let got = receive_n(&mut bob, 1).await;
    assert_eq!(
        got.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(),
        [text.as_str()]
    );
    alice.close().await;
    bob.close().await;
    daemon.stop();

    // No secret in the clear anywhere: the data directory, the credentials, the log.
    let code_secret = tpm.decrypt(
        &credentials.join("relais-code-secret.cred"),
        "relais-code-secret",
    );
    let signing = tpm.decrypt(
        &credentials.join("relais-signing-key.cred"),
        "relais-signing-key",
    );
    let tls_key = tpm.decrypt(&credentials.join("relais-tls-key.cred"), "relais-tls-key");
    assert_eq!((code_secret.len(), signing.len()), (32, 32));
    let tls_pem = String::from_utf8(tls_key).expect("pem");
    let tls_body: String = tls_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    assert!(tls_body.len() > 40, "{tls_pem}");
    let mut needles = encodings("the enrollment-code key", &code_secret);
    needles.extend(encodings("the signing key", &signing));
    needles.push(("the TLS key (PEM body)".into(), tls_body.into_bytes()));
    needles.push(("the recovery key".into(), recovery.clone().into_bytes()));
    needles.push((
        "the recovery key (digits)".into(),
        recovery.replace('-', "").into_bytes(),
    ));
    let needles: Vec<(&str, Vec<u8>)> = needles
        .iter()
        .map(|(label, bytes)| (label.as_str(), bytes.clone()))
        .collect();
    assert_bytes_absent(&[&daemon.data, &credentials, &daemon.log], &needles);

    // A Secure Boot database update changes PCR 7: the credentials no longer unseal.
    tpm.extend_pcr(7, "secure boot: db v2");
    relais_testkit::give_tree_to_service_user(&credentials);
    let error = daemon.try_launch().expect_err("start-up must refuse");
    assert!(error.contains("exit status: 78"), "{error}");
    assert!(
        error.contains("cannot unseal credential relais-tls-key")
            && error.contains(
                "the TPM's PCR 7 no longer matches the policy it was sealed to (firmware update or Secure Boot change?)"
            )
            && error.contains("docs/cookbook/sealed-keys.md"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recovery_key_reseals_after_a_pcr_change_and_a_restart_serves_a_rotated_key() {
    if !relais_testkit::system_component(&["openssl"], "signing a test certificate") {
        return;
    }
    let Some(tpm) = Swtpm::start() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let (credentials, recovery) = provision(&tpm, dir.path());
    let code_secret = tpm.decrypt(
        &credentials.join("relais-code-secret.cred"),
        "relais-code-secret",
    );
    let signing = tpm.decrypt(
        &credentials.join("relais-signing-key.cred"),
        "relais-signing-key",
    );
    let mut daemon = sealed_daemon(&tpm, dir.path(), &credentials);
    relais_testkit::give_tree_to_service_user(&credentials);
    daemon.launch();
    let alice_code = daemon.add_user("alice");
    let carol_code = daemon.add_user("carol");
    daemon.stop();

    let sealed = (code_secret, signing);
    the_recovery_key_reseals_the_same_keys(&tpm, &mut daemon, &credentials, &recovery, sealed);

    relais_testkit::give_tree_to_service_user(&credentials);
    daemon.launch();
    // Codes issued before the recovery still work: the code key is the same.
    let alice = enroll(&daemon, &dir.path().join("alice"), "alice", &alice_code).await;
    let address = daemon.addr.clone();
    let before = presented_certificate(&address).await;
    assert_eq!(
        before,
        leaf(&credentials.join("relais-tls-cert.pem")),
        "the recovered appliance serves its new certificate"
    );
    let pinned = assert_pins(&daemon, &credentials.join("relais-tls-cert.pem"));

    // Rotation through a CA: a certificate for another key is refused, the signed one is
    // installed. SIGHUP cannot unseal it (relaisd may run no program once it serves, and
    // unsealing runs systemd-creds): it says so and keeps serving; a restart on the same
    // port serves it.
    let signed = a_ca_signs_the_rotated_key(&tpm, dir.path(), &credentials);
    assert_eq!(
        presented_certificate(&address).await,
        before,
        "nothing changes before the reload"
    );
    sighup_refuses_to_unseal_and_the_daemon_serves_on(&mut daemon, &before).await;
    // The refused reload changed nothing served, so nothing pinned.
    assert_eq!(status_pin(&daemon), pinned);
    daemon.stop();
    relais_testkit::give_tree_to_service_user(&credentials);
    daemon.launch();
    assert_eq!(daemon.addr, address, "the same port after the restart");
    assert_eq!(presented_certificate(&address).await, leaf(&signed));
    // The rotated chain is what links pin now.
    assert_ne!(
        assert_pins(&daemon, &credentials.join("relais-tls-cert.pem")),
        pinned
    );
    // Devices that trust the CA that signed the new certificate enroll and talk (Alice's
    // device trusts the certificate it enrolled with, which this rotation replaced: a
    // ministry rotating to a new CA hands its devices the new CA first).
    alice.close().await;
    daemon.ca = dir.path().join("ca.pem");
    devices_trusting_the_new_ca_talk(&daemon, dir.path(), &carol_code).await;
    daemon.stop();
}

/// A firmware update changes PCR 7, so the stopped `daemon` no longer starts; a wrong
/// recovery key is refused, and `recovery` reseals the credentials with the same secrets:
/// the enrollment-code key and the MLS signing key decrypted before, `sealed`.
fn the_recovery_key_reseals_the_same_keys(
    tpm: &Swtpm,
    daemon: &mut Daemon,
    credentials: &Path,
    recovery: &str,
    (code_secret, signing): (Vec<u8>, Vec<u8>),
) {
    tpm.extend_pcr(7, "firmware update 1.2");
    relais_testkit::give_tree_to_service_user(credentials);
    daemon.try_launch().expect_err("the PCR changed");
    let wrong = keys(
        tpm,
        &[&["recover"][..], &NAMES, &["--self-signed"]].concat(),
        credentials,
        "00000000-00000000-00000000-00000000-00000000-00000000-00000000-00000000\n",
    );
    let error = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        !wrong.status.success() && error.contains("the recovery key does not open"),
        "{error}"
    );
    assert_success(
        &keys(
            tpm,
            &[&["recover"][..], &NAMES, &["--self-signed"]].concat(),
            credentials,
            &format!("{recovery}\n"),
        ),
        "keys recover",
    );
    assert_eq!(
        tpm.decrypt(
            &credentials.join("relais-code-secret.cred"),
            "relais-code-secret"
        ),
        code_secret,
        "the enrollment-code key survives the recovery"
    );
    assert_eq!(
        tpm.decrypt(
            &credentials.join("relais-signing-key.cred"),
            "relais-signing-key"
        ),
        signing,
        "the MLS signing key, which every group names, survives the recovery"
    );
}

/// `relaisd keys rotate` stages a new TLS key and its signing request; installing a
/// certificate for another key is refused, and the one a test CA in `dir` signs is
/// installed. Returns that certificate.
fn a_ca_signs_the_rotated_key(tpm: &Swtpm, dir: &Path, credentials: &Path) -> PathBuf {
    let pending = keys(tpm, &[&["rotate"][..], &NAMES].concat(), credentials, "");
    assert_success(&pending, "keys rotate");
    let request = credentials.join("relais-tls.csr");
    assert!(request.exists(), "a signing request is written");
    let stale = credentials.join("relais-tls-cert.pem");
    let refused = keys(
        tpm,
        &["install-certificate", stale.to_str().expect("utf-8")],
        credentials,
        "",
    );
    let error = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && error.contains("does not belong to the pending TLS key"),
        "{error}"
    );
    let signed = sign_with_test_ca(dir, &request);
    assert_success(
        &keys(
            tpm,
            &["install-certificate", signed.to_str().expect("utf-8")],
            credentials,
            "",
        ),
        "keys install-certificate",
    );
    signed
}

/// SIGHUP under the sealed source is refused in the log and the metrics, and the daemon
/// keeps serving the certificate it presented `before`.
async fn sighup_refuses_to_unseal_and_the_daemon_serves_on(daemon: &mut Daemon, before: &[u8]) {
    daemon.signal("HUP");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !daemon
        .log_text()
        .contains("cannot load a new TLS key in place")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "SIGHUP under the sealed source is not refused clearly; log:\n{}",
            daemon.log_text()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        daemon.exited().is_none(),
        "the daemon kept running after SIGHUP"
    );
    assert!(
        metrics_page(&daemon.metrics_addr).contains("\nrelais_key_provider_up 0\n"),
        "the refused reload shows in the metrics"
    );
    assert_eq!(presented_certificate(&daemon.addr).await, before);
}

/// Carol, with the code issued before the recovery, and Dave enroll trusting the daemon's
/// CA and exchange a message.
async fn devices_trusting_the_new_ca_talk(daemon: &Daemon, dir: &Path, carol_code: &str) {
    let mut carol = enroll(daemon, &dir.join("carol"), "carol", carol_code).await;
    let dave_code = daemon.add_user("dave");
    let mut dave = enroll(daemon, &dir.join("dave"), "dave", &dave_code).await;
    let text = secret("after-rotation");
    carol
        .send("dave", &text)
        .await
        .expect("carol sends after the rotation");
    let got = receive_n(&mut dave, 1).await;
    assert_eq!(
        got.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(),
        [text.as_str()]
    );
    carol.close().await;
    dave.close().await;
}

/// The DER of the first certificate in a PEM file.
fn leaf(path: &Path) -> Vec<u8> {
    chain(path).swap_remove(0)
}

/// The DER of every certificate in a PEM file, in its order.
fn chain(path: &Path) -> Vec<Vec<u8>> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let chain: Vec<Vec<u8>> = CertificateDer::pem_file_iter(path)
        .expect("pem")
        .map(|c| c.expect("valid").to_vec())
        .collect();
    assert!(!chain.is_empty(), "no certificate in {}", path.display());
    chain
}

/// The leaf certificate the server presents to a new TLS connection.
async fn presented_certificate(address: &str) -> Vec<u8> {
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .expect("tls13")
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(RecordOnly))
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("handshake");
    tls.get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .expect("a certificate")
        .to_vec()
}

/// Accepts any certificate: these probes only record which one the server presents.
#[derive(Debug)]
struct RecordOnly;

impl rustls::client::danger::ServerCertVerifier for RecordOnly {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::aws_lc_rs::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Signs a request as a ministry's CA would (with openssl), returning the certificate.
fn sign_with_test_ca(dir: &Path, request: &Path) -> PathBuf {
    let ca_key = dir.join("ca.key");
    let ca = dir.join("ca.pem");
    let signed = dir.join("signed.pem");
    let extensions = dir.join("ext.cnf");
    std::fs::write(
        &extensions,
        "subjectAltName = DNS:localhost, IP:127.0.0.1\nextendedKeyUsage = serverAuth\nbasicConstraints = CA:FALSE\n",
    )
    .expect("extensions");
    let out = std::process::Command::new("openssl")
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
            "-subj",
            "/CN=Test ministry CA",
            "-days",
            "30",
            "-keyout",
        ])
        .arg(&ca_key)
        .arg("-out")
        .arg(&ca)
        .output()
        .expect("openssl (Debian's openssl package)");
    assert_success(&out, "openssl req");
    let out = std::process::Command::new("openssl")
        .args(["x509", "-req", "-days", "30", "-in"])
        .arg(request)
        .arg("-CA")
        .arg(&ca)
        .arg("-CAkey")
        .arg(&ca_key)
        .arg("-extfile")
        .arg(&extensions)
        .arg("-out")
        .arg(&signed)
        .output()
        .expect("openssl");
    assert_success(&out, "openssl x509 -req");
    signed
}

/// The daemon's metrics page, over plain HTTP.
fn metrics_page(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut tcp = std::net::TcpStream::connect(addr).expect("connect to the metrics listener");
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: relais\r\nConnection: close\r\n\r\n")
        .expect("request metrics");
    let mut page = String::new();
    tcp.read_to_string(&mut page).expect("read metrics");
    page
}
