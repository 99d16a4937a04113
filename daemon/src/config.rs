//! The daemon's configuration: one serde struct, every field documented and defaulted.
//!
//! `docs/reference/config.md` lists the same keys for operators; keep the two in step.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The domain this server serves: users are `name@domain`.
    pub domain: String,
    /// Where the database and generated files live.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Network listeners.
    #[serde(default)]
    pub listen: Listen,
    /// The server's TLS certificate and key.
    pub tls: Tls,
    /// The server's own secrets (enrollment-code key, MLS signature key).
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
}

/// Rules for user accounts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Users {
    /// Domains user names may have, as exact names or `*.suffix` patterns (for example
    /// `*.gouv.fr`); empty means only the server's own `domain`.
    #[serde(default)]
    pub allowed_domains: Vec<String>,
    /// Days before an account's expiry from which it is listed as expiring.
    #[serde(default = "default_expiry_warning_days")]
    pub expiry_warning_days: u32,
}

impl Default for Users {
    fn default() -> Self {
        Self {
            allowed_domains: Vec::new(),
            expiry_warning_days: default_expiry_warning_days(),
        }
    }
}

impl Users {
    /// Whether a user of `user_domain` may exist on a server of `server_domain`.
    pub fn allows(&self, user_domain: &str, server_domain: &str) -> bool {
        if self.allowed_domains.is_empty() {
            return user_domain == server_domain;
        }
        self.allowed_domains
            .iter()
            .any(|pattern| match pattern.strip_prefix("*.") {
                Some(suffix) => user_domain
                    .strip_suffix(suffix)
                    .is_some_and(|head| head.ends_with('.') && head.len() > 1),
                None => user_domain == pattern,
            })
    }
}

/// Network listeners.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    /// The client listener: TLS, WebSocket at `/v1/connect`, `/healthz` and `/readyz`.
    #[serde(default = "default_client_listen")]
    pub client: SocketAddr,
}

impl Default for Listen {
    fn default() -> Self {
        Self {
            client: default_client_listen(),
        }
    }
}

/// The server's TLS identity.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// PEM file with the certificate chain, leaf first.
    pub certificate: PathBuf,
    /// PEM file with the private key; must not be readable by group or others.
    pub private_key: PathBuf,
    /// Also accept TLS 1.2 (forward-secret AEAD suites only) for old clients.
    /// Weaker than the default: logged at every start.
    #[serde(default)]
    pub danger_allow_tls12: bool,
}

/// The server's own secrets.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Keys {
    /// Directory holding `server-secret.key` and `server-signing.key`, created on first
    /// start if missing; defaults to `DATA/keys`. Files must not be readable by group or others.
    pub directory: Option<PathBuf>,
}

/// The administration socket.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// Path of the Unix socket; defaults to `DATA/admin.sock`.
    pub socket: Option<PathBuf>,
    /// Permission bits of the socket (octal in TOML: `0o600`; `0o660` to let `group` in).
    #[serde(default = "default_admin_mode")]
    pub mode: u32,
    /// Group that owns the socket (a name or a numeric id); unset keeps the daemon's group.
    pub group: Option<String>,
    /// Unix groups (names or ids) whose members may change things. Root and the daemon's
    /// own user always may.
    #[serde(default)]
    pub admin_groups: Vec<String>,
    /// Unix groups (names or ids) whose members may only list and show.
    #[serde(default)]
    pub reader_groups: Vec<String>,
}

impl Default for Admin {
    fn default() -> Self {
        Self {
            socket: None,
            mode: default_admin_mode(),
            group: None,
            admin_groups: Vec::new(),
            reader_groups: Vec::new(),
        }
    }
}

/// Storage settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Storage {
    /// The SQLite database file; defaults to `DATA/relais.db`.
    pub path: Option<PathBuf>,
    /// `full` keeps every acknowledged message through a power cut (the default);
    /// `normal` is faster but may lose the last acknowledged messages on power loss.
    #[serde(default)]
    pub durability: Durability,
    /// Most submissions and acknowledgements the writer commits in one transaction.
    #[serde(default = "default_batch_max")]
    pub batch_max: usize,
}

impl Default for Storage {
    fn default() -> Self {
        Self {
            path: None,
            durability: Durability::default(),
            batch_max: default_batch_max(),
        }
    }
}

/// What an acknowledgement promises.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Synced to disk before the sender is acknowledged.
    #[default]
    Full,
    /// Survives a crash of the daemon but not necessarily a power cut.
    Normal,
}

