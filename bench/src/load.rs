//! The load: one task per device that sends (closed or open loop), reads answers and
//! deliveries, acknowledges deliveries in batches as the client library does, and records
//! what it saw. With `reconnect`, it survives the relay's death: messages whose answer
//! was lost are sent again with the same message id, as a real client would.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use relais_protocol::frame;
use relais_protocol::pb::{self, request::Body as Req, response::Body as Resp};
// Deliveries are acknowledged with the client library's rule, `AckBatch`.
use relais_client::AckBatch;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

use crate::payload::{self, Stamp};
pub use crate::record::{Record, histogram};
use crate::setup::Device;
use crate::wire::{self, Endpoint};

/// Pause before sending again what the relay refused with a retryable error.
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// Pause between attempts to reach a relay that is down.
const RECONNECT_PAUSE: Duration = Duration::from_millis(20);

/// How a device sends.
#[derive(Debug, Clone, Copy)]
pub enum Pace {
    /// Only receives.
    Silent,
    /// Keeps `window` submissions in flight: the next goes as soon as one is answered.
    Closed { window: usize },
    /// Message `n` is due at `go + offset + n × interval`, whatever happened to the ones
    /// before, so a stall delays the messages behind it and their latency counts it.
    Open {
        offset: Duration,
        interval: Duration,
    },
}

/// What every device of a run shares.
pub struct Plan {
    /// Every node's endpoint; each device keeps to one.
    pub endpoints: Vec<Endpoint>,
    /// The origin of the stamps' times.
    pub clock: Instant,
    /// Size of each MLS message, in bytes.
    pub size: usize,
    /// Messages each sending device sends at most.
    pub quota: Option<u64>,
    /// Reconnect when the relay goes away (crash runs); otherwise a lost connection ends
    /// the device and is reported.
    pub reconnect: bool,
    /// Keep message ids, to count lost and duplicated messages.
    pub track_ids: bool,
    /// Keep every receipt (message number and latency), for fan-out.
    pub keep_receipts: bool,
    pub counters: Counters,
    /// Set once every device is connected, to the origin of the senders' schedules:
    /// nobody sends before, so that connecting devices do not compete with the load.
    pub go: watch::Receiver<Option<Instant>>,
    /// Set to stop sending new messages (retries of unanswered ones go on).
    pub stop_sending: watch::Receiver<bool>,
    /// Set to end every device.
    pub stop: watch::Receiver<bool>,
}

/// Live totals, read by the scenario while the load runs.
#[derive(Debug, Default)]
pub struct Counters {
    /// Authenticated connections now open.
    pub connected: AtomicI64,
    /// Messages accepted by the relay (`Submitted`).
    pub accepted: AtomicU64,
    /// Bench messages received, each counted once.
    pub delivered: AtomicU64,
    /// Other deliveries (Welcomes, the creator's conversation info).
    pub foreign: AtomicU64,
    /// Messages created and not yet answered for good.
    pub outstanding: AtomicI64,
}

