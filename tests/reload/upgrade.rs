//! An upgrade: the binary at the started path is replaced by another build (the same one
//! with a build stamp written into it), SIGHUP, and the running daemon is the new build
//! (its reload line, `--version` of the file, /proc/PID/exe) while every connection survives.

use super::{copy_binary, reload, replace};
use crate::util::{Daemon, TempDir, BIN};

/// The marker in front of the build stamp block (src/version.rs).
const STAMP_PREFIX: &[u8] = b"echo-mux build stamp -->";

/// The built binary with `stamp` written into its stamp block.
fn stamped(stamp: &str) -> Vec<u8> {
    let mut bytes = std::fs::read(BIN).unwrap();
    let at: Vec<usize> = bytes
        .windows(STAMP_PREFIX.len())
        .enumerate()
        .filter(|(_, w)| *w == STAMP_PREFIX)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(
        at.len(),
        1,
        "want one stamp block in {BIN}, found {}",
        at.len()
    );
    let start = at[0] + STAMP_PREFIX.len();
    assert!(
        bytes[start..start + 32].iter().all(|&b| b == 0),
        "already stamped"
    );
    bytes[start..start + stamp.len()].copy_from_slice(stamp.as_bytes());
    bytes
}

for_each_backend!(an_upgraded_binary_takes_over_every_connection);
fn an_upgraded_binary_takes_over_every_connection(backend: &'static str) {
    let dir = TempDir::new("upgrade");
    let path = copy_binary(&dir);
    let Some(d) = Daemon::with(backend).program(&path).spawn() else {
        return;
    };
    let clients: Vec<_> = (0..5).map(|_| d.connect()).collect();
    for (i, c) in clients.iter().enumerate() {
        d.expect_echo(c, &format!("client {i} before"));
    }
    let version = env!("CARGO_PKG_VERSION");
    replace(&path, &stamped("upgrade-test"));
    let line = reload(&d);
    let new = format!("echo-mux {version}+upgrade-test");
    if !line.contains(&new) {
        d.fail(&format!("the reload line does not name {new}: {line}"));
    }
    let exe = std::fs::read_link(format!("/proc/{}/exe", d.pid())).unwrap();
    assert_eq!(
        exe, path,
        "the running image is the file at the started path"
    );
    let out = std::process::Command::new(&path)
        .arg("--version")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("echo-mux {version}+upgrade-test")
    );
    for (i, c) in clients.iter().enumerate() {
        d.expect_echo(c, &format!("client {i} after"));
    }
    d.expect_echo(d.connect(), "a new client");
}

for_each_backend!(metrics_show_the_reloads_and_the_new_build);
fn metrics_show_the_reloads_and_the_new_build(backend: &'static str) {
    use crate::metrics::{metrics_addr, scrape};
    let dir = TempDir::new("upgrade-metrics");
    let path = copy_binary(&dir);
    let Some(d) = Daemon::with(backend)
        .program(&path)
        .args(&["--metrics", "127.0.0.1:0"])
        .spawn()
    else {
        return;
    };
    let addr = metrics_addr(&d);
    d.expect_echo(d.connect(), "before");
    replace(&path, &stamped("metrics-test"));
    reload(&d);
    // The metrics listener was handed over: the same address answers, with the new build
    // and the counters carried on.
    let m = scrape(&addr);
    let version = env!("CARGO_PKG_VERSION");
    let info =
        format!("echo_mux_build_info{{version=\"{version}+metrics-test\",backend=\"{backend}\"}}");
    assert_eq!(m.get(&info), Some(&1.0), "{m:?}");
    assert_eq!(m.get("echo_mux_reloads_total"), Some(&1.0), "{m:?}");
    assert_eq!(
        m.get("echo_mux_connections_accepted_total"),
        Some(&1.0),
        "{m:?}"
    );
}
