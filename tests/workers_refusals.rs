//! The refusal log with `--workers` (SPEC §10, issue 15 item 11): one line per reason a
//! second for the whole daemon, from the supervisor, counting every worker's refusals;
//! workers log none.

use std::thread;
use std::time::{Duration, Instant};

use crate::util::client::ping;
use crate::workers::pool::{Pool, PATIENCE};

/// `… supervisor: refused N connection(s) in the last 1s (REASON), e.g. from X` →
/// (ms of day, N, REASON).
fn parse(line: &str) -> Option<(u64, u64, String)> {
    // "[2026-11-29T18:54:08.662Z INFO ] supervisor: refused ..."
    let clock = line.get(12..24)?;
    let ms = |r: std::ops::Range<usize>| clock.get(r)?.parse::<u64>().ok();
    let at = ((ms(0..2)? * 60 + ms(3..5)?) * 60 + ms(6..8)?) * 1000 + ms(9..12)?;
    let rest = line.split_once("] supervisor: refused ")?.1;
    let (n, rest) = rest.split_once(' ')?;
    let rest = rest.split_once(" in the last 1s (")?.1;
    let (reason, from) = rest.split_once("), e.g. from ")?;
    (from == "127.0.0.1").then_some(())?;
    Some((at, n.parse().ok()?, reason.to_string()))
}

/// The refusal lines after `mark` once their counts add up to `want` (waits up to 15 s).
fn refusal_lines(p: &Pool, mark: usize, want: u64) -> Vec<(u64, u64, String)> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let text = p.d.stderr_since(mark);
        let lines: Vec<&str> = text.lines().filter(|l| l.contains("refused ")).collect();
        let parsed: Vec<_> = lines.iter().filter_map(|l| parse(l)).collect();
        if parsed.len() != lines.len() {
            p.d.fail(&format!(
                "a refusal line is not the supervisor's, in SPEC §10's shape: {lines:#?}"
            ));
        }
        let total: u64 = parsed.iter().map(|l| l.1).sum();
        if total == want {
            return parsed;
        }
        if total > want || Instant::now() >= deadline {
            p.d.fail(&format!(
                "refusal lines count {total}, want {want}: {lines:#?}"
            ));
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// --workers 3 --deny 127.0.0.1: 300 connects over about 2.5 s, spread by the kernel over
/// the three workers (each worker's own stats line counts some), are logged by the
/// supervisor alone in at most one line a second, with counts that add up to 300.
#[test]
fn refusals_of_every_worker_are_one_line_a_second() {
    let Some(p) = Pool::start("epoll", 3, &["--deny", "127.0.0.1"]) else {
        return;
    };
    let mark = p.d.mark();
    const FLOOD: u64 = 300;
    let t0 = Instant::now();
    for i in 0..FLOOD {
        let s = p.d.connect();
        // Denied: closed with nothing sent.
        if ping(&s, b"x").is_ok() {
            p.d.fail("a denied client was echoed");
        }
        let next = t0 + Duration::from_millis(8 * (i + 1));
        thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    let lines = refusal_lines(&p, mark, FLOOD);
    let spread = t0.elapsed();
    if lines.iter().any(|l| l.2 != "denied") {
        p.d.fail(&format!("want only (denied) lines: {lines:?}"));
    }
    let most = spread.as_secs() + 2;
    if lines.len() as u64 > most {
        p.d.fail(&format!(
            "{} lines for a {spread:?} flood; want at most {most}: {lines:?}",
            lines.len()
        ));
    }
    // Lines of one reason are a second apart (the log's clock may round a few ms).
    for w in lines.windows(2) {
        if w[1].0 < w[0].0 + 950 {
            p.d.fail(&format!("two lines less than a second apart: {lines:?}"));
        }
    }
    for k in 1..=3 {
        let s = p.worker_stats(k);
        if s["denied"] == 0 {
            p.d.fail(&format!("worker {k} refused nothing: {s:?}"));
        }
    }
    let t = p.totals();
    assert_eq!(t["denied"], FLOOD, "{t:?}");
}

/// The counts a dying worker had not yet been asked for are not lost: --max-clients 1 on
/// 2 workers, clients held on both, a flood refused, then SIGTERM at once: the lines
/// written by the time the supervisor exits add up to every refusal.
#[test]
fn refusals_are_all_logged_by_the_time_the_supervisor_exits() {
    let Some(mut p) = Pool::start("poll", 2, &["--max-clients", "1"]) else {
        return;
    };
    // One held client per worker (found by its own stats line), so every later one is over.
    let mut held = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    while (1..=2).any(|k| p.worker_stats(k)["open"] == 0) {
        let s = p.d.connect();
        if ping(&s, b"in").is_ok() {
            held.push(s);
        }
        if Instant::now() > deadline {
            p.d.fail("could not hold a client on each worker");
        }
    }
    // (Holding may have cost a few refusals already: the log counts those too.)
    let refused_before: u64 = (1..=2).map(|k| p.worker_stats(k)["rejected"]).sum();
    const FLOOD: u64 = 50;
    for _ in 0..FLOOD {
        let s = p.d.connect();
        if ping(&s, b"x").is_ok() {
            p.d.fail("a client over --max-clients was echoed");
        }
    }
    drop(held);
    p.d.terminate(PATIENCE);
    let text = p.d.stderr();
    let total: u64 = text
        .lines()
        .filter(|l| l.contains("refused "))
        .map(|l| {
            parse(l)
                .filter(|l| l.2 == "max-clients")
                .unwrap_or_else(|| p.d.fail(&format!("unexpected refusal line {l:?}")))
                .1
        })
        .sum();
    assert_eq!(total, FLOOD + refused_before, "{}", p.d.describe());
}
