//! Options on the sockets themselves: `--keepalive`, `--socket-mode`.

use std::io::{Read, Write};
use std::net::SocketAddr;

use crate::util::client::ping;
use crate::util::{Daemon, TempSock};

/// The server side of the connection from `client` in /proc/net/tcp: its `tr` (timer kind:
/// 2 = keepalive) and `tm->when` (clock ticks until it fires).
fn server_timer(d: &Daemon, client: SocketAddr) -> (u32, u64) {
    let hex = |a: SocketAddr| match a {
        SocketAddr::V4(v4) => {
            let ip = u32::from_ne_bytes(v4.ip().octets());
            format!("{ip:08X}:{:04X}", v4.port())
        }
        SocketAddr::V6(_) => unreachable!(),
    };
    let (local, remote) = (hex(d.addr()), hex(client));
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() > 5 && f[1] == local && f[2] == remote {
            let (tr, when) = f[5].split_once(':').unwrap();
            return (tr.parse().unwrap(), u64::from_str_radix(when, 16).unwrap());
        }
    }
    d.fail(&format!("no socket {local} <- {remote} in /proc/net/tcp"))
}

for_each_backend!(keepalive_is_set_on_accepted_connections);
/// `--keepalive 90s` arms the keepalive timer of the server's socket for about 90 s; the
/// default arms it for about 5 minutes; `--keepalive 0` arms none.
fn keepalive_is_set_on_accepted_connections(backend: &'static str) {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    for (args, want) in [
        (&["--keepalive", "90s"][..], Some(90)),
        (&[][..], Some(300)),
        (&["--keepalive", "0"][..], None),
    ] {
        let Some(d) = Daemon::spawn(backend, args) else {
            return;
        };
        let mut s = d.connect();
        ping(&mut s, b"k").unwrap();
        let (tr, when) = server_timer(&d, s.local_addr().unwrap());
        let ok = match want {
            Some(secs) => tr == 2 && when <= secs * hz && when + 20 * hz >= secs * hz,
            None => tr == 0,
        };
        if !ok {
            d.fail(&format!(
                "{args:?}: server socket timer tr={tr} when={when} ticks ({hz}/s); want {}",
                match want {
                    Some(secs) => format!("keepalive (2) firing in about {secs} s"),
                    None => "no timer (0)".into(),
                }
            ));
        }
    }
}

/// `--socket-mode 0660` (and 0600) on a unix socket file echo-mux creates; it still serves.
#[test]
fn socket_mode_sets_the_socket_files_permissions() {
    use std::os::unix::fs::PermissionsExt;
    for (mode, want) in [("0660", 0o660), ("600", 0o600)] {
        let sock = TempSock::new("mode");
        let listen = sock.listen_arg();
        let Some(d) = Daemon::spawn("epoll", &["--listen", &listen, "--socket-mode", mode]) else {
            return;
        };
        let got = std::fs::metadata(&sock.0).unwrap().permissions().mode() & 0o7777;
        if got != want {
            d.fail(&format!("--socket-mode {mode}: the file has {got:o}"));
        }
        let mut c = std::os::unix::net::UnixStream::connect(&sock.0).unwrap();
        c.write_all(b"u").unwrap();
        let mut b = [0u8; 1];
        c.read_exact(&mut b).unwrap();
    }
}

/// A socket handed over by systemd: `--socket-mode` does not apply (a warning says so: the
/// unit's `SocketMode=` does), but `--keepalive` does, through the listener.
#[test]
fn inherited_listeners_get_keepalive_but_not_the_socket_mode() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let args = ["--socket-mode", "0660", "--keepalive", "90s"];
    let inherited = vec![std::os::fd::OwnedFd::from(l)];
    let Some(d) = Daemon::with("epoll").args(&args).inherit(inherited).spawn() else {
        return;
    };
    d.expect_line(
        0,
        "--socket-mode is ignored",
        std::time::Duration::from_secs(10),
    );
    let mut s = d.connect();
    ping(&mut s, b"k").unwrap();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let (tr, when) = server_timer(&d, s.local_addr().unwrap());
    if tr != 2 || when > 90 * hz || when + 20 * hz < 90 * hz {
        d.fail(&format!(
            "inherited listener: timer tr={tr} when={when}; want keepalive in ~90 s"
        ));
    }
}
