//! The daemon's assembly: storage, delivery service, hub, listeners, and shutdown.
//!
//! The client listener speaks TLS (rustls) and then HTTP/1.1: `/v1/connect` upgrades to
//! the WebSocket protocol, `/healthz` and `/readyz` answer plain GETs. The TLS exporter of
//! each connection is computed right after the handshake and handed to the WebSocket
//! session for channel-bound authentication.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Extension, State, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_rustls::TlsAcceptor;

use crate::config::{Config, Durability};
use crate::connection::{self, ConnInfo};
use crate::delivery::DeliveryService;
use crate::directory::FailureLimiter;
use crate::hub::Hub;
use crate::keys::ServerKeys;
use crate::store::{Store, StoreOptions};
use crate::{admin, tls};

/// Time a client has to finish the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time an HTTP request has to send its headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Time connections get to finish after shutdown starts.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(15);
/// Bytes the WebSocket layer reads at once per connection. tungstenite's default, 128 KiB,
/// is zero-filled and so resident for every idle connection (146 KiB each, measured);
/// frames larger than this still arrive whole, over several reads.
const WEBSOCKET_READ_BUFFER_BYTES: usize = 8 * 1024;
/// How often expired messages are purged.
const EXPIRY_INTERVAL: Duration = Duration::from_secs(600);
/// Message ids are remembered this much longer than messages, so a late resubmission is
/// still recognised after the original expired (D6).
const SUBMISSION_IDS_EXTRA_DAYS: i64 = 30;

/// Everything connections share.
pub struct Shared {
    pub config: Config,
    pub store: Store,
    pub ds: DeliveryService,
    pub hub: Arc<Hub>,
    pub keys: ServerKeys,
    pub server_signature_key: Vec<u8>,
    pub limiter: FailureLimiter,
    pub shutdown: watch::Receiver<bool>,
    pub ready: AtomicBool,
    pub started: std::time::Instant,
    /// When the client certificate expires (Unix seconds), for the metrics.
    pub certificate_expiry: Option<i64>,
}

/// A handle every connection task holds; shutdown waits until all are dropped.
#[derive(Clone)]
struct Tracker(#[allow(dead_code)] mpsc::Sender<()>);

/// Listeners bound by the caller (so `main` can report errors and ports before serving).
pub struct Listeners {
    pub client: TcpListener,
    pub admin: UnixListener,
    /// `None` when metrics are disabled.
    pub metrics: Option<TcpListener>,
}

/// What the daemon reads before it confines itself (`hardening::confine`): its secrets,
/// and the admin groups, which need the group database.
pub struct Secrets {
    pub tls: Arc<rustls::ServerConfig>,
    /// `None` when metrics are served without TLS.
    pub metrics_tls: Option<Arc<rustls::ServerConfig>>,
    pub keys: ServerKeys,
    /// When the client certificate expires (Unix seconds), for the metrics.
    pub certificate_expiry: Option<i64>,
    pub access: admin::Access,
}

impl Secrets {
    /// Loads the TLS configurations and the server's keys, generating missing keys.
    pub fn load(config: &Config) -> anyhow::Result<Secrets> {
        if config.tls.danger_allow_tls12 {
            tracing::warn!("tls.danger_allow_tls12 is set: TLS 1.2 clients are accepted");
        }
        let tls = tls::server_config(
            &config.tls.certificate,
            &config.tls.private_key,
            config.tls.danger_allow_tls12,
        )?;
        let metrics_tls = match (&config.metrics.certificate, &config.metrics.private_key) {
            (Some(certificate), Some(key)) => Some(tls::server_config(certificate, key, false)?),
            _ => None,
        };
        let keys = ServerKeys::load_or_create(&config.keys_dir())?;
        let access =
            admin::Access::resolve(&config.admin.admin_groups, &config.admin.reader_groups)
                .map_err(anyhow::Error::msg)?;
        Ok(Secrets {
            tls,
            metrics_tls,
            keys,
            certificate_expiry: tls::certificate_not_after(&config.tls.certificate),
            access,
        })
    }
}

/// Runs the daemon until `shutdown` completes, then drains and returns.
pub async fn run(
    config: Config,
    listeners: Listeners,
    secrets: Secrets,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    if config.storage.durability == Durability::Normal {
        tracing::warn!(
            "storage.durability = normal: acknowledged messages may be lost on power failure"
        );
    }
    let Secrets {
        tls: tls_config,
        metrics_tls,
        keys,
        certificate_expiry,
        access,
    } = secrets;
    let hub = Arc::new(Hub::default());
    let store = Store::open(
        &config.database_path(),
        StoreOptions {
            durability: config.storage.durability,
            batch_max: config.storage.batch_max,
            queue_messages_max: config.limits.queue_messages_max,
        },
        hub.clone(),
    )
    .await?;
    let server_signature_key = keys.signing.verifying_key().to_bytes().to_vec();
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        ds: DeliveryService::new(store.clone(), &keys.signing, &config.domain),
        limiter: FailureLimiter::new(config.limits.auth_failures_per_minute),
        store: store.clone(),
        hub,
        keys,
        server_signature_key,
        shutdown: shutdown_rx,
        ready: AtomicBool::new(false),
        started: std::time::Instant::now(),
        certificate_expiry,
        config,
    });

    let (tracker_tx, mut tracker_rx) = mpsc::channel::<()>(1);
    let tracker = Tracker(tracker_tx);
    let accept = tokio::spawn(accept_loop(
        listeners.client,
        TlsAcceptor::from(tls_config),
        shared.clone(),
        tracker.clone(),
    ));
    let admin_task = tokio::spawn(admin::serve(listeners.admin, shared.clone(), access));
    let expiry = tokio::spawn(expiry_loop(shared.clone()));
    let metrics_task = listeners.metrics.map(|listener| {
        tokio::spawn(crate::metrics_listener::serve(
            listener,
            shared.clone(),
            metrics_tls.map(TlsAcceptor::from),
        ))
    });

    shared.ready.store(true, Ordering::SeqCst);
    notify_systemd(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status("serving"),
    ]);
    let watchdog = sd_notify::watchdog_enabled()
        .map(|period| tokio::spawn(watchdog_loop(shared.clone(), period)));
    tracing::info!("relaisd ready");

    shutdown.await;
    tracing::info!("shutting down: draining connections");
    shared.ready.store(false, Ordering::SeqCst);
    notify_systemd(&[sd_notify::NotifyState::Stopping]);
    let _ = shutdown_tx.send(true);
    let _ = accept.await;
    admin_task.abort();
    expiry.abort();
    if let Some(task) = metrics_task {
        task.abort();
    }
    if let Some(task) = watchdog {
        task.abort();
    }
    drop(tracker);
    if tokio::time::timeout(DRAIN_TIMEOUT, tracker_rx.recv())
        .await
        .is_err()
    {
        tracing::warn!("some connections did not close in time");
    }
    let _ = std::fs::remove_file(shared.config.admin_socket());
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}

