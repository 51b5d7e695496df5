#!/usr/bin/env bash
# vs-reference-udp.sh (run as vs-reference.sh --udp): echo-mux's UDP path (epoll, release)
# against our C UDP echo servers udp-echo-mmsg (batched) and udp-echo-simple (recvfrom/sendto),
# from bench/peers/,
# under the same echo-mux-bench --udp load, in alternating rounds; prints every round, the
# medians and the ratios echo-mux / reference. Loopback only; every process it starts is
# stopped on exit.
set -euo pipefail

prog="vs-reference.sh --udp"
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

rounds=5
duration=3
warmup=1
loads="64 1"
size=64
count=50000
reply_timeout=1s
out=""
build=1

usage() {
    cat <<USAGE
Usage: scripts/vs-reference.sh --udp [--rounds R] [--duration S] [--warmup S] [--count N] [options]

Compiles the C UDP reference servers bench/peers/udp-echo-mmsg.c (recvmmsg/sendmmsg, batches of
64) and udp-echo-simple.c (recvfrom/sendto) with gcc -O2, then for each round runs
udp-echo-mmsg, udp-echo-simple and echo-mux --backend epoll --listen udp:127.0.0.1:0 one after
the other (the order rotates from round to round). Each is loaded with echo-mux-bench --udp
(S senders, one 64-byte datagram outstanding each) twice per load:
  - for --duration after --warmup: datagrams/s and p99;
  - for exactly --count datagrams: the server's CPU time per datagram (/proc/PID/schedstat)
    and its system calls per echoed datagram (perf stat -e raw_syscalls:sys_enter -p PID;
    without perf that column says n/a).
Servers on CPU 0, load generator on CPU 1 (2+ CPUs). Prints every round, then per load the
medians and the ratios echo-mux / udp-echo-mmsg and echo-mux / udp-echo-simple. A lost or wrong
datagram fails the run (exit 1). If echo-mux cannot listen on UDP (a build without it), its
rows are skipped with a note and the references are still measured.

Options:
  --rounds R         rounds (default $rounds)
  --duration S       measured seconds per timed run (default $duration)
  --warmup S         unmeasured seconds before it (default $warmup)
  --count N          datagrams in the fixed-count run (default $count)
  --senders L        sender counts to load with (default "$loads")
  --size BYTES       datagram size (default $size)
  --reply-timeout D  a datagram with no reply after D is lost (default $reply_timeout: on a
                     shared machine a server can be off its CPU for hundreds of ms; replies that
                     come after D are counted "late" and are not errors)
  --out DIR          logs and results.csv (default target/vs-reference-udp/<date-time>)
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
        --rounds | --duration | --warmup | --count | --senders | --size | --out | --reply-timeout)
            (($# >= 2)) || die_usage "option '$1' needs a value"
            case $1 in
                --rounds | --count)
                    [[ $2 =~ ^[1-9][0-9]{0,8}$ ]] || die_usage "invalid value '$2' for '$1': expected a whole number from 1"
                    if [[ $1 == --rounds ]]; then rounds=$2; else count=$2; fi
                    ;;
                --duration | --warmup)
                    is_seconds "$2" || die_usage "invalid value '$2' for '$1': expected seconds, e.g. 3 or 0.5"
                    if [[ $1 == --duration ]]; then duration=$2; else warmup=$2; fi
                    ;;
                --senders)
                    [[ $2 =~ ^[1-9][0-9]{0,4}([[:space:]]+[1-9][0-9]{0,4})*$ ]] ||
                        die_usage "invalid value '$2' for '--senders': expected counts >= 1, e.g. \"64 1\""
                    loads=$2
                    ;;
                --size)
                    [[ $2 =~ ^[1-9][0-9]{0,4}$ ]] && ((10#$2 <= 65507)) ||
                        die_usage "invalid value '$2' for '--size': expected 1-65507 bytes"
                    size=$2
                    ;;
                --out)
                    [[ -n $2 ]] || die_usage "invalid value '' for '--out'"
                    out=$2
                    ;;
                --reply-timeout)
                    [[ $2 =~ ^[0-9]+(\.[0-9]+)?(ms|s)?$ ]] || die_usage "invalid value '$2' for '--reply-timeout': expected e.g. 1s or 500ms"
                    reply_timeout=$2
                    ;;
            esac
            shift 2
            ;;
        *) die_usage "unknown option '$1' (try --udp --help)" ;;
    esac
