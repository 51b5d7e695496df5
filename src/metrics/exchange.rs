//! One HTTP connection on the metrics listener: read a request head (httparse), answer it,
//! then keep the connection for the next request or close it. Its own limits (SPEC §12):
//! a head over [`MAX_HEAD`] bytes is answered 431, one not complete within [`HEAD_TIMEOUT`]
//! 408, and both are closed.
//!
//! ```text
//!  Reading ──head──► answer ──all sent──► Reading (keep-alive) or Lingering (close)
//!     │                 └─kernel full──► Writing ──drained──┘
//!     └─ 431 / 408 / 400 ─► answer with Connection: close
//!  Lingering: our side shut down; what the client still sends is read and discarded until it
//!  closes (or LINGER passes), so that unread bytes do not turn our close into a reset that
//!  destroys the answer before the client read it (nginx's lingering_close).
//! ```

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use crate::reactor::Interest;
use crate::sys;

/// The longest request head accepted: request line and headers, with the blank line.
pub const MAX_HEAD: usize = 8 * 1024;
/// A request head must be complete this long after the connection began waiting for it
/// (accepted, or its previous answer sent); a keep-alive connection that sent nothing of a
/// next request is closed silently after the same time.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an answer may take to leave, and how long a closing connection's leftover input
/// is read and discarded.
pub const LINGER: Duration = Duration::from_secs(2);
/// At most this many headers in a request.
const MAX_HEADERS: usize = 32;
/// Pipelined requests answered per event: 8 KiB could hold hundreds of tiny ones, and each
/// answer is a render; the rest wait for the next turn, so echo clients never wait on them.
const ANSWERS_PER_EVENT: usize = 8;

/// What a request asks for, once its head is parsed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Page {
    /// `GET /metrics`: the Prometheus text format.
    Metrics,
    /// `GET /status`: one JSON object.
    Status,
}

/// An answer's status line and body; `head_only` for HEAD.
pub struct Answer {
    pub code: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

/// What the exchange wants from its owner after an event.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Step {
    Keep,
    Close,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    Reading,
    Writing { then_close: bool },
    Lingering,
}

/// One metrics connection.
pub struct Exchange {
    fd: OwnedFd,
    state: State,
    /// Received bytes not yet consumed (at most [`MAX_HEAD`]).
    input: Vec<u8>,
    /// The answer still to send, from `sent` on.
    output: Vec<u8>,
    sent: usize,
    /// When the current wait began (accept, or the last answer sent): the head deadline
    /// counts from here, and the oldest waiter is shed first when the table is full.
    pub since: Instant,
    /// Answers sent on this connection.
    answered: u64,
    /// Complete requests may wait in `input` (the per-event cap stopped short): the poller
    /// must report the connection again although the kernel has nothing new for it.
    more: bool,
    /// The interest registered with the poller now.
    pub registered: Interest,
}

/// The parts of a parsed request head the answer depends on.
struct Request {
    page: Result<Page, u16>,
    head_only: bool,
    keep_alive: bool,
}

