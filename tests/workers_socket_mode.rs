//! `--socket-mode` with `--workers` under socket activation (issue 15 item 11): it does not
//! apply to an inherited socket, and the supervisor says so as the one-process daemon does.

use std::time::Duration;

use crate::util::client::ping;
use crate::util::Daemon;

#[test]
fn the_supervisor_warns_that_socket_mode_is_ignored_for_inherited_sockets() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let inherited = vec![std::os::fd::OwnedFd::from(l)];
    let Some(d) = Daemon::with("epoll")
        .args(&["--workers", "2", "--socket-mode", "0660"])
        .inherit(inherited)
        .expect_listeners(2)
        .spawn()
    else {
        return;
    };
    let line = d.expect_line(0, "--socket-mode is ignored", Duration::from_secs(10));
    if !line.contains("WARN") || !line.contains("supervisor: ") {
        d.fail(&format!("want the supervisor's warning, got {line:?}"));
    }
    let mut s = d.connect();
    ping(&mut s, b"m").unwrap_or_else(|e| d.fail(&format!("ping: {e}")));
}
