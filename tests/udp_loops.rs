//! UDP echo loops (SPEC §9, issue 15), on every backend: a source port one of our listeners
//! uses is never answered, whatever the address; two real daemons started answering each other
//! by one forged datagram (a raw IPv4 socket, root only) stop by themselves, in raw and in
//! stamp mode, and keep answering each other forever with `--udp-loop-detect off`; a client
//! sending varied payloads at full speed is never taken for a loop.

use std::collections::HashMap;
use std::net::{SocketAddr, SocketAddrV4};
use std::thread;
use std::time::{Duration, Instant};

use crate::udp::{client, recv, REPLY_WAIT};
use crate::util::Daemon;

/// The warn line of a daemon that stopped answering a loop.
const LOOP_LINE: &str = "echoes our replies back: not answering it for 60s";

for_each_backend!(udp_our_port_on_another_address_is_not_answered);
/// A datagram from 127.0.0.N:P to a daemon on 127.0.0.1:P (another host's echo service on
/// the same port, FreeBSD inetd's check_loop) gets no answer and counts as dropped.
fn udp_our_port_on_another_address_is_not_answered(backend: &'static str) {
    let Some(d) = Daemon::spawn(backend, &["-l", "udp:127.0.0.1:0"]) else {
        return;
    };
    let port = d.udp_addr().port();
    let twin = client(&format!("127.0.0.2:{port}"), Duration::from_millis(500));
    twin.send_to(b"same port", d.udp_addr()).unwrap();
    let ok = client("127.0.0.2:0", REPLY_WAIT);
    ok.send_to(b"hello", d.udp_addr()).unwrap();
    if recv(&ok).map(|r| r.0).as_deref() != Some(&b"hello"[..]) {
        d.fail("an ordinary sender on 127.0.0.2 was not answered");
    }
    if let Some((back, _)) = recv(&twin) {
        d.fail(&format!("127.0.0.2:{port} was answered: {back:?}"));
    }
    let stats = d.stats();
    if stats["datagrams_in"] != "2" || stats["datagrams_out"] != "1" || stats["dropped"] != "1" {
        d.fail(&format!("want 2 in, 1 out, 1 dropped: {stats:?}"));
    }
}

