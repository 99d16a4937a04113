//! A fresh PostgreSQL database for one run: created on the server `--storage` names,
//! handed to every relaisd node of the run, and dropped when the run ends (or fails), so
//! runs never measure each other's leftovers.

use std::path::{Path, PathBuf};
use std::str::FromStr as _;

use anyhow::Context as _;
use sqlx::Connection as _;
use sqlx::postgres::{PgConnectOptions, PgConnection};

/// The database the bench connects to in order to create and drop the run's own: every
/// PostgreSQL cluster has it.
const MAINTENANCE_DATABASE: &str = "postgres";

/// Attempts at dropping the run's database, [`DROP_PAUSE`] apart.
const DROP_ATTEMPTS: u32 = 30;
const DROP_PAUSE: std::time::Duration = std::time::Duration::from_secs(1);

/// The run's database; dropped with this value.
pub struct Database {
    /// `postgres://USER@HOST:PORT/NAME`, without the password, as relaisd's `storage.url`.
    pub url: String,
    /// The password file relaisd reads (`storage.password_file`), if any.
    pub password_file: Option<PathBuf>,
    name: String,
    /// Options for the maintenance database, password included.
    admin: PgConnectOptions,
}

impl Database {
    /// Creates `relais_bench_PID_RANDOM` on `server` (`postgres://USER@HOST:PORT`).
    pub async fn create(server: &str, password_file: Option<&Path>) -> anyhow::Result<Database> {
        let mut admin = PgConnectOptions::from_str(&format!("{server}/{MAINTENANCE_DATABASE}"))
            .with_context(|| format!("--storage {server}"))?;
        if let Some(file) = password_file {
            let password = relais_store::read_password(file).map_err(anyhow::Error::msg)?;
            admin = admin.password(&password);
        }
        let name = format!(
            "relais_bench_{}_{:08x}",
            std::process::id(),
            rand::random::<u32>()
        );
        let mut conn = PgConnection::connect_with(&admin)
            .await
            .with_context(|| format!("cannot connect to PostgreSQL at {server}"))?;
        // The name is made of ASCII letters, digits and underscores above.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .with_context(|| {
                format!("cannot create a database on {server}; the user needs CREATEDB")
            })?;
        let _ = conn.close().await;
        let url = format!("{server}/{name}");
        relais_store::PostgresUrl::parse(&url).map_err(anyhow::Error::msg)?;
        Ok(Database {
            url,
            password_file: password_file.map(Path::to_owned),
            name,
            admin,
        })
    }

    /// The `[storage]` lines of a relaisd configuration using this database.
    pub fn config_lines(&self) -> String {
        let password = self
            .password_file
            .as_ref()
            .map_or_else(String::new, |file| {
                format!("password_file = \"{}\"\n", file.display())
            });
        format!("backend = \"postgres\"\nurl = \"{}\"\n{password}", self.url)
    }

    /// Drops the database, closing whatever is still connected to it.
    ///
    /// Right after a heavy run an autovacuum worker, which runs as the server's superuser,
    /// may still be on the database; an ordinary role cannot terminate it and the drop
    /// fails until it has finished, so the drop is tried again for a while.
    async fn drop_database(admin: PgConnectOptions, name: String) -> anyhow::Result<()> {
        let mut conn = PgConnection::connect_with(&admin).await?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let dropped = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&mut conn)
            .await;
            match dropped {
                Ok(_) => break,
                Err(e) if attempt >= DROP_ATTEMPTS => return Err(e.into()),
                Err(_) => tokio::time::sleep(DROP_PAUSE).await,
            }
        }
        let _ = conn.close().await;
        Ok(())
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        // Drop runs inside the bench's runtime, which cannot be blocked on: the statement
        // runs on a thread of its own with a runtime of its own.
        let admin = self.admin.clone();
        let name = self.name.clone();
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(Database::drop_database(admin, name))
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("warning: cannot drop database {}: {e:#}", self.name),
            Err(_) => eprintln!("warning: dropping database {} panicked", self.name),
        }
    }
}
