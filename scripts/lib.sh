# shellcheck shell=bash
# lib.sh: plumbing shared by compare-backends.sh, vs-reference.sh, vs-reference-udp.sh,
# vs-reference-churn.sh and demo.sh. Sourced, not run:
#     source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# Defines functions only (no options, traps or variables are set by sourcing it). The caller
# sets prog (its name, for messages) and root (the repository) first, and its own set -euo
# pipefail. Server functions share these globals with the caller: server_pid and port (set by
# spawn_server), bench_pid (run_bench), server_pin, bench_pin, pin_note (pin_cpus), bench_bin
# and bench_limit (seconds before timeout stops one bench run).
# shellcheck disable=SC2154 # prog, root, bench_bin, bench_limit: the caller's

# ---------------------------------------------------------------- messages and checks

# die_usage MESSAGE: "$prog: MESSAGE" on stderr, exit 2 (bad usage).
die_usage() {
    echo "$prog: $*" >&2
    exit 2
}

# die MESSAGE: "$prog: MESSAGE" on stderr, exit 1.
die() {
    echo "$prog: $*" >&2
    exit 1
}

# is_seconds VALUE: VALUE is a number of seconds such as 5 or 0.5.
is_seconds() { [[ $1 =~ ^[0-9]+([.][0-9]+)?$ ]]; }

# fail_log LOG MESSAGE: "$prog: MESSAGE; its log:" and then LOG, indented, on stderr.
fail_log() {
    echo "$prog: $2; its log:" >&2
    sed 's/^/    /' "$1" >&2
}

