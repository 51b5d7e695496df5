//! The loop core every process shape turns on: the readiness seam with its three backends,
//! the deadline queue, and the signals that reach the loop through a pipe.

pub mod reactor;
pub(crate) mod signal;
pub(crate) mod timer;
