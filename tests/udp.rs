//! UDP echo (SPEC §9) against the real daemon, on every backend: exact replies over IPv4 and
//! IPv6, stamp replies, loop protection, `--delay` as a timer, and wildcard listeners that
//! answer from the address asked. Bounds and the drain are in `udp_limits.rs`.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use crate::util::client::{fresh_seed, Pattern};
use crate::util::stamp::{now_secs, parse_replies};
use crate::util::Daemon;

/// How long a test waits for a reply that should come.
pub const REPLY_WAIT: Duration = Duration::from_secs(5);

/// A UDP client socket on `bind` (port 0 = any), replies awaited for at most `wait`.
pub fn client(bind: &str, wait: Duration) -> UdpSocket {
    let s = UdpSocket::bind(bind).unwrap_or_else(|e| panic!("bind {bind}: {e}"));
    s.set_read_timeout(Some(wait)).unwrap();
    s
}

/// The next datagram and where it came from, or `None` after the socket's timeout.
pub fn recv(s: &UdpSocket) -> Option<(Vec<u8>, SocketAddr)> {
    let mut buf = vec![0u8; 66_000];
    let (n, from) = s.recv_from(&mut buf).ok()?;
    buf.truncate(n);
    Some((buf, from))
}

fn ipv6_loopback_works() -> bool {
    UdpSocket::bind("[::1]:0").is_ok()
}

for_each_backend!(udp_echo_ipv4_and_ipv6);
/// Raw replies are the same bytes, empty and 65,507-byte datagrams included, over IPv4 and
/// IPv6 listeners side by side with a TCP one.
fn udp_echo_ipv4_and_ipv6(backend: &'static str) {
    let v6 = ipv6_loopback_works();
    let mut args = vec!["-l", "udp:127.0.0.1:0", "-l", "127.0.0.1:0"];
    if v6 {
        args.extend(["-l", "udp:[::1]:0"]);
    } else {
        println!("note: no IPv6 loopback here; not testing udp:[::1]");
    }
    let Some(d) = Daemon::spawn(backend, &args) else {
        return;
    };
    for addr in d.udp_addrs() {
        let bind = if addr.is_ipv4() {
            "127.0.0.1:0"
        } else {
            "[::1]:0"
        };
        let c = client(bind, REPLY_WAIT);
        let mut pattern = Pattern::new(fresh_seed());
        for len in [0, 1, 100, 1472, 8192, 65_507] {
            let mut msg = vec![0u8; len];
            pattern.fill(&mut msg);
            c.send_to(&msg, addr).unwrap();
            match recv(&c) {
                Some((back, from)) if back == msg && from == addr => {}
                Some((back, from)) => d.fail(&format!(
                    "{addr}: {len} bytes came back as {} bytes from {from}",
                    back.len()
                )),
                None => d.fail(&format!("{addr}: no reply to {len} bytes")),
            }
        }
    }
    let want = if v6 { "12" } else { "6" };
    let stats = d.stats_until(|s| s["datagrams_in"] == want && s["datagrams_out"] == want);
    if stats["datagrams_in"] != want || stats["datagrams_out"] != want || stats["dropped"] != "0" {
        d.fail(&format!(
            "want {want} datagrams in and out, none dropped: {stats:?}"
        ));
    }
}

