//! `relaisd migrate` and `relaisd storage copy`: database work done with the relay stopped
//! (or, for migrations, in a change window before the nodes start).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::progress::{Progress, Unit};
use relais_protocol::exit::{EX_CONFIG, EX_SOFTWARE, EX_USAGE};
use relais_store::{self as store, CopyProgress, Location, PostgresUrl};

#[derive(Debug, Args)]
pub struct StorageArgs {
    #[command(subcommand)]
    command: StorageCommand,
}

#[derive(Debug, Subcommand)]
enum StorageCommand {
    /// Copy every account, device, group and queued message from a SQLite appliance into
    /// an empty PostgreSQL database. Stop relaisd first: the copy holds the SQLite write
    /// lock throughout, so nothing is accepted meanwhile and nothing queued is left behind.
    Copy {
        /// The SQLite database: `sqlite:PATH` (usually sqlite:/var/lib/relais/relais.db).
        #[arg(long, value_name = "sqlite:PATH")]
        from: String,
        /// The PostgreSQL database: `postgres://USER@HOST:PORT/DATABASE` (or the same after
        /// `postgres:`); its migrations are applied first, and it must hold no data.
        #[arg(long, value_name = "postgres:URL")]
        to: String,
        /// A file holding the PostgreSQL password (not readable by others).
        #[arg(long, value_name = "FILE")]
        to_password_file: Option<PathBuf>,
        /// Print no progress (errors and the result still go out).
        #[arg(long, short)]
        quiet: bool,
    },
}

/// `relaisd migrate --config FILE`.
pub fn migrate(config: &std::path::Path) -> ExitCode {
    let config = match crate::config::Config::load(config) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    let location = match config.storage_location() {
        Ok(location) => location,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    super::block_on(async move {
        match store::migrate(&location).await {
            Ok(applied) if applied.is_empty() => {
                println!("{location}: the schema is up to date");
                ExitCode::SUCCESS
            }
            Ok(applied) => {
                let versions: Vec<String> = applied.iter().map(i64::to_string).collect();
                println!("{location}: applied migrations {}", versions.join(", "));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {location}: {e}");
                ExitCode::from(EX_SOFTWARE)
            }
        }
    })
}

pub fn run(args: StorageArgs) -> ExitCode {
    let StorageCommand::Copy {
        from,
        to,
        to_password_file,
        quiet,
    } = args.command;
    let Some(path) = from.strip_prefix("sqlite:") else {
        eprintln!("error: --from must be sqlite:PATH (copying goes from SQLite to PostgreSQL)");
        return ExitCode::from(EX_USAGE);
    };
    let path = PathBuf::from(path);
    if !path.is_file() {
        eprintln!("error: {} does not exist or is not a file", path.display());
        return ExitCode::from(EX_USAGE);
    }
    let url = to
        .strip_prefix("postgres:")
        .filter(|u| u.starts_with("postgres://") || u.starts_with("postgresql://"))
        .unwrap_or(&to);
    let url = PostgresUrl::parse(url).and_then(|url| match &to_password_file {
        Some(file) => url.with_password(&store::read_password(file)?),
        None => Ok(url),
    });
    let url = match url {
        Ok(url) => url,
        Err(e) => {
            eprintln!("error: --to: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    let source = Location::Sqlite(path);
    let target = Location::Postgres(url);
    super::block_on(async move {
        // One progress line per table, each started as the copy reaches it.
        let mut current: Option<(&'static str, Progress, u64)> = None;
        let mut report = |step: CopyProgress| {
            if current
                .as_ref()
                .is_some_and(|(table, ..)| *table != step.table)
                && let Some((_, mut done, copied)) = current.take()
            {
                done.finish(copied);
            }
            let (_, progress, copied) = current.get_or_insert_with(|| {
                let label = format!("copy {}", step.table);
                (
                    step.table,
                    Progress::start(&label, Some(step.total), Unit::Rows, quiet),
                    0,
                )
            });
            *copied = step.copied;
            progress.set(step.copied);
        };
        let copied = store::copy(&source, &target, &mut report).await;
        if let Some((_, mut progress, copied)) = current.take() {
            progress.finish(copied);
        }
        match copied {
            Ok(counts) => {
                println!("copied {source} to {target}:");
                for (table, rows) in counts {
                    println!("  {table}: {rows} rows");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(EX_SOFTWARE)
            }
        }
    })
}
