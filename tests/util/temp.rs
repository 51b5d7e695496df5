//! Temporary paths that clean up after themselves, even when the test fails.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::client;

/// A unique unix socket path under the temp dir, removed (if still there) on drop.
pub struct TempSock(pub PathBuf);

impl TempSock {
    pub fn new(tag: &str) -> TempSock {
        let name = format!(
            "echo-mux-test-{}-{tag}-{:x}.sock",
            std::process::id(),
            client::fresh_seed() & 0xffff_ffff
        );
        TempSock(std::env::temp_dir().join(name))
    }

    /// `unix:/path`, as `--listen` takes it.
    pub fn listen_arg(&self) -> String {
        format!("unix:{}", self.0.display())
    }
}

impl Drop for TempSock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A fresh, empty directory under the temp dir, removed with everything in it on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let name = format!("echo-mux-test-{}-{tag}-{n}", std::process::id());
        let path = std::env::temp_dir().join(name);
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// A path inside the directory.
    pub fn join(&self, rest: &str) -> PathBuf {
        self.0.join(rest)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
