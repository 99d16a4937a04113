//! Client helpers shared by the end-to-end tests.

use std::path::Path;
use std::time::Duration;

use relais_client::{Client, ClientError, ErrorCode, ReceivedMessage};

use super::Daemon;

/// How long a test waits for deliveries before it gives up.
pub const WAIT: Duration = Duration::from_secs(10);

/// Enrolls a device in `home` for `user` on `daemon` and leaves it connected.
pub async fn enroll(daemon: &Daemon, home: &Path, user: &str, code: &str) -> Client {
    enroll_through(&daemon.server, daemon, home, user, code).await
}

/// As [`enroll`], with the device reaching the relay at `server`: a balancer in front of
/// `daemon` and other nodes, say (the device trusts `daemon`'s CA all the same).
pub async fn enroll_through(
    server: &str,
    daemon: &Daemon,
    home: &Path,
    user: &str,
    code: &str,
) -> Client {
    let mut client = Client::enroll(home, server, &daemon.ca, user, code)
        .await
        .unwrap_or_else(|e| panic!("{user} enrolls in {}: {e}", home.display()));
    client
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{user} connects from {}: {e}", home.display()));
    client
}

/// Adds the user `name` and enrolls a device for it in `dir/name`, left connected.
pub async fn new_user(daemon: &Daemon, dir: &Path, name: &str) -> Client {
    enroll(daemon, &dir.join(name), name, &daemon.add_user(name)).await
}

/// Receives until `n` messages arrived (or the wait is over), then briefly more: anything
/// beyond `n` would be a duplicate or a stray, and the tests must see it.
pub async fn receive_n(client: &mut Client, n: usize) -> Vec<ReceivedMessage> {
    let mut all = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT * 3;
    while all.len() < n && tokio::time::Instant::now() < deadline {
        all.extend(
            client
                .receive(Duration::from_secs(2))
                .await
                .expect("receive"),
        );
    }
    all.extend(
        client
            .receive(Duration::from_millis(300))
            .await
            .expect("receive"),
    );
    all
}

/// The `relais` command, which `cargo build --workspace --bins` puts beside `relaisd`.
pub fn relais_cli() -> std::path::PathBuf {
    let path = super::relaisd().with_file_name("relais");
    assert!(
        path.is_file(),
        "{} is missing: build the workspace's binaries first (cargo build --workspace --bins)",
        path.display()
    );
    path
}

/// The relay's error code in a client's error, if the relay refused something.
pub fn server_code(error: &ClientError) -> Option<ErrorCode> {
    match error {
        ClientError::Server { code, .. } => Some(*code),
        _ => None,
    }
}
