//! The appliance image is reproducible and builds without the internet:
//! `image/build --offline` from the bundle `image/build --bundle` wrote, in other
//! directories and in a network namespace of its own (no interface but a loopback that
//! is down), gives the same `SHA256SUMS` as the build that reached Debian's mirror and
//! crates.io: the same root file system, disk, kernel, relaisd package, manifest and SBOM.
//! The relaisd binary inside was compiled again from other paths, so this also shows
//! that the paths are remapped out of it.

use std::process::Command;

use relais_testkit::qemu::{BUILD_TOOLS, Image};

#[test]
fn an_offline_rebuild_from_the_bundle_without_network_gives_the_same_checksums() {
    let Some(image) = Image::find("the reproducibility test", BUILD_TOOLS) else {
        return;
    };
    let bundle = image.dir.join("bundle");
    assert!(
        bundle.join("Packages").exists(),
        "no bundle in {}: run image/build --bundle",
        bundle.display()
    );
    // No route anywhere, so nothing can be fetched: the check that the namespace is cut
    // off, before trusting it.
    let probe = Command::new("unshare")
        .args([
            "--net",
            "--",
            "bash",
            "-c",
            "exec 3<>/dev/tcp/deb.debian.org/80",
        ])
        .output()
        .expect("unshare");
    assert!(!probe.status.success(), "the namespace reaches the network");

    let out = tempfile::tempdir_in("/var/tmp").expect("tempdir");
    let target = relais_testkit::target_dir();
    let build = Command::new("unshare")
        .args(["--net", "--"])
        .arg(relais_testkit::repository().join("image/build"))
        .arg("--offline")
        .arg(&bundle)
        .env("RELAIS_IMAGE_OUT", out.path())
        .env("CARGO_TARGET_DIR", target)
        .output()
        .expect("image/build --offline");
    assert!(
        build.status.success(),
        "the offline build failed:\n{}",
        relais_testkit::packaging::text(&build)
    );
    let first = std::fs::read_to_string(image.dir.join("SHA256SUMS")).expect("SHA256SUMS");
    let again = std::fs::read_to_string(out.path().join("SHA256SUMS")).expect("SHA256SUMS");
    assert_eq!(first.lines().count(), 8, "{first}");
    assert_eq!(
        first, again,
        "the offline rebuild differs from the first build"
    );
}
