//! The administration socket: a Unix socket, no network surface, one JSON request per
//! line and one JSON response per line. The peer's credentials are checked on every
//! connection: only root and the daemon's own user may administer.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use relais_protocol::pb;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::directory;
use crate::server::Shared;

/// Longest request line accepted; requests are a few names.
const REQUEST_BYTES_MAX: usize = 64 * 1024;
/// Time a client has to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// One administrative request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case", deny_unknown_fields)]
pub enum AdminRequest {
    /// Creates a user and issues its first enrollment code.
    UserAdd { user: String },
    /// Lists users.
    UserList,
    /// Issues an enrollment code for another device of an existing user.
    CodeIssue { user: String },
    /// Lists a user's devices.
    DeviceList { user: String },
    /// Revokes a device: closes its connections, stops delivery to it.
    DeviceRevoke { user: String, device: String },
    /// Reports the daemon's state.
    Status,
}

/// The answer to a request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdminResponse {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default)]
    pub result: Value,
}

/// Binds the admin socket with the configured mode, replacing a stale socket file.
pub fn bind(path: &Path, mode: u32) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    if path.exists() {
        // A live daemon would still answer; a stale file is left by a crash.
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("{} is in use by a running relaisd", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(listener)
}

pub async fn serve(listener: UnixListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_one(stream, &shared).await {
                tracing::debug!(error = %e, "admin connection ended with an error");
            }
        });
    }
}

async fn serve_one(stream: UnixStream, shared: &Shared) -> std::io::Result<()> {
    let peer = stream.peer_cred()?;
    let own_uid = nix::unistd::geteuid().as_raw();
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read.take(REQUEST_BYTES_MAX as u64));
    let mut line = String::new();
    let response = if peer.uid() != 0 && peer.uid() != own_uid {
        tracing::warn!(uid = peer.uid(), "admin access refused");
        refuse(format!(
            "uid {} may not administer relaisd; run as root or as the daemon's user",
            peer.uid()
        ))
    } else {
        match tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(&mut line)).await {
            Ok(Ok(_)) => match serde_json::from_str::<AdminRequest>(line.trim()) {
                Ok(request) => {
                    let name = command_name(&request);
                    let response = execute(shared, request).await;
                    tracing::info!(
                        uid = peer.uid(),
                        command = name,
                        ok = response.ok,
                        "admin command"
                    );
                    response
                }
                Err(e) => refuse(format!("malformed admin request: {e}")),
            },
            _ => refuse("no admin request received".into()),
        }
    };
    let mut out = serde_json::to_vec(&response).unwrap_or_default();
    out.push(b'\n');
    write.write_all(&out).await?;
    write.shutdown().await
}

fn command_name(request: &AdminRequest) -> &'static str {
    match request {
        AdminRequest::UserAdd { .. } => "user_add",
        AdminRequest::UserList => "user_list",
        AdminRequest::CodeIssue { .. } => "code_issue",
        AdminRequest::DeviceList { .. } => "device_list",
        AdminRequest::DeviceRevoke { .. } => "device_revoke",
        AdminRequest::Status => "status",
    }
}

fn refuse(error: String) -> AdminResponse {
    AdminResponse {
        ok: false,
        error: Some(error),
        result: Value::Null,
    }
}

fn done(result: Value) -> AdminResponse {
    AdminResponse {
        ok: true,
        error: None,
        result,
    }
}

async fn execute(shared: &Shared, request: AdminRequest) -> AdminResponse {
    match run_command(shared, request).await {
        Ok(result) => done(result),
        Err(error) => refuse(error),
    }
}

