//! `--socket-mode` (issue 15 item 8, SPEC §10): the mode is set as bind creates the socket
//! file, whatever the umask, and never through the path afterwards.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::util::{wait_or_kill, TempSock, BIN};

const PATIENCE: Duration = Duration::from_secs(10);

/// Start the daemon with umask `umask` on `sock` with `args`, wait for its listening line,
/// return the socket file's permission bits, and stop it (SIGTERM, exit 0).
fn mode_under_umask(umask: &str, sock: &TempSock, args: &[&str]) -> u32 {
    let listen = sock.listen_arg();
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(format!(r#"umask {umask} && exec "$0" "$@""#))
        .arg(BIN)
        .args(["--listen", &listen])
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDS")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let what = format!("umask {umask}, --listen {listen} {}", args.join(" "));
    let mut child = cmd.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + PATIENCE;
    let mut seen = Vec::new();
    let mut listening = false;
    while !listening && Instant::now() < deadline {
        if let Ok(l) = lines.recv_timeout(Duration::from_millis(100)) {
            listening = l.contains("listening on unix:");
            seen.push(l);
        }
    }
    let mode = std::fs::symlink_metadata(&sock.0).map(|m| m.permissions().mode() & 0o7777);
    let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
    let (status, timed_out) = wait_or_kill(&mut child, PATIENCE);
    seen.extend(lines.try_iter());
    let log = seen.join("\n");
    assert!(listening, "{what}: never listening:\n{log}");
    assert!(
        !timed_out && status.code() == Some(0),
        "{what}: {status}:\n{log}"
    );
    mode.unwrap_or_else(|e| panic!("{what}: no socket file: {e}\n{log}"))
}

/// The file has exactly `--socket-mode` under a restrictive and a permissive umask, with
/// one process and with a supervisor (which binds it for its workers).
#[test]
fn socket_mode_is_exact_whatever_the_umask() {
    for workers in ["1", "2"] {
        for (umask, mode, want) in [
            ("077", "0666", 0o666),
            ("000", "0600", 0o600),
            ("022", "0660", 0o660),
            ("000", "0", 0),
        ] {
            let sock = TempSock::new("umask");
            let got =
                mode_under_umask(umask, &sock, &["--socket-mode", mode, "--workers", workers]);
            assert_eq!(
                got, want,
                "umask {umask}, --socket-mode {mode}, --workers {workers}: the file has {got:o}"
            );
        }
    }
    // Without --socket-mode the umask decides, as before.
    let sock = TempSock::new("umask");
    assert_eq!(mode_under_umask("027", &sock, &[]), 0o750);
}

/// No code in echo-mux changes a file's mode by name (the lint in clippy.toml enforces it
/// for `cargo clippy`; this catches it in `cargo test` too): only the descriptor-bound bind
/// under a umask sets the mode.
#[test]
fn no_source_file_changes_a_mode_by_path() {
    fn walk(dir: &std::path::Path, found: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, found);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for (n, line) in text.lines().enumerate() {
                    let code = line.split("//").next().unwrap_or("");
                    if ["set_permissions(", "chmod(", "fchmodat(", "lchmod("]
                        .iter()
                        .any(|f| code.contains(f))
                    {
                        found.push(format!("{}:{}: {line}", path.display(), n + 1));
                    }
                }
            }
        }
    }
    let mut found = Vec::new();
    walk(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut found,
    );
    assert!(
        found.is_empty(),
        "mode changed by path:\n{}",
        found.join("\n")
    );
}
