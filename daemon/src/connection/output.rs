//! Everything a connection writes: responses (pipelined ones in request order, with one
//! flush for those already decided), live pushes in bursts, and frames from storage.
//! Every write has a deadline: a client that stops reading is disconnected.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use bytes::Bytes;
use futures_util::stream::FuturesOrdered;
use futures_util::{FutureExt, SinkExt, StreamExt};
use relais_protocol::frame;
use relais_protocol::pb::{self, response::Body as Resp};

use relais_core::session::Session;

use super::Close;
use crate::fanout::delivery_frame;
use crate::metrics::{METRICS, Outcome, RequestType};
use relais_store::QueuedMessage;

/// A frame that cannot be written within this time means the client stopped reading.
pub(super) const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Live pushes written per flush: enough to save most system calls under load, few enough
/// that a device's requests are read between bursts.
const PUSH_BURST_MAX: usize = 64;

/// A request's answer, with its id and type.
pub(super) struct Answered {
    pub id: u64,
    pub kind: RequestType,
    /// Not answered when it succeeds (a quiet `Acknowledge`); its failure ends the
    /// connection, so that the answer to any later request confirms it.
    pub quiet: bool,
    pub response: Result<Resp, pb::Error>,
}

impl Answered {
    pub fn new(id: u64, kind: RequestType, response: Result<Resp, pb::Error>) -> Self {
        Answered {
            id,
            kind,
            quiet: false,
            response,
        }
    }
}

/// A pipelined request's answer.
pub(super) type Pipelined = Pin<Box<dyn Future<Output = Answered> + Send>>;

/// Counts a request's outcome and sends its response; a quiet failure ends the connection.
pub(super) async fn respond(
    ws: &mut WebSocket,
    session: &mut Session,
    answered: Answered,
) -> Result<(), Close> {
    match outcome(session, answered) {
        Ok(Some(frame)) => send(ws, frame).await.map_err(|()| Close::Quietly),
        Ok(None) => Ok(()),
        Err(error) => Err(Close::With(error)),
    }
}

/// Sends the first ready pipelined answer and any others already ready, with one flush.
pub(super) async fn respond_ready(
    ws: &mut WebSocket,
    session: &mut Session,
    first: Answered,
    pipeline: &mut FuturesOrdered<Pipelined>,
) -> Result<(), Close> {
    let mut failed = None;
    let write = async {
        let mut next = Some(first);
        let mut fed = false;
        while let Some(answered) = next {
            match outcome(session, answered) {
                Ok(Some(frame)) => {
                    ws.feed(Message::Binary(frame)).await?;
                    fed = true;
                }
                Ok(None) => {}
                Err(error) => {
                    failed = Some(error);
                    break;
                }
            }
            next = pipeline.next().now_or_never().flatten();
        }
        if fed { ws.flush().await } else { Ok(()) }
    };
    within_deadline(write).await.map_err(|()| Close::Quietly)?;
    failed.map_or(Ok(()), |error| Err(Close::With(error)))
}

/// Counts a request's outcome and encodes its response frame: none for a quiet success;
/// a quiet failure is returned as the error that ends the connection.
fn outcome(session: &mut Session, answered: Answered) -> Result<Option<Bytes>, pb::Error> {
    let Answered {
        id,
        kind,
        quiet,
        response,
    } = answered;
    let result = if response.is_ok() {
        Outcome::Ok
    } else {
        Outcome::Error
    };
    METRICS.request(kind, result);
    if quiet {
        return response.map(|_| None);
    }
    let body = match response {
        Ok(body) => body,
        Err(error) => {
            if session.answered_error(error.code) {
                METRICS.error(
                    crate::metrics::ErrorKind::Protocol,
                    crate::metrics::ErrorSource::Peer,
                );
            }
            Resp::Error(error)
        }
    };
    Ok(Some(frame::response(id, body).into()))
}

/// Sends a live push and whatever else is already waiting (up to `PUSH_BURST_MAX`), with
/// one flush; pushes at or below the cursor were already sent from storage.
pub(super) async fn write_pushes(
    ws: &mut WebSocket,
    session: &mut Session,
    first: crate::hub::Push,
    outbox: &mut Option<tokio::sync::mpsc::Receiver<crate::hub::Push>>,
) -> Result<(), ()> {
    let write = async {
        let mut next = Some(first);
        let mut written = 0;
        while let Some(push) = next.take() {
            if session.push(push.seq) {
                ws.feed(Message::Binary(push.frame.clone())).await?;
                METRICS.deliveries_pushed.inc();
                METRICS
                    .relay_latency
                    .observe(push.committed.elapsed().as_secs_f64());
            }
            written += 1;
            if written < PUSH_BURST_MAX {
                next = outbox.as_mut().and_then(|rx| rx.try_recv().ok());
            }
        }
        ws.flush().await
    };
    within_deadline(write).await
}

pub(super) fn stored_frame(m: &QueuedMessage) -> Bytes {
    let kind = pb::DeliveryKind::try_from(m.kind).unwrap_or(pb::DeliveryKind::Unspecified);
    delivery_frame(
        m.seq,
        kind,
        &m.group_id,
        &m.sender_user,
        &m.sender_device,
        m.accepted_at_ms,
        &m.body,
    )
}

pub(super) async fn reply(ws: &mut WebSocket, id: u64, body: Resp) -> Result<(), ()> {
    send(ws, frame::response(id, body).into()).await
}

pub(super) async fn send(ws: &mut WebSocket, bytes: Bytes) -> Result<(), ()> {
    within_deadline(ws.send(Message::Binary(bytes))).await
}

/// Runs a write under `WRITE_TIMEOUT`; an error or a client too slow to read both end it.
async fn within_deadline<E>(write: impl Future<Output = Result<(), E>>) -> Result<(), ()> {
    match tokio::time::timeout(WRITE_TIMEOUT, write).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}
