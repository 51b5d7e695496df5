//! The exposition: HELP/TYPE before each family's samples, each family once, escaping,
//! every counter of the stats line, and per-worker counters that never go down when a
//! worker is replaced.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::*;
use crate::serve::metrics::Generations;
use crate::shared::{Counter, Region};

fn view() -> View {
    View {
        backend: "epoll",
        pid: 42,
        start_time: 1_700_000_000.25,
        uptime: Duration::from_secs(9),
        open: 3,
        totals: Totals {
            accepted: 10,
            rejected: 8,
            bytes_in: 4096,
            bytes_out: 4000,
            denied: 2,
            limited: 1,
            datagrams_in: 5,
            datagrams_out: 4,
            dropped: 1,
            max_clients: 3,
            table_full: 1,
            backend_limit: 1,
            proxy: 1,
            dropped_by: [0, 0, 0, 0, 0, 1],
        },
        reloads: 0,
        workers: Vec::new(),
    }
}

/// name{labels} -> value, and each family's TYPE, checking the text's structure on the way:
/// every sample belongs to the family whose HELP and TYPE came just before it.
fn samples(text: &str) -> (HashMap<String, f64>, HashMap<String, String>) {
    let (mut values, mut types) = (HashMap::new(), HashMap::new());
    let mut family: Option<String> = None;
    let mut helped = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap().to_string();
            assert!(!types.contains_key(&name), "{name} appears twice");
            helped = Some(name);
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert_eq!(helped.as_deref(), Some(name), "TYPE right after its HELP");
            types.insert(name.to_string(), kind.to_string());
            family = Some(name.to_string());
        } else {
            let (series, value) = line.rsplit_once(' ').unwrap();
            let name = series.split('{').next().unwrap();
            assert_eq!(family.as_deref(), Some(name), "{line}: outside its family");
            let value: f64 = value.parse().unwrap();
            assert!(
                values.insert(series.to_string(), value).is_none(),
                "{line} twice"
            );
        }
    }
    assert!(text.ends_with('\n'));
    (values, types)
}

#[test]
fn every_family_has_help_and_type_and_the_stats_line_counters() {
    let text = text(&view());
    let (v, types) = samples(&text);
    for (name, kind) in &types {
        assert_eq!(
            kind.as_str() == "counter",
            name.ends_with("_total"),
            "{name}"
        );
        assert!(name.starts_with("echo_mux_"));
    }
    let version = env!("CARGO_PKG_VERSION");
    let info = format!("echo_mux_build_info{{version=\"{version}\",backend=\"epoll\"}}");
    assert_eq!(v[&info], 1.0);
    assert_eq!(v["echo_mux_connections_open"], 3.0);
    assert_eq!(v["echo_mux_connections_accepted_total"], 10.0);
    assert_eq!(v["echo_mux_received_bytes_total"], 4096.0);
    assert_eq!(v["echo_mux_sent_bytes_total"], 4000.0);
    assert_eq!(
        v["echo_mux_datagrams_dropped_total{reason=\"other\"}"], 1.0,
        "the reasons add up to the stats line's dropped"
    );
    assert_eq!(
        v["echo_mux_datagrams_dropped_total{reason=\"loop-port\"}"],
        0.0
    );
    assert_eq!(v["echo_mux_reloads_total"], 0.0);
    assert_eq!(v["echo_mux_start_time_seconds"], 1_700_000_000.25);
    let rejected: f64 = v
        .iter()
        .filter(|(k, _)| k.starts_with("echo_mux_connections_rejected_total{"))
        .map(|(_, n)| n)
        .sum();
    assert_eq!(
        rejected, 8.0,
        "the reasons add up to the stats line's rejected"
    );
    assert_eq!(
        v["echo_mux_connections_rejected_total{reason=\"proxy\"}"], 1.0,
        "a bad PROXY header is a reason of its own (SPEC §12)"
    );
    assert_eq!(
        v["echo_mux_connections_rejected_total{reason=\"max-clients\"}"],
        3.0
    );
    assert_eq!(
        (
            v["echo_mux_connections_rejected_total{reason=\"limited\"}"],
            v["echo_mux_connections_rejected_total{reason=\"table-full\"}"],
        ),
        (0.0, 1.0),
        "table-full is its own reason, not counted again under limited"
    );
    assert_eq!(
        v["echo_mux_datagrams_dropped_total{reason=\"loop-detected\"}"],
        0.0
    );
    assert!(
        !text.contains("worker"),
        "no per-worker series without workers"
    );
}

