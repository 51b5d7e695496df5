//! The shell tools in `scripts/` against the real daemon: `hammer.sh` (parallel netcat
//! clients, SHA-256 compared) once per backend, and `demo.sh` (three delayed stamp replies
//! side by side). They need `nc` from netcat-openbsd, which `.ci/run` installs.

use std::process::Command;
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
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let server = std::thread::spawn(move || {
        for _ in 0..2 {
            let Ok((mut s, _)) = listener.accept() else {
                return;
            };
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            let mut data = Vec::new();
            let _ = s.read_to_end(&mut data);
            if let Some(b) = data.last_mut() {
                *b ^= 0xff; // flip one byte
            }
            let _ = s.write_all(&data);
        }
    });
    let (status, out) = hammer(&port, 2, 1000, 1, Duration::from_secs(60));
    server.join().unwrap();
    assert_eq!(
        status.code(),
        Some(1),
        "hammer.sh should report the mismatch:\n{out}"
    );
    assert!(out.contains("0 passed, 2 failed"), "{out}");
}

#[test]
/// The textbook session: three clients at once with `--delay 2s` are answered in about 2 s,
/// not 6, each with an `Echo=>... at <ctime>` line; the daemon exits 0 on SIGTERM.
fn demo_sh_answers_three_clients_side_by_side() {
    let started = Instant::now();
    let (status, out) = run_script(
        &[&script("demo.sh"), "--delay", "2"],
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
        elapsed >= Duration::from_secs(2),
        "the delay was not applied ({elapsed:?}):\n{out}"
    );
    assert!(
        elapsed < Duration::from_secs(5),
        "the delays did not overlap ({elapsed:?}):\n{out}"
    );
}
