//! The configuration's sections, each with its documented defaults.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use relais_store::Durability;

/// The Prometheus metrics listener.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    /// Serve metrics at all.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Address of the metrics listener (`GET /metrics`), apart from the client port.
    /// `serve --metrics-listen` overrides it; under systemd, the socket
    /// `relaisd-metrics.socket` passes is used instead.
    #[serde(default = "default_metrics_listen")]
    pub listen: SocketAddr,
    /// Networks (CIDR, such as `10.0.0.0/8`) whose scrapers may connect; empty admits
    /// loopback scrapers only, and `check-config` then needs a loopback `listen`.
    #[serde(default)]
    pub allow: Vec<String>,
    /// PEM certificate chain, to serve metrics over TLS (needs `private_key`).
    pub certificate: Option<PathBuf>,
    /// PEM private key for `certificate`; must not be readable by group or others.
    pub private_key: Option<PathBuf>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: default_metrics_listen(),
            allow: Vec::new(),
            certificate: None,
            private_key: None,
        }
    }
}

/// Who the daemon runs as once its listeners are bound, when it is started as root.
/// Started unprivileged (as under systemd, whose `User=` decides), it stays who it is.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Process {
    /// User (a name or a numeric id) to switch to when started as root; never root itself.
    #[serde(default = "default_process_user")]
    pub user: String,
    /// Group (a name or a numeric id) to switch to when started as root; unset means the
    /// primary group of `user`.
    pub group: Option<String>,
}

impl Default for Process {
    fn default() -> Self {
        Self {
            user: default_process_user(),
            group: None,
        }
    }
}

/// The limits the daemon puts on itself before serving (Landlock, seccomp). Turning one
/// off is for debugging only, and is logged as a warning at every start.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Hardening {
    /// Do not restrict the files the daemon can reach with Landlock: a compromised daemon
    /// could then read and write whatever its user may.
    #[serde(default)]
    pub danger_disable_landlock: bool,
    /// Do not install the system-call filter (seccomp): a compromised daemon could then
    /// make any system call its privileges allow.
    #[serde(default)]
    pub danger_disable_seccomp: bool,
}

/// Online backups (`relaisd admin backup`).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Backup {
    /// Absolute path of the directory backups are written to; with the data directory, the
    /// only place the sandboxed daemon may write. Unset, backups can only go into the data
    /// directory.
    pub directory: Option<PathBuf>,
}

/// Rules for user accounts.
#[derive(Debug, Clone, Deserialize, Serialize)]
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

/// The relay as its clients see it.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    /// The relay's address as clients reach it, `HOST:PORT` (a DNS name, an IPv4 address,
    /// or an IPv6 address in brackets), for example `relais.interieur.gouv.fr:443`: what
    /// enrollment links carry (`relaisd admin user add --link`). It is often not the
    /// listener's own address (a load balancer, NAT, port 443 forwarded); its host must be
    /// a name of the relay's certificate, which clients check. Unset, `--link` is refused;
    /// `relaisd serve --dev` sets it to where it listens (`127.0.0.1:8443`, or `--listen`'s
    /// port).
    pub public_address: Option<String>,
}

/// Network listeners.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    /// The client listener: TLS, WebSocket at `/v1/connect`, `/healthz` and `/readyz`.
    /// `serve --listen` overrides it; under systemd, the socket `relaisd.socket` passes is
    /// used instead.
    #[serde(default = "default_client_listen")]
    pub client: SocketAddr,
    /// Addresses of TCP load balancers that start every connection with a PROXY protocol
    /// v2 header naming the client (HAProxy's `send-proxy-v2`): connections from them are
    /// limited, and logged, under the client's address instead of the balancer's. A listed
    /// balancer's connection without a valid header is dropped; nobody else may send one.
    #[serde(default)]
    pub proxy_protocol_from: Vec<std::net::IpAddr>,
}

