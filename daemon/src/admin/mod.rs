//! The administration socket: a Unix socket, no network surface, one JSON request per
//! line and one JSON response per line.
//!
//! Every connection's peer credentials are checked: root and the daemon's own user are
//! administrators; other users get the role of their Unix groups (`admin.admin_groups`
//! may change things, `admin.reader_groups` may only list and show) or are refused.
//! Every request, refused ones included, is written to the audit log.
//!
//! This is the server side; the client, `relaisd admin`, is `cli/admin.rs`, which sends
//! the `AdminRequest` and reads the `AdminResponse` defined here.

mod backup;
mod commands;

pub use backup::checksum_path;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use relais_store::AuditEvent;

use crate::config::Config;
use crate::shared::{Accounts, Health, Services};

/// What the admin socket's commands reach.
pub struct Admin {
    /// The configuration, for what `status` and `retention` report and the accounts'
    /// rules (code lifetime, expiry warning, backup directory).
    pub config: Config,
    pub accounts: Arc<Accounts>,
    pub services: Arc<Services>,
    pub health: Arc<Health>,
    /// Where the keys come from, as `status` reports it.
    pub key_provider: String,
}

/// Longest request line accepted; requests are a few names.
const REQUEST_BYTES_MAX: usize = 64 * 1024;
/// Time a client has to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// One administrative request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case", deny_unknown_fields)]
pub enum AdminRequest {
    UserAdd {
        user: String,
        expires_at_ms: Option<i64>,
        /// The code goes out as an enrollment link (`--link`): the audit log says so.
        /// Written only when true, so that a plain request reads as it always did.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        link: bool,
    },
    UserList {
        filter: Option<String>,
        state: Option<String>,
    },
    UserShow {
        user: String,
    },
    UserSuspend {
        user: String,
    },
    UserResume {
        user: String,
    },
    UserDelete {
        user: String,
    },
    UserExpire {
        user: String,
        at_ms: Option<i64>,
    },
    CodeIssue {
        user: String,
        /// As for `UserAdd`.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        link: bool,
    },
    CodeList {
        user: Option<String>,
    },
    CodeCancel {
        user: String,
        id: i64,
    },
    DeviceList {
        user: String,
    },
    DeviceShow {
        user: String,
        device: String,
    },
    DeviceRevoke {
        user: String,
        device: String,
    },
    Status,
    RetentionShow,
    RetentionPurge,
    AuditExport {
        since_ms: i64,
        after_id: i64,
        limit: i64,
    },
    AuditVerify {
        /// A head printed by an earlier verify (`ENTRIES:MAC`), kept off the box: the chain
        /// must still reach it.
        #[serde(default)]
        expect: Option<String>,
    },
    Backup {
        path: String,
    },
}

impl AdminRequest {
    /// The command's name in the audit log and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            AdminRequest::UserAdd { .. } => "user_add",
            AdminRequest::UserList { .. } => "user_list",
            AdminRequest::UserShow { .. } => "user_show",
            AdminRequest::UserSuspend { .. } => "user_suspend",
            AdminRequest::UserResume { .. } => "user_resume",
            AdminRequest::UserDelete { .. } => "user_delete",
            AdminRequest::UserExpire { .. } => "user_expire",
            AdminRequest::CodeIssue { .. } => "code_issue",
            AdminRequest::CodeList { .. } => "code_list",
            AdminRequest::CodeCancel { .. } => "code_cancel",
            AdminRequest::DeviceList { .. } => "device_list",
            AdminRequest::DeviceShow { .. } => "device_show",
            AdminRequest::DeviceRevoke { .. } => "device_revoke",
            AdminRequest::Status => "status",
            AdminRequest::RetentionShow => "retention_show",
            AdminRequest::RetentionPurge => "retention_purge",
            AdminRequest::AuditExport { .. } => "audit_export",
            AdminRequest::AuditVerify { .. } => "audit_verify",
            AdminRequest::Backup { .. } => "backup",
        }
    }

    /// Whether the request only reads.
    pub fn read_only(&self) -> bool {
        matches!(
            self,
            AdminRequest::UserList { .. }
                | AdminRequest::UserShow { .. }
                | AdminRequest::CodeList { .. }
                | AdminRequest::DeviceList { .. }
                | AdminRequest::DeviceShow { .. }
                | AdminRequest::Status
                | AdminRequest::RetentionShow
                | AdminRequest::AuditExport { .. }
                | AdminRequest::AuditVerify { .. }
        )
    }

    /// Reads are not worth an audit entry each; the export itself is (it reveals history).
    fn audited(&self) -> bool {
        !self.read_only() || matches!(self, AdminRequest::AuditExport { after_id: 0, .. })
    }

    /// What the audit entry says of how the request was made: that a code went out as an
    /// enrollment link (never the code or the link, which hold the secret).
    fn audit_note(&self) -> Option<&'static str> {
        match self {
            AdminRequest::UserAdd { link: true, .. }
            | AdminRequest::CodeIssue { link: true, .. } => Some("as an enrollment link"),
            _ => None,
        }
    }
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

