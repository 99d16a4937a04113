//! Several relay processes in one test: a TCP balancer in front of whichever is current,
//! the identity they share, and the clients' side of moving between them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use relais_client::Client;

use super::Daemon;
use super::clients::enroll_through;

/// A TCP forwarder to whichever node is current: what a load balancer does when its
/// health check takes a dead node out.
pub struct Balancer {
    addr: SocketAddr,
    target: Arc<Mutex<String>>,
}

impl Balancer {
    pub async fn start(target: &str) -> Balancer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the balancer");
        let addr = listener.local_addr().expect("address");
        let target = Arc::new(Mutex::new(target.to_owned()));
        let current = target.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let to = current.lock().expect("target").clone();
                tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&to).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Balancer { addr, target }
    }

    pub fn send_to(&self, target: &str) {
        *self.target.lock().expect("target") = target.to_owned();
    }

    pub fn server(&self) -> String {
        format!("https://{}", self.addr)
    }
}

/// The second node serves with the first one's keys and certificate, as every node of a
/// deployment does (they share the server's identity; docs/cookbook/postgresql.md): the
/// certificate and TLS key in the data directory, the server's secrets in `keys/`.
pub fn share_identity(from: &Path, to: &Path) {
    for sub in ["", "keys"] {
        let (from, to) = (from.join(sub), to.join(sub));
        std::fs::create_dir_all(&to).expect("data dir");
        for entry in std::fs::read_dir(&from).expect("read data dir") {
            let path = entry.expect("entry").path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if name.ends_with(".pem") || name.ends_with(".key") {
                std::fs::copy(&path, to.join(name)).expect("copy key");
            }
        }
    }
}

/// Connects `client` again, retrying for ten seconds while its node restarts or its
/// balancer moves to another node.
pub async fn reconnect(client: &mut Client) {
    for _ in 0..100 {
        if client.connect().await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{} could not reconnect", client.user());
}

/// How many times each text arrived.
pub fn count(messages: &[relais_client::ReceivedMessage]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for m in messages {
        *counts.entry(m.text.clone()).or_default() += 1;
    }
    counts
}

/// Enrolls Alice and Bob through a balancer in front of `node`, queues `n` messages for
/// Bob while he is offline, and stops the node. Returns the balancer and what was sent.
pub async fn queue_for_offline_bob(
    node: &mut Daemon,
    dir: &Path,
    n: usize,
    label: &str,
) -> (Balancer, BTreeMap<String, usize>) {
    let balancer = Balancer::start(&node.addr).await;
    let server = balancer.server();
    let code = node.add_user("alice");
    let mut alice = enroll_through(&server, node, &dir.join("alice"), "alice", &code).await;
    let code = node.add_user("bob");
    let bob = enroll_through(&server, node, &dir.join("bob"), "bob", &code).await;
    bob.close().await;
    let mut sent = BTreeMap::new();
    for i in 0..n {
        let text = super::secret(&format!("{label}-{i}"));
        alice.send("bob", &text).await.expect("alice sends");
        sent.insert(text, 1);
    }
    alice.close().await;
    node.stop();
    (balancer, sent)
}
