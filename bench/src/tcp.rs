//! The stream load: N connections (TCP or unix), each keeping K messages in flight, every
//! echoed byte checked against what was sent, plus M idle connections that must stay silent.

use std::collections::VecDeque;
use std::io;
use std::time::Instant;

use polling::{Event, PollMode, Poller};

use crate::args::Config;
use crate::driver::{self, Load, Meter, Outcome};
use crate::pattern::Pattern;
use crate::sock::{connect_all, is_transient, resolve, Role, Sock};
use echo_mux::error::Plain;

/// One active connection.
struct Conn {
    /// `None` once closed.
    sock: Option<Sock>,
    /// Stream position of the next byte to write.
    send_pos: u64,
    /// Bytes of issued messages not yet written.
    unsent: usize,
    /// Stream position of the next byte expected back.
    recv_pos: u64,
    /// Bytes of the oldest outstanding message received so far.
    recv_in_msg: usize,
    /// Issue time of every outstanding message, oldest first.
    sent: VecDeque<Instant>,
    /// The message being received has a wrong byte.
    bad: bool,
    /// Write interest is registered (output pending).
    want_write: bool,
}

impl Conn {
    fn new(sock: Sock, index: usize, pipeline: usize) -> Self {
        let start = Pattern::start(index);
        Conn {
            sock: Some(sock),
            send_pos: start,
            unsent: 0,
            recv_pos: start,
            recv_in_msg: 0,
            sent: VecDeque::with_capacity(pipeline),
            bad: false,
            want_write: false,
        }
    }
}

/// The connections of one run. Keys: active connections `0..n`, idle ones `n..n + m`.
struct Streams<'a> {
    // Declared first so that it is dropped first: no registered descriptor outlives it.
    poller: Poller,
    conns: Vec<Conn>,
    idle: Vec<Option<Sock>>,
    cfg: &'a Config,
    pattern: Pattern,
    buf: Vec<u8>,
    open: usize,
}

/// Connects everything, runs the load, returns what it measured. `Err` is a one-line reason
/// (cannot connect, poller failure).
pub fn run(cfg: &Config) -> Result<Outcome, String> {
    let dest = resolve(&cfg.target)?;
    let poller = Poller::new().map_err(|e| format!("cannot create poller: {}", Plain(&e)))?;
    // Idle connections first, so that the active ones get the higher descriptors (this is what
    // makes poll and select pay for them).
    let (target, timeout) = (&cfg.target, cfg.connect_timeout);
    let header = cfg.proxy_header;
    let idle = connect_all(&dest, target, timeout, cfg.idle, Role::Idle, header)?;
    let active = connect_all(
        &dest,
        target,
        timeout,
        cfg.connections,
        Role::Active,
        header,
    )?;
    let mut load = Streams {
        poller,
        open: active.len(),
        conns: (active.into_iter().enumerate())
            .map(|(i, s)| Conn::new(s, i, cfg.pipeline))
            .collect(),
        idle: idle.into_iter().map(Some).collect(),
        cfg,
        pattern: Pattern::new(),
        buf: vec![0; 256 * 1024],
    };
    load.register()
        .map_err(|e| format!("cannot register with poller: {}", Plain(&e)))?;
    driver::drive(&mut load, cfg)
}

impl Load for Streams<'_> {
    fn poller(&self) -> &Poller {
        &self.poller
    }

    fn start(&mut self, m: &mut Meter, now: Instant) {
        for key in 0..self.conns.len() {
            let k = m.allowance(self.cfg.pipeline);
            self.issue(m, key, k, now);
        }
    }

    fn on_event(&mut self, m: &mut Meter, key: usize, readable: bool, writable: bool) {
        if key >= self.conns.len() {
            self.on_idle_event(m, key - self.conns.len());
            return;
        }
        if self.conns[key].sock.is_none() {
            return;
        }
        if writable && self.conns[key].unsent > 0 {
            self.flush(m, key);
        }
        if readable && self.conns[key].sock.is_some() {
            self.on_readable(m, key);
        }
    }

    fn alive(&self) -> bool {
        self.open > 0
    }

    fn unanswered(&self) -> u64 {
        self.conns.iter().map(|c| c.sent.len() as u64).sum()
    }
}

