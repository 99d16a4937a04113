//! Setting up the devices a run needs, with the real client library: users created
//! through `relaisd admin`, devices enrolled with `Client::enroll`, groups made with
//! `create_group`. The load then runs on raw connections with each device's key, the
//! group's id (read from the creator's `state.db`) and its current epoch.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use ed25519_dalek::SigningKey;
use futures_util::{StreamExt as _, TryStreamExt as _, stream};
use relais_client::{Client, ClientError};
use sqlx::ConnectOptions as _;
use sqlx::sqlite::SqliteConnectOptions;

use crate::daemon::Daemon;
use crate::wire::Endpoint;

/// Enrollments done at once: each is CPU work for the client's KeyPackages, so more
/// than a few per core only queues.
const ENROLLMENTS_IN_PARALLEL: usize = 8;
/// Attempts at uploading a device's KeyPackages.
const ENROLLMENT_ATTEMPTS: u64 = 20;
/// Raw enrollments (no KeyPackages) done at once: a TLS handshake and one database write.
const RAW_ENROLLMENTS_IN_PARALLEL: usize = 32;

/// A device as the load drives it.
#[derive(Clone)]
pub struct Device {
    /// Its index in the run, written into the messages it sends.
    pub index: u32,
    pub key: SigningKey,
    /// The group it sends into (empty for a device that only receives).
    pub group_id: Vec<u8>,
    pub epoch: u64,
}

/// An enrolled client device on disk.
struct Home {
    user: String,
    dir: PathBuf,
}

/// Enrolls `count` client devices, one user each, named `PREFIX-NNNNN`.
async fn enroll_clients(
    daemon: &Daemon,
    root: &Path,
    prefix: &str,
    count: usize,
) -> anyhow::Result<Vec<Home>> {
    let server = daemon.server_url()?;
    let retried = &AtomicU64::new(0);
    let homes = stream::iter(0..count)
        .map(|i| {
            let server = server.clone();
            async move {
                let user = format!("{prefix}-{i:05}");
                let dir = root.join(&user);
                let code = daemon.add_user(&user).await?;
                match Client::enroll(&dir, &server, &daemon.ca, &user, &code).await {
                    Ok(mut client) => {
                        show_warnings(&mut client);
                        client.close().await;
                    }
                    // The relay refuses concurrent KeyPackage uploads now and then with a
                    // retryable STORAGE_UNAVAILABLE (see docs/perf/history.md). The device
                    // is enrolled by then: connecting again uploads its KeyPackages.
                    Err(ClientError::Server {
                        retryable: true, ..
                    }) if dir.join("device.key").exists() => {
                        retried.fetch_add(1, Ordering::Relaxed);
                        finish_enrollment(&dir)
                            .await
                            .with_context(|| format!("cannot finish enrolling {user}"))?;
                    }
                    Err(e) => return Err(anyhow!(e).context(format!("cannot enroll {user}"))),
                }
                anyhow::Ok(Home { user, dir })
            }
        })
        .buffered(ENROLLMENTS_IN_PARALLEL)
        .try_collect()
        .await?;
    let retried = retried.load(Ordering::Relaxed);
    if retried > 0 {
        eprintln!("  {retried} of {count} enrollments needed a retry of their KeyPackage upload");
    }
    Ok(homes)
}

/// Enrolls `count` client devices, one user each, named `PREFIX-NNNNN`; returns each
/// user and home, for scenarios that run the client itself (`follow`).
pub async fn users(
    daemon: &Daemon,
    root: &Path,
    prefix: &str,
    count: usize,
) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let homes = enroll_clients(daemon, root, prefix, count).await?;
    Ok(homes.into_iter().map(|h| (h.user, h.dir)).collect())
}

