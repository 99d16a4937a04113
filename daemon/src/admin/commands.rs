//! What each administrative command does. Answers are JSON values; the CLI formats them.

use std::path::Path;

use relais_core::{Refusal, RevokedBy};
use serde_json::{Value, json};

use super::{Admin, AdminRequest, backup};
use crate::directory;
use relais_store::{AccountState, ChainStatus, Device, StoreError};

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
        | AdminRequest::CodeIssue { user, .. }
        | AdminRequest::CodeCancel { user, .. }
        | AdminRequest::DeviceList { user } => user.clone(),
        AdminRequest::DeviceShow { user, device } | AdminRequest::DeviceRevoke { user, device } => {
            format!("{user}/{device}")
        }
        AdminRequest::Backup { path } => path.clone(),
        _ => String::new(),
    }
}

/// Carries out one request; the error is the message the operator reads.
pub async fn run(admin: &Admin, request: AdminRequest) -> Result<Value, String> {
    let now = crate::now_ms();
    match request {
        AdminRequest::UserAdd {
            user,
            expires_at_ms,
            ..
        } => user_add(admin, &user, expires_at_ms, now).await,
        AdminRequest::UserList { filter, state } => {
            user_list(admin, filter.as_deref(), state.as_deref(), now).await
        }
        AdminRequest::UserShow { user } => user_show(admin, &user, now).await,
        AdminRequest::UserSuspend { user } => user_suspend(admin, &user, now).await,
        AdminRequest::UserResume { user } => user_resume(admin, &user).await,
        AdminRequest::UserExpire { user, at_ms } => user_expire(admin, &user, at_ms).await,
        AdminRequest::UserDelete { user } => user_delete(admin, &user, now).await,
        AdminRequest::CodeIssue { user, .. } => code_issue(admin, &user, now).await,
        AdminRequest::CodeList { user } => code_list(admin, user.as_deref(), now).await,
        AdminRequest::CodeCancel { user, id } => code_cancel(admin, &user, id).await,
        AdminRequest::DeviceList { user } => device_list(admin, &user).await,
        AdminRequest::DeviceShow { user, device } => device_show(admin, &user, &device).await,
        AdminRequest::DeviceRevoke { user, device } => {
            device_revoke(admin, &user, &device, now).await
        }
        AdminRequest::Status => status(admin, now).await,
        AdminRequest::RetentionShow => retention_show(admin).await,
        AdminRequest::RetentionPurge => retention_purge(admin).await,
        AdminRequest::AuditExport {
            since_ms,
            after_id,
            limit,
        } => audit_export(admin, since_ms, after_id, limit).await,
        AdminRequest::AuditVerify { expect } => audit_verify(admin, expect.as_deref()).await,
        AdminRequest::Backup { path } => backup::backup(admin, Path::new(&path)).await,
    }
}

