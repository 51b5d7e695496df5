//! `--proxy-from` with `--workers`: every worker waits for headers and decides for the
//! client they name; the supervisor's refusal line counts every worker's `proxy` refusals.

use std::io::Write;
use std::time::Duration;

use super::{refused, served_after, sock, v1, v2};
use crate::workers::pool::Pool;

for_each_backend!(workers_wait_for_headers_too);
/// --workers 2 --proxy-from 127.0.0.1 --max-per-source 1: clients named by headers are
/// limited for the daemon as a whole; bad headers are refused in whichever worker they land
/// and logged once by the supervisor as `proxy`.
fn workers_wait_for_headers_too(backend: &'static str) {
    let args = ["--proxy-from", "127.0.0.1", "--max-per-source", "1"];
    let Some(p) = Pool::start(backend, 2, &args) else {
        return;
    };
    let d = &p.d;
    let mark = d.mark();
    let mut held = Vec::new();
    for x in 1..=8u16 {
        let mut s = d.connect();
        served_after(d, &mut s, &v2(sock(&format!("192.0.2.{x}:{x}"))), b"one");
        held.push(s);
    }
    for x in 1..=8u16 {
        let s = d.connect();
        (&s).write_all(&v1(sock(&format!("192.0.2.{x}:9{x}"))))
            .unwrap();
        refused(d, &s, "a second connection of one client, in either worker");
    }
    for _ in 0..6 {
        let s = d.connect();
        (&s).write_all(b"not a header\r\n").unwrap();
        refused(d, &s, "no header");
    }
    let totals = p.totals_until(|t| t.get("rejected") == Some(&14));
    if (totals["limited"], totals["accepted"]) != (8, 8) {
        d.fail(&format!(
            "want limited=8 accepted=8 over both workers: {totals:?}"
        ));
    }
    d.expect_line(
        mark,
        "(proxy), e.g. from 127.0.0.1",
        Duration::from_secs(15),
    );
    drop(held);
}
