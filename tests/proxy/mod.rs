//! `--proxy-from` (SPEC §14, issue 19) against the real binary, with headers this test
//! writes itself: the client a header names is the source for the lists, the per-source
//! limits and `--log-connections`; bad headers from a trusted peer are refused (`proxy`)
//! with nothing echoed; headers from anyone else are data. `haproxy.rs` does it again
//! behind a real HAProxy.

mod haproxy;
mod workers;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use crate::util::client::{outcome, ping, Outcome, IO_TIMEOUT};
use crate::util::Daemon;

pub(crate) use crate::util::client::connect_from;

/// A v1 header naming `client` (the destination is made up: nothing reads it).
fn v1(client: SocketAddr) -> Vec<u8> {
    let family = if client.is_ipv4() { "TCP4" } else { "TCP6" };
    let dst = if client.is_ipv4() {
        "192.0.2.1"
    } else {
        "2001:db8::1"
    };
    let (ip, port) = (client.ip(), client.port());
    format!("PROXY {family} {ip} {dst} {port} 50007\r\n").into_bytes()
}

const V2_SIG: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// A v2 header: `command` (0 LOCAL, 1 PROXY), family and protocol byte, address block.
fn v2_raw(command: u8, fam: u8, block: &[u8]) -> Vec<u8> {
    let mut h = V2_SIG.to_vec();
    h.extend([0x20 | command, fam]);
    h.extend((block.len() as u16).to_be_bytes());
    h.extend(block);
    h
}

/// A v2 PROXY header naming `client`, with one TLV after the addresses (to be skipped).
fn v2(client: SocketAddr) -> Vec<u8> {
    let mut block = Vec::new();
    let fam = match client.ip() {
        IpAddr::V4(ip) => {
            block.extend(ip.octets());
            block.extend([192, 0, 2, 1]);
            0x11
        }
        IpAddr::V6(ip) => {
            block.extend(ip.octets());
            block.extend(std::net::Ipv6Addr::LOCALHOST.octets());
            0x21
        }
    };
    block.extend(client.port().to_be_bytes());
    block.extend(50007u16.to_be_bytes());
    block.extend([0x04, 0x00, 0x02, 0xab, 0xcd]); // PP2_TYPE_NOOP
    v2_raw(1, fam, &block)
}

