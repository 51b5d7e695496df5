//! The datagram path against real UDP sockets on loopback, driven by hand (no loop).

use std::net::UdpSocket as Peer;

use super::batch::STAMP_EXTRA;
use super::*;
use crate::net::addr::ListenAddr;

struct Rig {
    sock: UdpSocket,
    areas: Areas,
    clock: Clock,
    stats: Stats,
    guard: Guard,
    loops: Option<Loops>,
    access: Option<crate::policy::access::Access>,
    refusals: RefusalLog,
    flush_asked: bool,
    mode: Mode,
    delay: Duration,
    max_buffer: usize,
}

impl Rig {
    fn new(addr: &str) -> Rig {
        let addr: SocketAddr = addr.parse().unwrap();
        let listener = Endpoint::bind(&ListenAddr::Udp(addr)).unwrap();
        assert!(listener.is_datagram());
        let sock = UdpSocket::new(listener).unwrap();
        let guard = Guard::new([sock.local()]);
        Rig {
            sock,
            areas: Areas::default(),
            clock: Clock::default(),
            stats: Stats::new(Instant::now()),
            guard,
            loops: Some(Loops::new()),
            access: None,
            refusals: RefusalLog::default(),
            flush_asked: false,
            mode: Mode::Raw,
            delay: Duration::ZERO,
            max_buffer: 1 << 20,
        }
    }

    /// Run `f` with a context at time `now`.
    fn with<T>(
        &mut self,
        now: Instant,
        f: impl FnOnce(&mut UdpSocket, &mut Areas, &mut Ctx<'_>) -> T,
    ) -> T {
        let mut ctx = Ctx {
            mode: self.mode,
            delay: self.delay,
            max_buffer: self.max_buffer,
            now,
            clock: &mut self.clock,
            stats: &mut self.stats,
            guard: &mut self.guard,
            loops: self.loops.as_mut(),
            access: self.access.as_ref(),
            refusals: &mut self.refusals,
            refusal_flush: None,
        };
        let out = f(&mut self.sock, &mut self.areas, &mut ctx);
        self.flush_asked |= ctx.refusal_flush.is_some();
        out
    }

    /// Did the last handler ask for the refusal log to be flushed later?
    fn refusals_pending(&self) -> bool {
        self.flush_asked
    }

    fn totals(&self) -> crate::stats::Totals {
        self.stats.snapshot()
    }

    /// Read (and answer) what has arrived, as a readable event would.
    fn readable(&mut self, now: Instant) {
        self.with(now, |s, a, c| s.on_readable(a, c));
    }

    fn peer(&self) -> Peer {
        let p = Peer::bind((self.sock.local().ip(), 0)).unwrap();
        p.connect(self.sock.local()).unwrap();
        p.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        p
    }
}

fn recv(p: &Peer) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 70_000];
    let n = p.recv(&mut buf).ok()?;
    buf.truncate(n);
    Some(buf)
}

/// Send every datagram, then read and answer until `want` replies are out (bounded).
fn exchange(rig: &mut Rig, p: &Peer, datagrams: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    for d in datagrams {
        p.send(d).unwrap();
        rig.readable(Instant::now());
        got.push(recv(p).unwrap_or_else(|| panic!("no reply to {} bytes", d.len())));
    }
    got
}

#[test]
fn raw_replies_are_the_same_bytes_empty_and_largest_included() {
    let mut rig = Rig::new("127.0.0.1:0");
    let p = rig.peer();
    let sizes = [0, 1, 64, 1472, 9000, 65_507];
    let sent: Vec<Vec<u8>> = sizes
        .iter()
        .map(|&n| (0..n).map(|i| (i * 7 + n) as u8).collect())
        .collect();
    assert_eq!(exchange(&mut rig, &p, &sent), sent);
    let c = rig.totals();
    assert_eq!((c.datagrams_in, c.datagrams_out, c.dropped), (6, 6, 0));
    let total: u64 = sizes.iter().map(|&n| n as u64).sum();
    assert_eq!((c.bytes_in, c.bytes_out), (total, total));
    assert!(rig.sock.queued() == 0);
    assert_eq!(rig.sock.wanted(), Interest::READ);
}

