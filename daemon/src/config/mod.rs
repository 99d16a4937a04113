//! The daemon's configuration: one serde struct, every field documented and defaulted.
//!
//! The doc comments of the fields are the operator's reference: `relaisd.toml(5)` is
//! generated from them, and `docs/reference/config.md` must list the same keys and defaults
//! (both checked by `daemon/tests/relay/cli_reference.rs`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use relais_store::{Location, PostgresUrl, read_password};

mod sections;

pub use sections::*;
use sections::{default_data_dir, default_sealed_dir};

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The domain this server serves: users are `name@domain`. Lowercase DNS labels
    /// (`a-z`, `0-9` and `-`, separated by dots), or `localhost`.
    pub domain: String,
    /// Where the database, the admin socket and the `file` source's keys live unless their
    /// own keys say otherwise: `DATA` in their descriptions.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// The relay as its clients see it.
    #[serde(default)]
    pub server: Server,
    /// Network listeners.
    #[serde(default)]
    pub listen: Listen,
    /// TLS settings (the certificate and key themselves come from `keys`).
    #[serde(default)]
    pub tls: Tls,
    /// The server's own secrets (enrollment-code key, MLS signature key, TLS key).
    #[serde(default)]
    pub keys: Keys,
    /// The administration socket.
    #[serde(default)]
    pub admin: Admin,
    /// Where messages and accounts are stored.
    #[serde(default)]
    pub storage: Storage,
    /// Bounds on everything a client can make the server hold or do.
    #[serde(default)]
    pub limits: Limits,
    /// How long undelivered messages are kept.
    #[serde(default)]
    pub retention: Retention,
    /// Enrollment codes.
    #[serde(default)]
    pub enrollment: Enrollment,
    /// Which user names may exist, and account expiry warnings.
    #[serde(default)]
    pub users: Users,
    /// The Prometheus metrics listener.
    #[serde(default)]
    pub metrics: Metrics,
    /// Online backups.
    #[serde(default)]
    pub backup: Backup,
    /// The user and group the daemon switches to when started as root.
    #[serde(default)]
    pub process: Process,
    /// The limits the daemon puts on itself (Landlock, seccomp).
    #[serde(default)]
    pub hardening: Hardening,
}

