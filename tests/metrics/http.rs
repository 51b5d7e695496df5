//! The metrics listener under bad input (SPEC §12): every request gets its 4xx or a close
//! within the limits (head over 8 KiB → 431, not complete within 5 s → 408), keep-alive,
//! HTTP/1.0 and pipelining work, and the connection cap sheds the oldest waiter; echo
//! clients are served throughout.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use super::{exchange, get, metrics_addr, PATIENCE};
use crate::util::client::ping;
use crate::util::Daemon;

fn start(backend: &'static str) -> Option<(Daemon, String)> {
    let d = Daemon::spawn(backend, &["--metrics", "127.0.0.1:0"])?;
    let addr = metrics_addr(&d);
    Some((d, addr))
}

fn status_line(answer: &str) -> &str {
    answer.lines().next().unwrap_or("")
}

/// Read one answer (head and a Content-Length body) from a kept-alive connection.
fn read_answer(s: &mut TcpStream) -> String {
    read_answer_to(s, false)
}

/// As [`read_answer`]; the answer to a HEAD has no body, whatever its Content-Length says.
fn read_answer_to(s: &mut TcpStream, head_only: bool) -> String {
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1, "closed mid-head: {got:?}");
        got.push(byte[0]);
    }
    let head = String::from_utf8(got).unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .unwrap()
        .parse()
        .unwrap();
    let mut body = vec![0u8; if head_only { 0 } else { len }];
    s.read_exact(&mut body).unwrap();
    head + &String::from_utf8(body).unwrap()
}

for_each_backend!(bad_requests_get_their_answer);
/// Other paths 404, other methods 405, HTTP/0.9 and garbage 400 and closed, a 1 MiB head
/// 431 and closed; the daemon goes on echoing.
fn bad_requests_get_their_answer(backend: &'static str) {
    let Some((d, addr)) = start(backend) else {
        return;
    };
    assert_eq!(get(&addr, "/nope").0, 404);
    assert_eq!(get(&addr, "/../../etc/passwd").0, 404);
    assert_eq!(get(&addr, "/metrics/..").0, 404);
    let post = exchange(
        &addr,
        b"POST /metrics HTTP/1.1\r\nContent-Length: 4\r\n\r\nabcd",
    );
    assert!(post.starts_with("HTTP/1.1 405 "), "{post}");
    assert!(post.contains("Allow: GET, HEAD\r\n"), "{post}");
    for bad in [
        &b"GET /metrics\r\n\r\n"[..],
        b"\x16\x03\x01\x02\x00garbage\r\n\r\n",
    ] {
        let answer = exchange(&addr, bad);
        assert_eq!(status_line(&answer), "HTTP/1.1 400 Bad Request", "{bad:?}");
    }
    // 1 MiB of header: the daemon answers 431 after 8 KiB and closes; what we still send
    // is read and dropped (so the close is no reset that could destroy the answer).
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut w = s.try_clone().unwrap();
    let writer = thread::spawn(move || {
        let mut head = b"GET /metrics HTTP/1.1\r\nX-Big: ".to_vec();
        head.resize(1 << 20, b'a');
        let _ = w.write_all(&head);
    });
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
        "{answer}"
    );
    assert!(answer.contains("Connection: close\r\n"));
    drop(s);
    writer.join().unwrap();
    d.expect_echo(d.connect(), "after the bad requests");
}

