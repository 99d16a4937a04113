//! Writer operations on the queues themselves: room checks, acknowledgements, dropping a
//! revoked device, and expiry.

use std::collections::HashSet;

use sqlx::SqliteConnection;

use super::Writer;
use crate::store::DeviceId;

impl Writer {
    pub(super) async fn has_room(
        &mut self,
        tx: &mut SqliteConnection,
        recipients: &[DeviceId],
    ) -> Result<bool, sqlx::Error> {
        for device in recipients {
            let len = match self.queue_lengths.get(device) {
                Some(n) => *n,
                None => {
                    let n: i64 =
                        sqlx::query_scalar("SELECT COUNT(*) FROM queue WHERE device_id = ?")
                            .bind(device.0)
                            .fetch_one(&mut *tx)
                            .await?;
                    self.queue_lengths.insert(*device, n);
                    n
                }
            };
            if len >= self.options.queue_messages_max {
                return Ok(false);
            }
        }
        Ok(true)
    }

    pub(super) async fn ack(
        &mut self,
        tx: &mut SqliteConnection,
        device: DeviceId,
        seqs: &[i64],
    ) -> Result<u32, sqlx::Error> {
        let mut removed = 0u32;
        let unique: HashSet<i64> = seqs.iter().copied().collect();
        for seq in unique {
            let deleted = sqlx::query("DELETE FROM queue WHERE device_id = ? AND seq = ?")
                .bind(device.0)
                .bind(seq)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if deleted == 0 {
                continue;
            }
            removed += 1;
            sqlx::query("UPDATE messages SET refs = refs - 1 WHERE seq = ?")
                .bind(seq)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM messages WHERE seq = ? AND refs <= 0")
                .bind(seq)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(n) = self.queue_lengths.get_mut(&device) {
            *n -= i64::from(removed);
        }
        self.stats.queued -= i64::from(removed);
        self.stats.acked += u64::from(removed);
        Ok(removed)
    }

    pub(super) async fn forget_device(
        &mut self,
        tx: &mut SqliteConnection,
        device: DeviceId,
    ) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE messages SET refs = refs - 1 WHERE seq IN (SELECT seq FROM queue WHERE device_id = ?)")
            .bind(device.0)
            .execute(&mut *tx)
            .await?;
        let dropped = sqlx::query("DELETE FROM queue WHERE device_id = ?")
            .bind(device.0)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        self.stats.queued -= dropped as i64;
        sqlx::query("DELETE FROM messages WHERE refs <= 0")
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM group_members WHERE device_id = ?")
            .bind(device.0)
            .execute(&mut *tx)
            .await?;
        self.queue_lengths.remove(&device);
        Ok(())
    }

    pub(super) async fn expire(
        &mut self,
        tx: &mut SqliteConnection,
        before_ms: i64,
        ids_before_ms: i64,
    ) -> Result<u64, sqlx::Error> {
        let dropped = sqlx::query(
            "DELETE FROM queue WHERE seq IN (SELECT seq FROM messages WHERE accepted_at < ?)",
        )
        .bind(before_ms)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        self.stats.queued -= dropped as i64;
        let expired = sqlx::query("DELETE FROM messages WHERE accepted_at < ?")
            .bind(before_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query("DELETE FROM submissions WHERE accepted_at < ?")
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
