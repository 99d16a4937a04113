//! Which waiting requests go into the next batch: all of them, except that the rows
//! acknowledgements remove are bounded per batch.
//!
//! One acknowledgement removes up to 256 queue entries and their messages, and clients
//! acknowledging at the same moment (all of them after a network cut, or receivers that
//! reach 256 deliveries together) would otherwise put thousands of removals into one
//! batch, which every submission in it waits for. Acknowledgements past the bound wait,
//! in order, for the next batches. Moving an acknowledgement after later requests changes
//! nothing for anyone else: it removes only its own device's entries, and until it does
//! they are merely delivered again on a reconnect, which clients expect.

use std::collections::VecDeque;

use super::WriteOp;

/// Rows the acknowledgements of one batch may remove: one full acknowledgement of the
/// client library (256 deliveries), or many small ones. One acknowledgement is always
/// admitted, whatever its size (at most `ACK_SEQUENCES_MAX`, 4,096), so the waiting ones
/// always move; they are bounded in number because each connection has at most
/// `PIPELINE_MAX` requests unanswered. Small enough that a batch of acknowledgements does
/// not hold back the submissions behind it, large enough that throughput does not change
/// (the runs that chose it: `docs/perf/history.md`, "Latency at 5,000 msg/s: acknowledgement
/// waves").
pub(super) const ACK_ROWS_MAX: usize = 256;

/// Acknowledgements waiting for a later batch, oldest first.
#[derive(Default)]
pub(super) struct Deferred(VecDeque<WriteOp>);

impl Deferred {
    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many new requests the next batch may take so that it holds at most `batch_max`.
    pub(super) fn room(&self, batch_max: usize) -> usize {
        batch_max.saturating_sub(self.0.len())
    }

    /// The next batch: the deferred acknowledgements that fit, then the new requests in
    /// their order, each acknowledgement among them only while the bound allows, the batch
    /// holds fewer than `limit` requests and no older one still waits. With at most
    /// [`Deferred::room`] new requests, the batch holds at most `limit`. With a shutdown
    /// among them every deferred acknowledgement goes in, so none is left unanswered.
    /// `new` is emptied, its capacity kept for the next batch.
    pub(super) fn admit(&mut self, limit: usize, new: &mut Vec<WriteOp>) -> Vec<WriteOp> {
        let shutdown = new.iter().any(|op| matches!(op, WriteOp::Shutdown(_)));
        let waiting = std::mem::take(&mut self.0);
        let mut batch = Vec::with_capacity(waiting.len() + new.len());
        let mut rows = 0;
        for op in waiting.into_iter().chain(new.drain(..)) {
            let WriteOp::Ack { seqs, .. } = &op else {
                batch.push(op);
                continue;
            };
            let n = seqs.len().max(1);
            let fits = rows == 0 || rows + n <= ACK_ROWS_MAX;
            if shutdown || (self.0.is_empty() && fits && batch.len() < limit) {
                rows += n;
                batch.push(op);
            } else {
                self.0.push_back(op);
            }
        }
        batch
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::oneshot;

    use super::*;
    use crate::DeviceId;

    /// `batch_max` for the tests that are not about it.
    const LIMIT: usize = 512;

    fn ack(device: i64, rows: i64) -> WriteOp {
        WriteOp::Ack {
            device: DeviceId(device),
            seqs: (0..rows).collect(),
            reply: oneshot::channel().0,
        }
    }

    fn expire() -> WriteOp {
        WriteOp::Expire {
            before_ms: 0,
            ids_before_ms: 0,
            reply: oneshot::channel().0,
        }
    }

    /// A device id for acknowledgements, 0 for anything else.
    fn devices(batch: &[WriteOp]) -> Vec<i64> {
        batch
            .iter()
            .map(|op| match op {
                WriteOp::Ack { device, .. } => device.0,
                _ => 0,
            })
            .collect()
    }

    #[test]
    fn acknowledgements_past_the_bound_wait_in_order_and_nothing_else_does() {
        let mut deferred = Deferred::default();
        let half = ACK_ROWS_MAX as i64 / 2;
        let batch = deferred.admit(
            LIMIT,
            &mut vec![
                ack(1, half + 1),
                expire(),
                ack(2, half + 1),
                ack(3, 1),
                expire(),
            ],
        );
        // The second acknowledgement would pass the bound; the third, though small, may
        // not overtake it.
        assert_eq!(devices(&batch), [1, 0, 0]);
        let batch = deferred.admit(LIMIT, &mut vec![ack(4, half - 2), expire()]);
        assert_eq!(devices(&batch), [2, 3, 4, 0]);
        assert!(deferred.is_empty());
    }

    #[test]
    fn one_acknowledgement_larger_than_the_bound_still_goes_in() {
        let mut deferred = Deferred::default();
        let batch = deferred.admit(LIMIT, &mut vec![ack(1, ACK_ROWS_MAX as i64 + 1), ack(2, 1)]);
        assert_eq!(devices(&batch), [1]);
        assert_eq!(devices(&deferred.admit(LIMIT, &mut Vec::new())), [2]);
    }

    #[test]
    fn a_batch_holds_at_most_its_limit_of_requests() {
        let mut deferred = Deferred::default();
        let batch = deferred.admit(2, &mut vec![ack(1, 1), ack(2, 1), ack(3, 1)]);
        assert_eq!(devices(&batch), [1, 2]);
        assert_eq!(deferred.room(2), 1);
        assert_eq!(devices(&deferred.admit(2, &mut vec![expire()])), [3, 0]);
    }

    #[test]
    fn a_shutdown_takes_every_waiting_acknowledgement() {
        let mut deferred = Deferred::default();
        deferred.admit(LIMIT, &mut vec![ack(1, 1000), ack(2, 1000), ack(3, 1000)]);
        assert!(!deferred.is_empty());
        let batch = deferred.admit(LIMIT, &mut vec![WriteOp::Shutdown(oneshot::channel().0)]);
        assert_eq!(devices(&batch), [2, 3, 0]);
        assert!(deferred.is_empty());
    }
}