/// Connects an enrolled device until its KeyPackages are uploaded.
async fn finish_enrollment(dir: &Path) -> anyhow::Result<()> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut client = Client::open(dir).await?;
        let result = client.connect().await;
        show_warnings(&mut client);
        client.close().await;
        match result {
            Ok(()) => return Ok(()),
            Err(ClientError::Server {
                retryable: true, ..
            }) if attempt < ENROLLMENT_ATTEMPTS => {
                tokio::time::sleep(Duration::from_millis(20 * attempt)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// `pairs` 1:1 groups: devices 2i and 2i+1 share group `pair-i`, created by 2i.
pub async fn pairs(daemon: &Daemon, root: &Path, pairs: usize) -> anyhow::Result<Vec<Device>> {
    let homes = enroll_clients(daemon, root, "pair", 2 * pairs).await?;
    let mut devices = Vec::with_capacity(homes.len());
    for (i, pair) in homes.chunks_exact(2).enumerate() {
        let title = format!("pair-{i}");
        let (group_id, epoch) = create_group(&pair[0], &title, &[&pair[1].user]).await?;
        for home in pair {
            devices.push(Device {
                index: devices.len() as u32,
                key: device_key(&home.dir)?,
                group_id: group_id.clone(),
                epoch,
            });
        }
    }
    Ok(devices)
}

/// One group of `size` devices: the first created it (and sends), the others were added
/// in one commit. The members do not process their Welcome: the relay routes by its own
/// member list, and the load reads ciphertext it never decrypts.
pub async fn group(daemon: &Daemon, root: &Path, size: usize) -> anyhow::Result<Vec<Device>> {
    if size < 2 {
        bail!("a group needs at least 2 devices");
    }
    let homes = enroll_clients(daemon, root, "member", size).await?;
    let members: Vec<&str> = homes[1..].iter().map(|h| h.user.as_str()).collect();
    let (group_id, epoch) = create_group(&homes[0], "fanout", &members).await?;
    homes
        .iter()
        .enumerate()
        .map(|(i, home)| {
            Ok(Device {
                index: i as u32,
                key: device_key(&home.dir)?,
                group_id: group_id.clone(),
                epoch,
            })
        })
        .collect()
}

/// Creates a group with the real client; returns its id and epoch.
async fn create_group(
    creator: &Home,
    title: &str,
    members: &[&str],
) -> anyhow::Result<(Vec<u8>, u64)> {
    let mut client = Client::open(&creator.dir).await?;
    client.connect().await?;
    client
        .create_group(title, members)
        .await
        .with_context(|| format!("cannot create group {title}"))?;
    let epoch = client.conversation_epoch(title).await?;
    show_warnings(&mut client);
    client.close().await;
    Ok((group_id(&creator.dir, title).await?, epoch))
}

/// Shows what the client library noticed on a device without failing, as the `relais`
/// CLI does.
fn show_warnings(client: &mut Client) {
    for warning in client.take_warnings() {
        eprintln!("  warning: {}: {warning}", client.user());
    }
}

/// The client library does not expose group ids: read it from the client's database.
async fn group_id(home: &Path, title: &str) -> anyhow::Result<Vec<u8>> {
    let path = home.join("state.db");
    let mut db = SqliteConnectOptions::new()
        .filename(&path)
        .read_only(true)
        .connect()
        .await
        .with_context(|| format!("cannot open {}", path.display()))?;
    let id: Option<Vec<u8>> =
        sqlx::query_scalar("SELECT group_id FROM conversations WHERE title = ?")
            .bind(title)
            .fetch_optional(&mut db)
            .await?;
    id.ok_or_else(|| anyhow!("no conversation {title:?} in {}", path.display()))
}

/// The device key the client library wrote: 32 raw bytes.
fn device_key(home: &Path) -> anyhow::Result<SigningKey> {
    let path = home.join("device.key");
    let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let key: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| anyhow!("{} is not 32 bytes", path.display()))?;
    Ok(SigningKey::from_bytes(&key))
}

/// Enrolls `count` devices without MLS state (for connections that only sit idle): a
/// user each, a fresh key, and Enroll on a raw connection from `source(i)`.
pub async fn raw_devices(
    daemon: &Daemon,
    endpoint: &Endpoint,
    count: usize,
    source: impl Fn(usize) -> Option<IpAddr>,
) -> anyhow::Result<Vec<SigningKey>> {
    let source = &source;
    stream::iter(0..count)
        .map(|i| async move {
            let user = format!("idle-{i:06}");
            let code = daemon.add_user(&user).await?;
            let key = SigningKey::generate(&mut rand::rngs::OsRng);
            let socket = endpoint
                .open(source(i))
                .await?
                .enroll(&user, &code, &key)
                .await
                .with_context(|| format!("cannot enroll {user}"))?;
            drop(socket);
            anyhow::Ok(key)
        })
        .buffered(RAW_ENROLLMENTS_IN_PARALLEL)
        .try_collect()
        .await
}
