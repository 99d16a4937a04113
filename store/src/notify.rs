//! Several nodes on one PostgreSQL database: telling the other nodes what a commit changed.
//!
//! A node's writer wakes its own devices after commit; for the others it sends, inside the
//! committing transaction, `NOTIFY`s naming the recipients (PostgreSQL delivers them only
//! if the transaction commits). Every node listens, and wakes those of its devices that are
//! online: a woken connection reads its queue from storage after its cursor. Writes apply
//! one at a time across nodes (`backend::lock_writers`), so what a device reads after its
//! cursor is never overtaken by an older message committed later.
//!
//! A notification can be lost (the listening connection drops): each node therefore wakes
//! all its devices when it listens again, and every `catch_up` period in any case, so a lost
//! one only delays a delivery.
//!
//! A device that connects tells the other nodes too, and they close its older connection,
//! as one node's hub does: a phone that moved from one network to another and came back
//! through the load balancer to another node leaves no half-open connection behind.

use std::sync::Arc;
use std::time::Duration;

use sqlx::ConnectOptions as _;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};

use crate::outlet::{Disconnect, Outlet};
use crate::{DeviceId, PostgresUrl, StoreError};

/// New queue entries: `NODE DEVICE DEVICE ...`.
const DELIVERIES: &str = "relais_deliveries";
/// A revoked device, to disconnect wherever it is online: `NODE DEVICE`.
const REVOKED: &str = "relais_revoked";
/// A device that connected to `NODE`, to disconnect from every other node: `NODE DEVICE`.
const CONNECTED: &str = "relais_connected";

/// PostgreSQL refuses payloads of 8,000 bytes or more; recipients are spread over as many
/// notifications as needed.
const PAYLOAD_MAX: usize = 7_000;

/// This process among the nodes, so it ignores its own notifications.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Node(u64);

impl Node {
    pub(super) fn new() -> Node {
        Node(rand::random())
    }
}

/// The payloads announcing new entries for `recipients`.
pub(super) fn delivery_payloads(node: Node, recipients: &[DeviceId]) -> Vec<String> {
    let prefix = node.0.to_string();
    let mut payloads = Vec::new();
    let mut current = prefix.clone();
    for device in recipients {
        let id = device.0.to_string();
        if current.len() + 1 + id.len() > PAYLOAD_MAX {
            payloads.push(std::mem::replace(&mut current, prefix.clone()));
        }
        current.push(' ');
        current.push_str(&id);
    }
    if current.len() > prefix.len() {
        payloads.push(current);
    }
    payloads
}

/// Sends the notifications inside the writer's transaction.
pub(super) async fn send(
    conn: &mut sqlx::AnyConnection,
    node: Node,
    recipients: &[DeviceId],
    revoked: &[DeviceId],
) -> Result<(), sqlx::Error> {
    let payloads = delivery_payloads(node, recipients)
        .into_iter()
        .map(|p| (DELIVERIES, p))
        .chain(
            revoked
                .iter()
                .map(|d| (REVOKED, format!("{} {}", node.0, d.0))),
        );
    for (channel, payload) in payloads {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(channel)
            .bind(payload)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Tells the other nodes that `device` connected to this one.
pub(super) async fn connected(
    pool: &sqlx::AnyPool,
    node: Node,
    device: DeviceId,
) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CONNECTED)
        .bind(format!("{} {}", node.0, device.0))
        .execute(pool)
        .await?;
    Ok(())
}

/// Parses a payload; `None` for this node's own or a malformed one.
fn parse(node: Node, payload: &str) -> Option<Vec<DeviceId>> {
    let mut words = payload.split(' ');
    let from: u64 = words.next()?.parse().ok()?;
    if from == node.0 {
        return None;
    }
    words.map(|w| w.parse().ok().map(DeviceId)).collect()
}

/// Starts listening (the first connection is made before this returns, so a database
/// that refuses it fails start-up), then keeps listening in the background.
pub(super) async fn listen(
    url: &PostgresUrl,
    node: Node,
    outlet: Arc<dyn Outlet>,
    catch_up: Duration,
) -> Result<(), StoreError> {
    let options = PgConnectOptions::from_url(url.url())?;
    // The listener's own connection, made again by the pool when it is lost.
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await?;
    let mut listener = PgListener::connect_with(&pool).await?;
    listener
        .listen_all([DELIVERIES, REVOKED, CONNECTED])
        .await?;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(catch_up);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => outlet.wake_all(),
                received = listener.try_recv() => match received {
                    Ok(Some(notification)) => {
                        let Some(devices) = parse(node, notification.payload()) else { continue };
                        let why = match notification.channel() {
                            REVOKED => Disconnect::Revoked,
                            CONNECTED => Disconnect::Replaced,
                            _ => {
                                outlet.wake(&devices);
                                continue;
                            }
                        };
                        for device in devices {
                            outlet.disconnect(device, why);
                        }
                    }
                    // The connection was lost and is made again by the next call: whatever
                    // was notified meanwhile is read by waking everyone.
                    Ok(None) => {
                        tracing::warn!("lost the PostgreSQL notification connection; reconnecting");
                        outlet.notifications_lost();
                        outlet.wake_all();
                    }
                    Err(error) => {
                        tracing::warn!(%error, "cannot listen for other nodes' messages; retrying in a second");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        outlet.wake_all();
                    }
                },
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_stay_under_the_limit_and_name_every_recipient_once() {
        let node = Node(u64::MAX);
        let recipients: Vec<DeviceId> = (1_000_000_000..1_000_002_000).map(DeviceId).collect();
        let payloads = delivery_payloads(node, &recipients);
        assert!(payloads.len() > 1, "2,000 ids need several payloads");
        let mut seen = Vec::new();
        for payload in &payloads {
            assert!(payload.len() <= PAYLOAD_MAX, "{}", payload.len());
            assert_eq!(parse(node, payload), None, "a node ignores its own");
            seen.extend(parse(Node(1), payload).expect("well formed"));
        }
        assert_eq!(seen, recipients);
        assert!(delivery_payloads(node, &[]).is_empty());
        assert_eq!(parse(Node(1), "7 12 x"), None, "malformed ids are ignored");
    }
}
