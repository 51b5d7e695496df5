//! A new binary at the started path that is still open for writing somewhere (a copy in
//! progress, or a descriptor a forked child inherited and has not closed by its exec yet)
//! cannot be executed: ETXTBSY. The reload is refused with one line naming it, the daemon
//! serves on, and the next reload, once the file is complete, takes over. (This is what
//! made `reload::upgrade` fail under load while the tests wrote the binaries themselves:
//! see `install` in `reload/mod.rs`.)

use std::fs::OpenOptions;

use super::{refused, reload, replace, started_from_a_copy};
use crate::util::BIN;

for_each_backend!(a_binary_still_open_for_writing_is_refused_then_taken);
fn a_binary_still_open_for_writing_is_refused_then_taken(backend: &'static str) {
    let Some((_dir, path, d, client)) = started_from_a_copy(backend, "busy") else {
        return;
    };
    // A fresh file at the path (the running image keeps the old one), then held open for
    // writing here, as a writer that has not finished would.
    replace(&path, &std::fs::read(BIN).unwrap());
    let writer = OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("open {} for writing: {e}", path.display()));
    let line = refused(&d);
    let want = format!("reload refused: {}: text file busy", path.display());
    assert!(line.contains(&want), "want {want:?} in {line:?}");
    d.expect_echo(&client, "after the refusal");
    // The writer is done. (A child forked meanwhile may still hold the descriptor until its
    // exec: the complete file is put in place as a copy this process never opened.)
    drop(writer);
    replace(&path, &std::fs::read(BIN).unwrap());
    reload(&d);
    d.expect_echo(&client, "after the reload");
    d.expect_echo(d.connect(), "a new client");
}
