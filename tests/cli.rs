//! The command line (SPEC §1, §2): usage errors are exit 2 and one line, runtime errors
//! exit 1 and one line, `--help`/`--version` go to stdout, every flag is documented, and the
//! value syntaxes the contract promises are accepted.

use std::net::TcpListener;
use std::os::unix::net::{UnixListener, UnixStream};

use std::io::Write;

use crate::util::client::{echo_exact, fresh_seed, read_line};
use crate::util::{run, Daemon, Run, TempSock, BACKENDS};

/// Exit `code`, nothing on stdout, exactly one stderr line starting `echo-mux: ` and
/// containing every one of `needles`; never a panic.
fn one_line_error(r: &Run, code: i32, needles: &[&str]) -> Result<(), String> {
    let lines: Vec<&str> = r.stderr.lines().collect();
    let ok = !r.timed_out
        && r.status.code() == Some(code)
        && r.stdout.is_empty()
        && lines.len() == 1
        && lines[0].starts_with("echo-mux: ")
        && needles.iter().all(|n| lines[0].contains(n))
        && !r.stderr.contains("panicked");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "want exit {code} and one `echo-mux: ` line naming {needles:?}:{}",
            r.describe()
        ))
    }
}

#[test]
fn usage_errors_exit_2_with_one_line() {
    let cases: &[(&[&str], &[&str])] = &[
        (&["--backend", "kqueue"], &["--backend", "kqueue"]),
        (&["--delay", "x"], &["--delay", "x"]),
        (&["--delay", "5 parsecs"], &["--delay", "5 parsecs"]),
        (&["--idle-timeout", "soon"], &["--idle-timeout", "soon"]),
        (
            &["--shutdown-timeout", "1h30"],
            &["--shutdown-timeout", "1h30"],
        ),
        (&["--max-buffer", "0"], &["--max-buffer", "0"]),
        (&["--max-buffer", "12XB"], &["--max-buffer", "12XB"]),
        (&["--max-clients", "0"], &["--max-clients", "0"]),
        (&["--max-clients", "many"], &["--max-clients", "many"]),
        (&["--mode", "loud"], &["--mode", "loud"]),
        (&["--frobnicate"], &["--frobnicate"]),
        (&["stray-argument"], &["stray-argument"]),
        (&["--backend"], &["--backend"]),
    ];
    // Bad listen addresses; every other case listens on port 0 should it wrongly start.
    let mut all: Vec<(Vec<&str>, Vec<&str>)> =
        ["garbage", "127.0.0.1:99999", "127.0.0.1", "[::1:0"]
            .iter()
            .map(|a| (vec!["--listen", *a], vec!["--listen", *a]))
            .collect();
    for (args, needles) in cases {
        let mut full = vec!["--listen", "127.0.0.1:0"];
        full.extend_from_slice(args);
        all.push((full, needles.to_vec()));
    }
    // In parallel: a wrongly accepted case costs the 5 s kill timeout once, not per case.
    let failures: Vec<String> = std::thread::scope(|sc| {
        let hs: Vec<_> = all
            .iter()
            .map(|(args, needles)| sc.spawn(move || one_line_error(&run(args), 2, needles).err()))
            .collect();
        hs.into_iter().filter_map(|h| h.join().unwrap()).collect()
    });
    assert!(
        failures.is_empty(),
        "{} usage errors wrong:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn help_and_version_go_to_stdout_exit_0() {
    for flag in ["--help", "-h"] {
        let r = run(&[flag]);
        let ok = r.status.success()
            && r.stdout.to_lowercase().contains("usage")
            && [
                "--listen",
                "--backend",
                "--mode",
                "--delay",
                "--max-clients",
                "--max-buffer",
                "--idle-timeout",
                "--shutdown-timeout",
            ]
            .iter()
            .all(|f| r.stdout.contains(f))
            && r.stderr.is_empty();
        assert!(
            ok,
            "{flag}: want usage with every option on stdout, exit 0:{}",
            r.describe()
        );
    }
    for flag in ["--version", "-V"] {
        let r = run(&[flag]);
        let ok = r.status.success()
            && r.stdout.contains("echo-mux")
            && r.stdout.contains(env!("CARGO_PKG_VERSION"))
            && r.stderr.is_empty();
        assert!(
            ok,
            "{flag}: want `echo-mux {}` on stdout, exit 0:{}",
            env!("CARGO_PKG_VERSION"),
            r.describe()
        );
    }
}

/// The README cannot drift from the binary: every long flag `--help` lists is documented.
#[test]
fn every_help_flag_is_in_the_readme() {
    let help = run(&["--help"]);
    assert!(help.status.success(), "--help failed:{}", help.describe());
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
    let readme = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut flags: Vec<&str> = help
        .stdout
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|w| w.len() > 2 && w.starts_with("--") && w.as_bytes()[2].is_ascii_alphabetic())
        .collect();
    flags.sort();
    flags.dedup();
    assert!(
        flags.len() >= 8,
        "too few long flags found in --help: {flags:?}"
    );
    let missing: Vec<_> = flags.iter().filter(|f| !readme.contains(*f)).collect();
    assert!(
        missing.is_empty(),
        "flags in --help but not in README.md: {missing:?}"
    );
}

