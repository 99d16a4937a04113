//! The two databases the store runs on, and what differs between them: connecting, the
//! migrations, and how a writer excludes the others.
//!
//! Both are reached through sqlx's `Any` driver, so every query is written once, with
//! `$1`-style parameters both understand; the few statements that differ ask
//! [`Backend`] for their text. The SQLite writer's own connection is the exception
//! (`writer/sql.rs`): the same texts, run synchronously, set up by [`sqlite_pragmas`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::AnyPool;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Executor, SqlSafeStr};

use crate::Durability;
use crate::StoreError;

/// Which database the store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The key of the transaction-scoped advisory lock every PostgreSQL write transaction
/// takes first ("relais" in ASCII): writes from all nodes apply one at a time, in the order
/// they take it, which is what makes sequence numbers increase in commit order.
const WRITERS_LOCK: i64 = 0x7265_6c61_6973;

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }

    /// SQLite takes its write lock at once (a deferred transaction that reads, then writes
    /// fails with "database is locked" instead of waiting); PostgreSQL takes the writers'
    /// advisory lock right after `BEGIN` (`lock_writers`).
    pub(super) fn begin_statement(self) -> &'static str {
        match self {
            Backend::Sqlite => "BEGIN IMMEDIATE",
            Backend::Postgres => "BEGIN",
        }
    }

    /// The column operators name an enrollment code by.
    pub(super) fn code_id(self) -> &'static str {
        match self {
            Backend::Sqlite => "rowid",
            Backend::Postgres => "id",
        }
    }
}

