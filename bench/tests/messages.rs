//! The load tools' error lines read like the daemon's (issue 15 item 11): plain words from
//! the kernel, never "Connection refused (os error 111)".

use std::process::{Command, Stdio};

const BENCH: &str = env!("CARGO_BIN_EXE_echo-mux-bench");

/// `echo-mux-bench ARGS` under coreutils `timeout` (it fails at once here): exit code, stderr.
fn bench(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new("timeout")
        .args(["--kill-after=5", "30", BENCH])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {BENCH}: {e}"));
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn connect_errors_are_plain() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let tcp = format!("127.0.0.1:{port}");
    let unix = "unix:/nonexistent-echo-mux-dir/x.sock";
    for (addr, want) in [
        (tcp.as_str(), "connection refused"),
        (unix, "no such file or directory"),
    ] {
        let (code, stderr) = bench(&["-a", addr, "-d", "1s", "--no-progress"]);
        let line = stderr.trim_end();
        assert!(
            code == Some(1) && line == format!("echo-mux-bench: cannot connect to {addr}: {want}"),
            "{addr}: exit {code:?}, stderr {stderr:?}"
        );
    }
}
