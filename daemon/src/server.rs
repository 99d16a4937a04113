//! The daemon's assembly: storage, delivery service, hub, listeners, and shutdown.
//!
//! The client listener speaks TLS (rustls) and then HTTP/1.1: `/v1/connect` upgrades to
//! the WebSocket protocol, `/healthz` and `/readyz` answer plain GETs. The TLS exporter of
//! each connection is computed right after the handshake and handed to the WebSocket
//! session for channel-bound authentication. SIGHUP reloads the TLS certificate and key
//! from the key source without closing the listener or any connection.

use std::future::Future;
use std::sync::Arc;
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
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::admin::{self, Admin};
use crate::admission::{Budgeted, Gate, Refusal, Ticket};
use crate::config::{Config, Durability, Limits};
use crate::connection;
use crate::delivery::DeliveryService;
use crate::directory::{ClaimLimiter, FailureLimiter};
use crate::hub::Hub;
use crate::keys::{KeySource, ServerKeys};
use crate::metrics_listener::Sources;
use crate::requests::Relay;
use crate::shared::{Accounts, ConnInfo, Health, Services};
use crate::tls;
use relais_store::{Location, Store, StoreOptions};

/// Time a client has to finish the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time an HTTP request has to send its headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Refused connections answered with an HTTP 503 at once; beyond them a refused connection
/// is closed without an answer. Each takes a file descriptor beyond `connections_max`,
/// within the 1,024 `serve` adds to the open-file limit for the daemon's own files.
const REFUSALS_MAX: usize = 64;
/// Time a refused connection has for its TLS handshake, its request and the answer.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes of a refused connection's request read before the answer (its head only, so that
/// closing does not reset the connection before the client reads the answer).
const REFUSAL_REQUEST_BYTES_MAX: usize = 4096;
/// Connections refused for a global limit are logged at most this often, with how many
/// came since: enough to see an attack start, not a log line per connection.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// Time connections get to finish after shutdown starts.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(15);
/// Bytes the WebSocket layer reads at once per connection: zero-filled, so resident on every
/// idle connection, whose memory it bounds. A frame larger than this, such as a
/// 1 KiB message with its envelope, arrives whole over several reads, each served from
/// what rustls already decrypted, without a system call.
const WEBSOCKET_READ_BUFFER_BYTES: usize = 1024;
/// How often expired messages are purged.
const EXPIRY_INTERVAL: Duration = Duration::from_secs(600);
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
    /// Serves the client certificate; SIGHUP swaps what it holds.
    pub resolver: Arc<tls::CertificateResolver>,
    /// `None` when metrics are served without TLS.
    pub metrics_tls: Option<Arc<rustls::ServerConfig>>,
    pub keys: ServerKeys,
    /// Where the keys came from, to read the TLS key again on SIGHUP.
    pub key_source: KeySource,
    /// What the relay reports of the chain it serves (expiry for the metrics, the pin for
    /// enrollment links), read from it now, before the sandbox may hide its file.
    pub served: tls::ServedChain,
    pub access: admin::Access,
    /// The database, with the PostgreSQL password if there is one.
    pub storage: Location,
}

