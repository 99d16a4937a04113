//! The writer's connection: each statement's text, its arguments in order, and its rows.
//!
//! On SQLite the writer owns a plain synchronous connection and runs on a thread of its
//! own (`store::Store::open`): a statement is a call into SQLite. Through sqlx it would be a
//! hand-off to sqlx's SQLite thread and back, and those hand-offs were most of a batch's
//! time (docs/perf/history.md, "SQLite: the writer calls SQLite itself"). On PostgreSQL statements go through sqlx as
//! everywhere else in the store.
//!
//! Statements keep the store's `$1` parameters (or anonymous `?` on SQLite); on SQLite a
//! numbered one must be the argument at that position, which is checked, not assumed.

use sqlx::any::{Any, AnyRow};
use sqlx::pool::PoolConnection;
use sqlx::{AssertSqlSafe, Executor, Row};

use crate::backend::{self, Backend};

/// One bound argument. Not `Debug`: a blob may be a message body, which no log may show.
#[derive(Clone, Copy)]
pub(super) enum Arg<'a> {
    Int(i64),
    Null,
    Blob(&'a [u8]),
}

/// A failed statement, from either driver.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Sqlx(#[from] sqlx::Error),
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("statement parameters do not match its {given} arguments: {sql}")]
    Parameters { given: usize, sql: String },
    #[error("statement returned no row: {sql}")]
    NoRow { sql: String },
    /// Storage does not hold what the writer's own decisions rest on.
    #[error("storage invariant broken: {0}")]
    Invariant(&'static str),
}

/// Characters of a statement's text an error quotes: enough to name it, where a
/// multi-row statement runs to tens of KiB and its error reaches the log once for every
/// request of the batch.
const SQL_QUOTED_MAX: usize = 120;

fn quoted(sql: &str) -> String {
    match sql.char_indices().nth(SQL_QUOTED_MAX) {
        Some((end, _)) => format!("{}…", &sql[..end]),
        None => sql.to_owned(),
    }
}

/// The columns of one result row.
pub(super) trait Cells {
    fn int(&self, column: usize) -> Result<i64, Error>;
    fn blob(&self, column: usize) -> Result<Vec<u8>, Error>;
}

impl Cells for AnyRow {
    fn int(&self, column: usize) -> Result<i64, Error> {
        Ok(self.try_get(column)?)
    }
    fn blob(&self, column: usize) -> Result<Vec<u8>, Error> {
        Ok(self.try_get(column)?)
    }
}

impl Cells for rusqlite::Row<'_> {
    fn int(&self, column: usize) -> Result<i64, Error> {
        Ok(self.get(column)?)
    }
    fn blob(&self, column: usize) -> Result<Vec<u8>, Error> {
        Ok(self.get(column)?)
    }
}

/// Prepared statements the SQLite connection keeps: a batch's statements differ by their
/// number of rows, so a steady load reuses a few dozen texts.
const SQLITE_STATEMENT_CACHE: usize = 128;

/// The writer's own connection.
pub(crate) enum Conn {
    Sqlite(Box<rusqlite::Connection>),
    Postgres(PoolConnection<Any>),
}

impl Conn {
    /// Opens the SQLite writer's connection on an existing database, set up as the pool's
    /// (`backend::sqlite_pragmas`).
    pub(crate) fn open_sqlite(
        path: &std::path::Path,
        durability: crate::Durability,
    ) -> Result<Conn, Error> {
        use rusqlite::OpenFlags;
        let conn = rusqlite::Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.execute_batch(&backend::sqlite_pragmas(durability))?;
        conn.set_prepared_statement_cache_capacity(SQLITE_STATEMENT_CACHE);
        Ok(Conn::Sqlite(Box::new(conn)))
    }

    pub(super) fn backend(&self) -> Backend {
        match self {
            Conn::Sqlite(_) => Backend::Sqlite,
            Conn::Postgres(_) => Backend::Postgres,
        }
    }

