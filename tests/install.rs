//! The systemd unit files (`systemd-analyze verify` and `security`) and `scripts/install.sh`,
//! with the real tools and the built binary. Every run is bounded ([`TOOL_LIMIT`]).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{run_command, run_tool, Run, TempDir, BIN, TOOL_LIMIT};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

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
    // Pulled in by echo-mux.socket and named in the service's Sockets=.
    let metrics = dir.join("echo-mux-metrics.socket");
    std::fs::copy(format!("{ROOT}/systemd/echo-mux-metrics.socket"), metrics).unwrap();
    (svc, sock)
}

#[test]
fn units_pass_systemd_analyze_verify() {
    let dir = TempDir::new("verify");
    let (svc, sock) = units_for(&dir, BIN);
    let out = run_tool(
        "systemd-analyze",
        &[
            "verify",
            sock.to_str().unwrap(),
            dir.join("echo-mux-metrics.socket").to_str().unwrap(),
            svc.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "systemd-analyze verify is not clean:{}",
        out.describe()
    );
}

#[test]
fn service_exposure_is_safe() {
    let unit = format!("{ROOT}/systemd/echo-mux.service");
    let out = run_tool("systemd-analyze", &["security", "--offline=yes", &unit]);
    let line = out
        .stdout
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no exposure line:{}", out.describe()));
    // "→ Overall exposure level for echo-mux.service: 0.2 SAFE 😀"
    let figure: f64 = line
        .rsplit_once(": ")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the figure in {line:?}"));
    eprintln!("{line}");
    assert!(
        figure <= 0.5,
        "exposure {figure} is above 0.5:{}",
        out.describe()
    );
}

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

/// `scripts/install.sh ARGS`, with DESTDIR and PREFIX of the test's environment removed.
fn install_sh_run(args: &[&str]) -> Run {
    let script = format!("{ROOT}/scripts/install.sh");
    let mut cmd = Command::new(&script);
    cmd.args(args).env_remove("DESTDIR").env_remove("PREFIX");
    run_command(cmd, format!("{script} {}", args.join(" ")), TOOL_LIMIT)
}

/// Like [`install_sh_run`], failing the test unless it succeeds.
fn install_sh(args: &[&str]) -> Run {
    let out = install_sh_run(args);
    assert!(
        out.status.success(),
        "install.sh {args:?} failed:{}",
        out.describe()
    );
    out
}

#[test]
fn install_script_installs_and_uninstalls_exactly_its_files() {
    use std::os::unix::fs::PermissionsExt;
    let dest = TempDir::new("install");
    let destdir = dest.path().to_str().unwrap();
    let common = ["--destdir", destdir, "--prefix", "/opt/echo-mux-test"];

    let mut args = vec!["--binary", BIN];
    args.extend(common);
    let out = install_sh(&args);
    assert_eq!(
        files_below(dest.path()),
        [
            "etc/systemd/system/echo-mux-metrics.socket",
            "etc/systemd/system/echo-mux.service",
            "etc/systemd/system/echo-mux.socket",
            "opt/echo-mux-test/bin/echo-mux",
        ],
        "{}",
        out.describe()
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
    assert!(out.stdout.contains("systemctl not run"), "{}", out.stdout);

    let mut args = vec!["--uninstall"];
    args.extend(common);
    let out = install_sh(&args);
    assert_eq!(
        files_below(dest.path()),
        Vec::<String>::new(),
        "{}",
        out.describe()
    );
    assert_eq!(out.stdout.matches("removed ").count(), 4);
}

#[test]
fn install_script_refuses_bad_usage() {
    let out = install_sh_run(&[
        "--no-build",
        "--prefix",
        "relative/dir",
        "--destdir",
        "/nonexistent",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", out.describe());
    let help = install_sh(&["--help"]);
    assert!(help.stdout.contains("--uninstall"));
}

/// `systemctl reload echo-mux` (and the package's upgrade) is SIGHUP to the main process:
/// the unit's `ExecReload=` line, with `$MAINPID` as systemd fills it in, run against a
/// process that says which signal it got. `Type=notify` with `NotifyAccess=main` covers
/// the reload's RELOADING=1/READY=1, since the main pid does not change.
#[test]
fn reload_is_sighup_to_the_main_pid() {
    let unit = std::fs::read_to_string(format!("{ROOT}/systemd/echo-mux.service")).unwrap();
    let setting = |key: &str| -> Vec<String> {
        unit.lines()
            .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(setting("Type"), ["notify"]);
    assert_eq!(setting("NotifyAccess"), ["main"]);
    let reload = setting("ExecReload");
    let [line] = reload.as_slice() else {
        panic!("want exactly one ExecReload= line, got {reload:?}");
    };
    // A stand-in main process: it prints the name of the first signal it gets and exits.
    // Its HUP and TERM start at their defaults whatever this process inherited (under
    // `nohup`, SIGHUP is ignored, and a shell cannot trap a signal ignored on entry).
    let mut stand_in = std::process::Command::new("sh");
    stand_in
        .args([
            "-c",
            "trap 'echo HUP; exit 0' HUP; trap 'echo TERM; exit 0' TERM; echo up; \
             while :; do sleep 0.05; done",
        ])
        .stdout(std::process::Stdio::piped());
    let defaults = || {
        for sig in [libc::SIGHUP, libc::SIGTERM] {
            // SAFETY: signal(2) is async-signal-safe, so it may run between fork and exec;
            // it only resets this child's disposition to the default.
            if unsafe { libc::signal(sig, libc::SIG_DFL) } == libc::SIG_ERR {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    };
    // SAFETY: the closure calls only signal(2), async-signal-safe, and allocates nothing.
    unsafe { std::os::unix::process::CommandExt::pre_exec(&mut stand_in, defaults) };
    let mut main = stand_in.spawn().unwrap();
    let mut out = std::io::BufReader::new(main.stdout.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut out, &mut first).unwrap();
    assert_eq!(first, "up\n");
    let command = line.replace("$MAINPID", &main.id().to_string());
    let words: Vec<&str> = command.split_whitespace().collect();
    let run = run_tool(words[0], &words[1..]);
    assert!(run.status.success(), "ExecReload failed:{}", run.describe());
    // Bounded: a stand-in that the signal did not end is killed after 10 s, and its output
    // then ends.
    let (status, _) = crate::util::wait_or_kill(&mut main, std::time::Duration::from_secs(10));
    let mut got = String::new();
    std::io::BufRead::read_line(&mut out, &mut got).unwrap();
    assert_eq!(
        got, "HUP\n",
        "ExecReload={line} sent another signal ({status})"
    );
}
