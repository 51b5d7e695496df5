//! The two pages: the Prometheus text format (exposition format 0.0.4: `# HELP`, `# TYPE`,
//! then the samples of each family together) and the `/status` JSON object, both from one
//! [`View`] of the counters. The counters are the SIGUSR1 line's (SPEC §5).
//!
//! Families without a `worker` label are the daemon's exact totals (earlier generations of
//! replaced workers included). With `--workers`, the `echo_mux_worker_*` families carry one
//! series per worker number; a replaced worker's counts stay with its number, so those
//! counters never go down either, and they add up to the totals.

use std::fmt::Write;
use std::time::Duration;

use super::exchange::{Answer, Page};
use crate::stats::{DropReason, Totals};

/// Everything the pages show, read at one moment by the loop that serves them.
#[derive(Clone, Debug, Default)]
pub struct View {
    /// `epoll`, `poll` or `select`.
    pub backend: &'static str,
    /// The daemon's pid (the supervisor's with `--workers`).
    pub pid: u32,
    /// When the daemon started, in seconds since the Unix epoch.
    pub start_time: f64,
    pub uptime: Duration,
    /// Connections open now, over all workers.
    pub open: u64,
    pub totals: Totals,
    /// Reloads since the start (SPEC §13).
    pub reloads: u64,
    /// One per worker number with `--workers`; empty for the one-process daemon.
    pub workers: Vec<WorkerView>,
}

/// One worker number with `--workers`.
#[derive(Clone, Debug, Default)]
pub struct WorkerView {
    /// 1..=N.
    pub number: usize,
    /// The running process, if one is.
    pub pid: Option<u32>,
    pub open: u64,
    /// Every generation of this number together.
    pub totals: Totals,
    /// Time since its loop last turned (SPEC §8's heartbeat).
    pub last_turn: Duration,
    /// Replacements started for this number.
    pub restarts: u64,
}

/// A `reason` label value and how to read its count.
type Reason = (&'static str, fn(&Totals) -> u64);

/// The reasons a connection (or datagram) was refused, as `reason` label values. One more
/// reason is one more line here.
const REJECTED: [Reason; 6] = [
    ("max-clients", |t| t.max_clients),
    ("denied", |t| t.denied),
    ("limited", |t| t.limited - t.table_full),
    ("table-full", |t| t.table_full),
    ("backend-limit", |t| t.backend_limit),
    ("proxy", |t| t.proxy),
];

/// The answer to a GET of `page`.
pub fn answer(page: Page, view: &View) -> Answer {
    match page {
        Page::Metrics => Answer {
            code: 200,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body: text(view).into_bytes(),
        },
        Page::Status => Answer {
            code: 200,
            content_type: "application/json",
            body: status_json(view).into_bytes(),
        },
    }
}

/// One family: `# HELP`, `# TYPE`, then its samples.
struct Family<'a> {
    out: &'a mut String,
    name: &'static str,
}

