//! The largest UDP replies (SPEC §9), on every backend: 65,507 bytes over IPv4, 65,527 over
//! IPv6 (65,535 less the UDP header, without jumbograms), in raw and in stamp mode; one byte
//! more is not sent and counts as dropped.

use std::net::UdpSocket;
use std::time::Duration;

use crate::udp::{client, recv, REPLY_WAIT};
use crate::util::client::{fresh_seed, Pattern};
use crate::util::Daemon;

/// What stamp mode adds to a payload: `Echo=>`, ` at `, 24 bytes of ctime, `\n`.
const STAMP_EXTRA: usize = 6 + 4 + 24 + 1;

for_each_backend!(udp_largest_replies_over_ipv4_and_ipv6);
/// Raw: 65,507 bytes echoed over IPv4 (the kernel will not send more); 65,508 and 65,527
/// bytes echoed over IPv6.
fn udp_largest_replies_over_ipv4_and_ipv6(backend: &'static str) {
    if UdpSocket::bind("[::1]:0").is_err() {
        println!("note: no IPv6 loopback here; not testing IPv6 reply sizes");
        return;
    }
    let args = ["-l", "udp:127.0.0.1:0", "-l", "udp:[::1]:0"];
    let Some(d) = Daemon::spawn(backend, &args) else {
        return;
    };
    let (v4, v6) = (d.udp_addrs()[0], d.udp_addrs()[1]);
    let mut pattern = Pattern::new(fresh_seed());
    let cases = [
        ("127.0.0.1:0", v4, 65_507),
        ("[::1]:0", v6, 65_508),
        ("[::1]:0", v6, 65_527),
    ];
    for (bind, to, len) in cases {
        let c = client(bind, REPLY_WAIT);
        let mut msg = vec![0u8; len];
        pattern.fill(&mut msg);
        c.send_to(&msg, to).unwrap();
        match recv(&c) {
            Some((back, from)) if back == msg && from == to => {}
            Some((back, _)) => d.fail(&format!("{to}: {len} bytes came back as {}", back.len())),
            None => d.fail(&format!("{to}: no reply to {len} bytes")),
        }
    }
    let c = client("127.0.0.1:0", REPLY_WAIT);
    if c.send_to(&[0u8; 65_508], v4).is_ok() {
        d.fail("the kernel sent a 65,508-byte IPv4 datagram");
    }
    let stats = d.stats();
    if stats["datagrams_out"] != "3" || stats["dropped"] != "0" {
        d.fail(&format!("want 3 out, none dropped: {stats:?}"));
    }
}

for_each_backend!(udp_largest_stamp_reply_over_ipv6);
/// Stamp over IPv6: a payload whose reply is 65,527 bytes is answered; one byte more is not
/// (and counts as dropped), while the same size over IPv4 stops at 65,507.
fn udp_largest_stamp_reply_over_ipv6(backend: &'static str) {
    if UdpSocket::bind("[::1]:0").is_err() {
        println!("note: no IPv6 loopback here; not testing IPv6 reply sizes");
        return;
    }
    let args = [
        "-l",
        "udp:[::1]:0",
        "-l",
        "udp:127.0.0.1:0",
        "--mode",
        "stamp",
    ];
    let Some(d) = Daemon::spawn(backend, &args) else {
        return;
    };
    let (v6, v4) = (d.udp_addrs()[0], d.udp_addrs()[1]);
    let c6 = client("[::1]:0", REPLY_WAIT);
    c6.send_to(&vec![b'x'; 65_527 - STAMP_EXTRA], v6).unwrap();
    match recv(&c6) {
        Some((back, _)) if back.len() == 65_527 && back.starts_with(b"Echo=>xxx") => {}
        other => d.fail(&format!(
            "want a 65,527-byte reply, got {:?} bytes",
            other.map(|r| r.0.len())
        )),
    }
    let quiet = |bind: &str, to, len: usize| {
        let c = client(bind, Duration::from_millis(500));
        c.send_to(&vec![b'y'; len], to).unwrap();
        if let Some((back, _)) = recv(&c) {
            d.fail(&format!("{to}: a {}-byte reply was sent", back.len()));
        }
    };
    quiet("[::1]:0", v6, 65_527 - STAMP_EXTRA + 1);
    quiet("127.0.0.1:0", v4, 65_507 - STAMP_EXTRA + 1);
    let stats = d.stats();
    if stats["datagrams_out"] != "1" || stats["dropped"] != "2" {
        d.fail(&format!("want 1 out, 2 dropped: {stats:?}"));
    }
}