async fn run_command(shared: &Shared, request: AdminRequest) -> Result<Value, String> {
    let domain = &shared.config.domain;
    let store = &shared.store;
    let storage = |e: crate::store::StoreError| format!("storage error: {e}");
    let now = crate::now_ms();
    match request {
        AdminRequest::UserAdd { user } => {
            let user = directory::canonical_user(&user, domain)?;
            let (code, hash, expires) = new_code(shared, now);
            if !store
                .add_user(&user, &hash, now, expires)
                .await
                .map_err(storage)?
            {
                return Err(format!(
                    "user {user} already exists; issue a code for a new device with `relaisd admin code issue {user}`"
                ));
            }
            Ok(json!({ "user": user, "code": code, "expires_at_ms": expires }))
        }
        AdminRequest::CodeIssue { user } => {
            let user = directory::canonical_user(&user, domain)?;
            let (code, hash, expires) = new_code(shared, now);
            if !store
                .issue_code(&user, &hash, now, expires)
                .await
                .map_err(storage)?
            {
                return Err(format!(
                    "no user {user}; create it with `relaisd admin user add {user}`"
                ));
            }
            Ok(json!({ "user": user, "code": code, "expires_at_ms": expires }))
        }
        AdminRequest::UserList => {
            let users = store.list_users(now).await.map_err(storage)?;
            Ok(Value::Array(
                users
                    .into_iter()
                    .map(|u| {
                        json!({ "user": u.name, "created_at_ms": u.created_at_ms,
                                "devices": u.devices, "pending_codes": u.pending_codes })
                    })
                    .collect(),
            ))
        }
        AdminRequest::DeviceList { user } => {
            let user = directory::canonical_user(&user, domain)?;
            if !store.user_exists(&user).await.map_err(storage)? {
                return Err(format!("no user {user}"));
            }
            let devices = store.list_devices(&user).await.map_err(storage)?;
            Ok(Value::Array(
                devices
                    .into_iter()
                    .map(|d| {
                        json!({ "device": d.fingerprint, "enrolled_at_ms": d.enrolled_at_ms,
                                "last_seen_at_ms": d.last_seen_at_ms, "revoked_at_ms": d.revoked_at_ms })
                    })
                    .collect(),
            ))
        }
        AdminRequest::DeviceRevoke { user, device } => {
            let user = directory::canonical_user(&user, domain)?;
            let revoked = store
                .revoke_device(&user, &device.to_ascii_lowercase(), now)
                .await
                .map_err(storage)?
                .ok_or_else(|| format!("no device {device} for {user}; list them with `relaisd admin device list {user}`"))?;
            shared.hub.disconnect(
                revoked.id,
                relais_protocol::frame::error(
                    pb::ErrorCode::DeviceRevoked,
                    "this device was revoked by an administrator",
                    false,
                ),
            );
            let groups = store.groups_of(revoked.id).await.map_err(storage)?;
            store.forget_device(revoked.id).await.map_err(storage)?;
            // D2: the service proposes the removal; a member's next commit carries it out.
            for group in groups {
                if let Err(e) = shared.ds.propose_removals(&group, now).await {
                    tracing::warn!(error = %e, "cannot propose the removal of a revoked device");
                }
            }
            tracing::info!(user = %user, device = %revoked.fingerprint, "device revoked");
            Ok(
                json!({ "user": user, "device": revoked.fingerprint, "revoked_at_ms": revoked.revoked_at_ms }),
            )
        }
        AdminRequest::Status => Ok(json!({
            "version": env!("CARGO_PKG_VERSION"),
            "domain": domain,
            "uptime_seconds": shared.started.elapsed().as_secs(),
            "storage_backend": "sqlite",
            "connected_devices": shared.hub.online(),
        })),
    }
}

/// A fresh code, its stored hash, and its expiry.
fn new_code(shared: &Shared, now: i64) -> (String, Vec<u8>, i64) {
    let code = directory::generate_code();
    let hash = directory::hash_code(shared.keys.code_secret.as_ref(), &code);
    let ttl_ms = i64::try_from(
        shared
            .config
            .enrollment
            .code_ttl_seconds
            .saturating_mul(1000),
    )
    .unwrap_or(i64::MAX / 2);
    (code, hash, now.saturating_add(ttl_ms))
}

/// Sends one request to a running daemon's admin socket and returns its response.
pub async fn request(socket: &Path, request: &AdminRequest) -> std::io::Result<AdminResponse> {
    let stream = UnixStream::connect(socket).await?;
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_vec(request).map_err(std::io::Error::other)?;
    line.push(b'\n');
    write.write_all(&line).await?;
    let mut reader = BufReader::new(read);
    let mut answer = String::new();
    reader.read_line(&mut answer).await?;
    serde_json::from_str(&answer)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}
