//! A daemon under `systemd-socket-activate --datagram` (what `ListenDatagram=` does): the
//! [`Builder`](super::Builder) starts stream sockets only, and the UDP tests watch the
//! activator's stderr themselves, so it goes to a file they poll.

use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use super::BIN;

/// `systemd-socket-activate` and its stderr, killed and reaped on drop. The tests add their
/// own waits on the log in `impl Activated` blocks of their files.
pub struct Activated {
    pub child: Child,
    pub log: PathBuf,
    /// The UDP port it listens on (fd 3 of the daemon).
    pub port: u16,
}

impl Activated {
    /// Start `BIN args` with one UDP socket on a free port of 127.0.0.1, logging to a file
    /// named after `tag`. The port was free a moment ago: when it is taken meanwhile the
    /// log says `already in use`.
    pub fn udp(tag: &str, backend: &str, args: &[&str]) -> Activated {
        let port = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = std::env::temp_dir().join(format!(
            "echo-mux-{tag}-{}-{backend}-{port}.log",
            std::process::id()
        ));
        let child = Command::new("systemd-socket-activate")
            .args(["--datagram", "-l", &format!("127.0.0.1:{port}"), BIN])
            .args(args)
            .env_remove("RUST_LOG")
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("systemd-socket-activate: {e}"));
        Activated { child, log, port }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Activated {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}
