//! Started from a terminal with `stty tostop` (SPEC §8, issue 15 item 7): the workers, in
//! process groups of their own, are background writers to the terminal; their log lines
//! must not stop them (SIGTTOU), and one Ctrl-C is one graceful shutdown. Run for real on a
//! pseudo-terminal: the daemon is a session leader in the foreground (Ctrl-C typed into
//! the terminal), or in the background (another process group holds the terminal; the
//! daemon's own writes raise SIGTTOU too; SIGINT is sent to its process group, as a shell's
//! `kill -INT %1` does).

use std::fs::File;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::util::client::{self, echo_exact, fresh_seed};
use crate::util::{Watchdog, BIN, TEST_LIMIT};
use crate::workers::pool::{children, is_gone, PATIENCE};

/// A pty pair with TOSTOP set: (master, slave).
fn tostop_pty() -> (File, OwnedFd) {
    // SAFETY: plain libc calls on descriptors this function owns; `name` is a buffer of
    // the length passed; `t` is filled by tcgetattr before it is changed and written back.
    unsafe {
        let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        assert!(master >= 0, "posix_openpt failed");
        let master = File::from_raw_fd(master);
        assert_eq!(libc::grantpt(master.as_raw_fd()), 0);
        assert_eq!(libc::unlockpt(master.as_raw_fd()), 0);
        let mut name = [0 as libc::c_char; 128];
        assert_eq!(
            libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len()),
            0
        );
        let slave = libc::open(
            name.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        );
        assert!(slave >= 0, "cannot open the pty slave");
        let slave = OwnedFd::from_raw_fd(slave);
        let mut t: libc::termios = std::mem::zeroed();
        assert_eq!(libc::tcgetattr(slave.as_raw_fd(), &mut t), 0);
        t.c_lflag |= libc::TOSTOP | libc::ISIG;
        assert_eq!(libc::tcsetattr(slave.as_raw_fd(), libc::TCSANOW, &t), 0);
        (master, slave)
    }
}

/// The daemon on a terminal, and everything it wrote there.
struct OnTty {
    /// The session leader: the daemon, or in the background case a placeholder (`sleep`)
    /// in the terminal's foreground group, the daemon's parent.
    leader: Child,
    /// The daemon (the supervisor).
    daemon: i32,
    placeholder: Option<i32>,
    master: File,
    out: Arc<Mutex<String>>,
}

