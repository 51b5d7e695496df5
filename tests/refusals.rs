//! Refused connections are visible (SPEC §10, issue 8 defect 7): a flood over
//! `--max-clients` gives at most one info line a second, each counting its refusals and
//! naming one peer, and together they count every refusal exactly once.

use std::os::unix::net::UnixStream;
use std::thread;
use std::time::{Duration, Instant};

use crate::util::client::ping;
use crate::util::{Daemon, TempSock};

/// `refused N connection(s) in the last 1s (max-clients), e.g. from X` → (ms of day, N, X).
fn parse_refusal(line: &str) -> Option<(u64, u64, String)> {
    // "[2026-11-29T18:54:08.662Z INFO ] refused ..."
    let clock = line.get(12..24)?; // 18:54:08.662
    let ms = |r: std::ops::Range<usize>| clock.get(r)?.parse::<u64>().ok();
    let at = ((ms(0..2)? * 60 + ms(3..5)?) * 60 + ms(6..8)?) * 1000 + ms(9..12)?;
    let rest = line.split_once("] refused ")?.1;
    let (n, rest) = rest.split_once(' ')?;
    let what = if n == "1" {
        "connection"
    } else {
        "connections"
    };
    let from = rest
        .strip_prefix(what)?
        .strip_prefix(" in the last 1s (max-clients), e.g. from ")?;
    Some((at, n.parse().ok()?, from.to_string()))
}

/// Every refusal line after `mark`, once their counts add up to `want` (waits up to 15 s).
fn refusal_lines(d: &Daemon, mark: usize, want: u64) -> Vec<(u64, u64, String)> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let text = d.stderr();
        // Complete lines only: the last one may still be arriving.
        let tail = &text[mark..];
        let tail = &tail[..tail.rfind('\n').map_or(0, |i| i + 1)];
        let lines: Vec<&str> = tail.lines().filter(|l| l.contains("refused ")).collect();
        let parsed: Vec<_> = lines.iter().filter_map(|l| parse_refusal(l)).collect();
        if parsed.len() != lines.len() {
            d.fail(&format!(
                "a refusal line is not in SPEC §10's shape: {lines:#?}"
            ));
        }
        let total: u64 = parsed.iter().map(|p| p.1).sum();
        if total == want {
            return parsed;
        }
        if total > want || Instant::now() >= deadline {
            d.fail(&format!(
                "refusal lines count {total}, want {want}: {lines:#?}"
            ));
        }
        thread::sleep(Duration::from_millis(50));
    }
}

for_each_backend!(max_clients_flood_is_one_line_a_second);
/// 1 client in, then 240 more over about 2.4 s: each is refused, and the log says so at
/// info in at most one line a second, with counts that add up to 240.
fn max_clients_flood_is_one_line_a_second(backend: &'static str) {
    let Some(d) = Daemon::spawn(backend, &["--max-clients", "1"]) else {
        return;
    };
    let mut kept = d.connect();
    ping(&mut kept, b"in").unwrap_or_else(|e| d.fail(&format!("first client: {e}")));
    let mark = d.mark();
    let t0 = Instant::now();
    const FLOOD: u64 = 240;
    for i in 0..FLOOD {
        drop(d.connect());
        let next = t0 + Duration::from_millis(10 * (i + 1));
        thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    let lines = refusal_lines(&d, mark, FLOOD);
    let spread = t0.elapsed();
    // One line at once, then one per second of flood, then the last second's rest.
    let most = spread.as_secs() + 2;
    if lines.len() as u64 > most || lines.len() < 2 {
        d.fail(&format!(
            "{} refusal lines for a {spread:?} flood; want 2..={most}: {lines:?}",
            lines.len()
        ));
    }
    for pair in lines.windows(2) {
        // Log timestamps are truncated to the millisecond.
        if pair[1].0 < pair[0].0 + 999 {
            d.fail(&format!("two refusal lines less than 1 s apart: {lines:?}"));
        }
    }
    if lines.iter().any(|l| l.2 != "127.0.0.1") {
        d.fail(&format!("the example peer should be 127.0.0.1: {lines:?}"));
    }
    let st = d.stats_until(|st| st.get("rejected").map(String::as_str) == Some("240"));
    if st.get("rejected").map(String::as_str) != Some("240") {
        d.fail(&format!("want rejected=240, got {st:?}"));
    }
}

/// A unix-socket peer has no address: the line says so.
#[test]
fn refused_unix_client_is_named_as_such() {
    let sock = TempSock::new("refusal");
    let listen = sock.listen_arg();
    let Some(d) = Daemon::spawn("epoll", &["--max-clients", "1", "--listen", &listen]) else {
        return;
    };
    let mut kept = UnixStream::connect(&sock.0).unwrap();
    ping(&mut kept, b"in").unwrap_or_else(|e| d.fail(&format!("first client: {e}")));
    let mark = d.mark();
    drop(UnixStream::connect(&sock.0).unwrap());
    let lines = refusal_lines(&d, mark, 1);
    if lines[0].2 != "a unix-socket client" {
        d.fail(&format!("want 'e.g. from a unix-socket client': {lines:?}"));
    }
}
