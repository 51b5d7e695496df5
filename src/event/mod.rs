//! The loop core every process shape turns on: the readiness seam with its three backends,
//! the deadline queue, the signals that reach the loop through a pipe, and one turn's wait.

pub(crate) mod interest;
pub(crate) mod pacer;
pub mod reactor;
pub(crate) mod signal;
pub(crate) mod timer;
pub(crate) mod turn;
pub(crate) mod wait;
