// Backend conformance: the `reactor::Backend` contract, one suite run against epoll, poll and select.
mod backends;

// systemd: unit files (verify, security), install.sh, socket activation, sd_notify, watchdog.
mod systemd;