impl Counters {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// What a sending device keeps across connections.
struct Outbox {
    next_seq: u64,
    /// Messages to send (again) before any new one: answers lost with a connection, or
    /// retryable refusals.
    again: VecDeque<Stamp>,
    /// Not before this instant (after a retryable refusal).
    paused_until: Option<Instant>,
}

/// What a receiving device keeps across connections (`track_ids`).
#[derive(Default)]
struct Seen {
    sequences: HashSet<u64>,
}

/// Runs one device against `plan.endpoints[node]` until `plan.stop` (or, without
/// `reconnect`, until its connection ends).
pub async fn drive(device: Device, pace: Pace, node: usize, plan: Arc<Plan>) -> Record {
    let mut record = Record::new();
    let mut outbox = Outbox {
        next_seq: 0,
        again: VecDeque::new(),
        paused_until: None,
    };
    let mut seen = Seen::default();
    let mut stop = plan.stop.clone();
    let Some(endpoint) = plan.endpoints.get(node) else {
        record.event(format!("no node {node}"));
        return record;
    };
    loop {
        if *stop.borrow() {
            break;
        }
        let connected = tokio::select! {
            _ = stop.changed() => break,
            c = endpoint.open(None) => match c {
                Ok(opened) => opened.authenticate(&device.key).await,
                Err(e) => Err(e),
            },
        };
        match connected {
            Ok((socket, _queued)) => {
                plan.counters.connected.fetch_add(1, Ordering::Relaxed);
                let mut session = Session {
                    device: &device,
                    pace,
                    plan: &plan,
                    record: &mut record,
                    outbox: &mut outbox,
                    seen: &mut seen,
                    in_flight: HashMap::new(),
                    submits_in_flight: 0,
                    next_id: 1,
                    acks: AckBatch::default(),
                };
                let ended = session.run(socket).await;
                plan.counters.connected.fetch_sub(1, Ordering::Relaxed);
                match ended {
                    Ended::Stopped => break,
                    Ended::Lost(why) => {
                        record.event(format!("connection lost: {why}"));
                        if !plan.reconnect {
                            eprintln!("  device {} lost its connection: {why}", device.index);
                            break;
                        }
                        record.reconnects += 1;
                    }
                }
            }
            Err(e) => {
                if !plan.reconnect {
                    eprintln!("  device {} cannot connect: {e:#}", device.index);
                    record.event(format!("cannot connect: {e:#}"));
                    break;
                }
                tokio::time::sleep(RECONNECT_PAUSE).await;
            }
        }
    }
    record
}

enum Ended {
    Stopped,
    Lost(String),
}

/// What a submission or acknowledgement waits for.
enum Pending {
    Submit(Stamp),
    Ack,
}

/// One connection of a device.
struct Session<'a> {
    device: &'a Device,
    pace: Pace,
    plan: &'a Plan,
    record: &'a mut Record,
    outbox: &'a mut Outbox,
    seen: &'a mut Seen,
    in_flight: HashMap<u64, Pending>,
    submits_in_flight: usize,
    next_id: u64,
    acks: AckBatch,
}

