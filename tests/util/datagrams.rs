//! A burst of datagrams whose answers are counted without guessing how long to wait.
//!
//! Waiting for silence alone is a guess: on a loaded machine an answer can come after any
//! fixed wait, and a late one miscounts the burst. The daemon's own counters say when it has
//! taken the whole burst in (`datagrams_in`) and how many it answered (`datagrams_out`):
//! those answers are waited for as long as a loaded machine needs, and only an answer past
//! that count is looked for in a short silence.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

use super::Daemon;

/// How long an answer the daemon counted may take to arrive.
const PATIENCE: Duration = Duration::from_secs(10);
/// How long an answer it did not count is looked for.
const SILENCE: Duration = Duration::from_millis(400);

fn count(stats: &HashMap<String, String>, key: &str) -> u64 {
    stats.get(key).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// Send `n` datagrams `<tag><i>` from `s` to `to` at once; the number of answers, each
/// checked to come from `to` and to carry the tag. Fails the test on a stray datagram.
pub fn burst(d: &Daemon, s: &UdpSocket, to: SocketAddr, n: usize, tag: &str) -> usize {
    let before = d.stats();
    for i in 0..n {
        s.send_to(format!("{tag}{i}").as_bytes(), to).unwrap();
    }
    let want_in = count(&before, "datagrams_in") + n as u64;
    let after = d.stats_until(|st| count(st, "datagrams_in") >= want_in);
    let answered = count(&after, "datagrams_out") - count(&before, "datagrams_out");
    let mut got = 0u64;
    let mut buf = vec![0u8; 66_000];
    let mut take = |timeout: Duration| -> bool {
        s.set_read_timeout(Some(timeout)).unwrap();
        let Ok((len, from)) = s.recv_from(&mut buf) else {
            return false;
        };
        if from != to || !buf[..len].starts_with(tag.as_bytes()) {
            d.fail(&format!(
                "a stray datagram from {from}: {:?}",
                String::from_utf8_lossy(&buf[..len])
            ));
        }
        true
    };
    while got < answered {
        if !take(PATIENCE) {
            d.fail(&format!("{answered} answers counted, {got} arrived"));
        }
        got += 1;
    }
    while take(SILENCE) {
        got += 1;
    }
    got as usize
}

/// A UDP socket on `source` with a port of the kernel's choice, but never the port of one of
/// `d`'s UDP listeners: the daemon refuses such a source whatever its address (loop
/// protection), and on another loopback address the kernel may well hand that port out.
pub fn sender(d: &Daemon, source: IpAddr, wait: Duration) -> UdpSocket {
    let ours: Vec<u16> = d.udp_addrs().iter().map(SocketAddr::port).collect();
    // Colliding sockets stay open until the end, so the kernel cannot offer their port again.
    let mut refused = Vec::new();
    loop {
        let s = UdpSocket::bind((source, 0))
            .unwrap_or_else(|e| d.fail(&format!("bind {source}:0: {e}")));
        if !ours.contains(&s.local_addr().unwrap().port()) {
            s.set_read_timeout(Some(wait)).unwrap();
            return s;
        }
        refused.push(s);
    }
}