impl Streams<'_> {
    fn register(&mut self) -> io::Result<()> {
        let active = self.conns.iter().map(|c| c.sock.as_ref());
        let idle = self.idle.iter().map(Option::as_ref);
        for (key, sock) in active.chain(idle).enumerate() {
            let fd = sock.map(Sock::raw).expect("open");
            // SAFETY: every registered descriptor is deleted from the poller before its socket
            // is dropped (see `close` and `on_idle_event`), and the poller is dropped before any
            // socket still open at the end (field order of `Streams`).
            unsafe {
                self.poller
                    .add_with_mode(fd, Event::readable(key), PollMode::Level)?
            };
        }
        Ok(())
    }

    fn on_idle_event(&mut self, m: &mut Meter, i: usize) {
        let Some(sock) = self.idle[i].as_ref() else {
            return;
        };
        let what = match sock.read(&mut self.buf) {
            Ok(0) => "closed by the server".to_string(),
            Ok(n) => format!("received {n} byte(s) it never asked for"),
            Err(e) if is_transient(&e) => return,
            Err(e) => Plain(&e).to_string(),
        };
        m.note_error(|| format!("idle connection {}: {what}", i + 1));
        m.errors.idle_closed += 1;
        if let Some(s) = self.idle[i].take() {
            let _ = self.poller.delete(s.fd());
        }
    }

    fn close(&mut self, m: &mut Meter, key: usize, why: String) {
        m.note_error(|| format!("connection {}: {why}", key + 1));
        m.errors.closed += 1;
        self.open -= 1;
        let c = &mut self.conns[key];
        c.sent.clear();
        c.unsent = 0;
        if let Some(s) = c.sock.take() {
            let _ = self.poller.delete(s.fd());
        }
    }

    /// One read; the messages it completes are checked, counted and replaced.
    fn on_readable(&mut self, m: &mut Meter, key: usize) {
        let sock = self.conns[key].sock.as_ref().expect("open");
        let n = match sock.read(&mut self.buf) {
            Ok(0) => return self.close(m, key, "closed by the server".into()),
            Ok(n) => n,
            Err(e) if is_transient(&e) => return,
            Err(e) => return self.close(m, key, Plain(&e).to_string()),
        };
        let now = Instant::now();
        let completed = self.check_echo(m, key, n, now);
        if completed > 0 {
            let k = m.allowance(completed);
            self.issue(m, key, k, now);
        }
    }

    /// Checks the `n` bytes just read into `buf` against the outstanding messages of `key`;
    /// returns how many messages they completed.
    fn check_echo(&mut self, m: &mut Meter, key: usize, n: usize, now: Instant) -> usize {
        let size = self.cfg.size;
        let c = &mut self.conns[key];
        let mut done = 0;
        let mut completed = 0;
        while done < n {
            if c.sent.is_empty() {
                m.errors.mismatches += 1;
                let extra = n - done;
                m.note_error(|| {
                    format!(
                        "connection {}: {extra} byte(s) echoed that were never sent",
                        key + 1
                    )
                });
                break;
            }
            let take = (size - c.recv_in_msg).min(n - done);
            let chunk = &self.buf[done..done + take];
            if !c.bad {
                if let Some(i) = self.pattern.first_mismatch(c.recv_pos, chunk) {
                    c.bad = true;
                    let sent = self.pattern.window(c.recv_pos + i as u64, 1)[0];
                    let at = c.recv_in_msg + i;
                    m.note_error(|| {
                        format!(
                            "connection {}: wrong byte at offset {at} of message (got {:#04x}, sent {sent:#04x})",
                            key + 1,
                            chunk[i],
                        )
                    });
                }
            }
            c.recv_pos += take as u64;
            c.recv_in_msg += take;
            done += take;
            if c.recv_in_msg == size {
                let sent = c.sent.pop_front().expect("outstanding");
                c.recv_in_msg = 0;
                if std::mem::take(&mut c.bad) {
                    m.errors.mismatches += 1;
                    m.settled_badly();
                } else {
                    m.answered(sent, now);
                }
                completed += 1;
            }
        }
        completed
    }

    /// Queues `k` new messages on connection `key` and writes what the kernel takes.
    fn issue(&mut self, m: &mut Meter, key: usize, k: usize, now: Instant) {
        if k == 0 {
            return;
        }
        let c = &mut self.conns[key];
        c.sent.extend(std::iter::repeat_n(now, k));
        c.unsent += k * self.cfg.size;
        self.flush(m, key);
    }

    /// Writes pending output; registers write interest only while some is left.
    fn flush(&mut self, m: &mut Meter, key: usize) {
        let c = &mut self.conns[key];
        let Some(sock) = c.sock.as_ref() else {
            return;
        };
        let mut failed = None;
        while c.unsent > 0 {
            let w = self.pattern.window(c.send_pos, c.unsent);
            match sock.write(w) {
                Ok(0) => {
                    failed = Some("write returned 0".to_string());
                    break;
                }
                Ok(n) => {
                    c.send_pos += n as u64;
                    c.unsent -= n;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    failed = Some(Plain(&e).to_string());
                    break;
                }
            }
        }
        if let Some(why) = failed {
            return self.close(m, key, why);
        }
        let want = c.unsent > 0;
        if want != c.want_write {
            c.want_write = want;
            let ev = if want {
                Event::all(key)
            } else {
                Event::readable(key)
            };
            if let Err(e) = self.poller.modify_with_mode(sock.fd(), ev, PollMode::Level) {
                self.close(m, key, format!("poller modify failed: {}", Plain(&e)));
            }
        }
    }
}
