//! `relaisd serve`: loads the configuration, binds the listeners, gives up privileges,
//! loads the secrets and confines itself, all on the one thread there is; then starts the
//! async runtime, whose threads inherit every restriction, and serves.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::ServeArgs;
use crate::config::Config;
use crate::hardening::{self, HardeningError, privileges};
use crate::server::{self, Listeners};
use nix::unistd::{Gid, Uid};
use relais_protocol::exit::{EX_CONFIG, EX_SOFTWARE, EX_USAGE};

/// Connections the kernel queues before relaisd accepts them, as tokio's own default:
/// room for a burst of reconnections after a restart.
const LISTEN_BACKLOG: i32 = 1024;

/// Files relaisd holds besides its client connections: the database and its journal, the
/// PostgreSQL pool, the listeners, admin and metrics clients, the runtime's own.
const FILES_BESIDES_CONNECTIONS: u64 = 1024;

/// Logs as structured journal entries when stderr is the journal (under systemd), so that
/// fields such as the audit records' MESSAGE_ID are queryable; formatted lines otherwise.
fn init_logging() {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_env("RELAIS_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
    };
    if std::env::var_os("JOURNAL_STREAM").is_some()
        && let Ok(journald) = tracing_journald::layer()
    {
        tracing_subscriber::registry()
            .with(filter())
            .with(journald.with_field_prefix(None))
            .init();
        return;
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
}

pub fn serve(args: ServeArgs) -> ExitCode {
    init_logging();
    let mut config = if args.dev {
        if let Err(e) = private_dir(&args.data) {
            eprintln!("error: {e}");
            return ExitCode::from(EX_CONFIG);
        }
        // `--listen` is where its clients, and the links it gives them, reach it.
        let client = args
            .listen
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8443)));
        Config::dev(args.data.clone(), client)
    } else {
        // `required_unless_present` guarantees a path here.
        let Some(path) = args.config.as_deref() else {
            return ExitCode::from(EX_USAGE);
        };
        match Config::load(path) {
            Ok(config) => config,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(EX_CONFIG);
            }
        }
    };
    if let Some(listen) = args.listen {
        config.listen.client = listen;
    }
    if let Some(listen) = args.metrics_listen {
        config.metrics.listen = listen;
    }
    if let Some(url) = args.storage {
        config.storage.backend = crate::config::StorageBackend::Postgres;
        config.storage.url = Some(url);
        config.storage.password_file = args.storage_password_file;
    }
    if let Err(e) = hardening::apply() {
        eprintln!("error: {e}");
        return ExitCode::from(EX_SOFTWARE);
    }
    match prepare(&config, args.dev, args.config.as_deref()) {
        Ok((bound, secrets, workers)) => run(config, args.dev, bound, secrets, workers),
        Err((code, message)) => {
            eprintln!("error: {message}");
            ExitCode::from(code)
        }
    }
}

/// Everything done before the runtime starts, in order; fails with an exit code and a
/// message.
fn prepare(
    config: &Config,
    dev: bool,
    config_file: Option<&Path>,
) -> Result<(Bound, server::Secrets, usize), (u8, String)> {
    let config_error = |e: &dyn std::fmt::Display| (EX_CONFIG, e.to_string());
    // Before any thread exists: taking the sockets also clears their variables.
    let activated = crate::activation::take().map_err(|e| config_error(&e))?;
    raise_open_files(config);
    // Resolved first, while the user database is readable and before anything is bound.
    let target = match privileges::target_if_root(&config.process) {
        // `--dev` is the README's first command, and on a fresh machine that is often run
        // as root with no service user yet: it still serves, as root with no capability,
        // no-new-privileges, Landlock and seccomp, and says how to do better.
        Err(privileges::PrivilegeError::UnknownUser(user)) if dev => {
            eprintln!(
                "warning: development mode started as root and there is no user {user:?} to switch to: \
                 running as root without capabilities; create it (`useradd --system --shell /usr/sbin/nologin {user}`) \
                 to run as that user"
            );
            None
        }
        other => other.map_err(|e| config_error(&e))?,
    };
    if dev {
        crate::tls::ensure_dev_certificates(
            &config.data_dir,
            &["localhost".into(), "127.0.0.1".into()],
        )
        .map_err(|e| config_error(&e))?;
    }
    let bound = bind(config, activated)?;
    // Loaded before giving up root, as systemd decrypts a unit's credentials before starting
    // it: unsealing needs the TPM, which only root (or the tss group) may open. Keys the
    // file source creates are in the data directory, which is handed over next.
    let secrets = server::Secrets::load(config).map_err(|e| (EX_CONFIG, format!("{e:#}")))?;
    if let Some(target) = &target {
        hand_over(config, &bound, target).map_err(|e| config_error(&e))?;
    }
    hardening::drop_privileges(target.as_ref()).map_err(|e| (EX_SOFTWARE, e.to_string()))?;
    if let Some(target) = &target {
        for path in std::iter::once(&config.data_dir).chain(&config.tls.private_key) {
            target.check_reachable(path).map_err(|e| config_error(&e))?;
        }
    }
    // Read now: the runtime's default reads cgroup files the sandbox hides.
    let workers = std::thread::available_parallelism().map_or(1, usize::from);
    hardening::confine(config, config_file).map_err(|e| match e {
        HardeningError::Filesystem(_) | HardeningError::Syscalls(_) => (EX_CONFIG, e.to_string()),
        _ => (EX_SOFTWARE, e.to_string()),
    })?;
    Ok((bound, secrets, workers))
}

