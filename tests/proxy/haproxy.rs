//! Behind a real HAProxy (the Debian package, 2.6; `.ci/run` installs it): `mode tcp`,
//! round robin over two echo-mux instances, once with `send-proxy` (v1) and once with
//! `send-proxy-v2`, health checks on (`check`, with `check-send-proxy` so the checks carry a
//! header too). [`CONFIG`] is the configuration README's "More than one machine" shows.
//!
//! - `hammer.sh` passes through it, and both instances get traffic;
//! - clients bound to distinct loopback addresses are seen under their own addresses:
//!   `--deny 127.0.0.7` refuses exactly that one, `--max-per-source 2` counts each client
//!   separately (and per echo-mux host: 2 on each), `--log-connections` names each;
//! - a client that connects to echo-mux directly with a forged header is echoed its bytes;
//! - SIGTERM to one instance under load: the checks take it out, clients go on through the
//!   other, and no echoed byte is wrong.

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::{connect_from, stat, v1, v2};
use crate::util::client::{outcome, Outcome, Pattern, IO_TIMEOUT};
use crate::util::{Daemon, TempDir};

/// How HAProxy tells the servers who the client is.
#[derive(Clone, Copy, Debug)]
enum Send {
    V1,
    V2,
}

impl Send {
    fn keyword(self) -> &'static str {
        match self {
            Send::V1 => "send-proxy",
            Send::V2 => "send-proxy-v2",
        }
    }
}

/// The configuration, with `{send}` (`send-proxy` or `send-proxy-v2`), `{a}` and `{b}` (the
/// two echo-mux instances) to fill in. The frontend's socket is the test's own listener,
/// handed over as descriptor 3, so no port is ever guessed.
const CONFIG: &str = "\
global
    log stderr format raw local0 info
    maxconn 4096

defaults
    mode tcp
    log global
    option tcplog
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    # A server that refuses the connection (stopped) is retried once more, then the
    # connection goes to the other server.
    retries 2
    option redispatch

frontend echo
    bind fd@3
    default_backend echo_mux

backend echo_mux
    balance roundrobin
    # Checks every 100 ms; down after 2 failures, up after 1 success. With send-proxy the
    # checks send a header too (check-send-proxy makes that explicit): without it, every
    # check would be refused by echo-mux as a connection without a header.
    default-server {send} check check-send-proxy inter 100ms fall 2 rise 1
    server a {a}
    server b {b}
";

/// A running HAProxy in front of two daemons; killed on drop.
struct Haproxy {
    child: Child,
    dir: TempDir,
    addr: SocketAddr,
    send: Send,
}

impl Haproxy {
    fn start(send: Send, a: &Daemon, b: &Daemon) -> Haproxy {
        let dir = TempDir::new("haproxy");
        let config = CONFIG
            .replace("{send}", send.keyword())
            .replace("{a}", &a.addr().to_string())
            .replace("{b}", &b.addr().to_string());
        let cfg = dir.join("haproxy.cfg");
        fs::write(&cfg, config).unwrap();
        let frontend = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = frontend.local_addr().unwrap();
        let log = fs::File::create(dir.join("haproxy.log")).unwrap();
        let mut cmd = Command::new("haproxy");
        cmd.arg("-db")
            .arg("-f")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let fd = frontend.as_raw_fd();
        let place = move || -> std::io::Result<()> {
            // SAFETY: dup2(2), fcntl(2) and prctl(2) on plain integers; all three are
            // async-signal-safe, as the child of a fork must be until it executes.
            unsafe {
                if fd == 3 {
                    let flags = libc::fcntl(3, libc::F_GETFD);
                    libc::fcntl(3, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
                } else if libc::dup2(fd, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // Never outlive the test's thread, whatever ends it.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            }
            Ok(())
        };
        // SAFETY: the closure only makes async-signal-safe system calls (see above).
        unsafe { cmd.pre_exec(place) };
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!("cannot run haproxy: {e}: install the `haproxy` package (.ci/run does)")
        });
        drop(frontend); // HAProxy holds its copy
        let h = Haproxy {
            child,
            dir,
            addr,
            send,
        };
        // Ready when both servers answered a check: each daemon has accepted one.
        for d in [a, b] {
            h.wait_for(d, "accepted", |n| n >= 1, "a health check");
        }
        h
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.join("haproxy.log")).unwrap_or_default()
    }

    /// Fail with HAProxy's log and the daemon's description.
    fn fail(&self, d: &Daemon, msg: &str) -> ! {
        d.fail(&format!(
            "{:?}: {msg}\n--- haproxy.log:\n{}--- end of haproxy.log",
            self.send,
            self.log()
        ))
    }

