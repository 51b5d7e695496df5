//! `--metrics` and `echo-mux status` (SPEC §12), against the real daemon: the values equal
//! the SIGUSR1 line's, every HTTP limit and bad input gets its answer or a close, the
//! connection cap sheds the oldest, `status` for one process and for workers.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::util::Daemon;

mod http;
mod prometheus;
mod status;
mod values;

/// Longest wait for anything a test waits for here.
pub const PATIENCE: Duration = Duration::from_secs(15);

/// The daemon's metrics address, from its `metrics on ADDR: GET /metrics, /status` line.
pub fn metrics_addr(d: &Daemon) -> String {
    let line = d.expect_line(0, "metrics on ", PATIENCE);
    let rest = &line[line.find("metrics on ").unwrap() + "metrics on ".len()..];
    rest.split(": GET").next().unwrap().to_string()
}

/// One request (the raw bytes of `request`) on a fresh connection, read until the daemon
/// closes: the whole answer.
pub fn exchange(addr: &str, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out)
        .unwrap_or_else(|e| panic!("reading the answer from {addr}: {e}"));
    String::from_utf8_lossy(&out).into_owned()
}

/// `GET path` over HTTP/1.0: (status code, body).
pub fn get(addr: &str, path: &str) -> (u16, String) {
    let answer = exchange(addr, format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes());
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"));
    let code = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap();
    (code, body.to_string())
}

/// A scrape of /metrics: `name{labels}` -> value.
pub fn scrape(addr: &str) -> HashMap<String, f64> {
    let (code, body) = get(addr, "/metrics");
    assert_eq!(code, 200, "{body}");
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (k.to_string(), v.parse().unwrap())
        })
        .collect()
}

/// Scrape until `ok` holds, failing after [`PATIENCE`] with the last scrape.
pub fn scrape_until(
    addr: &str,
    ok: impl Fn(&HashMap<String, f64>) -> bool,
) -> HashMap<String, f64> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let m = scrape(addr);
        if ok(&m) {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "never matched; last scrape {m:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
