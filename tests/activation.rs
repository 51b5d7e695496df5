//! Socket activation: the real `systemd-socket-activate` binds the sockets and execs
//! echo-mux with them as descriptors 3, 4, … (no `-a`: listening sockets are passed, not
//! accepted connections), and descriptors passed the same way by the harness itself.

use std::net::TcpListener;
use std::time::Duration;

use crate::util::client::ipv6_loopback_works;
use crate::util::{Addr, Daemon, TempDir};

/// Longest wait for anything that should be near-instant (generous for a loaded CI box).
const PATIENCE: Duration = Duration::from_secs(10);

for_each_backend!(socket_activation_one_tcp_socket);
/// One inherited TCP socket on each backend: it echoes, the start is logged as socket
/// activation with the backend named, and SIGTERM ends it with exit 0.
fn socket_activation_one_tcp_socket(backend: &'static str) {
    let activated = Daemon::with(backend).socket_activated(|p| vec![format!("127.0.0.1:{p}")]);
    let Some(mut d) = activated.spawn() else {
        return;
    };
    d.expect_echo(d.connect(), backend);
    let line = d.wait_line(0, "socket activation", PATIENCE);
    if !line.is_some_and(|l| l.contains("1 inherited")) {
        d.fail(&format!(
            "{backend}: no `socket activation … 1 inherited` line"
        ));
    }
    let line = d.wait_line(0, "listening on 127.0.0.1:", PATIENCE);
    if !line.is_some_and(|l| l.contains(&format!("backend {backend}"))) {
        d.fail(&format!(
            "no `listening on 127.0.0.1:… (backend {backend})` line"
        ));
    }
    d.terminate(PATIENCE);
}

#[test]
fn socket_activation_ipv4_and_ipv6_sockets() {
    let v6 = ipv6_loopback_works();
    if !v6 {
        eprintln!("note: ::1 is unavailable here; testing 127.0.0.1 twice instead of [::1]");
    }
    let activated = Daemon::with("epoll").socket_activated(move |p| match v6 {
        true => vec![format!("127.0.0.1:{p}"), format!("[::1]:{p}")],
        false => vec![format!("127.0.0.1:{p}"), format!("127.0.0.1:{}", p + 1)],
    });
    let Some(mut d) = activated.spawn() else {
        return;
    };
    let addrs = d.tcp_addrs();
    d.expect_echo(d.connect_at(addrs[0]), "127.0.0.1");
    match v6 {
        true => d.expect_echo(d.connect_at(addrs[1]), "[::1]"),
        false => d.expect_echo(d.connect_at(addrs[1]), "second ipv4"),
    }
    if d.wait_line(0, "2 inherited", PATIENCE).is_none() {
        d.fail("no `2 inherited` line");
    }
    d.terminate(PATIENCE);
}

#[test]
fn socket_activation_unix_socket_and_listen_is_ignored() {
    let dir = TempDir::new("activate-unix");
    let sock = dir.join("echo.sock");
    let ignored = dir.join("ignored.sock");
    let ignored_arg = format!("unix:{}", ignored.display());
    let spec = sock.display().to_string();
    let activated = Daemon::with("epoll")
        .args(&["--listen", &ignored_arg])
        .socket_activated(move |_| vec![spec.clone()]);
    let Some(mut d) = activated.spawn() else {
        return;
    };
    d.expect_echo(d.connect_unix(), "the unix socket");
    if d.wait_line(0, "--listen is ignored", PATIENCE).is_none() {
        d.fail("no `--listen is ignored` line");
    }
    if ignored.exists() {
        d.fail(&format!(
            "--listen was not ignored: {} exists",
            ignored.display()
        ));
    }
    d.terminate(PATIENCE);
    // An inherited socket belongs to whoever made it: echo-mux must not unlink it (SPEC §1).
    assert!(sock.exists(), "echo-mux removed the inherited socket file");
}

/// The harness's own way to pass descriptors (`Builder::inherit`, no systemd tool): a
/// listener bound by the test is adopted as it is, on its address, and echoes.
#[test]
fn inherited_listener_is_adopted_as_is() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let Some(mut d) = Daemon::with("poll").inherit(vec![listener.into()]).spawn() else {
        return;
    };
    if d.addrs() != [Addr::Tcp(addr)] {
        d.fail(&format!("want one listener on {addr}, the inherited one"));
    }
    d.expect_echo(d.connect(), "an inherited listener");
    if d.wait_line(0, "1 inherited", PATIENCE).is_none() {
        d.fail("no `1 inherited` line");
    }
    d.terminate(PATIENCE);
}
