//! Backend conformance: the contract written on `reactor::Backend`, checked against every
//! backend with real sockets (unix pairs and loopback TCP pairs on port 0).
//!
//! `for_each_backend!(name, run)` beside `fn name(b: &mut dyn Backend)` stamps out
//! `name_epoll`, `name_poll` and `name_select`, each given a fresh backend of its kind by
//! `run`, on its own thread under a watchdog, so a wait that never returns fails the test
//! instead of hanging the suite. Timing assertions are one-sided
//! (never early) with a generous upper bound.

use std::collections::HashSet;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use echo_mux::event::reactor::{self, Backend, BackendKind, Event, Interest, Token};

/// Watchdog: no test body may run longer than this.
const LIMIT: Duration = Duration::from_secs(60);
/// Timeout for a wait that must report something (it returns as soon as it does).
const SOON: Duration = Duration::from_secs(10);
/// Timeout for a wait that must report nothing.
const QUIET: Duration = Duration::from_millis(50);
/// Generous upper bound on how late a timed wait may return on a loaded machine.
const SLACK: Duration = Duration::from_secs(5);

const NONE: Interest = Interest::NONE;
const READ: Interest = Interest::READ;
const WRITE: Interest = Interest::WRITE;
const BOTH: Interest = Interest::BOTH;

/// Run `body` against a fresh `backend` on its own thread, failing after `LIMIT`.
fn run(backend: &'static str, body: fn(&mut dyn Backend)) {
    let kind: BackendKind = backend.parse().expect("a backend name");
    let (done, finished) = mpsc::channel();
    let worker = thread::Builder::new()
        .name(format!("backend-{}", kind.name()))
        .spawn(move || {
            let mut b = reactor::open(kind).expect("open backend");
            assert_eq!(b.name(), kind.name());
            body(&mut *b);
            let _ = done.send(());
        })
        .expect("spawn test thread");
    match finished.recv_timeout(LIMIT) {
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!(
                "{} backend: test still running after {LIMIT:?}",
                kind.name()
            )
        }
        // Finished, or panicked (the sender was dropped): join to pass the panic on.
        _ => {
            if let Err(panic) = worker.join() {
                std::panic::resume_unwind(panic);
            }
        }
    }
}

fn ev(token: usize, readable: bool, writable: bool) -> Event {
    Event {
        token: Token(token),
        readable,
        writable,
    }
}
fn r(token: usize) -> Event {
    ev(token, true, false)
}
fn w(token: usize) -> Event {
    ev(token, false, true)
}
fn rw(token: usize) -> Event {
    ev(token, true, true)
}

fn set(b: &mut dyn Backend, fd: &impl AsRawFd, token: usize, old: Interest, new: Interest) {
    let fd = fd.as_raw_fd();
    b.set_interest(fd, Token(token), old, new)
        .unwrap_or_else(|e| panic!("{}: set_interest({fd}, {old:?} -> {new:?}): {e}", b.name()));
}

/// One wait. Checks what every wait must satisfy (the vector is cleared first, each token at
/// most once, no empty events) and returns the events sorted by token.
fn wait(b: &mut dyn Backend, timeout: Option<Duration>) -> Vec<Event> {
    let stale = ev(usize::MAX, true, true);
    let mut events = vec![stale];
    b.wait(&mut events, timeout)
        .unwrap_or_else(|e| panic!("{}: wait({timeout:?}): {e}", b.name()));
    let mut seen = HashSet::new();
    for e in &events {
        assert_ne!(*e, stale, "{}: wait did not clear the vector", b.name());
        assert!(e.readable || e.writable, "{}: empty event {e:?}", b.name());
        assert!(
            seen.insert(e.token),
            "{}: {e:?} twice: {events:?}",
            b.name()
        );
    }
    events.sort_by_key(|e| e.token.0);
    events
}

/// A wait that must report nothing; checks it also did not return early.
fn quiet(b: &mut dyn Backend) {
    let start = Instant::now();
    assert_eq!(wait(b, Some(QUIET)), [], "{}: expected no events", b.name());
    let took = start.elapsed();
    assert!(
        took >= QUIET,
        "{}: empty wait returned early ({took:?})",
        b.name()
    );
}

fn soon(b: &mut dyn Backend) -> Vec<Event> {
    wait(b, Some(SOON))
}

fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    (server, client)
}

/// Close with SO_LINGER 0, so the peer gets an RST instead of a FIN.
fn reset(stream: TcpStream) {
    let zero = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    nix::sys::socket::setsockopt(&stream, nix::sys::socket::sockopt::Linger, &zero).unwrap();
    drop(stream);
}

