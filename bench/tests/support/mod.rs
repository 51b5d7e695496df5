//! Servers and runners for the tool tests: the C peers `udp-echo-mmsg` and `tcp-echo-epoll`
//! (bench/peers/, compiled with gcc into a temp dir per server, removed when it stops), a
//! faulty UDP echo server in a thread, and time-bounded runs of the tools. Each test binary
//! uses a part of it.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const BENCH: &str = env!("CARGO_BIN_EXE_echo-mux-bench");

/// Compiles the C peer `bench/peers/NAME.c` (gcc -O2) into a new temp dir; returns the dir
/// and the binary.
fn compile_peer(name: &str) -> (PathBuf, PathBuf) {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "echo-mux-bench-test-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let bin = dir.join(name);
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("peers/{name}.c"));
    let out = Command::new("gcc")
        .args(["-O2", "-o"])
        .arg(&bin)
        .arg(&src)
        .output()
        .unwrap_or_else(|e| panic!("cannot run gcc (apt-get install -y gcc libc6-dev): {e}"));
    assert!(
        out.status.success(),
        "gcc could not compile {}:\n{}",
        src.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    (dir, bin)
}

/// A running C peer (bench/peers/) on 127.0.0.1; SIGTERM and reaped on drop, its temp dir
/// removed.
pub struct Reference {
    child: Child,
    pub port: u16,
    lines: Receiver<String>,
    dir: PathBuf,
    /// The counter its SIGTERM stats line gives, `datagrams` or `connections`.
    counter: &'static str,
}

impl Reference {
    /// `udp-echo-mmsg`; [`Reference::stop`] returns the datagrams it echoed.
    pub fn start() -> Reference {
        Reference::peer("udp-echo-mmsg", "datagrams")
    }

    /// `tcp-echo-epoll`; [`Reference::stop`] returns the connections it accepted.
    pub fn tcp() -> Reference {
        Reference::peer("tcp-echo-epoll", "connections")
    }

