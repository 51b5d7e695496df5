//! What the user reads (issue 15 item 11, issue 16 item 7): values cut in usage errors,
//! numeric hosts never read as octal, no "(os error N)", mapped peers folded in
//! `--log-connections`, singular counts, warnings that name only what applies.

use std::io::Write;
use std::net::{Ipv6Addr, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use nix::sys::socket::{
    bind, listen, setsockopt, socket, sockopt, AddressFamily, Backlog, SockFlag, SockType,
    SockaddrIn6,
};

use crate::util::client::{ipv6_loopback_works, ping};
use crate::util::{run, Daemon, Run, TempDir};

const PATIENCE: Duration = Duration::from_secs(10);

/// Exit `code`, exactly one line on stderr, starting `echo-mux: `, naming every needle,
/// without "os error".
fn one_line(r: &Run, code: i32, needles: &[&str]) -> String {
    let line = r.stderr.trim_end();
    let ok = !r.timed_out
        && r.status.code() == Some(code)
        && !line.contains('\n')
        && line.starts_with("echo-mux: ")
        && !line.contains("os error")
        && needles.iter().all(|n| line.contains(n));
    assert!(
        ok,
        "want exit {code}, one line naming {needles:?}:{}",
        r.describe()
    );
    line.to_string()
}

/// SPEC §1/§2: a value over 64 KiB used to print nothing at all (exit 2, empty stderr); it
/// is cut at about 100 characters. `010.0.0.1` is a usage error, never 8.0.0.1, in
/// `--listen` and in the lists. An unknown option suggests the nearest one.
#[test]
fn usage_errors_cut_values_refuse_octal_and_suggest() {
    let huge = "9".repeat(70_000);
    let line = one_line(&run(&["--listen", &huge]), 2, &["'--listen'", "…'"]);
    assert!(line.chars().count() < 400, "{} characters", line.len());
    let line = one_line(&run(&["--delay", &huge]), 2, &["'--delay'", "…'"]);
    assert!(line.chars().count() < 400, "{} characters", line.len());
    let line = one_line(&run(&[&format!("--{huge}")]), 2, &["unknown option", "…"]);
    assert!(line.chars().count() < 400, "{} characters", line.len());

    for args in [
        &["--listen", "010.0.0.1:7000"][..],
        &["--listen", "udp:010.0.0.1:7000"],
        &["--listen", "127.0.0.1:0", "--allow", "010.0.0.1"],
        &["--listen", "127.0.0.1:0", "--deny", "10.0.0.010/32"],
    ] {
        one_line(&run(args), 2, &["leading zero", "octal"]);
    }
    one_line(&run(&["--listen", "127.1:7000"]), 2, &["not a dotted IPv4"]);

    let line = one_line(&run(&["--port", "7000"]), 2, &[]);
    assert_eq!(
        line,
        "echo-mux: unknown option '--port' (did you mean '--listen'?)"
    );
    let line = one_line(&run(&["--keepalve", "1s"]), 2, &[]);
    assert_eq!(
        line,
        "echo-mux: unknown option '--keepalve' (did you mean '--keepalive'?)"
    );
}

/// Errors that come from the kernel read "address already in use", never "Address already
/// in use (os error 98)": at start (exit 1) and in a runtime warning.
#[test]
fn startup_errors_show_no_os_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    one_line(
        &run(&["--listen", &addr]),
        1,
        &[&addr, "address already in use"],
    );
    let dir = TempDir::new("wording");
    let file = dir.join("plain-file");
    std::fs::write(&file, b"").unwrap();
    let arg = format!("unix:{}", file.display());
    one_line(&run(&["--listen", &arg]), 1, &["not a socket"]);
    let missing = format!("unix:{}", dir.join("no/such/dir.sock").display());
    one_line(
        &run(&["--listen", &missing]),
        1,
        &["no such file or directory"],
    );
}

for_each_backend!(descriptor_shortage_warning_shows_no_os_error);
/// The EMFILE warning of the accept loop: plain words, no "(os error 24)".
fn descriptor_shortage_warning_shows_no_os_error(backend: &'static str) {
    let Some(d) = Daemon::with(backend).nofile(32).spawn() else {
        return;
    };
    let clients: Vec<TcpStream> = (0..48)
        .filter_map(|_| crate::util::client::connect(d.addr()).ok())
        .collect();
    let line = d.expect_line(0, "cannot accept", PATIENCE);
    if line.contains("os error") || !line.contains("too many open files") {
        d.fail(&format!("the shortage warning reads {line:?}"));
    }
    if let Some(l) = d.stderr().lines().find(|l| l.contains("os error")) {
        d.fail(&format!("a line shows an os error: {l}"));
    }
    drop(clients);
}