/// Block (bounded) until the kernel has an error or hang-up pending on `fd`, without
/// consuming it, so later assertions do not race the peer's close.
fn await_hangup(fd: &impl AsRawFd) {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: 0,
        revents: 0,
    };
    // SAFETY: one valid pollfd, for the duration of the call.
    let n = unsafe { libc::poll(&mut p, 1, SOON.as_millis() as libc::c_int) };
    assert_eq!(n, 1, "no hang-up pending on fd {} after {SOON:?}", p.fd);
    assert_ne!(p.revents & (libc::POLLHUP | libc::POLLERR), 0);
}

fn read_one(s: &mut impl Read) {
    let mut byte = [0u8; 1];
    s.read_exact(&mut byte).unwrap();
}

for_each_backend!(readable_only_after_data, run);
fn readable_only_after_data(b: &mut dyn Backend) {
    let (mut a, mut peer) = UnixStream::pair().unwrap();
    let (idle, _idle_peer) = UnixStream::pair().unwrap();
    set(b, &a, 1, NONE, READ);
    set(b, &idle, 2, NONE, READ);
    // Both are writable, but only reading was asked for.
    quiet(b);
    peer.write_all(b"x").unwrap();
    assert_eq!(soon(b), [r(1)]);
    // Level-triggered: reported again until the byte is read.
    assert_eq!(soon(b), [r(1)]);
    read_one(&mut a);
    quiet(b);
    set(b, &a, 1, READ, NONE);
    set(b, &idle, 2, READ, NONE);
}

for_each_backend!(writable_only_when_asked, run);
fn writable_only_when_asked(b: &mut dyn Backend) {
    let (a, mut a_peer) = UnixStream::pair().unwrap();
    let (c, _c_peer) = UnixStream::pair().unwrap();
    // Tokens come back unchanged, large ones included.
    let big = usize::MAX >> 1;
    set(b, &a, big, NONE, WRITE);
    set(b, &c, 3, NONE, READ);
    assert_eq!(soon(b), [w(big)]);
    // Pending input on a WRITE-only descriptor is not reported as readable.
    a_peer.write_all(b"x").unwrap();
    assert_eq!(soon(b), [w(big)]);
    set(b, &a, big, WRITE, NONE);
    set(b, &c, 3, READ, NONE);
}

for_each_backend!(modify_read_write_both, run);
fn modify_read_write_both(b: &mut dyn Backend) {
    let (mut a, mut peer) = UnixStream::pair().unwrap();
    peer.write_all(b"x").unwrap();
    set(b, &a, 4, NONE, READ);
    assert_eq!(soon(b), [r(4)]);
    set(b, &a, 4, READ, WRITE);
    assert_eq!(soon(b), [w(4)]);
    set(b, &a, 4, WRITE, BOTH);
    assert_eq!(soon(b), [rw(4)]);
    set(b, &a, 4, BOTH, READ);
    assert_eq!(soon(b), [r(4)]);
    set(b, &a, 4, READ, BOTH);
    read_one(&mut a);
    assert_eq!(soon(b), [w(4)]);
    // A modification carries the token too; the latest one is reported.
    set(b, &a, 7, BOTH, WRITE);
    assert_eq!(soon(b), [w(7)]);
    set(b, &a, 7, WRITE, READ);
    quiet(b);
    set(b, &a, 7, READ, NONE);
}

for_each_backend!(remove_then_no_events, run);
fn remove_then_no_events(b: &mut dyn Backend) {
    let (a, mut a_peer) = UnixStream::pair().unwrap();
    let (c, mut c_peer) = UnixStream::pair().unwrap();
    a_peer.write_all(b"x").unwrap();
    c_peer.write_all(b"x").unwrap();
    set(b, &a, 1, NONE, READ);
    set(b, &c, 2, NONE, BOTH);
    assert_eq!(soon(b), [r(1), rw(2)]);
    set(b, &a, 1, READ, NONE);
    assert_eq!(soon(b), [rw(2)]);
    set(b, &c, 2, BOTH, NONE);
    quiet(b);
    // Removal is complete: the descriptor can be added again, under a new token.
    set(b, &a, 5, NONE, READ);
    assert_eq!(soon(b), [r(5)]);
    set(b, &a, 5, READ, NONE);
    quiet(b);
}

for_each_backend!(no_event_for_none_after_peer_reset, run);
fn no_event_for_none_after_peer_reset(b: &mut dyn Backend) {
    let (mut s, client) = tcp_pair();
    let (u, _u_peer) = UnixStream::pair().unwrap();
    set(b, &u, 6, NONE, READ);
    set(b, &s, 5, NONE, READ);
    quiet(b);
    // Reading paused (say, backpressure): the descriptor wants nothing.
    set(b, &s, 5, READ, NONE);
    reset(client);
    await_hangup(&s);
    // The reset is pending in the kernel, yet a descriptor that wants nothing is not reported.
    quiet(b);
    quiet(b);
    // It was pending all along: asking again reports it at once, folded.
    set(b, &s, 5, NONE, READ);
    let folded = if b.name() == "select" { r(5) } else { rw(5) };
    assert_eq!(soon(b), [folded]);
    let err = s.read(&mut [0u8; 8]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionReset);
    set(b, &s, 5, READ, NONE);
    set(b, &u, 6, READ, NONE);
}

