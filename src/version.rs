//! The version a running binary reports (`--version`, `echo_mux_build_info`, `/status`, the
//! reload line): the package version, plus a build stamp when one was written into the
//! binary after the build.
//!
//! The stamp is a fixed block of bytes in the binary, [`STAMP_PREFIX`] then up to
//! [`STAMP_LEN`] bytes, NUL-padded; empty in a normal build. Writing a stamp into a copy of
//! the binary (same length, no relinking) makes a build that says it is another one: the
//! upgrade test uses it to tell the old image from the new across a reload, and a packager
//! can use it for a build identifier.

use std::sync::OnceLock;

/// Bytes of stamp at most.
pub const STAMP_LEN: usize = 32;

/// The marker in front of the stamp, to find the block in the file.
pub const STAMP_PREFIX: &[u8; 24] = b"echo-mux build stamp -->";

#[used]
static STAMP: [u8; 24 + STAMP_LEN] =
    *b"echo-mux build stamp -->\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0";

/// `0.2.0`, or `0.2.0+STAMP` for a stamped binary.
pub fn version() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| {
        // Read through volatile loads: the compiler must not fold the all-NUL block it was
        // built with, since the file may have been stamped since.
        let stamp: Vec<u8> = (STAMP_PREFIX.len()..STAMP.len())
            // SAFETY: an in-bounds element of a static array, read as a plain byte.
            .map(|i| unsafe { std::ptr::read_volatile(&STAMP[i]) })
            .take_while(|&b| b != 0)
            .collect();
        let stamp = String::from_utf8_lossy(&stamp);
        if stamp.is_empty() {
            env!("CARGO_PKG_VERSION").to_string()
        } else {
            format!("{}+{stamp}", env!("CARGO_PKG_VERSION"))
        }
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_unstamped_build_reports_the_package_version() {
        assert_eq!(super::version(), env!("CARGO_PKG_VERSION"));
        assert_eq!(&super::STAMP[..24], super::STAMP_PREFIX);
    }
}