/// What a peer may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Admin,
    Reader,
}

/// The resolved access rules.
#[derive(Debug, Clone, Default)]
pub struct Access {
    admin_gids: Vec<u32>,
    reader_gids: Vec<u32>,
}

impl Access {
    /// Resolves group names or ids from the configuration.
    pub fn resolve(admin_groups: &[String], reader_groups: &[String]) -> Result<Access, String> {
        Ok(Access {
            admin_gids: admin_groups
                .iter()
                .map(|g| resolve_group(g))
                .collect::<Result<_, _>>()?,
            reader_gids: reader_groups
                .iter()
                .map(|g| resolve_group(g))
                .collect::<Result<_, _>>()?,
        })
    }

    /// The role of a peer process, from its uid and the groups it really holds.
    fn role(&self, uid: u32, groups: &[u32]) -> Option<Role> {
        if uid == 0 || uid == nix::unistd::geteuid().as_raw() {
            return Some(Role::Admin);
        }
        if groups.iter().any(|g| self.admin_gids.contains(g)) {
            Some(Role::Admin)
        } else if groups.iter().any(|g| self.reader_gids.contains(g)) {
            Some(Role::Reader)
        } else {
            None
        }
    }
}

/// A group name or numeric id.
pub fn resolve_group(group: &str) -> Result<u32, String> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(gid);
    }
    match nix::unistd::Group::from_name(group) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        _ => Err(format!(
            "unknown group {group:?}; create it or give its numeric id"
        )),
    }
}

/// A user name or numeric id.
pub fn resolve_user(user: &str) -> Result<u32, String> {
    if let Ok(uid) = user.parse::<u32>() {
        return Ok(uid);
    }
    match nix::unistd::User::from_name(user) {
        Ok(Some(u)) => Ok(u.uid.as_raw()),
        _ => Err(format!(
            "unknown user {user:?}; create it or give its numeric id"
        )),
    }
}

/// The primary and supplementary groups the peer held when it connected, from the kernel
/// (`SO_PEERGROUPS`, Linux 4.13): unlike `/proc/PID/status`, this needs no file access,
/// so it works under `ProtectProc=` and the daemon's own filesystem sandbox, and cannot
/// race with the peer changing its groups or exiting.
fn peer_groups(stream: &UnixStream, primary: u32) -> std::io::Result<Vec<u32>> {
    use std::os::fd::AsRawFd;
    // Far more than NGROUPS_MAX (65536) ids would never fit; the kernel says how many
    // there are when the buffer is too small, and one retry with that size suffices.
    let mut groups = vec![0u32; 64];
    for _ in 0..2 {
        let mut bytes = libc::socklen_t::try_from(groups.len() * 4).unwrap_or(libc::socklen_t::MAX);
        // SAFETY: the buffer is valid for `bytes` bytes and outlives the call; the kernel
        // writes at most `bytes` bytes and stores the size it needs in `bytes`.
        #[allow(unsafe_code)]
        let result = unsafe {
            libc::getsockopt(
                stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut bytes,
            )
        };
        let count = bytes as usize / 4;
        if result == 0 {
            groups.truncate(count);
            groups.push(primary);
            return Ok(groups);
        }
        let error = std::io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::ERANGE) || count <= groups.len() {
            return Err(error);
        }
        groups.resize(count, 0);
    }
    Err(std::io::Error::other(
        "the peer's groups kept changing size",
    ))
}