/// Lifts the soft open-file limit to what `limits.connections_max` needs, as far as the
/// hard limit allows (no privilege needed), and warns when that is not enough: past the
/// limit, connections would fail in `accept` instead of meeting the connection limit's
/// refusal, and storage could not open a file.
fn raise_open_files(config: &Config) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let max = config.limits.connections_max;
    let needed = (max as u64).saturating_add(FILES_BESIDES_CONNECTIONS);
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    let wanted = needed.min(hard);
    let limit = if wanted > soft && setrlimit(Resource::RLIMIT_NOFILE, wanted, hard).is_ok() {
        wanted
    } else {
        soft
    };
    if limit < needed {
        tracing::warn!(
            "limits.connections_max is {max} but relaisd may open only {limit} files \
             (RLIMIT_NOFILE, `LimitNOFILE=` under systemd), {FILES_BESIDES_CONNECTIONS} of them \
             kept for storage and listeners: connections past about {usable} will fail; raise \
             the hard limit to {needed} or lower limits.connections_max",
            usable = limit.saturating_sub(FILES_BESIDES_CONNECTIONS),
        );
    } else {
        tracing::debug!(limit, "open-file limit");
    }
}

/// Starts the runtime on the confined process and serves until a signal.
fn run(
    mut config: Config,
    dev: bool,
    bound: Bound,
    secrets: server::Secrets,
    workers: usize,
) -> ExitCode {
    if dev && let Ok(address) = bound.client.local_addr() {
        // `--listen HOST:0`: the links name the port the system chose.
        config.server.public_address = Some(crate::config::dev_public_address(address));
    }
    announce(&config, dev, &bound);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(EX_SOFTWARE);
        }
    };
    runtime.block_on(async move {
        let listeners = match bound.adopt() {
            Ok(listeners) => listeners,
            Err(e) => {
                eprintln!("error: cannot use the listeners: {e}");
                return ExitCode::from(EX_SOFTWARE);
            }
        };
        match server::run(config, listeners, secrets, shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(EX_CONFIG)
            }
        }
    })
}

/// The listeners, bound while the process may still be root (a port below 1024, an admin
/// socket owned by another user), before the runtime exists.
struct Bound {
    client: std::net::TcpListener,
    admin: std::os::unix::net::UnixListener,
    admin_path: PathBuf,
    metrics: Option<std::net::TcpListener>,
}

impl Bound {
    /// Hands the listeners to the runtime; call from inside it.
    fn adopt(self) -> std::io::Result<Listeners> {
        Ok(Listeners {
            client: tokio::net::TcpListener::from_std(self.client)?,
            admin: tokio::net::UnixListener::from_std(self.admin)?,
            metrics: self
                .metrics
                .map(tokio::net::TcpListener::from_std)
                .transpose()?,
        })
    }
}