impl Secrets {
    /// Loads the TLS configurations and the server's keys from the configured key source.
    pub fn load(config: &Config) -> anyhow::Result<Secrets> {
        if config.tls.danger_allow_tls12 {
            tracing::warn!("tls.danger_allow_tls12 is set: TLS 1.2 clients are accepted");
        }
        let key_source = KeySource::from_config(config)?;
        tracing::info!(source = %key_source.describe(), "loading the server's keys");
        if let KeySource::File { .. } = key_source {
            tracing::warn!(
                "keys.source = file: the server's secrets are plain files, for development only"
            );
        }
        let certified = tls::identity_key(key_source.tls_identity()?)?;
        let served = tls::ServedChain::of(&certified);
        let resolver = tls::CertificateResolver::new(certified);
        let tls = tls::server_config(resolver.clone(), config.tls.danger_allow_tls12)?;
        let metrics_tls = match (&config.metrics.certificate, &config.metrics.private_key) {
            (Some(certificate), Some(key)) => Some(tls::file_config(certificate, key, false)?),
            _ => None,
        };
        let keys = key_source.server_keys()?;
        let storage = config.storage_location().map_err(anyhow::Error::msg)?;
        let access =
            admin::Access::resolve(&config.admin.admin_groups, &config.admin.reader_groups)
                .map_err(anyhow::Error::msg)?;
        Ok(Secrets {
            tls,
            resolver,
            metrics_tls,
            keys,
            key_source,
            served,
            access,
            storage,
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
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (parts, listener_secrets) = assemble(config, secrets, shutdown_rx).await?;
    let tasks = Tasks::start(listeners, &parts, listener_secrets);
    shutdown.await;
    tasks.drain(&parts, shutdown_tx).await;
    Ok(())
}

/// What of the secrets only the listeners' tasks use, once the parts are built.
struct ListenerSecrets {
    tls: Arc<rustls::ServerConfig>,
    resolver: Arc<tls::CertificateResolver>,
    metrics_tls: Option<Arc<rustls::ServerConfig>>,
    access: admin::Access,
}

/// What the serving tasks hold; each is handed only its share.
struct Parts {
    /// The listeners' settings, the limits, the retention and the admin socket's path.
    config: Config,
    health: Arc<Health>,
    services: Arc<Services>,
    /// What devices' connections reach.
    relay: Arc<Relay>,
    admin: Arc<Admin>,
    /// Where the keys came from; the TLS key is read again from there on SIGHUP.
    key_source: KeySource,
    shutdown: watch::Receiver<bool>,
}

/// Opens storage and builds what the tasks share. The server's MLS signing key goes into
/// the delivery service and is not kept here; the code secret goes to [`Accounts`].
async fn assemble(
    config: Config,
    secrets: Secrets,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<(Parts, ListenerSecrets)> {
    if config.storage.durability == Durability::Normal {
        tracing::warn!(
            "storage.durability = normal: acknowledged messages may be lost on power failure"
        );
    }
    let Secrets {
        tls,
        resolver,
        metrics_tls,
        keys,
        key_source,
        served,
        access,
        storage,
    } = secrets;
    let hub = Arc::new(Hub::default());
    let store = open_store(&config, &storage, &keys, hub.clone()).await?;
    let ServerKeys {
        code_secret,
        signing,
    } = keys;
    let services = Arc::new(Services {
        ds: DeliveryService::new(
            store.clone(),
            &signing,
            &config.domain,
            &config.limits,
            database_directory(&storage),
        ),
        store: store.clone(),
        hub,
    });
    let accounts = Arc::new(Accounts::new(
        config.domain.clone(),
        config.users.clone(),
        store,
        code_secret,
    ));
    let health = Arc::new(Health::starting(served));
    let relay = Arc::new(Relay {
        accounts: accounts.clone(),
        services: services.clone(),
        limits: config.limits.clone(),
        enrollment: config.enrollment.clone(),
        issuing_codes: tokio::sync::Mutex::new(()),
        limiter: FailureLimiter::new(config.limits.auth_failures_per_minute),
        claims: ClaimLimiter::new(config.limits.claims_per_user_hour),
        server_signature_key: signing.verifying_key().to_bytes().to_vec(),
    });
    let admin = Arc::new(Admin {
        config: config.clone(),
        accounts,
        services: services.clone(),
        health: health.clone(),
        key_provider: key_source.describe(),
    });
    let parts = Parts {
        config,
        health,
        services,
        relay,
        admin,
        key_source,
        shutdown,
    };
    let listener_secrets = ListenerSecrets {
        tls,
        resolver,
        metrics_tls,
        access,
    };
    Ok((parts, listener_secrets))
}

/// Opens the database, whose writer pushes committed messages through `hub`, and seals the
/// audit log's head under the server's key before anything is audited.
async fn open_store(
    config: &Config,
    storage: &Location,
    keys: &ServerKeys,
    hub: Arc<Hub>,
) -> anyhow::Result<Store> {
    tracing::info!(database = %storage, "opening storage");
    let store = Store::open(
        storage,
        StoreOptions {
            durability: config.storage.durability,
            batch_max: config.storage.batch_max,
            queue_messages_max: config.limits.queue_messages_max,
            queue_bytes_max: config.limits.queue_bytes_max,
            queue_share_per_sender_percent: config.limits.queue_share_per_sender_percent,
            catch_up: Duration::from_secs(config.storage.catch_up_seconds),
        },
        hub,
    )
    .await?;
    store
        .seal_audit(&relais_store::AuditKey::derive(keys.code_secret.as_ref()))
        .await?;
    Ok(store)
}

/// The directory a SQLite database is in, whose free space the delivery service's disk
/// guard watches; `None` for PostgreSQL, whose disk is another machine's.
fn database_directory(storage: &Location) -> Option<&std::path::Path> {
    match storage {
        Location::Sqlite(path) => path.parent().map(|dir| {
            if dir.as_os_str().is_empty() {
                std::path::Path::new(".")
            } else {
                dir
            }
        }),
        Location::Postgres(_) => None,
    }
}

/// The tasks that serve: listeners, timers, and the handle every connection holds.
struct Tasks {
    accept: JoinHandle<()>,
    /// Stopped as soon as the client listener is: admin, TLS reload, expiry, metrics,
    /// watchdog.
    others: Vec<JoinHandle<()>>,
    tracker: Tracker,
    /// Ends when every connection has dropped its `Tracker`.
    connections_done: mpsc::Receiver<()>,
}

impl Tasks {
    /// Starts serving, then tells systemd the relay is ready.
    fn start(listeners: Listeners, parts: &Parts, secrets: ListenerSecrets) -> Tasks {
        let (tracker_tx, connections_done) = mpsc::channel::<()>(1);
        let tracker = Tracker(tracker_tx);
        let config = &parts.config;
        let accept = tokio::spawn(accept_loop(
            listeners.client,
            TlsAcceptor::from(secrets.tls),
            config.listen.proxy_protocol_from.clone(),
            config.limits.clone(),
            Arc::new(Http {
                health: parts.health.clone(),
                relay: parts.relay.clone(),
                shutdown: parts.shutdown.clone(),
            }),
            tracker.clone(),
        ));
        let reload = Reload {
            health: parts.health.clone(),
            key_source: parts.key_source.clone(),
            resolver: secrets.resolver,
            sealed_under_seccomp: matches!(parts.key_source, KeySource::Sealed { .. })
                && !config.hardening.danger_disable_seccomp,
        };
        let mut others = vec![
            tokio::spawn(admin::serve(
                listeners.admin,
                parts.admin.clone(),
                secrets.access,
            )),
            tokio::spawn(reload.run()),
            tokio::spawn(expiry_loop(parts.services.clone(), config.retention.days)),
        ];
        if let Some(listener) = listeners.metrics {
            others.push(tokio::spawn(crate::metrics_listener::serve(
                listener,
                config.metrics.allow.clone(),
                Arc::new(Sources {
                    health: parts.health.clone(),
                    store: parts.services.store.clone(),
                    data_dir: config.data_dir.clone(),
                }),
                secrets.metrics_tls.map(TlsAcceptor::from),
            )));
        }
        parts.health.set_ready(true);
        notify_systemd(&[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status("serving"),
        ]);
        if let Some(period) = sd_notify::watchdog_enabled() {
            others.push(tokio::spawn(watchdog_loop(
                parts.services.hub.clone(),
                period,
            )));
        }
        tracing::info!("relaisd ready");
        Tasks {
            accept,
            others,
            tracker,
            connections_done,
        }
    }

    /// Stops accepting, tells every connection to close, waits for them up to
    /// `DRAIN_TIMEOUT`, then removes the admin socket and closes storage.
    async fn drain(mut self, parts: &Parts, shutdown: watch::Sender<bool>) {
        tracing::info!("shutting down: draining connections");
        parts.health.set_ready(false);
        notify_systemd(&[sd_notify::NotifyState::Stopping]);
        let _ = shutdown.send(true);
        let _ = self.accept.await;
        for task in &self.others {
            task.abort();
        }
        drop(self.tracker);
        if tokio::time::timeout(DRAIN_TIMEOUT, self.connections_done.recv())
            .await
            .is_err()
        {
            tracing::warn!("some connections did not close in time");
        }
        let _ = std::fs::remove_file(parts.config.admin_socket());
        parts.services.store.clone().close().await;
        tracing::info!("stopped");
    }
}

/// What reloading the TLS certificate and key needs.
struct Reload {
    health: Arc<Health>,
    key_source: KeySource,
    resolver: Arc<tls::CertificateResolver>,
    /// The keys are sealed and the system-call filter is on: unsealing again is impossible.
    sealed_under_seccomp: bool,
}

impl Reload {
    /// Reloads the TLS certificate and key on each SIGHUP. A reload that fails keeps the
    /// current pair and says why; connections in progress keep the pair they started with.
    async fn run(self) {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangup) = signal(SignalKind::hangup()) else {
            tracing::error!(
                "cannot install the SIGHUP handler; restart relaisd to load a new TLS key"
            );
            return;
        };
        while hangup.recv().await.is_some() {
            self.once().await;
        }
    }

    async fn once(&self) {
        if self.sealed_under_seccomp {
            // Unsealing runs systemd-creds, and once relaisd serves, its system-call filter
            // ends the process on any attempt to run a program (hardening/syscalls.rs).
            tracing::error!(
                "keys.source = sealed cannot load a new TLS key in place: relaisd may run no program once it serves; restart it to serve the rotated key (under systemd, socket activation keeps the listener)"
            );
            self.health.key_provider_failed();
            return;
        }
        let source = self.key_source.clone();
        // Unsealing runs systemd-creds and waits for the TPM: not on a runtime thread.
        let loaded = tokio::task::spawn_blocking(move || {
            source
                .tls_identity()
                .map_err(tls::TlsError::from)
                .and_then(tls::identity_key)
        })
        .await;
        match loaded {
            Ok(Ok(certified)) => {
                let served = tls::ServedChain::of(&certified);
                self.resolver.replace(certified);
                self.health.certificate_reloaded(served);
                tracing::info!(
                    expires = served.expiry.map(|s| crate::format_time_ms(s * 1000)),
                    pin = served.pin.map(|p| p.to_string()),
                    "reloaded the TLS certificate and key"
                );
            }
            Ok(Err(e)) => {
                self.health.key_provider_failed();
                tracing::error!(error = %e, "cannot reload the TLS key; still serving the previous one")
            }
            Err(e) => {
                self.health.key_provider_failed();
                tracing::error!(error = %e, "the TLS reload task failed; still serving the previous key")
            }
        }
    }
}

fn notify_systemd(state: &[sd_notify::NotifyState]) {
    if std::env::var_os("NOTIFY_SOCKET").is_some()
        && let Err(e) = sd_notify::notify(state)
    {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// Accepts client connections within the limits (`admission.rs`); a connection beyond them
/// gets an HTTP 503 saying which, as long as fewer than `REFUSALS_MAX` are being refused.
/// A connection from a balancer in `listen.proxy_protocol_from` is admitted under the
/// client address its PROXY protocol header names (`proxy_protocol.rs`).
async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    balancers: Vec<std::net::IpAddr>,
    limits: Limits,
    http: Arc<Http>,
    tracker: Tracker,
) {
    let mut shutdown = http.shutdown.clone();
    // Headers awaited at once, each for at most `proxy_protocol::HEADER_TIMEOUT`: as many
    // as connections may wait to authenticate.
    let headers = Arc::new(Semaphore::new(limits.unauthenticated_max));
    let accepting = Arc::new(Accepting {
        gate: Gate::new(&limits),
        refusals: Arc::new(Semaphore::new(REFUSALS_MAX)),
        acceptor,
        http,
        tracker,
    });
    loop {
        let accepted = tokio::select! {
            _ = shutdown.changed() => return,
            accepted = listener.accept() => accepted,
        };
        let (mut tcp, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Typically out of file descriptors: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        if !balancers.contains(&peer.ip()) {
            accepting.admit(tcp, peer);
            continue;
        }
        let Ok(waiting) = headers.clone().try_acquire_owned() else {
            accepting.refused(peer, Refusal::Unauthenticated);
            continue;
        };
        let accepting = accepting.clone();
        tokio::spawn(async move {
            let _waiting = waiting;
            match crate::proxy_protocol::read(&mut tcp, peer).await {
                Ok(client) => accepting.admit(tcp, client),
                Err(e) => {
                    crate::metrics::METRICS
                        .handshake_failed(crate::metrics::HandshakeFailure::Error);
                    tracing::warn!(balancer = %peer, error = %e, "dropping a balancer's connection");
                }
            }
        });
    }
}

/// What admitting a client connection needs.
struct Accepting {
    gate: Gate,
    refusals: Arc<Semaphore>,
    acceptor: TlsAcceptor,
    http: Arc<Http>,
    tracker: Tracker,
}

impl Accepting {
    /// Admits a connection from `peer` (the client, behind a balancer) and serves it, or
    /// refuses it with a 503.
    fn admit(&self, tcp: tokio::net::TcpStream, peer: std::net::SocketAddr) {
        let ticket = match self.gate.admit(peer.ip()) {
            Ok(ticket) => ticket,
            Err(refusal) => {
                self.refused(peer, refusal);
                if let Ok(permit) = self.refusals.clone().try_acquire_owned() {
                    let acceptor = self.acceptor.clone();
                    tokio::spawn(async move {
                        let _permit = permit;
                        let _ =
                            tokio::time::timeout(REFUSAL_TIMEOUT, refuse(tcp, acceptor, refusal))
                                .await;
                    });
                }
                return;
            }
        };
        let (acceptor, http, tracker) = (
            self.acceptor.clone(),
            self.http.clone(),
            self.tracker.clone(),
        );
        tokio::spawn(async move {
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
            let io = Budgeted::new(tls, ticket.clone());
            serve_http(io, http, info, ticket, tracker).await;
        });
    }

    /// Counts and logs a connection refused for a limit. Refusals of one address are
    /// logged at debug only, and the others at most once per `REFUSAL_LOG_INTERVAL` with
    /// how many came since: under attack the log must not grow with every connection.
    fn refused(&self, peer: std::net::SocketAddr, refusal: Refusal) {
        crate::metrics::METRICS.handshake_failed(crate::metrics::HandshakeFailure::LimitReached);
        if refusal == Refusal::Address {
            tracing::debug!(%peer, "{}; refusing", refusal.message());
            return;
        }
        static LAST_LOGGED: std::sync::Mutex<Option<(std::time::Instant, u64)>> =
            std::sync::Mutex::new(None);
        let Ok(mut last) = LAST_LOGGED.lock() else {
            return;
        };
        let now = std::time::Instant::now();
        match &mut *last {
            Some((at, unlogged)) if now.duration_since(*at) < REFUSAL_LOG_INTERVAL => {
                *unlogged += 1;
            }
            _ => {
                let unlogged = last.map_or(0, |(_, n)| n);
                *last = Some((now, 0));
                tracing::warn!(%peer, refused_since_last_report = unlogged, "{}; refusing", refusal.message());
            }
        }
    }
}

/// Answers a connection beyond the limits with an HTTP 503 that says which limit, then
/// closes it; the caller bounds the time this takes.
async fn refuse(tcp: tokio::net::TcpStream, acceptor: TlsAcceptor, refusal: Refusal) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut tls) = acceptor.accept(tcp).await else {
        return;
    };
    // Read the request's head, so that closing does not reset the connection first.
    let mut head = Vec::new();
    let mut buffer = [0u8; 512];
    while head.len() < REFUSAL_REQUEST_BYTES_MAX && !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match tls.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buffer[..n]),
        }
    }
    let body = format!("{}\n", refusal.message());
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\nretry-after: 5\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    if tls.write_all(response.as_bytes()).await.is_ok() {
        let _ = tls.shutdown().await;
    }
}

