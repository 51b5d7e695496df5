//! `--log-format json` (SPEC §12): one JSON object per line, for container log collectors:
//! `{"ts":"2026-01-02T03:04:05.678Z","level":"info","msg":"…", …fields}`.
//!
//! The fields are read off the message text, in this one place, instead of being passed as
//! `log` key-values at every call site. The text line stays the single source of what a line
//! says, so the two formats cannot tell different facts, and the call sites (`info!("{line}")`
//! across server/, refusal.rs, supervisor/, udp/) stay as readable as they are. The price is
//! that only the known shapes below yield fields; any other line is still a complete object
//! with its whole text in `msg`. `msg` is the text line's message without its `worker K: ` /
//! `supervisor: ` prefix, which becomes fields:
//!
//! | shape | fields |
//! |---|---|
//! | prefix `worker K: ` / `supervisor: ` | `role` (`"worker"`, `"supervisor"`), `worker` |
//! | `stats: key=value …` (SPEC §5) | every key; numbers as numbers, `uptime` in seconds |
//! | `listening on ADDR (backend NAME)` | `listen`, `backend` |
//! | `worker K …` (the supervisor about a worker), `(pid P)` | `worker`, `pid` |
//! | `closed PEER after S s: in=I out=O (REASON)` | `peer`, `duration` (s), `bytes_in`, `bytes_out`, `reason` |
//! | `conn ID (fd N) from PEER closed after …`, `… accepted from PEER` | `conn`, `fd`, `peer`, … |
//! | `refused N connections … (REASON), e.g. from PEER` | `connections`, `datagrams`, `reason`, `peer` |
//! | `…, e.g. from PEER` (refusals, UDP loop protection) | `peer` |
//!
//! A key appears once: the first value found wins (a worker's stats line says `worker=K`
//! like its prefix does).

use std::time::{SystemTime, UNIX_EPOCH};

/// A field's value: a JSON number (checked to be one) or a string.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Value<'a> {
    Num(&'a str),
    Str(&'a str),
}

/// Append the JSON object for one record to `out` (no newline).
pub fn render(out: &mut String, ts: &str, level: log::Level, prefix: &str, msg: &str) {
    out.push_str("{\"ts\":");
    string(out, ts);
    out.push_str(",\"level\":");
    string(out, level_name(level));
    out.push_str(",\"msg\":");
    string(out, msg);
    let mut fields = Vec::new();
    prefix_fields(prefix, &mut fields);
    message_fields(msg, &mut fields);
    let mut seen = vec!["ts", "level", "msg"];
    for (key, value) in fields {
        if seen.contains(&key) {
            continue;
        }
        seen.push(key);
        out.push(',');
        string(out, key);
        out.push(':');
        match value {
            Value::Num(n) => out.push_str(n),
            Value::Str(s) => string(out, s),
        }
    }
    out.push('}');
}

/// `error`, `warn`, `info`, `debug`, `trace`.
pub fn level_name(level: log::Level) -> &'static str {
    match level {
        log::Level::Error => "error",
        log::Level::Warn => "warn",
        log::Level::Info => "info",
        log::Level::Debug => "debug",
        log::Level::Trace => "trace",
    }
}

/// `s` as a JSON string: quotes, backslash and every control character escaped. A `&str`
/// is valid UTF-8, so everything else is written as it is (JSON text is UTF-8).
fn string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The current time as RFC 3339 UTC with milliseconds: `2026-01-02T03:04:05.678Z`.
pub fn now() -> String {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(since.as_secs(), since.subsec_millis())
}

/// Seconds since the epoch (and milliseconds) as RFC 3339 UTC.
fn rfc3339(secs: u64, millis: u32) -> String {
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Days to a civil date (Howard Hinnant's algorithm, for days >= 0).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    let (h, m, s) = (rest / 3600, rest % 3600 / 60, rest % 60);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{millis:03}Z")
}

/// A JSON number as Rust prints `u64` and `{:.2}` floats: digits, at most one `.`, no
/// leading zero before another digit.
fn number(s: &str) -> Option<Value<'_>> {
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (s, None),
    };
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    let ok = digits(int) && !(int.len() > 1 && int.starts_with('0')) && frac.is_none_or(digits);
    ok.then_some(Value::Num(s))
}

fn num_or_str(s: &str) -> Value<'_> {
    number(s).unwrap_or(Value::Str(s))
}

