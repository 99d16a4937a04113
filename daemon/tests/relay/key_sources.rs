//! The key sources as the daemon meets them at start: the default reads the credentials
//! systemd decrypted into `$CREDENTIALS_DIRECTORY` and says what to do when there are none;
//! the development `file` source refuses a key others can read.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use relais_testkit::Daemon;
use relais_testkit::clients::new_user;

/// Lays out a credentials directory as systemd does for the unit: one file per
/// credential, named as in `LoadCredential*=`, readable by the service only.
fn systemd_credentials(dir: &Path) -> std::path::PathBuf {
    let generated = dir.join("generated");
    std::fs::create_dir_all(&generated).expect("dir");
    relaisd::tls::ensure_dev_certificates(&generated, &["localhost".into(), "127.0.0.1".into()])
        .expect("certificates");
    let credentials = dir.join("credentials");
    std::fs::create_dir_all(&credentials).expect("dir");
    let files: [(&str, Vec<u8>); 4] = [
        ("relais-code-secret", vec![1; 32]),
        ("relais-signing-key", vec![2; 32]),
        (
            "relais-tls-key",
            std::fs::read(generated.join("server.key")).expect("key"),
        ),
        (
            "relais-tls-cert",
            std::fs::read(generated.join("server.pem")).expect("certificate"),
        ),
    ];
    for (name, bytes) in files {
        let path = credentials.join(name);
        std::fs::write(&path, bytes).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).expect("chmod");
    }
    // systemd gives a unit's credentials to the unit's user.
    relais_testkit::give_tree_to_service_user(&credentials);
    credentials
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_source_reads_the_credentials_systemd_decrypted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let credentials = systemd_credentials(dir.path());
    let mut daemon = Daemon::configure(dir.path(), "", dir.path().join("generated/ca.pem"), "");

    let error = daemon.try_launch().expect_err("no credentials directory");
    assert!(
        error.contains("exit status: 78")
            && error.contains(
                "$CREDENTIALS_DIRECTORY is not set: start relaisd through relaisd.service"
            ),
        "{error}"
    );

    daemon.env = vec![(
        "CREDENTIALS_DIRECTORY".into(),
        credentials.display().to_string(),
    )];
    daemon.launch();
    let status = daemon.admin(&["status"]);
    assert!(
        status.contains(&format!("systemd credentials in {}", credentials.display())),
        "{status}"
    );
    let client = new_user(&daemon, dir.path(), "alice").await;
    client.close().await;
    daemon.stop();

    // A credential systemd did not deliver is named, with what to do.
    std::fs::remove_file(credentials.join("relais-signing-key")).expect("remove");
    let error = daemon.try_launch().expect_err("a credential is missing");
    assert!(
        error.contains("credential relais-signing-key is missing")
            && error.contains("relaisd keys provision"),
        "{error}"
    );
}

#[test]
fn the_file_source_refuses_a_tls_key_others_can_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("dir");
    relaisd::tls::ensure_dev_certificates(&data, &["localhost".into()]).expect("certificates");
    let key = data.join("server.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let keys = format!(
        "[tls]\ncertificate = \"{}\"\nprivate_key = \"{}\"\n\n[keys]\nsource = \"file\"\n",
        data.join("server.pem").display(),
        key.display()
    );
    let mut daemon = Daemon::configure(dir.path(), &keys, data.join("ca.pem"), "");
    let error = daemon.try_launch().expect_err("an open key is refused");
    assert!(
        error.contains("exit status: 78")
            && error.contains(&format!("run `chmod 600 {}`", key.display())),
        "{error}"
    );
    assert!(
        error.contains(
            "keys.source = file: the server's secrets are plain files, for development only"
        ),
        "the development source is named at start: {error}"
    );
}
