//! The network edge below the services: addresses in one canonical form, the sockets
//! echo-mux listens on (bound here, or handed in by systemd), and their TCP tuning.

pub mod addr;
pub mod keepalive;
pub mod listen;
