#!/usr/bin/env bash
# vs-reference.sh: echo-mux (epoll, release) against our C epoll echo server tcp-echo-epoll
# (bench/peers/) under the same echo-mux-bench load, in alternating rounds; prints each round
# and the ratio of the medians (echo-mux / reference). Loopback only; every process it starts is
# stopped on exit. With --udp (first argument): the UDP comparison in vs-reference-udp.sh; with
# --churn: connection churn and system calls per connection, in vs-reference-churn.sh.
set -euo pipefail

case ${1:-} in
    --udp)
        shift
        exec "$(dirname "${BASH_SOURCE[0]}")/vs-reference-udp.sh" "$@"
        ;;
    --churn)
        shift
        exec "$(dirname "${BASH_SOURCE[0]}")/vs-reference-churn.sh" "$@"
        ;;
esac

prog=vs-reference.sh
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

rounds=5
duration=3
warmup=1
loads="64 512"
size=64
out=""
build=1

usage() {
    cat <<USAGE
Usage: scripts/$prog [--rounds R] [--duration S] [--warmup S] [--out DIR] [--no-build]
       scripts/$prog --udp [options]     (UDP: against udp-echo-mmsg and udp-echo-simple; --udp --help)
       scripts/$prog --churn [options]   (connection churn, syscalls per connection; --churn --help)

Compiles the C reference server bench/peers/tcp-echo-epoll.c (ours: one thread, level-triggered
epoll) with gcc -O2, then for each round runs it and
echo-mux --backend epoll (release build) one after the other (the order alternates from round
to round), each under the same loads: echo-mux-bench with 64 and with 512 connections of
64-byte messages, one outstanding each. Servers on CPU 0, load generator on CPU 1 (2+ CPUs).
Prints every round, then the medians and their ratio echo-mux / reference for requests/s
(above 1 is better) and p99 latency (below 1 is better).

Options:
  --rounds R         alternating rounds (default $rounds)
  --duration S       measured seconds per load (default $duration)
  --warmup S         unmeasured seconds before each (default $warmup)
  --connections L    connection counts to load with (default "$loads")
  --size BYTES       message size (default $size)
  --out DIR          logs and results.csv (default target/vs-reference/<date-time>)
  --no-build         use target/release as it is
  -h, --help         this text

Environment: ECHO_MUX, ECHO_MUX_BENCH (binaries to use instead of building). Both servers
listen on a free port of 127.0.0.1 that the kernel picks.
USAGE
}

while (($#)); do
    case $1 in
        -h | --help)
            usage
            exit 0
            ;;
        --no-build)
            build=0
            shift
            ;;
        --rounds | --duration | --warmup | --out | --connections | --size)
            (($# >= 2)) || die_usage "option '$1' needs a value"
            case $1 in
                --rounds)
                    [[ $2 =~ ^[1-9][0-9]{0,3}$ ]] || die_usage "invalid value '$2' for '--rounds': expected a whole number from 1"
                    rounds=$2
                    ;;
                --duration)
                    is_seconds "$2" || die_usage "invalid value '$2' for '--duration': expected seconds, e.g. 3 or 0.5"
                    duration=$2
                    ;;
                --warmup)
                    is_seconds "$2" || die_usage "invalid value '$2' for '--warmup': expected seconds, e.g. 1 or 0.2"
                    warmup=$2
                    ;;
                --out)
                    [[ -n $2 ]] || die_usage "invalid value '' for '--out'"
                    out=$2
                    ;;
                --connections)
                    [[ $2 =~ ^[1-9][0-9]{0,5}([[:space:]]+[1-9][0-9]{0,5})*$ ]] ||
                        die_usage "invalid value '$2' for '--connections': expected counts >= 1, e.g. \"64 512\""
                    loads=$2
                    ;;
                --size)
                    [[ $2 =~ ^[1-9][0-9]{0,9}$ ]] || die_usage "invalid value '$2' for '--size': expected bytes >= 1"
                    size=$2
                    ;;
            esac
            shift 2
            ;;
        *) die_usage "unknown option '$1' (try --help)" ;;
    esac
done

prepare_comparison vs-reference tcp-echo-epoll
on_exit stop_all

# start_server NAME LOG: starts "reference" (tcp-echo-epoll) or "echo-mux", each on a port of
# 127.0.0.1 the kernel picks; sets server_pid and port.
start_server() {
    local name=$1 log=$2
    if [[ $name == echo-mux ]]; then
        spawn_server "$log" "${server_pin[@]}" "$server_bin" --backend epoll --listen 127.0.0.1:0 && return 0
    else
        spawn_server "$log" "${server_pin[@]}" "$out/tcp-echo-epoll" 0 && return 0
    fi
    fail_log "$log" "$name did not start"
    stop_server
    return 1
}

