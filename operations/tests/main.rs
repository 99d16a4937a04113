//! Relais's operations checked for real, one module per area, in one test binary: the
//! Debian packages (relaisd's, and the desktop app's in `desktop_package`) and the Ansible
//! collection (`ansible/`), the systemd units (`systemd/`)
//! under `systemd-analyze` and in a container, the monitoring files (`monitoring/`)
//! against promtool and the daemon's metrics, and the appliance image (`image/`) read,
//! rebuilt and booted. The relay's own behaviour is tested in `daemon/tests/relay/`.
//!
//! A new module is compiled only once it is named here.

mod ansible;
mod ansible_apply;
mod desktop_package;
mod image_boot;
mod image_contents;
mod image_reproducible;
mod monitoring;
mod nspawn_boot;
mod systemd_units;
