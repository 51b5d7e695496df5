//! `--keepalive` on connections the kernel queued on an inherited listener before echo-mux
//! started (issue 15 item 6, SPEC §10 "every connection means every one"). Linux copies a
//! listener's keepalive only into connections created after it was set; the connection that
//! starts a socket-activated service is always older than that.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use crate::util::client::ping;
use crate::util::Daemon;

const PATIENCE: Duration = Duration::from_secs(10);

/// The server side of `client`'s connection to `server` in /proc/net/tcp: its `tr` (timer
/// kind: 0 none, 1 retransmit, 2 keepalive) and `tm->when` in clock ticks, if listed.
fn server_timer(server: SocketAddr, client: SocketAddr) -> Option<(u32, u64)> {
    let hex = |a: SocketAddr| match a {
        SocketAddr::V4(v4) => {
            let ip = u32::from_ne_bytes(v4.ip().octets());
            format!("{ip:08X}:{:04X}", v4.port())
        }
        SocketAddr::V6(_) => unreachable!("IPv4 only here"),
    };
    let (local, remote) = (hex(server), hex(client));
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() > 5 && f[1] == local && f[2] == remote {
            let (tr, when) = f[5].split_once(':')?;
            Some((tr.parse().ok()?, u64::from_str_radix(when, 16).ok()?))
        } else {
            None
        }
    })
}

/// Wait until the server's socket for `client` has a keepalive timer firing in about
/// `secs` seconds (a retransmit timer may show while the echo's ACK is on its way).
fn expect_keepalive(d: &Daemon, server: SocketAddr, client: &TcpStream, secs: u64, what: &str) {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let client = client.local_addr().unwrap();
    let deadline = Instant::now() + PATIENCE;
    let mut last = None;
    while Instant::now() < deadline {
        last = server_timer(server, client);
        if let Some((2, when)) = last {
            if when <= secs * hz && when + 20 * hz >= secs * hz {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    d.fail(&format!(
        "{what}: server socket {server} <- {client}: timer (kind, ticks) = {last:?} at {hz}/s; \
         want keepalive (2) firing in about {secs} s"
    ));
}

/// Clients connected (handshake done, queued in the backlog) before the daemon exists.
fn queued_clients(l: &TcpListener, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|_| TcpStream::connect(l.local_addr().unwrap()).unwrap())
        .collect()
}

for_each_backend!(keepalive_reaches_connections_queued_before_start);
/// Three connections wait in an inherited listener's backlog before echo-mux starts (as the
/// one that triggers socket activation always does). Each one, once served, has the
/// keepalive timer of `--keepalive 90s`; so does a connection made after the start.
fn keepalive_reaches_connections_queued_before_start(backend: &'static str) {
    for workers in ["1", "2"] {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let server = l.local_addr().unwrap();
        let mut early = queued_clients(&l, 3);
        let args = ["--keepalive", "90s", "--workers", workers];
        let inherited = vec![OwnedFd::from(l)];
        let Some(d) = Daemon::with(backend).args(&args).inherit(inherited).spawn() else {
            return;
        };
        for (i, c) in early.iter_mut().enumerate() {
            ping(&mut *c, b"early").unwrap_or_else(|e| d.fail(&format!("queued client {i}: {e}")));
            let what = format!("--workers {workers}, connection {i} queued before start");
            expect_keepalive(&d, server, c, 90, &what);
        }
        let mut late = d.connect();
        ping(&mut late, b"late").unwrap();
        let what = format!("--workers {workers}, connection made after start");
        expect_keepalive(&d, server, &late, 90, &what);
    }
}