# ---------------------------------------------------------------- the rounds
csv=$out/results.csv
echo "round,server,connections,size,rps,p50_us,p99_us,p999_us,errors,cpu_us_per_req" >"$csv"
# Server CPU time (user + system, in clock ticks) from /proc: steadier than req/s on a shared
# machine, because another process's load slows both but does not bill its CPU to the server.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
ticks_per_s=$(getconf CLK_TCK)
bench_limit=$(awk -v d="$duration" -v w="$warmup" 'BEGIN { printf "%d", d + w + 120 }')
failures=0

echo "echo-mux (epoll) vs tcp-echo-epoll: $size B messages, ${duration}s per load after ${warmup}s warmup, $rounds rounds; $pin_note"
echo "output: $out"
for ((r = 1; r <= rounds; r++)); do
    if ((r % 2)); then order="reference echo-mux"; else order="echo-mux reference"; fi
    for name in $order; do
        start_server "$name" "$out/logs/r$r-$name.server.log" || die "cannot start $name"
        for c in $loads; do
            j=$out/logs/r$r-$name-c$c.json
            rc=0
            cpu0=$(cpu_ticks "$server_pid")
            t0=$(date +%s.%N)
            run_bench "$j" "$out/logs/r$r-$name-c$c.bench.log" \
                -c "$c" -s "$size" -d "${duration}s" -w "${warmup}s" || rc=$?
            cpu1=$(cpu_ticks "$server_pid")
            t1=$(date +%s.%N)
            if ((rc != 0 && rc != 3)) || [[ ! -s $j ]]; then
                failures=$((failures + 1))
                printf 'round %d  %-9s %4s x %d B  FAILED (bench exit %d: %s)\n' "$r" "$name" "$c" "$size" \
                    "$rc" "$(head -c 200 "$out/logs/r$r-$name-c$c.bench.log")"
                continue
            fi
            rps=$(jget rps "$j")
            p99=$(jget p99_us "$j")
            errors=$(jget errors "$j")
            # CPU share over the whole bench run (warm-up included, at the same load) / req/s.
            cpu_us=$(awk -v a="$cpu0" -v b="$cpu1" -v t0="$t0" -v t1="$t1" -v hz="$ticks_per_s" -v r="$rps" \
                'BEGIN { printf "%.2f", (r > 0 && t1 > t0) ? (b - a) / hz / (t1 - t0) * 1e6 / r : 0 }')
            echo "$r,$name,$c,$size,$rps,$(jget p50_us "$j"),$p99,$(jget p999_us "$j"),$errors,$cpu_us" >>"$csv"
            printf 'round %d  %-9s %4s x %d B  %10.0f req/s  p99 %8.1f us  %5.2f us CPU/req  errors %s\n' \
                "$r" "$name" "$c" "$size" "$rps" "$p99" "$cpu_us" "$errors"
            ((errors == 0)) || failures=$((failures + 1))
        done
        stop_server
    done
done

echo
echo "medians over $rounds rounds (ratio = echo-mux / reference; req/s: higher is better, p99: lower is better)"
printf '%-14s %12s %12s %7s   %10s %10s %7s   %9s %9s %7s\n' load "ref req/s" "mux req/s" ratio \
    "ref p99us" "mux p99us" ratio "ref us/rq" "mux us/rq" ratio
# col SERVER CONNECTIONS FIELD: median of that CSV field over the rounds.
col() { csv_median "$csv" "$@"; }
for c in $loads; do
    ref_rps=$(col reference "$c" 5)
    mux_rps=$(col echo-mux "$c" 5)
    ref_p99=$(col reference "$c" 7)
    mux_p99=$(col echo-mux "$c" 7)
    ref_cpu=$(col reference "$c" 10)
    mux_cpu=$(col echo-mux "$c" 10)
    awk -v l="$c x $size B" -v rr="$ref_rps" -v mr="$mux_rps" -v rp="$ref_p99" -v mp="$mux_p99" \
        -v rc="$ref_cpu" -v mc="$mux_cpu" 'BEGIN {
        printf "%-14s %12.0f %12.0f %7.2f   %10.1f %10.1f %7.2f   %9.2f %9.2f %7.2f\n", l, rr, mr, (rr > 0 ? mr / rr : 0),
            rp, mp, (rp > 0 ? mp / rp : 0), rc, mc, (rc > 0 ? mc / rc : 0)
    }'
done
echo
echo "csv: $csv"
if ((failures)); then
    echo "$prog: $failures load run(s) failed or saw errors (see $out/logs)" >&2
    exit 1
fi
