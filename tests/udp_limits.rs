//! UDP under pressure and at the edges of its life (SPEC §9): a flood held by `--delay` stays
//! within `--max-buffer` while the daemon's other sockets are served, SIGTERM sends held
//! replies before the exit, and systemd socket activation of a UDP socket.

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::udp::{client, recv, REPLY_WAIT};
use crate::util::client::ping;
use crate::util::{Activated, Daemon};

for_each_backend!(udp_flood_stays_within_max_buffer);
/// A sender floods one UDP socket far faster than `--delay 500ms` lets replies leave.
/// The socket stops being read at `--max-buffer` (1 MiB), so the server's RSS grows by
/// about that much, not by the ~tens of MiB the flood sends; meanwhile a second UDP socket
/// and a TCP client of the same daemon are answered, and once the flood stops the flooded
/// socket answers again. (Senders sharing the flooded socket share its fate: while it is at
/// the cap the kernel drops what arrives for it, as UDP may.)
fn udp_flood_stays_within_max_buffer(backend: &'static str) {
    const CAP: u64 = 1 << 20;
    let args = [
        "-l",
        "udp:127.0.0.1:0",
        "-l",
        "udp:127.0.0.1:0",
        "-l",
        "127.0.0.1:0",
        "--delay",
        "500ms",
        "--max-buffer",
        "1MiB",
    ];
    let Some(d) = Daemon::spawn(backend, &args) else {
        return;
    };
    let (flooded, other) = (d.udp_addrs()[0], d.udp_addrs()[1]);
    // Warm up both sockets (the receive area's first pages) before the baseline.
    for a in [flooded, other] {
        let c = client("127.0.0.1:0", REPLY_WAIT);
        c.send_to(&[b'w'; 1000], a).unwrap();
        recv(&c).unwrap_or_else(|| d.fail("no reply before the flood"));
    }
    let base = d.rss_kib();
    let stop = AtomicBool::new(false);
    let (sent, peak) = thread::scope(|sc| {
        let flood = sc.spawn(|| {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap(); // never reads
            s.connect(flooded).unwrap();
            let (msg, mut n) = ([b'f'; 1000], 0u64);
            while !stop.load(Ordering::Relaxed) {
                n += u64::from(s.send(&msg).is_ok());
            }
            n
        });
        let mut peak = base;
        let t0 = Instant::now();
        let c = client("127.0.0.1:0", REPLY_WAIT);
        let mut tcp = d.connect();
        while t0.elapsed() < Duration::from_millis(1500) {
            c.send_to(b"other", other).unwrap();
            if recv(&c).map(|r| r.0).as_deref() != Some(&b"other"[..]) {
                d.fail("the other UDP socket was not answered during the flood");
            }
            if ping(&mut tcp, b"tcp").ok().as_deref() != Some(&b"tcp"[..]) {
                d.fail("the TCP client was not answered during the flood");
            }
            peak = peak.max(d.rss_kib());
        }
        stop.store(true, Ordering::Relaxed);
        (flood.join().unwrap(), peak)
    });
    let grew = (peak - base) * 1024;
    println!("{backend}: {sent} datagrams flooded; RSS {base} → {peak} KiB (+{grew} B)");
    if sent * 1000 < 8 * CAP {
        d.fail(&format!(
            "the flood sent only {sent} datagrams: not a flood"
        ));
    }
    if grew > 3 * CAP {
        d.fail(&format!(
            "RSS grew by {grew} bytes under a flood; --max-buffer is {CAP}"
        ));
    }
    // The flooded socket recovers once the flood is over. What the flood left in the kernel's
    // queue drains at the daemon's pace (a loaded machine's), and while that queue is full
    // the kernel drops a new datagram: ask again until answered, bounded.
    let c = client("127.0.0.1:0", REPLY_WAIT);
    let mut answered = false;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !answered && Instant::now() < deadline {
        c.send_to(b"after", flooded).unwrap();
        while let Some((back, _)) = recv(&c) {
            if back == b"after" {
                answered = true;
                break;
            }
        }
    }
    if !answered {
        d.fail("the flooded socket did not answer after the flood");
    }
}

