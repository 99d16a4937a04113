//! `relaisd admin backup`: an online copy of the database and, beside it, the checksum file
//! that `relaisd restore` checks the copy against before it installs it.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::Admin;

/// Writes an online backup with `VACUUM INTO`, then its SHA-256 beside it.
pub async fn backup(admin: &Admin, path: &Path) -> Result<Value, String> {
    if !path.is_absolute() {
        return Err("the backup path must be absolute".into());
    }
    if path.exists() {
        return Err(format!(
            "{} exists; choose a new file name (backups never overwrite)",
            path.display()
        ));
    }
    admin.services.store.backup_to(path).await.map_err(|e| {
        // The filesystem sandbox lets the daemon write only in its data directory and in
        // backup.directory: say so, since the error itself is only "permission denied".
        let allowed = admin.config.backup.directory.as_ref().map_or_else(
            || "backup.directory is unset: set it to the directory backups go to".to_owned(),
            |d| format!("it must be inside backup.directory ({})", d.display()),
        );
        format!("backup failed: {e}; {allowed}, and the daemon's user must be able to write there")
    })?;
    // The backup holds metadata and ciphertext: as private as the database itself.
    set_private(path)?;
    let bytes = tokio::fs::read(path)
        .await
        .map_err(|e| format!("cannot read back {}: {e}", path.display()))?;
    let digest = hex::encode(Sha256::digest(&bytes));
    let sum_path = checksum_path(path);
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    tokio::fs::write(&sum_path, format!("{digest}  {file_name}\n"))
        .await
        .map_err(|e| format!("cannot write {}: {e}", sum_path.display()))?;
    set_private(&sum_path)?;
    Ok(json!({ "path": path, "bytes": bytes.len(), "sha256": digest, "checksum_file": sum_path }))
}

/// `FILE.sha256`, in the format `sha256sum -c` reads.
pub fn checksum_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".sha256");
    name.into()
}

fn set_private(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("cannot restrict {}: {e}", path.display()))
}
