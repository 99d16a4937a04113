//! When deliveries are acknowledged. The relay deletes what a device acknowledges, so one
//! acknowledgement per delivery would cost it a request and an answer each, and one per
//! long stream would land on it as one large deletion while the device's processed
//! records pile up. The rule here sits between: a batch is acknowledged once `ACK_BATCH`
//! deliveries wait, when none came for `ACK_IDLE` after the last, or `ACK_AGE` after the
//! first, whichever comes first. The load generator uses this same rule.
//!
//! An acknowledgement is quiet (the relay does not answer it, and ends the connection if
//! it fails) until `ACK_BATCH` sequences await confirmation; the next is answered, and
//! its answer confirms every quiet one before it on the connection. Only then are their
//! processed-delivery records forgotten. What a lost connection left unconfirmed is
//! forgotten on the next: its first delivery is the lowest sequence still queued.

use std::time::{Duration, Instant};

use relais_protocol::pb;

/// Deliveries processed before their acknowledgement is sent.
pub const ACK_BATCH: usize = 256;
/// Within a batch, how long the client waits for the next delivery before it
/// acknowledges the batch: deliveries that keep coming are acknowledged together.
pub const ACK_IDLE: Duration = Duration::from_millis(20);
/// The longest a batch takes deliveries after its first: a steady stream is acknowledged
/// at least this often, in small acknowledgements spread over time rather than one large
/// one every `ACK_BATCH` deliveries.
pub const ACK_AGE: Duration = Duration::from_millis(50);
/// How long a drain waits for one more delivery before it considers the queue empty (and
/// confirms its quiet acknowledgements).
pub const DRAIN_IDLE: Duration = Duration::from_millis(50);

/// The sequences of processed deliveries that await their acknowledgement, and those
/// acknowledged quietly that await confirmation, on one connection.
#[derive(Debug, Default)]
pub struct AckBatch {
    sequences: Vec<u64>,
    first: Option<Instant>,
    last: Option<Instant>,
    unconfirmed: Vec<u64>,
    /// When the last acknowledgement was sent.
    sent: Option<Instant>,
    /// Whether a delivery came on this connection.
    received_any: bool,
}

/// An acknowledgement to send.
#[derive(Debug, PartialEq, Eq)]
pub struct Ack {
    pub sequences: Vec<u64>,
    /// Whether the relay is asked not to answer it (a failure ends the connection).
    pub quiet: bool,
}

impl From<Ack> for pb::Acknowledge {
    fn from(ack: Ack) -> Self {
        pb::Acknowledge {
            sequences: ack.sequences,
            quiet: ack.quiet,
        }
    }
}

impl AckBatch {
    /// Notes a delivery's arrival. For the first on the connection, returns the sequence
    /// below which nothing will come again: the relay sends a connection's deliveries in
    /// ascending order, what its queue holds first, so the first is the lowest still
    /// queued, and records of deliveries below it (whose quiet acknowledgements were
    /// applied, unconfirmed, before a connection was lost) are no longer needed.
    pub fn received(&mut self, sequence: u64) -> Option<u64> {
        (!std::mem::replace(&mut self.received_any, true)).then_some(sequence)
    }

    /// Adds a delivery processed at `now`.
    pub fn push(&mut self, sequence: u64, now: Instant) {
        self.sequences.push(sequence);
        self.first.get_or_insert(now);
        self.last = Some(now);
    }

    /// When the batch is to be acknowledged if no other delivery comes first; `None`
    /// while it is empty. A full batch is due at once.
    pub fn due(&self) -> Option<Instant> {
        let (first, last) = (self.first?, self.last?);
        if self.sequences.len() >= ACK_BATCH {
            return Some(last);
        }
        Some((last + ACK_IDLE).min(first + ACK_AGE))
    }

    /// Whether the batch is to be acknowledged at `now`.
    pub fn is_due(&self, now: Instant) -> bool {
        self.due().is_some_and(|due| due <= now)
    }

    pub fn is_empty(&self) -> bool {
        self.sequences.is_empty()
    }

    pub fn len(&self) -> usize {
        self.sequences.len()
    }

    /// Empties the batch into an acknowledgement sent at `now`, quiet while fewer than
    /// `ACK_BATCH` sequences would then await confirmation.
    pub fn take(&mut self, now: Instant) -> Ack {
        self.first = None;
        self.last = None;
        self.sent = Some(now);
        let sequences = std::mem::take(&mut self.sequences);
        let quiet = self.unconfirmed.len() + sequences.len() < ACK_BATCH;
        if quiet {
            self.unconfirmed.extend_from_slice(&sequences);
        }
        Ack { sequences, quiet }
    }

    /// When a client with nothing to acknowledge confirms its quiet acknowledgements (an
    /// empty answered one): once its drain finds nothing for `DRAIN_IDLE` after the last.
    pub fn confirm_due(&self) -> Option<Instant> {
        if self.unconfirmed.is_empty() || !self.sequences.is_empty() {
            return None;
        }
        self.sent.map(|sent| sent + DRAIN_IDLE)
    }

