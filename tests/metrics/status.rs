//! `echo-mux status [ADDR] [--json]`: against one process, against `--workers 4` with one
//! worker killed and replaced in between (its restart count shows it), over a unix socket,
//! under socket activation (the socket named `metrics`), and with no server (exit 1).

use std::net::TcpListener;
use std::os::fd::OwnedFd;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::{metrics_addr, scrape_until};
use crate::util::client::ping;
use crate::util::{run, Daemon, TempDir};
use crate::workers::pool::{Pool, PATIENCE};

fn status_json(addr: &str) -> serde_json::Value {
    let out = run(&["status", addr, "--json"]);
    assert!(out.status.success(), "{}", out.describe());
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.describe()))
}

/// The table's row for worker `k`, split on whitespace.
fn row(table: &str, k: usize) -> Vec<String> {
    table
        .lines()
        .skip_while(|l| !l.starts_with("WORKER"))
        .find(|l| l.split_whitespace().next() == Some(&k.to_string()))
        .unwrap_or_else(|| panic!("no row for worker {k}:\n{table}"))
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

#[test]
fn status_of_one_process() {
    let Some(d) = Daemon::spawn("epoll", &["--metrics", "127.0.0.1:0"]) else {
        return;
    };
    let addr = metrics_addr(&d);
    for _ in 0..3 {
        ping(d.connect(), b"abcd").unwrap();
    }
    scrape_until(&addr, |m| m["echo_mux_sent_bytes_total"] == 12.0);
    let out = run(&["status", &addr]);
    assert!(out.status.success(), "{}", out.describe());
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines[0].starts_with(&format!(
            "echo-mux {} (pid {}, backend epoll, 1 process), up ",
            env!("CARGO_PKG_VERSION"),
            d.pid()
        )),
        "{}",
        out.stdout
    );
    assert_eq!(
        lines[1],
        "open 0  accepted 3  rejected 0  in 12 B  out 12 B"
    );
    assert!(!out.stdout.contains("WORKER"));
    let j = status_json(&addr);
    assert_eq!(j["totals"]["accepted"], 3);
    assert_eq!(j["pid"], d.pid());
}

#[test]
fn status_of_four_workers_counts_a_restart() {
    let Some(p) = Pool::start("epoll", 4, &["--metrics", "127.0.0.1:0"]) else {
        return;
    };
    let addr = metrics_addr(&p.d);
    let before = status_json(&addr);
    let pids: Vec<i32> = p.worker_pids();
    for (k, pid) in pids.iter().enumerate() {
        assert_eq!(before["workers"][k]["pid"], *pid);
        assert_eq!(before["workers"][k]["restarts"], 0);
    }
    let mark = p.d.mark();
    kill(Pid::from_raw(pids[1]), Signal::SIGKILL).unwrap();
    let new_pid = p.wait_replaced(2, mark, PATIENCE);
    let out = run(&["status", &addr]);
    assert!(out.status.success(), "{}", out.describe());
    assert!(out.stdout.contains("4 workers"), "{}", out.stdout);
    let two = row(&out.stdout, 2);
    assert_eq!(two[1], new_pid.to_string(), "{}", out.stdout);
    assert_eq!(two.last().unwrap(), "1", "restarts: {}", out.stdout);
    assert_eq!(row(&out.stdout, 1).last().unwrap(), "0");
    let after = status_json(&addr);
    assert_eq!(after["workers"][1]["restarts"], 1);
    assert_eq!(after["workers"][1]["pid"], new_pid);
}

#[test]
fn status_over_a_unix_socket() {
    let dir = TempDir::new("metrics-unix");
    let path = dir.path().join("m.sock");
    let spec = format!("unix:{}", path.display());
    let Some(d) = Daemon::spawn("poll", &["--metrics", &spec]) else {
        return;
    };
    assert_eq!(metrics_addr(&d), spec);
    let j = status_json(&spec);
    assert_eq!(j["backend"], "poll");
    drop(d);
}

/// systemd hands in the echo listener and one named `metrics` (FileDescriptorName=): the
/// second serves HTTP, the first echoes, and `--metrics` is not needed.
#[test]
fn a_socket_named_metrics_serves_metrics() {
    let echo = TcpListener::bind("127.0.0.1:0").unwrap();
    let metrics = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = metrics.local_addr().unwrap().to_string();
    let Some(d) = Daemon::with("epoll")
        .inherit(vec![OwnedFd::from(echo), OwnedFd::from(metrics)])
        .env("LISTEN_FDNAMES", "echo:metrics")
        .expect_listeners(1)
        .spawn()
    else {
        return;
    };
    d.expect_echo(d.connect(), "the inherited echo listener");
    assert_eq!(metrics_addr(&d), addr);
    assert_eq!(status_json(&addr)["totals"]["accepted"], 1);
}

#[test]
fn status_without_a_server_is_one_line_and_exit_1() {
    let free = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = free.local_addr().unwrap().to_string();
    drop(free);
    let out = run(&["status", &addr]);
    assert_eq!(out.status.code(), Some(1), "{}", out.describe());
    assert_eq!(
        out.stderr,
        format!("echo-mux: no echo-mux answers on {addr}: connection refused\n")
    );
    assert!(out.stdout.is_empty());
    let out = run(&["status", "udp:127.0.0.1:9"]);
    assert_eq!(out.status.code(), Some(2), "{}", out.describe());
}
