//! Relais client library.
