//! The per-source table against the real binary (SPEC §10, issue 15 items 4 and 5): two
//! buckets per source, so forged datagrams cannot spend a client's TCP budget; a bounded
//! table (`--source-table`) that a flood of sources with nothing open cannot fill, and that
//! refuses a new source with its own reason (`table full`) only when every entry holds an
//! open connection.

use std::net::{TcpStream, UdpSocket};
use std::time::Duration;

use super::{connect_from, ip, served, stat};
use crate::util::client::{outcome, Outcome};
use crate::util::datagrams::{self, burst};
use crate::util::Daemon;

/// How long a reply that should not come is waited for.
const SILENCE: Duration = Duration::from_millis(400);
/// Longest wait for a log line.
const PATIENCE: Duration = Duration::from_secs(10);

fn sender(d: &Daemon, source: &str) -> UdpSocket {
    datagrams::sender(d, ip(source).into(), SILENCE)
}

fn must_be_served(d: &Daemon, source: &str) -> TcpStream {
    let s = connect_from(d, ip(source)).unwrap();
    if !served(d, &s) {
        d.fail(&format!("a connection from {source} was refused"));
    }
    s
}

fn must_be_refused(d: &Daemon, source: &str) {
    let s = connect_from(d, ip(source)).unwrap();
    if outcome(&s, Duration::from_secs(5)) != Outcome::Closed {
        d.fail(&format!("a connection from {source} was served"));
    }
}

for_each_backend!(forged_datagrams_leave_the_tcp_budget_alone);
/// Issue 15 item 4: `--rate-per-source 5` with TCP and UDP listeners. 50 datagrams "from"
/// the victim 127.0.0.60 (a sender bound to its address) get about 5 answers; the victim's
/// own 5 TCP connects are all served nonetheless (with one bucket, 1 in 25 was).
fn forged_datagrams_leave_the_tcp_budget_alone(backend: &'static str) {
    let args = [
        "-l",
        "127.0.0.1:0",
        "-l",
        "udp:127.0.0.1:0",
        "--rate-per-source",
        "5",
    ];
    let Some(d) = Daemon::spawn(backend, &args) else {
        return;
    };
    let got = burst(&d, &sender(&d, "127.0.0.60"), d.udp_addr(), 50, "d");
    if !(5..=8).contains(&got) {
        d.fail(&format!("a burst of 50 datagrams at 5/s got {got} answers"));
    }
    // Six connects at once: the TCP bucket holds its 5 tokens, untouched by the datagrams,
    // so at least 5 are served (a 6th too if a token came back while they were accepted:
    // that the 6th is refused in time is the rate tests' business).
    let six: Vec<TcpStream> = (0..6)
        .map(|_| connect_from(&d, ip("127.0.0.60")).unwrap())
        .collect();
    let served_n = six.iter().filter(|s| served(&d, s)).count();
    if served_n < 5 {
        d.fail(&format!(
            "{served_n} of 6 TCP connects served; want at least 5"
        ));
    }
    let limited = stat(&d, "limited");
    let want = (50 - got + 6 - served_n) as u64;
    if limited != want {
        d.fail(&format!("limited={limited}, want {want}"));
    }
}

for_each_backend!(a_tiny_table_full_of_idle_sources_refuses_nobody);
/// Issue 15 item 5: `--source-table 4` (8 slots). 300 forged sources that open nothing
/// (one datagram each) are all answered and never keep a new client out: three new TCP
/// sources are served after them. Then eight sources holding a connection each fill the
/// table: a ninth source is refused with the reason `table full` (counted `limited`), its
/// datagrams too, while the eight go on; once one of them closes, the ninth is served.
fn a_tiny_table_full_of_idle_sources_refuses_nobody(backend: &'static str) {
    let args = [
        "-l",
        "127.0.0.1:0",
        "-l",
        "udp:127.0.0.1:0",
        "--source-table",
        "4",
        "--max-per-source",
        "4",
        "--rate-per-source",
        "1000",
    ];
    let Some(d) = Daemon::spawn(backend, &args) else {
        return;
    };
    let to = d.udp_addr();
    for n in 0..300 {
        let source = format!("127.0.{}.{}", 2 + n / 200, 1 + n % 200);
        let s = sender(&d, &source);
        // An answer that should come is waited for as long as a loaded machine may need.
        s.set_read_timeout(Some(PATIENCE)).unwrap();
        s.send_to(b"forged", to).unwrap();
        if s.recv_from(&mut [0u8; 16]).is_err() {
            d.fail(&format!("forged source {n} ({source}) was not answered"));
        }
    }
    let mut held: Vec<TcpStream> = (0..3)
        .map(|n| must_be_served(&d, &format!("127.0.0.{}", 70 + n)))
        .collect();
    if stat(&d, "limited") != 0 {
        d.fail("something was refused while the table held only idle sources");
    }
    for n in 3..8 {
        held.push(must_be_served(&d, &format!("127.0.0.{}", 70 + n)));
    }
    let mark = d.mark();
    must_be_refused(&d, "127.0.0.80");
    d.expect_line(
        mark,
        "refused 1 connection in the last 1s (table full), e.g. from 127.0.0.80",
        PATIENCE,
    );
    if burst(&d, &sender(&d, "127.0.0.81"), to, 3, "d") != 0 {
        d.fail("a new source's datagrams were answered with the table full");
    }
    if stat(&d, "limited") != 4 {
        d.fail(&format!("want limited=4 in {:?}", d.stats()));
    }
    for s in &held {
        if !served(&d, s) {
            d.fail("a held connection stopped echoing");
        }
    }
    drop(held.pop());
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let s = connect_from(&d, ip("127.0.0.80")).unwrap();
        if served(&d, &s) {
            break;
        }
        if std::time::Instant::now() > deadline {
            d.fail("127.0.0.80 still refused after a source closed its connection");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