fn sock(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// The stats field `key`, as a number.
fn stat(d: &Daemon, key: &str) -> u64 {
    let st = d.stats();
    match st.get(key).and_then(|v| v.parse().ok()) {
        Some(n) => n,
        None => d.fail(&format!("no numeric stats field {key:?} in {st:?}")),
    }
}

/// Wait (up to 15 s) for the stats field `key` to reach `want`.
fn wait_stat(d: &Daemon, key: &str, want: u64) {
    if let Err(st) = d.wait_stat(key, &want.to_string(), Duration::from_secs(15)) {
        d.fail(&format!("{key} never reached {want}: {st:?}"));
    }
}

/// Send `header` and `data` in one write: the data, and only the data, comes back.
fn served_after(d: &Daemon, s: &mut TcpStream, header: &[u8], data: &[u8]) {
    s.write_all(&[header, data].concat()).unwrap();
    let mut back = vec![0u8; data.len()];
    if let Err(e) = s.read_exact(&mut back) {
        d.fail(&format!("no echo after a PROXY header: {e}"));
    }
    if back != data {
        d.fail(&format!("echoed {back:?}, want {data:?}"));
    }
    // Nothing more is pending (the header itself was not echoed): the next ping is exact.
    match ping(&*s, b"next") {
        Ok(b) if b == b"next" => {}
        other => d.fail(&format!("after the header: {other:?}")),
    }
}

/// Closed by the server with nothing sent.
fn refused(d: &Daemon, s: &TcpStream, what: &str) {
    match outcome(s, Duration::from_secs(15)) {
        Outcome::Closed => {}
        other => d.fail(&format!(
            "{what}: want a close with nothing sent, got {other:?}"
        )),
    }
}

for_each_backend!(proxied_clients_are_their_own_sources);
/// `--proxy-from 127.0.0.1`: the v1 or v2 header's client is what `--deny`,
/// `--max-per-source` and `--log-connections` see; the header is never echoed.
fn proxied_clients_are_their_own_sources(backend: &'static str) {
    let args = [
        "--proxy-from",
        "127.0.0.1",
        "--deny",
        "192.0.2.7",
        "--max-per-source",
        "1",
        "--log-connections",
    ];
    let Some(d) = Daemon::spawn(backend, &args) else {
        return;
    };
    let mark = d.mark();
    let mut first = d.connect();
    served_after(&d, &mut first, &v1(sock("192.0.2.8:4000")), b"hello");
    // The same client through another connection: over its --max-per-source.
    let second = d.connect();
    (&second).write_all(&v2(sock("192.0.2.8:4001"))).unwrap();
    refused(&d, &second, "a second connection of 192.0.2.8");
    // A denied client, whatever the balancer's own address.
    let denied = d.connect();
    (&denied).write_all(&v2(sock("192.0.2.7:4002"))).unwrap();
    refused(&d, &denied, "192.0.2.7 (denied)");
    // Another client, IPv6, through the same balancer: its own source.
    let mut six = d.connect();
    served_after(&d, &mut six, &v2(sock("[2001:db8::9]:4003")), b"six");
    wait_stat(&d, "rejected", 2);
    let (denied, limited, accepted) = (
        stat(&d, "denied"),
        stat(&d, "limited"),
        stat(&d, "accepted"),
    );
    if (denied, limited, accepted) != (1, 1, 2) {
        d.fail(&format!(
            "want denied=1 limited=1 accepted=2, got {denied} {limited} {accepted}"
        ));
    }
    d.expect_line(mark, "(max-per-source), e.g. from 192.0.2.8", IO_TIMEOUT);
    d.expect_line(mark, "(denied), e.g. from 192.0.2.7", IO_TIMEOUT);
    drop((first, six));
    d.expect_line(mark, "closed 192.0.2.8:4000 after", IO_TIMEOUT);
    d.expect_line(mark, "closed [2001:db8::9]:4003 after", IO_TIMEOUT);
    // Its slot was given back: the same client may come again.
    let mut again = d.connect();
    served_after(&d, &mut again, &v1(sock("192.0.2.8:4004")), b"again");
    // An IPv4-mapped client is shown (and counted) as its IPv4 address.
    let mut mapped = d.connect();
    served_after(
        &d,
        &mut mapped,
        &v2(sock("[::ffff:192.0.2.10]:4005")),
        b"mapped",
    );
    drop(mapped);
    d.expect_line(mark, "closed 192.0.2.10:4005 after", IO_TIMEOUT);
}

for_each_backend!(local_and_unknown_keep_the_balancer);
/// v2 LOCAL (the balancer's health checks) and v1 UNKNOWN: served as the balancer itself.
fn local_and_unknown_keep_the_balancer(backend: &'static str) {
    let args = ["--proxy-from", "127.0.0.0/8", "--log-connections"];
    let Some(d) = Daemon::spawn(backend, &args) else {
        return;
    };
    let mark = d.mark();
    for (from, header) in [
        ("127.0.0.5", v2_raw(0, 0x00, &[])),
        ("127.0.0.6", v2_raw(0, 0x11, &[1; 12])),
        ("127.0.0.7", b"PROXY UNKNOWN\r\n".to_vec()),
    ] {
        let mut s = connect_from(from.parse().unwrap(), d.addr()).unwrap();
        let port = s.local_addr().unwrap().port();
        served_after(&d, &mut s, &header, b"check");
        drop(s);
        d.expect_line(mark, &format!("closed {from}:{port} after"), IO_TIMEOUT);
    }
}

/// Headers a trusted peer may not send, each complete enough to be judged at once.
fn bad_headers() -> Vec<(&'static str, Vec<u8>)> {
    let long = format!("PROXY UNKNOWN {}\r\n", "f".repeat(100));
    let mut too_long_v2 = v2_raw(1, 0x11, &[]);
    too_long_v2[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
    let mut version1 = v2(sock("192.0.2.8:1"));
    version1[12] = 0x11;
    vec![
        ("no header at all", b"hello, no header here\r\n".to_vec()),
        (
            "a wrong signature",
            b"PROXZ TCP4 1.2.3.4 5.6.7.8 1 2\r\n".to_vec(),
        ),
        ("a v2 signature of version 1", version1),
        ("a v1 line over 107 bytes", long.into_bytes()),
        ("a v2 length of 65535", too_long_v2),
        (
            "TCP4 with IPv6 addresses",
            b"PROXY TCP4 ::1 ::1 1 2\r\n".to_vec(),
        ),
        ("v2 UDP over IPv4", v2_raw(1, 0x12, &[0; 12])),
        ("a v2 IPv6 block of 12 bytes", v2_raw(1, 0x21, &[0; 12])),
        ("a lone LF", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n".to_vec()),
        (
            "a port with a leading zero",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n".to_vec(),
        ),
    ]
}

for_each_backend!(bad_headers_are_refused_with_nothing_echoed);
/// Every bad header from a trusted peer: closed with nothing echoed, counted `rejected`
/// (not denied or limited), and the refusal log says `proxy`. So is a peer that closes
/// before its header is complete.
fn bad_headers_are_refused_with_nothing_echoed(backend: &'static str) {
    let args = [
        "--proxy-from",
        "127.0.0.1",
        "--deny",
        "192.0.2.99",
        "--metrics",
        "127.0.0.1:0",
    ];
    let Some(d) = Daemon::spawn(backend, &args) else {
        return;
    };
    let mark = d.mark();
    let bad = bad_headers();
    for (what, input) in &bad {
        let s = d.connect();
        (&s).write_all(input).unwrap();
        let _ = (&s).write_all(b"payload that must not come back");
        refused(&d, &s, what);
    }
    let half = d.connect();
    (&half).write_all(b"PROXY TCP4 192.0").unwrap();
    half.shutdown(Shutdown::Write).unwrap();
    refused(&d, &half, "a header cut short by the peer's FIN");
    let n = bad.len() as u64 + 1;
    wait_stat(&d, "rejected", n);
    let (denied, limited, accepted) = (
        stat(&d, "denied"),
        stat(&d, "limited"),
        stat(&d, "accepted"),
    );
    if (denied, limited, accepted) != (0, 0, 0) {
        d.fail(&format!(
            "want denied=0 limited=0 accepted=0, got {denied} {limited} {accepted}"
        ));
    }
    d.expect_line(mark, "(proxy), e.g. from 127.0.0.1", IO_TIMEOUT);
    // The metrics name the reason too (SPEC §12).
    let label = "echo_mux_connections_rejected_total{reason=\"proxy\"}";
    let addr = crate::metrics::metrics_addr(&d);
    crate::metrics::scrape_until(&addr, |m| m.get(label) == Some(&(n as f64)));
    if !d.serves_new_client_via(&v1(sock("192.0.2.8:9"))) {
        d.fail("a good header after the bad ones was not served");
    }
}

for_each_backend!(a_header_in_one_byte_segments_works);
/// A header that arrives one byte per segment (TCP_NODELAY, a pause between writes) is
/// assembled, v1 and v2 alike, and the data after it is echoed.
fn a_header_in_one_byte_segments_works(backend: &'static str) {
    let args = ["--proxy-from", "127.0.0.1", "--log-connections"];
    let Some(d) = Daemon::spawn(backend, &args) else {
        return;
    };
    let mark = d.mark();
    for (port, header) in [
        (5001, v1(sock("192.0.2.8:5001"))),
        (5002, v2(sock("192.0.2.8:5002"))),
    ] {
        let mut s = d.connect();
        for b in &header {
            s.write_all(&[*b]).unwrap();
            thread::sleep(Duration::from_millis(2));
        }
        // Nothing comes back while the header is being assembled.
        if let Outcome::Data(b) = outcome(&s, Duration::from_millis(100)) {
            d.fail(&format!("the server sent {b:?} for a header"));
        }
        served_after(&d, &mut s, b"", b"after one-byte segments");
        drop(s);
        d.expect_line(mark, &format!("closed 192.0.2.8:{port} after"), IO_TIMEOUT);
    }
}

for_each_backend!(a_slow_header_is_cut_at_five_seconds);
/// Slowloris on the header: a trusted peer that starts a header and stalls is closed once
/// 5 s have passed since it connected (not before), counted `proxy`.
fn a_slow_header_is_cut_at_five_seconds(backend: &'static str) {
    let Some(d) = Daemon::spawn(backend, &["--proxy-from", "127.0.0.1"]) else {
        return;
    };
    let t0 = Instant::now();
    let s = d.connect();
    (&s).write_all(b"PROXY TCP4 192.0.2.8 ").unwrap();
    let idle = d.connect(); // sends nothing at all
    refused(&d, &s, "a stalled header");
    let waited = t0.elapsed();
    if waited < Duration::from_millis(4900) {
        d.fail(&format!("closed after {waited:?}, before the 5 s deadline"));
    }
    refused(&d, &idle, "a connection that never sent a byte");
    wait_stat(&d, "rejected", 2);
}

for_each_backend!(headers_from_other_peers_are_data);
/// A PROXY header from a peer outside `--proxy-from` is never believed: it is echoed as
/// data, and a forged one gains nothing (the lists still see the real peer).
fn headers_from_other_peers_are_data(backend: &'static str) {
    let args = [
        "--proxy-from",
        "127.0.0.2",
        "--allow",
        "127.0.0.0/8",
        "--deny",
        "127.0.0.7",
    ];
    let Some(d) = Daemon::spawn(backend, &args) else {
        return;
    };
    let forged = v2(sock("127.0.0.9:1"));
    let mut s = connect_from(Ipv4Addr::new(127, 0, 0, 3), d.addr()).unwrap();
    match ping(&mut s, &forged) {
        Ok(b) if b == forged => {}
        other => d.fail(&format!(
            "a forged v2 header was not echoed as data: {other:?}"
        )),
    }
    let line = v1(sock("127.0.0.9:1"));
    match ping(&mut s, &line) {
        Ok(b) if b == line => {}
        other => d.fail(&format!(
            "a forged v1 line was not echoed as data: {other:?}"
        )),
    }
    let denied = connect_from(Ipv4Addr::new(127, 0, 0, 7), d.addr()).unwrap();
    let _ = (&denied).write_all(&v1(sock("127.0.0.9:1")));
    refused(
        &d,
        &denied,
        "127.0.0.7 with a forged header naming an allowed client",
    );
    wait_stat(&d, "denied", 1);
}

impl Daemon {
    /// Is a new trusted connection with `header` served (echoes after it) within 20 s?
    fn serves_new_client_via(&self, header: &[u8]) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(mut s) = crate::util::client::connect(self.addr()) {
                if s.write_all(&[header, b"!"].concat()).is_ok() {
                    let mut b = [0u8; 1];
                    if s.read_exact(&mut b).is_ok() && &b == b"!" {
                        return true;
                    }
                }
            }
            thread::sleep(Duration::from_millis(100));
        }
        false
    }
}
