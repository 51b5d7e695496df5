#!/usr/bin/env bash
# measure-workers.sh: what --workers costs and how evenly it spreads (BENCHMARKS.md, "Workers").
#
#   scripts/measure-workers.sh [--rounds N] [--requests N] [--spread N] [--idle SECONDS] [--no-build]
#
# 1. CPU per request, 1 worker vs 2: the daemon (supervisor and workers together) pinned to
#    CPU 0, echo-mux-bench to CPU 1, a fixed number of 64-byte requests over 64 connections;
#    server CPU time from /proc/PID/schedstat (nanoseconds) of every server process, rounds
#    alternating 1 and 2, medians.
# 2. Spread: N connections to 2 workers (bench, one request each); each worker's own
#    SIGUSR1 line gives its accepted count; max/min per trial.
# 3. The supervisor's own CPU: idle for --idle seconds, and during each 2-worker round.
set -euo pipefail
prog=measure-workers.sh
root=$(cd "$(dirname "$0")/.." && pwd)
rounds=5 requests=300000 spread=1000 idle=30 build=1
while (($#)); do
    case $1 in
    --rounds) rounds=$2; shift 2 ;;
    --requests) requests=$2; shift 2 ;;
    --spread) spread=$2; shift 2 ;;
    --idle) idle=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    -h | --help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "$prog: unknown option '$1' (see --help)" >&2; exit 2 ;;
    esac
done
((build)) && (cd "$root" && cargo build --release --quiet --bin echo-mux --bin echo-mux-bench)
server=${ECHO_MUX:-$root/target/release/echo-mux}
bench=${ECHO_MUX_BENCH:-$root/target/release/echo-mux-bench}
work=$(mktemp -d)
pid=
cleanup() { [[ -n $pid ]] && kill -KILL "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

# tree PID: PID and its children.
tree() { echo "$1"; cat "/proc/$1/task/$1/children" 2>/dev/null | tr ' ' '\n' | grep . || true; }
# cpu_ns PID...: nanoseconds on CPU, summed.
cpu_ns() { local p t=0; for p; do t=$((t + $(cut -d' ' -f1 "/proc/$p/schedstat"))); done; echo $t; }

# start N [taskset args]: the daemon with N workers on 127.0.0.1:0; sets pid and port.
start() {
    local n=$1; shift
    : >"$work/log"
    "$@" "$server" --workers "$n" -l 127.0.0.1:0 2>"$work/log" &
    pid=$!
    local want="listening on" i
    ((n > 1)) && want="all $n workers are accepting"
    for i in $(seq 100); do grep -q "$want" "$work/log" && break; sleep 0.05; done
    grep -q "$want" "$work/log" || { cat "$work/log" >&2; echo "$prog: daemon did not start" >&2; exit 1; }
    port=$(sed -n 's/.*listening on 127.0.0.1:\([0-9]*\).*/\1/p' "$work/log" | head -n 1)
}
stop() { kill -TERM "$pid"; wait "$pid" || true; pid=; }

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

echo "# CPU per request: $rounds rounds x {1, 2} workers, $requests x 64 B over 64 connections"
echo "# (server on CPU 0, bench on CPU 1; server CPU = supervisor + workers, schedstat)"
for r in $(seq "$rounds"); do
    for n in 1 2; do
        start "$n" taskset -c 0
        mapfile -t procs < <(tree "$pid")
        before=$(cpu_ns "${procs[@]}") sup_before=$(cpu_ns "$pid")
        taskset -c 1 "$bench" -a "127.0.0.1:$port" -c 64 -s 64 -n "$requests" -w 0 -d 600s --json >"$work/b.json"
        after=$(cpu_ns "${procs[@]}") sup_after=$(cpu_ns "$pid")
        stop
        us=$(awk -v a="$after" -v b="$before" -v n="$requests" 'BEGIN {printf "%.3f", (a - b) / n / 1000}')
        rps=$(sed -n 's/.*"rps":\([0-9.]*\).*/\1/p' "$work/b.json")
        if ((n > 1)); then
            echo $(((sup_after - sup_before) / 1000)) >>"$work/sup"
            echo "round $r workers $n: $us us/request ($rps req/s; supervisor $(((sup_after - sup_before) / 1000)) us of it)"
        else
            echo "round $r workers $n: $us us/request ($rps req/s)"
        fi
        echo "$us" >>"$work/cpu$n"
    done
done
m1=$(median <"$work/cpu1") m2=$(median <"$work/cpu2")
echo "median: 1 worker $m1 us, 2 workers $m2 us, ratio $(awk -v a="$m2" -v b="$m1" 'BEGIN {printf "%.3f", a / b}')"
echo "supervisor under load: median $(median <"$work/sup") us per run of $requests requests"

echo "# spread: $spread connections, 2 workers, 5 trials"
for t in 1 2 3 4 5; do
    start 2
    "$bench" -a "127.0.0.1:$port" -c "$spread" -s 8 -n "$spread" -w 0 -d 600s --json >"$work/b.json"
    for k in 1 2; do
        wpid=$(sed -n "s/.*worker $k started (pid \([0-9]*\)).*/\1/p" "$work/log" | tail -n 1)
        kill -USR1 "$wpid"
    done
    sleep 0.3
    counts=$(sed -n 's/.*worker [12]: stats: .* accepted=\([0-9]*\) .*/\1/p' "$work/log" | tr '\n' ' ')
    echo "trial $t: accepted per worker: $counts max/min $(echo "$counts" | awk '{printf "%.3f", ($1 > $2 ? $1 / $2 : $2 / $1)}')"
    stop
done

echo "# supervisor idle: $idle s with 2 idle workers"
start 2
before=$(cpu_ns "$pid")
sleep "$idle"
after=$(cpu_ns "$pid")
echo "supervisor CPU over ${idle}s idle: $(((after - before) / 1000)) us"
stop
