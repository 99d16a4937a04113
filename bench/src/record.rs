//! What the load records: per device while it runs, merged over all devices at the end.

use std::collections::{BTreeMap, HashMap};

use hdrhistogram::Histogram;

/// Largest latency recorded: ten minutes, in microseconds.
const LATENCY_US_MAX: u64 = 600_000_000;

/// What one device saw; merged over all devices at the end.
#[derive(Debug)]
pub struct Record {
    /// From a message's scheduled time to its receipt, in microseconds.
    pub latency_us: Histogram<u64>,
    /// From a message's scheduled time to the relay's `Submitted`, in microseconds.
    pub answer_us: Histogram<u64>,
    /// Ids of the messages the relay accepted (`track_ids`).
    pub acked: Vec<[u8; 16]>,
    /// Ids of the messages received, first sequence of each (`track_ids`).
    pub received: HashMap<[u8; 16], u64>,
    /// (sender, message number, latency in µs) of each receipt (`keep_receipts`).
    pub receipts: Vec<(u32, u64, u64)>,
    /// Deliveries sent again after a reconnect (same sequence): expected, not duplicates.
    pub redelivered: u64,
    /// The same message id under two different sequences: stored twice by the relay.
    pub duplicated: u64,
    /// Accepted answers that said the message was a resubmission of an accepted one.
    pub resubmissions_recognised: u64,
    /// Refusals, lost connections and closing reasons, by label.
    pub events: BTreeMap<String, u64>,
    pub reconnects: u64,
}

impl Default for Record {
    fn default() -> Record {
        Record::new()
    }
}

impl Record {
    pub fn new() -> Record {
        Record {
            latency_us: histogram(),
            answer_us: histogram(),
            acked: Vec::new(),
            received: HashMap::new(),
            receipts: Vec::new(),
            redelivered: 0,
            duplicated: 0,
            resubmissions_recognised: 0,
            events: BTreeMap::new(),
            reconnects: 0,
        }
    }

    pub fn merge(&mut self, other: Record) {
        // Both histograms have the same bounds, so adding cannot fail.
        let _ = self.latency_us.add(&other.latency_us);
        let _ = self.answer_us.add(&other.answer_us);
        self.acked.extend(other.acked);
        self.received.extend(other.received);
        self.receipts.extend(other.receipts);
        self.redelivered += other.redelivered;
        self.duplicated += other.duplicated;
        self.resubmissions_recognised += other.resubmissions_recognised;
        for (label, n) in other.events {
            *self.events.entry(label).or_default() += n;
        }
        self.reconnects += other.reconnects;
    }

    pub(crate) fn event(&mut self, label: impl Into<String>) {
        *self.events.entry(label.into()).or_default() += 1;
    }
}

/// A latency histogram in microseconds with three significant digits.
pub fn histogram() -> Histogram<u64> {
    // The bounds are constants that satisfy the library's rules (low ≥ 1, high ≥ 2 × low,
    // sigfig ≤ 5), so this cannot fail.
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("constant histogram bounds")
}
