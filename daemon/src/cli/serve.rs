//! `relaisd serve` and `relaisd restore`.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;

use sha2::{Digest, Sha256};

use super::{EX_CONFIG, EX_DATAERR, EX_SOFTWARE, EX_USAGE, ServeArgs};
use crate::config::Config;
use crate::server::{self, Listeners};

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
        Config::dev(args.data.clone(), SocketAddr::from(([127, 0, 0, 1], 8443)))
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
    if let Err(e) = crate::hardening::apply() {
        eprintln!("error: {e}");
        return ExitCode::from(super::EX_SOFTWARE);
    }
    // Before any thread exists: taking the sockets also clears their variables.
    let activated = match crate::activation::take() {
        Ok(activated) => activated,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
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
        if args.dev
            && let Err(e) = crate::tls::ensure_dev_certificates(&config.data_dir, &["localhost".into(), "127.0.0.1".into()])
        {
            eprintln!("error: {e}");
            return ExitCode::from(EX_CONFIG);
        }
        let client = match activated.client {
            Some(listener) => tokio::net::TcpListener::from_std(listener),
            None => tokio::net::TcpListener::bind(config.listen.client).await,
        };
        let client = match client {
            Ok(l) => l,
            Err(e) => {
                eprintln!(
                    "error: cannot listen on {}: {e}; choose another address with --listen or listen.client",
                    config.listen.client
                );
                return ExitCode::from(EX_CONFIG);
            }
        };
        let admin_path = config.admin_socket();
        let admin = match crate::admin::bind(
            &admin_path,
            config.admin.mode,
            config.admin.owner.as_deref(),
            config.admin.group.as_deref(),
        ) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("error: cannot create the admin socket {}: {e}", admin_path.display());
                return ExitCode::from(EX_CONFIG);
            }
        };
        let metrics = if config.metrics.enabled {
            let bound = match activated.metrics {
                Some(listener) => tokio::net::TcpListener::from_std(listener),
                None => tokio::net::TcpListener::bind(config.metrics.listen).await,
            };
            match bound {
                Ok(l) => Some(l),
                Err(e) => {
                    eprintln!(
                        "error: cannot listen for metrics on {}: {e}; choose another address with --metrics-listen or metrics.listen",
                        config.metrics.listen
                    );
                    return ExitCode::from(EX_CONFIG);
                }
            }
        } else {
            None
        };
        let metrics_address = metrics
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .map_or_else(|| "off".to_owned(), |a| a.to_string());
        let address = client.local_addr().map_or_else(|_| config.listen.client.to_string(), |a| a.to_string());
        // The first line is for scripts and tests; the rest is for people. A closed
        // stdout must not stop the daemon, so write errors are ignored.
        let mut lines = vec![format!("relaisd: listening clients={address} admin={} metrics={metrics_address}", admin_path.display())];
        if args.dev {
            lines.push(format!("  development mode, domain localhost, state in {}", config.data_dir.display()));
            lines.push(format!(
                "  clients connect to https://{address} trusting {}",
                config.data_dir.join("ca.pem").display()
            ));
            lines.push(format!("  administer with: relaisd admin --socket {} user add alice", admin_path.display()));
        }
        {
            use std::io::Write as _;
            let mut stdout = std::io::stdout().lock();
            for line in lines {
                let _ = writeln!(stdout, "{line}");
            }
            let _ = stdout.flush();
        }
        match server::run(config, Listeners { client, admin, metrics }, shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(EX_CONFIG)
            }
        }
    })
}

fn private_dir(dir: &Path) -> Result<(), String> {
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

/// Checks a backup against its checksum and installs it as `DATA/relais.db`.
pub fn restore(from: &Path, data: &Path) -> ExitCode {
    match restore_inner(from, data) {
        Ok(target) => {
            println!("restored {} into {}", from.display(), target.display());
            eprintln!(
                "start the relay on it (data_dir = {:?}); the server's keys and TLS files are not part of the backup",
                data.display()
            );
            ExitCode::SUCCESS
        }
        Err((code, message)) => {
            eprintln!("error: {message}");
            ExitCode::from(code)
        }
    }
}

fn restore_inner(from: &Path, data: &Path) -> Result<std::path::PathBuf, (u8, String)> {
    let sum_path = crate::admin::checksum_path(from);
    let expected = std::fs::read_to_string(&sum_path).map_err(|e| {
        (
            EX_DATAERR,
            format!("cannot read the checksum {}: {e}", sum_path.display()),
        )
    })?;
    let expected = expected
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned();
    let bytes = std::fs::read(from)
        .map_err(|e| (EX_DATAERR, format!("cannot read {}: {e}", from.display())))?;
    let actual = hex::encode(Sha256::digest(&bytes));
    if actual != expected {
        return Err((
            EX_DATAERR,
            format!(
                "{} does not match its checksum (damaged or altered); use another backup",
                from.display()
            ),
        ));
    }
    private_dir(data).map_err(|e| (EX_CONFIG, e))?;
    let target = data.join("relais.db");
    for suffix in ["", "-wal", "-shm"] {
        let mut p = target.as_os_str().to_owned();
        p.push(suffix);
        if Path::new(&p).exists() {
            return Err((
                EX_CONFIG,
                format!(
                    "{} already holds a database; restore into an empty data directory",
                    data.display()
                ),
            ));
        }
    }
    crate::keys::write_private(&target, &bytes)
        .map_err(|e| (EX_CONFIG, format!("cannot write {}: {e}", target.display())))?;
    Ok(target)
}