fn notify_systemd(state: &[sd_notify::NotifyState]) {
    if std::env::var_os("NOTIFY_SOCKET").is_some()
        && let Err(e) = sd_notify::notify(state)
    {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    shared: Arc<Shared>,
    tracker: Tracker,
) {
    let mut shutdown = shared.shutdown.clone();
    let slots = Arc::new(Semaphore::new(shared.config.limits.connections_max));
    loop {
        let accepted = tokio::select! {
            _ = shutdown.changed() => return,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Typically out of file descriptors: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "connection limit reached; closing new connection");
            crate::metrics::METRICS
                .handshake_failed(crate::metrics::HandshakeFailure::LimitReached);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, shared, tracker) = (acceptor.clone(), shared.clone(), tracker.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let tls = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
            {
                Ok(Ok(tls)) => {
                    crate::metrics::METRICS.tls_handshakes.inc();
                    tls
                }
                Ok(Err(e)) => {
                    crate::metrics::METRICS
                        .handshake_failed(crate::metrics::HandshakeFailure::Error);
                    crate::metrics::METRICS.error(
                        crate::metrics::ErrorKind::Tls,
                        crate::metrics::ErrorSource::Peer,
                    );
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    crate::metrics::METRICS
                        .handshake_failed(crate::metrics::HandshakeFailure::Timeout);
                    return;
                }
            };
            let mut exporter = vec![0u8; relais_protocol::auth::EXPORTER_BYTES];
            if tls
                .get_ref()
                .1
                .export_keying_material(&mut exporter, relais_protocol::auth::EXPORTER_LABEL, None)
                .is_err()
            {
                return;
            }
            let info = ConnInfo {
                peer,
                exporter: exporter.into(),
            };
            serve_http(tls, shared, info, tracker).await;
        });
    }
}

async fn serve_http<S>(io: S, shared: Arc<Shared>, info: ConnInfo, tracker: Tracker)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let router = Router::new()
        .route("/v1/connect", get(websocket))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .layer(Extension(info))
        .layer(Extension(tracker))
        .with_state(shared.clone());
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let conn = builder
        .serve_connection(TokioIo::new(io), TowerToHyperService::new(router))
        .with_upgrades();
    tokio::pin!(conn);
    let mut shutdown = shared.shutdown.clone();
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = shutdown.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
        }
    }
}

async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    if shared.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

async fn websocket(
    upgrade: WebSocketUpgrade,
    State(shared): State<Arc<Shared>>,
    Extension(info): Extension<ConnInfo>,
    Extension(tracker): Extension<Tracker>,
) -> Response {
    if !shared.ready.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    // The WebSocket layer's own limit sits above ours, so that a frame slightly over
    // `frame_bytes_max` still gets a FRAME_TOO_LARGE error; anything larger is cut off.
    let ceiling = shared.config.limits.frame_bytes_max.saturating_mul(2);
    upgrade
        .read_buffer_size(WEBSOCKET_READ_BUFFER_BYTES)
        .max_message_size(ceiling)
        .max_frame_size(ceiling)
        .on_upgrade(move |socket| async move {
            let _tracker = tracker;
            connection::serve(socket, shared, info).await;
        })
}

/// Pings systemd's watchdog at half its period from the runtime that serves clients, with
/// a status line: a stuck runtime stops the pings and systemd restarts the service.
async fn watchdog_loop(shared: Arc<Shared>, period: Duration) {
    let mut interval = tokio::time::interval(period / 2);
    loop {
        interval.tick().await;
        let status = format!("serving {} devices", shared.hub.online());
        notify_systemd(&[
            sd_notify::NotifyState::Watchdog,
            sd_notify::NotifyState::Status(&status),
        ]);
    }
}

async fn expiry_loop(shared: Arc<Shared>) {
    let mut interval = tokio::time::interval(EXPIRY_INTERVAL);
    loop {
        interval.tick().await;
        match expire_now(&shared).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(expired = n, "expired undelivered messages past retention"),
            Err(e) => tracing::error!(error = %e, "cannot expire old messages"),
        }
    }
}

/// Deletes messages older than the retention period, and message ids older than that
/// plus a margin; returns how many messages expired.
pub async fn expire_now(shared: &Shared) -> Result<u64, crate::store::StoreError> {
    let day_ms = 86_400_000i64;
    let now = crate::now_ms();
    let days = i64::from(shared.config.retention.days);
    shared
        .store
        .expire(
            now - days * day_ms,
            now - (days + SUBMISSION_IDS_EXTRA_DAYS) * day_ms,
        )
        .await
}