    /// The empty answered acknowledgement that confirms the quiet ones; `confirm_due` is
    /// `None` from then until the next acknowledgement.
    pub fn confirmation(&mut self) -> Ack {
        self.sent = None;
        Ack {
            sequences: Vec::new(),
            quiet: false,
        }
    }

    /// When the client next acknowledges if no delivery comes: the batch when one waits,
    /// otherwise the confirmation of the quiet ones.
    pub fn wake(&self) -> Option<Instant> {
        self.due().or(self.confirm_due())
    }

    /// How many sequences were acknowledged quietly and await confirmation.
    pub fn unconfirmed(&self) -> usize {
        self.unconfirmed.len()
    }

    /// The sequences an answered acknowledgement of `answered` confirms: its own and every
    /// quiet one before it on the connection.
    pub fn confirmed(&mut self, answered: &[u64]) -> Vec<u64> {
        let mut all = std::mem::take(&mut self.unconfirmed);
        all.extend_from_slice(answered);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn an_empty_batch_is_never_due() {
        let batch = AckBatch::default();
        assert_eq!(batch.due(), None);
        assert!(!batch.is_due(Instant::now() + ms(3_600_000)));
    }

    #[test]
    fn a_pause_after_the_last_delivery_closes_the_batch() {
        let t0 = Instant::now();
        let mut batch = AckBatch::default();
        batch.push(1, t0);
        batch.push(2, t0 + ms(15));
        assert_eq!(batch.due(), Some(t0 + ms(15) + ACK_IDLE));
        assert!(!batch.is_due(t0 + ms(34)));
        assert!(batch.is_due(t0 + ms(35)));
    }

    #[test]
    fn a_steady_stream_is_acknowledged_by_age() {
        let t0 = Instant::now();
        let mut batch = AckBatch::default();
        // One every 10 ms never leaves the idle wait, so the age closes the batch.
        for n in 0..5 {
            batch.push(n, t0 + ms(10 * n));
            assert!(!batch.is_due(t0 + ms(10 * n)), "delivery {n}");
        }
        assert_eq!(batch.due(), Some(t0 + ACK_AGE));
        assert!(batch.is_due(t0 + ms(50)));
        assert_eq!(batch.take(t0).sequences, vec![0, 1, 2, 3, 4]);
        // The next batch's age counts from its own first delivery.
        batch.push(5, t0 + ms(60));
        assert_eq!(batch.due(), Some(t0 + ms(80)));
    }

    #[test]
    fn a_full_batch_is_due_at_once() {
        let t0 = Instant::now();
        let mut batch = AckBatch::default();
        for n in 0..ACK_BATCH as u64 - 1 {
            batch.push(n, t0);
        }
        assert!(!batch.is_due(t0));
        batch.push(ACK_BATCH as u64, t0);
        assert!(batch.is_due(t0));
        assert_eq!(batch.len(), ACK_BATCH);
        let ack = batch.take(t0);
        assert!(!ack.quiet, "a full batch is answered");
        assert!(batch.is_empty());
        assert_eq!(batch.due(), None);
    }

    #[test]
    fn only_the_first_delivery_on_a_connection_bounds_what_is_forgotten() {
        let mut batch = AckBatch::default();
        assert_eq!(batch.received(40), Some(40));
        assert_eq!(batch.received(41), None);
        assert_eq!(AckBatch::default().received(7), Some(7), "a new connection");
    }

    #[test]
    fn quiet_acknowledgements_are_confirmed_by_the_next_answered_one() {
        let t0 = Instant::now();
        let mut batch = AckBatch::default();
        let mut quiet = Vec::new();
        for n in 0..ACK_BATCH as u64 - 1 {
            batch.push(n, t0);
            let ack = batch.take(t0);
            assert!(ack.quiet, "acknowledgement {n} is quiet");
            quiet.extend(ack.sequences);
        }
        assert_eq!(batch.unconfirmed(), ACK_BATCH - 1);
        assert_eq!(batch.confirm_due(), Some(t0 + DRAIN_IDLE));
        assert_eq!(batch.wake(), Some(t0 + DRAIN_IDLE));
        batch.push(1000, t0);
        let ack = batch.take(t0);
        assert_eq!(
            ack,
            Ack {
                sequences: vec![1000],
                quiet: false
            }
        );
        let mut confirmed = quiet;
        confirmed.push(1000);
        assert_eq!(batch.confirmed(&ack.sequences), confirmed);
        assert_eq!(batch.unconfirmed(), 0);
        assert_eq!(batch.confirm_due(), None);
        batch.push(1001, t0);
        assert!(batch.take(t0).quiet, "the count starts again");
        assert_eq!(batch.confirmation().sequences, Vec::<u64>::new());
        assert_eq!(batch.confirm_due(), None, "until the next acknowledgement");
    }
}
