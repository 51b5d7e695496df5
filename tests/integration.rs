//! The one integration-test binary (`autotests = false`): every module below runs in it.

// The harness: spawns the real daemon on 127.0.0.1:0, `for_each_backend!`, client helpers.
#[macro_use]
mod util;

// Backend conformance: the `reactor::Backend` contract, one suite run against epoll, poll and select.
mod backends;

// systemd: unit files (verify, security), install.sh, socket activation, sd_notify, watchdog.
mod systemd;

// Raw echo, byte for byte, over all three backends; half-close; unix and IPv6 listeners.
mod echo;

// Stamp mode: the reply format, ctime and TZ, long lines in pieces, CRLF whatever the split.
mod stamp;

// Backpressure: a client that never reads is paused at --max-buffer with bounded memory.
mod backpressure;

// Timers: --delay (concurrent, ordered, never early) and --idle-timeout.
mod timers;

// Signals: SIGTERM/SIGINT drain and its deadline, second signal, SIGUSR1 stats, SIGHUP.
mod signals;

// The command line: exit codes, one-line errors, --help/--version, README drift.
mod cli;

// Limits and hostile peers: --max-clients, clients that reset mid-stream.
mod limits;

// Refusals: a flood over --max-clients is one info line a second, counting every refusal once.
mod refusals;

// File descriptors: exhaustion on accept (no spin), select's FD_SETSIZE, RLIMIT_NOFILE raised.
mod fds;

// The shell tools: hammer.sh once per backend, and demo.sh, against the real daemon.
mod scripts;

// UDP echo: exact replies over IPv4/IPv6, stamp, loop protection, --delay, wildcard pktinfo.
mod udp;

// UDP under pressure: a --delay flood within --max-buffer, SIGTERM with held replies, socket activation.
mod udp_limits;
