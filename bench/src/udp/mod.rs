//! The UDP load: N connected sockets, each with one datagram outstanding (closed loop). A reply
//! is checked against what was sent (`sender.rs` tells an answer from a late, duplicated or
//! wrong one); no reply within --reply-timeout counts the datagram as lost, and the socket
//! sends the next one. A socket is `connect`ed to the server, so the kernel drops replies from
//! any other address (a server that answers from the wrong address loses them all, which is
//! what a client would see).

mod sender;

use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::Instant;

use polling::{Event, PollMode, Poller};

use crate::args::{Config, Target};
use crate::driver::{self, Load, Meter, Outcome};
use crate::sock::{is_transient, resolve_inet};
use echo_mux::error::Plain;
use sender::{Fate, Payloads, Reply, Sender, State};

struct Datagrams<'a> {
    // Declared first so that it is dropped first: no registered descriptor outlives it.
    poller: Poller,
    senders: Vec<Sender>,
    cfg: &'a Config,
    payloads: Payloads,
    /// One receive buffer, large enough for any datagram (a longer reply is a wrong echo).
    buf: Vec<u8>,
    /// (deadline, sender, seq) in the order they were set: the reply timeout is one constant,
    /// so this is sorted; entries of datagrams answered in time are skipped when they expire.
    deadlines: VecDeque<(Instant, usize, u64)>,
    open: usize,
}

/// Opens the sockets, runs the load, returns what it measured. `Err` is a one-line reason
/// (cannot resolve, cannot create a socket, poller failure).
pub fn run(cfg: &Config) -> Result<Outcome, String> {
    let Target::Tcp(addr) = &cfg.target else {
        return Err("--udp needs HOST:PORT".into());
    };
    let server = resolve_inet(addr)?;
    let poller = Poller::new().map_err(|e| format!("cannot create poller: {}", Plain(&e)))?;
    let senders = (0..cfg.connections)
        .map(|i| {
            let sock = open(server).map_err(|e| {
                format!(
                    "cannot open UDP socket {} of {} to {addr}: {e}",
                    i + 1,
                    cfg.connections
                )
            })?;
            Ok(Sender::new(Some(sock)))
        })
        .collect::<Result<Vec<_>, String>>()?;
    let mut load = Datagrams {
        poller,
        open: senders.len(),
        senders,
        cfg,
        payloads: Payloads::new(cfg.size),
        buf: vec![0; 65_536],
        deadlines: VecDeque::new(),
    };
    load.register()
        .map_err(|e| format!("cannot register with poller: {}", Plain(&e)))?;
    driver::drive(&mut load, cfg)
}

/// A non-blocking UDP socket on an ephemeral port, connected to `server`.
fn open(server: SocketAddr) -> io::Result<UdpSocket> {
    let local: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse().expect("address")
    } else {
        "[::]:0".parse().expect("address")
    };
    let s = UdpSocket::bind(local)?;
    s.connect(server)?;
    s.set_nonblocking(true)?;
    Ok(s)
}

impl Load for Datagrams<'_> {
    fn poller(&self) -> &Poller {
        &self.poller
    }

    fn start(&mut self, m: &mut Meter, now: Instant) {
        for i in 0..self.senders.len() {
            self.issue(m, i, now);
        }
    }

    fn on_event(&mut self, m: &mut Meter, key: usize, readable: bool, _writable: bool) {
        let Some(sock) = self.senders[key].sock.as_ref().filter(|_| readable) else {
            return;
        };
        // One read per event: with one datagram outstanding there is rarely a second, and the
        // level-triggered poller reports it again if there is.
        match sock.recv(&mut self.buf) {
            Ok(n) => self.on_reply(m, key, n, Instant::now()),
            Err(e) if is_transient(&e) => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => refused(m, self.cfg, key),
            Err(e) => self.fail(m, key, e),
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.front().map(|d| d.0)
    }

    fn on_time(&mut self, m: &mut Meter, now: Instant) {
        while let Some(&(due, i, seq)) = self.deadlines.front() {
            if due > now {
                break;
            }
            self.deadlines.pop_front();
            let s = &self.senders[i];
            if s.seq != seq || s.sock.is_none() {
                continue; // answered in time, or the socket is gone
            }
            match s.state {
                State::Waiting => {
                    m.errors.lost += 1;
                    m.settled_badly();
                    let timeout = self.cfg.reply_timeout;
                    m.note_error(|| {
                        format!(
                            "socket {}: no reply within {} ms",
                            i + 1,
                            timeout.as_millis()
                        )
                    });
                    self.settle(m, i, Fate::Lost, now);
                }
                // The wrong echo was counted when it came; the datagram itself is over.
                State::Garbled => {
                    m.settled_badly();
                    self.settle(m, i, Fate::Garbled, now);
                }
                State::Unsent => self.send(m, i, now),
                State::Done => {}
            }
        }
    }

    fn alive(&self) -> bool {
        self.open > 0
    }

    fn dead_reason(&self) -> &'static str {
        "every socket failed"
    }

    fn unanswered(&self) -> u64 {
        self.senders.iter().filter(|s| s.outstanding()).count() as u64
    }
}

