//! relais CLI.
fn main() {}
