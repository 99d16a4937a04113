//! Active-active: two relaisd nodes on one PostgreSQL database, behind a TCP load
//! balancer (a small forwarding proxy here, as HAProxy would be in a data centre).
//!
//! Devices on different nodes converse both ways in one group; then the node two of them
//! are connected to is killed with SIGKILL, they reconnect through the balancer to the
//! other node, and every message that was acknowledged to its sender reaches every other
//! member exactly once.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::clients::{WAIT, receive_n};
use common::postgres::Database;
use common::{Daemon, secret};
use relais_client::Client;

/// A TCP forwarder to whichever node is current: what a load balancer does when its
/// health check takes a dead node out.
struct Balancer {
    addr: SocketAddr,
    target: Arc<Mutex<String>>,
}

impl Balancer {
    async fn start(target: &str) -> Balancer {
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

    fn send_to(&self, target: &str) {
        *self.target.lock().expect("target") = target.to_owned();
    }

    fn server(&self) -> String {
        format!("https://{}", self.addr)
    }
}

/// The second node serves with the first one's keys and certificate, as every node of a
/// deployment does (they share the server's identity; docs/cookbook/postgresql.md): the
/// certificate and TLS key in the data directory, the server's secrets in `keys/`.
fn share_identity(from: &Path, to: &Path) {
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

async fn reconnect(client: &mut Client) {
    for _ in 0..100 {
        if client.connect().await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{} could not reconnect", client.user());
}

async fn enroll(server: &str, daemon: &Daemon, dir: &Path, user: &str, code: &str) -> Client {
    let mut client = Client::enroll(&dir.join(user), server, &daemon.ca, user, code)
        .await
        .unwrap_or_else(|e| panic!("{user} enrolls: {e}"));
    client.connect().await.expect("connect");
    client
}

fn count(messages: &[relais_client::ReceivedMessage]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for m in messages {
        *counts.entry(m.text.clone()).or_default() += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_serve_one_group_and_survive_the_loss_of_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(database) = Database::create(dir.path()).await else {
        return;
    };
    // No periodic catch-up during the test: what crosses nodes does so by notification.
    let config = format!("{}catch_up_seconds = 3600\n", database.config());
    let mut node_a = Daemon::start(&dir.path().join("a"), &config);
    share_identity(&node_a.data, &dir.path().join("b").join("data"));
    let node_b = Daemon::start(&dir.path().join("b"), &config);
    let balancer = Balancer::start(&node_a.addr).await;

    // Alice and Carol reach node A through the balancer; Bob is on node B. Accounts made
    // through either node's admin socket are the same accounts.
    let mut alice = enroll(
        &balancer.server(),
        &node_a,
        dir.path(),
        "alice",
        &node_a.add_user("alice"),
    )
    .await;
    let mut carol = enroll(
        &balancer.server(),
        &node_a,
        dir.path(),
        "carol",
        &node_b.add_user("carol"),
    )
    .await;
    let mut bob = enroll(
        &node_b.server,
        &node_b,
        dir.path(),
        "bob",
        &node_a.add_user("bob"),
    )
    .await;

    alice
        .create_group("ops", &["bob", "carol"])
        .await
        .expect("create the group");
    for client in [&mut bob, &mut carol] {
        client.sync(WAIT).await.expect("join from the Welcome");
    }
    // Both ways across the nodes.
    let hello = secret("hello-from-a");
    alice.group_send("ops", &hello).await.expect("alice sends");
    let reply = secret("reply-from-b");
    bob.group_send("ops", &reply).await.expect("bob sends");
    let got = receive_n(&mut bob, 1).await;
    assert_eq!(count(&got), BTreeMap::from([(hello.clone(), 1)]), "A to B");
    let got = receive_n(&mut alice, 1).await;
    assert_eq!(count(&got), BTreeMap::from([(reply.clone(), 1)]), "B to A");
    let got = receive_n(&mut carol, 2).await;
    assert_eq!(
        count(&got),
        BTreeMap::from([(hello, 1), (reply, 1)]),
        "the third member, on A, gets both"
    );

    // Carol stops reading; Alice and Bob keep writing; node A dies in the middle.
    let mut acknowledged: Vec<String> = Vec::new();
    let mut from_alice: Vec<String> = Vec::new();
    for i in 0..30 {
        let text = secret(&format!("bob-{i}"));
        bob.group_send("ops", &text)
            .await
            .expect("bob's node is up");
        acknowledged.push(text);
        let text = secret(&format!("alice-{i}"));
        if i == 15 {
            node_a.kill();
            balancer.send_to(&node_b.addr);
        }
        if alice.group_send("ops", &text).await.is_ok() {
            acknowledged.push(text.clone());
            from_alice.push(text);
        } else {
            reconnect(&mut alice).await;
        }
    }
    assert!(
        from_alice.len() >= 15,
        "alice's messages before the kill: {from_alice:?}"
    );
    reconnect(&mut carol).await;

    let expected_by_carol: BTreeMap<String, usize> =
        acknowledged.iter().map(|t| (t.clone(), 1)).collect();
    let got = receive_n(&mut carol, expected_by_carol.len()).await;
    assert_eq!(
        count(&got),
        expected_by_carol,
        "carol, moved to B, gets each message once"
    );
    let got = receive_n(&mut bob, from_alice.len()).await;
    let expected_by_bob: BTreeMap<String, usize> =
        from_alice.iter().map(|t| (t.clone(), 1)).collect();
    assert_eq!(
        count(&got),
        expected_by_bob,
        "bob gets each of alice's once"
    );
    let bobs: Vec<&String> = acknowledged
        .iter()
        .filter(|t| !from_alice.contains(t))
        .collect();
    let got = receive_n(&mut alice, bobs.len()).await;
    let counts = count(&got);
    for text in bobs {
        assert_eq!(
            counts.get(text),
            Some(&1),
            "alice gets {text} once: {counts:?}"
        );
    }
    // Nothing is left waiting: the queues of all three devices are empty.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(database.scalar("SELECT COUNT(*) FROM queue").await, 0);
}
