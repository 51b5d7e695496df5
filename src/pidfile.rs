//! `--pid-file PATH` (SPEC §12).
//!
//! - [`prepare`], at start before anything is bound: the pid is written to a temporary file
//!   beside PATH (`.NAME.PID.tmp`, same directory, so the rename below cannot cross file
//!   systems). A directory we cannot write to, or a PATH that is a directory, is the start's
//!   one-line error, exit 1, before a client is served.
//! - [`publish`], where `READY=1` is sent (every listener accepts; with `--workers`, every
//!   worker): the temporary file is renamed over PATH. Readers see the old file or the whole
//!   new one, never a half-written one; a stale file from a killed run is simply replaced.
//! - [`remove`], at the real exit of `main` only: a process image replaced by `execve` (a
//!   future re-exec reload) runs no exit path, so the file stays for the new image. It is
//!   removed only if it still holds our pid (another instance may have taken PATH over).
//!
//! Only the process that prepared the file acts on it: a forked worker inherits the state
//! but is never its owner, so it can neither publish nor remove the supervisor's file.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::error::{Error, Plain};

struct PidFile {
    path: PathBuf,
    temp: PathBuf,
    owner: u32,
    published: bool,
}

static STATE: Mutex<Option<PidFile>> = Mutex::new(None);

fn state() -> MutexGuard<'static, Option<PidFile>> {
    STATE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Write this process's pid to a temporary file beside `path`, to be renamed into place by
/// [`publish`]. Fails (exit 1) if that cannot be done.
pub fn prepare(path: &Path) -> Result<(), Error> {
    let fail = |e: io::Error| {
        Error::io(
            format!(
                "cannot write the pid file {}",
                crate::error::Cut(&path.to_string_lossy())
            ),
            e,
        )
    };
    if path.is_dir() {
        return Err(fail(io::Error::from_raw_os_error(libc::EISDIR)));
    }
    let Some(name) = path.file_name() else {
        return Err(fail(io::Error::from_raw_os_error(libc::EISDIR)));
    };
    let owner = std::process::id();
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let temp = dir.join(format!(".{}.{owner}.tmp", name.to_string_lossy()));
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&temp)
        .map_err(fail)?;
    if let Err(e) = file.write_all(format!("{owner}\n").as_bytes()) {
        let _ = fs::remove_file(&temp);
        return Err(fail(e));
    }
    *state() = Some(PidFile {
        path: path.to_path_buf(),
        temp,
        owner,
        published: false,
    });
    Ok(())
}

/// A reload's new image (same pid): the pid file the first image published is ours
/// already; keep it as it is, and remove it at the real exit.
pub fn adopt(path: &Path) {
    *state() = Some(PidFile {
        path: path.to_path_buf(),
        temp: PathBuf::new(),
        owner: std::process::id(),
        published: true,
    });
}

/// Every listener accepts: put the pid file in place (once; only in the process that
/// prepared it). A failure now is logged and serving goes on.
pub fn publish() {
    let mut guard = state();
    let Some(pf) = guard.as_mut() else { return };
    if pf.owner != std::process::id() || pf.published {
        return;
    }
    match fs::rename(&pf.temp, &pf.path) {
        Ok(()) => {
            pf.published = true;
            log::debug!("pid {} written to {}", pf.owner, pf.path.display());
        }
        Err(e) => {
            log::error!(
                "cannot write the pid file {}: {}",
                pf.path.display(),
                Plain(&e)
            );
            let _ = fs::remove_file(&pf.temp);
            *guard = None;
        }
    }
}

/// The process is exiting for good: remove the pid file if it is still ours.
pub fn remove() {
    let mut guard = state();
    let Some(pf) = guard.take() else { return };
    if pf.owner != std::process::id() {
        return;
    }
    if !pf.published {
        let _ = fs::remove_file(&pf.temp);
        return;
    }
    match fs::read_to_string(&pf.path) {
        Ok(text) if text.trim() == pf.owner.to_string() => {
            if let Err(e) = fs::remove_file(&pf.path) {
                let path = pf.path.display();
                log::warn!("cannot remove the pid file {path}: {}", Plain(&e));
            }
        }
        Ok(_) => log::warn!(
            "not removing the pid file {}: it no longer holds pid {}",
            pf.path.display(),
            pf.owner
        ),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            let path = pf.path.display();
            log::warn!("cannot read the pid file {path}: {}", Plain(&e));
        }
    }
}