impl Default for Listen {
    fn default() -> Self {
        Self {
            client: default_client_listen(),
            proxy_protocol_from: Vec::new(),
        }
    }
}

/// The server's TLS settings. With the default key source the certificate and key are
/// credentials (`relais-tls-cert`, `relais-tls-key`); the paths here are for `file` only.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// With `keys.source = "file"`: PEM file with the certificate chain, leaf first.
    pub certificate: Option<PathBuf>,
    /// With `keys.source = "file"`: PEM file with the private key; must not be readable by
    /// group or others.
    pub private_key: Option<PathBuf>,
    /// Also accept TLS 1.2 (forward-secret AEAD suites only) for old clients.
    /// Weaker than the default: logged at every start.
    #[serde(default)]
    pub danger_allow_tls12: bool,
}

/// The server's own secrets and where they come from.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Keys {
    /// Where the secrets (enrollment-code key, MLS signing key, TLS key) come from:
    /// `systemd-credentials` (the default: decrypted by systemd from the TPM-sealed files
    /// named in the unit's `LoadCredentialEncrypted=`), `sealed` (relaisd decrypts those
    /// files itself with `systemd-creds`), or `file` (plain files, development only).
    #[serde(default)]
    pub source: KeySourceKind,
    /// With `sealed`: the directory of the `.cred` files from `relaisd keys provision`,
    /// defaulting to `/etc/relais/credentials`. With `file`: the directory holding
    /// `server-secret.key` and `server-signing.key`, created on first start, defaulting
    /// to `DATA/keys`. Not used with `systemd-credentials`, where systemd names it.
    pub directory: Option<PathBuf>,
}

/// Where the server's secrets come from (D8).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeySourceKind {
    /// `$CREDENTIALS_DIRECTORY`, filled by systemd at unit start.
    #[default]
    SystemdCredentials,
    /// `.cred` files decrypted with `systemd-creds decrypt`.
    Sealed,
    /// Plain files refused when readable by group or others (development only).
    File,
}

/// The administration socket.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// Path of the Unix socket; defaults to `DATA/admin.sock`.
    pub socket: Option<PathBuf>,
    /// Permission bits of the socket (octal in TOML: `0o600`; `0o660` to let `group` in).
    #[serde(default = "default_admin_mode")]
    pub mode: u32,
    /// User that owns the socket (a name or a numeric id); unset keeps the daemon's user.
    /// Changing it needs the daemon to start as root.
    pub owner: Option<String>,
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
            owner: None,
            group: None,
            admin_groups: Vec::new(),
            reader_groups: Vec::new(),
        }
    }
}

/// Storage settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Storage {
    /// `sqlite` (the default: one appliance, the database in the data directory) or
    /// `postgres` (any number of nodes on one PostgreSQL database).
    #[serde(default)]
    pub backend: StorageBackend,
    /// SQLite: the database file; defaults to `DATA/relais.db`.
    pub path: Option<PathBuf>,
    /// PostgreSQL: `postgres://USER@HOST:PORT/DATABASE`, with
    /// `?sslmode=verify-full&sslrootcert=FILE` for TLS to the database. Never a password.
    pub url: Option<String>,
    /// PostgreSQL: a file holding the password, not readable by others. Without it the
    /// systemd credential `storage-password` is used if there is one, and otherwise no
    /// password (peer or certificate authentication).
    pub password_file: Option<PathBuf>,
    /// PostgreSQL: seconds between reads of every online device's queue without a
    /// notification, so a lost notification only delays a delivery.
    #[serde(default = "default_catch_up_seconds")]
    pub catch_up_seconds: u64,
    /// `full` keeps every acknowledged message through a power cut (the default);
    /// `normal` is faster but may lose the last acknowledged messages on power loss.
    #[serde(default, serialize_with = "durability_name")]
    pub durability: Durability,
    /// Most submissions and acknowledgements the writer commits in one transaction.
    #[serde(default = "default_batch_max")]
    pub batch_max: usize,
}