    /// Compiles and starts peer `name` on port 0, reading the port it was given from its
    /// `listening on` line.
    fn peer(name: &str, counter: &'static str) -> Reference {
        let (dir, bin) = compile_peer(name);
        let mut child = Command::new(&bin)
            .arg("0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let lines = stderr_lines(&mut child);
        let line = lines.recv_timeout(Duration::from_secs(10));
        let port = line.as_deref().ok().and_then(|l| {
            let rest = l.split("listening on 127.0.0.1:").nth(1)?;
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        });
        match port {
            Some(port) => Reference {
                child,
                port,
                lines,
                dir,
                counter,
            },
            None => {
                let _ = child.kill();
                let _ = child.wait();
                let _ = std::fs::remove_dir_all(&dir);
                panic!("{name} did not start: {line:?}");
            }
        }
    }

    /// Stops it and returns the counter of its SIGTERM stats line (`datagrams=N` it echoed, or
    /// `connections=N` it accepted).
    pub fn stop(mut self) -> u64 {
        self.terminate();
        let stats = self
            .lines
            .recv_timeout(Duration::from_secs(10))
            .expect("the peer printed no stats line on SIGTERM");
        let key = format!("{}=", self.counter);
        stats
            .split_whitespace()
            .find_map(|f| f.strip_prefix(key.as_str()))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in {stats:?}"))
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM until it exits (it prints its stats line first), SIGKILL after 10 s. The
    /// reference looks at its signal flags when epoll_wait() returns: a SIGTERM that lands
    /// between two waits (while it still sends the last replies, which a loaded machine can
    /// stretch) is only seen at the next wake-up, and an idle server has none. So one signal
    /// is not enough: it is sent again every 200 ms (each interrupts a wait; a repeat is
    /// harmless), bounded by the deadline.
    fn terminate(&mut self) {
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        let pid = Pid::from_raw(self.child.id() as i32);
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            // Not reaped yet, so the pid is still this child's.
            let _ = kill(pid, Signal::SIGTERM);
            let again = Instant::now() + Duration::from_millis(200);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < again {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Reference {
    fn drop(&mut self) {
        self.terminate();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn stderr_lines(child: &mut Child) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().expect("piped");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// What a faulty server does to every `nth` datagram it receives (counting from 1); the
/// others are echoed unchanged.
#[derive(Clone, Copy)]
pub enum Fault {
    /// One byte in the middle flipped.
    Flip(u64),
    /// No answer.
    Drop(u64),
    /// Answered twice.
    Duplicate(u64),
    /// Answered after this long.
    Delay(u64, Duration),
}

/// A UDP echo server in a thread that misbehaves as its `Fault` says; stopped on drop.
pub struct Faulty {
    pub port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Faulty {
    pub fn start(fault: Fault) -> Faulty {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
        sock.set_read_timeout(Some(Duration::from_millis(5)))
            .expect("timeout");
        let port = sock.local_addr().expect("addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || serve(&sock, fault, &flag));
        Faulty {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Faulty {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(sock: &UdpSocket, fault: Fault, stop: &AtomicBool) {
    let mut buf = vec![0u8; 65_536];
    let mut held: VecDeque<(Instant, Vec<u8>, SocketAddr)> = VecDeque::new();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        while held.front().is_some_and(|h| h.0 <= Instant::now()) {
            let (_, data, to) = held.pop_front().expect("front");
            let _ = sock.send_to(&data, to);
        }
        let Ok((len, from)) = sock.recv_from(&mut buf) else {
            continue; // read timeout: look at the stop flag and the held replies
        };
        n += 1;
        let data = &mut buf[..len];
        let nth = match fault {
            Fault::Flip(k) | Fault::Drop(k) | Fault::Duplicate(k) | Fault::Delay(k, _) => k,
        };
        if n.is_multiple_of(nth) {
            match fault {
                Fault::Flip(_) if len > 0 => data[len / 2] ^= 0xff,
                Fault::Flip(_) => {}
                Fault::Drop(_) => continue,
                Fault::Duplicate(_) => {
                    let _ = sock.send_to(data, from);
                }
                Fault::Delay(_, d) => {
                    held.push_back((Instant::now() + d, data.to_vec(), from));
                    continue;
                }
            }
        }
        let _ = sock.send_to(data, from);
    }
}

/// Runs `program ARGS...` under coreutils `timeout` (SIGTERM after `limit`, SIGKILL 5 s
/// later); returns its exit code and everything it printed.
pub fn run_bounded(program: &str, args: &[String], limit: Duration) -> (Option<i32>, String) {
    let out = Command::new("timeout")
        .arg("--kill-after=5")
        .arg(limit.as_secs().to_string())
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

fn strings(fixed: &[&str], port: u16, args: &[&str]) -> Vec<String> {
    let fixed = fixed.iter().map(|s| s.replace("PORT", &port.to_string()));
    fixed.chain(args.iter().map(|s| s.to_string())).collect()
}

/// `echo-mux-bench --udp --json --no-progress -a 127.0.0.1:PORT ARGS...`: exit code and the
/// JSON line (or what it printed instead). Unless ARGS set `--reply-timeout`, it is 5 s, not
/// the default 200 ms: the tests count lost datagrams exactly, and a server thread that a
/// loaded machine stalls for 200 ms has lost nothing.
pub fn bench_udp(port: u16, args: &[&str]) -> (Option<i32>, String) {
    let fixed = ["--udp", "--json", "--no-progress", "-a", "127.0.0.1:PORT"];
    let mut args = args.to_vec();
    if !args.contains(&"--reply-timeout") {
        args.extend(["--reply-timeout", "5s"]);
    }
    run_bounded(
        BENCH,
        &strings(&fixed, port, &args),
        Duration::from_secs(60),
    )
}

/// A number field of the bench's JSON line.
pub fn number(json: &str, key: &str) -> f64 {
    let pat = format!("\"{key}\":");
    let at = json
        .find(&pat)
        .unwrap_or_else(|| panic!("no {key} in {json}"))
        + pat.len();
    let text: String = json[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    text.parse()
        .unwrap_or_else(|_| panic!("{key} is not a number in {json}"))
}

/// A whole-number field of the bench's JSON line.
pub fn field(json: &str, key: &str) -> u64 {
    let v = number(json, key);
    assert!(v.fract() == 0.0, "{key} is not a whole number in {json}");
    v as u64
}

/// `scripts/hammer.sh --udp --port PORT ARGS...`: exit code and output.
pub fn hammer_udp(port: u16, args: &[&str]) -> (Option<i32>, String) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/hammer.sh");
    let fixed = ["--udp", "--port", "PORT"];
    run_bounded(
        script,
        &strings(&fixed, port, args),
        Duration::from_secs(120),
    )
}
