//! What each administrative command does. Answers are JSON values; the CLI formats them.

use std::path::Path;

use relais_core::{Refusal, RevokedBy};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::AdminRequest;
use crate::directory;
use crate::shared::Shared;
use relais_store::{AccountState, AuditKey, ChainStatus, Device, StoreError};

/// Entries one audit export request returns at most; the CLI pages through the rest.
const AUDIT_PAGE_MAX: i64 = 10_000;

/// The user or device a request is about, for the audit log.
pub fn subject(request: &AdminRequest) -> String {
    match request {
        AdminRequest::UserAdd { user, .. }
        | AdminRequest::UserShow { user }
        | AdminRequest::UserSuspend { user }
        | AdminRequest::UserResume { user }
        | AdminRequest::UserDelete { user }
        | AdminRequest::UserExpire { user, .. }
        | AdminRequest::CodeIssue { user }
        | AdminRequest::CodeCancel { user, .. }
        | AdminRequest::DeviceList { user } => user.clone(),
        AdminRequest::DeviceShow { user, device } | AdminRequest::DeviceRevoke { user, device } => {
            format!("{user}/{device}")
        }
        AdminRequest::Backup { path } => path.clone(),
        _ => String::new(),
    }
}

pub async fn run(shared: &Shared, request: AdminRequest) -> Result<Value, String> {
    let store = &shared.store;
    let now = crate::now_ms();
    let user_name =
        |user: &str| directory::canonical_user(user, &shared.config.domain, &shared.config.users);
    match request {
        AdminRequest::UserAdd {
            user,
            expires_at_ms,
        } => {
            let user = user_name(&user)?;
            let (code, hash, expires) = new_code(shared, now);
            if !store
                .add_user(&user, &hash, now, expires)
                .await
                .map_err(storage)?
            {
                return Err(format!(
                    "user {user} already exists or was deleted (names are never reused); \
                     for a new device of an existing user run `relaisd admin code issue {user}`"
                ));
            }
            if expires_at_ms.is_some() {
                store
                    .set_expiry(&user, expires_at_ms)
                    .await
                    .map_err(storage)?;
            }
            Ok(json!({ "user": user, "code": code, "expires_at_ms": expires }))
        }
        AdminRequest::UserList { filter, state } => {
            let warning_ms = i64::from(shared.config.users.expiry_warning_days) * 86_400_000;
            let users = store.list_users(now).await.map_err(storage)?;
            let mut out = Vec::new();
            for u in users {
                let status = account_status(&u.account, now, warning_ms);
                let wanted = match state.as_deref() {
                    None => status != "deleted",
                    Some("all") => true,
                    Some(s) => s == status,
                };
                if !wanted || filter.as_deref().is_some_and(|f| !u.name.contains(f)) {
                    continue;
                }
                out.push(
                    json!({ "user": u.name, "status": status, "created_at_ms": u.created_at_ms,
                    "expires_at_ms": u.account.expires_at_ms, "devices": u.devices,
                    "pending_codes": u.pending_codes }),
                );
            }
            Ok(Value::Array(out))
        }
        AdminRequest::UserShow { user } => {
            let user = user_name(&user)?;
            let warning_ms = i64::from(shared.config.users.expiry_warning_days) * 86_400_000;
            let summary = store
                .list_users(now)
                .await
                .map_err(storage)?
                .into_iter()
                .find(|u| u.name == user)
                .ok_or_else(|| no_user(&user))?;
            let devices = store.list_devices(&user).await.map_err(storage)?;
            Ok(
                json!({ "user": user, "status": account_status(&summary.account, now, warning_ms),
                "created_at_ms": summary.created_at_ms, "suspended_at_ms": summary.account.suspended_at_ms,
                "expires_at_ms": summary.account.expires_at_ms, "deleted_at_ms": summary.account.deleted_at_ms,
                "pending_codes": summary.pending_codes,
                "devices": devices.iter().map(device_json).collect::<Vec<_>>() }),
            )
        }
        AdminRequest::UserSuspend { user } => {
            let user = user_name(&user)?;
            if !store
                .set_suspended(&user, Some(now))
                .await
                .map_err(storage)?
            {
                return Err(no_user(&user));
            }
            // Connections close at once; messages keep queueing for when the account resumes.
            for device in store.list_devices(&user).await.map_err(storage)? {
                shared
                    .hub
                    .disconnect(device.id, Refusal::AccountSuspended.to_wire());
            }
            Ok(json!({ "user": user, "suspended_at_ms": now }))
        }
        AdminRequest::UserResume { user } => {
            let user = user_name(&user)?;
            if !store.set_suspended(&user, None).await.map_err(storage)? {
                return Err(no_user(&user));
            }
            Ok(json!({ "user": user }))
        }
        AdminRequest::UserExpire { user, at_ms } => {
            let user = user_name(&user)?;
            if !store.set_expiry(&user, at_ms).await.map_err(storage)? {
                return Err(no_user(&user));
            }
            // Live connections read the account again: one past its expiry closes now, the
            // others close when it comes.
            for device in store.list_devices(&user).await.map_err(storage)? {
                shared.hub.account_changed(device.id);
            }
            Ok(json!({ "user": user, "expires_at_ms": at_ms }))
        }
        AdminRequest::UserDelete { user } => {
            let user = user_name(&user)?;
            let devices = store
                .delete_user(&user, now)
                .await
                .map_err(storage)?
                .ok_or_else(|| no_user(&user))?;
            for device in &devices {
                shared
                    .cut_off(device, RevokedBy::AccountDeleted)
                    .await
                    .map_err(storage)?;
            }
            Ok(json!({ "user": user, "revoked_devices": devices.len() }))
        }
        AdminRequest::CodeIssue { user } => {
            let user = user_name(&user)?;
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
        AdminRequest::CodeList { user } => {
            let user = user.as_deref().map(user_name).transpose()?;
            let codes = store
                .pending_codes(user.as_deref(), now)
                .await
                .map_err(storage)?;
            Ok(Value::Array(
                codes
                    .into_iter()
                    .map(|c| json!({ "id": c.id, "user": c.user, "created_at_ms": c.created_at_ms, "expires_at_ms": c.expires_at_ms }))
                    .collect(),
            ))
        }
        AdminRequest::CodeCancel { user, id } => {
            let user = user_name(&user)?;
            if !store.cancel_code(&user, id).await.map_err(storage)? {
                return Err(format!(
                    "{user} has no pending code {id}; list them with `relaisd admin code list {user}`"
                ));
            }
            Ok(json!({ "user": user, "id": id }))
        }
        AdminRequest::DeviceList { user } => {
            let user = user_name(&user)?;
            if !store.user_exists(&user).await.map_err(storage)? {
                return Err(no_user(&user));
            }
            let devices = store.list_devices(&user).await.map_err(storage)?;
            Ok(Value::Array(devices.iter().map(device_json).collect()))
        }
        AdminRequest::DeviceShow { user, device } => {
            let user = user_name(&user)?;
            let found = find_device(shared, &user, &device).await?;
            let (key_packages, last_resort) =
                store.key_package_status(found.id).await.map_err(storage)?;
            let queued = store.queue_len(found.id).await.map_err(storage)?;
            let groups = store.groups_of(found.id).await.map_err(storage)?.len();
            let mut value = device_json(&found);
            value["user"] = json!(user);
            value["key_packages"] = json!(key_packages);
            value["last_resort_key_package"] = json!(last_resort);
            value["queued"] = json!(queued);
            value["groups"] = json!(groups);
            value["online"] = json!(shared.hub.is_online(found.id));
            Ok(value)
        }
        AdminRequest::DeviceRevoke { user, device } => {
            let user = user_name(&user)?;
            let revoked = store
                .revoke_device(&user, &device.to_ascii_lowercase(), now)
                .await
                .map_err(storage)?
                .ok_or_else(|| format!("no device {device} for {user}; list them with `relaisd admin device list {user}`"))?;
            shared
                .cut_off(&revoked, RevokedBy::Administrator)
                .await
                .map_err(storage)?;
            Ok(
                json!({ "user": user, "device": revoked.fingerprint, "revoked_at_ms": revoked.revoked_at_ms }),
            )
        }
        AdminRequest::Status => {
            let (queued, oldest) = store.queue_stats().await.map_err(storage)?;
            Ok(json!({
                "version": env!("CARGO_PKG_VERSION"),
                "domain": shared.config.domain,
                "uptime_seconds": shared.started.elapsed().as_secs(),
                "storage_backend": shared.store.backend().name(),
                "durability": format!("{:?}", shared.config.storage.durability).to_lowercase(),
                "connected_devices": shared.hub.online(),
                "queued_deliveries": queued,
                "oldest_queued_age_seconds": oldest.map(|at| (now - at).max(0) / 1000),
                "key_provider": shared.key_source.describe(),
                "retention_days": shared.config.retention.days,
            }))
        }
        AdminRequest::RetentionShow => {
            let (queued, oldest) = store.queue_stats().await.map_err(storage)?;
            Ok(
                json!({ "retention_days": shared.config.retention.days, "queued_deliveries": queued,
                "oldest_queued_at_ms": oldest }),
            )
        }
        AdminRequest::RetentionPurge => {
            let expired = shared.expire_now().await.map_err(storage)?;
            Ok(
                json!({ "expired_messages": expired, "retention_days": shared.config.retention.days }),
            )
        }
        AdminRequest::AuditExport {
            since_ms,
            after_id,
            limit,
        } => {
            let entries = store
                .audit_entries(since_ms, after_id, limit.clamp(1, AUDIT_PAGE_MAX))
                .await
                .map_err(storage)?;
            serde_json::to_value(entries).map_err(|e| e.to_string())
        }
        AdminRequest::AuditVerify { expect } => {
            let key = AuditKey::derive(shared.keys.code_secret.as_ref());
            let status = store
                .verify_audit(&key, expect.as_deref())
                .await
                .map_err(storage)?;
            Ok(match status {
                ChainStatus::Intact { head } => json!({ "intact": true,
                    "entries": head.entries, "head": head.exported() }),
                ChainStatus::BrokenAt { id } => json!({ "intact": false,
                    "problem": "broken", "first_broken_id": id }),
                ChainStatus::Truncated { recorded, found } => json!({ "intact": false,
                    "problem": "truncated", "recorded_entries": recorded, "entries": found }),
                ChainStatus::HeadTampered => json!({ "intact": false, "problem": "head" }),
                ChainStatus::Behind { expected } => json!({ "intact": false,
                    "problem": "behind", "expected_head": expected }),
            })
        }
        AdminRequest::Backup { path } => backup(shared, Path::new(&path)).await,
    }
}

/// Writes an online backup with `VACUUM INTO`, then its SHA-256 beside it.
async fn backup(shared: &Shared, path: &Path) -> Result<Value, String> {
    if !path.is_absolute() {
        return Err("the backup path must be absolute".into());
    }
    if path.exists() {
        return Err(format!(
            "{} exists; choose a new file name (backups never overwrite)",
            path.display()
        ));
    }
    shared.store.backup_to(path).await.map_err(|e| {
        // The filesystem sandbox lets the daemon write only in its data directory and in
        // backup.directory: say so, since the error itself is only "permission denied".
        let allowed = shared.config.backup.directory.as_ref().map_or_else(
            || "backup.directory is unset: set it to the directory backups go to".to_owned(),
            |d| format!("it must be inside backup.directory ({})", d.display()),
        );
        format!("backup failed: {e}; {allowed}, and the daemon's user must be able to write there")
    })?;
    // The backup holds metadata and ciphertext: as private as the database itself.
    set_private(path)?;
    let bytes = tokio::fs::read(path)
        .await
        .map_err(|e| format!("cannot read back {}: {e}", path.display()))?;
    let digest = hex::encode(Sha256::digest(&bytes));
    let sum_path = checksum_path(path);
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    tokio::fs::write(&sum_path, format!("{digest}  {file_name}\n"))
        .await
        .map_err(|e| format!("cannot write {}: {e}", sum_path.display()))?;
    set_private(&sum_path)?;
    Ok(json!({ "path": path, "bytes": bytes.len(), "sha256": digest, "checksum_file": sum_path }))
}

fn set_private(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("cannot restrict {}: {e}", path.display()))
}

