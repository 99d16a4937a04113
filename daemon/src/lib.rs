//! relaisd library.
