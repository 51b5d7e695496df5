//! What happens to a socket once it is ours: a connection's stream echo (`conn`), a UDP
//! socket's datagram echo (`udp`), and the reply making they share (`echo`, `buffer`).

pub(crate) mod buffer;
pub(crate) mod conn;
pub(crate) mod echo;
pub(crate) mod udp;