impl<'a> Family<'a> {
    fn new(out: &'a mut String, name: &'static str, kind: &str, help: &str) -> Family<'a> {
        let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(out, "# TYPE {name} {kind}");
        Family { out, name }
    }

    fn sample(&mut self, labels: &[(&str, &str)], value: impl std::fmt::Display) -> &mut Self {
        self.out.push_str(self.name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape_label(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
        self
    }
}

/// A per-worker counter or gauge: one sample per worker number.
fn per_worker(
    out: &mut String,
    view: &View,
    name: &'static str,
    kind: &str,
    help: &str,
    value: impl Fn(&WorkerView) -> String,
) {
    if view.workers.is_empty() {
        return;
    }
    let mut f = Family::new(out, name, kind, help);
    for w in &view.workers {
        f.sample(&[("worker", &w.number.to_string())], value(w));
    }
}

/// The Prometheus text format.
pub fn text(view: &View) -> String {
    let mut out = String::with_capacity(4096 + 1024 * view.workers.len());
    let t = &view.totals;
    let o = &mut out;
    Family::new(
        o,
        "echo_mux_build_info",
        "gauge",
        "The running echo-mux: its version and readiness backend (always 1).",
    )
    .sample(
        &[
            ("version", crate::version::version()),
            ("backend", view.backend),
        ],
        1,
    );
    Family::new(
        o,
        "echo_mux_start_time_seconds",
        "gauge",
        "When the daemon started, in seconds since the Unix epoch.",
    )
    .sample(&[], format!("{:.3}", view.start_time));
    Family::new(
        o,
        "echo_mux_connections_open",
        "gauge",
        "TCP and unix-socket connections open now.",
    )
    .sample(&[], view.open);
    Family::new(
        o,
        "echo_mux_connections_accepted_total",
        "counter",
        "Connections accepted and served (the stats line's accepted).",
    )
    .sample(&[], t.accepted);
    let mut f = Family::new(
        o,
        "echo_mux_connections_rejected_total",
        "counter",
        "Connections closed at once, and UDP datagrams refused by the access lists or limits, by reason (they add up to the stats line's rejected).",
    );
    for (reason, value) in REJECTED {
        f.sample(&[("reason", reason)], value(t));
    }
    let mut f = Family::new(
        o,
        "echo_mux_datagrams_dropped_total",
        "counter",
        "UDP datagrams not answered, by reason (they add up to the stats line's dropped).",
    );
    for (i, (_, _, reason)) in DropReason::ALL.iter().enumerate() {
        f.sample(&[("reason", reason)], t.dropped_by[i]);
    }
    let simple: [(&'static str, &str, u64); 4] = [
        (
            "echo_mux_received_bytes_total",
            "Payload bytes received over TCP, unix sockets and UDP (bytes_in).",
            t.bytes_in,
        ),
        (
            "echo_mux_sent_bytes_total",
            "Payload bytes the kernel took for sending (bytes_out).",
            t.bytes_out,
        ),
        (
            "echo_mux_datagrams_received_total",
            "UDP datagrams received (datagrams_in).",
            t.datagrams_in,
        ),
        (
            "echo_mux_datagrams_sent_total",
            "UDP replies sent (datagrams_out).",
            t.datagrams_out,
        ),
    ];
    for (name, help, value) in simple {
        Family::new(o, name, "counter", help).sample(&[], value);
    }
    Family::new(
        o,
        "echo_mux_reloads_total",
        "counter",
        "Reloads (SIGHUP) since the start.",
    )
    .sample(&[], view.reloads);
    if !view.workers.is_empty() {
        Family::new(
            o,
            "echo_mux_workers",
            "gauge",
            "Worker processes running now.",
        )
        .sample(&[], view.workers.iter().filter(|w| w.pid.is_some()).count());
    }
    per_worker(
        o,
        view,
        "echo_mux_worker_restarts_total",
        "counter",
        "Replacements started for this worker number.",
        |w| w.restarts.to_string(),
    );
    per_worker(
        o,
        view,
        "echo_mux_worker_connections_open",
        "gauge",
        "Connections this worker has open now.",
        |w| w.open.to_string(),
    );
    per_worker(
        o,
        view,
        "echo_mux_worker_connections_accepted_total",
        "counter",
        "Connections accepted by this worker number, every generation together.",
        |w| w.totals.accepted.to_string(),
    );
    per_worker(
        o,
        view,
        "echo_mux_worker_received_bytes_total",
        "counter",
        "Payload bytes received by this worker number.",
        |w| w.totals.bytes_in.to_string(),
    );
    per_worker(
        o,
        view,
        "echo_mux_worker_sent_bytes_total",
        "counter",
        "Payload bytes sent by this worker number.",
        |w| w.totals.bytes_out.to_string(),
    );
    per_worker(
        o,
        view,
        "echo_mux_worker_last_turn_age_seconds",
        "gauge",
        "Seconds since this worker's loop last turned (a worker is judged wedged after 5).",
        |w| format!("{:.3}", w.last_turn.as_secs_f64()),
    );
    out
}

/// `# HELP` text: backslash and newline escaped.
fn escape_help(s: &str) -> String {
    s.replace('\\', r"\\").replace('\n', r"\n")
}

/// A label value: backslash, double quote and newline escaped.
fn escape_label(s: &str) -> String {
    s.replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

/// The `/status` object.
pub fn status_json(view: &View) -> String {
    use serde_json::{json, Map, Value};
    let counts = |open: u64, t: &Totals| {
        let mut dropped = Map::new();
        for (i, (_, _, reason)) in DropReason::ALL.iter().enumerate() {
            dropped.insert(reason.to_string(), json!(t.dropped_by[i]));
        }
        let mut rejected = Map::new();
        for (reason, value) in REJECTED {
            rejected.insert(reason.to_string(), json!(value(t)));
        }
        json!({
            "open": open,
            "accepted": t.accepted,
            "rejected": t.rejected,
            "rejected_by_reason": rejected,
            "bytes_in": t.bytes_in,
            "bytes_out": t.bytes_out,
            "datagrams_in": t.datagrams_in,
            "datagrams_out": t.datagrams_out,
            "dropped": t.dropped,
            "dropped_by_reason": dropped,
        })
    };
    let workers: Vec<Value> = view
        .workers
        .iter()
        .map(|w| {
            let mut o = counts(w.open, &w.totals);
            let m = o.as_object_mut().expect("an object");
            m.insert("worker".into(), json!(w.number));
            m.insert("pid".into(), json!(w.pid));
            m.insert(
                "last_turn_seconds".into(),
                json!((w.last_turn.as_secs_f64() * 1000.0).round() / 1000.0),
            );
            m.insert("restarts".into(), json!(w.restarts));
            o
        })
        .collect();
    json!({
        "version": crate::version::version(),
        "backend": view.backend,
        "pid": view.pid,
        "start_time_seconds": view.start_time,
        "uptime_seconds": view.uptime.as_secs(),
        "reloads": view.reloads,
        "totals": counts(view.open, &view.totals),
        "workers": workers,
    })
    .to_string()
}

#[cfg(test)]
mod tests;