done

prepare_comparison vs-reference-udp udp-echo-mmsg udp-echo-simple
with_perf

servers="udp-echo-mmsg udp-echo-simple echo-mux"
mux_note="" # why echo-mux is skipped, once it is

# start_server NAME LOG: starts a reference or echo-mux (a UDP listener), each on a port of
# 127.0.0.1 the kernel picks; sets server_pid and port.
start_server() {
    local name=$1 log=$2
    : >"$log"
    if [[ $name == echo-mux ]]; then
        spawn_server_on udp: "$log" "${server_pin[@]}" "$server_bin" --backend epoll --listen udp:127.0.0.1:0 && return 0
    else
        spawn_server "$log" "${server_pin[@]}" "$out/$name" 0 && return 0
    fi
    stop_server
    return 1
}

# on_cpu_ns PID: nanoseconds PID has run on a CPU (user + system), from /proc/PID/schedstat.
on_cpu_ns() { awk '{ print $1 }' "/proc/$1/schedstat"; }

# fixed_count JSON LOG SENDERS: the --count run; prints "CPU-us-per-datagram syscalls-per-datagram".
fixed_count() {
    local json=$1 log=$2 senders=$3 cpu0 cpu1 calls="" answered rc=0
    if ((perf_ok)); then
        perf stat -e raw_syscalls:sys_enter -x, -o "$json.perf" -p "$server_pid" 2>/dev/null &
        perf_pid=$!
        sleep 0.3 # let perf attach before the first datagram
    fi
    cpu0=$(on_cpu_ns "$server_pid")
    run_bench "$json" "$log" -u -c "$senders" -s "$size" -n "$count" -d 600s --reply-timeout "$reply_timeout" || rc=$?
    cpu1=$(on_cpu_ns "$server_pid")
    if [[ -n $perf_pid ]]; then
        kill -INT "$perf_pid" 2>/dev/null || true
        wait "$perf_pid" 2>/dev/null || true
        perf_pid=""
        calls=$(awk -F, '/raw_syscalls:sys_enter/ { print $1 }' "$json.perf")
    fi
    answered=$(jget requests "$json")
    awk -v a="$cpu0" -v b="$cpu1" -v n="${answered:-0}" -v c="$calls" -v rc="$rc" 'BEGIN {
        if (n <= 0 || (rc != 0 && rc != 3)) { print "n/a n/a"; exit }
        printf "%.2f %s\n", (b - a) / 1e3 / n, (c ~ /^[0-9]+$/) ? sprintf("%.3f", c / n) : "n/a"
    }'
}

# ---------------------------------------------------------------- the rounds
csv=$out/results.csv
echo "round,server,senders,size,dps,p50_us,p99_us,p999_us,errors,lost,cpu_us_per_dgram,syscalls_per_dgram,late" >"$csv"
bench_limit=$(awk -v d="$duration" -v w="$warmup" 'BEGIN { printf "%d", d + w + 600 }')
failures=0

