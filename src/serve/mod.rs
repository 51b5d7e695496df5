//! What happens to a socket once it is ours: a connection's stream echo (`conn`), a UDP
//! socket's datagram echo (`udp`), the reply making they share (`echo`, `buffer`), and the
//! `--metrics` HTTP responder (`metrics`).

pub(crate) mod buffer;
pub(crate) mod conn;
pub(crate) mod echo;
pub(crate) mod metrics;
pub(crate) mod udp;
