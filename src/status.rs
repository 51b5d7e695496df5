//! `echo-mux status [ADDR] [--json]` (SPEC §12): ask a running daemon's `--metrics`
//! listener for `/status` and print it, as the JSON object itself or as a short table.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use serde_json::Value;

use crate::config::ListenAddr;
use crate::error::Error;

/// How long the daemon may take to connect and to answer.
const TIMEOUT: Duration = Duration::from_secs(5);
/// The largest answer read (a /status object is a few KiB even with 1024 workers).
const MAX_ANSWER: u64 = 16 << 20;

/// What to print on stdout: the JSON object (`json`) or the table.
pub fn run(addr: &ListenAddr, json: bool) -> Result<String, Error> {
    let fail = |e: io::Error| Error::io(format!("no echo-mux answers on {addr}"), e);
    let body = fetch(addr).map_err(fail)?;
    let text = String::from_utf8_lossy(&body);
    if json {
        return Ok(format!("{}\n", text.trim_end()));
    }
    let status: Value = serde_json::from_str(&text).map_err(|e| {
        let why = io::Error::new(
            io::ErrorKind::InvalidData,
            format!("not a status object: {e}"),
        );
        Error::io(format!("unexpected answer from {addr}"), why)
    })?;
    Ok(table(&status))
}

/// GET /status over HTTP/1.0 (the daemon closes after the answer); the body of a 200.
fn fetch(addr: &ListenAddr) -> io::Result<Vec<u8>> {
    let request = b"GET /status HTTP/1.0\r\nHost: echo-mux\r\nUser-Agent: echo-mux-status\r\n\r\n";
    let mut answer = Vec::new();
    match addr {
        ListenAddr::Tcp(sa) | ListenAddr::Udp(sa) => {
            let mut s = TcpStream::connect_timeout(sa, TIMEOUT)?;
            s.set_read_timeout(Some(TIMEOUT))?;
            s.set_write_timeout(Some(TIMEOUT))?;
            s.write_all(request)?;
            s.take(MAX_ANSWER).read_to_end(&mut answer)?;
        }
        ListenAddr::Unix(path) => {
            let mut s = UnixStream::connect(path)?;
            s.set_read_timeout(Some(TIMEOUT))?;
            s.set_write_timeout(Some(TIMEOUT))?;
            s.write_all(request)?;
            s.take(MAX_ANSWER).read_to_end(&mut answer)?;
        }
    }
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    let end = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("not an HTTP answer"))?;
    let head = String::from_utf8_lossy(&answer[..end]);
    let status = head.lines().next().unwrap_or("");
    if !status.starts_with("HTTP/1.") {
        return Err(bad("not an HTTP answer"));
    }
    if status.split(' ').nth(1) != Some("200") {
        return Err(bad(&format!("it answered '{}'", status.trim())));
    }
    Ok(answer[end + 4..].to_vec())
}

/// The human table: one header line, the totals, then one row per worker.
pub fn table(s: &Value) -> String {
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    let t = &s["totals"];
    let workers = s["workers"].as_array().cloned().unwrap_or_default();
    let mut out = String::new();
    let shape = if workers.is_empty() {
        "1 process".to_string()
    } else {
        format!("{} workers", workers.len())
    };
    let _ = writeln!(
        out,
        "echo-mux {} (pid {}, backend {}, {shape}), up {}, {} reloads",
        s["version"].as_str().unwrap_or("?"),
        n(&s["pid"]),
        s["backend"].as_str().unwrap_or("?"),
        duration(n(&s["uptime_seconds"])),
        n(&s["reloads"]),
    );
    let mut refused = String::new();
    if let Some(reasons) = t["rejected_by_reason"].as_object() {
        for (reason, count) in reasons.iter().filter(|(_, c)| n(c) > 0) {
            let _ = write!(refused, " {reason}={}", n(count));
        }
    }
    let _ = writeln!(
        out,
        "open {}  accepted {}  rejected {}{}  in {}  out {}",
        n(&t["open"]),
        n(&t["accepted"]),
        n(&t["rejected"]),
        if refused.is_empty() {
            String::new()
        } else {
            format!(" ({})", refused.trim_start())
        },
        bytes(n(&t["bytes_in"])),
        bytes(n(&t["bytes_out"])),
    );
    if n(&t["datagrams_in"]) + n(&t["datagrams_out"]) + n(&t["dropped"]) > 0 {
        let _ = writeln!(
            out,
            "datagrams in {}  out {}  dropped {}",
            n(&t["datagrams_in"]),
            n(&t["datagrams_out"]),
            n(&t["dropped"])
        );
    }
    if workers.is_empty() {
        return out;
    }
    let _ = writeln!(
        out,
        "{:<6} {:>8} {:>6} {:>10} {:>10} {:>10} {:>10} {:>8}",
        "WORKER", "PID", "OPEN", "ACCEPTED", "BYTES IN", "BYTES OUT", "LAST TURN", "RESTARTS"
    );
    for w in &workers {
        let pid = w["pid"]
            .as_u64()
            .map_or_else(|| "-".to_string(), |p| p.to_string());
        let turn = w["last_turn_seconds"].as_f64().unwrap_or(0.0);
        let _ = writeln!(
            out,
            "{:<6} {:>8} {:>6} {:>10} {:>10} {:>10} {:>9.1}s {:>8}",
            n(&w["worker"]),
            pid,
            n(&w["open"]),
            n(&w["accepted"]),
            bytes(n(&w["bytes_in"])),
            bytes(n(&w["bytes_out"])),
            turn,
            n(&w["restarts"]),
        );
    }
    out
}

/// 512 B, 4.0 KiB, 1.2 GiB.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// 42s, 3m07s, 2h05m, 3d04h.
fn duration(s: u64) -> String {
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(4096), "4.0 KiB");
        assert_eq!(bytes(3 << 30), "3.0 GiB");
        assert_eq!(duration(42), "42s");
        assert_eq!(duration(187), "3m07s");
        assert_eq!(duration(7500), "2h05m");
    }

    #[test]
    fn a_table_row_per_worker() {
        let s: Value = serde_json::from_str(
            r#"{"version":"0.2.0","backend":"epoll","pid":7,"uptime_seconds":61,"reloads":0,
            "totals":{"open":1,"accepted":5,"rejected":2,"rejected_by_reason":{"max-clients":2,"denied":0},
            "bytes_in":10,"bytes_out":10,"datagrams_in":0,"datagrams_out":0,"dropped":0},
            "workers":[{"worker":1,"pid":8,"open":1,"accepted":5,"bytes_in":10,"bytes_out":10,
            "last_turn_seconds":0.31,"restarts":1},{"worker":2,"pid":null,"open":0,"accepted":0,
            "bytes_in":0,"bytes_out":0,"last_turn_seconds":3.0,"restarts":0}]}"#,
        )
        .unwrap();
        let t = table(&s);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "echo-mux 0.2.0 (pid 7, backend epoll, 2 workers), up 1m01s, 0 reloads"
        );
        assert_eq!(
            lines[1],
            "open 1  accepted 5  rejected 2 (max-clients=2)  in 10 B  out 10 B"
        );
        assert!(lines[2].starts_with("WORKER"));
        let row: Vec<&str> = lines[3].split_whitespace().collect();
        assert_eq!(row, ["1", "8", "1", "5", "10", "B", "10", "B", "0.3s", "1"]);
        assert!(lines[4].starts_with("2             -"), "{}", lines[4]);
    }
}