/// Serves one connection's HTTP: a single request (no keep-alive: a client needs only the
/// upgrade, and a connection kept open for more would hold its slot without one), which
/// may become a WebSocket session holding `ticket` for as long as it lasts. hyper's own
/// `keep_alive(false)` would also mark the upgrade's answer `connection: close`, so every
/// other answer says it instead.
async fn serve_http<S>(
    io: S,
    http: Arc<Http>,
    info: ConnInfo,
    ticket: Arc<Ticket>,
    tracker: Tracker,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let router = Router::new()
        .route("/v1/connect", get(websocket))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .layer(Extension(info))
        .layer(Extension(ticket))
        .layer(Extension(tracker))
        .layer(axum::middleware::map_response(close_unless_upgraded))
        .with_state(http.clone());
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let conn = builder
        .serve_connection(TokioIo::new(io), TowerToHyperService::new(router))
        .with_upgrades();
    tokio::pin!(conn);
    let mut shutdown = http.shutdown.clone();
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = shutdown.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
        }
    }
}

/// Ends the connection after any answer but the upgrade to a WebSocket.
async fn close_unless_upgraded(mut response: Response) -> Response {
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        response.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
    }
    response
}

/// What the client listener's HTTP routes need.
struct Http {
    health: Arc<Health>,
    relay: Arc<Relay>,
    shutdown: watch::Receiver<bool>,
}