for_each_backend!(hangup_folded_into_readable_and_writable, run);
fn hangup_folded_into_readable_and_writable(b: &mut dyn Backend) {
    let (a, a_peer) = UnixStream::pair().unwrap();
    let (s, client) = tcp_pair();
    set(b, &a, 1, NONE, READ);
    set(b, &s, 2, NONE, WRITE);
    assert_eq!(soon(b), [w(2)]);
    drop(a_peer);
    reset(client);
    await_hangup(&a);
    await_hangup(&s);
    // select has no error set: it reports the hang-up in the registered direction only
    // (see the Folding clause of the contract).
    let want = if b.name() == "select" {
        [r(1), w(2)]
    } else {
        [rw(1), rw(2)]
    };
    assert_eq!(soon(b), want);
    set(b, &a, 1, READ, NONE);
    set(b, &s, 2, WRITE, NONE);
    quiet(b);
}

for_each_backend!(many_descriptors_right_subset, run);
fn many_descriptors_right_subset(b: &mut dyn Backend) {
    const PAIRS: usize = 100;
    // Token t is socket t: ends[2i] and ends[2i + 1] are the two ends of pair i.
    let mut ends = Vec::new();
    for _ in 0..PAIRS {
        let (x, y) = UnixStream::pair().unwrap();
        ends.push(x);
        ends.push(y);
    }
    let mut has_data = vec![false; ends.len()];
    for t in (0..ends.len()).filter(|t| t % 3 == 0 || t % 7 == 0) {
        ends[t ^ 1].write_all(b"x").unwrap();
        has_data[t] = true;
    }
    let mut interest = vec![NONE; ends.len()];
    let expect = |interest: &[Interest]| -> Vec<Event> {
        (0..interest.len())
            .map(|t| ev(t, interest[t].read && has_data[t], interest[t].write))
            .filter(|e| e.readable || e.writable)
            .collect()
    };
    let change = |b: &mut dyn Backend, interest: &mut [Interest], t: usize, new| {
        set(b, &ends[t], t, interest[t], new);
        interest[t] = new;
    };
    for t in 0..ends.len() {
        change(b, &mut interest, t, READ);
    }
    assert_eq!(soon(b), expect(&interest));
    // Remove a scattered fifth (poll moves entries around), make some writers, re-add some.
    for t in (0..ends.len()).filter(|t| t % 5 == 0) {
        change(b, &mut interest, t, NONE);
    }
    for t in (0..ends.len()).filter(|t| t % 11 == 1) {
        change(b, &mut interest, t, BOTH);
    }
    for t in (0..ends.len()).filter(|t| t % 10 == 0) {
        change(b, &mut interest, t, READ);
    }
    assert_eq!(soon(b), expect(&interest));
    for t in 0..ends.len() {
        if !interest[t].is_none() {
            change(b, &mut interest, t, NONE);
        }
    }
    quiet(b);
}

for_each_backend!(timeout_never_returns_early, run);
fn timeout_never_returns_early(b: &mut dyn Backend) {
    let check = |b: &mut dyn Backend, timeout: Duration| {
        let start = Instant::now();
        assert_eq!(wait(b, Some(timeout)), []);
        let took = start.elapsed();
        assert!(
            took >= timeout,
            "{}: {timeout:?} ended after {took:?}",
            b.name()
        );
        assert!(
            took < timeout + SLACK,
            "{}: {timeout:?} took {took:?}",
            b.name()
        );
    };
    // Nothing registered at all: still a timed sleep.
    check(b, Duration::from_millis(60));
    let (a, _peer) = UnixStream::pair().unwrap();
    set(b, &a, 1, NONE, READ);
    // Sub-millisecond parts must round up, not down.
    for us in [1, 1_500, 10_300, 60_000] {
        check(b, Duration::from_micros(us));
    }
    let start = Instant::now();
    assert_eq!(wait(b, Some(Duration::ZERO)), []);
    assert!(start.elapsed() < SLACK);
    set(b, &a, 1, READ, NONE);
}