fn prefix_fields<'a>(prefix: &'a str, fields: &mut Vec<(&'a str, Value<'a>)>) {
    let prefix = prefix.trim_end().trim_end_matches(':');
    if prefix == "supervisor" {
        fields.push(("role", Value::Str("supervisor")));
    } else if let Some(k) = prefix.strip_prefix("worker ").and_then(number) {
        fields.push(("role", Value::Str("worker")));
        fields.push(("worker", k));
    }
}

fn message_fields<'a>(msg: &'a str, fields: &mut Vec<(&'a str, Value<'a>)>) {
    if let Some(rest) = msg.strip_prefix("stats: ") {
        for (key, value) in rest.split(' ').filter_map(|kv| kv.split_once('=')) {
            let value = match key {
                "uptime" => num_or_str(value.strip_suffix('s').unwrap_or(value)),
                _ => num_or_str(value),
            };
            fields.push((key, value));
        }
        return;
    }
    if let Some(rest) = msg.strip_prefix("listening on ") {
        if let Some((addr, backend)) = rest.rsplit_once(" (backend ") {
            fields.push(("listen", Value::Str(addr)));
            fields.push(("backend", Value::Str(backend.trim_end_matches(')'))));
        }
        return;
    }
    if let Some(rest) = msg.strip_prefix("worker ") {
        let k = rest.split([' ', ':']).next().unwrap_or("");
        if let Some(k) = number(k) {
            fields.push(("worker", k));
        }
    }
    if let Some((_, rest)) = msg.split_once("(pid ") {
        if let Some(pid) = rest.split(')').next().and_then(number) {
            fields.push(("pid", pid));
        }
    }
    if let Some(rest) = msg.strip_prefix("closed ") {
        if let Some((peer, tail)) = rest.split_once(" after ") {
            fields.push(("peer", Value::Str(peer)));
            closed_tail(tail, fields);
        }
        return;
    }
    if let Some(rest) = msg.strip_prefix("conn ") {
        let mut words = rest.splitn(4, ' ');
        if let (Some(id), Some("(fd"), Some(fd)) = (words.next(), words.next(), words.next()) {
            if let (Some(id), Some(fd)) = (number(id), number(fd.trim_end_matches(')'))) {
                fields.push(("conn", id));
                fields.push(("fd", fd));
            }
        }
        if let Some((_, rest)) = rest.split_once(" accepted from ") {
            fields.push(("peer", Value::Str(rest)));
        } else if let Some((_, rest)) = rest.split_once(" from ") {
            if let Some((peer, tail)) = rest.split_once(" closed after ") {
                fields.push(("peer", Value::Str(peer)));
                closed_tail(tail, fields);
            }
        }
        return;
    }
    if let Some(rest) = msg.strip_prefix("refused ") {
        refusal(rest, fields);
    }
    if let Some((_, rest)) = msg.rsplit_once(", e.g. from ") {
        let peer = rest.split(' ').next().unwrap_or(rest);
        if !peer.is_empty() && peer != "a" {
            fields.push(("peer", Value::Str(peer)));
        }
    }
}

/// `0.25s: in=12 out=12 (client closed)`: `duration`, `bytes_in`, `bytes_out`, `reason`.
fn closed_tail<'a>(tail: &'a str, fields: &mut Vec<(&'a str, Value<'a>)>) {
    let Some((secs, rest)) = tail.split_once("s: ") else {
        return;
    };
    if let Some(secs) = number(secs) {
        fields.push(("duration", secs));
    }
    for word in rest.split(' ') {
        if let Some(n) = word.strip_prefix("in=").and_then(number) {
            fields.push(("bytes_in", n));
        } else if let Some(n) = word.strip_prefix("out=").and_then(number) {
            fields.push(("bytes_out", n));
        }
    }
    if let Some((_, reason)) = rest.split_once(" (") {
        fields.push((
            "reason",
            Value::Str(reason.strip_suffix(')').unwrap_or(reason)),
        ));
    }
}

