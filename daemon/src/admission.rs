//! Admission of client connections: what each one holds of the relay's connection limits.
//!
//! A connection holds one of `limits.connections_max` slots from its TCP accept until it
//! closes, its WebSocket session included. Until it authenticates it also holds one of
//! `limits.unauthenticated_max` slots and one of its source's
//! `limits.unauthenticated_per_address_max`, and may read only
//! [`UNAUTHENTICATED_READ_BYTES_MAX`] bytes in all; authentication gives those back.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::Limits;
use crate::directory::Source;

/// Bytes a connection may read before it authenticates, HTTP request included: the
/// upgrade request (about 250 bytes from the client library, 2 KiB from a browser) and a
/// dozen Enroll or Authenticate frames (about 330 bytes at most, see the test below).
/// Only `frame_bytes_max`, 8 MiB by default, would otherwise bound what each of
/// thousands of unauthenticated connections makes the relay buffer.
pub const UNAUTHENTICATED_READ_BYTES_MAX: usize = 8 * 1024;

/// Why a new connection is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `limits.connections_max` connections are open.
    Full,
    /// `limits.unauthenticated_max` connections have not authenticated yet.
    Unauthenticated,
    /// The source has `limits.unauthenticated_per_address_max` connections that have not
    /// authenticated yet.
    Address,
}

impl Refusal {
    /// What the refused client is told, in the body of an HTTP 503.
    pub fn message(self) -> &'static str {
        match self {
            Refusal::Full => "the relay is at its connection limit; retry in a few seconds",
            Refusal::Unauthenticated => {
                "too many connections are authenticating; retry in a few seconds"
            }
            Refusal::Address => {
                "too many connections from your address are authenticating; retry in a few seconds"
            }
        }
    }
}

/// The connection limits, shared by the accept loop.
pub struct Gate {
    connections: Arc<Semaphore>,
    unauthenticated: Arc<Semaphore>,
    sources: Arc<Mutex<HashMap<Source, usize>>>,
    per_source_max: usize,
}

impl Gate {
    pub fn new(limits: &Limits) -> Gate {
        Gate {
            connections: Arc::new(Semaphore::new(limits.connections_max)),
            unauthenticated: Arc::new(Semaphore::new(limits.unauthenticated_max)),
            sources: Arc::default(),
            per_source_max: limits.unauthenticated_per_address_max,
        }
    }

    /// Admits a connection from `peer`, or says which limit refuses it.
    pub fn admit(&self, peer: std::net::IpAddr) -> Result<Arc<Ticket>, Refusal> {
        let connection = self
            .connections
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refusal::Full)?;
        let unauthenticated = self
            .unauthenticated
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refusal::Unauthenticated)?;
        let source = Source::from(peer);
        {
            let mut sources = self.sources.lock().map_err(|_| Refusal::Full)?;
            let count = sources.entry(source).or_insert(0);
            if *count >= self.per_source_max {
                return Err(Refusal::Address);
            }
            *count += 1;
        }
        let share = SourceShare {
            sources: self.sources.clone(),
            source,
        };
        Ok(Arc::new(Ticket {
            _connection: connection,
            pending: Mutex::new(Some(Pending {
                _slot: unauthenticated,
                _share: share,
            })),
            budget: AtomicUsize::new(UNAUTHENTICATED_READ_BYTES_MAX),
            exhausted: AtomicBool::new(false),
            accepted: tokio::time::Instant::now(),
        }))
    }
}

/// What one admitted connection holds; dropped with the last of the HTTP connection and
/// its WebSocket session.
pub struct Ticket {
    _connection: OwnedSemaphorePermit,
    /// Given back at authentication.
    pending: Mutex<Option<Pending>>,
    /// Bytes the connection may still read; `usize::MAX` once authenticated.
    budget: AtomicUsize,
    exhausted: AtomicBool,
    /// When the connection was accepted: the authentication deadline counts from here.
    pub accepted: tokio::time::Instant,
}

struct Pending {
    _slot: OwnedSemaphorePermit,
    _share: SourceShare,
}

/// One unauthenticated connection of a source, counted until dropped.
struct SourceShare {
    sources: Arc<Mutex<HashMap<Source, usize>>>,
    source: Source,
}

impl Drop for SourceShare {
    fn drop(&mut self) {
        if let Ok(mut sources) = self.sources.lock()
            && let Some(count) = sources.get_mut(&self.source)
        {
            *count -= 1;
            if *count == 0 {
                sources.remove(&self.source);
            }
        }
    }
}

impl Ticket {
    /// The connection authenticated: gives back its unauthenticated slots and lifts the
    /// read budget (the WebSocket layer's limit, above `frame_bytes_max`, applies alone).
    pub fn authenticated(&self) {
        self.budget.store(usize::MAX, Ordering::Relaxed);
        if let Ok(mut pending) = self.pending.lock() {
            pending.take();
        }
    }

    /// Whether the connection read all it may before authenticating, and was cut off.
    pub fn exhausted(&self) -> bool {
        self.exhausted.load(Ordering::Relaxed)
    }
}

