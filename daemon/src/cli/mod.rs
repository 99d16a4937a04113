//! The `relaisd` command line: its definition (also the source of the CLI reference and
//! man pages) and the dispatch to serving, configuration checks, restore and administration.
//! Exit codes follow sysexits (`relais_protocol::exit`): 64 bad command line, 65 damaged
//! backup, 69 daemon unreachable, 70 internal failure, 78 bad configuration.

mod admin;
mod keys;
mod progress;
mod restore;
mod serve;
mod storage;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use relais_protocol::exit::{EX_CONFIG, EX_SOFTWARE, EX_USAGE};

/// relaisd, the Relais relay: it delivers end-to-end-encrypted MLS messages it can never
/// read, and authenticates the devices of its domain's users.
#[derive(Debug, Parser)]
#[command(name = "relaisd", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the relay.
    Serve(ServeArgs),
    /// Check a configuration file; report its first mistake with the line and key.
    CheckConfig {
        /// The configuration file (TOML).
        file: PathBuf,
    },
    /// Administer a running relay through its admin socket.
    Admin(admin::AdminArgs),
    /// Provision, rotate and recover the appliance's keys, sealed to its TPM; write
    /// development certificates.
    Keys(keys::KeysArgs),
    /// Apply the database migrations and exit (for a change window before nodes start;
    /// `serve` applies them too).
    Migrate {
        /// The configuration file (TOML) naming the database.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Move the database: copy a SQLite appliance into PostgreSQL.
    Storage(storage::StorageArgs),
    /// Rebuild a data directory from a backup made by `relaisd admin backup`.
    Restore {
        /// The backup file; its checksum file FILE.sha256 must lie beside it.
        #[arg(long, value_name = "FILE")]
        from: PathBuf,
        /// The data directory to create (it must not hold a database yet).
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// Print no progress (errors and the result still go out).
        #[arg(long, short)]
        quiet: bool,
    },
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The configuration file (TOML); see relaisd.toml(5).
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
    /// Metrics listener address (overrides the configuration); port 0 picks a free port.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// With --dev: keep everything in PostgreSQL instead of SQLite,
    /// `postgres://USER@HOST:PORT/DATABASE` (no password in it).
    #[arg(long, value_name = "URL", requires = "dev")]
    storage: Option<String>,
    /// With --storage: a file holding the PostgreSQL password (not readable by others).
    #[arg(long, value_name = "FILE", requires = "storage")]
    storage_password_file: Option<PathBuf>,
}

/// Parses the command line and runs the command.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let usage = e.use_stderr();
            let _ = e.print();
            return ExitCode::from(if usage { EX_USAGE } else { 0 });
        }
    };
    match cli.command {
        Command::Serve(args) => serve::serve(args),
        Command::CheckConfig { file } => match crate::config::Config::load(&file) {
            Ok(_) => {
                println!("{}: ok", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(EX_CONFIG)
            }
        },
        Command::Admin(args) => admin::run(args),
        Command::Keys(args) => keys::run(args),
        Command::Restore { from, data, quiet } => restore::restore(&from, &data, quiet),
        Command::Migrate { config } => storage::migrate(&config),
        Command::Storage(args) => storage::run(args),
    }
}

/// Runs a command's asynchronous part to its exit code on a runtime of one thread: the
/// commands other than `serve` wait on one socket or database at a time.
fn block_on(command: impl Future<Output = ExitCode>) -> ExitCode {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(command),
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            ExitCode::from(EX_SOFTWARE)
        }
    }
}

/// The command-line definition, for generating documentation.
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

/// Parses `2026-12-31`, `2026-12-31T08:00:00Z` or milliseconds since the Unix epoch.
pub fn parse_time_ms(input: &str) -> Result<i64, String> {
    if let Ok(ms) = input.parse::<i64>() {
        return Ok(ms);
    }
    let bad = || format!("{input:?} is not a date: use YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ (UTC)");
    let (date, time) = match input.split_once('T') {
        Some((d, t)) => (d, Some(t.strip_suffix('Z').ok_or_else(bad)?)),
        None => (input, None),
    };
    let parts: Vec<i64> = date
        .split('-')
        .map(|p| p.parse().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    let [year, month, day] = parts.as_slice() else {
        return Err(bad());
    };
    if !(1970..=9999).contains(year) || !(1..=12).contains(month) || *day < 1 {
        return Err(bad());
    }
    let last = days_in_month(*year, *month);
    if *day > last {
        return Err(format!(
            "{input:?} is not a date: {year}-{month:02} has {last} days"
        ));
    }
    let seconds = match time {
        None => 0,
        Some(t) => {
            let hms: Vec<i64> = t
                .split(':')
                .map(|p| p.parse().map_err(|_| bad()))
                .collect::<Result<_, _>>()?;
            let [h, m, s] = hms.as_slice() else {
                return Err(bad());
            };
            if !(0..24).contains(h) || !(0..60).contains(m) || !(0..61).contains(s) {
                return Err(bad());
            }
            h * 3600 + m * 60 + s
        }
    };
    // Howard Hinnant's days-from-civil algorithm.
    let y = if *month <= 2 { year - 1 } else { *year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Ok((days * 86_400 + seconds) * 1000)
}

/// The number of days of `month` (1 to 12) in the Gregorian `year`.
fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_and_round_trip() {
        for text in [
            "1970-01-01T00:00:00Z",
            "2000-02-29T00:00:00Z",
            "2024-02-29T00:00:00Z",
            "2026-12-31T23:59:59Z",
            "2026-11-26T19:39:59Z",
        ] {
            let ms = parse_time_ms(text).expect(text);
            assert_eq!(crate::format_time_ms(ms), text);
        }
        assert_eq!(
            parse_time_ms("2026-12-31"),
            parse_time_ms("2026-12-31T00:00:00Z")
        );
        assert_eq!(parse_time_ms("1234"), Ok(1234));
        for bad in [
            "2026-13-01",
            "2026-02-29",
            "2026-02-31",
            "2026-04-31",
            "1900-02-29",
            "2026-00-10",
            "2026-01-00",
            "0001-01-01",
            "yesterday",
            "2026-12-31T25:00:00Z",
            "2026-12-31T10:00:00",
        ] {
            assert!(parse_time_ms(bad).is_err(), "{bad}");
        }
    }
}
