//! The KeyPackage directory: publishing, status, and claiming one per device.

use sqlx::Row;

use crate::directory::ClaimError;
use crate::{ClaimedKeyPackage, DeviceId, Store, StoreError};

/// KeyPackages one INSERT adds at most.
const KEY_PACKAGES_PER_INSERT: usize = 256;

impl Store {
    /// Stores validated KeyPackages; a last-resort one replaces the previous.
    /// Returns the number of one-time KeyPackages now stored, or `None` when `max` would be exceeded.
    pub async fn add_key_packages(
        &self,
        device: DeviceId,
        one_time: &[Vec<u8>],
        last_resort: Option<&[u8]>,
        max: i64,
    ) -> Result<Option<u32>, StoreError> {
        let mut tx = self.write_transaction().await?;
        let have: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM key_packages WHERE device_id = $1 AND last_resort = 0",
        )
        .bind(device.0)
        .fetch_one(&mut *tx)
        .await?;
        if have + one_time.len() as i64 > max {
            return Ok(None);
        }
        // A few statements for the lot: a device publishes dozens at enrollment, and a
        // statement each would hold the write lock that much longer. Chunks keep the
        // parameters far below either database's limit, whatever `max` is.
        for chunk in one_time.chunks(KEY_PACKAGES_PER_INSERT) {
            let rows: Vec<String> = (0..chunk.len())
                .map(|i| format!("($1, 0, ${})", i + 2))
                .collect();
            let text = format!(
                "INSERT INTO key_packages (device_id, last_resort, data) VALUES {}",
                rows.join(", ")
            );
            // Only placeholders are formatted into the text; the data is bound.
            let mut insert = sqlx::query(sqlx::AssertSqlSafe(text)).bind(device.0);
            for data in chunk {
                insert = insert.bind(data);
            }
            insert.execute(&mut *tx).await?;
        }
        if let Some(data) = last_resort {
            sqlx::query("DELETE FROM key_packages WHERE device_id = $1 AND last_resort = 1")
                .bind(device.0)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO key_packages (device_id, last_resort, data) VALUES ($1, 1, $2)",
            )
            .bind(device.0)
            .bind(data)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(Some((have + one_time.len() as i64) as u32))
    }

    /// One-time KeyPackages available and whether a last-resort one exists.
    pub async fn key_package_status(&self, device: DeviceId) -> Result<(u32, bool), StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) FILTER (WHERE last_resort = 0), COUNT(*) FILTER (WHERE last_resort = 1)
             FROM key_packages WHERE device_id = $1",
        )
        .bind(device.0)
        .fetch_one(&self.pool)
        .await?;
        Ok((row.get::<i64, _>(0) as u32, row.get::<i64, _>(1) > 0))
    }

    /// Takes one KeyPackage per active device of each user, except `requester`.
    /// `Err(name)` names the first user that does not exist or has a device with none left.
    pub async fn claim_key_packages(
        &self,
        users: &[String],
        requester: DeviceId,
    ) -> Result<Result<Vec<ClaimedKeyPackage>, ClaimError>, StoreError> {
        let mut tx = self.write_transaction().await?;
        let mut claimed = Vec::new();
        for user in users {
            let devices: Vec<(i64, String)> = sqlx::query(
                "SELECT d.id, d.fingerprint FROM devices d JOIN users u ON u.id = d.user_id
                 WHERE u.name = $1 AND d.revoked_at IS NULL AND u.deleted_at IS NULL AND d.id != $2
                 ORDER BY d.id",
            )
            .bind(user)
            .bind(requester.0)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
            if devices.is_empty() && !user_exists_tx(&mut tx, user).await? {
                return Ok(Err(ClaimError::UnknownUser(user.clone())));
            }
            for (id, fingerprint) in devices {
                let row = sqlx::query(
                    "SELECT id, data, last_resort FROM key_packages WHERE device_id = $1
                     ORDER BY last_resort, id LIMIT 1",
                )
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(row) = row else {
                    return Ok(Err(ClaimError::NoKeyPackage(user.clone())));
                };
                let (kp_id, data, last_resort): (i64, Vec<u8>, i64) =
                    (row.get(0), row.get(1), row.get(2));
                if last_resort == 0 {
                    sqlx::query("DELETE FROM key_packages WHERE id = $1")
                        .bind(kp_id)
                        .execute(&mut *tx)
                        .await?;
                }
                claimed.push(ClaimedKeyPackage {
                    user: user.clone(),
                    fingerprint,
                    data,
                });
            }
        }
        tx.commit().await?;
        Ok(Ok(claimed))
    }
}

async fn user_exists_tx(tx: &mut sqlx::AnyConnection, name: &str) -> Result<bool, StoreError> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE name = $1")
        .bind(name)
        .fetch_one(&mut *tx)
        .await?;
    Ok(n > 0)
}
