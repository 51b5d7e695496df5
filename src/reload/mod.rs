//! SIGHUP: reload in place (SPEC §13). The old image asks the new binary whether it can take
//! over ([`check`]), writes every owner's state into a memfd ([`state`]), and executes the
//! binary again with the same pid, arguments and descriptors ([`exec`]); the new image
//! adopts them. docs/state-format.md describes the bytes and the order of a reload.

pub mod check;
pub mod exec;
pub mod state;

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

/// Where this process came from: the binary's path and the arguments, as a reload
/// executes them again.
#[derive(Clone, Debug)]
pub struct Origin {
    /// The path the binary was started from, resolved at start: a package upgrade that
    /// replaced the file at this path is what the next reload executes.
    pub path: PathBuf,
    /// `argv`, the program name first.
    pub args: Vec<OsString>,
}

static ORIGIN: OnceLock<Origin> = OnceLock::new();

/// Remember the binary's path and the arguments, once, at start (before anything can
/// replace the file: /proc/self/exe of an image whose file was replaced reads
/// "PATH (deleted)").
pub fn remember_origin(args: Vec<OsString>) {
    let path = std::fs::read_link("/proc/self/exe")
        .ok()
        .map(|p| {
            let text = p.as_os_str().to_string_lossy();
            match text.strip_suffix(" (deleted)") {
                Some(stripped) => PathBuf::from(stripped),
                None => p,
            }
        })
        .or_else(|| args.first().and_then(|a| std::fs::canonicalize(a).ok()))
        .unwrap_or_else(|| PathBuf::from(args.first().cloned().unwrap_or_default()));
    let _ = ORIGIN.set(Origin { path, args });
}

/// What [`remember_origin`] saw (the current executable and `std::env::args_os` if it was
/// never called, as in unit tests).
pub fn origin() -> &'static Origin {
    ORIGIN.get_or_init(|| Origin {
        path: std::env::current_exe().unwrap_or_default(),
        args: std::env::args_os().collect(),
    })
}

static ADOPTED: AtomicBool = AtomicBool::new(false);

/// This image took over from an earlier one (a reload): start-up lines that would repeat
/// what the first image said (`listening on`) are debug lines.
pub fn adopted() -> bool {
    ADOPTED.load(Ordering::Relaxed)
}

/// Mark this image as a reload's new image.
pub fn set_adopted() {
    ADOPTED.store(true, Ordering::Relaxed);
}

/// In a worker just forked by a supervisor: the worker starts afresh (it binds or inherits
/// its listeners, adopts nothing), even when the supervisor's image is a reload's new one,
/// so its start-up lines (`listening on`) are said as any worker's first start says them.
pub fn forget_adopted() {
    ADOPTED.store(false, Ordering::Relaxed);
}