impl Exchange {
    pub fn new(fd: OwnedFd, now: Instant) -> Exchange {
        Exchange {
            fd,
            state: State::Reading,
            input: Vec::new(),
            output: Vec::new(),
            sent: 0,
            since: now,
            answered: 0,
            more: false,
            registered: Interest::NONE,
        }
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Sending an answer: the last to be shed when the table is full.
    pub fn is_writing(&self) -> bool {
        matches!(self.state, State::Writing { .. })
    }

    /// What the poller should report for this connection now.
    pub fn wanted(&self) -> Interest {
        match self.state {
            // Writable at once: the next turn answers what is waiting in `input`.
            State::Reading if self.more => Interest::BOTH,
            State::Reading | State::Lingering => Interest::READ,
            State::Writing { .. } => Interest::WRITE,
        }
    }

    /// When this connection's current wait ends.
    pub fn deadline(&self) -> Instant {
        match self.state {
            State::Reading => self.since + HEAD_TIMEOUT,
            State::Writing { .. } | State::Lingering => self.since + LINGER,
        }
    }

    /// The deadline passed: a partial (or never begun) head is answered 408; an idle
    /// keep-alive connection, a stuck answer or a lingering close just ends.
    pub fn on_deadline(&mut self, now: Instant) -> Step {
        if now < self.deadline() {
            return Step::Keep;
        }
        match self.state {
            State::Reading if !self.input.is_empty() || self.answered == 0 => {
                self.input.clear();
                self.respond(
                    error(408, "request head not complete within 5s"),
                    false,
                    true,
                    now,
                )
            }
            _ => Step::Close,
        }
    }

    /// The poller reported the connection: read or write as its state says, then answer
    /// every complete request in the input (pipelining) while the kernel takes the answers.
    pub fn on_event(&mut self, now: Instant, page: &mut dyn FnMut(Page) -> Answer) -> Step {
        match self.state {
            State::Writing { then_close } => match self.flush(then_close, now) {
                Step::Close => return Step::Close,
                Step::Keep if self.is_writing() => return Step::Keep,
                Step::Keep => {}
            },
            State::Lingering => return self.discard(),
            State::Reading => {}
        }
        if self.state != State::Reading {
            return Step::Keep;
        }
        let open = match self.fill() {
            Ok(open) => open,
            Err(_) => return Step::Close,
        };
        let step = self.answer_all(now, page);
        if open || step == Step::Close {
            return step;
        }
        // The client has sent all it will (a half-close after its request): what it asked
        // is answered, then the connection ends.
        match self.state {
            State::Writing { .. } => {
                self.state = State::Writing { then_close: true };
                Step::Keep
            }
            _ => Step::Close,
        }
    }

    /// Answer the complete requests in `input`, until one needs the connection closed or the
    /// kernel stops taking the answers.
    fn answer_all(&mut self, now: Instant, page: &mut dyn FnMut(Page) -> Answer) -> Step {
        self.more = false;
        for _ in 0..ANSWERS_PER_EVENT {
            if self.state != State::Reading || self.input.is_empty() {
                return Step::Keep;
            }
            let (used, request) = match parse(&self.input) {
                Parsed::Partial if self.input.len() >= MAX_HEAD => {
                    let a = error(431, "request head larger than 8 KiB");
                    return self.respond(a, false, true, now);
                }
                Parsed::Partial => return Step::Keep,
                Parsed::TooManyHeaders => {
                    let a = error(431, "more than 32 header fields");
                    return self.respond(a, false, true, now);
                }
                Parsed::Bad => return self.respond(error(400, "bad request"), false, true, now),
                Parsed::Done(used, request) => (used, request),
            };
            self.input.drain(..used);
            let answer = match request.page {
                Ok(p) => page(p),
                Err(404) => error(404, "not found: try /metrics or /status"),
                Err(code) => error(code, "only GET and HEAD are served"),
            };
            let step = self.respond(answer, request.head_only, !request.keep_alive, now);
            if step == Step::Close {
                return step;
            }
        }
        self.more = self.state == State::Reading && !self.input.is_empty();
        Step::Keep
    }

    /// Read what the socket holds, up to [`MAX_HEAD`] bytes of input. `Ok(false)` when the
    /// client closed its side.
    fn fill(&mut self) -> io::Result<bool> {
        let mut chunk = [0u8; 4096];
        while self.input.len() < MAX_HEAD {
            let room = (MAX_HEAD - self.input.len()).min(chunk.len());
            match sys::recv(&self.fd, &mut chunk[..room]) {
                Ok(0) => return Ok(false),
                Ok(n) => self.input.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Queue `answer` and send what the kernel takes now.
    fn respond(&mut self, answer: Answer, head_only: bool, close: bool, now: Instant) -> Step {
        self.output = encode(&answer, head_only, close);
        self.sent = 0;
        self.answered += 1;
        self.flush(close, now)
    }

    /// Send the rest of the answer. Done: wait for the next request, or linger before the
    /// close. Not done: wait for writability, with the [`LINGER`] deadline.
    fn flush(&mut self, then_close: bool, now: Instant) -> Step {
        while self.sent < self.output.len() {
            match sys::send(&self.fd, &self.output[self.sent..]) {
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if !self.is_writing() {
                        self.since = now;
                    }
                    self.state = State::Writing { then_close };
                    return Step::Keep;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Step::Close,
            }
        }
        self.output = Vec::new();
        self.since = now;
        if then_close {
            self.input = Vec::new();
            // SAFETY: shutdown(2) on a descriptor we own; it changes no memory.
            unsafe { libc::shutdown(self.fd(), libc::SHUT_WR) };
            self.state = State::Lingering;
        } else {
            self.state = State::Reading;
        }
        Step::Keep
    }

    /// Lingering: read and drop whatever arrives; the client's close ends it.
    fn discard(&mut self) -> Step {
        let mut chunk = [0u8; 4096];
        for _ in 0..16 {
            match sys::recv(&self.fd, &mut chunk) {
                Ok(0) => return Step::Close,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Keep,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Step::Close,
            }
        }
        Step::Keep
    }
}

enum Parsed {
    Partial,
    Bad,
    TooManyHeaders,
    Done(usize, Request),
}

/// Parse one request head at the start of `input`.
fn parse(input: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let used = match req.parse(input) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => return Parsed::TooManyHeaders,
        Err(_) => return Parsed::Bad,
    };
    let (Some(method), Some(path), Some(version)) = (req.method, req.path, req.version) else {
        return Parsed::Bad;
    };
    let mut keep_alive = version == 1;
    let mut has_body = false;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive = true;
                }
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            has_body = true;
        } else if h.name.eq_ignore_ascii_case("content-length") {
            has_body |= h.value.trim_ascii() != b"0";
        }
    }
    let head_only = method == "HEAD";
    let page = if method != "GET" && !head_only {
        Err(405)
    } else {
        // The query string does not matter (Prometheus may add one).
        match path.split('?').next() {
            Some("/metrics") => Ok(Page::Metrics),
            Some("/status") => Ok(Page::Status),
            _ => Err(404),
        }
    };
    // A body is never read: answer, then close, so it cannot be taken for the next request.
    let keep_alive = keep_alive && !has_body;
    Parsed::Done(
        used,
        Request {
            page,
            head_only,
            keep_alive,
        },
    )
}