#[test]
fn label_values_and_help_are_escaped() {
    assert_eq!(escape_label("a\\b\"c\nd"), r#"a\\b\"c\nd"#);
    assert_eq!(escape_help("x\\y\nz \"q\""), r#"x\\y\nz "q""#);
    let mut out = String::new();
    Family::new(&mut out, "echo_mux_x", "gauge", "line one\nline two")
        .sample(&[("path", "C:\\tmp\\\"x\"")], 1);
    assert_eq!(
        out,
        "# HELP echo_mux_x line one\\nline two\n# TYPE echo_mux_x gauge\necho_mux_x{path=\"C:\\\\tmp\\\\\\\"x\\\"\"} 1\n"
    );
}

#[test]
fn status_is_one_json_object_with_totals_and_workers() {
    let mut v = view();
    v.workers.push(WorkerView {
        number: 1,
        pid: Some(77),
        open: 1,
        totals: Totals {
            accepted: 4,
            ..Totals::default()
        },
        last_turn: Duration::from_millis(250),
        restarts: 2,
    });
    let j: serde_json::Value = serde_json::from_str(&status_json(&v)).unwrap();
    assert_eq!(j["backend"], "epoll");
    assert_eq!(j["pid"], 42);
    assert_eq!(j["totals"]["accepted"], 10);
    assert_eq!(j["totals"]["rejected_by_reason"]["denied"], 2);
    assert_eq!(j["totals"]["rejected_by_reason"]["proxy"], 1);
    assert_eq!(j["workers"][0]["pid"], 77);
    assert_eq!(j["workers"][0]["restarts"], 2);
    assert_eq!(j["workers"][0]["last_turn_seconds"], 0.25);
}

/// A worker replaced twice: its per-number counters and the totals only ever grow, and the
/// per-worker series add up to the totals.
#[test]
fn counters_never_decrease_across_worker_replacement() {
    let region = Region::map(2, 0).unwrap();
    let mut generations = Generations::new(2);
    generations.spawned(1);
    generations.spawned(2);
    let now = Instant::now();
    let scrape = |g: &Generations| {
        let workers = g.views(region, &[Some(10), Some(11)], now);
        let v = View {
            backend: "poll",
            totals: Totals::from(&region.totals()),
            workers,
            ..View::default()
        };
        samples(&text(&v)).0
    };
    let mut last: HashMap<String, f64> = HashMap::new();
    for round in 0..3 {
        let (a, b) = (region.seat(1), region.seat(2));
        a.slot.add(Counter::Accepted, 5);
        a.slot.add(Counter::BytesIn, 100);
        a.slot.set(Counter::Open, 1);
        b.slot.add(Counter::Accepted, 1);
        let now_values = scrape(&generations);
        for (k, v) in &now_values {
            if k.contains("_total") {
                assert!(*v >= last.get(k).copied().unwrap_or(0.0), "{k} went down");
            }
        }
        let per_worker: f64 = now_values
            .iter()
            .filter(|(k, _)| k.starts_with("echo_mux_worker_connections_accepted_total{"))
            .map(|(_, v)| v)
            .sum();
        assert_eq!(
            per_worker,
            now_values["echo_mux_connections_accepted_total"]
        );
        assert_eq!(per_worker, f64::from(6 * (round + 1)));
        last = now_values;
        // Worker 1 dies and is replaced.
        generations.retire(region, 1);
        generations.spawned(1);
        assert_eq!(
            scrape(&generations)["echo_mux_worker_restarts_total{worker=\"1\"}"],
            f64::from(round + 1)
        );
        assert_eq!(
            scrape(&generations)["echo_mux_worker_connections_open{worker=\"1\"}"],
            0.0
        );
    }
}
