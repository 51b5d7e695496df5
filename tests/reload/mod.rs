//! SIGHUP reloads the one-process daemon in place (SPEC §13): every connection, held reply,
//! partial line, UDP queue and counter survives, 20 reloads in a row, an upgrade of the
//! binary at the started path, and each refusal leaves the daemon serving as before.

mod bench;
mod busy;
mod notify;
mod refusals;
mod signals;
mod sources;
mod stream;
mod timing;
mod upgrade;

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::util::TempDir;
use crate::util::{Daemon, BIN};

/// Longest wait for one reload (the check child plus the execve), under two CPU hogs.
pub const RELOAD_PATIENCE: Duration = Duration::from_secs(30);

/// SIGHUP, then wait for the new image's `reloaded in` line; returns it.
pub fn reload(d: &Daemon) -> String {
    let mark = d.mark();
    d.signal(Signal::SIGHUP);
    d.expect_line(mark, "reloaded in ", RELOAD_PATIENCE)
}

/// SIGHUP, then wait for the `reload refused:` line; returns it, and fails the test if the
/// daemon reloaded instead.
pub fn refused(d: &Daemon) -> String {
    let mark = d.mark();
    d.signal(Signal::SIGHUP);
    let line = d.expect_line(mark, "reload refused:", RELOAD_PATIENCE);
    if d.stderr_since(mark).contains("reloaded in ") {
        d.fail("a refused reload reloaded");
    }
    line
}

/// A copy of the built binary at `dir/echo-mux`, executable: a started path the test may
/// replace, make non-executable or remove. Made by install(1) (see [`install`]).
pub fn copy_binary(dir: &TempDir) -> PathBuf {
    let path = dir.join("echo-mux");
    // Mode 755 whatever the umask: the privilege tests run the copy as nobody.
    install(Path::new(BIN), &path, 0o755);
    path
}

/// Copy `from` to `to` (a new file) with mode `mode`, by install(1), so that the file that
/// will be executed is never open for writing in this test process. Tests run on several
/// threads, each spawning processes: a child forked while this process held a descriptor
/// open for writing to the file keeps a copy of it until its own exec (close-on-exec acts
/// only then), and an execve of the file meanwhile fails with ETXTBSY ("text file busy").
/// Under load that window is wide: the daemon's check child failed that way (the reload was
/// refused), or the test's own spawn of the copy.
fn install(from: &Path, to: &Path, mode: u32) {
    let status = std::process::Command::new("install")
        .arg("-m")
        .arg(format!("{mode:o}"))
        .arg(from)
        .arg(to)
        .status()
        .unwrap_or_else(|e| panic!("install {} {}: {e}", from.display(), to.display()));
    assert!(
        status.success(),
        "install {} {}",
        from.display(),
        to.display()
    );
}

/// A daemon started from a copy of the binary in a fresh temp dir (a started path the test
/// may replace), with one client already echoed: the dir (keep it while the daemon runs),
/// the path, the daemon and the client. `None` where the harness skips.
pub fn started_from_a_copy(
    backend: &'static str,
    tag: &str,
) -> Option<(TempDir, PathBuf, Daemon, std::net::TcpStream)> {
    let dir = TempDir::new(tag);
    let path = copy_binary(&dir);
    let d = Daemon::with(backend).program(&path).spawn()?;
    let client = d.connect();
    d.expect_echo(&client, "before");
    Some((dir, path, d, client))
}

/// Put `content` at `path` atomically (written beside it, then renamed over it), mode 755:
/// what a package upgrade does to the file.
pub fn replace(path: &Path, content: &[u8]) {
    replace_with_mode(path, content, 0o755);
}

/// [`replace`] with another file mode (0o644: not executable). The content is written to a
/// source file that is never executed, and the file renamed into place is a copy of it made
/// by install(1) (see [`install`]: a file this process wrote could not be executed for a
/// while).
pub fn replace_with_mode(path: &Path, content: &[u8], mode: u32) {
    let src = path.with_extension("src");
    let tmp = path.with_extension("new");
    let _ = std::fs::remove_file(&src);
    let _ = std::fs::remove_file(&tmp);
    std::fs::write(&src, content).unwrap();
    install(&src, &tmp, mode);
    std::fs::rename(&tmp, path).unwrap();
}

/// A shell script that answers the check with `check` (shell code) and otherwise runs the
/// real binary with the daemon's arguments.
pub fn script(check: &str) -> Vec<u8> {
    format!(
        "#!/bin/sh\nif [ -n \"$ECHO_MUX_RELOAD_CHECK\" ]; then\n{check}\nfi\nexec {BIN} \"$@\"\n"
    )
    .into_bytes()
}

/// The stats field `key` as a number.
pub fn stat(st: &std::collections::HashMap<String, String>, key: &str) -> u64 {
    st.get(key).and_then(|v| v.parse().ok()).unwrap_or(0)
}