/// A dual-stack `[::]` listener (as systemd's `BindIPv6Only=both` hands over), on a free
/// port; IPv4 clients reach it as `::ffff:127.0.0.1`.
fn dual_stack_listener() -> OwnedFd {
    let fd = socket(
        AddressFamily::Inet6,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    setsockopt(&fd, sockopt::Ipv6V6Only, &false).unwrap();
    let any = SockaddrIn6::from(std::net::SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, 0, 0, 0));
    bind(fd.as_raw_fd(), &any).unwrap();
    listen(&fd, Backlog::new(64).unwrap()).unwrap();
    fd
}

for_each_backend!(log_connections_folds_mapped_peers);
/// `--log-connections` showed an IPv4 client of a `[::]` listener as
/// `[::ffff:127.0.0.1]:52456` while the refusal lines folded it: now `127.0.0.1:52456`.
fn log_connections_folds_mapped_peers(backend: &'static str) {
    if !ipv6_loopback_works() {
        eprintln!("note: no IPv6 here; skipping the [::] listener test");
        return;
    }
    let l = dual_stack_listener();
    let port = nix::sys::socket::getsockname::<SockaddrIn6>(l.as_raw_fd())
        .unwrap()
        .port();
    let args = ["--log-connections"];
    let Some(d) = Daemon::with(backend).args(&args).inherit(vec![l]).spawn() else {
        return;
    };
    let mut c = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port))).unwrap();
    ping(&mut c, b"mapped").unwrap();
    let local = c.local_addr().unwrap();
    let mark = 0;
    c.flush().unwrap();
    drop(c);
    let line = d.expect_line(mark, &format!("closed {local} after"), PATIENCE);
    if line.contains("::ffff:") {
        d.fail(&format!("not folded: {line}"));
    }
}

for_each_backend!(socket_activation_lines_say_what_applies);
/// One inherited socket is `1 inherited socket` (and `1 listening socket` with
/// `--workers`); `--listen is ignored` only when `--listen` was given; `--socket-mode` is
/// said to be ignored with `--workers` too (it was silent there).
fn socket_activation_lines_say_what_applies(backend: &'static str) {
    for workers in ["1", "2"] {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let args = ["--workers", workers, "--socket-mode", "0660"];
        let Some(mut d) = Daemon::with(backend)
            .args(&args)
            .inherit(vec![OwnedFd::from(l)])
            .spawn()
        else {
            return;
        };
        ping(d.connect(), b"x").unwrap();
        let line = d.expect_line(0, "socket activation", PATIENCE);
        if !line.contains("serving 1 inherited socket") || line.contains("sockets") {
            d.fail(&format!("--workers {workers}: {line}"));
        }
        if line.contains("--listen") {
            d.fail(&format!(
                "--workers {workers}: no --listen was given: {line}"
            ));
        }
        d.expect_line(0, "--socket-mode is ignored", PATIENCE);
        if workers != "1" {
            let line = d.expect_line(0, "starting 2 workers", PATIENCE);
            if !line.contains("1 listening socket)") {
                d.fail(&format!("--workers 2: {line}"));
            }
        }
        d.terminate(PATIENCE);
    }
}

/// `--backend select` with a `--max-clients` beyond FD_SETSIZE warns at start, with and
/// without `--workers`; the default limit and the other backends do not.
#[test]
fn select_warns_when_max_clients_cannot_be_reached() {
    for (backend, args, warned) in [
        ("select", &["--max-clients", "5000"][..], true),
        ("select", &["--max-clients", "5000", "--workers", "2"], true),
        ("select", &["--max-clients", "500"], false),
        ("select", &[], false),
        ("poll", &["--max-clients", "5000"], false),
    ] {
        let Some(mut d) = Daemon::spawn(backend, args) else {
            return;
        };
        ping(d.connect(), b"x").unwrap();
        d.terminate(PATIENCE);
        let warning = d
            .stderr()
            .lines()
            .find(|l| l.contains("WARN") && l.contains("--max-clients"))
            .map(str::to_string);
        match (warned, warning) {
            (true, Some(w)) if w.contains("FD_SETSIZE") && w.contains("5000") => {}
            (false, None) => {}
            (_, w) => d.fail(&format!(
                "--backend {backend} {args:?}: want a warning: {warned}, got {w:?}"
            )),
        }
    }
}
