//! The shell tools in `scripts/` against the real daemon: `hammer.sh` (parallel netcat
//! clients, SHA-256 compared) once per backend, and `demo.sh` (three delayed stamp replies
//! side by side). They need `nc` from netcat-openbsd, which `.ci/run` installs.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::util::*;

fn script(name: &str) -> String {
    format!("{}/scripts/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Run a script with a hard time limit (coreutils `timeout`); returns status and output.
fn run_script(args: &[&str], limit: Duration) -> (std::process::ExitStatus, String) {
    let out = Command::new("timeout")
        .arg("--kill-after=5")
        .arg(limit.as_secs().to_string())
        .args(args)
        .env("ECHO_MUX", BIN)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status, text)
}

/// `hammer.sh --port P --clients N --bytes B --rounds R`, bounded by `limit`.
fn hammer(
    port: &str,
    clients: u32,
    bytes: u32,
    rounds: u32,
    limit: Duration,
) -> (std::process::ExitStatus, String) {
    let (clients, bytes, rounds) = (clients.to_string(), bytes.to_string(), rounds.to_string());
    let hammer = script("hammer.sh");
    let args = [
        hammer.as_str(),
        "--port",
        port,
        "--clients",
        &clients,
        "--bytes",
        &bytes,
        "--rounds",
        &rounds,
    ];
    run_script(&args, limit)
}

for_each_backend!(hammer_sh_passes);
/// 16 parallel `nc -N` clients × 2 rounds, 200 kB each: every checksum matches.
fn hammer_sh_passes(backend: &'static str) {
    let d = Daemon::shared(backend);
    let port = d.addr().port().to_string();
    let (status, out) = hammer(&port, 16, 200_000, 2, Duration::from_secs(120));
    if !status.success() || !out.contains("32 passed, 0 failed") {
        d.fail(&format!("hammer.sh failed ({status}):\n{out}"));
    }
}

#[test]
/// hammer.sh must be able to fail: against a server that answers with other bytes.
fn hammer_sh_detects_a_corrupting_server() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let stop = AtomicBool::new(false);
    let (status, out) = std::thread::scope(|sc| {
        sc.spawn(|| corrupting_server(&listener, &stop));
        // However hammer.sh ends (early, killed at its limit, or a panic here), the server
        // stops then: the scope joins it once `_stop` has set the flag.
        let _stop = StopOnDrop(&stop);
        hammer(&port, 2, 1000, 1, Duration::from_secs(60))
    });
    assert_eq!(
        status.code(),
        Some(1),
        "hammer.sh should report the mismatch:\n{out}"
    );
    assert!(out.contains("0 passed, 2 failed"), "{out}");
    // Failed by the comparison, not by a connection that never got through.
    let compared = "echo differs: sent 1000 bytes, got 1000 back";
    assert_eq!(out.matches(compared).count(), 2, "{out}");
}

/// Sets the flag when dropped.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Echo every connection (hammer.sh's `nc -z` probe, then its clients) with its last byte
/// flipped, each on its own thread, until `stop` is set. Never blocks for long: the
/// listener is non-blocking and polled, every read has a timeout, and the whole server gives
/// up after 2 minutes, so a hammer.sh that ends early can fail the test but not hang it.
fn corrupting_server(listener: &std::net::TcpListener, stop: &AtomicBool) {
    use std::io::{ErrorKind, Read, Write};
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    std::thread::scope(|sc| {
        while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
            let mut s = match listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => panic!("corrupting server: accept: {e}"),
            };
            sc.spawn(move || {
                s.set_nonblocking(false).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
                let mut data = Vec::new();
                let _ = s.read_to_end(&mut data);
                if let Some(b) = data.last_mut() {
                    *b ^= 0xff; // flip one byte
                }
                let _ = s.write_all(&data);
            });
        }
    });
}

#[test]
/// The textbook session: three clients at once with `--delay 3s` are answered in about 3 s,
/// not 9, each with an `Echo=>... at <ctime>` line; the daemon exits 0 on SIGTERM. The
/// overlap is judged on demo.sh's own figure for the client phase (not on the whole run,
/// whose start-up and shutdown a loaded machine stretches): under 6 s, which even two of
/// the delays one after the other would reach.
fn demo_sh_answers_three_clients_side_by_side() {
    let started = Instant::now();
    let (status, out) = run_script(
        &[&script("demo.sh"), "--delay", "3"],
        Duration::from_secs(60),
    );
    let elapsed = started.elapsed();
    assert!(status.success(), "demo.sh failed ({status}):\n{out}");
    let answers = out
        .lines()
        .filter(|l| l.contains("<- Echo=>Hello from client"))
        .count();
    assert_eq!(answers, 3, "three stamped answers expected:\n{out}");
    assert!(out.contains("exited with status 0"), "{out}");
    assert!(
        elapsed >= Duration::from_secs(3),
        "the delay was not applied ({elapsed:?}):\n{out}"
    );
    let answered: f64 = out
        .lines()
        .find_map(|l| l.split("all three answered in ").nth(1))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|secs| secs.parse().ok())
        .unwrap_or_else(|| panic!("no `all three answered in S s` line:\n{out}"));
    assert!(
        (3.0..6.0).contains(&answered),
        "the three clients were answered in {answered} s; want at least the 3 s delay and \
         under 6 s (side by side, not one after the other):\n{out}"
    );
}
