//! The one integration-test binary (`autotests = false`): every module below runs in it.

// The harness: spawns the real daemon on 127.0.0.1:0, `for_each_backend!`, client helpers.
#[macro_use]
mod util;

// Backend conformance: the `reactor::Backend` contract, one suite run against epoll, poll and select.
mod backends;

// systemd unit files (verify, security) and scripts/install.sh.
mod install;

// Socket activation: systemd-socket-activate on every backend, IPv4+IPv6, unix; LISTEN_FDS.
mod activation;

// sd_notify (READY, STATUS, STOPPING) and the watchdog, on a NOTIFY_SOCKET the test binds.
mod notify;

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

// Startup: duration maximum, inherited descriptors, early signals, a full unix backlog,
// --help on a closed stdout, and the wording of messages (issue 8).
mod startup;

// Logging never stalls the loop: an unread stderr costs dropped, counted lines, not service.
mod logging;

// Issue 17: journal priorities when stderr is JOURNAL_STREAM, --log-format json, --pid-file.
mod log_format;
mod pid_file;

// Issue 8's loop defects, one module each: stop signals in one turn, accept errors, idle
// clocks with held output, stamp-mode memory under --delay, fairness with a tiny --max-buffer.
mod accept_errors;
mod fairness;
mod idle_output;
mod stamp_memory;
mod stop_signals;

// Who is served (SPEC §10): allow/deny, per-source limits, refusal log, connection log,
// keepalive, socket mode.
mod access;
// Workers: the supervisor, SO_REUSEPORT spread, reaping and replacing, wedge detection,
// signals forwarded, exact totals, socket activation and sd_notify with --workers.
mod workers;
// Reload with workers (issue 18): every worker in turn then the supervisor, streams and
// hammer.sh across reloads, SIGHUP to one worker, SIGTERM/SIGHUP during a reload or a drain.
mod reload_workers;

// UDP echo: exact replies over IPv4/IPv6, stamp, loop protection, --delay, wildcard pktinfo.
mod udp;

// UDP under pressure: a --delay flood within --max-buffer, SIGTERM with held replies, socket activation.
mod udp_limits;

// UDP with --workers: senders spread over SO_REUSEPORT sockets, exact totals, a worker
// killed and replaced; a socket-activated UDP socket shared by two workers (EPOLLEXCLUSIVE).
mod udp_workers;

// UDP with the access lists and per-source limits: denied and rate-limited datagrams are
// dropped and counted, a bucket per source apart from TCP's, for the whole daemon with --workers.
mod udp_access;

// Stray signals (issue 15 item 10): ignored with one info line by the daemon, the
// supervisor and each worker alone; SIGQUIT exits 0 at once and removes the socket file.
mod stray_signals;

// Refusals with --workers (issue 15 item 11): one line per reason a second from the
// supervisor for the whole daemon, counting every worker's refusals.
mod workers_refusals;

// A terminal with `stty tostop` (issue 15 item 7): workers never stop on SIGTTOU; one
// Ctrl-C is one graceful shutdown; in the foreground and as a background job, on a pty.
mod terminal;

// --socket-mode with --workers under socket activation: the supervisor warns it is ignored.
mod workers_socket_mode;

// Workers ended by any signal are reaped and replaced; SIGTERM works after (issue 15 item 2).
mod workers_deaths;

// UDP echo loops (issue 15): our port on another address, two daemons started answering each
// other by a forged datagram (raw socket, root) stop by themselves in raw and stamp mode, keep
// going with --udp-loop-detect off; varied payloads at full speed are never a loop.
mod udp_loops;

// UDP reply sizes: 65,507 bytes over IPv4, 65,527 over IPv6, raw and stamp; one more is dropped.
mod udp_sizes;

// Issue 15, the close path: deregister_for_close on every backend (epoll leaves a private
// descriptor to the close), and the daemon's epoll set after connection churn.
mod close_path;

// Issue 16 item 6: hammer.sh --udp with no server is one clear line, not a line per client.
mod hammer_udp;

// --metrics and `echo-mux status` (SPEC §12): values equal to the stats line, the HTTP
// limits under bad input, promtool, a real Prometheus server, status with workers.
mod metrics;

// The PROXY protocol (SPEC §14, issue 19): --proxy-from with headers the tests write, then
// behind a real HAProxy (send-proxy and send-proxy-v2, health checks, an instance stopped).
mod proxy;

// --user/--group (issue 18): bind as root, serve as the user (every worker too), usage and
// runtime errors, a start as the target already (a reload's new image).
mod privilege;

// SIGHUP reloads the one-process daemon in place (SPEC §13, issue 18): 20 reloads under
// streaming load lose no byte, held replies keep their due time, an upgraded binary takes
// over, refusals change nothing, signals around a reload; the pause at 10,000 connections.
mod reload;
