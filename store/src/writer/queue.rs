//! Writer operations that act on whole queues: dropping a revoked device's, and expiry.

use super::Writer;
use super::sql::{Arg, Conn, Error};
use crate::DeviceId;

impl Writer {
    pub(super) async fn forget_device(
        &mut self,
        conn: &mut Conn,
        device: DeviceId,
    ) -> Result<(), Error> {
        let device_arg = [Arg::Int(device.0)];
        conn.execute(
            "UPDATE messages SET refs = refs - 1 \
             WHERE seq IN (SELECT seq FROM queue WHERE device_id = $1)",
            &device_arg,
        )
        .await?;
        let dropped = conn
            .execute("DELETE FROM queue WHERE device_id = $1", &device_arg)
            .await?;
        self.stats.queued -= dropped as i64;
        conn.execute("DELETE FROM messages WHERE refs <= 0", &[])
            .await?;
        conn.execute(
            "DELETE FROM group_members WHERE device_id = $1",
            &device_arg,
        )
        .await?;
        self.queue_usage.remove(&device);
        self.stats.forgotten.push(device);
        Ok(())
    }

    pub(super) async fn expire(
        &mut self,
        conn: &mut Conn,
        before_ms: i64,
        ids_before_ms: i64,
    ) -> Result<u64, Error> {
        let before = [Arg::Int(before_ms)];
        let dropped = conn
            .execute(
                "DELETE FROM queue WHERE seq IN (SELECT seq FROM messages WHERE accepted_at < $1)",
                &before,
            )
            .await?;
        self.stats.queued -= dropped as i64;
        let expired = conn
            .execute("DELETE FROM messages WHERE accepted_at < $1", &before)
            .await?;
        conn.execute(
            "DELETE FROM submissions WHERE accepted_at < $1",
            &[Arg::Int(ids_before_ms)],
        )
        .await?;
        if expired > 0 {
            self.queue_usage.clear();
        }
        self.stats.expired += expired;
        Ok(expired)
    }
}
