//! A fresh PostgreSQL database per test, on the server `scripts/test` starts (Debian's
//! `postgresql` cluster on 127.0.0.1:5432, role `relais_test` allowed to create databases).
//! `RELAIS_TEST_POSTGRES` (`postgres://USER@HOST:PORT`) and
//! `RELAIS_TEST_POSTGRES_PASSWORD` point elsewhere. Each database is dropped at the end.

use std::path::{Path, PathBuf};

use sqlx::Connection as _;

const DEFAULT_SERVER: &str = "postgres://relais_test@127.0.0.1:5432";
const DEFAULT_PASSWORD: &str = "relais-test";

fn server() -> String {
    std::env::var("RELAIS_TEST_POSTGRES").unwrap_or_else(|_| DEFAULT_SERVER.to_owned())
}

fn password() -> String {
    std::env::var("RELAIS_TEST_POSTGRES_PASSWORD").unwrap_or_else(|_| DEFAULT_PASSWORD.to_owned())
}

/// One test's database.
pub struct Database {
    pub name: String,
    /// `postgres://USER@HOST:PORT/NAME`, without the password.
    pub url: String,
    /// A 0600 file holding the password, as relaisd's configuration wants it.
    pub password_file: PathBuf,
}

/// Runs a statement on the server's maintenance database (roles are server-wide).
pub async fn execute_on_server(sql: &str) {
    let mut conn = admin().await.expect("connect to PostgreSQL");
    sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// The environment `psql`, `pg_dump` and `pg_restore` need to reach the test server.
pub fn client_env() -> Vec<(&'static str, String)> {
    let url = url::Url::parse(&server()).expect("RELAIS_TEST_POSTGRES");
    vec![
        ("PGHOST", url.host_str().unwrap_or("127.0.0.1").to_owned()),
        ("PGPORT", url.port().unwrap_or(5432).to_string()),
        ("PGUSER", url.username().to_owned()),
        ("PGPASSWORD", password()),
    ]
}

/// Connects to the server's maintenance database, with the password.
async fn admin() -> Result<sqlx::PgConnection, sqlx::Error> {
    let url = url::Url::parse(&format!("{}/postgres", server())).expect("RELAIS_TEST_POSTGRES");
    let options = sqlx::postgres::PgConnectOptions::new()
        .host(url.host_str().unwrap_or("127.0.0.1"))
        .port(url.port().unwrap_or(5432))
        .username(url.username())
        .password(&password())
        .database("postgres");
    sqlx::PgConnection::connect_with(&options).await
}

impl Database {
    /// Creates an empty database, its password file in `dir`; `None` (the test skips) when
    /// no server answers outside CI. Under `CI=true` an unreachable server fails the test.
    pub async fn create(dir: &Path) -> Option<Database> {
        let mut conn = match admin().await {
            Ok(conn) => conn,
            Err(e) => {
                let message = format!(
                    "PostgreSQL at {} is unreachable ({e}); scripts/test installs and starts it",
                    server()
                );
                assert!(std::env::var("CI").as_deref() != Ok("true"), "{message}");
                eprintln!("skipped: {message}");
                return None;
            }
        };
        let name = format!(
            "relais_test_{}_{:x}",
            std::process::id(),
            rand::random::<u32>()
        );
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("create the test database");
        let password_file = dir.join("postgres-password");
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .mode(0o600)
                .open(&password_file)
                .expect("password file");
            writeln!(file, "{}", password()).expect("write password");
        }
        Some(Database {
            url: format!("{}/{name}", server()),
            name,
            password_file,
        })
    }

    /// The same, from synchronous tests.
    pub fn create_blocking(dir: &Path) -> Option<Database> {
        let dir = dir.to_owned();
        std::thread::spawn(move || runtime().block_on(Database::create(&dir)))
            .join()
            .expect("create thread")
    }

    /// The `[storage]` section of a relaisd configuration using this database.
    pub fn config(&self) -> String {
        format!(
            "[storage]\nbackend = \"postgres\"\nurl = \"{}\"\npassword_file = \"{}\"\n",
            self.url,
            self.password_file.display()
        )
    }

    /// The URL with the password, for the store's own tests.
    pub fn location(&self) -> relais_store::Location {
        let url = relais_store::PostgresUrl::parse(&self.url)
            .and_then(|u| u.with_password(&password()))
            .expect("test URL");
        relais_store::Location::Postgres(url)
    }

    /// Runs statements on this database as its owner.
    pub async fn execute(&self, sql: &str) {
        let mut conn = self.connect().await;
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    async fn connect(&self) -> sqlx::PgConnection {
        let url = url::Url::parse(&self.url).expect("url");
        let options = sqlx::postgres::PgConnectOptions::new()
            .host(url.host_str().unwrap_or("127.0.0.1"))
            .port(url.port().unwrap_or(5432))
            .username(url.username())
            .password(&password())
            .database(&self.name);
        sqlx::PgConnection::connect_with(&options)
            .await
            .expect("connect to the test database")
    }

    /// Runs a statement on this database, for checks that read it directly.
    pub async fn scalar(&self, sql: &str) -> i64 {
        let mut conn = self.connect().await;
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
            .fetch_one(&mut conn)
            .await
            .expect(sql)
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            runtime().block_on(async {
                if let Ok(mut conn) = admin().await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut conn)
                    .await;
                }
            })
        })
        .join();
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}
