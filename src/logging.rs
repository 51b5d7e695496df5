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
//!
//! What a line looks like is [`init`]'s business (text, JSON, the journal's `<N>`).

use std::collections::VecDeque;
use std::io::{self, Write};
use std::os::fd::RawFd;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::sys::cvt;

pub mod json;

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

/// `--log-format` (SPEC §12): how one record becomes one line.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Format {
    /// `[2026-01-02T03:04:05.678Z INFO ] message`, or `<6>message` when stderr is the journal.
    Text,
    /// One JSON object per line: `ts`, `level`, `msg` and the fields of the line ([`json`]).
    Json,
}

/// Log to stderr at `level` unless `RUST_LOG` says otherwise, in `format`. When stderr is
/// the journal's stream ([`stderr_is_journal`]), every line starts with its syslog priority
/// (`<3>` error .. `<7>` debug, sd-daemon(3)) so that `journalctl -p` filters; text lines
/// then carry no timestamp (journald adds its own), JSON lines keep `ts` (journald strips
/// the `<N>`, so the message it stores is the JSON object alone).
pub fn init(level: log::LevelFilter, format: Format) {
    let journal = stderr_is_journal();
    let _ = MODE.set((format, journal));
    let mut builder = env_logger::Builder::new();
    builder.filter_level(level);
    if let Ok(spec) = std::env::var("RUST_LOG") {
        builder.parse_filters(&spec);
    }
    builder.target(env_logger::Target::Pipe(Box::new(Sink)));
    builder.format(move |f, record| {
        use std::fmt::Write as _;
        let prefix = PREFIX.read().map_or("", |p| *p);
        let mut line = String::with_capacity(128);
        if journal {
            let _ = write!(line, "<{}>", priority(record.level()));
        }
        match format {
            Format::Text if journal => {
                let _ = write!(line, "{prefix}{}", record.args());
            }
            Format::Text => {
                let ts = f.timestamp_millis();
                let level = record.level();
                let _ = write!(line, "[{ts} {level:<5}] {prefix}{}", record.args());
            }
            Format::Json => {
                let msg = record.args().to_string();
                json::render(&mut line, &json::now(), record.level(), prefix, &msg);
            }
        }
        line.push('\n');
        f.write_all(line.as_bytes())
    });
    builder.init();
}

/// The syslog priority of a level (sd-daemon(3)): error 3, warn 4, info 6, debug and trace 7.
fn priority(level: log::Level) -> u8 {
    match level {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        log::Level::Info => 6,
        log::Level::Debug | log::Level::Trace => 7,
    }
}

/// Is stderr the journal's stream? systemd sets `JOURNAL_STREAM=DEV:INODE` for the stream it
/// connected to stderr (systemd.exec(5)); a child whose stderr was redirected elsewhere
/// still inherits the variable, so it counts only when stderr's fstat says the same device
/// and inode.
pub fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.to_str().and_then(parse_stream) else {
        return false;
    };
    // st_dev and st_ino are u64 on Linux but narrower on other targets.
    #[allow(clippy::unnecessary_cast)]
    let same = |st: libc::stat| st.st_dev as u64 == dev && st.st_ino as u64 == ino;
    fstat(libc::STDERR_FILENO).is_ok_and(same)
}

/// `DEV:INODE`, both decimal.
fn parse_stream(s: &str) -> Option<(u64, u64)> {
    let (dev, ino) = s.split_once(':')?;
    Some((dev.parse().ok()?, ino.parse().ok()?))
}

/// The format and journal state [`init`] chose; unset before it (usage errors).
static MODE: std::sync::OnceLock<(Format, bool)> = std::sync::OnceLock::new();

/// Queue `text` (whole lines, not a log record: `--help` failing to print).
pub fn emit(text: &str) {
    stderr().push(text.as_bytes());
}

/// Queue the final error line of `main`: `echo-mux: {msg}` as it always was on a terminal,
/// with `<3>` when stderr is the journal (so `journalctl -p err` shows why it stopped), and
/// as a JSON object with `--log-format json` (a collector gets nothing that is not JSON).
pub fn fatal(msg: &str) {
    let mut line = String::new();
    let (format, journal) = MODE.get().copied().unwrap_or((Format::Text, false));
    if journal {
        line.push_str("<3>");
    }
    match format {
        Format::Text => line.push_str(&format!("echo-mux: {msg}")),
        Format::Json => json::render(&mut line, &json::now(), log::Level::Error, "", msg),
    }
    line.push('\n');
    emit(&line);
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

/// The lines queued and not yet written (a reload hands them to the new image, which
/// writes them first: an execve must not lose what stderr had not taken yet).
pub fn pending() -> Vec<u8> {
    let mut q = stderr();
    q.write_some();
    q.bytes.iter().copied().collect()
}

/// Queue `bytes` (lines an earlier image of this process had not written yet).
pub fn requeue(bytes: &[u8]) {
    if !bytes.is_empty() {
        stderr().push(bytes);
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

fn fstat(fd: RawFd) -> io::Result<libc::stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat fills the stat buffer it is given; it is read only after success.
    cvt(unsafe { libc::fstat(fd, st.as_mut_ptr()) })?;
    // SAFETY: fstat succeeded, so `st` is initialised.
    Ok(unsafe { st.assume_init() })
}

fn kind_of(fd: RawFd) -> io::Result<Kind> {
    let mode = fstat(fd)?.st_mode;
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
