//! What the appliance image (`image/out`, from `image/build`) holds, read from its root
//! file system tarball: relaisd and its units enabled, node_exporter with its timex
//! collector, SSH off, a default-deny firewall, the clock taken from the site's NTP
//! servers only, nothing that identifies a machine or could be a secret, and a manifest
//! and SBOM that list every Debian package and every crate compiled into relaisd.

use std::path::Path;
use std::process::Command;

use relais_testkit::qemu::Image;

/// `tar` lists and reads the tarball; nothing else is needed.
const TOOLS: &[&str] = &["tar"];

#[test]
fn the_image_carries_nothing_machine_specific_and_runs_only_what_it_should() {
    let Some(image) = Image::find("the image contents test", TOOLS) else {
        return;
    };
    let tarball = image.dir.join("rootfs.tar");
    let listing = list(&tarball);
    let paths: Vec<&str> = listing
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .collect();
    nothing_identifies_a_machine_and_the_units_are_enabled(&paths);
    assert_eq!(read(&tarball, "./etc/machine-id"), "", "machine id");
    the_firewall_denies_all_but_dhcp_and_relaisd(&tarball);
    node_exporter_reports_the_host_and_its_clock(&paths, &tarball);
    time_comes_from_the_sites_servers_only(&tarball);
    the_manifest_and_sbom_list_every_package_and_crate(&image, &tarball);
}

/// `tar -tv` of the tarball: one line per entry, its path in the sixth field.
fn list(tarball: &Path) -> String {
    let out = Command::new("tar")
        .arg("-tvf")
        .arg(tarball)
        .output()
        .expect("tar");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// No host keys, random seed, credentials or enabled SSH among `paths`; relaisd, its units
/// and the ones it needs enabled.
fn nothing_identifies_a_machine_and_the_units_are_enabled(paths: &[&str]) {
    let has = |path: &str| paths.contains(&path);
    for forbidden in [
        "./etc/ssh/ssh_host_ed25519_key",
        "./etc/ssh/ssh_host_rsa_key",
        "./etc/ssh/ssh_host_ecdsa_key",
        "./var/lib/systemd/random-seed",
        "./var/lib/systemd/credential.secret",
        "./var/lib/dbus/machine-id",
        "./etc/relais/credentials/relais-tls-key.cred",
        "./etc/systemd/system/multi-user.target.wants/ssh.service",
    ] {
        assert!(!has(forbidden), "{forbidden} is in the image");
    }
    assert!(
        !paths.iter().any(
            |p| p.starts_with("./etc/relais/credentials/") && *p != "./etc/relais/credentials/"
        ),
        "credentials in the image"
    );
    for needed in [
        "./usr/bin/relaisd",
        "./usr/lib/systemd/system/relaisd.service",
        "./usr/lib/systemd/system/relais-keys.service",
        "./usr/lib/systemd/system/relaisd.service.d/appliance-keys.conf",
        "./etc/systemd/system/multi-user.target.wants/relaisd.service",
        "./etc/systemd/system/multi-user.target.wants/relais-keys.service",
        "./etc/systemd/system/sysinit.target.wants/nftables.service",
        "./etc/systemd/system/sockets.target.wants/relaisd.socket",
        "./etc/systemd/system/sockets.target.wants/relaisd-metrics.socket",
        "./etc/systemd/system/sysinit.target.wants/systemd-timesyncd.service",
        "./usr/sbin/sshd",
        "./usr/bin/systemd-creds",
        "./var/log/journal/",
    ] {
        assert!(has(needed), "{needed} is not in the image");
    }
}

/// The firewall drops what it does not accept, and accepts only DHCP's answers,
/// relaisd's two ports and node_exporter's.
fn the_firewall_denies_all_but_dhcp_and_relaisd(tarball: &Path) {
    let firewall = read(tarball, "./etc/nftables.conf");
    let rules: Vec<&str> = firewall
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    assert!(rules.contains(&"type filter hook input priority filter; policy drop;"));
    assert!(rules.contains(&"tcp dport { 8443, 9464, 9100 } accept"));
    let opened: Vec<&&str> = rules.iter().filter(|l| l.contains("dport")).collect();
    assert_eq!(
        opened.len(),
        2,
        "only DHCP answers and relaisd's and node_exporter's ports: {opened:?}"
    );
}

/// node_exporter runs at boot with its timex collector, which the clock alert reads, on
/// loopback as relaisd's metrics are.
fn node_exporter_reports_the_host_and_its_clock(paths: &[&str], tarball: &Path) {
    for needed in [
        "./usr/bin/prometheus-node-exporter",
        "./etc/systemd/system/multi-user.target.wants/prometheus-node-exporter.service",
    ] {
        assert!(paths.contains(&needed), "{needed} is not in the image");
    }
    let defaults = read(tarball, "./etc/default/prometheus-node-exporter");
    let args: Vec<&str> = defaults
        .lines()
        .filter(|l| l.starts_with("ARGS="))
        .collect();
    assert_eq!(
        args,
        ["ARGS=\"--web.listen-address=127.0.0.1:9100 --collector.timex\""],
        "{defaults}"
    );
}

/// Time from the site's servers (DHCP's, or named by the operator), never a public pool:
/// systemd-timesyncd's built-in fallback servers are switched off.
fn time_comes_from_the_sites_servers_only(tarball: &Path) {
    let time = read(tarball, "./etc/systemd/timesyncd.conf.d/relais.conf");
    let settings: Vec<&str> = time
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(settings, ["[Time]", "FallbackNTP="], "{time}");
}

/// The manifest lists every installed Debian package and the crates in relaisd (not the
/// proc-macros, which run at build time), and the SBOM has a component for each.
fn the_manifest_and_sbom_list_every_package_and_crate(image: &Image, tarball: &Path) {
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(image.dir.join("manifest.json")).expect("manifest.json"),
    )
    .expect("manifest is JSON");
    let status = read(tarball, "./var/lib/dpkg/status");
    let installed = status
        .split("\n\n")
        .filter(|s| s.contains("Status: install ok installed"))
        .count();
    let debian = manifest["debian_packages"].as_array().expect("packages");
    assert_eq!(debian.len(), installed, "every installed package");
    for package in [
        "relaisd",
        "systemd",
        "linux-image-amd64",
        "nftables",
        "openssh-server",
        "systemd-timesyncd",
        "prometheus-node-exporter",
    ] {
        assert!(
            debian.iter().any(|p| p["name"] == package),
            "{package} not in the manifest"
        );
    }
    let crates = manifest["crates"].as_array().expect("crates");
    for krate in ["relaisd", "relais-protocol", "tokio", "rustls", "openmls"] {
        assert!(
            crates.iter().any(|c| c["name"] == krate),
            "{krate} not in the manifest"
        );
    }
    // The proc-macro crates run at build time and are not in the binary.
    assert!(!crates.iter().any(|c| c["name"] == "serde_derive"));
    let sbom: serde_json::Value = serde_json::from_slice(
        &std::fs::read(image.dir.join("sbom.cdx.json")).expect("sbom.cdx.json"),
    )
    .expect("SBOM is JSON");
    assert_eq!(sbom["bomFormat"], "CycloneDX");
    let components = sbom["components"].as_array().expect("components");
    assert_eq!(components.len(), debian.len() + crates.len());
}

fn read(tarball: &Path, path: &str) -> String {
    let out = Command::new("tar")
        .arg("-xOf")
        .arg(tarball)
        .arg(path)
        .output()
        .expect("tar");
    assert!(out.status.success(), "{path} is not in the image");
    String::from_utf8(out.stdout).expect("utf-8")
}