impl Default for Storage {
    fn default() -> Self {
        Self {
            backend: StorageBackend::default(),
            path: None,
            url: None,
            password_file: None,
            catch_up_seconds: default_catch_up_seconds(),
            durability: Durability::default(),
            batch_max: default_batch_max(),
        }
    }
}

/// Writes `storage.durability` as the file spells it: `Durability` is the store's, which
/// only ever reads it.
fn durability_name<S: serde::Serializer>(
    durability: &Durability,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(match durability {
        Durability::Full => "full",
        Durability::Normal => "normal",
    })
}

/// Which database stores everything.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    #[default]
    Sqlite,
    Postgres,
}

/// Bounds on what clients can make the server hold or do.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest frame accepted: handshake messages of 1,000-member groups are several MB.
    #[serde(default = "default_frame_bytes_max")]
    pub frame_bytes_max: usize,
    /// Largest application message: text and small attachments, far below a Welcome.
    #[serde(default = "default_message_bytes_max")]
    pub message_bytes_max: usize,
    /// Open client connections at most, WebSocket sessions included; further ones are
    /// refused with HTTP 503. `serve` raises its open-file limit to fit them, as far as the
    /// hard limit (`LimitNOFILE=` under systemd) allows.
    #[serde(default = "default_connections_max")]
    pub connections_max: usize,
    /// Connections not authenticated yet (TLS handshake, upgrade, challenge) at once, within
    /// `connections_max`; further ones are refused with HTTP 503. A device needs this slot
    /// for a few round trips only, so even a fleet reconnecting after a restart cycles
    /// through 1,000 quickly (refused devices retry); what it bounds is what a flood of
    /// connections that never authenticate can hold: 5% of the default `connections_max`,
    /// leaving the rest to devices that did.
    #[serde(default = "default_unauthenticated_max")]
    pub unauthenticated_max: usize,
    /// Connections not authenticated yet from one source address at once. Only these are
    /// counted: an office behind one NAT address may have thousands of devices online, but
    /// each is unauthenticated for a few round trips only, so 64 at once from one address
    /// admit hundreds of reconnections a second, while one address alone cannot take the
    /// unauthenticated slots of everyone else.
    #[serde(default = "default_unauthenticated_per_address_max")]
    pub unauthenticated_per_address_max: usize,
    /// Undelivered messages one device may have queued. An application message is not
    /// queued for a device whose queue is full: the group's other members get it, and the
    /// full device sees a gap; only when every recipient is full is it refused
    /// (`QUEUE_FULL`). Commits and Welcomes are never refused or skipped for a full queue.
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
    /// Failed attempts per minute before further ones are refused: enrollments per source
    /// and user (five times as many per source across users), authentications with an
    /// unknown key or a bad signature per source. Ten a minute is more than a person
    /// mistyping a code needs and nothing against 80-bit codes; an enrolled device that
    /// signs correctly is never refused, so a low number locks no device out.
    #[serde(default = "default_auth_failures_per_minute")]
    pub auth_failures_per_minute: u32,
    /// Seconds a new connection has, from its TCP accept, to finish TLS, open the WebSocket
    /// and authenticate. A device does it in three round trips, a few hundred milliseconds
    /// even over a satellite link; ten seconds leave room for a congested mobile link while
    /// a connection that never authenticates holds its slot a third as long as with 30.
    #[serde(default = "default_auth_timeout_seconds")]
    pub auth_timeout_seconds: u64,
    /// Users named in one ClaimKeyPackages request.
    #[serde(default = "default_claim_users_max")]
    pub claim_users_max: usize,
    /// Times one device may claim KeyPackages of one user within an hour. Each claim uses
    /// up one of the user's one-time KeyPackages, which clients keep about 40 of: at 10 an
    /// hour one device cannot drain them between two refills.
    #[serde(default = "default_claims_per_user_hour")]
    pub claims_per_user_hour: u32,
    /// Bytes of undelivered messages one device may have queued: the disk a device that
    /// stays offline can take. Past it, as past `queue_messages_max`, the device is
    /// skipped (messages go to the group's other members; it sees a gap).
    #[serde(default = "default_queue_bytes_max")]
    pub queue_bytes_max: i64,
    /// Percent of a recipient's `queue_messages_max` and `queue_bytes_max` one sending
    /// device may hold undelivered; past it that sender's messages to it are refused
    /// (`SENDER_QUOTA_EXCEEDED`), so that no single sender can fill a victim's queue and
    /// cut it off from everyone else. Both counts and bytes: either alone is filled
    /// cheaply with the other (tiny messages, or 1 MiB ones).
    #[serde(default = "default_queue_share_per_sender_percent")]
    pub queue_share_per_sender_percent: u32,
    /// Groups one device may create within an hour: each registration verifies a group
    /// and stores its state, and a conversation is created by people, not in bulk.
    #[serde(default = "default_groups_created_per_hour")]
    pub groups_created_per_hour: u32,
    /// Groups one device may have created and still be a member of; leaving one frees
    /// its place. Bounds the group states a single device makes the server keep.
    #[serde(default = "default_groups_created_max")]
    pub groups_created_max: i64,
    /// PublishKeyPackages requests one device may make within an hour: a client publishes
    /// when it connects and is running low, so a few an hour; each validates up to
    /// `key_packages_max` signatures.
    #[serde(default = "default_key_package_publications_per_hour")]
    pub key_package_publications_per_hour: u32,
    /// Free bytes the data directory's file system must keep: below it application
    /// messages are refused (`STORAGE_FULL`) while commits, acknowledgements and
    /// KeyPackages still go, so groups stay consistent and queues can drain. Room for
    /// SQLite's WAL and a checkpoint, and for the expiry's own writes. Checked every few
    /// seconds, not per message. Unset, 1 GiB or a tenth of the file system, whichever is
    /// smaller, so that a small state partition is not refused from its first day.
    #[serde(default)]
    pub disk_free_bytes_min: Option<u64>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            frame_bytes_max: default_frame_bytes_max(),
            message_bytes_max: default_message_bytes_max(),
            connections_max: default_connections_max(),
            unauthenticated_max: default_unauthenticated_max(),
            unauthenticated_per_address_max: default_unauthenticated_per_address_max(),
            queue_messages_max: default_queue_messages_max(),
            key_packages_max: default_key_packages_max(),
            messages_per_second: default_messages_per_second(),
            messages_burst: default_messages_burst(),
            push_frames_max: default_push_frames_max(),
            auth_failures_per_minute: default_auth_failures_per_minute(),
            auth_timeout_seconds: default_auth_timeout_seconds(),
            claim_users_max: default_claim_users_max(),
            claims_per_user_hour: default_claims_per_user_hour(),
            queue_bytes_max: default_queue_bytes_max(),
            queue_share_per_sender_percent: default_queue_share_per_sender_percent(),
            groups_created_per_hour: default_groups_created_per_hour(),
            groups_created_max: default_groups_created_max(),
            key_package_publications_per_hour: default_key_package_publications_per_hour(),
            disk_free_bytes_min: None,
        }
    }
}

