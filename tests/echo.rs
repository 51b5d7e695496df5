//! Raw echo: byte for byte under concurrency, half-close, unix sockets, listen-address
//! forms (SPEC §1, §3, §4).

use std::thread;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::util::client::{self, echo_exact, fresh_seed, Pattern};
use crate::util::{Addr, Daemon, TempSock};

const CLIENTS: usize = 200;

for_each_backend!(exact_echo_200_concurrent_clients);
/// 200 clients, all connected at once, each echoing 64–256 KiB of its own random bytes
/// while writing and reading concurrently; every byte must come back in order.
fn exact_echo_200_concurrent_clients(backend: &'static str) {
    let d = Daemon::shared(backend);
    let seed = fresh_seed();
    let mut sizes = Pattern::new(seed);
    let conns: Vec<_> = (0..CLIENTS).map(|_| d.connect()).collect();
    let errors: Vec<String> = thread::scope(|scope| {
        let handles: Vec<_> = conns
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let len = sizes.range(64 << 10, 256 << 10);
                let seed = seed.wrapping_add(i as u64 * 7919);
                scope.spawn(move || {
                    echo_exact(s, seed, len, false).map_err(|e| format!("client {i}: {e}"))
                })
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|h| h.join().unwrap().err())
            .collect()
    });
    if !errors.is_empty() {
        d.fail(&format!(
            "{} of {CLIENTS} clients failed, e.g.:\n{}",
            errors.len(),
            errors[..errors.len().min(5)].join("\n")
        ));
    }
}

for_each_backend!(exact_echo_16_mib_stream);
/// One 16 MiB stream, echoed exactly.
fn exact_echo_16_mib_stream(backend: &'static str) {
    let d = Daemon::shared(backend);
    let s = d.connect();
    if let Err(e) = echo_exact(&s, fresh_seed(), 16 << 20, false) {
        d.fail(&e);
    }
}

for_each_backend!(half_close_echoes_everything_then_eof);
/// After the client shuts down its sending side, everything it sent is still echoed,
/// then the server closes (clean EOF).
fn half_close_echoes_everything_then_eof(backend: &'static str) {
    let d = Daemon::shared(backend);
    for len in [0, 1, 100_000, 3 << 20] {
        let s = d.connect();
        if let Err(e) = echo_exact(&s, fresh_seed(), len, true) {
            d.fail(&format!("{len} bytes: {e}"));
        }
    }
}

for_each_backend!(half_close_with_output_queued);
/// The client sends 16 MiB and half-closes before reading a byte, so the daemon (with a
/// 64 MiB --max-buffer it never has to pause) meets the end of input with most of the
/// echo still queued; all of it must still come out before the close.
fn half_close_with_output_queued(backend: &'static str) {
    let Some(d) = Daemon::spawn(backend, &["--max-buffer", "64MiB"]) else {
        return;
    };
    let s = d.connect();
    let (seed, len) = (fresh_seed(), 16 << 20);
    client::send_pattern(&mut &s, seed, len).unwrap_or_else(|e| d.fail(&format!("write: {e}")));
    s.shutdown(std::net::Shutdown::Write).unwrap();
    thread::sleep(Duration::from_millis(200)); // the daemon reads the end of input meanwhile
    let res = client::check_pattern(&mut &s, seed, len).and_then(|_| client::expect_eof(&mut &s));
    if let Err(e) = res {
        d.fail(&format!("half-closed with output queued: {e}"));
    }
}

for_each_backend!(unix_and_tcp_listeners);
/// A TCP and a unix listener together; both echo; the socket file the daemon created is
/// removed when it exits.
fn unix_and_tcp_listeners(backend: &'static str) {
    let sock = TempSock::new(backend);
    let (path, unix) = (sock.0.clone(), sock.listen_arg());
    let Some(mut d) = Daemon::spawn(backend, &["--listen", "127.0.0.1:0", "--listen", &unix])
    else {
        return;
    };
    if !d.addrs().contains(&Addr::Unix(path.clone())) {
        d.fail(&format!("no `listening on {unix}` line"));
    }
    let u = d.connect_unix();
    let t = d.connect();
    let (ru, rt) = thread::scope(|sc| {
        let a = sc.spawn(|| echo_exact(&u, fresh_seed(), 1 << 20, true));
        let b = sc.spawn(|| echo_exact(&t, fresh_seed(), 1 << 20, true));
        (a.join().unwrap(), b.join().unwrap())
    });
    if let Err(e) = ru.and(rt) {
        d.fail(&e);
    }
    d.signal(Signal::SIGTERM);
    let st = d.wait_exit(Duration::from_secs(10));
    if !st.success() || path.exists() {
        d.fail(&format!(
            "want exit 0 and {} removed; got {st}, exists={}",
            path.display(),
            path.exists()
        ));
    }
}

/// `[::1]:0` and `localhost:0` are valid listen addresses (IPv6 part skipped without IPv6).
#[test]
fn listen_on_ipv6_and_host_names() {
    use std::net::ToSocketAddrs;
    let v6 = client::ipv6_loopback_works();
    // `localhost` may resolve to ::1 first; without IPv6 that cannot be bound.
    let first = ("localhost", 0)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next());
    let mut args = vec!["--listen", "127.0.0.1:0"];
    if first.is_some_and(|a| a.is_ipv4() || v6) {
        args.extend(["--listen", "localhost:0"]);
    } else {
        println!("note: localhost does not resolve to a usable address here; not testing it");
    }
    if v6 {
        args.extend(["--listen", "[::1]:0"]);
    } else {
        println!("note: no IPv6 loopback here; not testing [::1]");
    }
    let Some(d) = Daemon::spawn("epoll", &args) else {
        return;
    };
    for a in d.addrs() {
        let Addr::Tcp(sa) = a else {
            d.fail("unexpected unix listener")
        };
        let s = d.connect_at(*sa);
        if let Err(e) = echo_exact(&s, fresh_seed(), 10_000, true) {
            d.fail(&format!("{sa}: {e}"));
        }
    }
    if v6
        && !d
            .addrs()
            .iter()
            .any(|a| matches!(a, Addr::Tcp(s) if s.is_ipv6()))
    {
        d.fail("no IPv6 address in the listening lines");
    }
}