impl OnTty {
    /// Start `echo-mux args` with the pty as its controlling terminal and stdio: as the
    /// session leader in the foreground, or `background` (see below).
    fn start(args: &[&str], background: bool) -> OnTty {
        let (master, slave) = tostop_pty();
        let stdio = || Stdio::from(slave.try_clone().unwrap());
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .stdin(stdio())
            .stdout(stdio())
            .stderr(stdio());
        // SAFETY: only async-signal-safe calls (setsid, ioctl, fork, setpgid, execv, _exit)
        // between fork and exec, on static strings; nothing allocates.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if !background {
                    return Ok(());
                }
                // This process (the session leader, in the terminal's foreground group)
                // becomes the placeholder that holds the terminal, as a shell would; its
                // child goes on to exec the daemon in a process group of its own: a
                // background job whose parent is in its session (so it is not orphaned).
                match libc::fork() {
                    -1 => Err(std::io::Error::last_os_error()),
                    0 => {
                        libc::setpgid(0, 0);
                        Ok(())
                    }
                    pid => {
                        libc::setpgid(pid, pid);
                        let argv = [c"/bin/sleep".as_ptr(), c"120".as_ptr(), std::ptr::null()];
                        libc::execv(argv[0], argv.as_ptr());
                        libc::_exit(127)
                    }
                }
            });
        }
        let leader = cmd.spawn().expect("spawn echo-mux on a pty");
        drop(slave);
        let out = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&out);
        let mut reader = master.try_clone().unwrap();
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // EIO once no process holds the terminal any more.
            while let Ok(n @ 1..) = reader.read(&mut buf) {
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        // The daemon: the leader itself, or the placeholder's child (forked before the
        // placeholder's exec; it may not have run its own exec yet).
        let mut daemon = leader.id() as i32;
        let mut placeholder = None;
        if background {
            let deadline = Instant::now() + PATIENCE;
            placeholder = Some(daemon);
            daemon = loop {
                let found = children(daemon).into_iter().map(|(p, _)| p).find(|p| {
                    std::fs::read_to_string(format!("/proc/{p}/comm"))
                        .is_ok_and(|c| c == "echo-mux\n")
                });
                if let Some(p) = found {
                    break p;
                }
                assert!(Instant::now() < deadline, "the daemon never ran");
                thread::sleep(Duration::from_millis(5));
            };
        }
        OnTty {
            leader,
            daemon,
            placeholder,
            master,
            out,
        }
    }

    /// The workers' pids.
    fn workers(&self) -> Vec<(i32, char)> {
        children(self.daemon)
    }

    fn text(&self) -> String {
        self.out.lock().unwrap().clone()
    }

    /// Wait for a line containing `needle`; fail with the terminal's text.
    fn expect(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = self.text();
            if let Some(l) = text.lines().find(|l| l.contains(needle)) {
                return l.to_string();
            }
            if Instant::now() >= deadline {
                panic!(
                    "no line {needle:?} on the terminal within 30 s; workers: {:?}\n{text}",
                    self.workers()
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn count(&self, needle: &str) -> usize {
        self.text().matches(needle).count()
    }

    /// The daemon's exit code within `within` (a placeholder does not reap its child: then
    /// read from the zombie's /proc/PID/stat, whose 52nd field is the wait status).
    fn exit_code(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        loop {
            if self.placeholder.is_none() {
                if let Some(st) = self.leader.try_wait().unwrap() {
                    return st.code();
                }
            } else if let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", self.daemon))
            {
                let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
                if fields[0] == "Z" {
                    let raw: i32 = fields[52 - 3].trim().parse().unwrap();
                    return libc::WIFEXITED(raw).then(|| libc::WEXITSTATUS(raw));
                }
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for OnTty {
    fn drop(&mut self) {
        // SAFETY: kill(2) on processes this test started.
        unsafe {
            libc::kill(self.daemon, libc::SIGKILL);
            libc::kill(self.leader.id() as i32, libc::SIGKILL);
        }
        let _ = self.leader.wait();
    }
}

/// Both cases: 2 workers serve, no worker is ever stopped, one interrupt drains each worker
/// once (a held client keeps the drain going: no second SIGINT ends it), exit 0.
fn tostop_terminal(background: bool) {
    let mut t = OnTty::start(
        &[
            "--workers",
            "2",
            "--listen",
            "127.0.0.1:0",
            "--shutdown-timeout",
            "60s",
        ],
        background,
    );
    t.expect("supervisor: all 2 workers are accepting");
    let line = t.expect("worker 1: listening on ");
    let addr: SocketAddr = line
        .split("listening on ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    for _ in 0..10 {
        let s = client::connect(addr).unwrap();
        echo_exact(&s, fresh_seed(), 5000, true).unwrap();
    }
    let stopped: Vec<_> = t
        .workers()
        .into_iter()
        .filter(|&(_, st)| st == 'T' || st == 't')
        .collect();
    assert!(stopped.is_empty(), "stopped workers: {stopped:?}");
    let workers: Vec<i32> = t.workers().into_iter().map(|(p, _)| p).collect();
    assert_eq!(workers.len(), 2, "{workers:?}");
    // Held clients on whatever workers they land on keep the drains going.
    let held: Vec<_> = (0..8)
        .map(|_| {
            let s = client::connect(addr).unwrap();
            client::ping(&s, b"held").unwrap();
            s
        })
        .collect();
    if background {
        // SAFETY: kill(2) on the daemon's own process group (the job).
        assert_eq!(unsafe { libc::kill(-t.daemon, libc::SIGINT) }, 0);
    } else {
        // Ctrl-C, typed: the terminal sends SIGINT to its foreground group.
        t.master.write_all(b"\x03").unwrap();
    }
    t.expect("supervisor: SIGINT received: stopping 2 workers");
    t.expect("worker 1: SIGINT received: draining");
    t.expect("worker 2: SIGINT received: draining");
    assert_eq!(
        t.exit_code(Duration::from_millis(500)),
        None,
        "{}",
        t.text()
    );
    drop(held);
    assert_eq!(t.exit_code(PATIENCE), Some(0), "{}", t.text());
    for k in 1..=2 {
        assert_eq!(t.count(&format!("worker {k}: SIGINT received")), 1);
    }
    assert_eq!(t.count("SIGINT received: stopping"), 1, "{}", t.text());
    assert_eq!(t.count("second SIGINT"), 0, "{}", t.text());
    for pid in workers {
        assert!(is_gone(pid), "worker {pid} outlived the supervisor");
    }
}

#[test]
fn workers_serve_from_a_tostop_terminal_and_one_ctrl_c_drains_once() {
    let _w = Watchdog::new("terminal::foreground", TEST_LIMIT);
    tostop_terminal(false);
}

#[test]
fn workers_serve_in_the_background_of_a_tostop_terminal() {
    let _w = Watchdog::new("terminal::background", TEST_LIMIT);
    tostop_terminal(true);
}