/// Retention of undelivered messages.
#[derive(Debug, Clone, Deserialize, Serialize)]
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

/// Enrollment codes: the ones operators issue, and the ones a user's device issues to link
/// another of theirs.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Enrollment {
    /// Seconds an enrollment code an operator issues stays valid (`relaisd admin user add`,
    /// `code issue`): it travels to its user first.
    #[serde(default = "default_code_ttl_seconds")]
    pub code_ttl_seconds: u64,
    /// Whether an enrolled device may issue an enrollment code for a new device of its own
    /// user (`relais devices link`, the app's "link a new device"), so that officials add
    /// their devices without an operator. `false` leaves new devices to operators
    /// (`relaisd admin code issue`) and refuses the request with `DEVICE_LINKING_DISABLED`.
    #[serde(default = "default_true")]
    pub device_linking: bool,
    /// Enrollment codes a user may have waiting (unused, unexpired, whoever issued them)
    /// for one of their devices to issue another: a new device is linked with one at a
    /// time, and a device cannot pile codes up.
    #[serde(default = "default_device_link_codes_max")]
    pub device_link_codes_max: u32,
    /// Active devices a user may have for one of them to link another: a phone and a
    /// laptop or two, with room to spare. Past it, a new device needs an operator's code.
    #[serde(default = "default_device_link_devices_max")]
    pub device_link_devices_max: u32,
    /// Seconds a code a device issued stays valid: the new device is at hand, so minutes,
    /// where an operator's code (`code_ttl_seconds`) travels to its user first.
    #[serde(default = "default_device_link_code_ttl_seconds")]
    pub device_link_code_ttl_seconds: u64,
}