#[test]
fn a_batch_of_datagrams_is_answered_in_one_go() {
    let mut rig = Rig::new("127.0.0.1:0");
    let p = rig.peer();
    for i in 0..(BATCH * 3 + 5) as u32 {
        p.send(&i.to_be_bytes()).unwrap();
    }
    rig.readable(Instant::now());
    for i in 0..(BATCH * 3 + 5) as u32 {
        assert_eq!(recv(&p), Some(i.to_be_bytes().to_vec()), "reply {i}");
    }
    assert_eq!(rig.totals().datagrams_out, (BATCH * 3 + 5) as u64);
}

#[test]
fn stamp_replies_and_the_size_limit() {
    let mut rig = Rig::new("127.0.0.1:0");
    rig.mode = Mode::Stamp;
    let p = rig.peer();
    let cases: [(&[u8], &[u8]); 5] = [
        (b"hello\r\n", b"hello"),
        (b"hello\n", b"hello"),
        (b"two\n\n", b"two\n"),
        (b"cr\r", b"cr\r"),
        (b"", b""),
    ];
    for (input, line) in cases {
        p.send(input).unwrap();
        rig.readable(Instant::now());
        let got = recv(&p).expect("a reply");
        let tail = got.len() - 29; // " at " + 24 + "\n"
        assert_eq!(&got[..6], b"Echo=>");
        assert_eq!(&got[6..tail], line, "{input:?}");
        assert_eq!(&got[tail..tail + 4], b" at ");
        assert_eq!(got.last(), Some(&b'\n'));
    }
    // The largest payload whose reply fits, and one byte more (not sent, counted).
    let fits = vec![b'x'; MAX_REPLY - STAMP_EXTRA];
    p.send(&fits).unwrap();
    rig.readable(Instant::now());
    assert_eq!(recv(&p).map(|r| r.len()), Some(MAX_REPLY));
    let dropped = rig.totals().dropped;
    p.send(&vec![b'x'; MAX_REPLY - STAMP_EXTRA + 1]).unwrap();
    rig.readable(Instant::now());
    assert_eq!(recv(&p), None);
    assert_eq!(rig.totals().dropped, dropped + 1);
}

#[test]
fn service_ports_get_no_answer() {
    let mut rig = Rig::new("127.0.0.1:0");
    for port in [7u16, 19] {
        // An address of its own, so this cannot collide with the integration tests' port 7.
        let p = match Peer::bind(("127.0.0.77", port)) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("note: cannot bind port {port} ({e}); needs root");
                return;
            }
        };
        p.connect(rig.sock.local()).unwrap();
        p.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        p.send(b"storm").unwrap();
        rig.readable(Instant::now());
        assert_eq!(recv(&p), None, "port {port} was answered");
    }
    assert_eq!(rig.totals().dropped, 2);
    let ok = rig.peer();
    assert_eq!(exchange(&mut rig, &ok, &[b"fine".to_vec()]), [b"fine"]);
}

#[test]
fn delayed_replies_wait_on_the_timer_and_drain_at_once() {
    let mut rig = Rig::new("127.0.0.1:0");
    rig.delay = Duration::from_secs(1);
    let p = rig.peer();
    let t0 = Instant::now();
    p.send(b"one").unwrap();
    rig.readable(t0);
    assert_eq!(recv(&p), None, "answered before the delay");
    assert_eq!(rig.sock.timer_needed(), Some(t0 + rig.delay));
    assert_eq!(rig.sock.timer_needed(), None, "already queued");
    rig.with(t0 + Duration::from_millis(500), |s, a, c| {
        s.on_timer(t0, a, c)
    });
    assert_eq!(recv(&p), None, "a stale timer released it early");
    let due = t0 + Duration::from_secs(1);
    rig.with(due, |s, a, c| s.on_timer(due, a, c));
    assert_eq!(recv(&p).as_deref(), Some(&b"one"[..]));
    assert!(rig.sock.queued() == 0);

    // The drain: reading stops at once, held replies leave without waiting.
    p.send(b"two").unwrap();
    rig.readable(Instant::now());
    rig.with(Instant::now(), |s, a, c| s.stop(a, c));
    assert_eq!(recv(&p).as_deref(), Some(&b"two"[..]));
    assert!(rig.sock.queued() == 0);
    assert!(!rig.sock.wanted().read, "a stopped socket is not read");
}

