//! Who is served (SPEC §10): `--allow`/`--deny`, `--max-per-source`, `--rate-per-source`, the
//! refusal log, `--log-connections`, `--keepalive` and `--socket-mode`, against the real
//! binary. Distinct sources are distinct loopback addresses: the client binds 127.0.0.2,
//! 127.0.0.3, … before it connects (the whole of 127.0.0.0/8 is local on Linux).

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::OwnedFd;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::socket::{
    bind, connect, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn,
};

use crate::util::client::{outcome, ping, Outcome, IO_TIMEOUT};
use crate::util::{Daemon, TempSock};

/// A client connected from `source` (e.g. 127.0.0.2) to the daemon's first TCP address.
fn connect_from(d: &Daemon, source: Ipv4Addr) -> io::Result<TcpStream> {
    crate::util::lift_nofile();
    let fd: OwnedFd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    // Pick the port at connect time, per destination: thousands of binds to port 0 on one
    // source address would otherwise run out of ports while earlier ones sit in TIME_WAIT.
    setsockopt(&fd, sockopt::IpBindAddressNoPort, &true)?;
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrIn::from(SocketAddrV4::new(source, 0)),
    )?;
    let SocketAddr::V4(to) = d.addr() else {
        panic!("the daemon listens on IPv6")
    };
    connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn::from(to))?;
    let s = TcpStream::from(fd);
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    s.set_nodelay(true)?;
    Ok(s)
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

/// Served (echoes a ping) or refused (closed with nothing sent)? Fails the test otherwise.
fn served(d: &Daemon, s: &TcpStream) -> bool {
    // Refused connections are closed at accept: wait for that first, so that a ping cannot
    // race the close. A served one stays silent.
    match outcome(s, Duration::from_millis(300)) {
        Outcome::Closed => return false,
        Outcome::Data(b) => d.fail(&format!("the server sent {b:?} unasked")),
        Outcome::Silent => {}
    }
    match ping(s, b"hello") {
        Ok(b) if b == b"hello" => true,
        Ok(b) => d.fail(&format!("echo came back as {b:?}")),
        Err(e) => d.fail(&format!("a connection left open did not echo: {e}")),
    }
}

/// The stats field `key`, as a number.
fn stat(d: &Daemon, key: &str) -> u64 {
    let st = d.stats();
    match st.get(key).and_then(|v| v.parse().ok()) {
        Some(n) => n,
        None => d.fail(&format!("no numeric stats field {key:?} in {st:?}")),
    }
}

for_each_backend!(longest_prefix_decides_and_a_tie_denies);
/// /8 allows, /16 denies, /24 allows, /32 denies; the same /24 both allowed and denied
/// denies. Denied connections are closed with nothing sent and counted.
fn longest_prefix_decides_and_a_tie_denies(backend: &'static str) {
    let Some(d) = Daemon::spawn(
        backend,
        &[
            "--allow",
            "127.0.0.0/8",
            "--deny",
            "127.0.0.0/16",
            "--allow",
            "127.0.2.0/24",
            "--deny",
            "127.0.2.3",
            "--allow",
            "127.0.3.0/24",
            "--deny",
            "127.0.3.0/24",
        ],
    ) else {
        return;
    };
    let cases = [
        ("127.1.0.1", true, "/8 allows"),
        ("127.0.0.2", false, "/16 beats /8"),
        ("127.0.2.2", true, "/24 beats /16"),
        ("127.0.2.3", false, "/32 beats /24"),
        ("127.0.3.1", false, "a tie at /24 denies"),
        ("127.0.4.1", false, "/16 again"),
    ];
    for (source, want, why) in cases {
        let s = connect_from(&d, ip(source)).unwrap_or_else(|e| d.fail(&format!("{source}: {e}")));
        if served(&d, &s) != want {
            d.fail(&format!("{source}: want served={want} ({why})"));
        }
    }
    let (denied, rejected) = (stat(&d, "denied"), stat(&d, "rejected"));
    let (limited, accepted) = (stat(&d, "limited"), stat(&d, "accepted"));
    if (denied, rejected, limited, accepted) != (4, 4, 0, 2) {
        d.fail(&format!(
            "want denied=4 rejected=4 limited=0 accepted=2, got {denied} {rejected} {limited} {accepted}"
        ));
    }
}

