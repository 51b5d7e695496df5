//! The network edge below the services: addresses in one canonical form, and the sockets
//! echo-mux listens on (bound here, or handed in by systemd).

pub mod addr;
pub mod listen;