impl Session<'_> {
    async fn run(&mut self, socket: wire::Socket) -> Ended {
        let (mut sink, mut stream) = socket.split();
        // Writes go through a task so that reading never waits on writing: the relay
        // answers and pushes on one socket, and a reader stuck behind a full socket
        // would deadlock with it.
        let (out, mut frames) = mpsc::unbounded_channel::<Vec<u8>>();
        let writer = tokio::spawn(async move {
            while let Some(bytes) = frames.recv().await {
                sink.feed(Message::Binary(bytes.into())).await?;
                while let Ok(more) = frames.try_recv() {
                    sink.feed(Message::Binary(more.into())).await?;
                }
                sink.flush().await?;
            }
            let _ = sink.close().await;
            anyhow::Ok(())
        });
        let mut stop = self.plan.stop.clone();
        let mut stop_sending = self.plan.stop_sending.clone();
        let mut go = self.plan.go.clone();
        let ended = loop {
            let wake = self.send_ready(&out);
            let ack_due = self.acks.wake().map(tokio::time::Instant::from_std);
            let sleep_until = wake.into_iter().chain(ack_due).min();
            tokio::select! {
                biased;
                _ = stop.changed() => break Ended::Stopped,
                message = stream.next() => {
                    let bytes = match message {
                        Some(Ok(Message::Binary(bytes))) => bytes,
                        Some(Ok(Message::Close(_))) | None => break Ended::Lost("closed".into()),
                        Some(Err(e)) => break Ended::Lost(e.to_string()),
                        Some(Ok(_)) => continue,
                    };
                    match frame::decode_envelope(&bytes, usize::MAX) {
                        Ok(envelope) => self.on_envelope(envelope, &out),
                        Err(e) => self.record.event(format!("undecodable frame: {e}")),
                    }
                }
                _ = stop_sending.changed() => {}
                _ = go.changed() => {}
                _ = sleep(sleep_until), if sleep_until.is_some() => {
                    if self.acks.wake().is_some_and(|due| due <= Instant::now()) {
                        self.flush_acks(&out);
                    }
                }
            }
        };
        drop(out);
        writer.abort();
        // Whatever was not answered may or may not have been stored: send it again, in
        // order, with the same id; the relay recognises resubmissions.
        let mut unanswered: Vec<Stamp> = self
            .in_flight
            .drain()
            .filter_map(|(_, p)| match p {
                Pending::Submit(stamp) => Some(stamp),
                Pending::Ack => None,
            })
            .collect();
        unanswered.extend(self.outbox.again.drain(..));
        unanswered.sort_by_key(|s| s.seq);
        self.outbox.again.extend(unanswered);
        ended
    }

    /// Sends what may be sent now; returns when to look again, if sending is timed.
    fn send_ready(&mut self, out: &mpsc::UnboundedSender<Vec<u8>>) -> Option<tokio::time::Instant> {
        let now = Instant::now();
        if let Some(until) = self.outbox.paused_until {
            if now < until {
                return Some(until.into());
            }
            self.outbox.paused_until = None;
        }
        match self.pace {
            Pace::Silent => None,
            Pace::Closed { window } => {
                while self.submits_in_flight < window {
                    let Some(stamp) = self.next_stamp(|| now) else {
                        break;
                    };
                    self.submit(stamp, out);
                }
                None
            }
            Pace::Open { offset, interval } => {
                let start = (*self.plan.go.borrow())? + offset;
                while let Some(stamp) = self.outbox.again.pop_front() {
                    self.submit(stamp, out);
                }
                loop {
                    let due = start + interval.mul_f64(self.outbox.next_seq as f64);
                    if due > now {
                        return self.may_send_new().then_some(due.into());
                    }
                    let stamp = self.next_stamp(|| due)?;
                    self.submit(stamp, out);
                }
            }
        }
    }

    fn may_send_new(&self) -> bool {
        self.plan.go.borrow().is_some()
            && !*self.plan.stop_sending.borrow()
            && self.plan.quota.is_none_or(|q| self.outbox.next_seq < q)
    }

    /// The next message: one to send again, or a new one scheduled at `scheduled()`.
    fn next_stamp(&mut self, scheduled: impl Fn() -> Instant) -> Option<Stamp> {
        if let Some(stamp) = self.outbox.again.pop_front() {
            return Some(stamp);
        }
        if !self.may_send_new() {
            return None;
        }
        let seq = self.outbox.next_seq;
        self.outbox.next_seq += 1;
        self.plan
            .counters
            .outstanding
            .fetch_add(1, Ordering::Relaxed);
        Some(Stamp {
            sender: self.device.index,
            seq,
            scheduled_ns: nanos_since(self.plan.clock, scheduled()),
            message_id: relais_client::new_message_id(),
        })
    }

    fn submit(&mut self, stamp: Stamp, out: &mpsc::UnboundedSender<Vec<u8>>) {
        let mls_message = payload::encode(
            &self.device.group_id,
            self.device.epoch,
            &stamp,
            self.plan.size,
        );
        let id = self.request(
            Req::SubmitMessage(pb::SubmitMessage {
                message_id: stamp.message_id.to_vec(),
                mls_message,
            }),
            out,
        );
        self.in_flight.insert(id, Pending::Submit(stamp));
        self.submits_in_flight += 1;
    }

    fn request(&mut self, body: Req, out: &mpsc::UnboundedSender<Vec<u8>>) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        // A closed channel means the writer died with the connection; the reader sees
        // that too and ends the session.
        let _ = out.send(frame::request(id, body));
        id
    }

    fn on_envelope(&mut self, envelope: pb::Envelope, out: &mpsc::UnboundedSender<Vec<u8>>) {
        match envelope.kind {
            Some(pb::envelope::Kind::Response(pb::Response { id, body })) => {
                self.on_response(id, body)
            }
            Some(pb::envelope::Kind::Push(pb::Push {
                body: Some(pb::push::Body::Delivery(delivery)),
            })) => self.on_delivery(delivery, out),
            Some(pb::envelope::Kind::Push(pb::Push {
                body: Some(pb::push::Body::Closing(error)),
            })) => self
                .record
                .event(format!("closing: {}", wire::error_label(error.code))),
            _ => self.record.event("unexpected frame"),
        }
    }

    fn on_response(&mut self, id: u64, body: Option<Resp>) {
        let Some(pending) = self.in_flight.remove(&id) else {
            self.record.event(format!("answer to unknown request {id}"));
            return;
        };
        let now = Instant::now();
        let counters = &self.plan.counters;
        match (pending, body) {
            (Pending::Submit(stamp), Some(Resp::Submitted(result))) => {
                self.submits_in_flight -= 1;
                counters.accepted.fetch_add(1, Ordering::Relaxed);
                counters.outstanding.fetch_sub(1, Ordering::Relaxed);
                let waited = nanos_since(self.plan.clock, now).saturating_sub(stamp.scheduled_ns);
                self.record.answer_us.saturating_record(waited / 1000);
                if result.duplicate {
                    self.record.resubmissions_recognised += 1;
                }
                if self.plan.track_ids {
                    self.record.acked.push(stamp.message_id);
                }
            }
            (Pending::Submit(stamp), Some(Resp::Error(e))) => {
                self.submits_in_flight -= 1;
                self.record
                    .event(format!("refused: {}", wire::error_label(e.code)));
                if e.retryable {
                    self.outbox.again.push_back(stamp);
                    self.outbox.paused_until = Some(now + RETRY_PAUSE);
                } else {
                    counters.outstanding.fetch_sub(1, Ordering::Relaxed);
                }
            }
            (Pending::Submit(_), other) => {
                self.submits_in_flight -= 1;
                counters.outstanding.fetch_sub(1, Ordering::Relaxed);
                self.record
                    .event(format!("unexpected answer to SubmitMessage: {other:?}"));
            }
            (Pending::Ack, Some(Resp::Acknowledged(_))) => {
                self.acks.confirmed(&[]);
            }
            (Pending::Ack, Some(Resp::Error(e))) => self.record.event(format!(
                "acknowledge refused: {}",
                wire::error_label(e.code)
            )),
            (Pending::Ack, other) => self
                .record
                .event(format!("unexpected answer to Acknowledge: {other:?}")),
        }
    }

    fn on_delivery(&mut self, delivery: pb::Delivery, out: &mpsc::UnboundedSender<Vec<u8>>) {
        let received_ns = nanos_since(self.plan.clock, Instant::now());
        let now = Instant::now();
        self.acks.push(delivery.sequence, now);
        if self.acks.is_due(now) {
            self.flush_acks(out);
        }
        let Some(stamp) = payload::decode(&delivery.mls_message) else {
            self.plan.counters.foreign.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if self.plan.track_ids {
            if !self.seen.sequences.insert(delivery.sequence) {
                self.record.redelivered += 1;
                return;
            }
            let first = *self
                .record
                .received
                .entry(stamp.message_id)
                .or_insert(delivery.sequence);
            if first != delivery.sequence {
                self.record.duplicated += 1;
                return;
            }
        }
        self.plan.counters.delivered.fetch_add(1, Ordering::Relaxed);
        let latency_us = received_ns.saturating_sub(stamp.scheduled_ns) / 1000;
        self.record.latency_us.saturating_record(latency_us);
        if self.plan.keep_receipts {
            self.record
                .receipts
                .push((stamp.sender, stamp.seq, latency_us));
        }
    }

    /// Sends the waiting acknowledgement or, with none waiting, the confirmation of the
    /// quiet ones (as the client does when its drain ends).
    fn flush_acks(&mut self, out: &mpsc::UnboundedSender<Vec<u8>>) {
        let ack = if self.acks.is_empty() {
            self.acks.confirmation()
        } else {
            self.acks.take(Instant::now())
        };
        let quiet = ack.quiet;
        let id = self.request(Req::Acknowledge(ack.into()), out);
        if !quiet {
            self.in_flight.insert(id, Pending::Ack);
        }
    }
}

async fn sleep(until: Option<tokio::time::Instant>) {
    match until {
        Some(until) => tokio::time::sleep_until(until).await,
        None => std::future::pending().await,
    }
}

/// Nanoseconds from `clock` to `at` (0 if `at` is earlier).
pub fn nanos_since(clock: Instant, at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(clock).as_nanos()).unwrap_or(u64::MAX)
}