/// A configuration file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{}{message}", line_prefix(*line))]
    Invalid {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// A mistake `validate` finds: the offending key, and what is expected of it.
type Invalid = (&'static str, String);

/// `LINE: `, or nothing when the mistake is not on a line of the file.
fn line_prefix(line: usize) -> String {
    if line == 0 {
        " ".into()
    } else {
        format!("{line}: ")
    }
}

impl Config {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses configuration text; `path` is only used in messages.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let invalid = |line: usize, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            line,
            message,
        };
        let config: Config = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1)
                .unwrap_or(1);
            invalid(line, e.message().to_owned())
        })?;
        config.validate().map_err(|(key, message)| {
            // Point at the key's line when the file sets it; a defaulted key has no line.
            let line = text
                .lines()
                .position(|l| l.trim_start().starts_with(key))
                .map_or(0, |i| i + 1);
            invalid(line, format!("{key}: {message}"))
        })?;
        Ok(config)
    }

    /// Checks what serde cannot: returns the offending key and what is expected. The first
    /// mistake is reported, in the order of these checks.
    fn validate(&self) -> Result<(), Invalid> {
        self.validate_domains()?;
        self.validate_server()?;
        self.validate_metrics()?;
        self.validate_keys()?;
        self.validate_users()?;
        self.validate_limits()?;
        self.validate_retention()?;
        self.validate_enrollment()?;
        self.validate_storage()?;
        self.validate_backup()?;
        self.validate_admin()
    }

    /// The server's domain and the `users.allowed_domains` patterns are domain names.
    fn validate_domains(&self) -> Result<(), Invalid> {
        if !valid_domain(&self.domain) {
            return Err((
                "domain",
                format!(
                    "{:?} is not a domain name (letters, digits, dots and dashes)",
                    self.domain
                ),
            ));
        }
        for pattern in &self.users.allowed_domains {
            if !valid_domain(pattern.strip_prefix("*.").unwrap_or(pattern)) {
                return Err((
                    "allowed_domains",
                    format!("{pattern:?} is neither a domain name nor a `*.suffix` pattern"),
                ));
            }
        }
        Ok(())
    }

    /// The public address is `HOST:PORT` as a client (and an enrollment link) names it: the
    /// link's own check (`relais-link`), so that relaisd never issues a link clients refuse.
    fn validate_server(&self) -> Result<(), Invalid> {
        match &self.server.public_address {
            Some(address) => relais_link::check_server(address).map_err(|why| {
                (
                    "public_address",
                    format!(
                        "{address:?} is not the relay's address as an enrollment link carries \
                         it ({why}); give it as clients reach it, HOST:PORT, for example \
                         \"relais.example.gouv.fr:443\""
                    ),
                )
            }),
            None => Ok(()),
        }
    }

    /// Scrapers are named by network, a listener reachable from elsewhere admits some, and
    /// metrics TLS has both its files.
    fn validate_metrics(&self) -> Result<(), Invalid> {
        for network in &self.metrics.allow {
            if relais_core::Network::parse(network).is_none() {
                return Err((
                    "allow",
                    format!("{network:?} is not a network; write it as ADDRESS/PREFIX"),
                ));
            }
        }
        if self.metrics.enabled
            && self.metrics.allow.is_empty()
            && !self.metrics.listen.ip().is_loopback()
        {
            return Err((
                "listen",
                format!(
                    "metrics.listen {} is reachable beyond this host, but an empty metrics.allow admits scrapers on this host only: list the scrapers' networks in metrics.allow (for example [\"10.0.0.0/8\"]), or listen on 127.0.0.1",
                    self.metrics.listen
                ),
            ));
        }
        if self.metrics.certificate.is_some() != self.metrics.private_key.is_some() {
            return Err((
                "certificate",
                "metrics TLS needs both certificate and private_key".into(),
            ));
        }
        Ok(())
    }

    /// The TLS files belong to the `file` source only: elsewhere they would be silently
    /// ignored, and a key file left beside sealed ones is exactly what D8 rules out.
    fn validate_keys(&self) -> Result<(), Invalid> {
        let file = self.keys.source == KeySourceKind::File;
        for (key, value) in [
            ("certificate", &self.tls.certificate),
            ("private_key", &self.tls.private_key),
        ] {
            match (file, value.is_some()) {
                (true, false) => {
                    return Err((
                        key,
                        "keys.source = \"file\" needs this PEM file in [tls]".to_owned(),
                    ));
                }
                (false, true) => {
                    return Err((
                        key,
                        format!(
                            "read only with keys.source = \"file\" (development); with {:?} the TLS key and certificate are the credentials relais-tls-key and relais-tls-cert: remove tls.{key}, or set keys.source = \"file\"",
                            source_name(self.keys.source)
                        ),
                    ));
                }
                _ => {}
            }
        }
        if self.keys.source == KeySourceKind::SystemdCredentials && self.keys.directory.is_some() {
            return Err((
                "directory",
                "not used with keys.source = \"systemd-credentials\": systemd names the directory in $CREDENTIALS_DIRECTORY".into(),
            ));
        }
        Ok(())
    }

    /// Users of the server's own domain are allowed: a bare `name` means one of them.
    fn validate_users(&self) -> Result<(), Invalid> {
        if !self.users.allows(&self.domain, &self.domain) {
            return Err((
                "allowed_domains",
                format!("must allow the server's own domain {:?}", self.domain),
            ));
        }
        Ok(())
    }

    /// Every limit is positive, a sender's share is a percentage, and a message fits in a
    /// frame.
    fn validate_limits(&self) -> Result<(), Invalid> {
        let l = &self.limits;
        let positive = [
            ("frame_bytes_max", l.frame_bytes_max as u64),
            ("message_bytes_max", l.message_bytes_max as u64),
            ("connections_max", l.connections_max as u64),
            ("unauthenticated_max", l.unauthenticated_max as u64),
            (
                "unauthenticated_per_address_max",
                l.unauthenticated_per_address_max as u64,
            ),
            ("queue_messages_max", l.queue_messages_max.max(0) as u64),
            ("key_packages_max", l.key_packages_max.max(0) as u64),
            ("messages_per_second", u64::from(l.messages_per_second)),
            ("messages_burst", u64::from(l.messages_burst)),
            ("push_frames_max", l.push_frames_max as u64),
            ("auth_timeout_seconds", l.auth_timeout_seconds),
            ("claim_users_max", l.claim_users_max as u64),
            ("claims_per_user_hour", u64::from(l.claims_per_user_hour)),
            ("queue_bytes_max", l.queue_bytes_max.max(0) as u64),
            (
                "queue_share_per_sender_percent",
                u64::from(l.queue_share_per_sender_percent),
            ),
            (
                "groups_created_per_hour",
                u64::from(l.groups_created_per_hour),
            ),
            ("groups_created_max", l.groups_created_max.max(0) as u64),
            (
                "key_package_publications_per_hour",
                u64::from(l.key_package_publications_per_hour),
            ),
            (
                "auth_failures_per_minute",
                u64::from(l.auth_failures_per_minute),
            ),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err((key, "must be greater than 0".into()));
        }
        if l.queue_share_per_sender_percent > 100 {
            return Err((
                "queue_share_per_sender_percent",
                "must be at most 100 (a share of the recipient's queue)".into(),
            ));
        }
        if l.message_bytes_max > l.frame_bytes_max {
            return Err((
                "message_bytes_max",
                "must not exceed frame_bytes_max".into(),
            ));
        }
        Ok(())
    }

    fn validate_retention(&self) -> Result<(), Invalid> {
        if self.retention.days == 0 {
            return Err(("days", "retention must be at least 1 day".into()));
        }
        Ok(())
    }

    fn validate_enrollment(&self) -> Result<(), Invalid> {
        let e = &self.enrollment;
        let positive: [(&'static str, u64); 4] = [
            ("code_ttl_seconds", e.code_ttl_seconds),
            ("device_link_codes_max", u64::from(e.device_link_codes_max)),
            (
                "device_link_devices_max",
                u64::from(e.device_link_devices_max),
            ),
            (
                "device_link_code_ttl_seconds",
                e.device_link_code_ttl_seconds,
            ),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err((key, "must be greater than 0".into()));
        }
        Ok(())
    }

    /// The writer's batches and the catch-up period are positive, and `storage.url` is set
    /// for PostgreSQL, and only for it.
    fn validate_storage(&self) -> Result<(), Invalid> {
        if self.storage.batch_max == 0 {
            return Err(("batch_max", "must be greater than 0".into()));
        }
        if self.storage.catch_up_seconds == 0 {
            return Err(("catch_up_seconds", "must be greater than 0".into()));
        }
        match (self.storage.backend, &self.storage.url) {
            (StorageBackend::Postgres, None) => Err((
                "url",
                "storage.backend = \"postgres\" needs storage.url = \"postgres://USER@HOST:PORT/DATABASE\"".into(),
            )),
            (StorageBackend::Postgres, Some(url)) => {
                PostgresUrl::parse(url).map(drop).map_err(|e| ("url", e))
            }
            (StorageBackend::Sqlite, Some(_)) => Err((
                "url",
                "storage.url is for PostgreSQL: set storage.backend = \"postgres\" too, or remove it".into(),
            )),
            (StorageBackend::Sqlite, None) => Ok(()),
        }
    }

    fn validate_backup(&self) -> Result<(), Invalid> {
        if let Some(directory) = &self.backup.directory
            && !directory.is_absolute()
        {
            return Err((
                "directory",
                format!(
                    "{} is relative; give the backup directory as an absolute path",
                    directory.display()
                ),
            ));
        }
        Ok(())
    }

    fn validate_admin(&self) -> Result<(), Invalid> {
        if self.admin.mode & 0o007 != 0 {
            return Err((
                "mode",
                "the admin socket must not be accessible to others (use 0o600 or 0o660)".into(),
            ));
        }
        Ok(())
    }

    /// The configuration `relaisd serve --dev` uses.
    pub fn dev(data_dir: PathBuf, client: SocketAddr) -> Config {
        Config {
            domain: "localhost".into(),
            tls: Tls {
                certificate: Some(data_dir.join("server.pem")),
                private_key: Some(data_dir.join("server.key")),
                danger_allow_tls12: false,
            },
            data_dir,
            server: Server {
                public_address: Some(dev_public_address(client)),
            },
            listen: Listen {
                client,
                ..Listen::default()
            },
            keys: Keys {
                source: KeySourceKind::File,
                directory: None,
            },
            admin: Admin::default(),
            storage: Storage::default(),
            limits: Limits::default(),
            retention: Retention::default(),
            enrollment: Enrollment::default(),
            users: Users::default(),
            metrics: Metrics::default(),
            backup: Backup::default(),
            process: Process::default(),
            hardening: Hardening::default(),
        }
    }

    pub fn database_path(&self) -> PathBuf {
        self.storage
            .path
            .clone()
            .unwrap_or_else(|| self.data_dir.join("relais.db"))
    }

    /// Where the database is, with the PostgreSQL password read from its file or systemd
    /// credential (called before privileges are given up: the file may be root's).
    pub fn storage_location(&self) -> Result<Location, String> {
        match self.storage.backend {
            StorageBackend::Sqlite => Ok(Location::Sqlite(self.database_path())),
            StorageBackend::Postgres => {
                let url = self.storage.url.as_deref().unwrap_or_default();
                let url = PostgresUrl::parse(url)?;
                let credential = std::env::var_os("CREDENTIALS_DIRECTORY")
                    .map(|d| PathBuf::from(d).join("storage-password"))
                    .filter(|p| p.exists());
                let file = match (&self.storage.password_file, credential) {
                    (Some(file), _) => file.clone(),
                    (None, Some(credential)) => credential,
                    (None, None) => return Ok(Location::Postgres(url)),
                };
                let password = read_password(&file)?;
                Ok(Location::Postgres(url.with_password(&password)?))
            }
        }
    }

    pub fn admin_socket(&self) -> PathBuf {
        self.admin
            .socket
            .clone()
            .unwrap_or_else(|| self.data_dir.join("admin.sock"))
    }

    /// The directory of the `sealed` or `file` key source.
    pub fn keys_dir(&self) -> PathBuf {
        self.keys
            .directory
            .clone()
            .unwrap_or_else(|| match self.keys.source {
                KeySourceKind::Sealed => default_sealed_dir(),
                _ => self.data_dir.join("keys"),
            })
    }
}

/// A key source as the configuration file spells it.
fn source_name(source: KeySourceKind) -> &'static str {
    match source {
        KeySourceKind::SystemdCredentials => "systemd-credentials",
        KeySourceKind::Sealed => "sealed",
        KeySourceKind::File => "file",
    }
}

/// Where `relaisd serve --dev`'s clients reach it when it listens on `client`: on this
/// machine, by a name of its development certificate (`localhost`, `127.0.0.1`), on the
/// port it listens on (`--listen`).
pub fn dev_public_address(client: SocketAddr) -> String {
    let port = client.port();
    match client.ip() {
        std::net::IpAddr::V4(ip) if ip.is_loopback() || ip.is_unspecified() => {
            format!("127.0.0.1:{port}")
        }
        ip if ip.is_loopback() || ip.is_unspecified() => format!("localhost:{port}"),
        _ => client.to_string(),
    }
}

/// Whether `s` looks like a DNS name (or `localhost`).
pub fn valid_domain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
}

#[cfg(test)]
mod tests;