for_each_backend!(allow_only_refuses_the_rest_deny_only_serves_it);
/// With only `--allow`, what matches nothing is refused; with only `--deny`, it is served.
fn allow_only_refuses_the_rest_deny_only_serves_it(backend: &'static str) {
    let Some(allow) = Daemon::spawn(backend, &["--allow", "127.0.0.2"]) else {
        return;
    };
    let s = connect_from(&allow, ip("127.0.0.2")).unwrap();
    assert!(served(&allow, &s), "127.0.0.2 is allowed");
    let s = connect_from(&allow, ip("127.0.0.3")).unwrap();
    assert!(!served(&allow, &s), "127.0.0.3 matches nothing: refused");
    assert_eq!(stat(&allow, "denied"), 1);
    let Some(deny) = Daemon::spawn(backend, &["--deny", "127.0.0.3"]) else {
        return;
    };
    let s = connect_from(&deny, ip("127.0.0.2")).unwrap();
    assert!(served(&deny, &s), "127.0.0.2 matches nothing: served");
    let s = connect_from(&deny, ip("127.0.0.3")).unwrap();
    assert!(!served(&deny, &s), "127.0.0.3 is denied");
    assert_eq!(stat(&deny, "denied"), 1);
    // Without any list or limit, the stats line keeps its SPEC §5 prefix only.
    let Some(plain) = Daemon::spawn(backend, &[]) else {
        return;
    };
    let st = plain.stats();
    if st.contains_key("denied") || st.contains_key("limited") {
        plain.fail(&format!(
            "denied=/limited= without any list or limit: {st:?}"
        ));
    }
}

for_each_backend!(max_per_source_three_from_two_sources);
/// `--max-per-source 3`: each of two sources gets three; the fourth of each is closed at
/// once; when one of three closes, its source may connect again.
fn max_per_source_three_from_two_sources(backend: &'static str) {
    let Some(d) = Daemon::spawn(backend, &["--max-per-source", "3"]) else {
        return;
    };
    let mut held = Vec::new();
    for source in ["127.0.0.2", "127.0.0.3"] {
        for i in 0..3 {
            let mut s = connect_from(&d, ip(source)).unwrap();
            if ping(&mut s, b"x").ok().as_deref() != Some(b"x") {
                d.fail(&format!("connection {i} from {source} not served"));
            }
            held.push(s);
        }
        let fourth = connect_from(&d, ip(source)).unwrap();
        if outcome(&fourth, Duration::from_secs(5)) != Outcome::Closed {
            d.fail(&format!("the fourth from {source} was not closed at once"));
        }
    }
    let (limited, rejected, open) = (stat(&d, "limited"), stat(&d, "rejected"), stat(&d, "open"));
    if (limited, rejected, open, stat(&d, "denied")) != (2, 2, 6, 0) {
        d.fail(&format!(
            "want limited=2 rejected=2 open=6, got {limited} {rejected} {open}"
        ));
    }
    drop(held.remove(0)); // one from 127.0.0.2 leaves
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut s = connect_from(&d, ip("127.0.0.2")).unwrap();
        if ping(&mut s, b"again").is_ok() {
            break;
        }
        if Instant::now() > deadline {
            d.fail("127.0.0.2 could not connect again after one of its three closed");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Connect `n` times from `source` as fast as possible: how many were served, and how long
/// the connects took. Refused connections are closed by the server at accept, so after one
/// pause every refused socket reads EOF.
fn burst(d: &Daemon, source: Ipv4Addr, n: usize) -> (usize, Duration) {
    let t0 = Instant::now();
    let conns: Vec<TcpStream> = (0..n)
        .map(|i| connect_from(d, source).unwrap_or_else(|e| d.fail(&format!("connect {i}: {e}"))))
        .collect();
    let took = t0.elapsed();
    thread::sleep(Duration::from_millis(300));
    let mut served = 0;
    for s in &conns {
        s.set_nonblocking(true).unwrap();
        let mut b = [0u8; 16];
        match (&*s).read(&mut b) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                s.set_nonblocking(false).unwrap();
                if ping(s, b"ok").is_err() {
                    d.fail("a connection the server kept did not echo");
                }
                served += 1;
            }
            Ok(0) | Err(_) => {}
            Ok(n) => d.fail(&format!("a refused connection got {n} bytes")),
        }
    }
    (served, took)
}

/// Tokens a bucket refilled at 20 per second gains in `took` (rounded up, plus one for
/// the accept that lands a little after the last connect).
fn refill(took: Duration) -> usize {
    (took.as_secs_f64() * 20.0).ceil() as usize + 1
}