/// Takes the listeners systemd passed, or binds the configured addresses.
fn bind(config: &Config, activated: crate::activation::Activated) -> Result<Bound, (u8, String)> {
    let client = match activated.client {
        Some(listener) => listener,
        None => listen_tcp(config.listen.client).map_err(|e| {
            (
                EX_CONFIG,
                format!(
                    "cannot listen on {}: {e}; choose another address with --listen or listen.client",
                    config.listen.client
                ),
            )
        })?,
    };
    let admin_path = config.admin_socket();
    let admin = crate::admin::bind(
        &admin_path,
        config.admin.mode,
        config.admin.owner.as_deref(),
        config.admin.group.as_deref(),
    )
    .map_err(|e| {
        (
            EX_CONFIG,
            format!(
                "cannot create the admin socket {}: {e}",
                admin_path.display()
            ),
        )
    })?;
    let metrics = if config.metrics.enabled {
        Some(match activated.metrics {
            Some(listener) => listener,
            None => listen_tcp(config.metrics.listen).map_err(|e| {
                (
                    EX_CONFIG,
                    format!(
                        "cannot listen for metrics on {}: {e}; choose another address with --metrics-listen or metrics.listen",
                        config.metrics.listen
                    ),
                )
            })?,
        })
    } else {
        None
    };
    Ok(Bound {
        client,
        admin,
        admin_path,
        metrics,
    })
}

/// A non-blocking TCP listener with address reuse, as tokio binds them.
fn listen_tcp(address: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use nix::sys::socket::{
        AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage, setsockopt, sockopt,
    };
    use std::os::fd::AsRawFd;
    let family = if address.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let flags = SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK;
    let socket = nix::sys::socket::socket(family, SockType::Stream, flags, None)?;
    setsockopt(&socket, sockopt::ReuseAddr, &true)?;
    let address: SockaddrStorage = address.into();
    nix::sys::socket::bind(socket.as_raw_fd(), &address)?;
    nix::sys::socket::listen(&socket, Backlog::new(LISTEN_BACKLOG)?)?;
    Ok(std::net::TcpListener::from(socket))
}

/// Started as root: gives the data directory, and the admin socket unless the
/// configuration names its owner and group, to the user the daemon is about to become.
fn hand_over(
    config: &Config,
    bound: &Bound,
    target: &privileges::Target,
) -> Result<(), privileges::PrivilegeError> {
    target.give_directory(&config.data_dir)?;
    // The walk above gave the socket away too when it lies in the data directory: set the
    // configured owner and group again (`admin::bind` checked they resolve).
    let owner = match &config.admin.owner {
        Some(owner) => crate::admin::resolve_user(owner).ok().map(Uid::from_raw),
        None => Some(target.uid),
    };
    let group = match &config.admin.group {
        Some(group) => crate::admin::resolve_group(group).ok().map(Gid::from_raw),
        None => Some(target.gid),
    };
    nix::unistd::fchownat(
        nix::fcntl::AT_FDCWD,
        &bound.admin_path,
        owner,
        group,
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(|source| privileges::PrivilegeError::Chown {
        path: bound.admin_path.clone(),
        uid: target.uid.as_raw(),
        source,
    })
}

/// Prints where the daemon listens. The first line is for scripts and tests; the rest is
/// for people. A closed stdout must not stop the daemon, so write errors are ignored.
fn announce(config: &Config, dev: bool, bound: &Bound) {
    use std::io::Write as _;
    let metrics_address = bound
        .metrics
        .as_ref()
        .and_then(|l| l.local_addr().ok())
        .map_or_else(|| "off".to_owned(), |a| a.to_string());
    let address = bound
        .client
        .local_addr()
        .map_or_else(|_| config.listen.client.to_string(), |a| a.to_string());
    let admin = bound.admin_path.display();
    let mut lines = vec![format!(
        "relaisd: listening clients={address} admin={admin} metrics={metrics_address}"
    )];
    if dev {
        let data = config.data_dir.display();
        lines.push(format!(
            "  development mode, domain localhost, state in {data}"
        ));
        lines.push(format!(
            "  clients connect to https://{address} trusting {}",
            config.data_dir.join("ca.pem").display()
        ));
        lines.push(format!(
            "  administer with: relaisd admin --socket {admin} user add alice"
        ));
    }
    let mut stdout = std::io::stdout().lock();
    for line in lines {
        let _ = writeln!(stdout, "{line}");
    }
    let _ = stdout.flush();
}

pub(super) fn private_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop relaisd with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}
