//! systemd integration, with the real tools and the built binary, on loopback only:
//! the unit files (`systemd-analyze verify` and `security`), `scripts/install.sh`, socket
//! activation through `systemd-socket-activate`, and sd_notify / watchdog datagrams on a
//! socket the test binds itself. Every wait is bounded; every process started is killed
//! on drop.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_echo-mux");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// Longest wait for anything that should be near-instant (generous for a loaded CI box).
const PATIENCE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// A fresh directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("em-sd-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
    fn join(&self, rest: &str) -> PathBuf {
        self.0.join(rest)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Run a tool to completion, or fail saying which package provides it.
fn run_tool(program: &str, args: &[&str]) -> Output {
    match Command::new(program).args(args).output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "{program} is not installed: install the `systemd` package (apt-get install systemd)"
        ),
        Err(e) => panic!("cannot run {program}: {e}"),
    }
}

fn text(out: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The repository's unit files, copied into `dir` with ExecStart= pointing at `bin`.
fn units_for(dir: &TempDir, bin: &str) -> (PathBuf, PathBuf) {
    let service = std::fs::read_to_string(format!("{ROOT}/systemd/echo-mux.service")).unwrap();
    let rewritten: Vec<String> = service
        .lines()
        .map(|l| match l.strip_prefix("ExecStart=") {
            Some(cmd) => {
                let args = cmd.split_once(' ').map_or("", |(_, a)| a);
                format!("ExecStart={bin} {args}")
            }
            None => l.to_string(),
        })
        .collect();
    let svc = dir.join("echo-mux.service");
    let sock = dir.join("echo-mux.socket");
    std::fs::write(&svc, rewritten.join("\n") + "\n").unwrap();
    std::fs::copy(format!("{ROOT}/systemd/echo-mux.socket"), &sock).unwrap();
    (svc, sock)
}

/// A child process that is killed (if still running) and reaped on drop. Its stderr is read
/// by a thread, line by line, into a channel.
struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Proc {
    fn spawn(mut cmd: Command) -> Proc {
        // Nothing from the test's own environment may turn on a protocol by accident; what
        // the test set on `cmd` itself stays.
        let set: Vec<_> = cmd.get_envs().map(|(k, _)| k.to_owned()).collect();
        for var in [
            "LISTEN_PID",
            "LISTEN_FDS",
            "LISTEN_FDNAMES",
            "NOTIFY_SOCKET",
            "WATCHDOG_USEC",
            "WATCHDOG_PID",
            "RUST_LOG",
            "JOURNAL_STREAM",
        ] {
            if !set.iter().any(|k| k == var) {
                cmd.env_remove(var);
            }
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
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

    /// Wait for a stderr line containing `needle`; `None` if it did not come in time.
    fn wait_line(&mut self, needle: &str, within: Duration) -> Option<String> {
        if let Some(l) = self.seen.iter().find(|l| l.contains(needle)) {
            return Some(l.clone());
        }
        let deadline = Instant::now() + within;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let line = self.lines.recv_timeout(left).ok()?;
            self.seen.push(line.clone());
            if line.contains(needle) {
                return Some(line);
            }
        }
        None
    }

    /// Everything written to stderr so far (for failure messages).
    fn stderr(&mut self) -> String {
        while let Ok(l) = self.lines.try_recv() {
            self.seen.push(l);
        }
        self.seen.join("\n")
    }

    fn signal(&self, sig: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, sig).unwrap();
    }

    /// Wait for the exit, at most `within`.
    fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM, then the process must exit 0 in time (SPEC §2, §5).
    fn terminate_cleanly(&mut self) {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let status = self.wait_exit(PATIENCE);
        let log = self.stderr();
        match status {
            Some(s) if s.success() => {}
            Some(s) => panic!("echo-mux exited with {s} after SIGTERM\n{log}"),
            None => panic!("echo-mux did not exit within {PATIENCE:?} of SIGTERM\n{log}"),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A port that was free a moment ago (the caller retries if someone takes it meanwhile).
fn free_port(host: &str) -> u16 {
    TcpListener::bind((host, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn ipv6_loopback_works() -> bool {
    TcpListener::bind("[::1]:0").is_ok()
}

/// Send a line and expect it back unchanged (raw mode).
fn assert_echo(mut stream: impl Read + Write, what: &str) {
    let msg = format!("hello from {what}\n");
    stream.write_all(msg.as_bytes()).unwrap();
    let mut back = vec![0u8; msg.len()];
    stream
        .read_exact(&mut back)
        .unwrap_or_else(|e| panic!("no echo from {what}: {e}"));
    assert_eq!(back, msg.as_bytes(), "echo from {what}");
}

/// Connect, retrying until `addr` listens (or `PATIENCE` runs out).
fn connect_tcp(addr: SocketAddr) -> TcpStream {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Ok(s) => {
                s.set_read_timeout(Some(PATIENCE)).unwrap();
                return s;
            }
            Err(e) if Instant::now() >= deadline => panic!("cannot connect to {addr}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn connect_unix(path: &Path) -> UnixStream {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match UnixStream::connect(path) {
            Ok(s) => {
                s.set_read_timeout(Some(PATIENCE)).unwrap();
                return s;
            }
            Err(e) if Instant::now() >= deadline => {
                panic!("cannot connect to {}: {e}", path.display())
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Unit files
// ---------------------------------------------------------------------------------------

#[test]
fn units_pass_systemd_analyze_verify() {
    let dir = TempDir::new("verify");
    let (svc, sock) = units_for(&dir, BIN);
    let out = run_tool(
        "systemd-analyze",
        &["verify", sock.to_str().unwrap(), svc.to_str().unwrap()],
    );
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "systemd-analyze verify is not clean:\n{}",
        text(&out)
    );
}

#[test]
fn service_exposure_is_safe() {
    let unit = format!("{ROOT}/systemd/echo-mux.service");
    let out = run_tool("systemd-analyze", &["security", "--offline=yes", &unit]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no exposure line:\n{}", text(&out)));
    // "→ Overall exposure level for echo-mux.service: 0.2 SAFE 😀"
    let figure: f64 = line
        .rsplit_once(": ")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the figure in {line:?}"));
    eprintln!("{line}");
    assert!(
        figure <= 0.5,
        "exposure {figure} is above 0.5:\n{}",
        text(&out)
    );
}

// ---------------------------------------------------------------------------------------
// scripts/install.sh
// ---------------------------------------------------------------------------------------

/// Every file below `dir`, relative to it, sorted.
fn files_below(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(base, &path, out);
            } else {
                out.push(path.strip_prefix(base).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn install_sh(args: &[&str]) -> Output {
    let out = Command::new(format!("{ROOT}/scripts/install.sh"))
        .args(args)
        .env_remove("DESTDIR")
        .env_remove("PREFIX")
        .output()
        .expect("cannot run scripts/install.sh");
    assert!(
        out.status.success(),
        "install.sh {args:?} failed:\n{}",
        text(&out)
    );
    out
}

#[test]
fn install_script_installs_and_uninstalls_exactly_its_files() {
    use std::os::unix::fs::PermissionsExt;
    let dest = TempDir::new("install");
    let destdir = dest.0.to_str().unwrap();
    let common = ["--destdir", destdir, "--prefix", "/opt/echo-mux-test"];

    let mut args = vec!["--binary", BIN];
    args.extend(common);
    let out = install_sh(&args);
    assert_eq!(
        files_below(&dest.0),
        [
            "etc/systemd/system/echo-mux.service",
            "etc/systemd/system/echo-mux.socket",
            "opt/echo-mux-test/bin/echo-mux",
        ],
        "{}",
        text(&out)
    );
    let installed = dest.join("opt/echo-mux-test/bin/echo-mux");
    assert_eq!(
        std::fs::read(&installed).unwrap(),
        std::fs::read(BIN).unwrap()
    );
    let mode = std::fs::metadata(&installed).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o755);
    let service =
        std::fs::read_to_string(dest.join("etc/systemd/system/echo-mux.service")).unwrap();
    let exec: Vec<&str> = service
        .lines()
        .filter(|l| l.starts_with("ExecStart="))
        .collect();
    assert_eq!(
        exec,
        ["ExecStart=/opt/echo-mux-test/bin/echo-mux --backend epoll --workers auto"]
    );
    let socket = std::fs::read_to_string(dest.join("etc/systemd/system/echo-mux.socket")).unwrap();
    assert_eq!(
        socket,
        std::fs::read_to_string(format!("{ROOT}/systemd/echo-mux.socket")).unwrap()
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("systemctl not run"), "{said}");

    let mut args = vec!["--uninstall"];
    args.extend(common);
    let out = install_sh(&args);
    assert_eq!(files_below(&dest.0), Vec::<String>::new(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .matches("removed ")
            .count(),
        3
    );
}

#[test]
fn install_script_refuses_bad_usage() {
    let out = Command::new(format!("{ROOT}/scripts/install.sh"))
        .args([
            "--no-build",
            "--prefix",
            "relative/dir",
            "--destdir",
            "/nonexistent",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let help = install_sh(&["--help"]);
    assert!(String::from_utf8_lossy(&help.stdout).contains("--uninstall"));
}

// ---------------------------------------------------------------------------------------
// Socket activation
// ---------------------------------------------------------------------------------------

/// Run echo-mux under `systemd-socket-activate` with one `-l` per entry of `listen(port)`
/// (port chosen free, retried on collision). The tool binds, waits for the first
/// connection, then execs echo-mux with the sockets as fds 3.. (no `-a`: listening sockets
/// are passed, not accepted connections). `args` go to echo-mux.
fn socket_activated(listen: impl Fn(u16) -> Vec<String>, args: &[&str]) -> (Proc, u16) {
    // Fail clearly if the tool is missing.
    run_tool("systemd-socket-activate", &["--version"]);
    for _attempt in 0..5 {
        let port = free_port("127.0.0.1");
        let mut cmd = Command::new("systemd-socket-activate");
        for l in listen(port) {
            cmd.arg("-l").arg(l);
        }
        cmd.arg(BIN).args(args);
        let mut proc = Proc::spawn(cmd);
        // "Listening on … as 3." for each socket, then it waits for a connection.
        let n = listen(port).len();
        let mut ready = 0;
        while ready < n {
            if proc
                .wait_line(&format!("as {}.", 3 + ready), PATIENCE)
                .is_none()
            {
                break;
            }
            ready += 1;
        }
        if ready == n {
            return (proc, port);
        }
        let log = proc.stderr();
        if !log.contains("already in use") {
            panic!("systemd-socket-activate did not start:\n{log}");
        }
        eprintln!("port {port} was taken meanwhile; retrying");
    }
    panic!("no free port found in 5 attempts");
}

#[test]
fn socket_activation_one_tcp_socket_every_backend() {
    for backend in ["epoll", "poll", "select"] {
        let args = ["--backend", backend];
        let (mut proc, port) = socket_activated(|p| vec![format!("127.0.0.1:{p}")], &args);
        assert_echo(connect_tcp(([127, 0, 0, 1], port).into()), backend);
        let line = proc.wait_line("socket activation", PATIENCE);
        assert!(
            line.is_some_and(|l| l.contains("1 inherited")),
            "{backend}: {}",
            proc.stderr()
        );
        let line = proc.wait_line("listening on 127.0.0.1:", PATIENCE);
        assert!(
            line.is_some_and(|l| l.contains(&format!("backend {backend}"))),
            "{}",
            proc.stderr()
        );
        proc.terminate_cleanly();
    }
}

#[test]
fn socket_activation_ipv4_and_ipv6_sockets() {
    if !ipv6_loopback_works() {
        eprintln!("note: ::1 is unavailable here; testing 127.0.0.1 twice instead of [::1]");
    }
    let v6 = ipv6_loopback_works();
    let (mut proc, port) = socket_activated(
        |p| {
            if v6 {
                vec![format!("127.0.0.1:{p}"), format!("[::1]:{p}")]
            } else {
                vec![format!("127.0.0.1:{p}"), format!("127.0.0.1:{}", p + 1)]
            }
        },
        &["--backend", "epoll"],
    );
    assert_echo(connect_tcp(([127, 0, 0, 1], port).into()), "127.0.0.1");
    if v6 {
        assert_echo(
            connect_tcp(format!("[::1]:{port}").parse().unwrap()),
            "[::1]",
        );
    } else {
        assert_echo(
            connect_tcp(([127, 0, 0, 1], port + 1).into()),
            "second ipv4",
        );
    }
    assert!(
        proc.wait_line("2 inherited", PATIENCE).is_some(),
        "{}",
        proc.stderr()
    );
    proc.terminate_cleanly();
}

#[test]
fn socket_activation_unix_socket_and_listen_is_ignored() {
    let dir = TempDir::new("activate-unix");
    let sock = dir.join("echo.sock");
    let ignored = dir.join("ignored.sock");
    let ignored_arg = format!("unix:{}", ignored.display());
    let sock_arg = sock.display().to_string();
    let (mut proc, _) = socket_activated(
        |_| vec![sock_arg.clone()],
        &["--backend", "epoll", "--listen", &ignored_arg],
    );
    assert_echo(connect_unix(&sock), "the unix socket");
    assert!(
        proc.wait_line("--listen is ignored", PATIENCE).is_some(),
        "{}",
        proc.stderr()
    );
    assert!(
        !ignored.exists(),
        "--listen was not ignored: {} exists",
        ignored.display()
    );
    proc.terminate_cleanly();
    // An inherited socket belongs to whoever made it: echo-mux must not unlink it (SPEC §1).
    assert!(sock.exists(), "echo-mux removed the inherited socket file");
}

// ---------------------------------------------------------------------------------------
// sd_notify and the watchdog
// ---------------------------------------------------------------------------------------

/// The receiving end of NOTIFY_SOCKET: every datagram, split into its `KEY=value` lines,
/// with the time it arrived.
struct NotifyRx {
    sock: UnixDatagram,
    got: Vec<(Instant, String)>,
}

impl NotifyRx {
    fn new(sock: UnixDatagram) -> NotifyRx {
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        NotifyRx {
            sock,
            got: Vec::new(),
        }
    }

    /// Receive until a line equal to `want` arrives (true) or `within` passes (false).
    fn wait_for(&mut self, want: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let start = self.got.len();
        loop {
            if self.got[start..].iter().any(|(_, l)| l == want) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            self.poll_once();
        }
    }

    fn poll_once(&mut self) {
        let mut buf = [0u8; 4096];
        if let Ok(n) = self.sock.recv(&mut buf) {
            let now = Instant::now();
            for line in String::from_utf8_lossy(&buf[..n]).lines() {
                self.got.push((now, line.to_string()));
            }
        }
    }

    /// Receive for `d`, whatever comes.
    fn collect_for(&mut self, d: Duration) {
        let deadline = Instant::now() + d;
        while Instant::now() < deadline {
            self.poll_once();
        }
    }

    fn count(&self, want: &str) -> usize {
        self.got.iter().filter(|(_, l)| l == want).count()
    }

    fn lines(&self) -> Vec<&str> {
        self.got.iter().map(|(_, l)| l.as_str()).collect()
    }
}

/// Start echo-mux on `127.0.0.1:0` with `NOTIFY_SOCKET=notify_env` (and `env`).
fn notified_daemon(notify_env: &str, env: &[(&str, &str)]) -> Proc {
    let mut cmd = Command::new(BIN);
    cmd.args(["--listen", "127.0.0.1:0", "--backend", "epoll"]);
    cmd.envs(env.iter().copied());
    cmd.env("NOTIFY_SOCKET", notify_env);
    Proc::spawn(cmd)
}

fn bound_port(proc: &mut Proc) -> u16 {
    let line = proc
        .wait_line("listening on 127.0.0.1:", PATIENCE)
        .unwrap_or_else(|| panic!("no 'listening on' line:\n{}", proc.stderr()));
    let rest = &line[line.find("127.0.0.1:").unwrap() + "127.0.0.1:".len()..];
    rest.split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// READY=1 once, then serving; STATUS= follows the connection count; SIGTERM → STOPPING=1
/// and exit 0.
fn notify_lifecycle(rx: UnixDatagram, notify_env: &str) {
    let mut rx = NotifyRx::new(rx);
    let mut proc = notified_daemon(notify_env, &[]);
    assert!(
        rx.wait_for("READY=1", PATIENCE),
        "no READY=1 (got {:?})\n{}",
        rx.lines(),
        proc.stderr()
    );
    // READY=1 means every listener accepts.
    let port = bound_port(&mut proc);
    let client = connect_tcp(([127, 0, 0, 1], port).into());
    assert_echo(&client, "the notified daemon");
    assert!(
        rx.wait_for("STATUS=1 connections", Duration::from_secs(5)),
        "no STATUS=1 connections (got {:?})",
        rx.lines()
    );
    drop(client);
    proc.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(
        rx.wait_for("STOPPING=1", PATIENCE),
        "no STOPPING=1 (got {:?})\n{}",
        rx.lines(),
        proc.stderr()
    );
    let status = proc.wait_exit(PATIENCE);
    assert!(
        status.is_some_and(|s| s.success()),
        "exit {status:?}\n{}",
        proc.stderr()
    );
    rx.collect_for(Duration::from_millis(100));
    assert_eq!(
        rx.count("READY=1"),
        1,
        "READY=1 is sent exactly once: {:?}",
        rx.lines()
    );
    assert_eq!(rx.count("STOPPING=1"), 1, "{:?}", rx.lines());
}

#[test]
fn notify_socket_path() {
    let dir = TempDir::new("notify");
    let path = dir.join("notify.sock");
    let rx = UnixDatagram::bind(&path).unwrap();
    notify_lifecycle(rx, path.to_str().unwrap());
}

#[test]
fn notify_socket_abstract() {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("echo-mux-test-notify-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let rx = UnixDatagram::bind_addr(&addr).unwrap();
    notify_lifecycle(rx, &format!("@{name}"));
}

#[test]
fn watchdog_pings_at_half_watchdog_usec() {
    let dir = TempDir::new("watchdog");
    let path = dir.join("notify.sock");
    let mut rx = NotifyRx::new(UnixDatagram::bind(&path).unwrap());
    let mut proc = notified_daemon(path.to_str().unwrap(), &[("WATCHDOG_USEC", "200000")]);
    assert!(
        rx.wait_for("READY=1", PATIENCE),
        "no READY=1\n{}",
        proc.stderr()
    );
    let from = Instant::now();
    rx.collect_for(Duration::from_secs(2));
    let pings: Vec<Instant> = rx
        .got
        .iter()
        .filter(|(t, l)| l == "WATCHDOG=1" && *t >= from)
        .map(|(t, _)| *t)
        .collect();
    // Due every 100 ms: about 20 in 2 s. One-sided bounds that a slow CI box still meets,
    // plus a ceiling that catches a loop pinging on every turn.
    assert!(
        pings.len() >= 3,
        "only {} WATCHDOG=1 in 2 s: {:?}",
        pings.len(),
        rx.lines()
    );
    assert!(
        pings.len() <= 60,
        "{} WATCHDOG=1 in 2 s: far too many",
        pings.len()
    );
    let gaps = pings.windows(2).map(|w| w[1] - w[0]);
    let too_early = gaps.filter(|g| *g < Duration::from_millis(50)).count();
    assert!(
        too_early <= 2,
        "{too_early} pings came less than 50 ms apart"
    );
    proc.terminate_cleanly();
}

#[test]
fn watchdog_for_another_pid_is_silent() {
    let dir = TempDir::new("watchdog-pid");
    let path = dir.join("notify.sock");
    let mut rx = NotifyRx::new(UnixDatagram::bind(&path).unwrap());
    let env = [("WATCHDOG_USEC", "100000"), ("WATCHDOG_PID", "1")];
    let mut proc = notified_daemon(path.to_str().unwrap(), &env);
    assert!(
        rx.wait_for("READY=1", PATIENCE),
        "no READY=1\n{}",
        proc.stderr()
    );
    rx.collect_for(Duration::from_millis(600));
    assert_eq!(rx.count("WATCHDOG=1"), 0, "{:?}", rx.lines());
    proc.terminate_cleanly();
}

#[test]
fn unusable_notify_socket_is_not_fatal() {
    let dir = TempDir::new("notify-gone");
    let gone = dir.join("nobody-listens.sock");
    let mut proc = notified_daemon(gone.to_str().unwrap(), &[]);
    let port = bound_port(&mut proc);
    assert_echo(
        connect_tcp(([127, 0, 0, 1], port).into()),
        "a daemon without its manager",
    );
    proc.terminate_cleanly();
}