impl Datagrams<'_> {
    fn register(&mut self) -> io::Result<()> {
        for (key, s) in self.senders.iter().enumerate() {
            let fd = s.sock.as_ref().expect("open").as_raw_fd();
            // SAFETY: a registered socket is deleted from the poller before it is dropped (see
            // `fail`), and the poller is dropped before the sockets still open at the end
            // (field order of `Datagrams`).
            unsafe {
                self.poller
                    .add_with_mode(fd, Event::readable(key), PollMode::Level)?
            };
        }
        Ok(())
    }

    /// Sends the next datagram of sender `i`, if --max-requests leaves one.
    fn issue(&mut self, m: &mut Meter, i: usize, now: Instant) {
        if m.allowance(1) == 0 {
            self.senders[i].state = State::Done;
        } else {
            self.send(m, i, now);
        }
    }

    /// Sends sender `i`'s current datagram and sets its deadline.
    fn send(&mut self, m: &mut Meter, i: usize, now: Instant) {
        let seq = self.senders[i].seq;
        let result = match self.senders[i].sock.as_ref() {
            Some(sock) => sock.send(self.payloads.get(i, seq)),
            None => return,
        };
        let state = match result {
            Ok(_) => State::Waiting,
            Err(e)
                if is_transient(&e)
                    || e.raw_os_error() == Some(nix::errno::Errno::ENOBUFS as i32) =>
            {
                State::Unsent
            }
            // An ICMP error from an earlier datagram, reported now: this one went nowhere,
            // and its deadline will count it lost.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                refused(m, self.cfg, i);
                State::Waiting
            }
            Err(e) => return self.fail(m, i, e),
        };
        let s = &mut self.senders[i];
        s.state = state;
        s.sent_at = now;
        self.deadlines
            .push_back((now + self.cfg.reply_timeout, i, seq));
    }

    /// Counts a reply of `n` bytes (in `buf`) on sender `i`.
    fn on_reply(&mut self, m: &mut Meter, i: usize, n: usize, now: Instant) {
        let got = &self.buf[..n];
        let s = &self.senders[i];
        let reply = s.classify(i, got, &self.payloads);
        match reply {
            Reply::Answer => {
                m.answered(s.sent_at, now);
                return self.settle(m, i, Fate::Answered, now);
            }
            Reply::Late => {
                m.errors.late += 1;
                return;
            }
            Reply::Duplicate | Reply::Wrong => m.errors.mismatches += 1,
        }
        let size = self.cfg.size;
        let sent = self.payloads.get(i, s.seq);
        m.note_error(|| match reply {
            Reply::Duplicate => format!("socket {}: the same reply came twice", i + 1),
            _ if n != size => format!(
                "socket {}: a {n}-byte reply to a {size}-byte datagram",
                i + 1
            ),
            _ => format!(
                "socket {}: a reply with wrong bytes (first at offset {})",
                i + 1,
                first_difference(got, sent)
            ),
        });
        if reply == Reply::Wrong && s.state == State::Waiting {
            self.senders[i].state = State::Garbled;
        }
    }

    /// Sender `i`'s current datagram is over: remember how, and send the next.
    fn settle(&mut self, m: &mut Meter, i: usize, fate: Fate, now: Instant) {
        self.senders[i].settle(fate);
        self.issue(m, i, now);
    }

    /// A socket error other than "not now": the socket is closed and counted.
    fn fail(&mut self, m: &mut Meter, i: usize, e: io::Error) {
        m.errors.closed += 1;
        m.note_error(|| format!("socket {}: {}", i + 1, Plain(&e)));
        self.open -= 1;
        if let Some(sock) = self.senders[i].sock.take() {
            let _ = self.poller.delete(&sock);
        }
    }
}

/// Notes that the server's host reported "port unreachable" (nothing listens there).
fn refused(m: &mut Meter, cfg: &Config, i: usize) {
    m.note_error(|| {
        format!(
            "socket {}: connection refused (ICMP port unreachable: is a UDP server listening on {}?)",
            i + 1,
            cfg.target
        )
    });
}

fn first_difference(a: &[u8], b: &[u8]) -> usize {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()))
}
