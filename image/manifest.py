#!/usr/bin/env python3
"""The image's manifest and CycloneDX SBOM (image/build step 6), and the bundle's list of
.deb files (step 7).

Both documents are functions of their inputs only: the dpkg status file of the root file
system, the crates `cargo tree` found in relaisd, the commit, the compiler and
SOURCE_DATE_EPOCH. The SBOM's serial number is derived from the manifest's hash, so two
builds of the same inputs write the same bytes.
"""

import argparse
import datetime
import hashlib
import json
import os
import sys
import uuid


def packages(status_path):
    """Every installed package in a dpkg status file, as (name, version, architecture)."""
    with open(status_path, encoding="utf-8") as status:
        stanzas = status.read().split("\n\n")
    found = []
    for stanza in stanzas:
        fields = {}
        for line in stanza.splitlines():
            if line and not line[0].isspace() and ":" in line:
                key, value = line.split(":", 1)
                fields[key] = value.strip()
        if fields.get("Status", "").endswith(" installed"):
            found.append((fields["Package"], fields["Version"], fields["Architecture"]))
    return sorted(found)


def crates(tree_path):
    """The crates in relaisd from `cargo tree --prefix none --format '{p}'`: a line is
    `NAME vVERSION`, followed by the path for the workspace's own crates and `(*)` for
    one already listed."""
    found = set()
    with open(tree_path, encoding="utf-8") as tree:
        for line in tree:
            words = line.split()
            if len(words) < 2:
                continue
            name, version = words[0], words[1].lstrip("v")
            source = "workspace" if "(/" in line else "crates.io"
            found.add((name, version, source))
    return sorted(found)


def deb_file(name, version, architecture):
    """The name apt gives the file it downloads for a package (epoch colon escaped)."""
    return f"{name}_{version.replace(':', '%3a')}_{architecture}.deb"


def component(ours, name, version, purl):
    """A CycloneDX component: ours (relaisd and its workspace crates) or a library."""
    return {
        "type": "application" if ours else "library",
        "bom-ref": purl,
        "name": name,
        "version": version,
        "purl": purl,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--status", required=True, help="the image's dpkg status file")
    parser.add_argument("--deb-files", action="store_true",
                        help="print the .deb file names of the Debian packages and stop")
    parser.add_argument("--crates", help="cargo tree's output for relaisd")
    parser.add_argument("--commit")
    parser.add_argument("--rustc")
    parser.add_argument("--out", help="where to write manifest.json and sbom.cdx.json")
    args = parser.parse_args()

    debian = [p for p in packages(args.status) if p[0] != "relaisd"]
    if args.deb_files:
        for package in debian:
            print(deb_file(*package))
        return 0

    epoch = int(os.environ["SOURCE_DATE_EPOCH"])
    manifest = {
        "image": "relais-appliance",
        "distribution": "debian bookworm (12), amd64",
        "source": {"commit": args.commit, "source_date_epoch": epoch},
        "compiler": args.rustc,
        "debian_packages": [
            {"name": n, "version": v, "architecture": a} for n, v, a in packages(args.status)
        ],
        "crates": [{"name": n, "version": v, "source": s} for n, v, s in crates(args.crates)],
    }
    manifest_bytes = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    with open(os.path.join(args.out, "manifest.json"), "wb") as out:
        out.write(manifest_bytes)

    timestamp = datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc)
    components = [
        component(name == "relaisd", name, version,
                  f"pkg:deb/debian/{name}@{version}?arch={arch}&distro=debian-12")
        for name, version, arch in packages(args.status)
    ] + [
        component(source == "workspace", name, version, f"pkg:cargo/{name}@{version}")
        for name, version, source in crates(args.crates)
    ]
    sbom = {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": "urn:uuid:"
        + str(uuid.UUID(bytes=hashlib.sha256(manifest_bytes).digest()[:16], version=4)),
        "version": 1,
        "metadata": {
            "timestamp": timestamp.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "component": {
                "type": "operating-system",
                "bom-ref": "relais-appliance",
                "name": "relais-appliance",
                "version": args.commit,
            },
        },
        "components": components,
        "dependencies": [
            {"ref": "relais-appliance", "dependsOn": [c["bom-ref"] for c in components]}
        ],
    }
    with open(os.path.join(args.out, "sbom.cdx.json"), "w", encoding="utf-8") as out:
        out.write(json.dumps(sbom, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
