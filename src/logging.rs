//! Logging that never blocks the loop (README, "Where the SPEC is silent").
//!
//! The daemon is one thread: one blocking write to a stderr that nobody reads would stop
//! every client. So log lines go to a bounded queue ([`QUEUE_LIMIT`]) that is written only
//! as far as stderr takes it without waiting:
//! - pipes, terminals, files: `poll(POLLOUT, 0)`, then at most PIPE_BUF bytes per write. A
//!   pipe that polls writable has a free page, so such a write cannot block; chunks end at a
//!   newline where one fits, so lines stay whole in a pipe shared with other processes.
//! - sockets (journald's stream under systemd): `send(MSG_DONTWAIT)`.
//!
//! O_NONBLOCK is never set on stderr: its open file description is shared with whoever
//! started us (a shell, systemd, a test), and the flag would change their stderr too.
//! A line that does not fit in the queue is dropped and counted; once stderr has taken the
//! whole queue, a warning says how many were lost. The loop calls [`flush`] every turn and,
//! while lines are pending, sleeps at most [`RETRY`] so that they go out.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::os::fd::RawFd;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::sys::cvt;

/// Bytes of log the daemon holds for a stderr that is not taking them.
pub const QUEUE_LIMIT: usize = 64 * 1024;
/// Longest sleep of the loop while log lines are pending.
pub const RETRY: Duration = Duration::from_millis(100);
/// At exit, how long pending lines may wait for stderr.
const EXIT_GRACE: Duration = Duration::from_secs(1);

static STDERR: Mutex<Queue> = Mutex::new(Queue::new(libc::STDERR_FILENO, QUEUE_LIMIT));

/// Put in front of every log line of this process: `supervisor: `, `worker 2: ` (SPEC §8).
static PREFIX: std::sync::RwLock<&'static str> = std::sync::RwLock::new("");

/// Start every later log line of this process with `prefix`. Set at most twice per process
/// (supervisor, then worker after the fork), so leaking the old one costs nothing.
pub fn set_prefix(prefix: String) {
    if let Ok(mut p) = PREFIX.write() {
        *p = Box::leak(prefix.into_boxed_str());
    }
}

/// In a freshly forked child: forget the lines the parent had queued (they are the
/// parent's to write; the child would write them a second time).
pub fn after_fork() {
    let mut q = stderr();
    q.bytes.clear();
    q.dropped = 0;
}

/// Log to stderr at `level` unless `RUST_LOG` says otherwise. Under systemd (JOURNAL_STREAM
/// set) lines carry `<N>` priority prefixes for journald instead of timestamps.
pub fn init(level: log::LevelFilter) {
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let mut builder = env_logger::Builder::new();
    builder.filter_level(level);
    if let Ok(spec) = std::env::var("RUST_LOG") {
        builder.parse_filters(&spec);
    }
    builder.target(env_logger::Target::Pipe(Box::new(Sink)));
    builder.format(move |f, record| {
        let prefix = PREFIX.read().map_or("", |p| *p);
        if journald {
            let prio = match record.level() {
                log::Level::Error => 3,
                log::Level::Warn => 4,
                log::Level::Info => 6,
                log::Level::Debug | log::Level::Trace => 7,
            };
            writeln!(f, "<{prio}>{prefix}{}", record.args())
        } else {
            let ts = f.timestamp_millis();
            writeln!(f, "[{ts} {:<5}] {prefix}{}", record.level(), record.args())
        }
    });
    builder.init();
}

/// Queue `text` (whole lines, not a log record: the final error line of `main`).
pub fn emit(text: &str) {
    stderr().push(text.as_bytes());
}

/// Write what stderr takes now, without blocking. Returns `timeout` shortened to at most
/// [`RETRY`] while lines are still pending. Once the queue has drained after lines were
/// dropped, logs how many.
pub fn flush(timeout: Option<Duration>) -> Option<Duration> {
    let dropped = {
        let mut q = stderr();
        q.write_some();
        q.take_dropped()
    };
    if let Some(n) = dropped {
        let kib = QUEUE_LIMIT / 1024;
        log::warn!(
            "{n} log lines dropped: stderr did not keep up and the {kib} KiB queue was full"
        );
    }
    if stderr().bytes.is_empty() {
        timeout
    } else {
        Some(timeout.map_or(RETRY, |t| t.min(RETRY)))
    }
}

