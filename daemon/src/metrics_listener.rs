//! The metrics listener: `GET /metrics` in the Prometheus text format, or in OpenMetrics
//! when the scraper's `Accept` header prefers it, on its own address, open only to the
//! configured scraper networks (loopback when none are), optionally over TLS. One request
//! per connection, and a few connections per address, so that nobody can hold the
//! listener's slots and blind monitoring.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use relais_core::Network;

use crate::metrics::{BUILD, ErrorKind, ErrorSource, Format, METRICS, Snapshot, render};
use crate::shared::Health;

/// Scrapes served at once; Prometheus needs one.
const SCRAPES_MAX: usize = 16;
/// Connections one address may have open at once: a Prometheus pair scraping through one
/// address, and an operator's curl, with room to spare; a quarter of `SCRAPES_MAX`, so a
/// single address cannot take them all.
const CONNECTIONS_PER_ADDRESS_MAX: usize = 4;
/// Time a scraper has for its TLS handshake and then for its request's head; Prometheus
/// sends it at once.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// What a scrape reads besides the counters.
pub struct Sources {
    pub health: Arc<Health>,
    pub store: relais_store::Store,
    /// The data directory, whose free space is reported.
    pub data_dir: PathBuf,
}

/// Serves scrapes from the networks in `allow` (`metrics.allow`).
pub async fn serve(
    listener: TcpListener,
    allow: Vec<String>,
    sources: Arc<Sources>,
    tls: Option<TlsAcceptor>,
) {
    let allow: Vec<Network> = allow.iter().filter_map(|n| Network::parse(n)).collect();
    let slots = Arc::new(tokio::sync::Semaphore::new(SCRAPES_MAX));
    let addresses = Arc::new(Mutex::new(HashMap::<IpAddr, usize>::new()));
    loop {
        let Ok((tcp, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        if !allowed(&allow, peer.ip()) {
            tracing::warn!(%peer, "metrics scrape refused: address not in metrics.allow");
            continue;
        }
        let Some(share) = AddressShare::take(&addresses, peer.ip()) else {
            tracing::debug!(%peer, "metrics scrape refused: too many connections from this address");
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let (sources, tls) = (sources.clone(), tls.clone());
        tokio::spawn(async move {
            let _slot = (slot, share);
            match tls {
                Some(acceptor) => {
                    if let Ok(Ok(stream)) =
                        tokio::time::timeout(REQUEST_TIMEOUT, acceptor.accept(tcp)).await
                    {
                        serve_http(stream, sources).await;
                    }
                }
                None => serve_http(tcp, sources).await,
            }
        });
    }
}

/// Whether `ip` may scrape: listed in `metrics.allow`, or, with none listed, loopback.
fn allowed(allow: &[Network], ip: IpAddr) -> bool {
    if allow.is_empty() {
        ip.to_canonical().is_loopback()
    } else {
        allow.iter().any(|n| n.contains(ip))
    }
}

/// One open connection of an address, counted until dropped.
struct AddressShare {
    addresses: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl AddressShare {
    /// Counts a connection from `ip`, unless it has `CONNECTIONS_PER_ADDRESS_MAX` already.
    fn take(addresses: &Arc<Mutex<HashMap<IpAddr, usize>>>, ip: IpAddr) -> Option<AddressShare> {
        let mut counts = addresses.lock().ok()?;
        let count = counts.entry(ip).or_insert(0);
        if *count >= CONNECTIONS_PER_ADDRESS_MAX {
            return None;
        }
        *count += 1;
        Some(AddressShare {
            addresses: addresses.clone(),
            ip,
        })
    }
}

impl Drop for AddressShare {
    fn drop(&mut self) {
        if let Ok(mut counts) = self.addresses.lock()
            && let Some(count) = counts.get_mut(&self.ip)
        {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

async fn serve_http<S>(io: S, sources: Arc<Sources>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
        let sources = sources.clone();
        async move {
            let response =
                if request.uri().path() == "/metrics" && request.method() == hyper::Method::GET {
                    let accept = request.headers().get(hyper::header::ACCEPT);
                    scrape(&sources, Format::negotiate(accept.map(|a| a.as_bytes()))).await
                } else {
                    Response::builder()
                        .status(StatusCode::NOT_FOUND)
                        .body("only GET /metrics is served here\n".to_owned())
                };
            Ok::<_, hyper::http::Error>(response.unwrap_or_default())
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    // One request per connection: a scraper kept open between scrapes would hold a slot.
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(REQUEST_TIMEOUT)
        .keep_alive(false);
    let _ = builder.serve_connection(TokioIo::new(io), service).await;
}

/// One scrape's answer, in `format`.
async fn scrape(sources: &Sources, format: Format) -> hyper::http::Result<Response<String>> {
    match render(&METRICS, &snapshot(sources).await, &BUILD, format) {
        Ok(body) => Response::builder()
            .header(hyper::header::CONTENT_TYPE, format.content_type())
            // The answer depends on `Accept`: a cache between must not mix the formats.
            .header(hyper::header::VARY, "accept")
            .body(body),
        Err(_) => {
            tracing::error!("cannot encode the metrics: this is a bug in relaisd, report it");
            METRICS.error(ErrorKind::Internal, ErrorSource::Internal);
            Response::builder()
                .status(StatusCode::INTERNAL_SERVER_ERROR)
                .body("relaisd could not encode its metrics; its log says more\n".to_owned())
        }
    }
}

/// Reads what the counters cannot hold: storage figures and the system's.
async fn snapshot(sources: &Sources) -> Snapshot {
    let mut snapshot = Snapshot {
        ready: sources.health.is_ready(),
        key_provider_up: sources.health.key_provider_up(),
        certificate_expiry_seconds: sources.health.certificate_expiry(),
        ..Snapshot::default()
    };
    match sources.store.metrics_figures().await {
        Ok(figures) => {
            snapshot.oldest_queued_age_seconds = figures
                .oldest_accepted_ms
                .map_or(0.0, |at| (crate::now_ms() - at).max(0) as f64 / 1000.0);
            snapshot.groups = figures.groups;
            snapshot.key_package_buckets = figures.key_package_buckets;
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read storage figures for the metrics");
            METRICS.error(ErrorKind::Storage, ErrorSource::Storage);
        }
    }
    snapshot.data_dir_free_bytes = nix::sys::statvfs::statvfs(&sources.data_dir)
        .ok()
        .map(|s| s.blocks_available().saturating_mul(s.fragment_size()));
    snapshot
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_allow_list_admits_loopback_only() {
        let ip = |text: &str| text.parse::<IpAddr>().expect(text);
        assert!(allowed(&[], ip("127.0.0.1")));
        assert!(allowed(&[], ip("::1")));
        assert!(allowed(&[], ip("::ffff:127.0.0.1")));
        assert!(!allowed(&[], ip("192.0.2.1")));
        let listed = [Network::parse("192.0.2.0/24").expect("network")];
        assert!(allowed(&listed, ip("192.0.2.1")));
        assert!(!allowed(&listed, ip("127.0.0.1")));
    }

    #[test]
    fn one_address_holds_a_few_connections() {
        let addresses = Arc::default();
        let ip = "192.0.2.1".parse().expect("ip");
        let shares: Vec<_> = (0..CONNECTIONS_PER_ADDRESS_MAX)
            .map(|_| AddressShare::take(&addresses, ip).expect("a share"))
            .collect();
        assert!(AddressShare::take(&addresses, ip).is_none());
        assert!(AddressShare::take(&addresses, "192.0.2.2".parse().expect("ip")).is_some());
        drop(shares);
        assert!(AddressShare::take(&addresses, ip).is_some());
    }
}