/// `FILE.sha256`, in the format `sha256sum -c` reads.
pub fn checksum_path(path: &Path) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".sha256");
    name.into()
}

async fn find_device(shared: &Shared, user: &str, device: &str) -> Result<Device, String> {
    shared
        .store
        .list_devices(user)
        .await
        .map_err(storage)?
        .into_iter()
        .find(|d| d.fingerprint == device.to_ascii_lowercase())
        .ok_or_else(|| {
            format!(
                "no device {device} for {user}; list them with `relaisd admin device list {user}`"
            )
        })
}

fn account_status(account: &AccountState, now: i64, warning_ms: i64) -> &'static str {
    if account.deleted_at_ms.is_some() {
        "deleted"
    } else if account.suspended_at_ms.is_some() {
        "suspended"
    } else if account.expires_at_ms.is_some_and(|at| at <= now) {
        "expired"
    } else if account
        .expires_at_ms
        .is_some_and(|at| at - now <= warning_ms)
    {
        "expiring"
    } else {
        "active"
    }
}

fn device_json(d: &Device) -> Value {
    json!({ "device": d.fingerprint, "enrolled_at_ms": d.enrolled_at_ms,
        "last_seen_at_ms": d.last_seen_at_ms, "revoked_at_ms": d.revoked_at_ms })
}

fn no_user(user: &str) -> String {
    format!("no user {user}; list users with `relaisd admin user list`")
}

fn storage(e: StoreError) -> String {
    format!("storage error: {e}")
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
