//! Accounts, enrollment codes and devices.

use sqlx::Row;

use crate::{DeviceId, Store, StoreError, notify};

/// An enrolled device.
#[derive(Debug, Clone)]
pub struct Device {
    pub id: DeviceId,
    pub user: String,
    pub public_key: Vec<u8>,
    pub fingerprint: String,
    pub enrolled_at_ms: i64,
    pub last_seen_at_ms: Option<i64>,
    pub revoked_at_ms: Option<i64>,
    /// The account's state, read with the device.
    pub account: AccountState,
}

/// An account's life-cycle fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountState {
    pub suspended_at_ms: Option<i64>,
    pub expires_at_ms: Option<i64>,
    pub deleted_at_ms: Option<i64>,
}

impl AccountState {
    /// Whether the account may use the service at `now_ms`.
    pub fn active(&self, now_ms: i64) -> bool {
        self.suspended_at_ms.is_none()
            && self.deleted_at_ms.is_none()
            && self.expires_at_ms.is_none_or(|at| at > now_ms)
    }
}

/// A user as listed to operators.
#[derive(Debug, Clone)]
pub struct UserSummary {
    pub name: String,
    pub created_at_ms: i64,
    pub devices: i64,
    pub pending_codes: i64,
    pub account: AccountState,
}

/// A pending enrollment code, without the code itself (only its hash is stored).
#[derive(Debug, Clone)]
pub struct PendingCode {
    pub id: i64,
    pub user: String,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
}

/// A KeyPackage taken from the directory.
#[derive(Debug, Clone)]
pub struct ClaimedKeyPackage {
    pub user: String,
    pub fingerprint: String,
    pub data: Vec<u8>,
}

/// Why an enrollment was refused.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error("the enrollment code is wrong, used, expired or for another user")]
    InvalidCode,
    #[error("this device key is already enrolled")]
    KeyInUse,
    #[error(transparent)]
    Store(#[from] StoreError),
}

const DEVICE_COLUMNS: &str = "d.id, u.name, d.public_key, d.fingerprint, d.enrolled_at, \
    d.last_seen_at, d.revoked_at, u.suspended_at, u.expires_at, u.deleted_at";

fn device_from_row(r: &sqlx::any::AnyRow) -> Device {
    Device {
        id: DeviceId(r.get(0)),
        user: r.get(1),
        public_key: r.get(2),
        fingerprint: r.get(3),
        enrolled_at_ms: r.get(4),
        last_seen_at_ms: r.get(5),
        revoked_at_ms: r.get(6),
        account: AccountState {
            suspended_at_ms: r.get(7),
            expires_at_ms: r.get(8),
            deleted_at_ms: r.get(9),
        },
    }
}