/// Binds the admin socket with the configured mode and group, replacing a stale file.
/// It is bound before the daemon gives up root, so `owner` and `group` may be anyone.
pub fn bind(
    path: &Path,
    mode: u32,
    owner: Option<&str>,
    group: Option<&str>,
) -> std::io::Result<std::os::unix::net::UnixListener> {
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
    let listener = std::os::unix::net::UnixListener::bind(path)?;
    // The runtime adopts it later (`UnixListener::from_std`), which needs non-blocking mode.
    listener.set_nonblocking(true)?;
    if let Some(owner) = owner {
        let uid = resolve_user(owner).map_err(std::io::Error::other)?;
        nix::unistd::chown(path, Some(nix::unistd::Uid::from_raw(uid)), None).map_err(|e| {
            std::io::Error::other(format!("cannot give the admin socket to user {owner}: {e}"))
        })?;
    }
    if let Some(group) = group {
        let gid = resolve_group(group).map_err(std::io::Error::other)?;
        nix::unistd::chown(path, None, Some(nix::unistd::Gid::from_raw(gid))).map_err(|e| {
            std::io::Error::other(format!(
                "cannot give the admin socket to group {group}: {e}"
            ))
        })?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(listener)
}

pub async fn serve(listener: UnixListener, admin: Arc<Admin>, access: Access) {
    let access = Arc::new(access);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let (admin, access) = (admin.clone(), access.clone());
        tokio::spawn(async move {
            if let Err(e) = serve_one(stream, &admin, &access).await {
                tracing::debug!(error = %e, "admin connection ended with an error");
            }
        });
    }
}

async fn serve_one(stream: UnixStream, admin: &Admin, access: &Access) -> std::io::Result<()> {
    let peer = stream.peer_cred()?;
    let actor = format!("uid:{}", peer.uid());
    let groups = peer_groups(&stream, peer.gid()).unwrap_or_else(|e| {
        tracing::warn!(error = %e, %actor, "cannot read the admin peer's groups; it gets no group role");
        Vec::new()
    });
    let role = access.role(peer.uid(), &groups);
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read.take(REQUEST_BYTES_MAX as u64));
    let mut line = String::new();
    let response = match tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(&mut line)).await {
        Ok(Ok(_)) => match serde_json::from_str::<AdminRequest>(line.trim()) {
            Ok(request) => authorize_and_run(admin, role, &actor, request).await,
            Err(e) => refuse(format!("malformed admin request: {e}")),
        },
        _ => refuse("no admin request received".into()),
    };
    let mut out = serde_json::to_vec(&response).unwrap_or_default();
    out.push(b'\n');
    write.write_all(&out).await?;
    write.shutdown().await
}

async fn authorize_and_run(
    admin: &Admin,
    role: Option<Role>,
    actor: &str,
    request: AdminRequest,
) -> AdminResponse {
    let name = request.name();
    let subject = commands::subject(&request);
    let denial = match role {
        None => Some(format!(
            "{actor} may not administer relaisd; run as root or as a member of admin.admin_groups or admin.reader_groups"
        )),
        Some(Role::Reader) if !request.read_only() => Some(format!(
            "{actor} is a read-only operator; `{name}` needs a member of admin.admin_groups"
        )),
        _ => None,
    };
    if let Some(reason) = denial {
        admin
            .accounts
            .audit(AuditEvent {
                actor,
                action: name,
                subject: &subject,
                outcome: "refused",
                detail: &reason,
            })
            .await;
        return refuse(reason);
    }
    let audited = request.audited();
    let note = request.audit_note();
    let response = match commands::run(admin, request).await {
        Ok(result) => AdminResponse {
            ok: true,
            error: None,
            result,
        },
        Err(error) => refuse(error),
    };
    if audited {
        let (outcome, detail) = match (&response.error, note) {
            (None, note) => ("ok", note.unwrap_or_default().to_owned()),
            (Some(e), None) => ("failed", e.clone()),
            (Some(e), Some(note)) => ("failed", format!("{note}: {e}")),
        };
        admin
            .accounts
            .audit(AuditEvent {
                actor,
                action: name,
                subject: &subject,
                outcome,
                detail: &detail,
            })
            .await;
    }
    response
}

fn refuse(error: String) -> AdminResponse {
    AdminResponse {
        ok: false,
        error: Some(error),
        result: Value::Null,
    }
}
