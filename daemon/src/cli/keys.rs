//! `relaisd keys`: provisioning, rotating and recovering the appliance's sealed keys, and
//! writing the development certificates of `serve --dev` for relays and tools that need
//! them without it.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::provision::{self, CertificateRequest, SealOptions, TlsOutcome};
use crate::tls::DevCertificates;
use relais_protocol::exit::{EX_CONFIG, EX_SOFTWARE};

#[derive(Debug, Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Generate the appliance's keys and seal each to this machine's TPM as a systemd
    /// credential (DIR/NAME.cred); print the recovery key once.
    ///
    /// The enrollment-code key, the MLS signing key and a new TLS key never touch a disk
    /// in the clear: each is piped into `systemd-creds encrypt`. The TLS key waits for
    /// its certificate: sign DIR/relais-tls.csr with the ministry's CA and run
    /// `relaisd keys install-certificate`, or pass --self-signed.
    Provision(ProvisionArgs),
    /// Make a new TLS key (sealed like the others) and a signing request for it, or a
    /// self-signed certificate; then restart relaisd to serve it (the sockets stay open
    /// under systemd, and clients reconnect).
    Rotate(ProvisionArgs),
    /// Install the certificate the CA issued for the pending TLS key, after checking that
    /// it belongs to that key.
    InstallCertificate {
        /// The credentials directory.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// The certificate chain (PEM, leaf first).
        #[arg(value_name = "FILE")]
        certificate: PathBuf,
    },
    /// Unseal every credential in DIR and say, for each, whether it opens and why not (under
    /// relaisd.service, systemd reports only "Failed to set up credentials"); exit 78 when
    /// one does not.
    Check {
        /// The credentials directory.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Re-seal the enrollment-code key and the MLS signing key to the TPM as it is now,
    /// from the recovery copy and the recovery key (read from standard input), after a
    /// firmware update, a Secure Boot change or a new mainboard; makes a new TLS key too.
    Recover(ProvisionArgs),
    /// Write the development CA (DIR/ca.pem) and a server certificate and key it signed
    /// (DIR/server.pem, DIR/server.key) as `relaisd serve --dev` does; a complete set
    /// already there is kept.
    ///
    /// For a relay run from a configuration file with `keys.source = "file"` (its
    /// `tls.certificate` and `tls.private_key` naming these files), and for tools like the
    /// bench that start relaisd themselves. Clients trust DIR/ca.pem. Never for
    /// production: the key lies on disk in the clear.
    DevCertificates {
        /// The directory to write into; created, private to its owner, if missing.
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// DNS name or IP address the server certificate is for; repeat for more.
        #[arg(long = "name", value_name = "NAME", default_values = ["localhost", "127.0.0.1"])]
        names: Vec<String>,
    },
}

#[derive(Debug, Args)]
struct ProvisionArgs {
    /// The credentials directory (the unit reads /etc/relais/credentials).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// DNS name or IP address of the relay for its TLS certificate; repeat for more.
    #[arg(long = "name", value_name = "NAME", required = true)]
    names: Vec<String>,
    /// PCRs the secrets are sealed to, joined by `+` (7: Secure Boot state; 7+11 with a
    /// unified kernel image, re-sealed after each kernel update).
    #[arg(long, value_name = "PCRS", default_value = "7")]
    tpm2_pcrs: String,
    /// The key systemd-creds seals with: `tpm2` on an appliance; `host` (a key file on
    /// this host's disk, no TPM) only for test machines without a TPM.
    #[arg(long, value_name = "KEY", default_value = "tpm2", value_parser = ["tpm2", "host", "host+tpm2"])]
    with_key: String,
    /// Install a self-signed certificate rather than write a signing request.
    #[arg(long)]
    self_signed: bool,
    /// Days a self-signed certificate is valid.
    #[arg(long, value_name = "DAYS", default_value_t = 365)]
    valid_days: u32,
}

impl ProvisionArgs {
    fn split(&self) -> (SealOptions, CertificateRequest) {
        (
            SealOptions {
                with_key: self.with_key.clone(),
                tpm2_pcrs: self.tpm2_pcrs.clone(),
            },
            CertificateRequest {
                names: self.names.clone(),
                self_signed: self.self_signed,
                valid_days: self.valid_days,
            },
        )
    }
}

