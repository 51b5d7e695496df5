//! Who is served (SPEC §10): `--allow`/`--deny`, `--max-per-source`, `--rate-per-source`, the
//! refusal log, `--log-connections`, `--keepalive` and `--socket-mode`, against the real
//! binary. Distinct sources are distinct loopback addresses: the client binds 127.0.0.2,
//! 127.0.0.3, … before it connects (the whole of 127.0.0.0/8 is local on Linux).

mod bench;
mod early;
// --allow-file/--deny-file (issue 18).
mod files;
mod limits;
mod lists;
mod logs;
mod sockets;
// The per-source table: two buckets, --source-table, eviction, `table full` (issue 15).
mod table;

use std::io::{self};
use std::net::{Ipv4Addr, TcpStream};
use std::time::Duration;

use crate::util::client::{outcome, ping, Outcome};
use crate::util::Daemon;

/// A client connected from `source` (e.g. 127.0.0.2) to the daemon's first TCP address.
pub(super) fn connect_from(d: &Daemon, source: Ipv4Addr) -> io::Result<TcpStream> {
    crate::util::client::connect_from(source, d.addr())
}

pub(super) fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

/// Served (echoes a ping) or refused (closed with nothing sent)? Fails the test otherwise.
pub(super) fn served(d: &Daemon, s: &TcpStream) -> bool {
    // Refused connections are closed at accept: wait for that first, so that a ping cannot
    // race the close. A served one stays silent.
    match outcome(s, Duration::from_millis(300)) {
        Outcome::Closed => return false,
        Outcome::Data(b) => d.fail(&format!("the server sent {b:?} unasked")),
        Outcome::Silent => {}
    }
    match ping(s, b"hello") {
        Ok(b) if b == b"hello" => true,
        Ok(b) => d.fail(&format!("echo came back as {b:?}")),
        // A refusal whose close came after the wait above (a loaded machine can hold the
        // daemon off the CPU for longer): the ping met the close (EOF, or a reset because
        // the daemon closed a socket with our unread ping in it). Refused, not broken.
        Err(e) if refused_late(&e) => false,
        Err(e) => d.fail(&format!("a connection left open did not echo: {e}")),
    }
}

/// The stats field `key`, as a number.
/// How a ping ends on a connection the daemon closed at accept.
fn refused_late(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe
    )
}

pub(super) fn stat(d: &Daemon, key: &str) -> u64 {
    let st = d.stats();
    match st.get(key).and_then(|v| v.parse().ok()) {
        Some(n) => n,
        None => d.fail(&format!("no numeric stats field {key:?} in {st:?}")),
    }
}
