//! Log formats (SPEC §12, issue 17): `<N>` syslog priorities when stderr is the journal's
//! stream (JOURNAL_STREAM names stderr's device and inode), plain text when it names
//! something else; `--log-format json` lines that a JSON parser reads, carrying the facts of
//! the text lines (listening address, stats numbers, worker, peer).

use std::fs::File;
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{Map, Value};

use crate::util::{client, Daemon, TempDir, BIN};
use crate::workers::pool::{Pool, PATIENCE};

/// Kills the daemon if the test fails half-way.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Guard {
    fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.0.id() as i32), sig).unwrap();
    }

    /// Exit code within [`PATIENCE`].
    fn wait_exit(&mut self) -> Option<i32> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(st) = self.0.try_wait().unwrap() {
                return st.code();
            }
            assert!(
                Instant::now() < deadline,
                "still running after {PATIENCE:?}"
            );
            thread::sleep(Duration::from_millis(10));
        }
    }
}

/// `DEV:INODE` of `path`, as systemd writes JOURNAL_STREAM.
fn dev_ino(path: &Path) -> String {
    let m = std::fs::metadata(path).unwrap();
    format!("{}:{}", m.dev(), m.ino())
}

/// Start the daemon with stderr going to the file `err` and JOURNAL_STREAM set to
/// `journal`; only the variables a test means reach it.
fn start_into(err: &Path, journal: &str, args: &[&str]) -> Guard {
    let mut cmd = Command::new(BIN);
    for var in [
        "RUST_LOG",
        "RUST_BACKTRACE",
        "LISTEN_PID",
        "LISTEN_FDS",
        "LISTEN_FDNAMES",
        "NOTIFY_SOCKET",
        "WATCHDOG_USEC",
        "WATCHDOG_PID",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("JOURNAL_STREAM", journal)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::options().append(true).open(err).unwrap());
    Guard(cmd.spawn().unwrap())
}