fn error(code: u16, text: &str) -> Answer {
    Answer {
        code,
        content_type: "text/plain; charset=utf-8",
        body: format!("{code} {}: {text}\n", reason(code)).into_bytes(),
    }
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        _ => "Error",
    }
}

/// The whole response: status line, headers, body (none for HEAD).
fn encode(a: &Answer, head_only: bool, close: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(160 + a.body.len());
    let connection = if close { "close" } else { "keep-alive" };
    out.extend_from_slice(
        format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: {connection}\r\n",
            a.code,
            reason(a.code),
            a.content_type,
            a.body.len()
        )
        .as_bytes(),
    );
    if a.code == 405 {
        out.extend_from_slice(b"Allow: GET, HEAD\r\n");
    }
    out.extend_from_slice(b"Cache-Control: no-store\r\n\r\n");
    if !head_only {
        out.extend_from_slice(&a.body);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(input: &[u8]) -> (usize, Request) {
        match parse(input) {
            Parsed::Done(n, r) => (n, r),
            _ => panic!(
                "not a complete request: {:?}",
                String::from_utf8_lossy(input)
            ),
        }
    }

    #[test]
    fn pages_methods_and_versions() {
        let (n, r) = done(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\nGET /status");
        assert_eq!(n, 34);
        assert_eq!(r.page, Ok(Page::Metrics));
        assert!(r.keep_alive && !r.head_only);
        let (_, r) = done(b"GET /status?x=1 HTTP/1.0\r\n\r\n");
        assert_eq!(r.page, Ok(Page::Status));
        assert!(!r.keep_alive, "HTTP/1.0 closes unless asked");
        let (_, r) = done(b"HEAD /status HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
        assert!(r.keep_alive && r.head_only);
        let (_, r) = done(b"GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n");
        assert!(!r.keep_alive);
        assert_eq!(
            done(b"GET /../etc/passwd HTTP/1.1\r\n\r\n").1.page,
            Err(404)
        );
        assert_eq!(done(b"GET /metrics/ HTTP/1.1\r\n\r\n").1.page, Err(404));
        let (_, r) = done(b"POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\n");
        assert_eq!(r.page, Err(405));
        assert!(!r.keep_alive, "an unread body ends the connection");
    }

    #[test]
    fn partial_bad_and_oversized_heads() {
        assert!(matches!(
            parse(b"GET /metrics HTTP/1.1\r\nHo"),
            Parsed::Partial
        ));
        assert!(matches!(parse(b"\x16\x03\x01garbage\r\n\r\n"), Parsed::Bad));
        assert!(
            matches!(parse(b"GET /metrics\r\n\r\n"), Parsed::Bad),
            "HTTP/0.9"
        );
        let many: String = (0..40).map(|i| format!("X-{i}: y\r\n")).collect();
        let head = format!("GET /metrics HTTP/1.1\r\n{many}\r\n");
        assert!(matches!(parse(head.as_bytes()), Parsed::TooManyHeaders));
    }

    #[test]
    fn answers_carry_length_and_connection() {
        let a = Answer {
            code: 200,
            content_type: "text/plain",
            body: b"hello".to_vec(),
        };
        let text = String::from_utf8(encode(&a, false, false)).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(text.contains("Content-Length: 5\r\n"));
        assert!(text.contains("Connection: keep-alive\r\n"));
        assert!(text.ends_with("\r\n\r\nhello"));
        let text = String::from_utf8(encode(&a, true, true)).unwrap();
        assert!(text.ends_with("Connection: close\r\nCache-Control: no-store\r\n\r\n"));
        let text = String::from_utf8(encode(&error(405, "x"), false, true)).unwrap();
        assert!(text.contains("Allow: GET, HEAD\r\n"));
    }
}