for_each_backend!(rate_per_source_bursts_then_recovers);
/// `--rate-per-source 20`: of 60 quick connects, 20 (plus what refilled meanwhile) are
/// served, the rest closed; a second later a source has a whole burst again. Another source
/// has its own bucket.
fn rate_per_source_bursts_then_recovers(backend: &'static str) {
    let Some(d) = Daemon::spawn(backend, &["--rate-per-source", "20"]) else {
        return;
    };
    let (got, took) = burst(&d, ip("127.0.0.2"), 60);
    // The burst itself took a while: the bucket refilled 20 per second meanwhile.
    if got < 20 || got > 20 + refill(took) {
        d.fail(&format!(
            "served {got} of 60 in {took:?}; want 20 to {}",
            20 + refill(took)
        ));
    }
    if stat(&d, "limited") != (60 - got) as u64 {
        d.fail(&format!("want limited={} (60 - {got} served)", 60 - got));
    }
    let (other, _) = burst(&d, ip("127.0.0.3"), 5);
    assert_eq!(other, 5, "127.0.0.3 has its own bucket");
    thread::sleep(Duration::from_millis(1100));
    let (again, took) = burst(&d, ip("127.0.0.2"), 25);
    if again < 20 || again > 20 + refill(took) {
        d.fail(&format!(
            "a second later: served {again} of 25 in {took:?}; want a full burst of 20"
        ));
    }
}

/// Lines of the daemon's stderr after `mark` that contain every one of `needles`.
fn lines_with(d: &Daemon, mark: usize, needles: &[&str]) -> Vec<String> {
    d.stderr()[mark..]
        .lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .map(str::to_string)
        .collect()
}