async fn readyz(State(http): State<Arc<Http>>) -> Response {
    if http.health.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

async fn websocket(
    upgrade: WebSocketUpgrade,
    State(http): State<Arc<Http>>,
    Extension(info): Extension<ConnInfo>,
    Extension(ticket): Extension<Arc<Ticket>>,
    Extension(tracker): Extension<Tracker>,
) -> Response {
    if !http.health.is_ready() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    // The WebSocket layer's own limit sits above ours, so that a frame slightly over
    // `frame_bytes_max` still gets a FRAME_TOO_LARGE error; anything larger is cut off.
    // Before authentication the ticket's read budget is far smaller (`admission.rs`).
    let ceiling = http.relay.limits.frame_bytes_max.saturating_mul(2);
    upgrade
        .read_buffer_size(WEBSOCKET_READ_BUFFER_BYTES)
        .max_message_size(ceiling)
        .max_frame_size(ceiling)
        .on_upgrade(move |socket| async move {
            let _tracker = tracker;
            // The session holds the connection's slot until it ends.
            let (relay, shutdown) = (http.relay.clone(), http.shutdown.clone());
            connection::serve(socket, relay, shutdown, info, ticket).await;
        })
}

/// Pings systemd's watchdog at half its period from the runtime that serves clients, with
/// a status line: a stuck runtime stops the pings and systemd restarts the service.
async fn watchdog_loop(hub: Arc<Hub>, period: Duration) {
    let mut interval = tokio::time::interval(period / 2);
    loop {
        interval.tick().await;
        let status = format!("serving {} devices", hub.online());
        notify_systemd(&[
            sd_notify::NotifyState::Watchdog,
            sd_notify::NotifyState::Status(&status),
        ]);
    }
}

async fn expiry_loop(services: Arc<Services>, retention_days: u32) {
    let mut interval = tokio::time::interval(EXPIRY_INTERVAL);
    loop {
        interval.tick().await;
        match services.expire(retention_days).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(expired = n, "expired undelivered messages past retention"),
            Err(e) => tracing::error!(error = %e, "cannot expire old messages"),
        }
    }
}
