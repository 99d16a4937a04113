//! The `relaisd` binary: parses the command line, sets up logging, loads the
//! configuration and hands over to the library. Exit codes follow sysexits: 64 for a bad
//! command line, 69 when the daemon cannot be reached, 78 for a bad configuration.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use relaisd::admin::{self, AdminRequest};
use relaisd::config::Config;
use relaisd::server::{self, Listeners};

const EX_USAGE: u8 = 64;
const EX_UNAVAILABLE: u8 = 69;
const EX_SOFTWARE: u8 = 70;
const EX_CONFIG: u8 = 78;

/// relaisd, the Relais relay: it delivers end-to-end-encrypted MLS messages it can never
/// read, and authenticates the devices of its domain's users.
#[derive(Debug, Parser)]
#[command(name = "relaisd", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the relay.
    Serve(ServeArgs),
    /// Check a configuration file and report every mistake with its line and key.
    CheckConfig {
        /// The configuration file (TOML).
        file: PathBuf,
    },
    /// Administer a running relay through its admin socket.
    Admin(AdminArgs),
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// The configuration file (TOML); see docs/reference/config.md.
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "dev",
        conflicts_with = "dev"
    )]
    config: Option<PathBuf>,
    /// Development mode: no configuration file, domain `localhost`, a local CA and
    /// certificate generated on first start, state under --data.
    #[arg(long)]
    dev: bool,
    /// With --dev: where state lives.
    #[arg(
        long,
        value_name = "DIR",
        default_value = "relais-dev",
        requires = "dev"
    )]
    data: PathBuf,
    /// Client listener address (overrides the configuration); port 0 picks a free port.
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
}

#[derive(Debug, Args)]
struct AdminArgs {
    /// The daemon's admin socket.
    #[arg(
        long,
        value_name = "PATH",
        env = "RELAIS_ADMIN_SOCKET",
        default_value = "/var/lib/relais/admin.sock"
    )]
    socket: PathBuf,
    /// Print the daemon's whole answer as JSON.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage enrollment codes.
    #[command(subcommand)]
    Code(CodeCommand),
    /// Manage devices.
    #[command(subcommand)]
    Device(DeviceCommand),
    /// Show the daemon's version, uptime and connected devices.
    Status,
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Create a user and print its one-time enrollment code, alone on standard output.
    Add {
        /// `name` or `name@domain` (the domain must be the server's).
        user: String,
    },
    /// List users with their device and pending-code counts.
    List,
}

#[derive(Debug, Subcommand)]
enum CodeCommand {
    /// Issue an enrollment code for another device of an existing user.
    Issue {
        /// `name` or `name@domain`.
        user: String,
    },
}

#[derive(Debug, Subcommand)]
enum DeviceCommand {
    /// List a user's devices.
    List {
        /// `name` or `name@domain`.
        user: String,
    },
    /// Revoke a device: close its connections at once and stop all delivery to it.
    Revoke {
        /// `name` or `name@domain`.
        user: String,
        /// The device id shown by `device list`.
        device: String,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let usage = e.use_stderr();
            let _ = e.print();
            return ExitCode::from(if usage { EX_USAGE } else { 0 });
        }
    };
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::CheckConfig { file } => match Config::load(&file) {
            Ok(_) => {
                println!("{}: ok", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(EX_CONFIG)
            }
        },
        Command::Admin(args) => admin_command(args),
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RELAIS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
}

fn serve(args: ServeArgs) -> ExitCode {
    init_logging();
    let mut config = if args.dev {
        if let Err(e) = prepare_dev_dir(&args.data) {
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
            && let Err(e) = relaisd::tls::ensure_dev_certificates(&config.data_dir, &["localhost".into(), "127.0.0.1".into()])
        {
            eprintln!("error: {e}");
            return ExitCode::from(EX_CONFIG);
        }
        let client = match tokio::net::TcpListener::bind(config.listen.client).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("error: cannot listen on {}: {e}; choose another address with --listen or listen.client", config.listen.client);
                return ExitCode::from(EX_CONFIG);
            }
        };
        let admin_path = config.admin_socket();
        let admin = match admin::bind(&admin_path, config.admin.mode) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("error: cannot create the admin socket {}: {e}", admin_path.display());
                return ExitCode::from(EX_CONFIG);
            }
        };
        let address = client.local_addr().map_or_else(|_| config.listen.client.to_string(), |a| a.to_string());
        // The first line is for scripts and tests; the rest is for people.
        println!("relaisd: listening clients={address} admin={}", admin_path.display());
        if args.dev {
            println!("  development mode, domain localhost, state in {}", config.data_dir.display());
            println!("  clients connect to https://{address} trusting {}", config.data_dir.join("ca.pem").display());
            println!("  administer with: relaisd admin --socket {} user add alice", admin_path.display());
        }
        match server::run(config, Listeners { client, admin }, shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(EX_CONFIG)
            }
        }
    })
}

