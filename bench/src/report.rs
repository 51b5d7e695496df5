//! Printing a run's outcome: a few aligned lines of text, or one JSON line.

use std::fmt::Write as _;

use crate::args::Config;
use crate::driver::Outcome;

/// The figures derived from an outcome.
struct Figures {
    rps: f64,
    mbps: f64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    max_us: f64,
    mean_us: f64,
}

fn figures(cfg: &Config, o: &Outcome) -> Figures {
    let secs = o.elapsed.as_secs_f64();
    let rps = if secs > 0.0 {
        o.requests as f64 / secs
    } else {
        0.0
    };
    let us = |q: f64| {
        if o.hist.is_empty() {
            0.0
        } else {
            o.hist.value_at_quantile(q) as f64 / 1e3
        }
    };
    Figures {
        rps,
        mbps: rps * cfg.size as f64 / 1e6,
        p50_us: us(0.5),
        p99_us: us(0.99),
        p999_us: us(0.999),
        max_us: if o.hist.is_empty() {
            0.0
        } else {
            o.hist.max() as f64 / 1e3
        },
        mean_us: if o.hist.is_empty() {
            0.0
        } else {
            o.hist.mean() / 1e3
        },
    }
}

/// Human-readable report.
pub fn text(cfg: &Config, o: &Outcome) -> String {
    let f = figures(cfg, o);
    let e = &o.errors;
    let mut s = String::new();
    let (what, unit, done) = if cfg.udp {
        ("datagrams", "datagrams/s", "answered")
    } else if cfg.churn {
        ("connections", "connections/s", "completed")
    } else {
        ("requests", "req/s", "answered")
    };
    if cfg.churn {
        let _ = writeln!(
            s,
            "target      {}: {} connection{} churning (connect, {} B echoed, close; again)",
            cfg.target,
            cfg.connections,
            plural(cfg.connections),
            cfg.size
        );
    } else if cfg.udp {
        let _ = writeln!(
            s,
            "target      {}/udp: {} socket{}, {} B datagrams, one outstanding each, reply timeout {} ms",
            cfg.target,
            cfg.connections,
            plural(cfg.connections),
            cfg.size,
            cfg.reply_timeout.as_millis()
        );
    } else {
        let _ = writeln!(
            s,
            "target      {}: {} connection{} + {} idle, {} B messages, pipeline {}",
            cfg.target,
            cfg.connections,
            plural(cfg.connections),
            cfg.idle,
            cfg.size,
            cfg.pipeline
        );
    }
    let _ = writeln!(
        s,
        "measured    {:.2} s after {:.2} s warmup",
        o.elapsed.as_secs_f64(),
        cfg.warmup.as_secs_f64()
    );
    let _ = writeln!(s, "{what:<11} {} {done}, {:.0} {unit}", o.requests, f.rps);
    let _ = writeln!(
        s,
        "throughput  {:.2} MB/s echoed (1 MB = 10^6 bytes)",
        f.mbps
    );
    let _ = writeln!(
        s,
        "latency     p50 {} us   p99 {} us   p99.9 {} us   max {} us   mean {} us",
        us(f.p50_us),
        us(f.p99_us),
        us(f.p999_us),
        us(f.max_us),
        us(f.mean_us)
    );
    if cfg.udp {
        let _ = writeln!(
            s,
            "errors      {} (wrong echoes {}, lost {}, socket errors {}); late replies {}",
            o.errors(),
            e.mismatches,
            e.lost,
            e.closed,
            e.late
        );
    } else {
        let _ = writeln!(
            s,
            "errors      {} (wrong echoes {}, connections closed {}, idle connections lost {})",
            o.errors(),
            e.mismatches,
            e.closed,
            e.idle_closed
        );
    }
    if let Some(pid) = cfg.server_pid {
        let per = if cfg.churn { "connection" } else { "request" };
        match server_cpu_us(o) {
            Some(us) => {
                let _ = writeln!(
                    s,
                    "server CPU  {us:.2} us per {per} (pid {pid}: user + system over the measured phase)"
                );
            }
            None => {
                let _ = writeln!(
                    s,
                    "server CPU  n/a (cannot read /proc/{pid}/stat, or nothing was answered)"
                );
            }
        }
    }
    if let Some(e) = &o.first_error {
        let _ = writeln!(s, "first error {e}");
    }
    if o.requests == 0 {
        let _ = writeln!(
            s,
            "warning     no {} was answered in the measured phase ({} unanswered)",
            if cfg.udp { "datagram" } else { "request" },
            o.unanswered
        );
    }
    if let Some(e) = &o.early_stop {
        let _ = writeln!(s, "stopped     early: {e}");
    }
    s
}

/// The --server-pid process's CPU time per answered request (per connection with --churn), in
/// microseconds.
fn server_cpu_us(o: &Outcome) -> Option<f64> {
    let cpu = o.server_cpu?;
    (o.requests > 0).then(|| cpu.as_secs_f64() * 1e6 / o.requests as f64)
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

fn us(v: f64) -> String {
    if v < 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

/// One JSON object on one line (no trailing newline).
pub fn json(cfg: &Config, o: &Outcome) -> String {
    let f = figures(cfg, o);
    let opt = |v: &Option<String>| v.as_deref().map_or("null".to_string(), json_str);
    format!(
        concat!(
            "{{\"addr\":{},\"connections\":{},\"idle\":{},\"size\":{},\"pipeline\":{},",
            "\"warmup_s\":{:.3},\"duration_s\":{:.3},\"elapsed_s\":{:.3},\"requests\":{},",
            "\"rps\":{:.1},\"mbps\":{:.3},\"p50_us\":{:.1},\"p99_us\":{:.1},\"p999_us\":{:.1},",
            "\"max_us\":{:.1},\"mean_us\":{:.1},\"errors\":{},\"mismatches\":{},\"closed\":{},",
            "\"idle_closed\":{},\"lost\":{},\"late\":{},\"unanswered\":{},",
            "\"first_error\":{},\"early_stop\":{},\"protocol\":\"{}\",\"reply_timeout_ms\":{},",
            "\"churn\":{},\"server_cpu_us_per_req\":{}}}"
        ),
        json_str(&cfg.target.to_string()),
        cfg.connections,
        cfg.idle,
        cfg.size,
        cfg.pipeline,
        cfg.warmup.as_secs_f64(),
        cfg.duration.as_secs_f64(),
        o.elapsed.as_secs_f64(),
        o.requests,
        f.rps,
        f.mbps,
        f.p50_us,
        f.p99_us,
        f.p999_us,
        f.max_us,
        f.mean_us,
        o.errors(),
        o.errors.mismatches,
        o.errors.closed,
        o.errors.idle_closed,
        o.errors.lost,
        o.errors.late,
        o.unanswered,
        opt(&o.first_error),
        opt(&o.early_stop),
        match cfg.target {
            _ if cfg.udp => "udp",
            crate::args::Target::Unix(_) => "unix",
            crate::args::Target::Tcp(_) => "tcp",
        },
        if cfg.udp {
            cfg.reply_timeout.as_millis().to_string()
        } else {
            "null".into()
        },
        cfg.churn,
        server_cpu_us(o).map_or("null".to_string(), |us| format!("{us:.3}")),
    )
}

fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::json_str;

    #[test]
    fn escapes() {
        assert_eq!(json_str("a\"b\\c\n\u{1}"), "\"a\\\"b\\\\c\\n\\u0001\"");
    }
}