/// The number before " connection" in `refused 37 connections in the last 1s (...)`.
fn refused_count(line: &str) -> u64 {
    let after = &line[line.find("refused ").expect("a refusal line") + "refused ".len()..];
    after
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// A flood of refusals for two reasons over about 2.5 s: at most one line per second per
/// reason (so at most 4 of each), each with a count and an example peer.
#[test]
fn a_flood_of_refusals_logs_once_a_second_per_reason() {
    let Some(d) = Daemon::spawn("epoll", &["--deny", "127.0.0.3", "--max-per-source", "1"]) else {
        return;
    };
    let mark = d.mark();
    let mut keep = connect_from(&d, ip("127.0.0.4")).unwrap();
    ping(&mut keep, b"k").unwrap();
    let t0 = Instant::now();
    let mut sent = 0u64;
    while t0.elapsed() < Duration::from_millis(2500) {
        for source in ["127.0.0.3", "127.0.0.4"] {
            let s = connect_from(&d, ip(source)).unwrap();
            if outcome(&s, Duration::from_secs(5)) != Outcome::Closed {
                d.fail(&format!("a connection from {source} was not refused"));
            }
        }
        sent += 1;
        thread::sleep(Duration::from_millis(5));
    }
    let secs = t0.elapsed().as_secs() + 1;
    thread::sleep(Duration::from_millis(1200)); // let a last summary out, if one is pending
    for (reason, example) in [("(denied)", "127.0.0.3"), ("(max-per-source)", "127.0.0.4")] {
        let lines = lines_with(&d, mark, &["refused ", reason]);
        let shape =
            |l: &String| l.contains(&format!("e.g. from {example}")) && refused_count(l) > 0;
        if lines.is_empty() || lines.len() as u64 > secs + 1 || !lines.iter().all(shape) {
            d.fail(&format!(
                "{sent} refusals {reason} in {secs} s gave {} lines (want 1 to {}, each with a count and an example from {example}):\n{}",
                lines.len(),
                secs + 1,
                lines.join("\n")
            ));
        }
        let logged: u64 = lines.iter().map(|l| refused_count(l)).sum();
        if logged > sent {
            d.fail(&format!(
                "the lines {reason} count {logged} refusals of {sent}"
            ));
        }
    }
}

/// The `closed … after …s: in=N out=N (reason)` line for the client socket `s`.
fn closed_line(d: &Daemon, mark: usize, peer: &str, reason: &str) -> String {
    let needle = format!("closed {peer} after ");
    let line = d.expect_line(mark, &needle, Duration::from_secs(10));
    if !line.ends_with(&format!("({reason})")) {
        d.fail(&format!("want reason ({reason}) in {line:?}"));
    }
    line
}

/// `in=… out=…` of a closed line.
fn bytes_of(line: &str) -> (u64, u64) {
    let field = |k: &str| {
        let at = line.find(k).map(|i| i + k.len()).unwrap_or(line.len());
        line[at..]
            .split(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(u64::MAX)
    };
    (field(" in="), field(" out="))
}

for_each_backend!(log_connections_gives_peer_bytes_and_reason);
/// `--log-connections`: one line per closed connection with the peer, the exact bytes each
/// way and why it ended: peer closed, reset, idle timeout, drain deadline.
fn log_connections_gives_peer_bytes_and_reason(backend: &'static str) {
    let Some(mut d) = Daemon::spawn(
        backend,
        &[
            "--log-connections",
            "--idle-timeout",
            "1s",
            "--shutdown-timeout",
            "300ms",
        ],
    ) else {
        return;
    };
    let mark = d.mark();
    // Peer closed, after 120 bytes each way.
    let mut s = connect_from(&d, ip("127.0.0.2")).unwrap();
    let peer = s.local_addr().unwrap().to_string();
    ping(&mut s, &[b'a'; 100]).unwrap();
    ping(&mut s, &[b'b'; 20]).unwrap();
    drop(s);
    let line = closed_line(&d, mark, &peer, "peer closed");
    if bytes_of(&line) != (120, 120) || !line.contains("s: in=") {
        d.fail(&format!("want in=120 out=120 in {line:?}"));
    }
    // Reset: SO_LINGER 0 makes close send RST.
    let mut s = connect_from(&d, ip("127.0.0.2")).unwrap();
    let peer = s.local_addr().unwrap().to_string();
    ping(&mut s, b"1234567").unwrap();
    setsockopt(
        &s,
        sockopt::Linger,
        &libc::linger {
            l_onoff: 1,
            l_linger: 0,
        },
    )
    .unwrap();
    drop(s);
    let line = closed_line(&d, mark, &peer, "reset");
    if bytes_of(&line) != (7, 7) {
        d.fail(&format!("want in=7 out=7 in {line:?}"));
    }
    // Idle timeout.
    let mut idle = connect_from(&d, ip("127.0.0.3")).unwrap();
    let peer = idle.local_addr().unwrap().to_string();
    ping(&mut idle, b"zz").unwrap();
    let line = closed_line(&d, mark, &peer, "idle timeout");
    if bytes_of(&line) != (2, 2) {
        d.fail(&format!("want in=2 out=2 in {line:?}"));
    }
    // Drain deadline: a client that keeps its side open through SIGTERM.
    let mut last = connect_from(&d, ip("127.0.0.4")).unwrap();
    let peer = last.local_addr().unwrap().to_string();
    ping(&mut last, b"abc").unwrap();
    d.signal(nix::sys::signal::Signal::SIGTERM);
    let line = closed_line(&d, mark, &peer, "drain deadline");
    if bytes_of(&line) != (3, 3) {
        d.fail(&format!("want in=3 out=3 in {line:?}"));
    }
    d.wait_exit(Duration::from_secs(10));
    let all = lines_with(&d, mark, &["closed "]);
    if all.len() != 4 {
        d.fail(&format!(
            "want 4 closed lines, got {}:\n{}",
            all.len(),
            all.join("\n")
        ));
    }
}

/// The server side of the connection from `client` in /proc/net/tcp: its `tr` (timer kind:
/// 2 = keepalive) and `tm->when` (clock ticks until it fires).
fn server_timer(d: &Daemon, client: SocketAddr) -> (u32, u64) {
    let hex = |a: SocketAddr| match a {
        SocketAddr::V4(v4) => {
            let ip = u32::from_ne_bytes(v4.ip().octets());
            format!("{ip:08X}:{:04X}", v4.port())
        }
        SocketAddr::V6(_) => unreachable!(),
    };
    let (local, remote) = (hex(d.addr()), hex(client));
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() > 5 && f[1] == local && f[2] == remote {
            let (tr, when) = f[5].split_once(':').unwrap();
            return (tr.parse().unwrap(), u64::from_str_radix(when, 16).unwrap());
        }
    }
    d.fail(&format!("no socket {local} <- {remote} in /proc/net/tcp"))
}

for_each_backend!(keepalive_is_set_on_accepted_connections);
/// `--keepalive 90s` arms the keepalive timer of the server's socket for about 90 s; the
/// default arms it for about 5 minutes; `--keepalive 0` arms none.
fn keepalive_is_set_on_accepted_connections(backend: &'static str) {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    for (args, want) in [
        (&["--keepalive", "90s"][..], Some(90)),
        (&[][..], Some(300)),
        (&["--keepalive", "0"][..], None),
    ] {
        let Some(d) = Daemon::spawn(backend, args) else {
            return;
        };
        let mut s = d.connect();
        ping(&mut s, b"k").unwrap();
        let (tr, when) = server_timer(&d, s.local_addr().unwrap());
        let ok = match want {
            Some(secs) => tr == 2 && when <= secs * hz && when + 20 * hz >= secs * hz,
            None => tr == 0,
        };
        if !ok {
            d.fail(&format!(
                "{args:?}: server socket timer tr={tr} when={when} ticks ({hz}/s); want {}",
                match want {
                    Some(secs) => format!("keepalive (2) firing in about {secs} s"),
                    None => "no timer (0)".into(),
                }
            ));
        }
    }
}