/// At exit: give pending lines up to a second to go out, then give up on them.
pub fn finish() {
    let deadline = Instant::now() + EXIT_GRACE;
    while flush(None).is_some() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        let fd = stderr().fd;
        let _ = wait_writable(fd, left.min(RETRY));
    }
}

fn stderr() -> MutexGuard<'static, Queue> {
    STDERR.lock().unwrap_or_else(PoisonError::into_inner)
}

/// env_logger's target: every record arrives as one `write_all` of a whole line.
struct Sink;

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        stderr().push(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Socket,
    Other,
}

/// The bounded queue in front of one descriptor.
struct Queue {
    fd: RawFd,
    /// Learned at the first write (fstat).
    kind: Option<Kind>,
    bytes: VecDeque<u8>,
    limit: usize,
    dropped: u64,
    /// The descriptor failed (closed, EPIPE): nothing will ever be read, discard everything.
    broken: bool,
}

impl Queue {
    const fn new(fd: RawFd, limit: usize) -> Queue {
        Queue {
            fd,
            kind: None,
            bytes: VecDeque::new(),
            limit,
            dropped: 0,
            broken: false,
        }
    }

    /// Queue `line` whole, or drop it if the queue has no room; write what stderr takes.
    fn push(&mut self, line: &[u8]) {
        self.write_some();
        if self.broken {
            return;
        }
        if self.bytes.len() + line.len() > self.limit {
            self.dropped += 1;
            return;
        }
        self.bytes.extend(line);
        self.write_some();
    }

    /// Write queued bytes for as long as the descriptor takes them without blocking.
    fn write_some(&mut self) {
        while !self.bytes.is_empty() && !self.broken {
            let kind = match self.kind {
                Some(kind) => Ok(kind),
                None => kind_of(self.fd).inspect(|&k| self.kind = Some(k)),
            };
            let (front, _) = self.bytes.as_slices();
            match kind.and_then(|kind| write_once(self.fd, kind, front)) {
                Ok(0) => return,
                Ok(n) => drop(self.bytes.drain(..n)),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    self.broken = true;
                    self.bytes = VecDeque::new();
                }
            }
        }
    }

    /// The count of dropped lines, once the queue has drained (then reset to zero).
    fn take_dropped(&mut self) -> Option<u64> {
        if self.dropped == 0 || !self.bytes.is_empty() || self.broken {
            return None;
        }
        Some(std::mem::take(&mut self.dropped))
    }
}

/// One write of (the start of) `buf` that cannot block; `Ok(0)` when `fd` is not writable now.
fn write_once(fd: RawFd, kind: Kind, buf: &[u8]) -> io::Result<usize> {
    let n = if kind == Kind::Socket {
        let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
        // SAFETY: `buf` is valid for reads of `buf.len()` bytes during the call.
        cvt(unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), flags) })?
    } else {
        if !wait_writable(fd, Duration::ZERO)? {
            return Ok(0);
        }
        let mut len = buf.len().min(libc::PIPE_BUF);
        if len < buf.len() {
            if let Some(nl) = buf[..len].iter().rposition(|&b| b == b'\n') {
                len = nl + 1;
            }
        }
        // SAFETY: `buf[..len]` is valid for reads of `len` bytes during the call.
        cvt(unsafe { libc::write(fd, buf.as_ptr().cast(), len) })?
    };
    Ok(n as usize)
}

fn kind_of(fd: RawFd) -> io::Result<Kind> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat fills the stat buffer it is given; it is read only after success.
    cvt(unsafe { libc::fstat(fd, st.as_mut_ptr()) })?;
    // SAFETY: fstat succeeded, so `st` is initialised.
    let mode = unsafe { st.assume_init() }.st_mode;
    Ok(if mode & libc::S_IFMT == libc::S_IFSOCK {
        Kind::Socket
    } else {
        Kind::Other
    })
}

/// Can `fd` take a write within `wait`? Errors and hangups count as yes: the write reports them.
fn wait_writable(fd: RawFd, wait: Duration) -> io::Result<bool> {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    };
    let ms = wait.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: one valid pollfd, and the count says one.
    let n = cvt(unsafe { libc::poll(&mut p, 1, ms) })?;
    Ok(n > 0 && p.revents & (libc::POLLOUT | libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0)
}

#[cfg(test)]
mod tests;
