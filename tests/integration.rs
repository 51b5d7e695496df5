// Backend conformance: the `reactor::Backend` contract, one suite run against epoll, poll and select.
mod backends;