#[test]
fn address_in_use_exits_1_with_one_line() {
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    for backend in BACKENDS {
        let r = run(&["--backend", backend, "--listen", &addr]);
        let want = format!("echo-mux: cannot listen on {addr}: address already in use");
        let errors: Vec<&str> = r
            .stderr
            .lines()
            .filter(|l| l.starts_with("echo-mux: "))
            .collect();
        let ok = r.status.code() == Some(1)
            && errors == [want.as_str()]
            && !r.stderr.contains("panicked");
        assert!(ok, "want exit 1 and the one line {want:?}:{}", r.describe());
    }
}

/// A unix socket path where something listens is "address already in use" (exit 1), and
/// the daemon must not unlink it.
#[test]
fn live_unix_socket_path_is_in_use() {
    let sock = TempSock::new("live");
    let live = UnixListener::bind(&sock.0).unwrap();
    let r = run(&["--listen", &sock.listen_arg()]);
    let path = sock.0.display().to_string();
    one_line_error(&r, 1, &[&path, "address already in use"]).unwrap();
    assert!(
        sock.0.exists(),
        "the daemon removed a live socket it did not create"
    );
    let _peer = UnixStream::connect(&sock.0).expect("the live listener must still be reachable");
    drop(live);
}

/// A socket file left over from an earlier run (nothing listening) is replaced.
#[test]
fn stale_unix_socket_path_is_replaced() {
    let sock = TempSock::new("stale");
    drop(UnixListener::bind(&sock.0).unwrap());
    assert!(sock.0.exists());
    let Some(d) = Daemon::spawn("poll", &["--listen", &sock.listen_arg()]) else {
        return;
    };
    let s = d.connect_unix();
    if let Err(e) = echo_exact(&s, fresh_seed(), 4096, true) {
        d.fail(&e);
    }
}

/// The value forms SPEC §1 promises are accepted (the daemon starts and echoes).
#[test]
fn documented_value_forms_are_accepted() {
    let sets: &[&[&str]] = &[
        &[
            "--delay",
            "0",
            "--idle-timeout",
            "2m",
            "--shutdown-timeout",
            "1.5s",
            "--max-buffer",
            "64KiB",
        ],
        &[
            "--delay",
            "250ms",
            "--idle-timeout",
            "5",
            "--shutdown-timeout",
            "0",
            "--max-buffer",
            "4096",
        ],
        &[
            "--max-buffer",
            "1GiB",
            "--max-clients",
            "1",
            "--mode",
            "raw",
            "--delay",
            "0.1s",
        ],
        &["-b", "select", "-l", "127.0.0.1:0", "--mode", "stamp", "-v"],
    ];
    for args in sets {
        let mut b = Daemon::with("poll").args(args);
        if args.contains(&"-b") {
            b = b.without_backend_flag();
        }
        let Some(d) = b.spawn() else { return };
        let mut s = d.connect();
        s.write_all(b"x\n").unwrap();
        let back = read_line(&s).unwrap_or_else(|e| d.fail(&format!("reading the reply: {e}")));
        if back != b"x\n" && !back.starts_with(b"Echo=>x at ") {
            d.fail(&format!(
                "unexpected reply {:?}",
                String::from_utf8_lossy(&back)
            ));
        }
    }
}

/// `--backend auto` and no `--backend` at all both mean epoll on Linux, and say so.
#[test]
fn auto_and_default_backend_are_epoll() {
    let builders = [
        Daemon::with("auto"),
        Daemon::with("auto").without_backend_flag(),
    ];
    for b in builders {
        let Some(d) = b.spawn() else { return };
        if !d.stderr().contains("(backend epoll)") {
            d.fail("want `(backend epoll)` in the listening line");
        }
    }
}

/// A path that is not a socket is never replaced: exit 1, the file untouched.
#[test]
fn unix_path_that_is_not_a_socket_is_left_alone() {
    let sock = TempSock::new("file");
    std::fs::write(&sock.0, "precious").unwrap();
    let r = run(&["--listen", &sock.listen_arg()]);
    let path = sock.0.display().to_string();
    one_line_error(&r, 1, &[&path]).unwrap();
    let kept = std::fs::read_to_string(&sock.0).unwrap_or_default();
    assert_eq!(kept, "precious", "the daemon replaced a regular file");
}
