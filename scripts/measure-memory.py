#!/usr/bin/env python3
"""Server memory figures for BENCHMARKS.md: RSS per idle connection, and RSS while one client
sends without ever reading (backpressure). Loopback only; every daemon started is stopped.

usage: scripts/measure-memory.py [--idle N] [--flood MiB] [--backends epoll,poll,select]
Needs a release build (cargo build --release); ECHO_MUX overrides the binary path.
"""
import argparse, os, re, resource, socket, subprocess, sys, time

BIN = os.environ.get("ECHO_MUX", os.path.join(os.path.dirname(__file__), "..", "target", "release", "echo-mux"))


def start(backend, *extra):
    p = subprocess.Popen([BIN, "-l", "127.0.0.1:0", "-b", backend, "-q", "--max-clients", "100000", *extra],
                         stderr=subprocess.PIPE, text=True)
    # -q hides the info line, so ask the kernel which port the daemon bound.
    for _ in range(200):
        out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True).stdout
        m = re.search(r"127\.0\.0\.1:(\d+)\s.*pid=%d," % p.pid, out)
        if m:
            return p, int(m.group(1))
        time.sleep(0.05)
    p.kill()
    sys.exit(f"{backend}: the daemon did not start listening")


def rss_kib(pid):
    return int(re.search(r"VmRSS:\s+(\d+)", open(f"/proc/{pid}/status").read()).group(1))


def stop(p):
    p.terminate()
    try:
        p.wait(timeout=10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def idle(backend, n):
    p, port = start(backend)
    try:
        base = rss_kib(p.pid)
        socks = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(n)]
        socks[-1].sendall(b"ping")
        assert socks[-1].recv(4) == b"ping", "the last connection must still echo"
        time.sleep(0.3)
        now = rss_kib(p.pid)
        print(f"{backend:6} idle    {n} idle connections: RSS {base} KiB -> {now} KiB, "
              f"+{(now - base) / 1024:.1f} MiB, {(now - base) * 1024 / n:.0f} B per connection")
        for s in socks:
            s.close()
    finally:
        stop(p)


def flood(backend, mib):
    p, port = start(backend)
    try:
        base = rss_kib(p.pid)
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.settimeout(2)
        chunk, sent, peak = b"x" * (1 << 20), 0, base
        try:
            while sent < mib << 20:
                sent += s.send(chunk)
                peak = max(peak, rss_kib(p.pid))
        except socket.timeout:
            pass  # backpressure: the server stopped reading and the kernel buffers are full
        peak = max(peak, rss_kib(p.pid))
        other = socket.create_connection(("127.0.0.1", port), timeout=5)
        other.sendall(b"still served\n")
        ok = other.recv(64) == b"still served\n"
        print(f"{backend:6} flood   one client sending {mib} MiB without reading: sender blocked after "
              f"{sent >> 20} MiB; RSS {base} KiB -> peak {peak} KiB (+{(peak - base) / 1024:.1f} MiB, "
              f"--max-buffer 1 MiB); another client served: {ok}")
        s.close()
        other.close()
    finally:
        stop(p)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--idle", type=int, default=10000)
    ap.add_argument("--flood", type=int, default=200)
    ap.add_argument("--backends", default="epoll,poll,select")
    a = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    for b in a.backends.split(","):
        # select holds about 1,000 descriptors (FD_SETSIZE): measure it at 900.
        idle(b, min(a.idle, 900) if b == "select" else min(a.idle, hard - 100))
        flood(b, a.flood)


if __name__ == "__main__":
    main()
