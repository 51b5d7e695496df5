//! Helpers for the `--workers` tests: a supervised daemon and its workers' pids and stats
//! lines, which worker owns a connection (from /proc, not from timing), and a zombie watch.

use std::collections::HashMap;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::util::Daemon;

/// Longest wait for a supervisor event (a start, a replacement, a stats line).
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A daemon started with `--workers n`, once every worker accepts.
pub struct Pool {
    pub d: Daemon,
    pub n: usize,
}

impl Pool {
    pub fn start(backend: &'static str, n: usize, args: &[&str]) -> Option<Pool> {
        let n_arg = n.to_string();
        let mut all = vec!["--workers", n_arg.as_str()];
        all.extend_from_slice(args);
        // Every worker logs one `listening on` line per listener, the workers interleaved: wait
        // for all of them, or the first lines read may all be one kind (both workers' TCP
        // lines before either's UDP one, and then the daemon has "no UDP listener").
        let per_worker = args
            .iter()
            .filter(|a| ["-l", "--listen"].contains(*a))
            .count();
        let d = Daemon::with(backend)
            .args(&all)
            .expect_listeners(n * per_worker.max(1))
            .spawn()?;
        d.expect_line(0, &format!("all {n} workers are accepting"), PATIENCE);
        Some(Pool { d, n })
    }

    /// The supervisor's pid.
    pub fn pid(&self) -> i32 {
        self.d.pid()
    }

    /// The latest pid of worker `k` (from `worker K started (pid P)`).
    pub fn worker_pid(&self, k: usize) -> i32 {
        let needle = format!("worker {k} started (pid ");
        let text = self.d.stderr();
        text.lines()
            .rev()
            .filter_map(|l| l.split_once(&needle))
            .find_map(|(_, rest)| rest.split(')').next()?.parse().ok())
            .unwrap_or_else(|| self.d.fail(&format!("no start line for worker {k}")))
    }

    /// Every worker's current pid, worker 1 first.
    pub fn worker_pids(&self) -> Vec<i32> {
        (1..=self.n).map(|k| self.worker_pid(k)).collect()
    }

    /// Wait until worker `k` has been started again after `mark` and is listening; its pid.
    /// (The new worker's own lines may come before or after the supervisor's start line.)
    pub fn wait_replaced(&self, k: usize, mark: usize, within: Duration) -> i32 {
        self.d
            .expect_line(mark, &format!("worker {k} started (pid "), within);
        self.d
            .expect_line(mark, &format!("worker {k}: listening on"), within);
        self.worker_pid(k)
    }

    /// SIGUSR1 to worker `k`: its own stats line, as `key -> value`.
    pub fn worker_stats(&self, k: usize) -> HashMap<String, u64> {
        let pid = self.worker_pid(k);
        let mark = self.d.mark();
        kill(Pid::from_raw(pid), Signal::SIGUSR1).unwrap();
        let line = self
            .d
            .expect_line(mark, &format!("worker {k}: stats: "), PATIENCE);
        let map = parse_stats(&line);
        if map.get("worker") != Some(&(k as u64)) {
            self.d.fail(&format!("want worker={k} in {line:?}"));
        }
        map
    }

    /// SIGUSR1 to the supervisor: the totals line.
    pub fn totals(&self) -> HashMap<String, u64> {
        let mark = self.d.mark();
        self.d.signal(Signal::SIGUSR1);
        let line = self.d.expect_line(mark, "supervisor: stats: ", PATIENCE);
        parse_stats(&line)
    }

    /// Ask for totals until `ok` holds (counters land a moment after the client's last
    /// byte); fails after [`PATIENCE`] with the last line.
    pub fn totals_until(&self, ok: impl Fn(&HashMap<String, u64>) -> bool) -> HashMap<String, u64> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let t = self.totals();
            if ok(&t) {
                return t;
            }
            if Instant::now() > deadline {
                self.d.fail(&format!("totals never matched: last {t:?}"));
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

/// `... stats: backend=epoll open=1 ... workers=2` → numbers by key (`backend` left out).
pub fn parse_stats(line: &str) -> HashMap<String, u64> {
    let body = &line[line.find("stats: ").unwrap() + "stats: ".len()..];
    body.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .filter_map(|(k, v)| Some((k.to_string(), v.trim_end_matches('s').parse().ok()?)))
        .collect()
}

/// `(pid, state)` of every process whose parent is `ppid` (/proc/PID/stat).
pub fn children(ppid: i32) -> Vec<(i32, char)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        let mut f = rest.split(' ');
        let state = f.next().and_then(|s| s.chars().next()).unwrap_or('?');
        if f.next().and_then(|s| s.parse::<i32>().ok()) == Some(ppid) {
            out.push((pid, state));
        }
    }
    out
}

/// Is `pid` gone (or only a zombie that no longer runs)?
pub fn is_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rfind(')')
            .is_some_and(|i| stat[i + 2..].starts_with(['Z', 'X'])),
    }
}

/// Which of `pids` holds the server end of `client` (matched through /proc/net/tcp's inode
/// and the processes' fd links), or `None` if none does (yet).
pub fn owner(client: &TcpStream, pids: &[i32]) -> Option<i32> {
    let (me, server) = (client.local_addr().ok()?, client.peer_addr().ok()?);
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let port = |hex: &str| u16::from_str_radix(hex.rsplit(':').next()?, 16).ok();
    let inode = table.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let hit = port(f.get(1)?)? == server.port() && port(f.get(2)?)? == me.port();
        hit.then(|| f.get(9)?.parse::<u64>().ok()).flatten()
    })?;
    let want = format!("socket:[{inode}]");
    pids.iter().copied().find(|pid| {
        std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|dir| {
            dir.flatten()
                .any(|e| std::fs::read_link(e.path()).is_ok_and(|l| l.as_os_str() == want.as_str()))
        })
    })
}

/// Samples the supervisor's children every 5 ms on a thread and remembers any zombie that
/// stays a zombie for longer than `grace` (reaping takes the supervisor a wake-up, not
/// zero time; an unreaped child stays Z forever).
pub struct ZombieWatch {
    stop: Arc<AtomicBool>,
    found: Arc<Mutex<Vec<String>>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl ZombieWatch {
    pub fn start(ppid: i32, grace: Duration) -> ZombieWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let found = Arc::new(Mutex::new(Vec::new()));
        let (s, f) = (Arc::clone(&stop), Arc::clone(&found));
        let thread = thread::spawn(move || {
            let mut since: HashMap<i32, Instant> = HashMap::new();
            while !s.load(Ordering::Relaxed) {
                let now = Instant::now();
                let zombies: Vec<i32> = children(ppid)
                    .into_iter()
                    .filter(|&(_, st)| st == 'Z')
                    .map(|(p, _)| p)
                    .collect();
                since.retain(|p, _| zombies.contains(p));
                for p in zombies {
                    let first = *since.entry(p).or_insert(now);
                    if now.duration_since(first) > grace {
                        let mut f = f.lock().unwrap();
                        let msg = format!("pid {p} a zombie for more than {grace:?}");
                        if !f.contains(&msg) {
                            f.push(msg);
                        }
                    }
                }
                thread::sleep(Duration::from_millis(5));
            }
        });
        ZombieWatch {
            stop,
            found,
            thread: Some(thread),
        }
    }

    /// Stop watching; the zombies seen, if any.
    pub fn finish(mut self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.found.lock().unwrap().clone()
    }
}
