//! Socket activation: listeners handed over by systemd (`LISTEN_FDS`, `LISTEN_FDNAMES`),
//! so a restart keeps the listening socket and clients reconnect instead of being refused.
//!
//! Names come from `FileDescriptorName=` in `relaisd.socket`: `client` and `metrics`.
//! A single unnamed descriptor is taken as the client listener.

use std::net::TcpListener;
use std::os::fd::{FromRawFd, RawFd};

/// Listeners received from the service manager.
#[derive(Debug, Default)]
pub struct Activated {
    pub client: Option<TcpListener>,
    pub metrics: Option<TcpListener>,
}

/// Why activation descriptors could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    #[error("cannot read the sockets passed by systemd: {0}")]
    Environment(std::io::Error),
    #[error(
        "systemd passed a socket named {0:?}; relaisd.socket may only name `client` and `metrics`"
    )]
    UnknownName(String),
    #[error("the socket passed by systemd as {0:?} is not a listening TCP socket")]
    NotTcp(String),
}

/// Takes the listeners systemd passed to this process, if any.
pub fn take() -> Result<Activated, ActivationError> {
    let fds: Vec<(RawFd, String)> = sd_notify::listen_fds_with_names()
        .map_err(ActivationError::Environment)?
        .collect();
    let mut activated = Activated::default();
    let single = fds.len() == 1;
    for (fd, name) in fds {
        let listener = adopt(fd, &name)?;
        match name.as_str() {
            "client" => activated.client = Some(listener),
            "metrics" => activated.metrics = Some(listener),
            _ if single => activated.client = Some(listener),
            other => return Err(ActivationError::UnknownName(other.to_owned())),
        }
    }
    // The variables are for this process only; children must not take the sockets too.
    for variable in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        // SAFETY of the environment: this runs before the runtime starts any thread.
        #[allow(unsafe_code)]
        unsafe {
            std::env::remove_var(variable);
        }
    }
    Ok(activated)
}

/// Takes ownership of one passed descriptor, checking it is a listening TCP socket.
fn adopt(fd: RawFd, name: &str) -> Result<TcpListener, ActivationError> {
    use nix::sys::socket::{AddressFamily, SockaddrLike, SockaddrStorage, getsockname};
    let address =
        getsockname::<SockaddrStorage>(fd).map_err(|_| ActivationError::NotTcp(name.to_owned()))?;
    if !matches!(
        address.family(),
        Some(AddressFamily::Inet | AddressFamily::Inet6)
    ) {
        return Err(ActivationError::NotTcp(name.to_owned()));
    }
    // SAFETY: systemd hands each descriptor from LISTEN_FDS to this process once; `take`
    // runs once at start-up, so nothing else owns or closes it.
    #[allow(unsafe_code)]
    let listener = unsafe { TcpListener::from_raw_fd(fd) };
    listener
        .set_nonblocking(true)
        .map_err(|_| ActivationError::NotTcp(name.to_owned()))?;
    Ok(listener)
}
