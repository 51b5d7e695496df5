//! The values: /metrics equals the SIGUSR1 line, for one process (every backend) and for
//! the supervisor's exact totals with workers, whose per-worker series add up to them.

use std::collections::HashMap;
use std::net::{TcpStream, UdpSocket};

use super::{metrics_addr, scrape_until, PATIENCE};
use crate::util::client::ping;
use crate::util::Daemon;
use crate::workers::pool::Pool;

/// The stats line's counters under their metric names.
const SAME: [(&str, &str); 5] = [
    ("open", "echo_mux_connections_open"),
    ("accepted", "echo_mux_connections_accepted_total"),
    ("bytes_in", "echo_mux_received_bytes_total"),
    ("bytes_out", "echo_mux_sent_bytes_total"),
    ("datagrams_in", "echo_mux_datagrams_received_total"),
];

fn rejected(m: &HashMap<String, f64>) -> f64 {
    m.iter()
        .filter(|(k, _)| k.starts_with("echo_mux_connections_rejected_total{"))
        .map(|(_, v)| v)
        .sum()
}

fn check_equal(stats: &HashMap<String, u64>, m: &HashMap<String, f64>) -> Result<(), String> {
    for (key, name) in SAME {
        let want = stats.get(key).copied().unwrap_or(0) as f64;
        if m.get(name) != Some(&want) {
            return Err(format!("{name} = {:?}, stats {key}={want}", m.get(name)));
        }
    }
    if rejected(m) != stats["rejected"] as f64 {
        return Err(format!(
            "rejected: {} vs {}",
            rejected(m),
            stats["rejected"]
        ));
    }
    Ok(())
}

fn numbers(stats: HashMap<String, String>) -> HashMap<String, u64> {
    stats
        .into_iter()
        .filter_map(|(k, v)| Some((k, v.trim_end_matches('s').parse().ok()?)))
        .collect()
}

for_each_backend!(metrics_equal_the_stats_line);
/// Two held connections at `--max-clients 2`, three refused, echoed bytes, datagrams: the
/// scrape says what SIGUSR1 says, the refusals under `reason="max-clients"`.
fn metrics_equal_the_stats_line(backend: &'static str) {
    let Some(d) = Daemon::spawn(
        backend,
        &[
            "--listen",
            "127.0.0.1:0",
            "--listen",
            "udp:127.0.0.1:0",
            "--max-clients",
            "2",
            "--metrics",
            "127.0.0.1:0",
        ],
    ) else {
        return;
    };
    let addr = metrics_addr(&d);
    let held: Vec<TcpStream> = (0..2)
        .map(|_| {
            let s = d.connect();
            ping(&s, b"hello metrics").unwrap();
            s
        })
        .collect();
    for _ in 0..3 {
        let _ = ping(d.connect(), b"x");
    }
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut buf = [0u8; 64];
    for _ in 0..4 {
        udp.send_to(b"ping", d.udp_addr()).unwrap();
        udp.recv_from(&mut buf).unwrap();
    }
    d.wait_stat("rejected", "3", PATIENCE)
        .unwrap_or_else(|st| d.fail(&format!("never 3 refusals: {st:?}")));
    let stats = numbers(d.stats());
    let m = scrape_until(&addr, |m| check_equal(&stats, m).is_ok());
    assert_eq!(
        m["echo_mux_connections_rejected_total{reason=\"max-clients\"}"],
        3.0
    );
    assert_eq!(m["echo_mux_connections_open"], 2.0);
    assert_eq!(m["echo_mux_datagrams_sent_total"], 4.0);
    let info = format!(
        "echo_mux_build_info{{version=\"{}\",backend=\"{backend}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(m[&info], 1.0, "{m:?}");
    assert!(
        !m.keys().any(|k| k.contains("worker")),
        "one process: no worker series"
    );
    drop(held);
}

for_each_backend!(workers_totals_and_series_add_up);
/// With two workers the supervisor serves the exact totals of its SIGUSR1 line, and the
/// per-worker series add up to them.
fn workers_totals_and_series_add_up(backend: &'static str) {
    let Some(p) = Pool::start(backend, 2, &["--metrics", "127.0.0.1:0"]) else {
        return;
    };
    let addr = metrics_addr(&p.d);
    for _ in 0..20 {
        ping(p.d.connect(), b"0123456789").unwrap();
    }
    // Closed by the clients, not yet by the workers: wait for open=0 too, so that the
    // values compared cannot change any more.
    let stats = p.totals_until(|t| t["accepted"] == 20 && t["bytes_out"] == 200 && t["open"] == 0);
    let m = scrape_until(&addr, |m| check_equal(&stats, m).is_ok());
    let sum = |name: &str| -> f64 {
        m.iter()
            .filter(|(k, _)| k.starts_with(&format!("{name}{{worker=")))
            .map(|(_, v)| v)
            .sum()
    };
    assert_eq!(sum("echo_mux_worker_connections_accepted_total"), 20.0);
    assert_eq!(sum("echo_mux_worker_received_bytes_total"), 200.0);
    assert_eq!(m["echo_mux_workers"], 2.0);
    assert!(m["echo_mux_worker_last_turn_age_seconds{worker=\"1\"}"] < 5.0);
}