for_each_backend!(udp_2000_random_datagrams_from_20_sockets);
/// 20 sockets send 100 random datagrams of 0..8,192 bytes each (one outstanding per socket):
/// every one is answered, byte for byte, and the counters agree.
fn udp_2000_random_datagrams_from_20_sockets(backend: &'static str) {
    const SOCKETS: usize = 20;
    const EACH: usize = 100;
    let Some(d) = Daemon::spawn(backend, &["-l", "udp:127.0.0.1:0"]) else {
        return;
    };
    let addr = d.udp_addr();
    let seed = fresh_seed();
    let errors: Vec<String> = thread::scope(|sc| {
        let hs: Vec<_> = (0..SOCKETS)
            .map(|k| {
                sc.spawn(move || {
                    let c = client("127.0.0.1:0", REPLY_WAIT);
                    c.connect(addr).unwrap();
                    let mut sizes = Pattern::new(seed ^ k as u64);
                    let mut bytes = Pattern::new(seed.rotate_left(k as u32));
                    for i in 0..EACH {
                        let mut msg = vec![0u8; sizes.range(0, 8193)];
                        bytes.fill(&mut msg);
                        c.send(&msg).unwrap();
                        match recv(&c) {
                            Some((back, _)) if back == msg => {}
                            Some((back, _)) => {
                                return Err(format!(
                                    "socket {k} datagram {i}: sent {} bytes, got {} different",
                                    msg.len(),
                                    back.len()
                                ))
                            }
                            None => return Err(format!("socket {k} datagram {i}: no reply")),
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        hs.into_iter()
            .filter_map(|h| h.join().unwrap().err())
            .collect()
    });
    if !errors.is_empty() {
        d.fail(&format!("seed {seed}: {errors:?}"));
    }
    let n = (SOCKETS * EACH).to_string();
    let stats = d.stats_until(|s| s["datagrams_in"] == n && s["datagrams_out"] == n);
    if stats["datagrams_in"] != n
        || stats["datagrams_out"] != n
        || stats["bytes_in"] != stats["bytes_out"]
    {
        d.fail(&format!(
            "counters disagree with {n} echoed datagrams: {stats:?}"
        ));
    }
}

for_each_backend!(udp_stamp_replies);
/// Stamp mode: `Echo=><payload> at <ctime>\n`, the payload less one `\n` (and a `\r` before
/// it); the time is now.
fn udp_stamp_replies(backend: &'static str) {
    let Some(d) = Daemon::with(backend)
        .args(&["-l", "udp:127.0.0.1:0", "--mode", "stamp"])
        .env("TZ", "UTC")
        .spawn()
    else {
        return;
    };
    let c = client("127.0.0.1:0", REPLY_WAIT);
    let cases: [(&[u8], &[u8]); 6] = [
        (b"hello\n", b"hello"),
        (b"crlf\r\n", b"crlf"),
        (b"no newline", b"no newline"),
        (b"", b""),
        (b"two\n\n", b"two\n"),
        (b"\xff\x00bytes\n", b"\xff\x00bytes"),
    ];
    for (input, body) in cases {
        c.send_to(input, d.udp_addr()).unwrap();
        let Some((back, _)) = recv(&c) else {
            d.fail(&format!("no reply to {input:?}"));
        };
        // parse_replies splits on '\n': rebuild the one reply around the body instead.
        let want_head = [b"Echo=>", body, b" at "].concat();
        if !back.starts_with(&want_head) || back.len() != want_head.len() + 25 {
            d.fail(&format!(
                "{input:?} answered {:?}",
                String::from_utf8_lossy(&back)
            ));
        }
        let frame = [b"Echo=>x at ", &back[want_head.len()..]].concat();
        match parse_replies(&frame) {
            Ok(r) if (r[0].stamp - now_secs()).abs() <= 5 => {}
            other => d.fail(&format!(
                "bad time in {:?}: {other:?}",
                String::from_utf8_lossy(&back)
            )),
        }
    }
}

for_each_backend!(udp_no_answer_to_service_ports);
/// Datagrams from source ports 7 (echo) and 19 (chargen) are not answered (the echo/chargen
/// storm); another sender is, and the stats count the two as dropped.
fn udp_no_answer_to_service_ports(backend: &'static str) {
    let Some(d) = Daemon::spawn(backend, &["-l", "udp:127.0.0.1:0"]) else {
        return;
    };
    // A loopback address of its own per backend, so the three tests can bind port 7 at once.
    let host = match backend {
        "epoll" => "127.0.0.71",
        "poll" => "127.0.0.72",
        _ => "127.0.0.73",
    };
    let mut silent = Vec::new();
    for port in [7, 19] {
        match UdpSocket::bind((host, port)) {
            Ok(s) => silent.push(s),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                println!("note: binding port {port} needs root; not testing loop protection");
                return;
            }
            Err(e) => d.fail(&format!("bind {host}:{port}: {e}")),
        }
    }
    for s in &silent {
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        s.send_to(b"storm?", d.udp_addr()).unwrap();
    }
    let ok = client(&format!("{host}:0"), REPLY_WAIT);
    ok.send_to(b"hello", d.udp_addr()).unwrap();
    if recv(&ok).map(|r| r.0).as_deref() != Some(&b"hello"[..]) {
        d.fail("an ordinary sender was not answered");
    }
    for s in &silent {
        if let Some((back, _)) = recv(s) {
            let port = s.local_addr().unwrap().port();
            d.fail(&format!("source port {port} was answered: {back:?}"));
        }
    }
    let stats = d.stats_until(|s| s["dropped"] == "2" && s["datagrams_in"] == "3");
    if stats["dropped"] != "2" || stats["datagrams_in"] != "3" {
        d.fail(&format!("want 3 in, 2 dropped: {stats:?}"));
    }
    if d.wait_line(0, "loop protection: not answering", Duration::from_secs(15))
        .is_none()
    {
        d.fail("no info line about loop protection");
    }
}

for_each_backend!(udp_delay_answers_20_senders_in_parallel);
/// `--delay 1s`: 20 senders at once are all answered after about 1 s, not 20 s.
fn udp_delay_answers_20_senders_in_parallel(backend: &'static str) {
    const N: usize = 20;
    let Some(d) = Daemon::spawn(backend, &["-l", "udp:127.0.0.1:0", "--delay", "1s"]) else {
        return;
    };
    let addr = d.udp_addr();
    let barrier = Barrier::new(N);
    let start = Instant::now();
    let results: Vec<(Option<Vec<u8>>, Duration)> = thread::scope(|sc| {
        let hs: Vec<_> = (0..N)
            .map(|i| {
                let barrier = &barrier;
                sc.spawn(move || {
                    let c = client("127.0.0.1:0", Duration::from_secs(10));
                    barrier.wait();
                    let t0 = Instant::now();
                    c.send_to(format!("sender {i}").as_bytes(), addr).unwrap();
                    (recv(&c).map(|r| r.0), t0.elapsed())
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let total = start.elapsed();
    for (i, (back, took)) in results.iter().enumerate() {
        let want = format!("sender {i}").into_bytes();
        if back.as_ref() != Some(&want) || *took < Duration::from_secs(1) {
            d.fail(&format!(
                "sender {i}: {back:?} after {took:?}; want its datagram after >= 1 s"
            ));
        }
    }
    if total > Duration::from_secs(8) {
        d.fail(&format!(
            "{N} delayed senders took {total:?} together: replies are serialised"
        ));
    }
}

for_each_backend!(udp_wildcard_answers_from_the_address_asked);
/// A `0.0.0.0` listener answers a datagram sent to 127.0.0.2 from 127.0.0.2 (IP_PKTINFO),
/// and one sent to 127.0.0.1 from 127.0.0.1.
fn udp_wildcard_answers_from_the_address_asked(backend: &'static str) {
    let Some(d) = Daemon::spawn(backend, &["-l", "udp:0.0.0.0:0"]) else {
        return;
    };
    let port = d.udp_addr().port();
    for dst in ["127.0.0.2", "127.0.0.1", "127.0.0.3"] {
        let to: SocketAddr = format!("{dst}:{port}").parse().unwrap();
        let c = client("127.0.0.1:0", REPLY_WAIT);
        c.send_to(dst.as_bytes(), to).unwrap();
        match recv(&c) {
            Some((back, from)) if back == dst.as_bytes() && from == to => {}
            Some((_, from)) => d.fail(&format!("asked {to}, answered from {from}")),
            None => d.fail(&format!("no reply from {to}")),
        }
    }
}
