#!/usr/bin/env bash
# vs-reference-churn.sh (run as vs-reference.sh --churn): connection churn (connect, one
# message echoed, close; C at a time) against echo-mux on each backend and our C epoll echo
# server tcp-echo-epoll (bench/peers/), in rotating rounds; prints connections/s, the server's
# CPU per connection and its system calls per connection (perf), side by side. Loopback only;
# every process it starts is stopped on exit.
set -euo pipefail

prog="vs-reference.sh --churn"
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

rounds=3
duration=3
warmup=1
count=20000
concurrency=32
size=64
backends="epoll poll select"
out=""
build=1

usage() {
    cat <<USAGE
Usage: scripts/vs-reference.sh --churn [--rounds R] [--duration S] [--count N] [options]

Compiles bench/peers/tcp-echo-epoll.c (gcc -O2), then for each round runs tcp-echo-epoll and
echo-mux --backend B for every backend B (release build) one after the other (the order
rotates from round to round). Each is loaded with echo-mux-bench --churn: C connections at a
time, each connect, one SIZE-byte message echoed and checked, close, and again. Twice per
server:
  - for --duration after --warmup: connections/s, p99 (connect to last echoed byte), and the
    server's CPU time per connection (/proc/PID/stat, through --server-pid);
  - for exactly --count connections: the server's system calls per connection
    (perf stat -e raw_syscalls:sys_enter -p PID; without perf that column says n/a).
Servers on CPU 0, load generator on CPU 1 (2+ CPUs). Prints every round, then the medians
side by side and each echo-mux backend's ratios to tcp-echo-epoll. A wrong echo or a failed
connection fails the run (exit 1).

Options:
  --rounds R         rounds (default $rounds)
  --duration S       measured seconds per timed run (default $duration)
  --warmup S         unmeasured seconds before it (default $warmup)
  --count N          connections in the fixed-count run (default $count)
  --concurrency C    connections at a time (default $concurrency)
  --size BYTES       message size (default $size)
  --backends LIST    echo-mux backends (default "$backends")
  --out DIR          logs and results.csv (default target/vs-reference-churn/<date-time>)
  --no-build         use target/release as it is
  -h, --help         this text

Environment: ECHO_MUX, ECHO_MUX_BENCH (binaries to use instead of building). Every server
listens on a free port of 127.0.0.1 that the kernel picks.
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
        --rounds | --duration | --warmup | --count | --concurrency | --size | --backends | --out)
            (($# >= 2)) || die_usage "option '$1' needs a value"
            case $1 in
                --rounds | --count | --concurrency)
                    [[ $2 =~ ^[1-9][0-9]{0,8}$ ]] || die_usage "invalid value '$2' for '$1': expected a whole number from 1"
                    case $1 in
                        --rounds) rounds=$2 ;;
                        --count) count=$2 ;;
                        --concurrency) concurrency=$2 ;;
                    esac
                    ;;
                --duration | --warmup)
                    is_seconds "$2" || die_usage "invalid value '$2' for '$1': expected seconds, e.g. 3 or 0.5"
                    if [[ $1 == --duration ]]; then duration=$2; else warmup=$2; fi
                    ;;
                --size)
                    [[ $2 =~ ^[1-9][0-9]{0,9}$ ]] || die_usage "invalid value '$2' for '--size': expected bytes >= 1"
                    size=$2
                    ;;
                --backends)
                    [[ $2 =~ ^(epoll|poll|select)([[:space:]]+(epoll|poll|select))*$ ]] ||
                        die_usage "invalid value '$2' for '--backends': expected names from \"epoll poll select\""
                    backends=$2
                    ;;
                --out)
                    [[ -n $2 ]] || die_usage "invalid value '' for '--out'"
                    out=$2
                    ;;
            esac
            shift 2
            ;;
        *) die_usage "unknown option '$1' (try --churn --help)" ;;
    esac
done

prepare_comparison vs-reference-churn tcp-echo-epoll
with_perf

servers="tcp-echo-epoll"
for b in $backends; do servers+=" echo-mux-$b"; done

# start_server NAME LOG: tcp-echo-epoll or echo-mux-BACKEND, on a port of 127.0.0.1 the
# kernel picks; sets server_pid and port.
start_server() {
    local name=$1 log=$2
    if [[ $name == echo-mux-* ]]; then
        spawn_server "$log" "${server_pin[@]}" "$server_bin" --backend "${name#echo-mux-}" \
            --listen 127.0.0.1:0 && return 0
    else
        spawn_server "$log" "${server_pin[@]}" "$out/$name" 0 && return 0
    fi
    fail_log "$log" "$name did not start"
    stop_server
    return 1
}

