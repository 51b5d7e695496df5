//! The real thing: `promtool check metrics` says nothing about a live scrape (one process
//! with UDP, and four workers), and a real Prometheus server reads back the daemon's own
//! totals (scripts/check-metrics.sh). Both need the Debian package `prometheus`, which
//! `.ci/run` installs.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{get, metrics_addr};
use crate::util::client::ping;
use crate::util::{wait_or_kill, Daemon, TempDir, BIN};
use crate::workers::pool::Pool;

fn promtool_says(text: &str) -> String {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; .ci/run installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "promtool failed: {out:?}");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

for_each_backend!(promtool_is_silent_on_a_live_scrape);
fn promtool_is_silent_on_a_live_scrape(backend: &'static str) {
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--listen",
        "udp:127.0.0.1:0",
        "--deny",
        "192.0.2.0/24",
        "--metrics",
        "127.0.0.1:0",
    ];
    let Some(d) = Daemon::spawn(backend, &args) else {
        return;
    };
    ping(d.connect(), b"x").unwrap();
    let (code, text) = get(&metrics_addr(&d), "/metrics");
    assert_eq!(code, 200);
    assert_eq!(promtool_says(&text), "", "{text}");
}

#[test]
fn promtool_is_silent_on_four_workers() {
    let Some(p) = Pool::start("epoll", 4, &["--metrics", "127.0.0.1:0"]) else {
        return;
    };
    let (code, text) = get(&metrics_addr(&p.d), "/metrics");
    assert_eq!(code, 200);
    assert!(text.contains("echo_mux_worker_restarts_total{worker=\"4\"} 0"));
    assert_eq!(promtool_says(&text), "", "{text}");
}

/// scripts/check-metrics.sh against one process and against two workers: Prometheus'
/// /api/v1/query equals the SIGUSR1 totals.
#[test]
fn prometheus_reads_the_daemons_totals() {
    // `cargo test` builds the whole workspace, the load generator (bench/) included.
    let bench = Path::new(BIN).with_file_name("echo-mux-bench");
    assert!(
        bench.exists(),
        "{} not built (cargo build -p echo-mux-bench)",
        bench.display()
    );
    let dir = TempDir::new("check-metrics");
    for workers in ["1", "2"] {
        let script = format!("{}/scripts/check-metrics.sh", env!("CARGO_MANIFEST_DIR"));
        let log = dir.path().join(format!("workers-{workers}.log"));
        let file = File::create(&log).unwrap();
        let mut child = Command::new("bash")
            .args([&script, "--workers", workers, "--seconds", "1"])
            .env("ECHO_MUX", BIN)
            .env("ECHO_MUX_BENCH", &bench)
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        let (status, timed_out) = wait_or_kill(&mut child, Duration::from_secs(120));
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(
            !timed_out && status.success(),
            "check-metrics.sh --workers {workers}: {status}\n{text}"
        );
        assert!(
            text.contains("ok: Prometheus reads the daemon's own totals"),
            "{text}"
        );
    }
}