pub fn run(args: KeysArgs) -> ExitCode {
    // The development key is written to disk in the clear anyway, and the certificates are
    // for others to read: created under the caller's umask, as `serve --dev` creates them.
    if !matches!(args.command, KeysCommand::DevCertificates { .. })
        && let Err(e) = protect_process()
    {
        eprintln!("error: {e}");
        return ExitCode::from(EX_SOFTWARE);
    }
    let result = match args.command {
        KeysCommand::Check { out } => return check(&out),
        KeysCommand::Provision(args) => {
            let (options, request) = args.split();
            provision::provision(&args.out, &options).and_then(|recovery_key| {
                println!(
                    "recovery key (write it down and keep it offline; it is shown only once):"
                );
                println!("  {}", recovery_key.as_str());
                println!(
                    "sealed the enrollment-code and signing keys in {}",
                    args.out.display()
                );
                provision::rotate(&args.out, &options, &request)
            })
        }
        KeysCommand::Rotate(args) => {
            let (options, request) = args.split();
            provision::rotate(&args.out, &options, &request)
        }
        KeysCommand::Recover(args) => {
            let (options, request) = args.split();
            let mut line = zeroize::Zeroizing::new(String::new());
            if let Err(e) = std::io::stdin().lock().read_line(&mut line) {
                eprintln!("error: cannot read the recovery key from standard input: {e}");
                return ExitCode::from(EX_CONFIG);
            }
            provision::recover(&args.out, &line, &options, &request)
        }
        KeysCommand::InstallCertificate { out, certificate } => {
            provision::install_certificate(&out, &certificate).map(|()| TlsOutcome::Installed {
                certificate: crate::keys::certificate_path(&out),
            })
        }
        KeysCommand::DevCertificates { data, names } => return dev_certificates(&data, &names),
    };
    match result {
        Ok(TlsOutcome::Installed { certificate }) => {
            println!(
                "installed the TLS key and its certificate {}",
                certificate.display()
            );
            println!(
                "load it: systemctl restart relaisd (the sockets stay open), or SIGHUP with keys.source = \"sealed\""
            );
            ExitCode::SUCCESS
        }
        Ok(TlsOutcome::Pending { request }) => {
            println!("wrote the signing request {}", request.display());
            println!(
                "have the CA sign it, then: relaisd keys install-certificate --out DIR CERTIFICATE.pem"
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EX_CONFIG)
        }
    }
}

/// Writes the development certificates into `dir` unless a complete set is there, and
/// says which happened.
fn dev_certificates(dir: &Path, names: &[String]) -> ExitCode {
    if let Err(e) = super::serve::private_dir(dir) {
        eprintln!("error: {e}");
        return ExitCode::from(EX_CONFIG);
    }
    let (ca, certificate, key) = (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    );
    match crate::tls::ensure_dev_certificates(dir, names) {
        Ok(DevCertificates::Written) => {
            println!("wrote the development CA {}", ca.display());
            println!(
                "wrote the server certificate {} and its key {} for {}",
                certificate.display(),
                key.display(),
                names.join(", ")
            );
        }
        Ok(DevCertificates::Kept) => {
            println!(
                "kept the development CA {}, server certificate {} and key {}; remove them to make new ones",
                ca.display(),
                certificate.display(),
                key.display()
            );
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EX_CONFIG);
        }
    }
    println!("clients trust {}", ca.display());
    ExitCode::SUCCESS
}

/// Unseals each credential (the plaintext stays in a locked page and is zeroed at once)
/// and checks that the certificate belongs to the TLS key.
fn check(dir: &std::path::Path) -> ExitCode {
    use crate::keys::{self, CODE_SECRET, SIGNING_KEY, TLS_KEY};
    let mut failed = false;
    let mut report = |name: &str, result: Result<(), String>| match result {
        Ok(()) => println!("{name}: ok"),
        Err(e) => {
            failed = true;
            println!("{name}: {e}");
        }
    };
    for name in [CODE_SECRET, SIGNING_KEY] {
        let opened = keys::unseal_file(&keys::sealed_path(dir, name), name, 32)
            .map(drop)
            .map_err(|e| e.to_string());
        report(name, opened);
    }
    let identity = keys::KeySource::Sealed {
        directory: dir.to_owned(),
    }
    .tls_identity()
    .map_err(crate::tls::TlsError::from)
    .and_then(crate::tls::identity_key)
    .map(drop)
    .map_err(|e| e.to_string());
    report(TLS_KEY, identity);
    if failed {
        ExitCode::from(EX_CONFIG)
    } else {
        ExitCode::SUCCESS
    }
}

/// Keys in the clear pass through this process's memory: no core dumps, no ptrace by
/// other processes of the same user, and private files, as for the daemon (D8).
fn protect_process() -> Result<(), String> {
    use nix::sys::resource::{Resource, setrlimit};
    setrlimit(Resource::RLIMIT_CORE, 0, 0)
        .map_err(|e| format!("cannot disable core dumps: {e}"))?;
    nix::sys::prctl::set_dumpable(false)
        .map_err(|e| format!("cannot mark the process non-dumpable: {e}"))?;
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    Ok(())
}