/// A UDP datagram from `from` to `to` with a forged source: a raw IPv4 socket (IPPROTO_RAW,
/// which implies IP_HDRINCL) and the IPv4 and UDP headers built here. `None` without the
/// privilege (CAP_NET_RAW).
fn forge(from: SocketAddrV4, to: SocketAddrV4, payload: &[u8]) -> Option<()> {
    // SAFETY: plain socket(2); the descriptor is owned (and closed) by `fd` below.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
    if raw < 0 {
        let e = std::io::Error::last_os_error();
        let denied = matches!(e.raw_os_error(), Some(libc::EPERM | libc::EACCES));
        assert!(denied, "raw socket: {e}");
        return None;
    }
    // SAFETY: `raw` is a descriptor we just opened and own.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) };
    let udp_len = 8 + payload.len();
    let total = 20 + udp_len;
    let mut pkt = Vec::with_capacity(total);
    pkt.extend_from_slice(&[0x45, 0]); // IPv4, 20-byte header; TOS 0
    pkt.extend_from_slice(&(total as u16).to_be_bytes());
    pkt.extend_from_slice(&[0, 0, 0x40, 0]); // id (the kernel fills it), don't fragment
    pkt.extend_from_slice(&[64, libc::IPPROTO_UDP as u8, 0, 0]); // TTL, UDP, checksum
    pkt.extend_from_slice(&from.ip().octets());
    pkt.extend_from_slice(&to.ip().octets());
    let sum = checksum(&pkt);
    pkt[10..12].copy_from_slice(&sum.to_be_bytes());
    pkt.extend_from_slice(&from.port().to_be_bytes());
    pkt.extend_from_slice(&to.port().to_be_bytes());
    pkt.extend_from_slice(&(udp_len as u16).to_be_bytes());
    pkt.extend_from_slice(&[0, 0]); // no UDP checksum (allowed over IPv4)
    pkt.extend_from_slice(payload);
    let dst = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(*to.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: `pkt` and `dst` are live for the call, with the lengths given.
    let n = unsafe {
        libc::sendto(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            pkt.as_ptr().cast(),
            pkt.len(),
            0,
            (&dst as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    assert_eq!(
        n,
        pkt.len() as isize,
        "sendto raw: {}",
        std::io::Error::last_os_error()
    );
    Some(())
}

/// The Internet checksum of an IPv4 header.
fn checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn v4(a: SocketAddr) -> SocketAddrV4 {
    match a {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(_) => panic!("{a} is not IPv4"),
    }
}

fn count(stats: &HashMap<String, String>, key: &str) -> u64 {
    stats[key].parse().unwrap()
}

/// Two daemons in `mode` with `extra` options, and one datagram forged from the second to the
/// first. Returns them, or `None` (with a note) when raw sockets need a privilege we lack.
fn forged_pair(backend: &'static str, mode: &str, extra: &[&str]) -> Option<(Daemon, Daemon)> {
    let mut args = vec!["-l", "udp:127.0.0.1:0", "--mode", mode];
    args.extend_from_slice(extra);
    let a = Daemon::spawn(backend, &args)?;
    let b = Daemon::spawn(backend, &args)?;
    let (pa, pb) = (v4(a.udp_addr()), v4(b.udp_addr()));
    if forge(pb, pa, b"one forged datagram\n").is_none() {
        println!("note: forging a datagram needs a raw socket (root); not testing echo loops");
        return None;
    }
    Some((a, b))
}

/// Wait until neither daemon's `datagrams_out` grows between two looks 300 ms apart; returns
/// both counters then. Fails after 30 s of growth.
fn settled(a: &Daemon, b: &Daemon) -> (u64, u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let look = || {
        (
            count(&a.stats(), "datagrams_out"),
            count(&b.stats(), "datagrams_out"),
        )
    };
    let mut last = look();
    loop {
        thread::sleep(Duration::from_millis(300));
        let now = look();
        if now == last {
            return now;
        }
        if Instant::now() > deadline {
            a.fail(&format!(
                "the exchange still runs after 30 s: {last:?} then {now:?} datagrams out"
            ));
        }
        last = now;
    }
}

/// The exchange the forged datagram starts must stop by itself: one daemon logs the warn
/// line, both counters stop growing, and stay far below what a loop sends in a second.
fn loop_stops(backend: &'static str, mode: &str) {
    let Some((a, b)) = forged_pair(backend, mode, &[]) else {
        return;
    };
    let forged = Instant::now();
    let deadline = forged + Duration::from_secs(20);
    let logged = loop {
        if let Some(l) = a.wait_line(0, LOOP_LINE, Duration::from_millis(100)) {
            break (l, &a, &b);
        }
        if let Some(l) = b.wait_line(0, LOOP_LINE, Duration::from_millis(100)) {
            break (l, &b, &a);
        }
        if Instant::now() > deadline {
            a.fail(&format!(
                "no daemon logged {LOOP_LINE:?} within 20 s; the other's stderr:{}",
                b.describe()
            ));
        }
    };
    let (line, muter, other) = logged;
    let seen = forged.elapsed();
    let other_addr = other.udp_addr().to_string();
    if !line.contains(&format!("udp: {other_addr} echoes")) {
        muter.fail(&format!("the warn line names the wrong source: {line:?}"));
    }
    let (out_a, out_b) = settled(&a, &b);
    // The run is 64 matches; batches and the other side's replies in flight add a little.
    if out_a > 1_000 || out_b > 1_000 {
        a.fail(&format!(
            "the loop stopped only after {out_a} and {out_b} replies{}",
            b.describe()
        ));
    }
    println!("{mode}: warn line seen within {seen:?}; {out_a} and {out_b} replies in all");
    if count(&muter.stats(), "dropped") == 0 {
        muter.fail("the datagram that ended the loop is not counted as dropped");
    }
    // Once only, and a later look still sees the same counters.
    thread::sleep(Duration::from_millis(300));
    let again = (
        count(&a.stats(), "datagrams_out"),
        count(&b.stats(), "datagrams_out"),
    );
    if again != (out_a, out_b) {
        a.fail(&format!(
            "the exchange resumed: {:?} then {again:?}",
            (out_a, out_b)
        ));
    }
    if muter.stderr().matches(LOOP_LINE).count() != 1 {
        muter.fail("the warn line is not logged exactly once");
    }
}

for_each_backend!(udp_raw_echo_loop_stops_by_itself);
/// Raw mode: the same datagram bounces between the two daemons until one stops answering.
fn udp_raw_echo_loop_stops_by_itself(backend: &'static str) {
    loop_stops(backend, "raw");
}

for_each_backend!(udp_stamp_echo_loop_stops_by_itself);
/// Stamp mode: each answer wraps the last one (`Echo=>Echo=>… at …`) until one daemon sees
/// its own reply (less its `\n`) inside what comes back, many times in a row.
fn udp_stamp_echo_loop_stops_by_itself(backend: &'static str) {
    loop_stops(backend, "stamp");
}

for_each_backend!(udp_loop_detect_off_lets_the_loop_run);
/// With `--udp-loop-detect off` the same forged datagram keeps both daemons busy: proof that
/// the forgery starts a real loop, and that the option turns the detection off. Stopped as
/// soon as both counters pass ten runs' worth.
fn udp_loop_detect_off_lets_the_loop_run(backend: &'static str) {
    let Some((a, b)) = forged_pair(backend, "raw", &["--udp-loop-detect", "off"]) else {
        return;
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (out_a, out_b) = (
            count(&a.stats(), "datagrams_out"),
            count(&b.stats(), "datagrams_out"),
        );
        if out_a > 2_000 && out_b > 2_000 {
            break;
        }
        if Instant::now() > deadline {
            a.fail(&format!(
                "no loop without detection: {out_a} and {out_b} replies after 30 s{}",
                b.describe()
            ));
        }
        thread::sleep(Duration::from_millis(100));
    }
    if a.stderr().contains(LOOP_LINE) || b.stderr().contains(LOOP_LINE) {
        a.fail("loop detection acted although it is off");
    }
    drop((a, b)); // killed at once: the loop would run forever
}

for_each_backend!(udp_varied_payloads_at_full_speed_are_never_a_loop);
/// 8 sockets, 16 datagrams outstanding each, every payload different, as fast as the daemon
/// answers, 40,000 datagrams: all answered, none dropped, no warn line. (Identical payloads
/// at this rate would be, as the README says.)
fn udp_varied_payloads_at_full_speed_are_never_a_loop(backend: &'static str) {
    const SOCKETS: u32 = 8;
    const EACH: u32 = 5_000;
    const WINDOW: u32 = 16;
    let Some(d) = Daemon::spawn(backend, &["-l", "udp:127.0.0.1:0"]) else {
        return;
    };
    let addr = d.udp_addr();
    let lost: u32 = thread::scope(|sc| {
        let hs: Vec<_> = (0..SOCKETS)
            .map(|k| {
                sc.spawn(move || {
                    let c = client("127.0.0.1:0", Duration::from_millis(500));
                    c.connect(addr).unwrap();
                    let payload = |i: u32| [k.to_be_bytes(), i.to_be_bytes()].concat().repeat(8);
                    let (mut sent, mut lost) = (0, 0);
                    while sent < WINDOW {
                        c.send(&payload(sent)).unwrap();
                        sent += 1;
                    }
                    let mut buf = [0u8; 128];
                    for answered in 0..EACH {
                        if c.recv(&mut buf).is_err() {
                            // Lost on a loaded machine (the kernel may drop UDP): what is still
                            // outstanding cannot be told apart any more; stop this socket.
                            lost += EACH - answered;
                            break;
                        }
                        if sent < EACH {
                            c.send(&payload(sent)).unwrap();
                            sent += 1;
                        }
                    }
                    lost
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).sum()
    });
    if d.stderr().contains(LOOP_LINE) {
        d.fail("a client with varied payloads was taken for a loop");
    }
    let stats = d.stats();
    if stats["dropped"] != "0" {
        d.fail(&format!(
            "datagrams dropped ({lost} not answered): {stats:?}"
        ));
    }
    println!(
        "{} datagrams in, {} out, {lost} lost on the way",
        stats["datagrams_in"], stats["datagrams_out"]
    );
}

for_each_backend!(udp_echo_loop_with_workers_stops_by_itself);
/// `--workers 2` against a single daemon: each worker has its own detector, and SO_REUSEPORT
/// hashes the looping peer (one address and port) onto one worker, which ends the loop.
fn udp_echo_loop_with_workers_stops_by_itself(backend: &'static str) {
    use crate::workers::pool::Pool;
    let Some(p) = Pool::start(backend, 2, &["-l", "udp:127.0.0.1:0"]) else {
        return;
    };
    let Some(b) = Daemon::spawn(backend, &["-l", "udp:127.0.0.1:0"]) else {
        return;
    };
    if forge(v4(b.udp_addr()), v4(p.d.udp_addr()), b"loop me").is_none() {
        println!("note: forging a datagram needs a raw socket (root); not testing echo loops");
        return;
    }
    p.d.expect_line(0, LOOP_LINE, Duration::from_secs(20));
    let deadline = Instant::now() + Duration::from_secs(30);
    let look = || {
        (
            p.totals()["datagrams_out"],
            count(&b.stats(), "datagrams_out"),
        )
    };
    let mut last = look();
    loop {
        thread::sleep(Duration::from_millis(300));
        let now = look();
        if now == last {
            break;
        }
        if Instant::now() > deadline {
            p.d.fail(&format!("the exchange still runs: {last:?} then {now:?}"));
        }
        last = now;
    }
    if last.0 > 1_000 || last.1 > 1_000 {
        p.d.fail(&format!("the loop stopped only after {last:?} replies"));
    }
}