impl Store {
    /// Creates a user with a first enrollment code; false if the user exists.
    pub async fn add_user(
        &self,
        name: &str,
        code_hash: &[u8],
        now_ms: i64,
        expires_at_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.write_transaction().await?;
        let inserted = sqlx::query(
            "INSERT INTO users (name, created_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            return Ok(false);
        }
        insert_code(&mut tx, name, code_hash, now_ms, expires_at_ms).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Issues another enrollment code for an existing user; false if there is no such user.
    pub async fn issue_code(
        &self,
        name: &str,
        code_hash: &[u8],
        now_ms: i64,
        expires_at_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.write_transaction().await?;
        let issued = insert_code(&mut tx, name, code_hash, now_ms, expires_at_ms).await?;
        tx.commit().await?;
        Ok(issued)
    }

    pub async fn list_users(&self, now_ms: i64) -> Result<Vec<UserSummary>, StoreError> {
        let rows = sqlx::query(
            "SELECT u.name, u.created_at,
                (SELECT COUNT(*) FROM devices d WHERE d.user_id = u.id AND d.revoked_at IS NULL),
                (SELECT COUNT(*) FROM enrollment_codes c WHERE c.user_id = u.id
                    AND c.used_at IS NULL AND c.expires_at > $1),
                u.suspended_at, u.expires_at, u.deleted_at
             FROM users u ORDER BY u.name",
        )
        .bind(now_ms)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| UserSummary {
                name: r.get(0),
                created_at_ms: r.get(1),
                devices: r.get(2),
                pending_codes: r.get(3),
                account: AccountState {
                    suspended_at_ms: r.get(4),
                    expires_at_ms: r.get(5),
                    deleted_at_ms: r.get(6),
                },
            })
            .collect())
    }

    pub async fn user_exists(&self, name: &str) -> Result<bool, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE name = $1")
            .bind(name)
            .fetch_one(&self.pool)
            .await?;
        Ok(n > 0)
    }

    /// Every device of a user, revoked ones included.
    pub async fn list_devices(&self, user: &str) -> Result<Vec<Device>, StoreError> {
        let sql = format!(
            "SELECT {DEVICE_COLUMNS} FROM devices d JOIN users u ON u.id = d.user_id
             WHERE u.name = $1 ORDER BY d.enrolled_at, d.id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(user)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(device_from_row).collect())
    }

    pub async fn device_by_key(&self, public_key: &[u8]) -> Result<Option<Device>, StoreError> {
        let sql = format!(
            "SELECT {DEVICE_COLUMNS} FROM devices d JOIN users u ON u.id = d.user_id
             WHERE d.public_key = $1"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(public_key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(device_from_row))
    }

    /// Consumes an enrollment code and enrolls a device with it, atomically.
    pub async fn enroll(
        &self,
        user: &str,
        code_hash: &[u8],
        public_key: &[u8],
        fingerprint: &str,
        now_ms: i64,
    ) -> Result<Device, EnrollError> {
        let mut tx = self.write_transaction().await.map_err(StoreError::from)?;
        let user_id: Option<i64> = sqlx::query_scalar(
            "UPDATE enrollment_codes SET used_at = $1
             WHERE code_hash = $2 AND used_at IS NULL AND expires_at > $1
               AND user_id = (SELECT id FROM users WHERE name = $3 AND suspended_at IS NULL
                              AND deleted_at IS NULL AND (expires_at IS NULL OR expires_at > $1))
             RETURNING user_id",
        )
        .bind(now_ms)
        .bind(code_hash)
        .bind(user)
        .fetch_optional(&mut *tx)
        .await
        .map_err(StoreError::from)?;
        let Some(user_id) = user_id else {
            return Err(EnrollError::InvalidCode);
        };
        let id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO devices (user_id, public_key, fingerprint, enrolled_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT DO NOTHING RETURNING id",
        )
        .bind(user_id)
        .bind(public_key)
        .bind(fingerprint)
        .bind(now_ms)
        .fetch_optional(&mut *tx)
        .await
        .map_err(StoreError::from)?;
        let Some(id) = id else {
            // Rolling back leaves the code unused, so the user can retry with a fresh key.
            return Err(EnrollError::KeyInUse);
        };
        tx.commit().await.map_err(StoreError::from)?;
        Ok(Device {
            id: DeviceId(id),
            user: user.to_owned(),
            public_key: public_key.to_vec(),
            fingerprint: fingerprint.to_owned(),
            enrolled_at_ms: now_ms,
            last_seen_at_ms: None,
            revoked_at_ms: None,
            account: AccountState::default(),
        })
    }

    /// Records that a device connected: when it was last seen and, with several nodes,
    /// a notification that makes the others close an older connection of it, as this
    /// node's hub does for its own (`store/notify.rs`).
    pub async fn device_connected(&self, device: DeviceId, now_ms: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE devices SET last_seen_at = $1 WHERE id = $2")
            .bind(now_ms)
            .bind(device.0)
            .execute(&self.pool)
            .await?;
        if let Some(node) = self.node {
            notify::connected(&self.pool, node, device).await?;
        }
        Ok(())
    }

    /// Marks a device revoked and drops its KeyPackages; `None` if no such device. A device
    /// already revoked keeps the time it was revoked at.
    pub async fn revoke_device(
        &self,
        user: &str,
        fingerprint: &str,
        now_ms: i64,
    ) -> Result<Option<Device>, StoreError> {
        let mut tx = self.write_transaction().await?;
        let id: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM devices
             WHERE fingerprint = $1 AND user_id = (SELECT id FROM users WHERE name = $2)",
        )
        .bind(fingerprint)
        .bind(user)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(id) = id else {
            return Ok(None);
        };
        revoke_devices(&mut tx, Devices::One(id), now_ms).await?;
        tx.commit().await?;
        let devices = self.list_devices(user).await?;
        Ok(devices.into_iter().find(|d| d.id.0 == id))
    }

    /// Sets or clears an account's suspension; false if there is no such live user.
    pub async fn set_suspended(&self, name: &str, at_ms: Option<i64>) -> Result<bool, StoreError> {
        let n = sqlx::query(
            "UPDATE users SET suspended_at = $1 WHERE name = $2 AND deleted_at IS NULL",
        )
        .bind(at_ms)
        .bind(name)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n > 0)
    }

    /// Sets or clears an account's expiry; false if there is no such live user.
    pub async fn set_expiry(&self, name: &str, at_ms: Option<i64>) -> Result<bool, StoreError> {
        let n =
            sqlx::query("UPDATE users SET expires_at = $1 WHERE name = $2 AND deleted_at IS NULL")
                .bind(at_ms)
                .bind(name)
                .execute(&self.pool)
                .await?
                .rows_affected();
        Ok(n > 0)
    }

    /// Marks a user deleted, revokes all its devices and drops its codes and KeyPackages.
    /// Returns the devices that were active, or `None` if there is no such live user.
    pub async fn delete_user(
        &self,
        name: &str,
        now_ms: i64,
    ) -> Result<Option<Vec<Device>>, StoreError> {
        let active: Vec<Device> = self
            .list_devices(name)
            .await?
            .into_iter()
            .filter(|d| d.revoked_at_ms.is_none())
            .collect();
        let mut tx = self.write_transaction().await?;
        let id: Option<i64> = sqlx::query_scalar(
            "UPDATE users SET deleted_at = $1 WHERE name = $2 AND deleted_at IS NULL RETURNING id",
        )
        .bind(now_ms)
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(id) = id else {
            return Ok(None);
        };
        revoke_devices(&mut tx, Devices::OfUser(id), now_ms).await?;
        sqlx::query("DELETE FROM enrollment_codes WHERE user_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(active))
    }

    /// Pending (unused, unexpired) enrollment codes, of one user or of all.
    pub async fn pending_codes(
        &self,
        user: Option<&str>,
        now_ms: i64,
    ) -> Result<Vec<PendingCode>, StoreError> {
        let sql = format!(
            "SELECT c.{}, u.name, c.created_at, c.expires_at FROM enrollment_codes c
             JOIN users u ON u.id = c.user_id
             WHERE c.used_at IS NULL AND c.expires_at > $1 AND ($2 IS NULL OR u.name = $2)
             ORDER BY c.created_at",
            self.backend.code_id()
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(now_ms)
            .bind(user)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(|r| PendingCode {
                id: r.get(0),
                user: r.get(1),
                created_at_ms: r.get(2),
                expires_at_ms: r.get(3),
            })
            .collect())
    }

    /// Cancels a pending code; false if the user has no such code.
    pub async fn cancel_code(&self, user: &str, id: i64) -> Result<bool, StoreError> {
        let sql = format!(
            "DELETE FROM enrollment_codes WHERE {} = $1 AND used_at IS NULL
               AND user_id = (SELECT id FROM users WHERE name = $2)",
            self.backend.code_id()
        );
        let n = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .bind(user)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n > 0)
    }

    /// Devices (revoked ones included) with the given public keys.
    pub async fn devices_by_keys(&self, keys: &[Vec<u8>]) -> Result<Vec<Device>, StoreError> {
        let mut found = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(device) = self.device_by_key(key).await? {
                found.push(device);
            }
        }
        Ok(found)
    }

    /// Groups a device is a member of.
    pub async fn groups_of(&self, device: DeviceId) -> Result<Vec<Vec<u8>>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT group_id FROM group_members WHERE device_id = $1")
                .bind(device.0)
                .fetch_all(&self.pool)
                .await?,
        )
    }
}

