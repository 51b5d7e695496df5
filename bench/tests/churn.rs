//! `echo-mux-bench --churn` against the C peer `tcp-echo-epoll` (bench/peers/) and against a
//! server that closes without answering: every cycle is its own connection, every echo is
//! checked, and the server's CPU per connection is reported when its pid is given.

mod support;

use std::io::Read;
use std::net::TcpListener;
use std::time::Duration;

use support::{field, number, run_bounded, Reference, BENCH};

/// `echo-mux-bench --churn --json --no-progress -a 127.0.0.1:PORT ARGS...`.
fn churn(port: u16, args: &[&str]) -> (Option<i32>, String) {
    let addr = format!("127.0.0.1:{port}");
    let fixed = ["--churn", "--json", "--no-progress", "-a", addr.as_str()];
    let all: Vec<String> = fixed.iter().chain(args).map(|s| s.to_string()).collect();
    run_bounded(BENCH, &all, Duration::from_secs(60))
}

#[test]
/// 600 cycles over 8 slots of 100 bytes: 600 connections echoed and checked, no error, the
/// peer accepted exactly 600 connections, and the server CPU figure is there.
fn churn_against_tcp_echo_epoll() {
    let server = Reference::tcp();
    let pid = server.pid().to_string();
    let (code, json) = churn(
        server.port,
        &["-c", "8", "-s", "100", "-n", "600", "--server-pid", &pid],
    );
    assert_eq!(code, Some(0), "{json}");
    assert_eq!(field(&json, "requests"), 600, "{json}");
    assert_eq!(field(&json, "errors"), 0, "{json}");
    assert!(json.contains("\"churn\":true"), "{json}");
    assert!(number(&json, "server_cpu_us_per_req") >= 0.0, "{json}");
    assert_eq!(server.stop(), 600, "connections the peer accepted");
}

#[test]
/// A server that accepts, reads and closes without echoing: every cycle is an error, the run
/// exits 3, and the first error says what happened.
fn churn_detects_a_server_that_does_not_echo() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten().take(20) {
            // The whole message, so that the close is a FIN (unread data would make it a reset).
            let mut buf = [0u8; 64];
            let _ = s.read_exact(&mut buf);
        }
    });
    let (code, json) = churn(port, &["-c", "2", "-n", "20"]);
    assert_eq!(code, Some(3), "{json}");
    assert_eq!(field(&json, "closed"), 20, "{json}");
    assert!(
        json.contains("closed by the server after echoing 0 of 64 bytes"),
        "{json}"
    );
}

#[test]
/// --churn with options that have no meaning for it is a usage error (exit 2, one line).
fn churn_refuses_options_that_do_not_apply() {
    for (args, why) in [
        (&["--udp"][..], "does not apply to '--udp'"),
        (&["--pipeline", "2"], "one message per connection"),
        (&["--idle", "3"], "'--idle' does not apply to '--churn'"),
    ] {
        let (code, text) = churn(9, args);
        assert_eq!(code, Some(2), "{args:?}: {text}");
        assert_eq!(text.lines().count(), 1, "{args:?}: {text}");
        assert!(text.contains(why), "{args:?}: {text}");
    }
}