echo "UDP: echo-mux (epoll) vs udp-echo-mmsg and udp-echo-simple: $size B datagrams, ${duration}s per timed run after ${warmup}s warmup, $count per fixed-count run, $rounds rounds; $pin_note"
((perf_ok)) || echo "note: perf is missing or cannot count raw_syscalls:sys_enter here: syscalls/datagram is n/a"
echo "output: $out"
for ((r = 1; r <= rounds; r++)); do
    # rotate the order: round 1 mmsg simple mux, round 2 simple mux mmsg, ...
    read -r -a order <<<"$servers"
    order=("${order[@]:$(((r - 1) % 3))}" "${order[@]:0:$(((r - 1) % 3))}")
    for name in "${order[@]}"; do
        [[ $name == echo-mux && -n $mux_note ]] && continue
        if ! start_server "$name" "$out/logs/r$r-$name.server.log"; then
            if [[ $name == echo-mux ]]; then
                mux_note="echo-mux did not start a UDP listener ($(head -c 200 "$out/logs/r$r-$name.server.log" | tr '\n' ' ' | sed 's/ *$//')): its rows are skipped"
                echo "note: $mux_note"
                continue
            fi
            fail_log "$out/logs/r$r-$name.server.log" "$name did not start"
            die "cannot start $name"
        fi
        for s in $loads; do
            tag=r$r-$name-s$s
            rc=0
            run_bench "$out/logs/$tag.json" "$out/logs/$tag.bench.log" \
                -u -c "$s" -s "$size" -d "${duration}s" -w "${warmup}s" --reply-timeout "$reply_timeout" || rc=$?
            if ((rc != 0 && rc != 3)) || [[ ! -s $out/logs/$tag.json ]]; then
                failures=$((failures + 1))
                printf 'round %d  %-15s %3s x %d B  FAILED (bench exit %d: %s)\n' "$r" "$name" "$s" "$size" \
                    "$rc" "$(head -c 200 "$out/logs/$tag.bench.log")"
                continue
            fi
            j=$out/logs/$tag.json
            fixed_count "$out/logs/$tag-n.json" "$out/logs/$tag-n.bench.log" "$s" >"$out/logs/$tag-n.txt"
            read -r cpu calls <"$out/logs/$tag-n.txt"
            # Both runs; a datagram answered after the reply timeout was counted lost by the bench,
            # but the server did answer it: late, not lost.
            jn=$out/logs/$tag-n.json
            late=$(($(jget late "$j") + $(jget late "$jn")))
            errors=$(($(jget errors "$j") + $(jget errors "$jn") - late))
            lost=$(($(jget lost "$j") + $(jget lost "$jn") - late))
            echo "$r,$name,$s,$size,$(jget rps "$j"),$(jget p50_us "$j"),$(jget p99_us "$j"),$(jget p999_us "$j"),$errors,$lost,$cpu,$calls,$late" >>"$csv"
            printf 'round %d  %-15s %3s x %d B  %9.0f datagrams/s  p99 %8.1f us  %6s us CPU/dgram  %6s syscalls/dgram  errors %s%s\n' \
                "$r" "$name" "$s" "$size" "$(jget rps "$j")" "$(jget p99_us "$j")" "$cpu" "$calls" "$errors" \
                "$( ((late == 0)) || echo "  (late replies $late)")"
            ((errors == 0)) || failures=$((failures + 1))
        done
        stop_server
    done
done

# col SERVER SENDERS FIELD: median of that CSV field over the rounds ("n/a" values left out).
col() { csv_median "$csv" "$@"; }
# ratio A B: A / B to 2 places, or n/a.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a > 0 && b > 0) printf "%.2f", a / b; else printf "n/a" }'; }

echo
echo "medians over $rounds rounds (datagrams/s: higher is better; p99, CPU and syscalls per datagram: lower is better)"
printf '%-12s %-16s %12s %10s %11s %15s\n' load server datagrams/s "p99 us" "CPU us/dg" "syscalls/dg"
for s in $loads; do
    for name in $servers; do
        [[ $name == echo-mux && -n $mux_note ]] && continue
        calls=n/a
        ((perf_ok)) && calls=$(printf '%.3f' "$(col "$name" "$s" 12)")
        printf '%-12s %-16s %12.0f %10.1f %11.2f %15s\n' "$s x $size B" "$name" "$(col "$name" "$s" 5)" \
            "$(col "$name" "$s" 7)" "$(col "$name" "$s" 11)" "$calls"
    done
    if [[ -z $mux_note ]]; then
        for ref in udp-echo-mmsg udp-echo-simple; do
            printf '%-12s echo-mux / %-15s datagrams/s %s  p99 %s  CPU/dg %s  syscalls/dg %s\n' "$s x $size B" "$ref" \
                "$(ratio "$(col echo-mux "$s" 5)" "$(col "$ref" "$s" 5)")" \
                "$(ratio "$(col echo-mux "$s" 7)" "$(col "$ref" "$s" 7)")" \
                "$(ratio "$(col echo-mux "$s" 11)" "$(col "$ref" "$s" 11)")" \
                "$( ((perf_ok)) && ratio "$(col echo-mux "$s" 12)" "$(col "$ref" "$s" 12)" || echo n/a)"
        done
    fi
done
[[ -z $mux_note ]] || echo "note: $mux_note"
echo
echo "csv: $csv"
if ((failures)); then
    echo "$prog: $failures load run(s) failed or saw errors (lost or wrong datagrams; see $out/logs)" >&2
    exit 1
fi