/// Why a claim found nothing to give.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClaimError {
    #[error("no user {0} on this server")]
    UnknownUser(String),
    #[error("a device of {0} has no KeyPackage left; it must come online to publish more")]
    NoKeyPackage(String),
}

/// The devices [`revoke_devices`] revokes.
#[derive(Debug, Clone, Copy)]
enum Devices {
    /// The device with this id.
    One(i64),
    /// Every device of the user with this id.
    OfUser(i64),
}

/// Marks devices revoked, keeping the time of an earlier revocation, and drops their
/// KeyPackages so that no one can add them to a group again: what revoking a device and
/// deleting a user both do, in the caller's write transaction.
async fn revoke_devices(
    tx: &mut sqlx::AnyConnection,
    devices: Devices,
    now_ms: i64,
) -> Result<(), StoreError> {
    let (revoke, drop_key_packages, id) = match devices {
        Devices::One(device) => (
            "UPDATE devices SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
            "DELETE FROM key_packages WHERE device_id = $1",
            device,
        ),
        Devices::OfUser(user) => (
            "UPDATE devices SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL",
            "DELETE FROM key_packages WHERE device_id IN (SELECT id FROM devices WHERE user_id = $1)",
            user,
        ),
    };
    sqlx::query(revoke)
        .bind(now_ms)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    sqlx::query(drop_key_packages)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

async fn insert_code(
    tx: &mut sqlx::AnyConnection,
    name: &str,
    code_hash: &[u8],
    now_ms: i64,
    expires_at_ms: i64,
) -> Result<bool, StoreError> {
    let inserted = sqlx::query(
        "INSERT INTO enrollment_codes (code_hash, user_id, created_at, expires_at)
         SELECT $1, id, $2, $3 FROM users WHERE name = $4",
    )
    .bind(code_hash)
    .bind(now_ms)
    .bind(expires_at_ms)
    .bind(name)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    Ok(inserted > 0)
}