    /// Runs a statement that returns no rows; the number of rows it changed.
    pub(super) async fn execute(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<u64, Error> {
        match self {
            Conn::Sqlite(conn) => {
                let mut statement = sqlite_statement(conn, sql, args)?;
                Ok(statement.raw_execute()? as u64)
            }
            Conn::Postgres(conn) => Ok(any_query(sql, args)
                .execute(&mut **conn)
                .await?
                .rows_affected()),
        }
    }

    /// Runs a statement and maps each row it returns.
    pub(super) async fn fetch<T>(
        &mut self,
        sql: &str,
        args: &[Arg<'_>],
        mut row: impl FnMut(&dyn Cells) -> Result<T, Error>,
    ) -> Result<Vec<T>, Error> {
        let mut out = Vec::new();
        match self {
            Conn::Sqlite(conn) => {
                let mut statement = sqlite_statement(conn, sql, args)?;
                let mut rows = statement.raw_query();
                while let Some(r) = rows.next()? {
                    out.push(row(r)?);
                }
            }
            Conn::Postgres(conn) => {
                for r in any_query(sql, args).fetch_all(&mut **conn).await? {
                    out.push(row(&r)?);
                }
            }
        }
        Ok(out)
    }

    /// The first column of the row the statement must return.
    pub(super) async fn fetch_one_int(
        &mut self,
        sql: &str,
        args: &[Arg<'_>],
    ) -> Result<i64, Error> {
        self.fetch_int(sql, args)
            .await?
            .ok_or_else(|| Error::NoRow { sql: quoted(sql) })
    }

    /// The first column of the first row, if there is one.
    pub(super) async fn fetch_int(
        &mut self,
        sql: &str,
        args: &[Arg<'_>],
    ) -> Result<Option<i64>, Error> {
        Ok(self
            .fetch(sql, args, |r| r.int(0))
            .await?
            .into_iter()
            .next())
    }

    /// Begins a transaction that excludes every other writer (`backend::lock_writers`).
    pub(super) async fn begin(&mut self) -> Result<(), Error> {
        match self {
            Conn::Sqlite(conn) => conn.execute_batch(Backend::Sqlite.begin_statement())?,
            Conn::Postgres(conn) => {
                conn.execute(Backend::Postgres.begin_statement()).await?;
                backend::lock_writers(conn, Backend::Postgres).await?;
            }
        }
        Ok(())
    }

    pub(super) async fn commit(&mut self) -> Result<(), Error> {
        match self {
            Conn::Sqlite(conn) => conn.execute_batch("COMMIT")?,
            Conn::Postgres(conn) => {
                conn.execute("COMMIT").await?;
            }
        }
        Ok(())
    }

    /// Ends a failed transaction, if one is still open.
    pub(super) async fn rollback(&mut self) -> Result<(), Error> {
        match self {
            Conn::Sqlite(conn) if !conn.is_autocommit() => conn.execute_batch("ROLLBACK")?,
            Conn::Sqlite(_) => {}
            Conn::Postgres(conn) => {
                conn.execute("ROLLBACK").await?;
            }
        }
        Ok(())
    }
}

/// A prepared (usually cached) SQLite statement with its arguments bound in order.
fn sqlite_statement<'c>(
    conn: &'c rusqlite::Connection,
    sql: &str,
    args: &[Arg<'_>],
) -> Result<rusqlite::CachedStatement<'c>, Error> {
    let mut statement = conn.prepare_cached(sql)?;
    let mismatch = || Error::Parameters {
        given: args.len(),
        sql: quoted(sql),
    };
    if statement.parameter_count() != args.len() {
        return Err(mismatch());
    }
    for (i, arg) in args.iter().enumerate() {
        let index = i + 1;
        // `?` has no name; `$N` must be the Nth argument, as PostgreSQL reads it.
        if let Some(name) = statement.parameter_name(index)
            && name.strip_prefix('$').and_then(|n| n.parse().ok()) != Some(index)
        {
            return Err(mismatch());
        }
        match *arg {
            Arg::Int(v) => statement.raw_bind_parameter(index, v)?,
            Arg::Null => statement.raw_bind_parameter(index, rusqlite::types::Null)?,
            Arg::Blob(v) => statement.raw_bind_parameter(index, v)?,
        }
    }
    Ok(statement)
}

/// The same statement through sqlx (prepared and cached by the connection).
fn any_query<'q>(
    sql: &'q str,
    args: &[Arg<'q>],
) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments> {
    let mut query = sqlx::query(AssertSqlSafe(sql));
    for arg in args {
        query = match *arg {
            Arg::Int(v) => query.bind(v),
            Arg::Null => query.bind(None::<i64>),
            Arg::Blob(v) => query.bind(v),
        };
    }
    query
}

#[cfg(test)]
mod tests {
    use super::{Arg, Conn, Error};

    fn memory() -> Conn {
        let conn = rusqlite::Connection::open_in_memory().expect("in-memory database");
        conn.execute_batch("CREATE TABLE t (a INTEGER, b BLOB)")
            .expect("table");
        Conn::Sqlite(Box::new(conn))
    }

    /// The statements keep PostgreSQL's `$N`: on SQLite each must be the argument at its
    /// position, or the statement is refused rather than run with arguments swapped.
    #[tokio::test]
    async fn numbered_parameters_must_match_their_arguments() {
        let mut conn = memory();
        let args = [Arg::Int(7), Arg::Blob(b"x")];
        let n = conn
            .execute("INSERT INTO t (a, b) VALUES ($1, $2)", &args)
            .await
            .expect("in order");
        assert_eq!(n, 1);
        let rows = conn
            .fetch("SELECT a, b FROM t WHERE a = ?", &[Arg::Int(7)], |r| {
                Ok((r.int(0)?, r.blob(1)?))
            })
            .await
            .expect("select");
        assert_eq!(rows, [(7, b"x".to_vec())]);
        for (sql, args) in [
            ("INSERT INTO t (b, a) VALUES ($2, $1)", &args[..]),
            ("INSERT INTO t (a, b) VALUES ($1, $1)", &args[..]),
            ("INSERT INTO t (a, b) VALUES ($1, $2)", &args[..1]),
        ] {
            let refused = conn.execute(sql, args).await;
            assert!(matches!(refused, Err(Error::Parameters { .. })), "{sql}");
        }
        assert_eq!(
            conn.fetch_int("SELECT COUNT(*) FROM t", &[]).await.ok(),
            Some(Some(1))
        );
    }

    /// The writer's own connection gets the pool's settings: the configured durability,
    /// foreign keys, the busy wait, no automatic checkpoints, and 8 KiB pages for a new
    /// database.
    #[test]
    fn the_writer_connection_is_set_up_as_configured() {
        use crate::Durability;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("relais.db");
        rusqlite::Connection::open(&path).expect("create the database");
        for (durability, synchronous) in [(Durability::Full, 2), (Durability::Normal, 1)] {
            let Conn::Sqlite(conn) = Conn::open_sqlite(&path, durability).expect("open") else {
                unreachable!("open_sqlite opens SQLite");
            };
            let pragma = |name: &str| -> i64 {
                conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))
                    .expect(name)
            };
            assert_eq!(pragma("synchronous"), synchronous, "{durability:?}");
            assert_eq!(pragma("foreign_keys"), 1);
            assert_eq!(pragma("busy_timeout"), 10_000);
            assert_eq!(pragma("wal_autocheckpoint"), 0);
            assert_eq!(pragma("page_size"), 8192);
            let mode: String = conn
                .query_row("PRAGMA journal_mode", [], |r| r.get(0))
                .expect("journal mode");
            assert_eq!(mode, "wal");
        }
    }

    /// A database made with another page size (before 8 KiB pages) keeps it and its data.
    #[test]
    fn an_existing_database_keeps_its_page_size() {
        use crate::Durability;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("relais.db");
        let old = rusqlite::Connection::open(&path).expect("create the database");
        old.execute_batch(
            "PRAGMA page_size = 4096; PRAGMA journal_mode = WAL; \
             CREATE TABLE t (a INTEGER); INSERT INTO t VALUES (7);",
        )
        .expect("an older database");
        drop(old);
        let Conn::Sqlite(conn) = Conn::open_sqlite(&path, Durability::Full).expect("open") else {
            unreachable!("open_sqlite opens SQLite");
        };
        let page_size: i64 = conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .expect("page size");
        assert_eq!(page_size, 4096);
        let a: i64 = conn
            .query_row("SELECT a FROM t", [], |r| r.get(0))
            .expect("its row");
        assert_eq!(a, 7);
    }

    /// A row a statement must return is an error when missing, and an error quotes only
    /// the start of a long statement.
    #[tokio::test]
    async fn errors_name_the_statement_briefly() {
        let mut conn = memory();
        let missing = conn.fetch_one_int("SELECT a FROM t", &[]).await;
        assert!(matches!(missing, Err(Error::NoRow { .. })));
        let long = format!("SELECT a FROM t WHERE a IN ({}?)", "?, ".repeat(1_000));
        let Err(Error::Parameters { sql, .. }) = conn.fetch_int(&long, &[]).await else {
            panic!("1,001 parameters and no argument must be refused");
        };
        assert!(
            sql.len() < 200 && sql.starts_with("SELECT a FROM t"),
            "{sql}"
        );
    }

    /// A failed batch leaves no transaction open behind it.
    #[tokio::test]
    async fn rollback_ends_the_transaction() {
        let mut conn = memory();
        conn.begin().await.expect("begin");
        conn.execute("INSERT INTO t (a) VALUES ($1)", &[Arg::Int(1)])
            .await
            .expect("insert");
        conn.rollback().await.expect("rollback");
        conn.rollback()
            .await
            .expect("a second rollback is harmless");
        assert_eq!(
            conn.fetch_int("SELECT COUNT(*) FROM t", &[]).await.ok(),
            Some(Some(0))
        );
        conn.begin().await.expect("a new transaction begins");
    }
}