    /// Wait up to 20 s for the stats field `key` of `d` to satisfy `ok`.
    fn wait_for(&self, d: &Daemon, key: &str, ok: impl Fn(u64) -> bool, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let n = stat(d, key);
            if ok(n) {
                return;
            }
            if Instant::now() > deadline {
                self.fail(d, &format!("waiting for {what}: {key}={n}"));
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Wait up to 20 s for a line of HAProxy's log containing `needle`.
    fn expect_log(&self, d: &Daemon, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.log().contains(needle) {
            if Instant::now() > deadline {
                self.fail(d, &format!("no line containing {needle:?} in haproxy.log"));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two daemons on `backend`, trusting the balancer (HAProxy connects from 127.0.0.1).
fn pair(backend: &'static str, extra: &[&str]) -> Option<(Daemon, Daemon)> {
    let mut args = vec!["--proxy-from", "127.0.0.1"];
    args.extend(extra);
    Some((
        Daemon::spawn(backend, &args)?,
        Daemon::spawn(backend, &args)?,
    ))
}

for_each_backend!(haproxy_hammer_spreads_over_both);
/// `hammer.sh` through HAProxy, v1 and v2: every checksum matches, and both instances
/// echoed payload. A forged header sent straight to an instance is echoed as data.
fn haproxy_hammer_spreads_over_both(backend: &'static str) {
    for send in [Send::V1, Send::V2] {
        let Some((a, b)) = pair(backend, &[]) else {
            return;
        };
        let h = Haproxy::start(send, &a, &b);
        let hammer = format!("{}/scripts/hammer.sh", env!("CARGO_MANIFEST_DIR"));
        let port = h.addr.port().to_string();
        let args = [
            "--kill-after=5",
            "120",
            &hammer,
            "--port",
            &port,
            "--clients",
            "8",
            "--bytes",
            "100000",
            "--rounds",
            "2",
        ];
        let out = Command::new("timeout").args(args).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        if !out.status.success() || !text.contains("16 passed, 0 failed") {
            h.fail(
                &a,
                &format!("hammer.sh through haproxy: {}\n{text}", out.status),
            );
        }
        for d in [&a, &b] {
            h.wait_for(d, "bytes_in", |n| n >= 100_000, "hammer payload on both");
        }
        // Straight to an instance from a peer it does not trust, a header is just bytes.
        for header in [
            v1("192.0.2.8:1".parse().unwrap()),
            v2("192.0.2.8:1".parse().unwrap()),
        ] {
            let mut s = connect_from(Ipv4Addr::new(127, 0, 0, 9), a.addr()).unwrap();
            s.write_all(&header).unwrap();
            let mut back = vec![0u8; header.len()];
            if s.read_exact(&mut back).is_err() || back != header {
                h.fail(&a, "a forged header sent directly was not echoed as data");
            }
        }
    }
}

/// Connect through HAProxy from `source`: served (echoes) or refused (closed, nothing)?
fn through(h: &Haproxy, d: &Daemon, source: Ipv4Addr) -> Option<TcpStream> {
    let mut s = connect_from(source, h.addr).unwrap();
    match outcome(&s, Duration::from_millis(300)) {
        Outcome::Closed => return None,
        Outcome::Data(b) => h.fail(d, &format!("sent {b:?} unasked")),
        Outcome::Silent => {}
    }
    let mut back = [0u8; 5];
    let ok = s.write_all(b"hello").is_ok() && s.read_exact(&mut back).is_ok();
    match ok {
        true if &back == b"hello" => Some(s),
        true => h.fail(d, &format!("echo came back as {back:?}")),
        false => None,
    }
}

for_each_backend!(haproxy_clients_keep_their_addresses);
/// Clients on 127.0.0.2..7 through HAProxy: `--deny 127.0.0.7` refuses exactly that one;
/// `--max-per-source 2` lets each client hold 2 connections on each instance (4 through
/// the balancer), counted separately; `--log-connections` names each client.
fn haproxy_clients_keep_their_addresses(backend: &'static str) {
    for send in [Send::V1, Send::V2] {
        let extra = [
            "--deny",
            "127.0.0.7",
            "--max-per-source",
            "2",
            "--log-connections",
        ];
        let Some((a, b)) = pair(backend, &extra) else {
            return;
        };
        let (ma, mb) = (a.mark(), b.mark());
        let h = Haproxy::start(send, &a, &b);
        let mut held = Vec::new();
        for x in 2..=6u8 {
            let source = Ipv4Addr::new(127, 0, 0, x);
            let mut mine = Vec::new();
            while let Some(s) = through(&h, &a, source) {
                mine.push(s);
                if mine.len() > 4 {
                    h.fail(&a, &format!("{source} holds {} connections", mine.len()));
                }
            }
            if mine.len() != 4 {
                h.fail(
                    &a,
                    &format!(
                        "{source} got {} connections, want 2 per instance",
                        mine.len()
                    ),
                );
            }
            held.push((source, mine));
        }
        if through(&h, &a, Ipv4Addr::new(127, 0, 0, 7)).is_some() {
            h.fail(&a, "127.0.0.7 was served despite --deny");
        }
        let denied = stat(&a, "denied") + stat(&b, "denied");
        let limited = stat(&a, "limited") + stat(&b, "limited");
        // One refusal per client (its fifth connection); a health check from 127.0.0.1 may
        // add one on a machine so loaded that three checks are open at once.
        if denied != 1 || limited < 5 {
            let got = format!("got denied={denied} limited={limited}");
            h.fail(&a, &format!("want denied=1 limited>=5 over both, {got}"));
        }
        // Each client by name in the closed lines, with the port it connected from.
        for (source, conns) in held {
            for s in conns {
                let port = s.local_addr().unwrap().port();
                drop(s);
                let line = format!("closed {source}:{port} after");
                let deadline = Instant::now() + IO_TIMEOUT;
                while a.stderr_since(ma).find(&line).is_none()
                    && b.stderr_since(mb).find(&line).is_none()
                {
                    if Instant::now() > deadline {
                        h.fail(&a, &format!("no {line:?} line in either instance's log"));
                    }
                    thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }
}

for_each_backend!(haproxy_takes_a_stopped_instance_out);
/// Four clients loop through HAProxy, each sending patterned bytes and checking every byte
/// that comes back; SIGTERM to instance a: it drains and exits 0, HAProxy's checks mark it
/// DOWN, the clients go on through b, and no byte is ever wrong.
fn haproxy_takes_a_stopped_instance_out(backend: &'static str) {
    for send in [Send::V1, Send::V2] {
        let Some((mut a, b)) = pair(backend, &[]) else {
            return;
        };
        let h = Haproxy::start(send, &a, &b);
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let clients: Vec<_> = (0..4u64)
            .map(|i| {
                let (stop, done, addr) = (stop.clone(), done.clone(), h.addr);
                thread::spawn(move || client_loop(i, addr, &stop, &done))
            })
            .collect();
        wait_done(&h, &a, &done, &stop, 40, "before the stop");
        h.wait_for(&a, "bytes_in", |n| n > 0, "load on a");
        a.signal(Signal::SIGTERM);
        let status = a.wait_exit(Duration::from_secs(15));
        if !status.success() {
            h.fail(&a, &format!("a exited with {status} after SIGTERM"));
        }
        h.expect_log(&b, "echo_mux/a is DOWN");
        let after = done.load(Ordering::Relaxed);
        wait_done(&h, &b, &done, &stop, after + 40, "after a stopped");
        stop.store(true, Ordering::Relaxed);
        for c in clients {
            if let Err(e) = c.join().unwrap() {
                h.fail(&b, &e);
            }
        }
    }
}

/// Wait up to 30 s for `n` complete exchanges in all.
fn wait_done(h: &Haproxy, d: &Daemon, done: &AtomicU64, stop: &AtomicBool, n: u64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while done.load(Ordering::Relaxed) < n {
        if Instant::now() > deadline {
            stop.store(true, Ordering::Relaxed);
            let got = done.load(Ordering::Relaxed);
            h.fail(d, &format!("{what}: only {got} exchanges"));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// One client: connect, send a patterned payload, half-close, read to EOF; every byte that
/// comes back must be the one sent at that offset. A connection cut short (the balancer
/// could not place it) is retried; a wrong byte is an error.
fn client_loop(
    i: u64,
    addr: SocketAddr,
    stop: &AtomicBool,
    done: &AtomicU64,
) -> Result<(), String> {
    let mut round = 0u64;
    while !stop.load(Ordering::Relaxed) {
        round += 1;
        let seed = i << 32 | round;
        let mut payload = vec![0u8; 2000 + (round as usize % 7) * 1000];
        Pattern::new(seed).fill(&mut payload);
        let Ok(mut s) = crate::util::client::connect(addr) else {
            thread::sleep(Duration::from_millis(20));
            continue;
        };
        if s.write_all(&payload).is_err() || s.shutdown(Shutdown::Write).is_err() {
            continue;
        }
        let mut back = Vec::new();
        let _ = s.read_to_end(&mut back);
        if let Some(at) = back.iter().zip(&payload).position(|(x, y)| x != y) {
            return Err(format!(
                "client {i} round {round}: byte {at} came back wrong"
            ));
        }
        if back.len() > payload.len() {
            return Err(format!(
                "client {i} round {round}: {} bytes back for {}",
                back.len(),
                payload.len()
            ));
        }
        if back.len() == payload.len() {
            done.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(())
}

// The config README shows must be this one: a check that the two do not drift apart.
#[test]
fn readme_shows_the_tested_configuration() {
    let readme = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = CONFIG.split("\nbackend echo_mux\n").nth(1).unwrap();
    let backend = section
        .lines()
        .map(|l| l.trim().replace("{send}", "send-proxy-v2"))
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with("server "))
        .collect::<Vec<_>>();
    assert_eq!(backend.len(), 2, "{backend:?}");
    for line in backend {
        assert!(
            readme.contains(&line),
            "README.md lacks the line {line:?} of the tested HAProxy configuration"
        );
    }
}