# median: of the numbers on stdin (0 if there are none).
median() {
    sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print 0; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# csv_median CSV SERVER LOAD FIELD: the median of column FIELD over CSV's rows (after its
# header) whose column 2 is SERVER and column 3 is LOAD; "n/a" values are left out.
csv_median() {
    awk -F, -v s="$2" -v c="$3" -v k="$4" 'NR > 1 && $2 == s && $3 == c && $k != "n/a" { print $k }' "$1" | median
}

# jget KEY FILE: a number from echo-mux-bench's one-line JSON.
jget() {
    sed -n "s/.*\"$1\":\\([-0-9.eE+]*\\).*/\\1/p" "$2" | head -n 1
}

# ---------------------------------------------------------------- binaries

# bin_var NAME: the environment variable that overrides binary NAME (echo-mux-bench: ECHO_MUX_BENCH).
bin_var() {
    local v=${1^^}
    echo "${v//-/_}"
}

# release_bin NAME: the binary NAME to use: its environment override, else target/release/NAME.
release_bin() {
    local v
    v=$(bin_var "$1")
    echo "${!v:-$root/target/release/$1}"
}

# build_bins NOTE NAME...: unless every NAME has its override, prints NOTE and builds them.
build_bins() {
    local note=$1 name v need=0 args=()
    shift
    for name; do
        v=$(bin_var "$name")
        [[ -n ${!v:-} ]] || need=1
        args+=(--bin "$name")
    done
    ((need)) || return 0
    echo "$note"
    cargo build --release --quiet "${args[@]}" || die "cargo build --release failed"
}

# build_peers DIR NAME...: compiles the C comparison servers bench/peers/NAME.c (ours, written
# for this repository) with gcc -O2 into DIR/NAME; dies if gcc is missing or one does not build.
build_peers() {
    local dir=$1 c
    shift
    command -v gcc >/dev/null 2>&1 || die "gcc not found (apt-get install -y gcc libc6-dev)"
    for c; do
        [[ -f $root/bench/peers/$c.c ]] || die "$root/bench/peers/$c.c not found"
        gcc -O2 -o "$dir/$c" "$root/bench/peers/$c.c" || die "cannot compile bench/peers/$c.c"
    done
}

# need_executable PATH...: dies unless every PATH is an executable file.
need_executable() {
    local f
    for f; do
        [[ -x $f ]] || die "$f not found or not executable (build with cargo build --release)"
    done
}

# pin_cpus NOTE: with taskset and 2+ CPUs, server_pin/bench_pin pin to CPU 0/1 and pin_note=NOTE.
# shellcheck disable=SC2034 # server_pin, bench_pin, pin_note: the caller's to use
pin_cpus() {
    server_pin=()
    bench_pin=()
    if command -v taskset >/dev/null 2>&1 && (($(nproc) >= 2)); then
        server_pin=(taskset -c 0)
        bench_pin=(taskset -c 1)
        pin_note=$1
    else
        pin_note="not pinned (fewer than 2 CPUs or no taskset)"
    fi
}

# prepare_comparison NAME PEER...: the common start of the vs-reference scripts: `out`
# (default target/NAME/<date-time>) with its logs/, the C comparison servers PEER... built
# into it, the release binaries (unless build=0) as server_bin and bench_bin, and the CPU
# pinning of pin_cpus. Runs from the repository's root.
# shellcheck disable=SC2034 # server_bin, bench_bin: the caller's to use
prepare_comparison() {
    local name=$1
    shift
    cd "$root" || die "cannot cd to $root"
    [[ -n $out ]] || out="target/$name/$(date +%Y%m%d-%H%M%S)"
    mkdir -p "$out/logs" || die "cannot create $out/logs"
    build_peers "$out" "$@"
    if ((build)); then
        build_bins "building release binaries ..." echo-mux echo-mux-bench
    fi
    server_bin=$(release_bin echo-mux)
    bench_bin=$(release_bin echo-mux-bench)
    need_executable "$server_bin" "$bench_bin"
    pin_cpus "servers on CPU 0, load generator on CPU 1"
}

# with_perf: perf_ok=1 where `perf stat` can count system calls (it barely slows a server
# down; strace would, many times), and on exit stop the perf run in perf_pid, then every
# server (stop_all).
# shellcheck disable=SC2034 # perf_ok: the caller's to use
with_perf() {
    perf_ok=0
    if command -v perf >/dev/null 2>&1 && perf stat -e raw_syscalls:sys_enter -x, -o /dev/null true 2>/dev/null; then
        perf_ok=1
    fi
    perf_pid=""
    on_exit stop_perf_and_all
}

stop_perf_and_all() {
    [[ -z $perf_pid ]] || kill -INT "$perf_pid" 2>/dev/null || true
    stop_all
}

# ---------------------------------------------------------------- processes

# on_exit FUNCTION: runs FUNCTION on exit; SIGINT and SIGTERM exit 130 and 143 (through it).
on_exit() {
    # shellcheck disable=SC2064 # meant to expand now: $1 names the function to run
    trap "$1" EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

# kill_pids PID...: SIGTERM to each PID, quietly skipping those already gone.
kill_pids() {
    local pid
    for pid; do
        kill "$pid" 2>/dev/null || true
    done
}

# kill_lingering PID MESSAGE: if PID still runs 10 s from now, says "$prog: MESSAGE" and SIGKILLs it.
kill_lingering() {
    local i
    for ((i = 0; i < 100; i++)); do
        kill -0 "$1" 2>/dev/null || return 0
        sleep 0.1
    done
    if kill -0 "$1" 2>/dev/null; then
        echo "$prog: $2" >&2
        kill -KILL "$1" 2>/dev/null || true
    fi
}

# wait_listening LOG [SCHEME]: waits up to 10 s for "listening on SCHEME127.0.0.1:PORT" in LOG
# (SCHEME: "" for TCP, "udp:" for echo-mux's UDP listeners); sets port. Fails if server_pid
# died first or said nothing.
wait_listening() {
    local log=$1 scheme=${2:-} i
    port=""
    for ((i = 0; i < 200; i++)); do
        port=$(sed -n "s/.*listening on ${scheme}127\\.0\\.0\\.1:\\([0-9][0-9]*\\).*/\\1/p" "$log" | head -n 1)
        [[ -n $port ]] && return 0
        kill -0 "$server_pid" 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}

# spawn_server LOG COMMAND...: starts COMMAND in the background, stderr to LOG; sets server_pid,
# then waits for its TCP port (wait_listening).
spawn_server() {
    spawn_server_on "" "$@"
}

# spawn_server_on SCHEME LOG COMMAND...: spawn_server for a listener logged as SCHEME127.0.0.1:PORT
# (SCHEME "udp:" for an echo-mux UDP listener).
spawn_server_on() {
    local scheme=$1 log=$2
    shift 2
    : >"$log" # exists before the background job opens it, so polling it never races
    "$@" 2>"$log" &
    server_pid=$!
    wait_listening "$log" "$scheme"
}

# stop_server: SIGTERM to server_pid, SIGKILL if it still runs 10 s later; reaps it.
stop_server() {
    [[ -n ${server_pid:-} ]] || return 0
    if kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null || true
        kill_lingering "$server_pid" "server $server_pid did not stop within 10 s of SIGTERM; killing it"
    fi
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
}

# stop_all: stops the bench run (bench_pid) and the server, if any; an on_exit function.
stop_all() {
    if [[ -n ${bench_pid:-} ]]; then
        kill -TERM "$bench_pid" 2>/dev/null || true
        wait "$bench_pid" 2>/dev/null || true
    fi
    stop_server
}

# run_bench JSON LOG ARG...: echo-mux-bench against 127.0.0.1:$port with ARG... --json
# --no-progress (pinned, under timeout bench_limit); returns its exit status.
run_bench() {
    local json=$1 log=$2 rc=0
    shift 2
    "${bench_pin[@]}" timeout "$bench_limit" "$bench_bin" --addr "127.0.0.1:$port" \
        "$@" --json --no-progress >"$json" 2>"$log" &
    bench_pid=$!
    wait "$bench_pid" || rc=$?
    bench_pid=""
    return "$rc"
}