fn prepare_dev_dir(dir: &Path) -> Result<(), String> {
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

fn admin_command(args: AdminArgs) -> ExitCode {
    let request = match args.command {
        AdminCommand::User(UserCommand::Add { user }) => AdminRequest::UserAdd { user },
        AdminCommand::User(UserCommand::List) => AdminRequest::UserList,
        AdminCommand::Code(CodeCommand::Issue { user }) => AdminRequest::CodeIssue { user },
        AdminCommand::Device(DeviceCommand::List { user }) => AdminRequest::DeviceList { user },
        AdminCommand::Device(DeviceCommand::Revoke { user, device }) => {
            AdminRequest::DeviceRevoke { user, device }
        }
        AdminCommand::Status => AdminRequest::Status,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(EX_SOFTWARE);
        }
    };
    let response = match runtime.block_on(admin::request(&args.socket, &request)) {
        Ok(response) => response,
        Err(e) => {
            eprintln!(
                "error: cannot reach relaisd at {}: {e}; is it running, and may you use its socket?",
                args.socket.display()
            );
            return ExitCode::from(EX_UNAVAILABLE);
        }
    };
    if !response.ok {
        eprintln!(
            "error: {}",
            response.error.unwrap_or_else(|| "request refused".into())
        );
        return ExitCode::from(1);
    }
    if args.json {
        println!("{}", response.result);
        return ExitCode::SUCCESS;
    }
    print_human(&request, &response.result);
    ExitCode::SUCCESS
}

fn print_human(request: &AdminRequest, result: &serde_json::Value) {
    let text = |v: &serde_json::Value, key: &str| {
        v.get(key).and_then(|x| x.as_str()).unwrap_or("").to_owned()
    };
    let time = |v: &serde_json::Value, key: &str| {
        v.get(key)
            .and_then(|x| x.as_i64())
            .map_or_else(|| "-".to_owned(), |ms| relaisd::format_time_ms(ms))
    };
    match request {
        AdminRequest::UserAdd { .. } | AdminRequest::CodeIssue { .. } => {
            // The code alone on stdout, so `CODE=$(relaisd admin user add alice)` works.
            println!("{}", text(result, "code"));
            eprintln!(
                "enrollment code for {} (single use, expires {}); give it to the user over a trusted channel",
                text(result, "user"),
                time(result, "expires_at_ms")
            );
        }
        AdminRequest::UserList => {
            println!(
                "{:<40} {:>7} {:>13}  CREATED",
                "USER", "DEVICES", "PENDING CODES"
            );
            for user in result.as_array().into_iter().flatten() {
                println!(
                    "{:<40} {:>7} {:>13}  {}",
                    text(user, "user"),
                    user.get("devices").and_then(|x| x.as_i64()).unwrap_or(0),
                    user.get("pending_codes")
                        .and_then(|x| x.as_i64())
                        .unwrap_or(0),
                    time(user, "created_at_ms")
                );
            }
        }
        AdminRequest::DeviceList { .. } => {
            println!(
                "{:<18} {:<22} {:<22} REVOKED",
                "DEVICE", "ENROLLED", "LAST SEEN"
            );
            for device in result.as_array().into_iter().flatten() {
                println!(
                    "{:<18} {:<22} {:<22} {}",
                    text(device, "device"),
                    time(device, "enrolled_at_ms"),
                    time(device, "last_seen_at_ms"),
                    time(device, "revoked_at_ms")
                );
            }
        }
        AdminRequest::DeviceRevoke { .. } => {
            println!(
                "revoked device {} of {}",
                text(result, "device"),
                text(result, "user")
            );
        }
        AdminRequest::Status => {
            if let Some(map) = result.as_object() {
                for (key, value) in map {
                    println!(
                        "{key}: {}",
                        value
                            .as_str()
                            .map_or_else(|| value.to_string(), str::to_owned)
                    );
                }
            }
        }
    }
}