/// `--socket-mode 0660` (and 0600) on a unix socket file echo-mux creates; it still serves.
#[test]
fn socket_mode_sets_the_socket_files_permissions() {
    use std::os::unix::fs::PermissionsExt;
    for (mode, want) in [("0660", 0o660), ("600", 0o600)] {
        let sock = TempSock::new("mode");
        let listen = sock.listen_arg();
        let Some(d) = Daemon::spawn("epoll", &["--listen", &listen, "--socket-mode", mode]) else {
            return;
        };
        let got = std::fs::metadata(&sock.0).unwrap().permissions().mode() & 0o7777;
        if got != want {
            d.fail(&format!("--socket-mode {mode}: the file has {got:o}"));
        }
        let mut c = std::os::unix::net::UnixStream::connect(&sock.0).unwrap();
        c.write_all(b"u").unwrap();
        let mut b = [0u8; 1];
        c.read_exact(&mut b).unwrap();
    }
}

/// A few thousand distinct sources (127.1.x.y), each allowed one connection a second: each
/// one's first is served and its second refused, so the table tracks every one of them.
#[test]
fn thousands_of_sources_each_have_their_own_bucket() {
    let Some(d) = Daemon::spawn("epoll", &["--rate-per-source", "1"]) else {
        return;
    };
    const N: usize = 2000;
    let source = |i: usize| Ipv4Addr::new(127, 1, (i / 250) as u8, (i % 250 + 1) as u8);
    for i in 0..N {
        let mut first = connect_from(&d, source(i)).unwrap();
        let second = connect_from(&d, source(i)).unwrap();
        if ping(&mut first, b"1").is_err() {
            d.fail(&format!(
                "the first connection from {} was not served",
                source(i)
            ));
        }
        if outcome(&second, Duration::from_secs(5)) != Outcome::Closed {
            d.fail(&format!(
                "the second from {} (within its second) was served",
                source(i)
            ));
        }
    }
    let (accepted, limited) = (stat(&d, "accepted"), stat(&d, "limited"));
    if (accepted, limited) != (N as u64, N as u64) {
        d.fail(&format!(
            "want accepted={N} limited={N}, got {accepted} {limited}"
        ));
    }
    // A second on, the buckets are full again: everyone is served.
    thread::sleep(Duration::from_millis(1100));
    for i in (0..N).step_by(97) {
        let mut s = connect_from(&d, source(i)).unwrap();
        if ping(&mut s, b"2").is_err() {
            d.fail(&format!("{} not served a second later", source(i)));
        }
    }
}

/// Time the daemon has spent on a CPU (/proc/PID/schedstat, in nanoseconds: finer than the
/// 10 ms ticks of /proc/PID/stat).
fn on_cpu(d: &Daemon) -> Duration {
    let text = std::fs::read_to_string(format!("/proc/{}/schedstat", d.pid())).unwrap();
    Duration::from_nanos(text.split_whitespace().next().unwrap().parse().unwrap())
}