for_each_backend!(no_timeout_waits_until_ready, run);
fn no_timeout_waits_until_ready(b: &mut dyn Backend) {
    let (mut a, mut peer) = UnixStream::pair().unwrap();
    set(b, &a, 1, NONE, READ);
    peer.write_all(b"x").unwrap();
    assert_eq!(wait(b, None), [r(1)]);
    read_one(&mut a);
    let delay = Duration::from_millis(50);
    let start = Instant::now();
    let writer = thread::spawn(move || {
        thread::sleep(delay);
        peer.write_all(b"y").unwrap();
        peer
    });
    // Spurious wake-ups are allowed; returning before the write with an event is not.
    let events = loop {
        let events = wait(b, None);
        if !events.is_empty() {
            break events;
        }
    };
    assert!(start.elapsed() >= delay);
    assert_eq!(events, [r(1)]);
    let _peer = writer.join().unwrap();
    set(b, &a, 1, READ, NONE);
}

extern "C" fn ignore_signal(_: libc::c_int) {}

for_each_backend!(interrupted_wait_is_reported, run);
fn interrupted_wait_is_reported(b: &mut dyn Backend) {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let action = SigAction::new(
        SigHandler::Handler(ignore_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: the handler does nothing, so it is async-signal-safe; nothing else in this
    // test process uses SIGURG.
    unsafe { sigaction(Signal::SIGURG, &action) }.unwrap();
    let (a, _peer) = UnixStream::pair().unwrap();
    set(b, &a, 1, NONE, READ);
    // SAFETY: plain call; the id stays valid because this thread outlives `pinger`.
    let me = unsafe { libc::pthread_self() };
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = Arc::clone(&stop);
    // Keep signalling until the wait has returned: one signal could land before it starts.
    let pinger = thread::spawn(move || {
        while !stop2.load(Ordering::SeqCst) {
            thread::sleep(Duration::from_millis(20));
            // SAFETY: `me` is alive: it joins this thread before it returns.
            unsafe { libc::pthread_kill(me, libc::SIGURG) };
        }
    });
    let start = Instant::now();
    let mut events = Vec::new();
    let res = b.wait(&mut events, Some(Duration::from_secs(20)));
    stop.store(true, Ordering::SeqCst);
    pinger.join().unwrap();
    match res {
        Err(e) if e.kind() == ErrorKind::Interrupted => {}
        other => panic!("{}: expected Interrupted, got {other:?}", b.name()),
    }
    assert!(start.elapsed() < Duration::from_secs(15));
    set(b, &a, 1, READ, NONE);
}

for_each_backend!(descriptor_above_fd_setsize, run);
fn descriptor_above_fd_setsize(b: &mut dyn Backend) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    const HIGH: i32 = 1500;
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    let need = HIGH as libc::rlim_t + 64;
    if soft < need {
        if hard < need {
            println!("skipped: RLIMIT_NOFILE hard limit {hard} < {need}, cannot open fd {HIGH}");
            return;
        }
        setrlimit(Resource::RLIMIT_NOFILE, need.max(4096).min(hard), hard).unwrap();
    }
    let (a, mut a_peer) = UnixStream::pair().unwrap();
    // F_DUPFD picks the lowest free fd >= HIGH; dup2 could clobber another test's fd.
    let high = nix::fcntl::fcntl(a.as_raw_fd(), nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(HIGH))
        .unwrap_or_else(|e| panic!("F_DUPFD_CLOEXEC({HIGH}): {e}"));
    // SAFETY: `high` was just created by fcntl and is owned by nothing else.
    let high = unsafe { OwnedFd::from_raw_fd(high) };
    assert!(high.as_raw_fd() as usize >= libc::FD_SETSIZE);
    drop(a);
    let (c, mut c_peer) = UnixStream::pair().unwrap();
    set(b, &c, 2, NONE, READ);
    a_peer.write_all(b"x").unwrap();
    c_peer.write_all(b"x").unwrap();
    let res = b.set_interest(high.as_raw_fd(), Token(1), NONE, READ);
    if b.name() == "select" {
        let err = res.expect_err("select accepted an fd >= FD_SETSIZE");
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        // Refused means nothing changed: not even removal touches it.
        let err = b
            .set_interest(high.as_raw_fd(), Token(1), READ, NONE)
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert_eq!(soon(b), [r(2)]);
        set(b, &c, 2, READ, BOTH);
        assert_eq!(soon(b), [rw(2)]);
        set(b, &c, 2, BOTH, NONE);
    } else {
        res.unwrap();
        assert_eq!(soon(b), [r(1), r(2)]);
        set(b, &high, 1, READ, NONE);
        set(b, &c, 2, READ, NONE);
    }
    quiet(b);
}

for_each_backend!(negative_fd_is_refused, run);
fn negative_fd_is_refused(b: &mut dyn Backend) {
    let (c, mut c_peer) = UnixStream::pair().unwrap();
    set(b, &c, 2, NONE, READ);
    let err = b.set_interest(-1, Token(1), NONE, READ).unwrap_err();
    if b.name() != "epoll" {
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
    }
    c_peer.write_all(b"x").unwrap();
    assert_eq!(soon(b), [r(2)]);
    set(b, &c, 2, READ, NONE);
}
