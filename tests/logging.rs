//! Logging never stalls the loop (issue 8, defect 13; README "Where the SPEC is silent"):
//! with `-v` and a stderr pipe that nobody reads, clients are still served; lines that did
//! not fit are dropped and counted, and the count is logged once stderr drains.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::util::client;
use crate::util::BIN;

/// Connections per round, and rounds: 3,000 connections log ~360 KiB at `-v`, far more than
/// a pipe (64 KiB) and the daemon's queue (64 KiB) hold.
const CLIENTS: usize = 200;
const ROUNDS: usize = 15;
/// One echo must come back within this, however full stderr is (a stalled loop never
/// answers at all; the bound is only a loaded machine's room).
const ECHO_LIMIT: Duration = Duration::from_secs(15);
/// The daemon's note once stderr drains: `… 1234 log lines dropped …`.
const NOTE: &str = " log lines dropped";

/// Kills the daemon if the test fails half-way.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Read `err` up to the end of the `listening on` line; the bound address. Reads a byte at
/// a time so that nothing after that line is consumed.
fn bound_addr(err: &mut ChildStderr) -> SocketAddr {
    let mut line = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut b = [0u8; 1];
    while Instant::now() < deadline {
        if client::retry(|| err.read(&mut b)).unwrap() == 0 {
            break;
        }
        if b[0] != b'\n' {
            line.push(b[0]);
            continue;
        }
        let text = String::from_utf8_lossy(&line).into_owned();
        if let Some(i) = text.find("listening on ") {
            let rest = &text[i + "listening on ".len()..];
            return rest[..rest.find(' ').unwrap()].parse().unwrap();
        }
        line.clear();
    }
    panic!(
        "no `listening on` line; last: {:?}",
        String::from_utf8_lossy(&line)
    );
}

/// One round: CLIENTS connections at once, each sends a byte and must get it back within
/// ECHO_LIMIT; then all close (each connection logs at least two debug lines).
fn churn(addr: SocketAddr, round: usize) -> Result<(), String> {
    let mut conns: Vec<TcpStream> = Vec::with_capacity(CLIENTS);
    for i in 0..CLIENTS {
        let s = client::connect(addr).map_err(|e| format!("round {round}, connect {i}: {e}"))?;
        s.set_read_timeout(Some(ECHO_LIMIT)).unwrap();
        (&s).write_all(b"l")
            .map_err(|e| format!("round {round}, write {i}: {e}"))?;
        conns.push(s);
    }
    for (i, mut s) in conns.into_iter().enumerate() {
        let mut b = [0u8; 1];
        match client::retry(|| s.read(&mut b)) {
            Ok(1) if b == *b"l" => {}
            other => {
                return Err(format!(
                    "round {round}, client {i}: no echo within {ECHO_LIMIT:?} ({other:?})"
                ))
            }
        }
    }
    Ok(())
}

for_each_backend!(unread_stderr_does_not_stall_the_loop);
fn unread_stderr_does_not_stall_the_loop(backend: &'static str) {
    crate::util::lift_nofile();
    let mut child = Command::new(BIN)
        .args(["-v", "--backend", backend, "--listen", "127.0.0.1:0"])
        .env_remove("RUST_LOG")
        .env_remove("JOURNAL_STREAM")
        .env_remove("LISTEN_PID")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = child.stderr.take().unwrap();
    let pid = Pid::from_raw(child.id() as i32);
    let mut guard = Guard(child);
    let addr = bound_addr(&mut err);

    // From here on nobody reads stderr.
    let started = Instant::now();
    for round in 0..ROUNDS {
        if let Err(e) = churn(addr, round) {
            panic!("{backend}: the loop stalled while stderr was full: {e}");
        }
    }
    let churned = started.elapsed();

    // Now drain stderr: the daemon flushes its queue and says how many lines it dropped.
    let text = Arc::new(Mutex::new(String::new()));
    let sink = Arc::clone(&text);
    let reader = thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n) = client::retry(|| err.read(&mut buf)) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let dropped = loop {
        let note = text
            .lock()
            .unwrap()
            .lines()
            .find(|l| l.contains(NOTE))
            .map(str::to_string);
        if let Some(line) = note {
            let before = &line[..line.find(NOTE).unwrap()];
            break before.rsplit(' ').next().unwrap().parse::<u64>().unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "{backend}: no `log lines dropped` line within 20 s of reading stderr; read:\n{}",
            text.lock().unwrap()
        );
        thread::sleep(Duration::from_millis(20));
    };
    let most = (CLIENTS * ROUNDS * 2) as u64;
    assert!(
        (1..=most).contains(&dropped),
        "{backend}: {dropped} lines dropped (want 1..={most})"
    );

    // Logging works normally again: the drain's lines arrive, and the exit is clean.
    kill(pid, Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(st) = guard.0.try_wait().unwrap() {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "{backend}: no exit after SIGTERM"
        );
        thread::sleep(Duration::from_millis(5));
    };
    reader.join().unwrap();
    let text = text.lock().unwrap();
    assert_eq!(status.code(), Some(0), "{backend}: {status}\n{text}");
    assert!(text.contains("drain complete"), "{backend}:\n{text}");
    assert!(!text.contains("panicked"), "{backend}:\n{text}");
    println!(
        "{backend}: {} connections in {churned:?}, {dropped} lines dropped",
        CLIENTS * ROUNDS
    );
}