/// Makes a transaction the only writer until it ends. SQLite's `BEGIN IMMEDIATE` already
/// did; on PostgreSQL every write transaction of every node takes the same advisory lock,
/// released by commit or rollback (or by the server when a node's connection dies).
pub(super) async fn lock_writers(
    conn: &mut sqlx::AnyConnection,
    backend: Backend,
) -> Result<(), sqlx::Error> {
    if backend == Backend::Postgres {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(WRITERS_LOCK)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// A PostgreSQL connection URL with its password; shows neither the password nor any
/// other secret when printed.
#[derive(Clone)]
pub struct PostgresUrl(url::Url);

impl PostgresUrl {
    /// Parses `postgres://USER@HOST:PORT/DATABASE[?sslmode=...]`. A password written in the
    /// URL is refused: it would sit in a configuration file or a process list.
    pub fn parse(url: &str) -> Result<PostgresUrl, String> {
        let parsed = url::Url::parse(url).map_err(|e| {
            format!("not a PostgreSQL URL ({e}); expected postgres://USER@HOST:PORT/DATABASE")
        })?;
        if !matches!(parsed.scheme(), "postgres" | "postgresql") {
            return Err(format!(
                "the URL scheme is {:?}; expected postgres://USER@HOST:PORT/DATABASE",
                parsed.scheme()
            ));
        }
        if parsed.password().is_some() {
            return Err(
                "the URL contains a password; give it in a file (storage.password_file) or a \
                 systemd credential (storage-password) instead"
                    .into(),
            );
        }
        if parsed.path().trim_start_matches('/').is_empty() {
            return Err(
                "the URL names no database; expected postgres://USER@HOST:PORT/DATABASE".into(),
            );
        }
        Ok(PostgresUrl(parsed))
    }

    /// Adds the password, read from a file or credential by the caller.
    pub fn with_password(mut self, password: &str) -> Result<PostgresUrl, String> {
        self.0
            .set_password(Some(password))
            .map_err(|()| "this URL cannot carry a password".to_owned())?;
        Ok(self)
    }

    pub(super) fn url(&self) -> &url::Url {
        &self.0
    }

    /// The URL as operators may see it: no password.
    pub fn redacted(&self) -> String {
        let mut shown = self.0.clone();
        let _ = shown.set_password(None);
        shown.to_string()
    }
}

impl fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Reads a password file: its first line, refused when others may read it. The password
/// completes a [`PostgresUrl`] through [`PostgresUrl::with_password`].
pub fn read_password(file: &Path) -> Result<String, String> {
    use std::os::unix::fs::MetadataExt;
    let shown = file.display();
    let meta = std::fs::metadata(file)
        .map_err(|e| format!("cannot read the storage password file {shown}: {e}"))?;
    if meta.mode() & 0o007 != 0 {
        return Err(format!(
            "the storage password file {shown} is readable by others: chmod 600 (or 640) it"
        ));
    }
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(file)
            .map_err(|e| format!("cannot read the storage password file {shown}: {e}"))?,
    );
    let password = text.lines().next().unwrap_or_default();
    if password.is_empty() {
        return Err(format!("the storage password file {shown} is empty"));
    }
    Ok(password.to_owned())
}

/// Where the database is.
#[derive(Debug, Clone)]
pub enum Location {
    Sqlite(PathBuf),
    Postgres(PostgresUrl),
}

impl Location {
    pub fn backend(&self) -> Backend {
        match self {
            Location::Sqlite(_) => Backend::Sqlite,
            Location::Postgres(_) => Backend::Postgres,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Sqlite(path) => write!(f, "sqlite:{}", path.display()),
            Location::Postgres(url) => f.write_str(&url.redacted()),
        }
    }
}

/// Connections per daemon: the writer's, and readers for catch-up, directory and admin.
const POOL_MAX: u32 = 8;
/// On PostgreSQL every delivery is read from storage by the recipient's connection, so a
/// message to a large group is as many reads at once: more readers than on SQLite.
const POSTGRES_POOL_MAX: u32 = 16;

/// The page size of a new SQLite database, in bytes.
const PAGE_SIZE: i64 = 8192;

/// How every SQLite connection is set up, the pool's and the writer's own.
pub(super) fn sqlite_pragmas(durability: Durability) -> String {
    let synchronous = match durability {
        Durability::Full => "FULL",
        Durability::Normal => "NORMAL",
    };
    // SQLite's temporary files (the statement journal of the writer's multi-row statements
    // spills to one past 64 KiB) stay in memory: the filesystem sandbox gives relaisd no
    // temporary directory, and they are bounded by the batch. Checkpoints are the store's
    // checkpointer's (`checkpoint.rs`), not the committing writer's; the WAL file is cut
    // back after it grew. Pages of 8 KiB hold seven 1 KiB messages instead of three, so a
    // batch splits fewer pages: 19 % more throughput in interleaved runs (docs/perf/); 16
    // KiB was no better. The size is set when the database is created, before its first
    // write; an existing database keeps its own (a no-op, as SQLite ignores it in WAL mode).
    format!(
        "PRAGMA page_size = {PAGE_SIZE}; PRAGMA journal_mode = WAL; \
         PRAGMA synchronous = {synchronous}; \
         PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000; \
         PRAGMA temp_store = MEMORY; PRAGMA wal_autocheckpoint = 0; \
         PRAGMA journal_size_limit = {wal_bytes};",
        wal_bytes = 4 * crate::checkpoint::WAL_PAGES_RESTART * PAGE_SIZE
    )
}

/// Opens the pool, creating a SQLite database when missing.
pub(super) async fn connect(
    location: &Location,
    durability: Durability,
) -> Result<AnyPool, StoreError> {
    sqlx::any::install_default_drivers();
    match location {
        Location::Sqlite(path) => {
            let url = SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(true)
                .to_url_lossy();
            let pragmas = sqlite_pragmas(durability);
            let pool = AnyPoolOptions::new()
                .max_connections(POOL_MAX)
                .after_connect(move |conn, _| {
                    let pragmas = pragmas.clone();
                    Box::pin(async move {
                        conn.execute(sqlx::AssertSqlSafe(pragmas)).await?;
                        Ok(())
                    })
                })
                .connect_with(AnyConnectOptions::from_url(&url)?)
                .await?;
            restrict_permissions(path);
            Ok(pool)
        }
        Location::Postgres(url) => Ok(AnyPoolOptions::new()
            .max_connections(POSTGRES_POOL_MAX)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(AnyConnectOptions::from_url(url.url())?)
            .await?),
    }
}

/// The schema's migrations for a backend, embedded in the binary; expand-then-contract
/// across releases. On PostgreSQL sqlx applies them under an advisory lock, so nodes that
/// start together apply each once.
pub(super) fn migrator(backend: Backend) -> Migrator {
    let migration = |version, description: &'static str, sql: &'static str| {
        Migration::new(
            version,
            description.into(),
            MigrationType::Simple,
            sql.into_sql_str(),
            false,
        )
    };
    Migrator::with_migrations(match backend {
        Backend::Sqlite => vec![
            migration(
                1,
                "initial",
                include_str!("../migrations/sqlite/0001_initial.sql"),
            ),
            migration(
                2,
                "operations",
                include_str!("../migrations/sqlite/0002_operations.sql"),
            ),
            migration(
                3,
                "counters",
                include_str!("../migrations/sqlite/0003_counters.sql"),
            ),
            migration(
                4,
                "audit keyed",
                include_str!("../migrations/sqlite/0004_audit_keyed.sql"),
            ),
            migration(
                5,
                "group creator",
                include_str!("../migrations/sqlite/0005_group_creator.sql"),
            ),
        ],
        Backend::Postgres => vec![
            migration(
                1,
                "initial",
                include_str!("../migrations/postgres/0001_initial.sql"),
            ),
            migration(
                2,
                "audit keyed",
                include_str!("../migrations/postgres/0002_audit_keyed.sql"),
            ),
            migration(
                3,
                "group creator",
                include_str!("../migrations/postgres/0003_group_creator.sql"),
            ),
        ],
    })
}

/// Applies what is missing of the schema at start. A schema already complete is left
/// alone, so nodes may run as a role without schema rights (docs/cookbook/postgresql.md);
/// a missing migration such a role cannot apply stops start-up with what to do.
pub(super) async fn migrate_at_start(pool: &AnyPool, backend: Backend) -> Result<(), StoreError> {
    let migrator = migrator(backend);
    let applied: Result<Vec<i64>, sqlx::Error> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
            .fetch_all(pool)
            .await;
    if let Ok(applied) = applied
        && migrator.iter().all(|m| applied.contains(&m.version))
    {
        return Ok(());
    }
    migrator.run(pool).await.map_err(|e| match backend {
        Backend::Postgres => StoreError::MigrateAsOwner(e),
        Backend::Sqlite => StoreError::Migrate(e),
    })
}

/// Applies the migrations without serving (`relaisd migrate`); returns the versions
/// applied now, oldest first.
pub async fn migrate(location: &Location) -> Result<Vec<i64>, StoreError> {
    use sqlx::migrate::Migrate as _;
    let pool = connect(location, Durability::Full).await?;
    let migrator = migrator(location.backend());
    let before: Vec<i64> = {
        let mut conn = pool.acquire().await?;
        conn.ensure_migrations_table("_sqlx_migrations").await?;
        conn.list_applied_migrations("_sqlx_migrations")
            .await?
            .iter()
            .map(|m| m.version)
            .collect()
    };
    migrator.run(&pool).await?;
    pool.close().await;
    Ok(migrator
        .iter()
        .map(|m| m.version)
        .filter(|v| !before.contains(v))
        .collect())
}

/// Makes the database and its WAL files private to the daemon's user.
fn restrict_permissions(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600));
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::read_password;

    #[test]
    fn password_files_are_read_and_checked() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let cases = [
            ("secret\nignored\n", 0o600, Ok("secret")),
            ("secret", 0o640, Ok("secret")),
            (
                "secret\n",
                0o604,
                Err("is readable by others: chmod 600 (or 640) it"),
            ),
            ("\nsecret\n", 0o600, Err("is empty")),
            ("", 0o600, Err("is empty")),
        ];
        for (i, (text, mode, expected)) in cases.into_iter().enumerate() {
            let file = dir.path().join(format!("password-{i}"));
            std::fs::write(&file, text).expect("write");
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).expect("chmod");
            match (read_password(&file), expected) {
                (Ok(password), Ok(expected)) => assert_eq!(password, expected, "{text:?}"),
                (Err(e), Err(expected)) => assert!(e.ends_with(expected), "{text:?}: {e}"),
                (got, expected) => panic!("{text:?} {mode:o}: {got:?}, expected {expected:?}"),
            }
        }
        let missing = read_password(&dir.path().join("missing")).expect_err("missing file");
        assert!(
            missing.starts_with("cannot read the storage password file"),
            "{missing}"
        );
    }
}