# syscalls_per_conn JSON LOG: the --count run under perf; prints system calls per connection
# (or n/a).
syscalls_per_conn() {
    local json=$1 log=$2 calls="" answered rc=0
    if ((perf_ok)); then
        perf stat -e raw_syscalls:sys_enter -x, -o "$json.perf" -p "$server_pid" 2>/dev/null &
        perf_pid=$!
        sleep 0.3 # let perf attach before the first connection
    fi
    run_bench "$json" "$log" --churn -c "$concurrency" -s "$size" -n "$count" -d 600s || rc=$?
    if [[ -n $perf_pid ]]; then
        sleep 0.2 # the server closes the last connections after the bench has
        kill -INT "$perf_pid" 2>/dev/null || true
        wait "$perf_pid" 2>/dev/null || true
        perf_pid=""
        calls=$(awk -F, '/raw_syscalls:sys_enter/ { print $1 }' "$json.perf")
    fi
    answered=$(jget requests "$json")
    awk -v n="${answered:-0}" -v c="$calls" -v rc="$rc" 'BEGIN {
        if (n <= 0 || rc != 0 || c !~ /^[0-9]+$/) { print "n/a"; exit }
        printf "%.3f\n", c / n
    }'
}

# ---------------------------------------------------------------- the rounds
csv=$out/results.csv
echo "round,server,concurrency,size,conns_per_s,p50_us,p99_us,errors,cpu_us_per_conn,syscalls_per_conn" >"$csv"
bench_limit=$(awk -v d="$duration" -v w="$warmup" 'BEGIN { printf "%d", d + w + 600 }')
failures=0
nservers=$(wc -w <<<"$servers")

echo "churn: echo-mux ($backends) vs tcp-echo-epoll: $concurrency at a time, connect + $size B echoed + close, ${duration}s per timed run after ${warmup}s warmup, $count per fixed-count run, $rounds rounds; $pin_note"
((perf_ok)) || echo "note: perf is missing or cannot count raw_syscalls:sys_enter here: syscalls/conn is n/a"
echo "output: $out"
for ((r = 1; r <= rounds; r++)); do
    read -r -a order <<<"$servers"
    shift_by=$(((r - 1) % nservers))
    order=("${order[@]:shift_by}" "${order[@]:0:shift_by}")
    for name in "${order[@]}"; do
        tag=r$r-$name
        start_server "$name" "$out/logs/$tag.server.log" || die "cannot start $name"
        j=$out/logs/$tag.json
        rc=0
        run_bench "$j" "$out/logs/$tag.bench.log" --churn -c "$concurrency" -s "$size" \
            -d "${duration}s" -w "${warmup}s" --server-pid "$server_pid" || rc=$?
        if ((rc != 0 && rc != 3)) || [[ ! -s $j ]]; then
            failures=$((failures + 1))
            printf 'round %d  %-16s FAILED (bench exit %d: %s)\n' "$r" "$name" "$rc" "$(head -c 200 "$out/logs/$tag.bench.log")"
            stop_server
            continue
        fi
        calls=$(syscalls_per_conn "$out/logs/$tag-n.json" "$out/logs/$tag-n.bench.log")
        errors=$(($(jget errors "$j") + $(jget errors "$out/logs/$tag-n.json" || echo 0)))
        cpu=$(jget server_cpu_us_per_req "$j")
        echo "$r,$name,$concurrency,$size,$(jget rps "$j"),$(jget p50_us "$j"),$(jget p99_us "$j"),$errors,${cpu:-n/a},$calls" >>"$csv"
        printf 'round %d  %-16s %9.0f conn/s  p99 %8.1f us  %7s us CPU/conn  %7s syscalls/conn  errors %s\n' \
            "$r" "$name" "$(jget rps "$j")" "$(jget p99_us "$j")" "${cpu:-n/a}" "$calls" "$errors"
        ((errors == 0)) || failures=$((failures + 1))
        stop_server
    done
done

# col SERVER FIELD: median of that CSV field over the rounds ("n/a" values left out).
col() { csv_median "$csv" "$1" "$concurrency" "$2"; }
# ratio A B: A / B to 2 places, or n/a.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a > 0 && b > 0) printf "%.2f", a / b; else printf "n/a" }'; }

echo
echo "medians over $rounds rounds (conn/s: higher is better; p99, CPU and syscalls per connection: lower is better)"
printf '%-16s %10s %10s %12s %14s\n' server conn/s "p99 us" "CPU us/conn" "syscalls/conn"
for name in $servers; do
    calls=n/a
    ((perf_ok)) && calls=$(printf '%.2f' "$(col "$name" 10)")
    printf '%-16s %10.0f %10.1f %12.2f %14s\n' "$name" "$(col "$name" 5)" "$(col "$name" 7)" "$(col "$name" 9)" "$calls"
done
for b in $backends; do
    printf 'echo-mux-%-7s / tcp-echo-epoll: conn/s %s  CPU/conn %s  syscalls/conn %s\n' "$b" \
        "$(ratio "$(col "echo-mux-$b" 5)" "$(col tcp-echo-epoll 5)")" \
        "$(ratio "$(col "echo-mux-$b" 9)" "$(col tcp-echo-epoll 9)")" \
        "$( ((perf_ok)) && ratio "$(col "echo-mux-$b" 10)" "$(col tcp-echo-epoll 10)" || echo n/a)"
done
echo
echo "csv: $csv"
if ((failures)); then
    echo "$prog: $failures run(s) failed or saw errors (see $out/logs)" >&2
    exit 1
fi
