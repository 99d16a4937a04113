//! Writer operations that act on whole queues: dropping a revoked device's, and expiry.

use sqlx::AnyConnection;

use super::Writer;
use crate::store::DeviceId;

impl Writer {
    pub(super) async fn forget_device(
        &mut self,
        tx: &mut AnyConnection,
        device: DeviceId,
    ) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE messages SET refs = refs - 1 WHERE seq IN (SELECT seq FROM queue WHERE device_id = $1)")
            .bind(device.0)
            .execute(&mut *tx)
            .await?;
        let dropped = sqlx::query("DELETE FROM queue WHERE device_id = $1")
            .bind(device.0)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        self.stats.queued -= dropped as i64;
        sqlx::query("DELETE FROM messages WHERE refs <= 0")
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM group_members WHERE device_id = $1")
            .bind(device.0)
            .execute(&mut *tx)
            .await?;
        self.queue_lengths.remove(&device);
        self.stats.forgotten.push(device);
        Ok(())
    }

    pub(super) async fn expire(
        &mut self,
        tx: &mut AnyConnection,
        before_ms: i64,
        ids_before_ms: i64,
    ) -> Result<u64, sqlx::Error> {
        let dropped = sqlx::query(
            "DELETE FROM queue WHERE seq IN (SELECT seq FROM messages WHERE accepted_at < $1)",
        )
        .bind(before_ms)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        self.stats.queued -= dropped as i64;
        let expired = sqlx::query("DELETE FROM messages WHERE accepted_at < $1")
            .bind(before_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query("DELETE FROM submissions WHERE accepted_at < $1")
            .bind(ids_before_ms)
            .execute(&mut *tx)
            .await?;
        if expired > 0 {
            self.queue_lengths.clear();
        }
        self.stats.expired += expired;
        Ok(expired)
    }
}