/// `3 connections and 1 datagram in the last 1s (denied), e.g. from …` (refusal.rs).
fn refusal<'a>(rest: &'a str, fields: &mut Vec<(&'a str, Value<'a>)>) {
    let Some((counts, tail)) = rest.split_once(" in the last ") else {
        return;
    };
    for part in counts.split(" and ") {
        let Some((n, what)) = part.split_once(' ') else {
            continue;
        };
        let Some(n) = number(n) else { continue };
        if what.starts_with("connection") {
            fields.push(("connections", n));
        } else if what.starts_with("datagram") {
            fields.push(("datagrams", n));
        }
    }
    let reason = tail.split_once(" (").and_then(|(_, r)| r.split_once("),"));
    if let Some((reason, _)) = reason {
        fields.push(("reason", Value::Str(reason)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use log::Level;

    fn line(prefix: &str, msg: &str) -> serde_json::Map<String, serde_json::Value> {
        let mut out = String::new();
        render(
            &mut out,
            "2026-01-02T03:04:05.678Z",
            Level::Info,
            prefix,
            msg,
        );
        match serde_json::from_str(&out) {
            Ok(serde_json::Value::Object(map)) => map,
            other => panic!("{out:?} is not one JSON object: {other:?}"),
        }
    }

    #[test]
    fn escaping_survives_any_text() {
        let nasty =
            "quote \" backslash \\ newline \n tab \t bell \u{7} del \u{7f} nul \0 é ✓ \u{2028}";
        let map = line("", nasty);
        assert_eq!(map["msg"], nasty);
        let mut out = String::new();
        render(&mut out, "t", Level::Warn, "", nasty);
        assert!(!out.contains('\n') && !out.contains('\0'), "{out:?}");
        assert_eq!(line("", "x")["level"], "info");
    }

    #[test]
    fn stats_fields_are_numbers() {
        let msg = "stats: backend=epoll open=3 accepted=10 rejected=0 bytes_in=4096 bytes_out=4096 uptime=12s worker=2 denied=1 limited=0";
        let map = line("worker 2: ", msg);
        assert_eq!(map["msg"], msg);
        assert_eq!(map["backend"], "epoll");
        for (k, v) in [
            ("open", 3),
            ("accepted", 10),
            ("rejected", 0),
            ("bytes_in", 4096),
        ] {
            assert_eq!(map[k], v, "{k}");
        }
        assert_eq!(map["uptime"], 12);
        assert_eq!(map["worker"], 2);
        assert_eq!(map["role"], "worker");
        assert_eq!(map["denied"], 1);
        let sup = line("supervisor: ", "stats: backend=poll open=0 workers=4");
        assert_eq!(
            (&sup["role"], &sup["workers"]),
            (&"supervisor".into(), &4.into())
        );
        assert!(!sup.contains_key("worker"));
    }

    #[test]
    fn peers_and_other_shapes() {
        let m = line("", "listening on [::1]:5000 (backend select)");
        assert_eq!(
            (&m["listen"], &m["backend"]),
            (&"[::1]:5000".into(), &"select".into())
        );
        let m = line(
            "",
            "closed 127.0.0.1:40000 after 0.25s: in=12 out=10 (client closed)",
        );
        assert_eq!(m["peer"], "127.0.0.1:40000");
        assert_eq!(m["duration"], 0.25);
        assert_eq!((&m["bytes_in"], &m["bytes_out"]), (&12.into(), &10.into()));
        assert_eq!(m["reason"], "client closed");
        let m = line(
            "",
            "conn 7 (fd 12) from unix:/run/e.sock closed after 1.00s: in=0 out=0 (idle)",
        );
        assert_eq!(
            (&m["conn"], &m["fd"], &m["peer"]),
            (&7.into(), &12.into(), &"unix:/run/e.sock".into())
        );
        let m = line("", "conn 7 (fd 12) accepted from 10.0.0.1:9");
        assert_eq!(m["peer"], "10.0.0.1:9");
        let m = line(
            "",
            "refused 3 connections and 1 datagram in the last 1s (rate-per-source: per-source table full), e.g. from 192.0.2.7",
        );
        assert_eq!((&m["connections"], &m["datagrams"]), (&3.into(), &1.into()));
        assert_eq!(m["reason"], "rate-per-source: per-source table full");
        assert_eq!(m["peer"], "192.0.2.7");
        let m = line(
            "",
            "refused 1 connection in the last 1s (denied), e.g. from a unix-socket client",
        );
        assert!(!m.contains_key("peer"));
        let m = line(
            "supervisor: ",
            "worker 2 (pid 4242) killed by SIGKILL; restarting",
        );
        assert_eq!((&m["worker"], &m["pid"]), (&2.into(), &4242.into()));
        // Not a number after all: a string, never invalid JSON.
        let m = line("", "stats: open=007 uptime=1h");
        assert_eq!((&m["open"], &m["uptime"]), (&"007".into(), &"1h".into()));
    }

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400 + 86_399, 7), "2000-02-29T23:59:59.007Z");
        assert_eq!(rfc3339(1_798_761_600, 999), "2027-01-01T00:00:00.999Z");
        assert_eq!(now().len(), "2026-01-02T03:04:05.678Z".len());
    }
}