#[test]
fn held_replies_are_capped_by_max_buffer() {
    let mut rig = Rig::new("127.0.0.1:0");
    rig.delay = Duration::from_secs(10);
    rig.max_buffer = 10_000;
    let p = rig.peer();
    for _ in 0..200 {
        p.send(&[b'f'; 500]).unwrap();
    }
    let t0 = Instant::now();
    rig.readable(t0);
    assert!(
        rig.sock.pending <= rig.max_buffer,
        "{} bytes held",
        rig.sock.pending
    );
    assert!(rig.sock.queued() >= 10, "{} held", rig.sock.queued());
    assert!(
        !rig.sock.wanted().read,
        "the socket is still read at the cap"
    );
    let held = rig.sock.queued() as u64;
    assert_eq!(rig.totals().datagrams_in, held + rig.totals().dropped);
    // Released: everything held is answered and reading resumes.
    let due = t0 + rig.delay;
    rig.with(due, |s, a, c| s.on_timer(due, a, c));
    for _ in 0..held {
        assert_eq!(recv(&p).map(|r| r.len()), Some(500));
    }
    assert!(rig.sock.wanted().read);
    // A datagram larger than the cap still fits into an empty queue.
    let mut rig = Rig::new("127.0.0.1:0");
    (rig.delay, rig.max_buffer) = (Duration::from_secs(10), 10_000);
    let p = rig.peer();
    p.send(&[b'L'; 20_000]).unwrap();
    p.send(b"next").unwrap();
    rig.readable(due);
    assert_eq!((rig.sock.queued(), rig.totals().dropped), (1, 1));
}

#[test]
fn a_wildcard_listener_answers_from_the_address_asked() {
    let mut rig = Rig::new("0.0.0.0:0");
    let port = rig.sock.local().port();
    for dst in ["127.0.0.1", "127.0.0.2", "127.0.0.3"] {
        let p = Peer::bind("127.0.0.1:0").unwrap();
        p.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        p.send_to(dst.as_bytes(), (dst, port)).unwrap();
        rig.readable(Instant::now());
        let mut buf = [0u8; 64];
        let (n, from) = p.recv_from(&mut buf).expect("a reply");
        assert_eq!(&buf[..n], dst.as_bytes());
        assert_eq!(
            from,
            format!("{dst}:{port}").parse().unwrap(),
            "reply source"
        );
    }
}

#[test]
fn a_dual_stack_wildcard_answers_ipv4_from_the_address_asked() {
    use std::os::fd::OwnedFd;
    // What systemd hands in for ListenDatagram=[::]:P without BindIPv6Only=ipv6-only.
    let Ok(dual) = Peer::bind("[::]:0") else {
        eprintln!("note: no IPv6 here");
        return;
    };
    let port = dual.local_addr().unwrap().port();
    dual.set_nonblocking(true).unwrap();
    let sock = UdpSocket::new(Endpoint::inherited(OwnedFd::from(dual))).unwrap();
    let mut rig = Rig::new("127.0.0.1:0");
    rig.guard = Guard::new([sock.local()]);
    rig.sock = sock;
    let p = Peer::bind("127.0.0.1:0").unwrap();
    p.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    p.send_to(b"mapped", ("127.0.0.2", port)).unwrap();
    rig.readable(Instant::now());
    let mut buf = [0u8; 16];
    let (n, from) = p.recv_from(&mut buf).expect("a reply");
    assert_eq!(&buf[..n], b"mapped");
    assert_eq!(
        from,
        SocketAddr::from(([127, 0, 0, 2], port)),
        "reply source"
    );
}

#[test]
fn ipv6_echo() {
    let Ok(listener) = Endpoint::bind(&ListenAddr::Udp("[::1]:0".parse().unwrap())) else {
        eprintln!("note: no IPv6 loopback here");
        return;
    };
    drop(listener);
    for addr in ["[::1]:0", "[::]:0"] {
        let mut rig = Rig::new(addr);
        let p = Peer::bind("[::1]:0").unwrap();
        p.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        p.send_to(b"six", ("::1", rig.sock.local().port())).unwrap();
        rig.readable(Instant::now());
        let mut buf = [0u8; 8];
        let (n, from) = p.recv_from(&mut buf).expect("a reply");
        assert_eq!(
            (&buf[..n], from.port()),
            (&b"six"[..], rig.sock.local().port())
        );
    }
}