/// The first complete line of `err` that contains `needle`, within [`PATIENCE`].
fn wait_file_line(err: &Path, needle: &str) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let text = std::fs::read_to_string(err).unwrap_or_default();
        let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
        if let Some(line) = complete.lines().find(|l| l.contains(needle)) {
            return line.to_string();
        }
        if Instant::now() > deadline {
            panic!("no line containing {needle:?} within {PATIENCE:?}; stderr:\n{text}");
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// `…listening on 127.0.0.1:PORT (backend …)` → the address.
fn listening_addr(line: &str) -> std::net::SocketAddr {
    let rest = &line[line.find("listening on ").unwrap() + "listening on ".len()..];
    rest[..rest.find(' ').unwrap()].parse().unwrap()
}

/// JOURNAL_STREAM naming the daemon's stderr: every line starts with its priority and has
/// no timestamp: `<7>` debug, `<6>` info, `<4>` the drain deadline's warning, `<3>` the
/// final error of a failed start. JSON lines get the same prefix before their object.
fn journal_lines_carry_their_priority(backend: &'static str) {
    let dir = TempDir::new("journal");
    let err = dir.join("stderr");
    File::create(&err).unwrap();
    let stream = dev_ino(&err);
    let args = ["-v", "--backend", backend, "--listen", "127.0.0.1:0"];
    let mut g = start_into(
        &err,
        &stream,
        &[&args[..], &["--shutdown-timeout", "0"]].concat(),
    );
    let line = wait_file_line(&err, "listening on ");
    assert!(line.starts_with("<6>listening on 127.0.0.1:"), "{line:?}");
    let s = client::connect(listening_addr(&line)).unwrap();
    client::ping(&s, b"journal\n").unwrap();
    let accepted = wait_file_line(&err, "accepted from");
    assert!(accepted.starts_with("<7>conn "), "{accepted:?}");
    g.signal(Signal::SIGUSR1);
    let stats = wait_file_line(&err, "stats: ");
    assert!(stats.starts_with("<6>stats: backend="), "{stats:?}");
    g.signal(Signal::SIGTERM);
    assert_eq!(g.wait_exit(), Some(0));
    drop(s);
    let text = std::fs::read_to_string(&err).unwrap();
    let cut = text.lines().find(|l| l.contains("that had not finished"));
    assert!(cut.is_some_and(|l| l.starts_with("<4>")), "{text}");
    for l in text.lines() {
        let prio = l.get(..3).unwrap_or("");
        assert!(
            ["<3>", "<4>", "<6>", "<7>"].contains(&prio) && !l.contains(" INFO "),
            "{l:?} in\n{text}"
        );
    }

    // The final error line of a failed start: error priority.
    std::fs::write(&err, "").unwrap();
    let bad = dir.join("missing/echo-mux.pid");
    let mut g = start_into(
        &err,
        &stream,
        &[&args[..], &["--pid-file", bad.to_str().unwrap()]].concat(),
    );
    assert_eq!(g.wait_exit(), Some(1));
    let text = std::fs::read_to_string(&err).unwrap();
    assert!(
        text.starts_with("<3>echo-mux: cannot write the pid file "),
        "{text:?}"
    );

    // JSON under the journal: `<N>` then one object.
    std::fs::write(&err, "").unwrap();
    let json = [&args[..], &["--log-format", "json"]].concat();
    let mut g = start_into(&err, &stream, &json);
    let line = wait_file_line(&err, "listening on ");
    let obj = line
        .strip_prefix("<6>")
        .unwrap_or_else(|| panic!("{line:?} has no <6>"));
    let obj = object(obj);
    assert_eq!(obj["level"], "info");
    assert_eq!(obj["backend"], backend);
    g.signal(Signal::SIGTERM);
    assert_eq!(g.wait_exit(), Some(0));
}
for_each_backend!(journal_lines_carry_their_priority);

/// JOURNAL_STREAM set, but naming another file (stderr was redirected by whoever started
/// us), or not `DEV:INODE` at all: ordinary text lines with timestamps.
#[test]
fn a_journal_stream_that_is_not_stderr_gives_text_lines() {
    let dir = TempDir::new("journal-other");
    let (err, other) = (dir.join("stderr"), dir.join("other"));
    File::create(&err).unwrap();
    File::create(&other).unwrap();
    for stream in [dev_ino(&other), "garbage".to_string()] {
        std::fs::write(&err, "").unwrap();
        let mut g = start_into(
            &err,
            &stream,
            &["--backend", "poll", "--listen", "127.0.0.1:0"],
        );
        let line = wait_file_line(&err, "listening on ");
        assert!(
            line.starts_with('[') && line.contains(" INFO ") && line.ends_with("(backend poll)"),
            "JOURNAL_STREAM={stream}: {line:?}"
        );
        g.signal(Signal::SIGTERM);
        assert_eq!(g.wait_exit(), Some(0));
        let text = std::fs::read_to_string(&err).unwrap();
        assert!(!text.contains("<6>"), "JOURNAL_STREAM={stream}:\n{text}");
    }
}

/// One line as a JSON object with string `ts`, `level`, `msg`; fails with the line.
fn object(line: &str) -> Map<String, Value> {
    match serde_json::from_str::<Value>(line) {
        Ok(Value::Object(map)) => {
            for key in ["ts", "level", "msg"] {
                assert!(map[key].is_string(), "{key} is not a string in {line:?}");
            }
            map
        }
        other => panic!("not one JSON object: {line:?} ({other:?})"),
    }
}

/// Every complete line of `text` is an object; the first whose `msg` contains `needle`.
fn find(text: &str, needle: &str) -> Option<Map<String, Value>> {
    let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    complete
        .lines()
        .map(object)
        .find(|o| o["msg"].as_str().is_some_and(|m| m.contains(needle)))
}

/// `--log-format json`, one process: the listening line, a refusal and a closed connection
/// with `peer`, and a stats line whose numbers are JSON numbers equal to the text's.
fn json_lines_carry_the_text_facts(backend: &'static str) {
    let args = [
        "--log-format",
        "json",
        "--log-connections",
        "--max-clients",
        "1",
    ];
    let Some(mut d) = Daemon::spawn(backend, &args) else {
        return;
    };
    let listening = find(&d.stderr(), "listening on ").unwrap();
    assert_eq!(listening["listen"], d.addr().to_string());
    assert_eq!(listening["backend"], backend);

    let mark = d.mark();
    let a = d.connect();
    d.expect_echo(&a, "the one client --max-clients allows");
    let mut b = d.connect();
    let _ = client::expect_eof(&mut b);
    let refused = d.expect_line(mark, "(max-clients)", PATIENCE);
    let refused = object(&refused);
    assert_eq!(refused["peer"], "127.0.0.1", "{refused:?}");
    assert_eq!(refused["reason"], "max-clients", "{refused:?}");
    assert_eq!(refused["connections"], 1, "{refused:?}");
    let local = a.local_addr().unwrap().to_string();
    drop(a);
    let closed = object(&d.expect_line(mark, &format!("closed {local}"), PATIENCE));
    assert_eq!(closed["peer"], local.as_str(), "{closed:?}");
    let sent = "hello from the one client --max-clients allows\n".len();
    assert_eq!(closed["bytes_in"], sent, "{closed:?}");

    let mark = d.mark();
    d.signal(Signal::SIGUSR1);
    let stats = object(&d.expect_line(mark, "stats: ", PATIENCE));
    let msg = stats["msg"].as_str().unwrap().to_string();
    for kv in msg.trim_start_matches("stats: ").split(' ') {
        let (k, v) = kv.split_once('=').unwrap();
        let want = match v.trim_end_matches('s').parse::<u64>() {
            Ok(n) if k != "backend" => Value::from(n),
            _ => Value::from(v),
        };
        assert_eq!(stats[k], want, "{k} in {stats:?}");
    }
    assert_eq!(
        (&stats["accepted"], &stats["rejected"]),
        (&1.into(), &1.into())
    );
    assert_eq!(stats["bytes_in"], sent, "{stats:?}");
    d.terminate(PATIENCE);
    // Every line, to the last one of the drain, is an object.
    for line in d.stderr().lines() {
        object(line);
    }
}
for_each_backend!(json_lines_carry_the_text_facts);

/// `--log-format json --workers 2`: a worker's lines name it as a field (its stats line
/// too), the supervisor's say so, and the supervisor's totals carry `workers` as a number.
fn json_names_the_worker(backend: &'static str) {
    let Some(p) = Pool::start(backend, 2, &["--log-format", "json"]) else {
        return;
    };
    let text = p.d.stderr();
    let listening = find(&text, "listening on ").unwrap();
    assert_eq!(listening["role"], "worker", "{listening:?}");
    assert!(
        [1, 2].map(Value::from).contains(&listening["worker"]),
        "{listening:?}"
    );
    let ready = find(&text, "workers are accepting").unwrap();
    assert_eq!(ready["role"], "supervisor", "{ready:?}");
    let started = find(&text, "worker 2 started (pid ").unwrap();
    assert_eq!(started["worker"], 2, "{started:?}");
    assert_eq!(started["pid"], p.worker_pid(2), "{started:?}");

    let mark = p.d.mark();
    kill(Pid::from_raw(p.worker_pid(2)), Signal::SIGUSR1).unwrap();
    let own = object(&p.d.expect_line(mark, "stats: ", PATIENCE));
    assert_eq!(
        (&own["role"], &own["worker"]),
        (&"worker".into(), &2.into()),
        "{own:?}"
    );
    assert!(!own.contains_key("workers"), "{own:?}");

    let mark = p.d.mark();
    p.d.signal(Signal::SIGUSR1);
    let totals = object(&p.d.expect_line(mark, "stats: ", PATIENCE));
    assert_eq!(totals["role"], "supervisor", "{totals:?}");
    assert_eq!(totals["workers"], 2, "{totals:?}");
    assert!(totals["uptime"].is_u64(), "{totals:?}");
}
for_each_backend!(json_names_the_worker);

/// The final error line of a failed start is JSON too: one object, level error.
#[test]
fn a_failed_start_is_one_json_line() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let run = Daemon::with("poll")
        .args(&["--log-format", "json", "--listen", &addr])
        .run();
    assert_eq!(run.status.code(), Some(1), "{}", run.describe());
    let lines: Vec<&str> = run.stderr.lines().collect();
    let last = object(lines.last().unwrap_or(&""));
    assert_eq!(last["level"], "error", "{}", run.describe());
    let want = format!("cannot listen on {addr}: address already in use");
    assert_eq!(last["msg"], want.as_str(), "{}", run.describe());
    for line in lines {
        object(line);
    }
}

/// A format that does not exist is a usage error naming it and the choices; exit 2.
#[test]
fn an_unknown_log_format_is_a_usage_error() {
    let run = crate::util::run(&["--log-format", "xml"]);
    assert_eq!(run.status.code(), Some(2), "{}", run.describe());
    assert_eq!(
        run.stderr,
        "echo-mux: invalid value 'xml' for '--log-format': expected text or json\n",
        "{}",
        run.describe()
    );
}
