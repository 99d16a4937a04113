//! The Debian package and the Ansible collection as the tests use them: `cargo deb` over
//! the relaisd the tests already built, then `daemon/debian/add-md5sums`, as a release is
//! built; and `ansible/` found as `relais.appliance`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The collection's sources, `ansible/` (this crate is `testkit/`, beside it).
pub const COLLECTION: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../ansible");

/// Builds the relaisd package into `out_dir` from the binary the tests run
/// (`target/debug/relaisd`), and returns its path: building it again in release would
/// double the suite's build.
pub fn build_deb(out_dir: &Path) -> PathBuf {
    build_deb_version(out_dir, "0.1.0-1")
}

/// As [`build_deb`], with the package version `version`: an upgrade test needs two.
pub fn build_deb_version(out_dir: &Path, version: &str) -> PathBuf {
    cargo_deb(out_dir, version, false)
}

/// As [`build_deb`], with the binary stripped (its debug information in the `.ddeb`
/// beside it), as a release package is: what lintian judges.
pub fn build_deb_stripped(out_dir: &Path) -> PathBuf {
    cargo_deb(out_dir, "0.1.0-1", true)
}

fn cargo_deb(out_dir: &Path, version: &str, strip: bool) -> PathBuf {
    let deb = out_dir.join(format!("relaisd_{version}_amd64.deb"));
    let target_dir = super::target_dir();
    // cargo-deb stages its files under the target directory: one build at a time, since
    // the test binaries that call this run in parallel.
    let lock = std::fs::File::create(target_dir.join("relais-test-cargo-deb.lock")).expect("lock");
    let _lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .expect("lock the package build");
    let out = Command::new("cargo")
        .args(["deb", "-p", "relaisd", "--no-build", "--fast"])
        .args(if strip { &[][..] } else { &["--no-strip"][..] })
        .args(["--profile", "dev", "--deb-version", version, "--output"])
        .arg(&deb)
        .env("CARGO_TARGET_DIR", target_dir)
        .current_dir(super::repository().join("daemon"))
        .output()
        .expect("cargo deb");
    assert!(
        out.status.success(),
        "cargo deb failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    add_md5sums(&deb);
    deb
}

/// `daemon/debian/add-md5sums`, the step after `cargo deb` that gives the package the
/// md5sums control file cargo-deb does not write; xz at level 1, as `--fast` asks of
/// cargo-deb (the tests rebuild the package often, and nobody downloads it).
fn add_md5sums(deb: &Path) {
    let out = Command::new(super::repository().join("daemon/debian/add-md5sums"))
        .arg(deb)
        .env("DPKG_DEB_COMPRESSOR_LEVEL", "1")
        .output()
        .expect("daemon/debian/add-md5sums (dpkg-deb)");
    assert!(
        out.status.success(),
        "add-md5sums failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A directory where Ansible finds `ansible/` as the collection `relais.appliance`, as an
/// installed collection would be, without installing anything.
pub struct Collections {
    dir: tempfile::TempDir,
}

impl Default for Collections {
    fn default() -> Collections {
        Collections::new()
    }
}

impl Collections {
    pub fn new() -> Collections {
        let dir = tempfile::tempdir().expect("tempdir");
        let namespace = dir.path().join("ansible_collections/relais");
        std::fs::create_dir_all(&namespace).expect("collections dir");
        let collection = Path::new(COLLECTION).canonicalize().expect("ansible/");
        std::os::unix::fs::symlink(collection, namespace.join("appliance")).expect("symlink");
        // An empty configuration, so that nothing of the developer's own applies.
        std::fs::write(dir.path().join("ansible.cfg"), "[defaults]\n").expect("ansible.cfg");
        Collections { dir }
    }

    /// An Ansible command seeing the collection, and nothing of the developer's own
    /// Ansible configuration.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        command
            .env("ANSIBLE_COLLECTIONS_PATH", self.dir.path())
            .env("ANSIBLE_NOCOLOR", "1")
            .env("ANSIBLE_FORCE_COLOR", "0")
            .env("ANSIBLE_CONFIG", self.dir.path().join("ansible.cfg"))
            .env("ANSIBLE_LOCAL_TEMP", self.dir.path().join("tmp"))
            .env("ANSIBLE_HOME", self.dir.path().join("home"));
        command
    }

    /// `ansible-playbook` on one of the collection's playbooks.
    pub fn playbook(&self, inventory: &Path, playbook: &str) -> Command {
        let mut command = self.command("ansible-playbook");
        command
            .arg("--inventory")
            .arg(inventory)
            .arg(Path::new(COLLECTION).join("playbooks").join(playbook));
        command
    }
}

/// The lines after `PLAY RECAP`.
pub fn recap(text: &str) -> &str {
    text.rsplit_once("PLAY RECAP")
        .map_or("", |(_, recap)| recap)
}

/// Standard output then standard error.
pub fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
