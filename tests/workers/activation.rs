//! `--workers` under systemd's protocols: socket activation (one inherited socket shared by
//! every worker) and sd_notify (only the supervisor speaks, once every worker accepts).

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::pool::{children, PATIENCE};
use crate::util::client::{echo_exact, fresh_seed};
use crate::util::BIN;

/// A child whose stderr lines arrive on a channel; killed and reaped on drop.
struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Proc {
    fn spawn(mut cmd: Command) -> Proc {
        for var in [
            "LISTEN_PID",
            "LISTEN_FDS",
            "LISTEN_FDNAMES",
            "NOTIFY_SOCKET",
            "RUST_LOG",
        ] {
            if !cmd.get_envs().any(|(k, _)| k == var) {
                cmd.env_remove(var);
            }
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Proc {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    fn wait_line(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(l) = self.seen.iter().find(|l| l.contains(needle)) {
                return l.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => self.seen.push(l),
                Err(_) => panic!("no line with {needle:?}:\n{}", self.seen.join("\n")),
            }
        }
    }

    /// Every line so far, for failure messages.
    fn stderr(&mut self) -> String {
        while let Ok(l) = self.lines.try_recv() {
            self.seen.push(l);
        }
        self.seen.join("\n")
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn terminate(&mut self) {
        kill(Pid::from_raw(self.pid()), Signal::SIGTERM).unwrap();
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            if let Some(st) = self.child.try_wait().unwrap() {
                assert_eq!(st.code(), Some(0), "{}", self.seen.join("\n"));
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("no exit after SIGTERM:\n{}", self.seen.join("\n"));
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Is `pid` stopped (state T in /proc/PID/stat)?
fn stopped_state(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rfind(')')
        .is_some_and(|i| stat[i + 2..].starts_with('T'))
}

/// `systemd-socket-activate` hands one listening socket to a supervisor with 2 workers:
/// each worker serves it (one socket, registered EPOLLEXCLUSIVE: the connections go to
/// whichever worker is idle, so each is shown serving while the other is stopped), every
/// client is echoed, and the counts add up.
#[test]
fn socket_activation_with_two_workers() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cmd = Command::new("systemd-socket-activate");
    cmd.arg("-l").arg(format!("127.0.0.1:{port}"));
    cmd.arg(BIN).args(["--backend", "epoll", "--workers", "2"]);
    let mut p = Proc::spawn(cmd);
    p.wait_line("as 3.");
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let echo_10 = || {
        for _ in 0..10 {
            let s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(PATIENCE)).unwrap();
            echo_exact(&s, fresh_seed(), 5000, true).unwrap();
        }
    };
    echo_10(); // starts the daemon
    p.wait_line("1 inherited");
    p.wait_line("all 2 workers are accepting");
    let pid = |p: &mut Proc, k: usize| -> i32 {
        let line = p.wait_line(&format!("worker {k} started (pid "));
        line.rsplit("(pid ")
            .next()
            .unwrap()
            .trim_end_matches(')')
            .parse()
            .unwrap()
    };
    let workers = [pid(&mut p, 1), pid(&mut p, 2)];
    let signal = |p: &mut Proc, pid: i32, sig: Signal| {
        if let Err(e) = kill(Pid::from_raw(pid), sig) {
            panic!("kill {sig} {pid}: {e}\n{}", p.stderr());
        }
    };
    for (stopped, serving) in [(workers[0], 2), (workers[1], 1)] {
        signal(&mut p, stopped, Signal::SIGSTOP);
        // Connect only once it has stopped: a worker still running could take one more.
        let t0 = Instant::now();
        while !stopped_state(stopped) {
            assert!(t0.elapsed() < PATIENCE, "{stopped} did not stop");
            std::thread::sleep(Duration::from_millis(5));
        }
        echo_10();
        signal(&mut p, stopped, Signal::SIGCONT);
        signal(&mut p, workers[serving - 1], Signal::SIGUSR1);
        let line = p.wait_line(&format!("worker {serving}: stats: "));
        let accepted: u64 = line
            .split(" accepted=")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            accepted >= 10,
            "worker {serving} while the other was stopped: {line}"
        );
        p.seen.retain(|l| !l.contains("stats: "));
    }
    assert_eq!(children(p.pid()).len(), 2);
    // The totals are what the workers have published: ask again until the counts land.
    let deadline = Instant::now() + PATIENCE;
    let line = loop {
        kill(Pid::from_raw(p.pid()), Signal::SIGUSR1).unwrap();
        let line = p.wait_line("supervisor: stats: ");
        let done = line.contains(" accepted=30 ") && line.contains(" bytes_in=150000 ");
        if done || Instant::now() >= deadline {
            break line;
        }
        p.seen.retain(|l| !l.contains("stats: "));
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        line.contains(" accepted=30 ") && line.contains(" bytes_in=150000 "),
        "{line}"
    );
    assert!(line.ends_with(" workers=2"), "{line}");
    p.terminate();
}

/// Only the supervisor talks to NOTIFY_SOCKET: READY=1 once, after every worker accepts;
/// STATUS= counts connections and workers; STOPPING=1 on SIGTERM. Every datagram's sender
/// (SCM_CREDENTIALS) is the supervisor.
#[test]
fn only_the_supervisor_notifies_systemd() {
    use nix::sys::socket::{recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags};
    use std::os::fd::AsRawFd;
    let dir = std::env::temp_dir().join(format!("echo-mux-wnotify-{}", fresh_seed()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("notify.sock");
    let rx = UnixDatagram::bind(&path).unwrap();
    setsockopt(&rx, sockopt::PassCred, &true).unwrap();
    rx.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut got: Vec<(i32, String)> = Vec::new();
    let recv_for = |d: Duration, got: &mut Vec<(i32, String)>| {
        let end = Instant::now() + d;
        while Instant::now() < end {
            let mut buf = [0u8; 512];
            let mut iov = [std::io::IoSliceMut::new(&mut buf)];
            let mut cmsg = nix::cmsg_space!(nix::sys::socket::UnixCredentials);
            let Ok(msg) =
                recvmsg::<()>(rx.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::empty())
            else {
                continue;
            };
            let pid = msg.cmsgs().unwrap().find_map(|c| match c {
                ControlMessageOwned::ScmCredentials(cr) => Some(cr.pid()),
                _ => None,
            });
            let n = msg.bytes;
            let text = String::from_utf8_lossy(&buf[..n]).to_string();
            got.push((pid.unwrap_or(0), text));
        }
    };
    let mut cmd = Command::new(BIN);
    cmd.args(["--listen", "127.0.0.1:0", "--workers", "3"]);
    cmd.env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "400000");
    let mut p = Proc::spawn(cmd);
    let ready_line = p.wait_line("all 3 workers are accepting");
    let line = p.wait_line("listening on 127.0.0.1:");
    let port: u16 = line
        .rsplit(':')
        .next()
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    recv_for(Duration::from_millis(600), &mut got);
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    echo_exact(&s, fresh_seed(), 100, false).unwrap();
    // The status follows the connection count within a watchdog period or so: wait for it
    // (and for two keep-alives), bounded.
    let count =
        |got: &[(i32, String)], want: &str| got.iter().filter(|(_, t)| t.contains(want)).count();
    let deadline = Instant::now() + PATIENCE;
    while (count(&got, "STATUS=1 connections, 3 workers") == 0 || count(&got, "WATCHDOG=1") < 2)
        && Instant::now() < deadline
    {
        recv_for(Duration::from_millis(100), &mut got);
    }
    drop(s);
    p.terminate();
    recv_for(Duration::from_millis(100), &mut got);
    let sup = p.pid();
    let all = format!("{got:?} {ready_line}");
    assert!(
        got.iter().all(|(pid, _)| *pid == sup),
        "a worker notified: {all}"
    );
    let count = |want: &str| count(&got, want);
    assert_eq!(count("READY=1"), 1, "{all}");
    assert!(
        got[0]
            .1
            .starts_with("READY=1\nSTATUS=0 connections, 3 workers"),
        "{all}"
    );
    assert!(count("STATUS=1 connections, 3 workers") >= 1, "{all}");
    assert!(count("WATCHDOG=1") >= 2, "{all}");
    assert_eq!(count("STOPPING=1"), 1, "{all}");
    let _ = std::fs::remove_dir_all(&dir);
}