impl Default for Enrollment {
    fn default() -> Self {
        Self {
            code_ttl_seconds: default_code_ttl_seconds(),
            device_linking: true,
            device_link_codes_max: default_device_link_codes_max(),
            device_link_devices_max: default_device_link_devices_max(),
            device_link_code_ttl_seconds: default_device_link_code_ttl_seconds(),
        }
    }
}

pub(super) fn default_data_dir() -> PathBuf {
    PathBuf::from("/var/lib/relais")
}
pub(super) fn default_sealed_dir() -> PathBuf {
    PathBuf::from("/etc/relais/credentials")
}
pub(super) fn default_client_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8443))
}
pub(super) fn default_admin_mode() -> u32 {
    0o600
}
pub(super) fn default_batch_max() -> usize {
    512
}
pub(super) fn default_catch_up_seconds() -> u64 {
    30
}
pub(super) fn default_frame_bytes_max() -> usize {
    8 * 1024 * 1024
}
pub(super) fn default_message_bytes_max() -> usize {
    1024 * 1024
}
pub(super) fn default_connections_max() -> usize {
    20_000
}
pub(super) fn default_unauthenticated_max() -> usize {
    1_000
}
pub(super) fn default_unauthenticated_per_address_max() -> usize {
    64
}
pub(super) fn default_queue_messages_max() -> i64 {
    100_000
}
pub(super) fn default_key_packages_max() -> i64 {
    100
}
pub(super) fn default_messages_per_second() -> u32 {
    200
}
pub(super) fn default_messages_burst() -> u32 {
    1_000
}
pub(super) fn default_push_frames_max() -> usize {
    1_024
}
pub(super) fn default_auth_failures_per_minute() -> u32 {
    10
}
pub(super) fn default_auth_timeout_seconds() -> u64 {
    10
}
pub(super) fn default_claim_users_max() -> usize {
    1_000
}
pub(super) fn default_claims_per_user_hour() -> u32 {
    10
}
pub(super) fn default_queue_bytes_max() -> i64 {
    1024 * 1024 * 1024
}
pub(super) fn default_queue_share_per_sender_percent() -> u32 {
    10
}
pub(super) fn default_groups_created_per_hour() -> u32 {
    60
}
pub(super) fn default_groups_created_max() -> i64 {
    10_000
}
pub(super) fn default_key_package_publications_per_hour() -> u32 {
    30
}
pub(super) fn default_device_link_codes_max() -> u32 {
    3
}
pub(super) fn default_device_link_devices_max() -> u32 {
    10
}
pub(super) fn default_device_link_code_ttl_seconds() -> u64 {
    15 * 60
}
pub(super) fn default_retention_days() -> u32 {
    30
}
pub(super) fn default_code_ttl_seconds() -> u64 {
    24 * 3600
}
pub(super) fn default_expiry_warning_days() -> u32 {
    14
}

pub(super) fn default_process_user() -> String {
    "relais".into()
}

pub(super) fn default_true() -> bool {
    true
}
pub(super) fn default_metrics_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9464))
}