/// Ten numbered datagrams from `p`, read in one batch.
fn ten(rig: &mut Rig, p: &Peer) {
    for i in 0..10u8 {
        p.send(&[i; 100]).unwrap();
    }
    rig.readable(Instant::now());
}

fn replies(p: &Peer) -> Vec<u8> {
    std::iter::from_fn(|| recv(p)).map(|r| r[0]).collect()
}

#[test]
fn eagain_queues_the_rest_in_order_and_waits_for_writability() {
    use super::batch::fake::{script, Call};
    let mut rig = Rig::new("127.0.0.1:0");
    let p = rig.peer();
    script(&[Call::SendAtMost(3), Call::Fail(libc::EAGAIN)]);
    ten(&mut rig, &p);
    assert_eq!(rig.sock.queued(), 7, "the refused seven are queued");
    assert_eq!(
        rig.sock.wanted(),
        Interest::BOTH,
        "write interest while queued"
    );
    assert_eq!(
        rig.sock.timer_needed(),
        None,
        "writability, not a timer, resumes"
    );
    // New datagrams go behind the queue, not past it.
    p.send(&[10; 100]).unwrap();
    rig.readable(Instant::now());
    assert_eq!(rig.sock.queued(), 8);
    rig.with(Instant::now(), |s, a, c| s.on_writable(a, c));
    assert_eq!(replies(&p), (0..11).collect::<Vec<u8>>());
    assert_eq!(
        rig.sock.wanted(),
        Interest::READ,
        "write interest dropped when empty"
    );
    assert_eq!((rig.totals().datagrams_out, rig.totals().dropped), (11, 0));
}

#[test]
fn enobufs_retries_on_a_timer() {
    use super::batch::fake::{script, Call};
    let mut rig = Rig::new("127.0.0.1:0");
    let p = rig.peer();
    script(&[Call::Fail(libc::ENOBUFS)]);
    let t0 = Instant::now();
    ten(&mut rig, &p);
    assert_eq!(rig.sock.queued(), 10);
    assert_eq!(
        rig.sock.wanted(),
        Interest::READ,
        "writability would not say when"
    );
    let at = rig.sock.timer_needed().expect("a retry timer");
    assert!(at > t0 && at <= Instant::now() + NOBUFS_RETRY);
    rig.with(at, |s, a, c| s.on_timer(at, a, c));
    assert_eq!(replies(&p), (0..10).collect::<Vec<u8>>());
}

#[test]
fn errors_of_one_reply_drop_only_that_one_and_icmp_errors_are_ignored() {
    use super::batch::fake::{script, Call};
    let mut rig = Rig::new("127.0.0.1:0");
    let p = rig.peer();
    // A stale ECONNREFUSED (from an ICMP error) is retried; EPERM (a firewall) drops the
    // datagram it names and the rest goes on.
    script(&[
        Call::Fail(libc::ECONNREFUSED),
        Call::SendAtMost(2),
        Call::Fail(libc::EPERM),
    ]);
    ten(&mut rig, &p);
    let mut want: Vec<u8> = (0..10).collect();
    want.remove(2);
    assert_eq!(replies(&p), want);
    assert_eq!((rig.totals().datagrams_out, rig.totals().dropped), (9, 1));
    assert!(rig.sock.queued() == 0);
}

#[test]
fn refused_datagrams_are_dropped_and_counted_apart_from_loop_protection() {
    use crate::policy::access::{Access, Cidr, Limits, Policy, Rules};
    let mut rig = Rig::new("127.0.0.1:0");
    let denied = rig.peer(); // from 127.0.0.1
    let policy = Policy {
        lists: Rules::new(&[], &[Cidr::parse("127.0.0.1/32").unwrap()]).map(Into::into),
        limits: Limits::default(),
        source_table: 0,
    };
    rig.access = Some(Access::new(&policy, Instant::now()).unwrap());
    denied.send(b"no").unwrap();
    rig.readable(Instant::now());
    assert_eq!(recv(&denied), None, "a denied source is not answered");
    let c = rig.totals();
    assert_eq!((c.datagrams_in, c.datagrams_out, c.dropped), (1, 0, 0));
    assert_eq!((c.rejected, c.denied, c.limited), (1, 1, 0));
    // A rate of 3 a second: a burst of 5 gets 3 answers, the other 2 count as limited.
    let policy = Policy {
        limits: Limits {
            max_per_source: 0,
            rate_per_source: 3,
        },
        ..Policy::default()
    };
    let now = Instant::now();
    rig.access = Some(Access::new(&policy, now).unwrap());
    for i in 0..5u8 {
        denied.send(&[i]).unwrap();
    }
    rig.readable(now);
    let got: Vec<_> = std::iter::from_fn(|| recv(&denied)).collect();
    assert_eq!(got, vec![vec![0], vec![1], vec![2]]);
    let c = rig.totals();
    assert_eq!((c.datagrams_out, c.rejected, c.limited), (3, 3, 2));
    assert!(
        rig.refusals_pending(),
        "a flush of the refusal log was asked for"
    );
}