/// A client connection's stream, reading no more than its ticket allows.
pub struct Budgeted<S> {
    inner: S,
    ticket: Arc<Ticket>,
}

impl<S> Budgeted<S> {
    pub fn new(inner: S, ticket: Arc<Ticket>) -> Budgeted<S> {
        Budgeted { inner, ticket }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Budgeted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let budget = self.ticket.budget.load(Ordering::Relaxed);
        if budget == usize::MAX {
            return Pin::new(&mut self.inner).poll_read(cx, buf);
        }
        if budget == 0 {
            self.ticket.exhausted.store(true, Ordering::Relaxed);
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the connection sent more than it may before authenticating",
            )));
        }
        let read = if buf.remaining() <= budget {
            let before = buf.filled().len();
            ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
            buf.filled().len() - before
        } else {
            // Read into a buffer no larger than the budget; only unauthenticated connections
            // with a larger buffer (hyper's, for the request) come here, for a read or two.
            let mut limited = vec![0u8; budget];
            let mut part = ReadBuf::new(&mut limited);
            ready!(Pin::new(&mut self.inner).poll_read(cx, &mut part))?;
            buf.put_slice(part.filled());
            part.filled().len()
        };
        // Authentication may have lifted the budget meanwhile: only a limited one is spent.
        let _ = self
            .ticket
            .budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                (left != usize::MAX).then(|| left.saturating_sub(read))
            });
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Budgeted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use relais_protocol::frame;
    use relais_protocol::pb;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn limits(connections: usize, unauthenticated: usize, per_address: usize) -> Limits {
        Limits {
            connections_max: connections,
            unauthenticated_max: unauthenticated,
            unauthenticated_per_address_max: per_address,
            ..Limits::default()
        }
    }

    #[tokio::test]
    async fn each_limit_refuses_and_gives_back() {
        let gate = Gate::new(&limits(4, 3, 2));
        let a: std::net::IpAddr = "192.0.2.1".parse().expect("ip");
        let b: std::net::IpAddr = "192.0.2.2".parse().expect("ip");
        let first = gate.admit(a).expect("admitted");
        let _second = gate.admit(a).expect("admitted");
        assert_eq!(gate.admit(a).err(), Some(Refusal::Address));
        let third = gate.admit(b).expect("another address");
        assert_eq!(gate.admit(b).err(), Some(Refusal::Unauthenticated));
        // Authentication gives back the unauthenticated slot and the address's share.
        first.authenticated();
        let fourth = gate.admit(a).expect("admitted again");
        assert_eq!(gate.admit(b).err(), Some(Refusal::Full));
        drop((third, fourth));
        let _fifth = gate.admit(b).expect("slots given back on drop");
        // An IPv6 source is its /64: stepping through addresses gains nothing.
        let gate = Gate::new(&limits(4, 4, 1));
        let _v6 = gate
            .admit("2001:db8::1".parse().expect("ip"))
            .expect("admitted");
        assert_eq!(
            gate.admit("2001:db8::2".parse().expect("ip")).err(),
            Some(Refusal::Address)
        );
    }

    #[tokio::test]
    async fn reads_stop_at_the_budget_until_authenticated() {
        let gate = Gate::new(&limits(1, 1, 1));
        let ticket = gate
            .admit("192.0.2.1".parse().expect("ip"))
            .expect("ticket");
        let (mut peer, ours) = tokio::io::duplex(1 << 20);
        let mut ours = Budgeted::new(ours, ticket.clone());
        peer.write_all(&vec![1u8; UNAUTHENTICATED_READ_BYTES_MAX + 100])
            .await
            .expect("write");
        let mut read = vec![0u8; UNAUTHENTICATED_READ_BYTES_MAX * 2];
        let mut total = 0;
        let error = loop {
            match ours.read(&mut read).await {
                Ok(n) => total += n,
                Err(e) => break e,
            }
        };
        assert_eq!(total, UNAUTHENTICATED_READ_BYTES_MAX);
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        assert!(ticket.exhausted());
        ticket.authenticated();
        let n = ours
            .read(&mut read)
            .await
            .expect("read after authentication");
        assert_eq!(n, 100);
    }

    /// The budget admits the upgrade request and a dozen of the largest Enroll frames.
    #[test]
    fn the_budget_fits_the_handshake() {
        let enroll = frame::request(
            u64::MAX,
            pb::request::Body::Enroll(pb::Enroll {
                user: format!("{}@{}", "u".repeat(64), "d".repeat(63)),
                code: "0".repeat(64),
                public_key: vec![0xff; 32],
                signature: vec![0xff; 64],
            }),
        );
        // A client frame's header: 2 bytes, 8 for the length above 125, 4 for the mask.
        let enroll_on_the_wire = enroll.len() + 14;
        assert!(enroll_on_the_wire <= 400, "{enroll_on_the_wire}");
        let browser_upgrade = 2048;
        assert!(browser_upgrade + 12 * enroll_on_the_wire <= UNAUTHENTICATED_READ_BYTES_MAX);
    }
}
