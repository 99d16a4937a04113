//! relais-core: what the relay decides, without sockets, databases or a clock.
//!
//! Every function here takes what it needs (bytes, counts, the time as milliseconds) and
//! returns a decision; the daemon and the store do the I/O around it. See `ARCHITECTURE.md`.

mod ids;
pub mod limiter;
pub mod mls;
mod net;
pub mod ordering;
mod refusal;
pub mod session;

pub use ids::{DeliveryKind, DeviceId};
pub use net::Network;
pub use refusal::{Refusal, RevokedBy};