/// Creates a user and its first enrollment code.
async fn user_add(
    admin: &Admin,
    user: &str,
    expires_at_ms: Option<i64>,
    now: i64,
) -> Result<Value, String> {
    let store = &admin.services.store;
    let user = user_name(admin, user)?;
    let (code, hash, expires) = new_code(admin, now);
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

/// Users whose name contains `filter`, in `state` (all but deleted ones by default).
async fn user_list(
    admin: &Admin,
    filter: Option<&str>,
    state: Option<&str>,
    now: i64,
) -> Result<Value, String> {
    let warning_ms = expiry_warning_ms(admin);
    let users = admin
        .services
        .store
        .list_users(now)
        .await
        .map_err(storage)?;
    let mut out = Vec::new();
    for u in users {
        let status = account_status(&u.account, now, warning_ms);
        let wanted = match state {
            None => status != "deleted",
            Some("all") => true,
            Some(s) => s == status,
        };
        if !wanted || filter.is_some_and(|f| !u.name.contains(f)) {
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

async fn user_show(admin: &Admin, user: &str, now: i64) -> Result<Value, String> {
    let store = &admin.services.store;
    let user = user_name(admin, user)?;
    let warning_ms = expiry_warning_ms(admin);
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

async fn user_suspend(admin: &Admin, user: &str, now: i64) -> Result<Value, String> {
    let store = &admin.services.store;
    let user = user_name(admin, user)?;
    if !store
        .set_suspended(&user, Some(now))
        .await
        .map_err(storage)?
    {
        return Err(no_user(&user));
    }
    // Connections close at once; messages keep queueing for when the account resumes.
    for device in store.list_devices(&user).await.map_err(storage)? {
        admin
            .services
            .hub
            .disconnect(device.id, Refusal::AccountSuspended.to_wire());
    }
    Ok(json!({ "user": user, "suspended_at_ms": now }))
}

async fn user_resume(admin: &Admin, user: &str) -> Result<Value, String> {
    let user = user_name(admin, user)?;
    if !admin
        .services
        .store
        .set_suspended(&user, None)
        .await
        .map_err(storage)?
    {
        return Err(no_user(&user));
    }
    Ok(json!({ "user": user }))
}

async fn user_expire(admin: &Admin, user: &str, at_ms: Option<i64>) -> Result<Value, String> {
    let store = &admin.services.store;
    let user = user_name(admin, user)?;
    if !store.set_expiry(&user, at_ms).await.map_err(storage)? {
        return Err(no_user(&user));
    }
    // Live connections read the account again: one past its expiry closes now, the
    // others close when it comes.
    for device in store.list_devices(&user).await.map_err(storage)? {
        admin.services.hub.account_changed(device.id);
    }
    Ok(json!({ "user": user, "expires_at_ms": at_ms }))
}

async fn user_delete(admin: &Admin, user: &str, now: i64) -> Result<Value, String> {
    let user = user_name(admin, user)?;
    let devices = admin
        .services
        .store
        .delete_user(&user, now)
        .await
        .map_err(storage)?
        .ok_or_else(|| no_user(&user))?;
    for device in &devices {
        admin
            .services
            .cut_off(device, RevokedBy::AccountDeleted)
            .await
            .map_err(storage)?;
    }
    Ok(json!({ "user": user, "revoked_devices": devices.len() }))
}

/// A new enrollment code for another device of an existing user.
async fn code_issue(admin: &Admin, user: &str, now: i64) -> Result<Value, String> {
    let user = user_name(admin, user)?;
    let (code, hash, expires) = new_code(admin, now);
    if !admin
        .services
        .store
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

async fn code_list(admin: &Admin, user: Option<&str>, now: i64) -> Result<Value, String> {
    let user = user.map(|u| user_name(admin, u)).transpose()?;
    let codes = admin
        .services
        .store
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

async fn code_cancel(admin: &Admin, user: &str, id: i64) -> Result<Value, String> {
    let user = user_name(admin, user)?;
    if !admin
        .services
        .store
        .cancel_code(&user, id)
        .await
        .map_err(storage)?
    {
        return Err(format!(
            "{user} has no pending code {id}; list them with `relaisd admin code list {user}`"
        ));
    }
    Ok(json!({ "user": user, "id": id }))
}

async fn device_list(admin: &Admin, user: &str) -> Result<Value, String> {
    let store = &admin.services.store;
    let user = user_name(admin, user)?;
    if !store.user_exists(&user).await.map_err(storage)? {
        return Err(no_user(&user));
    }
    let devices = store.list_devices(&user).await.map_err(storage)?;
    Ok(Value::Array(devices.iter().map(device_json).collect()))
}

/// One device, with what the relay holds for it and whether it is connected.
async fn device_show(admin: &Admin, user: &str, device: &str) -> Result<Value, String> {
    let store = &admin.services.store;
    let user = user_name(admin, user)?;
    let found = find_device(admin, &user, device).await?;
    let (key_packages, last_resort) = store.key_package_status(found.id).await.map_err(storage)?;
    let queued = store.queue_len(found.id).await.map_err(storage)?;
    let groups = store.groups_of(found.id).await.map_err(storage)?.len();
    let mut value = device_json(&found);
    value["user"] = json!(user);
    value["key_packages"] = json!(key_packages);
    value["last_resort_key_package"] = json!(last_resort);
    value["queued"] = json!(queued);
    value["groups"] = json!(groups);
    value["online"] = json!(admin.services.hub.is_online(found.id));
    Ok(value)
}

/// Revokes a device and cuts it off, as a sibling's revocation does (`Services::cut_off`).
async fn device_revoke(admin: &Admin, user: &str, device: &str, now: i64) -> Result<Value, String> {
    let user = user_name(admin, user)?;
    let revoked = admin
        .services
        .store
        .revoke_device(&user, &device.to_ascii_lowercase(), now)
        .await
        .map_err(storage)?
        .ok_or_else(|| {
            format!(
                "no device {device} for {user}; list them with `relaisd admin device list {user}`"
            )
        })?;
    admin
        .services
        .cut_off(&revoked, RevokedBy::Administrator)
        .await
        .map_err(storage)?;
    Ok(
        json!({ "user": user, "device": revoked.fingerprint, "revoked_at_ms": revoked.revoked_at_ms }),
    )
}

/// The relay's state, and what an enrollment link needs of it: the address clients reach it
/// at and the pin of the chain it serves (`relaisd admin user add --link` asks first). The
/// pin is the one taken when the chain was loaded for TLS, never read from a file now: the
/// sandbox may hide the file (sealed keys), and the chain served is what clients check.
async fn status(admin: &Admin, now: i64) -> Result<Value, String> {
    let (queued, oldest) = admin.services.store.queue_stats().await.map_err(storage)?;
    let pin = admin.health.chain_pin();
    Ok(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "domain": admin.config.domain,
        "uptime_seconds": admin.health.uptime().as_secs(),
        "storage_backend": admin.services.store.backend().name(),
        "durability": format!("{:?}", admin.config.storage.durability).to_lowercase(),
        "connected_devices": admin.services.hub.online(),
        "queued_deliveries": queued,
        "oldest_queued_age_seconds": oldest.map(|at| (now - at).max(0) / 1000),
        "key_provider": admin.key_provider,
        "retention_days": admin.config.retention.days,
        "public_address": admin.config.server.public_address,
        "ca_pin": pin.map(|p| p.to_string()),
        "ca_pin_is_leaf": pin.map(|p| p.is_leaf),
    }))
}

async fn retention_show(admin: &Admin) -> Result<Value, String> {
    let (queued, oldest) = admin.services.store.queue_stats().await.map_err(storage)?;
    Ok(
        json!({ "retention_days": admin.config.retention.days, "queued_deliveries": queued,
        "oldest_queued_at_ms": oldest }),
    )
}

async fn retention_purge(admin: &Admin) -> Result<Value, String> {
    let expired = admin
        .services
        .expire(admin.config.retention.days)
        .await
        .map_err(storage)?;
    Ok(json!({ "expired_messages": expired, "retention_days": admin.config.retention.days }))
}

/// One page of the audit log, at most `AUDIT_PAGE_MAX` entries after `after_id`.
async fn audit_export(
    admin: &Admin,
    since_ms: i64,
    after_id: i64,
    limit: i64,
) -> Result<Value, String> {
    let entries = admin
        .services
        .store
        .audit_entries(since_ms, after_id, limit.clamp(1, AUDIT_PAGE_MAX))
        .await
        .map_err(storage)?;
    serde_json::to_value(entries).map_err(|e| e.to_string())
}

/// Checks the audit chain under the server's key, and that it still reaches `expect`.
async fn audit_verify(admin: &Admin, expect: Option<&str>) -> Result<Value, String> {
    let key = admin.accounts.audit_key();
    let status = admin
        .services
        .store
        .verify_audit(&key, expect)
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

/// `name` or `name@domain` as the directory stores it, or why it cannot be a user here.
fn user_name(admin: &Admin, user: &str) -> Result<String, String> {
    admin.accounts.user_name(user)
}

/// How long before its expiry an account shows as `expiring`.
fn expiry_warning_ms(admin: &Admin) -> i64 {
    i64::from(admin.config.users.expiry_warning_days) * 86_400_000
}

async fn find_device(admin: &Admin, user: &str, device: &str) -> Result<Device, String> {
    admin
        .services
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
fn new_code(admin: &Admin, now: i64) -> (String, Vec<u8>, i64) {
    let code = directory::generate_code();
    let hash = admin.accounts.code_hash(&code);
    let ttl_ms = i64::try_from(
        admin
            .config
            .enrollment
            .code_ttl_seconds
            .saturating_mul(1000),
    )
    .unwrap_or(i64::MAX / 2);
    (code, hash, now.saturating_add(ttl_ms))
}