/// Heap allocations made by this thread, counted by the test binary's allocator.
mod counting {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    pub struct Counting;

    thread_local!(static ALLOCS: Cell<u64> = const { Cell::new(0) });

    // SAFETY: every call is passed on to the system allocator unchanged; the count is a
    // const-initialised thread-local Cell, which never allocates.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, l: Layout) -> *mut u8 {
            let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
            // SAFETY: the caller's promises about `l` are passed on as they are.
            unsafe { System.alloc(l) }
        }
        unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
            // SAFETY: `p` came from this allocator, that is from System, with `l`.
            unsafe { System.dealloc(p, l) }
        }
        unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
            let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
            // SAFETY: as for alloc.
            unsafe { System.alloc_zeroed(l) }
        }
        unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
            let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
            // SAFETY: as for dealloc, and `new` is the caller's valid size.
            unsafe { System.realloc(p, l, new) }
        }
    }

    #[global_allocator]
    static COUNTING: Counting = Counting;

    /// Allocations so far on this thread.
    pub fn allocations() -> u64 {
        ALLOCS.with(Cell::get)
    }
}

#[test]
fn answering_allocates_nothing_in_the_steady_state() {
    let before = counting::allocations();
    drop(std::hint::black_box(vec![1u8]));
    assert_eq!(counting::allocations(), before + 1, "the counter counts");
    for mode in [Mode::Raw, Mode::Stamp] {
        let mut rig = Rig::new("127.0.0.1:0");
        rig.mode = mode;
        let p = rig.peer();
        let mut buf = vec![0u8; 70_000];
        let mut round = |rig: &mut Rig, seq: u32| -> u64 {
            for i in 0..BATCH as u32 {
                p.send(&(seq * 1000 + i).to_be_bytes().repeat(16)).unwrap();
            }
            let before = counting::allocations();
            rig.readable(Instant::now());
            let made = counting::allocations() - before;
            for _ in 0..BATCH {
                p.recv(&mut buf).expect("a reply");
            }
            made
        };
        // The first round allocates the receive area.
        round(&mut rig, 0);
        let made: u64 = (1..50).map(|seq| round(&mut rig, seq)).sum();
        assert_eq!(made, 0, "{mode:?}: allocations in 49 batches of {BATCH}");
        assert_eq!(rig.totals().datagrams_out, 50 * BATCH as u64);
    }
}

#[test]
fn delayed_replies_allocate_nothing_in_the_steady_state() {
    let mut rig = Rig::new("127.0.0.1:0");
    rig.delay = Duration::from_millis(10);
    let p = rig.peer();
    let mut buf = vec![0u8; 70_000];
    let t0 = Instant::now();
    let mut round = |rig: &mut Rig, seq: u32| -> u64 {
        for i in 0..BATCH as u32 {
            p.send(&(seq * 1000 + i).to_be_bytes().repeat(16)).unwrap();
        }
        let now = t0 + Duration::from_millis(u64::from(seq) * 20);
        let due = now + rig.delay;
        let before = counting::allocations();
        rig.readable(now);
        assert_eq!(rig.sock.queued(), BATCH, "held");
        rig.with(due, |s, a, c| s.on_timer(due, a, c));
        let made = counting::allocations() - before;
        for _ in 0..BATCH {
            p.recv(&mut buf).expect("a reply");
        }
        made
    };
    // The first round allocates the receive area, the queue and the payload buffers.
    round(&mut rig, 0);
    let made: u64 = (1..30).map(|seq| round(&mut rig, seq)).sum();
    assert_eq!(made, 0, "allocations in 29 held batches of {BATCH}");
}