/// Bounds on what clients can make the server hold or do.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest frame accepted: handshake messages of 1,000-member groups are several MB.
    #[serde(default = "default_frame_bytes_max")]
    pub frame_bytes_max: usize,
    /// Largest application message: text and small attachments, far below a Welcome.
    #[serde(default = "default_message_bytes_max")]
    pub message_bytes_max: usize,
    /// Open client connections at most; further ones are closed at once.
    #[serde(default = "default_connections_max")]
    pub connections_max: usize,
    /// Undelivered messages one device may have queued; submissions to a full queue are refused.
    #[serde(default = "default_queue_messages_max")]
    pub queue_messages_max: i64,
    /// One-time KeyPackages one device may store.
    #[serde(default = "default_key_packages_max")]
    pub key_packages_max: i64,
    /// Sustained submissions per second for one device.
    #[serde(default = "default_messages_per_second")]
    pub messages_per_second: u32,
    /// Submissions one device may send in a burst above the sustained rate.
    #[serde(default = "default_messages_burst")]
    pub messages_burst: u32,
    /// Frames waiting to be written to one connection; a device that does not read is
    /// disconnected when it fills (its messages stay queued).
    #[serde(default = "default_push_frames_max")]
    pub push_frames_max: usize,
    /// Failed enrollment or authentication attempts per source address per minute.
    #[serde(default = "default_auth_failures_per_minute")]
    pub auth_failures_per_minute: u32,
    /// Seconds a new connection has to authenticate.
    #[serde(default = "default_auth_timeout_seconds")]
    pub auth_timeout_seconds: u64,
    /// Users named in one ClaimKeyPackages request.
    #[serde(default = "default_claim_users_max")]
    pub claim_users_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            frame_bytes_max: default_frame_bytes_max(),
            message_bytes_max: default_message_bytes_max(),
            connections_max: default_connections_max(),
            queue_messages_max: default_queue_messages_max(),
            key_packages_max: default_key_packages_max(),
            messages_per_second: default_messages_per_second(),
            messages_burst: default_messages_burst(),
            push_frames_max: default_push_frames_max(),
            auth_failures_per_minute: default_auth_failures_per_minute(),
            auth_timeout_seconds: default_auth_timeout_seconds(),
            claim_users_max: default_claim_users_max(),
        }
    }
}

/// Retention of undelivered messages.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// Days an unacknowledged message is kept before it expires.
    #[serde(default = "default_retention_days")]
    pub days: u32,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            days: default_retention_days(),
        }
    }
}

/// Enrollment codes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Enrollment {
    /// Seconds an enrollment code stays valid.
    #[serde(default = "default_code_ttl_seconds")]
    pub code_ttl_seconds: u64,
}

impl Default for Enrollment {
    fn default() -> Self {
        Self {
            code_ttl_seconds: default_code_ttl_seconds(),
        }
    }
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

