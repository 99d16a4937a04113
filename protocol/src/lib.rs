//! The Relais wire protocol: the protobuf schema, the frame codec and the authentication
//! transcript. No I/O happens here: bytes and time go in, values and typed errors come out
//! (`time::now_ms` reads the clock for callers; nothing in this crate calls it).

pub mod auth;
pub mod exit;
pub mod frame;
pub mod time;

/// The generated protobuf types of `proto/relais/v1/*.proto`.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/relais.v1.rs"));
}

pub use frame::{FrameError, PROTOCOL_VERSION, decode_envelope, encode_envelope};
