//! The loop core every process shape turns on: the readiness seam with its three backends
//! (`reactor`), the turn skeleton (`turn`) and its wait (`wait`), the deadline queue
//! (`timer`), the signals that reach the loop through one pipe (`signal`), the
//! wanted-versus-registered sync of poller interest (`interest`) and the `Pacer` that keeps
//! a line to one per period (`pacer`).

pub(crate) mod interest;
pub(crate) mod pacer;
pub mod reactor;
pub(crate) mod signal;
pub(crate) mod timer;
pub(crate) mod turn;
pub(crate) mod wait;