for_each_backend!(keep_alive_pipelining_and_http_1_0);
/// HTTP/1.1 keeps the connection for the next request; two pipelined requests get two
/// answers in order; HEAD gets no body; HTTP/1.0 is closed after its answer.
fn keep_alive_pipelining_and_http_1_0(backend: &'static str) {
    let Some((_d, addr)) = start(backend) else {
        return;
    };
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    for _ in 0..3 {
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let a = read_answer(&mut s);
        assert!(a.starts_with("HTTP/1.1 200 OK\r\n"), "{a}");
        assert!(a.contains("Connection: keep-alive\r\n"));
        assert!(a.contains("# TYPE echo_mux_connections_accepted_total counter"));
    }
    s.write_all(
        b"GET /status HTTP/1.1\r\n\r\nHEAD /metrics HTTP/1.1\r\n\r\nGET /x HTTP/1.1\r\n\r\n",
    )
    .unwrap();
    let status = read_answer(&mut s);
    assert!(
        status.contains("Content-Type: application/json"),
        "{status}"
    );
    let head = read_answer_to(&mut s, true);
    assert!(
        head.starts_with("HTTP/1.1 200 OK") && head.ends_with("\r\n\r\n"),
        "{head}"
    );
    assert!(read_answer(&mut s).starts_with("HTTP/1.1 404 "));
    let old = exchange(&addr, b"GET /status HTTP/1.0\r\n\r\n");
    assert!(old.contains("Connection: close\r\n"), "{old}");
    let body = old.split_once("\r\n\r\n").unwrap().1;
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["workers"].as_array().map(Vec::len), Some(0));
}

for_each_backend!(a_slow_head_gets_408);
/// A head still incomplete 5 s after the connection began waiting is answered 408 and
/// closed; a connection that never sends a byte too.
fn a_slow_head_gets_408(backend: &'static str) {
    let Some((d, addr)) = start(backend) else {
        return;
    };
    let t0 = Instant::now();
    let mut slow = TcpStream::connect(&addr).unwrap();
    let mut silent = TcpStream::connect(&addr).unwrap();
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHo").unwrap();
    for s in [&mut slow, &mut silent] {
        s.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
            "{answer}"
        );
    }
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_secs(5),
        "408 after {took:?}, before 5 s"
    );
    d.expect_echo(d.connect(), "after the 408s");
}

for_each_backend!(the_connection_cap_sheds_the_oldest);
/// 200 idle connections (a slowloris's) do not lock out a scrape: beyond 64 the oldest
/// waiter is closed for each new one, and the newest request is answered at once.
fn the_connection_cap_sheds_the_oldest(backend: &'static str) {
    let Some((d, addr)) = start(backend) else {
        return;
    };
    let idle: Vec<TcpStream> = (0..200)
        .map(|i| {
            let mut s = TcpStream::connect(&addr).unwrap();
            s.write_all(&b"GET /metrics HTTP/1.1\r\n"[..(i % 20) + 1])
                .unwrap();
            s
        })
        .collect();
    let (code, body) = get(&addr, "/metrics");
    assert_eq!(code, 200, "{body}");
    // The first ones were shed: closed by the daemon (EOF, or a reset for unread bytes).
    let mut first = &idle[0];
    first.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut buf = [0u8; 16];
    match first.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => d.fail(&format!(
            "the oldest idle connection was not shed: {other:?}"
        )),
    }
    ping(d.connect(), b"still echoing").unwrap();
}

for_each_backend!(many_pipelined_requests_and_a_half_close);
/// 300 pipelined requests in one write are all answered, in order (a few per turn), and a
/// client that half-closes after its request still gets the answer.
fn many_pipelined_requests_and_a_half_close(backend: &'static str) {
    let Some((d, addr)) = start(backend) else {
        return;
    };
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    let one = b"GET /nope HTTP/1.1\r\n\r\n";
    let all: Vec<u8> = one.iter().copied().cycle().take(one.len() * 300).collect();
    let mut w = s.try_clone().unwrap();
    let writer = thread::spawn(move || w.write_all(&all).unwrap());
    for i in 0..300 {
        let a = read_answer(&mut s);
        assert!(a.starts_with("HTTP/1.1 404 "), "answer {i}: {a}");
    }
    writer.join().unwrap();
    let mut s = TcpStream::connect(&addr).unwrap();
    s.write_all(b"GET /status HTTP/1.1\r\n\r\n").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.contains("\"totals\""), "{answer}");
    d.expect_echo(d.connect(), "after the pipelined requests");
}
