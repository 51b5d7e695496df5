//! PROVISIONAL: replaced by the systemd branch.
use std::os::fd::OwnedFd;
use std::time::Duration;
/// sd_notify client.
pub struct Notifier;
impl Notifier {
    /// From NOTIFY_SOCKET.
    pub fn from_env() -> Option<Notifier> {
        None
    }
    /// Send one state.
    pub fn notify(&self, _state: &str) {}
}
/// Half of WATCHDOG_USEC.
pub fn watchdog_interval() -> Option<Duration> {
    None
}
/// LISTEN_FDS.
pub fn listen_fds() -> Result<Option<Vec<OwnedFd>>, crate::error::Error> {
    Ok(None)
}