/// Accept cost with no list (keepalive off, and on by default), with a 10,000-entry allow
/// list, and with that list plus both per-source limits: rounds alternate between the four
/// daemons, each round `PER_ROUND`
/// connects (connect, one-byte echo, close). Prints connections/s and the daemon's CPU time
/// per connection. A measurement, not a check; run it alone, in release:
/// `cargo test --release --test integration access::accept_cost -- --ignored --nocapture`.
#[test]
#[ignore = "a benchmark: prints connections/s side by side"]
fn accept_cost() {
    const PER_ROUND: usize = 4000;
    const ROUNDS: usize = 6;
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut rules = vec!["--allow".to_string(), "127.0.0.0/8".to_string()];
    for i in 0..9_999 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let a = Ipv4Addr::from((x as u32) | 0x0100_0000);
        let rule = if i % 2 == 0 {
            format!("{a}")
        } else {
            let net = u32::from(a) & 0xffff_ff00;
            format!("{}/24", Ipv4Addr::from(net))
        };
        rules.extend(["--allow".to_string(), rule]);
    }
    let with_rules: Vec<&str> = rules.iter().map(String::as_str).collect();
    let mut with_limits = with_rules.clone();
    with_limits.extend(["--max-per-source", "100000", "--rate-per-source", "1000000"]);
    let daemons = [
        (
            "no list, --keepalive 0",
            Daemon::spawn("epoll", &["--keepalive", "0"]).unwrap(),
        ),
        ("no list", Daemon::spawn("epoll", &[]).unwrap()),
        (
            "10,000 --allow",
            Daemon::spawn("epoll", &with_rules).unwrap(),
        ),
        (
            "10,000 --allow + limits",
            Daemon::spawn("epoll", &with_limits).unwrap(),
        ),
    ];
    let mut totals = [(Duration::ZERO, Duration::ZERO); 4];
    for round in 0..ROUNDS {
        for (i, (name, d)) in daemons.iter().enumerate() {
            let cpu0 = on_cpu(d);
            let t0 = Instant::now();
            for _ in 0..PER_ROUND {
                let mut s = connect_from(d, ip("127.0.0.2")).unwrap();
                ping(&mut s, b"!").unwrap();
            }
            let (wall, cpu) = (t0.elapsed(), on_cpu(d) - cpu0);
            totals[i].0 += wall;
            totals[i].1 += cpu;
            println!(
                "round {round} {name:>24}: {:>7.0} connections/s, {:>5.1} us daemon CPU per connection",
                PER_ROUND as f64 / wall.as_secs_f64(),
                cpu.as_secs_f64() * 1e6 / PER_ROUND as f64
            );
        }
    }
    let n = (PER_ROUND * ROUNDS) as f64;
    for (i, (name, d)) in daemons.iter().enumerate() {
        println!(
            "total {name:>24}: {:>7.0} connections/s, {:>5.1} us daemon CPU per connection, RSS {} KiB",
            n / totals[i].0.as_secs_f64(),
            totals[i].1.as_secs_f64() * 1e6 / n,
            d.rss_kib()
        );
    }
}

/// A unix-socket client has no address: its closed line names the socket it came through.
#[test]
fn log_connections_names_the_unix_socket() {
    let sock = TempSock::new("log");
    let listen = sock.listen_arg();
    let Some(d) = Daemon::spawn("poll", &["--listen", &listen, "--log-connections"]) else {
        return;
    };
    let mark = d.mark();
    let mut c = std::os::unix::net::UnixStream::connect(&sock.0).unwrap();
    c.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    c.write_all(b"unix!").unwrap();
    let mut b = [0u8; 5];
    c.read_exact(&mut b).unwrap();
    drop(c);
    let line = closed_line(&d, mark, &listen, "peer closed");
    if bytes_of(&line) != (5, 5) {
        d.fail(&format!("want in=5 out=5 in {line:?}"));
    }
}

/// Without `--log-connections`, closing is not an info line; at debug level (`-v`) the
/// per-connection lines name the peer (and the closing one has the bytes and the reason).
#[test]
fn without_log_connections_peers_appear_at_debug_only() {
    let Some(d) = Daemon::spawn("epoll", &["-v"]) else {
        return;
    };
    let mark = d.mark();
    let mut s = connect_from(&d, ip("127.0.0.5")).unwrap();
    let peer = s.local_addr().unwrap().to_string();
    ping(&mut s, b"dbg").unwrap();
    drop(s);
    d.expect_line(
        mark,
        &format!("accepted from {peer}"),
        Duration::from_secs(10),
    );
    let line = d.expect_line(
        mark,
        &format!("from {peer} closed after"),
        Duration::from_secs(10),
    );
    if !line.contains("DEBUG") || bytes_of(&line) != (3, 3) || !line.ends_with("(peer closed)") {
        d.fail(&format!(
            "want a debug line with in=3 out=3 (peer closed): {line:?}"
        ));
    }
    let info = lines_with(&d, mark, &["INFO", "closed "]);
    if !info.is_empty() {
        d.fail(&format!(
            "info lines about closing without --log-connections: {info:?}"
        ));
    }
}