    /// Checks what serde cannot: returns the offending key and what is expected.
    fn validate(&self) -> Result<(), (&'static str, String)> {
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
        if !self.users.allows(&self.domain, &self.domain) {
            return Err((
                "allowed_domains",
                format!("must allow the server's own domain {:?}", self.domain),
            ));
        }
        let l = &self.limits;
        let positive = [
            ("frame_bytes_max", l.frame_bytes_max as u64),
            ("message_bytes_max", l.message_bytes_max as u64),
            ("connections_max", l.connections_max as u64),
            ("queue_messages_max", l.queue_messages_max.max(0) as u64),
            ("key_packages_max", l.key_packages_max.max(0) as u64),
            ("messages_per_second", u64::from(l.messages_per_second)),
            ("messages_burst", u64::from(l.messages_burst)),
            ("push_frames_max", l.push_frames_max as u64),
            ("auth_timeout_seconds", l.auth_timeout_seconds),
            ("claim_users_max", l.claim_users_max as u64),
            (
                "auth_failures_per_minute",
                u64::from(l.auth_failures_per_minute),
            ),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err((key, "must be greater than 0".into()));
        }
        if l.message_bytes_max > l.frame_bytes_max {
            return Err((
                "message_bytes_max",
                "must not exceed frame_bytes_max".into(),
            ));
        }
        if self.retention.days == 0 {
            return Err(("days", "retention must be at least 1 day".into()));
        }
        if self.enrollment.code_ttl_seconds == 0 {
            return Err(("code_ttl_seconds", "must be greater than 0".into()));
        }
        if self.storage.batch_max == 0 {
            return Err(("batch_max", "must be greater than 0".into()));
        }
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
                certificate: data_dir.join("server.pem"),
                private_key: data_dir.join("server.key"),
                danger_allow_tls12: false,
            },
            data_dir,
            listen: Listen { client },
            keys: Keys::default(),
            admin: Admin::default(),
            storage: Storage::default(),
            limits: Limits::default(),
            retention: Retention::default(),
            enrollment: Enrollment::default(),
            users: Users::default(),
        }
    }

    pub fn database_path(&self) -> PathBuf {
        self.storage
            .path
            .clone()
            .unwrap_or_else(|| self.data_dir.join("relais.db"))
    }

    pub fn admin_socket(&self) -> PathBuf {
        self.admin
            .socket
            .clone()
            .unwrap_or_else(|| self.data_dir.join("admin.sock"))
    }

    pub fn keys_dir(&self) -> PathBuf {
        self.keys
            .directory
            .clone()
            .unwrap_or_else(|| self.data_dir.join("keys"))
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

fn default_data_dir() -> PathBuf {
    PathBuf::from("/var/lib/relais")
}
fn default_client_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8443))
}
fn default_admin_mode() -> u32 {
    0o600
}
fn default_batch_max() -> usize {
    512
}
fn default_frame_bytes_max() -> usize {
    8 * 1024 * 1024
}
fn default_message_bytes_max() -> usize {
    1024 * 1024
}
fn default_connections_max() -> usize {
    20_000
}
fn default_queue_messages_max() -> i64 {
    100_000
}
fn default_key_packages_max() -> i64 {
    100
}
fn default_messages_per_second() -> u32 {
    200
}
fn default_messages_burst() -> u32 {
    1_000
}
fn default_push_frames_max() -> usize {
    1_024
}
fn default_auth_failures_per_minute() -> u32 {
    10
}
fn default_auth_timeout_seconds() -> u64 {
    30
}
fn default_claim_users_max() -> usize {
    1_000
}
fn default_retention_days() -> u32 {
    30
}
fn default_code_ttl_seconds() -> u64 {
    24 * 3600
}
fn default_expiry_warning_days() -> u32 {
    14
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str =
        "domain = \"example.gouv.fr\"\n[tls]\ncertificate = \"/c.pem\"\nprivate_key = \"/k.pem\"\n";

    #[test]
    fn minimal_config_gets_defaults() {
        let config = Config::parse(Path::new("t.toml"), MINIMAL).expect("valid");
        assert_eq!(config.retention.days, 30);
        assert_eq!(config.storage.durability, Durability::Full);
        assert_eq!(
            config.database_path(),
            PathBuf::from("/var/lib/relais/relais.db")
        );
    }

    #[test]
    fn broken_configs_name_line_and_key() {
        let cases = [
            (format!("{MINIMAL}bogus = 1\n"), "unknown field `bogus`"),
            (MINIMAL.replace("example.gouv.fr", "Bad Domain"), "domain:"),
            (
                format!("{MINIMAL}[limits]\nframe_bytes_max = 0\n"),
                "frame_bytes_max: must be greater than 0",
            ),
            (
                format!("{MINIMAL}[storage]\ndurability = \"fast\"\n"),
                "unknown variant `fast`",
            ),
            (
                format!("{MINIMAL}[admin]\nmode = 0o666\n"),
                "mode: the admin socket",
            ),
            (
                format!("{MINIMAL}[users]\nallowed_domains = [\"*.interieur.fr\"]\n"),
                "allowed_domains: must allow the server's own domain",
            ),
            (
                format!("{MINIMAL}[users]\nallowed_domains = [\"bad domain\"]\n"),
                "allowed_domains: \"bad domain\" is neither",
            ),
            (
                format!("{MINIMAL}[retention]\ndays = \"thirty\"\n"),
                "invalid type",
            ),
            (
                format!("{MINIMAL}[storage]\nbatch_max = -1\n"),
                "invalid value",
            ),
            (
                format!("{MINIMAL}[listen]\nclient = \"not an address\"\n"),
                "invalid socket address",
            ),
        ];
        for (text, expected) in cases {
            let error = Config::parse(Path::new("t.toml"), &text)
                .expect_err(&text)
                .to_string();
            assert!(error.starts_with("t.toml:"), "{error}");
            assert!(
                error.contains(expected),
                "{error} should contain {expected}"
            );
        }
    }

    #[test]
    fn domain_patterns() {
        let users = Users {
            allowed_domains: vec!["*.gouv.fr".into(), "example.org".into()],
            expiry_warning_days: 14,
        };
        for (domain, allowed) in [
            ("interieur.gouv.fr", true),
            ("a.b.gouv.fr", true),
            ("gouv.fr", false),
            ("evilgouv.fr", false),
            ("example.org", true),
            ("sub.example.org", false),
        ] {
            assert_eq!(users.allows(domain, "x.gouv.fr"), allowed, "{domain}");
        }
        assert!(Users::default().allows("a.fr", "a.fr"));
        assert!(!Users::default().allows("b.fr", "a.fr"));
    }

    #[test]
    fn unknown_key_reports_its_line() {
        let text = format!("{MINIMAL}[limits]\nframe_bytes_max = 10\nnot_a_limit = 3\n");
        let error = Config::parse(Path::new("t.toml"), &text)
            .expect_err("unknown key")
            .to_string();
        assert!(error.starts_with("t.toml:7:"), "{error}");
    }
}
