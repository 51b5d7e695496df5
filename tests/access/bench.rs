//! The accept-cost measurement (ignored: run it alone, in release).

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::{connect_from, ip};
use crate::util::client::ping;
use crate::util::Daemon;

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