for_each_backend!(udp_sigterm_sends_held_replies);
/// SIGTERM with ten datagrams held by `--delay 30s`: they are answered at once, then the
/// daemon exits 0, long before the delay would have passed.
fn udp_sigterm_sends_held_replies(backend: &'static str) {
    let args = [
        "-l",
        "udp:127.0.0.1:0",
        "--delay",
        "30s",
        "--shutdown-timeout",
        "20s",
    ];
    let Some(mut d) = Daemon::spawn(backend, &args) else {
        return;
    };
    let clients: Vec<UdpSocket> = (0..10)
        .map(|i| {
            let c = client("127.0.0.1:0", Duration::from_secs(10));
            c.send_to(format!("held {i}").as_bytes(), d.udp_addr())
                .unwrap();
            c
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    while d.stats()["datagrams_in"] != "10" {
        if Instant::now() > deadline {
            d.fail("the daemon did not receive the ten datagrams");
        }
        thread::sleep(Duration::from_millis(20));
    }
    let t0 = Instant::now();
    d.signal(Signal::SIGTERM);
    for (i, c) in clients.iter().enumerate() {
        match recv(c) {
            Some((back, _)) if back == format!("held {i}").as_bytes() => {}
            other => d.fail(&format!("held datagram {i}: {other:?} after SIGTERM")),
        }
    }
    let status = d.wait_exit(Duration::from_secs(10));
    if !status.success() || t0.elapsed() > Duration::from_secs(10) {
        d.fail(&format!("exit {status} after {:?}", t0.elapsed()));
    }
}

impl Activated {
    fn wait_for(&self, needle: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.stderr().contains(needle) {
                return true;
            }
            thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

/// The exit status if the child exits within 20 s (polled through /proc-free waitpid).
fn wait_child(p: &Activated) -> Option<std::process::ExitStatus> {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    use std::os::unix::process::ExitStatusExt;
    let pid = Pid::from_raw(p.child.id() as i32);
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => return Some(ExitStatusExt::from_raw(code << 8)),
            Ok(WaitStatus::Signaled(_, sig, _)) => {
                return Some(ExitStatusExt::from_raw(sig as i32))
            }
            _ => thread::sleep(Duration::from_millis(20)),
        }
    }
    None
}

for_each_backend!(udp_socket_activation);
/// `systemd-socket-activate --datagram` hands echo-mux a bound UDP socket as fd 3 (what
/// `ListenDatagram=` does): it is served, named in the log, and `--listen` is ignored.
fn udp_socket_activation(backend: &'static str) {
    if Command::new("systemd-socket-activate")
        .arg("--version")
        .output()
        .is_err()
    {
        panic!("systemd-socket-activate is missing (the systemd package provides it)");
    }
    for _attempt in 0..5 {
        let args = ["--backend", backend, "--listen", "127.0.0.1:0"];
        let p = Activated::udp("udp-activate", backend, &args);
        let port = p.port;
        if !p.wait_for("as 3.", crate::util::START_TIMEOUT) {
            if p.stderr().contains("already in use") {
                continue;
            }
            panic!("systemd-socket-activate did not start:\n{}", p.stderr());
        }
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let c = client("127.0.0.1:0", Duration::from_secs(10));
        c.send_to(b"activated", addr).unwrap();
        let fail = |why: &str| -> ! { panic!("{backend}: {why}\n--- stderr:\n{}", p.stderr()) };
        match recv(&c) {
            Some((back, from)) if back == b"activated" && from == addr => {}
            other => fail(&format!("reply {other:?}")),
        }
        let want = format!("listening on udp:127.0.0.1:{port} (backend {backend})");
        if !p.wait_for(&want, REPLY_WAIT) || !p.wait_for("1 inherited", REPLY_WAIT) {
            fail(&format!("no line {want:?} after one inherited socket"));
        }
        kill(Pid::from_raw(p.child.id() as i32), Signal::SIGTERM).unwrap();
        match wait_child(&p) {
            Some(st) if st.success() => return,
            Some(st) => fail(&format!("exit {st} after SIGTERM")),
            None => fail("still running 20 s after SIGTERM"),
        }
    }
    panic!("no free UDP port in 5 attempts");
}
