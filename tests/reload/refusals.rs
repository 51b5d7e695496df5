//! A reload that cannot succeed changes nothing: a binary whose check says no, one that
//! cannot read this state version, a path that is not executable or gone, and an execve
//! that fails after a yes. Each is one `reload refused:` line; clients notice nothing, and
//! a later reload with a good binary works.

use super::{refused, reload, replace, replace_with_mode, script, started_from_a_copy, stat};
use crate::util::BIN;

for_each_backend!(every_refusal_leaves_the_daemon_serving);
fn every_refusal_leaves_the_daemon_serving(backend: &'static str) {
    let Some((_dir, path, d, client)) = started_from_a_copy(backend, "refusals") else {
        return;
    };
    let shown = path.display().to_string();

    // A check that says no: its reason is the line.
    replace(
        &path,
        &script("echo \"echo-mux: /etc/echo-mux/allow:7: invalid CIDR '10.0.0.0/33'\" >&2; exit 2"),
    );
    let line = refused(&d);
    assert!(
        line.contains("reload refused: /etc/echo-mux/allow:7: invalid CIDR '10.0.0.0/33'"),
        "{line}"
    );
    d.expect_echo(&client, "after a check that said no");

    // A binary that does not read this state version (the real one, asked for version 99).
    replace(
        &path,
        format!("#!/bin/sh\nECHO_MUX_RELOAD_CHECK=99 exec {BIN} \"$@\"\n").as_bytes(),
    );
    let line = refused(&d);
    assert!(
        line.contains("reads state format versions 1 to 2, not 99"),
        "{line}"
    );

    // Not executable.
    replace_with_mode(&path, &std::fs::read(BIN).unwrap(), 0o644);
    let line = refused(&d);
    assert!(
        line.contains(&format!("reload refused: {shown}: permission denied")),
        "{line}"
    );

    // Gone.
    std::fs::remove_file(&path).unwrap();
    let line = refused(&d);
    assert!(
        line.contains(&format!(
            "reload refused: {shown}: no such file or directory"
        )),
        "{line}"
    );
    d.expect_echo(&client, "after three refusals");

    // The check says yes, then the file is gone before the execve: the execve fails, and
    // everything it changed (close-on-exec, the signal mask, the memfd) is undone.
    replace(&path, &script("rm -f \"$0\"; echo yes; exit 0"));
    let line = refused(&d);
    assert!(
        line.contains(&format!(
            "reload refused: cannot execute {shown}: no such file or directory"
        )),
        "{line}"
    );
    d.expect_echo(&client, "after a failed execve");
    d.expect_echo(d.connect(), "a new client after a failed execve");

    // Signals still work after the failed execve (the mask was restored), and a good
    // binary reloads.
    replace(&path, &std::fs::read(BIN).unwrap());
    reload(&d);
    d.expect_echo(&client, "after the reload");
    let st = d.stats();
    assert_eq!(stat(&st, "reloads"), 1, "{st:?}");
    assert_eq!(stat(&st, "accepted"), 2, "{st:?}");
}
