//! echo-mux: a one-thread TCP and unix-socket echo daemon with a hand-written reactor.
#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod error;
pub mod reactor;
pub mod systemd;
