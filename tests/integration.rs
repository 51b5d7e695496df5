//! Integration tests: each module runs the real binary (or the library) on loopback.

/// systemd: unit files (verify, security), install.sh, socket activation, sd_notify, watchdog.
mod systemd;
