//! relaisd binary.
fn main() {}
