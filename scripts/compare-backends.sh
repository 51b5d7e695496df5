#!/usr/bin/env bash
# compare-backends.sh: echo-mux with --backend epoll, poll and select under the same load
# (echo-mux-bench), over active-connection and idle-connection counts, plus UDP rows (senders
# with one datagram outstanding each); writes a CSV and an SVG. Loopback only; every process it
# starts is stopped on exit.
set -euo pipefail

prog=compare-backends.sh
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

duration=5
warmup=1
size=64
backends="epoll poll select"
connections="1 64 512"
idles="0 1000 5000"
udp_senders="1 64"
out=""
build=1
select_max=1000 # connections + idle that select may hold (FD_SETSIZE is 1024, less spare fds)

usage() {
    cat <<USAGE
Usage: scripts/$prog [--quick] [--duration S] [--warmup S] [--out DIR] [options]

Runs echo-mux (release build) once per backend and load point, each time on a free port
(--listen 127.0.0.1:0), and drives it with echo-mux-bench: C active connections sending
SIZE-byte messages (one outstanding each) while I idle connections are held open. Then, per
backend, the UDP rows: echo-mux --listen udp:127.0.0.1:0 under echo-mux-bench --udp with U
sockets, one SIZE-byte datagram outstanding each (drawn as the series "BACKEND udp" at idle 0;
skipped with a note when echo-mux has no UDP listeners). The server is pinned to CPU 0 and the
load generator to CPU 1 when there are 2 CPUs or more.

Options:
  --duration S        measured seconds per point (default $duration)
  --warmup S          unmeasured seconds before each measurement (default $warmup)
  --out DIR           where to write backends.csv, backends.svg and logs/
                      (default target/compare-backends/<date-time>)
  --quick             a smoke run: 0.5 s per point after 0.2 s warmup, connections "1 64",
                      idle "0 1000"
  --backends LIST     default "$backends"
  --connections LIST  active connection counts (default "$connections")
  --idle LIST         idle connection counts (default "$idles")
  --udp-senders LIST  UDP sender counts (default "$udp_senders")
  --no-udp            no UDP rows
  --size BYTES        message size (default $size)
  --no-build          do not run cargo build (use what is in target/release)
  -h, --help          this text

select cannot watch descriptors >= 1024: for it, connections + idle is capped at $select_max
(the idle count is lowered; a point that would repeat one already measured is skipped). The
CSV's idle column is the number actually held. Every skip or cap is printed.

Environment: ECHO_MUX, ECHO_MUX_BENCH, ECHO_MUX_PLOT override the binaries (then nothing is
built for that one).
CSV columns: backend,connections,idle,size,rps,mbps,p50_us,p99_us,p999_us,errors,protocol
(protocol tcp or udp; for udp, connections is the number of sockets and rps datagrams/s)
USAGE
}

# is_count_list LIST MIN: whitespace-separated whole numbers, each >= MIN, at least one.
is_count_list() {
    local n seen=0
    for n in $1; do
        [[ $n =~ ^[0-9]{1,7}$ ]] && ((10#$n >= $2)) || return 1
        seen=1
    done
    ((seen))
}

while (($#)); do
    case $1 in
        -h | --help)
            usage
            exit 0
            ;;
        --quick)
            duration=0.5
            warmup=0.2
            connections="1 64"
            idles="0 1000"
            shift
            ;;
        --no-build)
            build=0
            shift
            ;;
        --no-udp)
            udp_senders=""
            shift
            ;;
        --duration | --warmup | --out | --backends | --connections | --idle | --size | --udp-senders)
            (($# >= 2)) || die_usage "option '$1' needs a value"
            case $1 in
                --duration)
                    is_seconds "$2" || die_usage "invalid value '$2' for '--duration': expected seconds, e.g. 5 or 0.5"
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
                --backends)
                    for b in $2; do
                        [[ $b =~ ^(epoll|poll|select)$ ]] ||
                            die_usage "invalid value '$b' in '--backends': expected epoll, poll or select"
                    done
                    [[ -n ${2// /} ]] || die_usage "invalid value '' for '--backends'"
                    backends=$2
                    ;;
                --connections)
                    is_count_list "$2" 1 ||
                        die_usage "invalid value '$2' for '--connections': expected counts >= 1, e.g. \"1 64 512\""
                    connections=$2
                    ;;
                --idle)
                    is_count_list "$2" 0 || die_usage "invalid value '$2' for '--idle': expected counts, e.g. \"0 1000 5000\""
                    idles=$2
                    ;;
                --udp-senders)
                    is_count_list "$2" 1 || die_usage "invalid value '$2' for '--udp-senders': expected counts >= 1, e.g. \"1 64\""
                    udp_senders=$2
                    ;;
                --size)
                    [[ $2 =~ ^[1-9][0-9]*$ ]] || die_usage "invalid value '$2' for '--size': expected bytes >= 1"
                    size=$2
                    ;;
            esac
            shift 2
            ;;
        *) die_usage "unknown option '$1' (try --help)" ;;
    esac
done

cd "$root"
[[ -n $out ]] || out="target/compare-backends/$(date +%Y%m%d-%H%M%S)"
mkdir -p "$out/logs" || die "cannot create $out/logs"

# ---------------------------------------------------------------- binaries
if ((build)); then
    build_bins "building release binaries ..." echo-mux echo-mux-bench echo-mux-plot
fi
server_bin=$(release_bin echo-mux)
bench_bin=$(release_bin echo-mux-bench)
plot_bin=$(release_bin echo-mux-plot)
need_executable "$server_bin" "$bench_bin" "$plot_bin"

pin_cpus "server on CPU 0, load generator on CPU 1"
on_exit stop_all

# start_server BACKEND LOG [udp]: starts echo-mux on a free loopback port (a UDP one with "udp");
# sets server_pid and port.
start_server() {
    local backend=$1 log=$2 udp=${3:-}
    if [[ -n $udp ]]; then
        spawn_server_on udp: "$log" "${server_pin[@]}" "$server_bin" --backend "$backend" --listen udp:127.0.0.1:0 && return 0
    else
        spawn_server "$log" "${server_pin[@]}" "$server_bin" --backend "$backend" --listen 127.0.0.1:0 && return 0
        fail_log "$log" "echo-mux --backend $backend did not report a listening port"
    fi
    stop_server
    return 1
}

# measure PROTOCOL BACKEND C IDLE: one point (a fresh server, one bench run); appends its CSV row
# and prints it, or notes the failure.
measure() {
    local proto=$1 backend=$2 c=$3 held=$4 tag j rc=0 rps p50 p99 errors args
    tag="$backend-c$c-i$held"
    args=(-c "$c" --idle "$held")
    if [[ $proto == udp ]]; then
        tag="$backend-udp-c$c"
        args=(-u -c "$c" --reply-timeout 1s) # a shared machine can stall a reply for 100s of ms
    fi
    j=$out/logs/$tag.json
    run_bench "$j" "$out/logs/$tag.bench.log" "${args[@]}" -s "$size" -d "${duration}s" -w "${warmup}s" || rc=$?
    stop_server
    if ((rc != 0 && rc != 3)) || [[ ! -s $j ]]; then
        notes+=("$backend: $proto $c + $held idle FAILED (bench exit $rc: $(head -c 300 "$out/logs/$tag.bench.log"))")
        printf '%-7s %-4s %6s %6s %12s\n' "$backend" "$proto" "$c" "$held" "FAILED (exit $rc)"
        return 0
    fi
    rps=$(jget rps "$j")
    p50=$(jget p50_us "$j")
    p99=$(jget p99_us "$j")
    errors=$(jget errors "$j")
    echo "$backend,$c,$held,$size,$rps,$(jget mbps "$j"),$p50,$p99,$(jget p999_us "$j"),$errors,$proto" >>"$csv"
    printf '%-7s %-4s %6s %6s %12.0f %10.1f %10.1f %7s\n' "$backend" "$proto" "$c" "$held" "$rps" "$p50" "$p99" "$errors"
    if ((errors > 0)); then
        notes+=("$backend: $proto $c + $held idle saw $errors errors: $(sed -n 's/.*"first_error":"\([^"]*\)".*/\1/p' "$j")")
    fi
}

# ---------------------------------------------------------------- the runs
csv=$out/backends.csv
svg=$out/backends.svg
echo "backend,connections,idle,size,rps,mbps,p50_us,p99_us,p999_us,errors,protocol" >"$csv"
notes=()
bench_limit=$(awk -v d="$duration" -v w="$warmup" 'BEGIN { printf "%d", d + w + 120 }')

echo "echo-mux backends: $size B messages, ${duration}s per point after ${warmup}s warmup; $pin_note"
echo "output: $out"
printf '%-7s %-4s %6s %6s %12s %10s %10s %7s\n' backend prot conns idle req/s p50_us p99_us errors
for backend in $backends; do
    for c in $connections; do
        done_idle=" "
        for idle in $idles; do
            held=$idle
            what="$c connection$( ((c == 1)) || echo s) + $idle idle"
            if [[ $backend == select ]] && ((c + idle > select_max)); then
                if ((c >= select_max)); then
                    notes+=("select: skipped $what (select holds fewer than $select_max connections)")
                    continue
                fi
                held=$((select_max - c))
                if [[ $done_idle == *" $held "* ]]; then
                    notes+=("select: skipped $what (capped, it would repeat idle=$held)")
                    continue
                fi
                notes+=("select: $what capped to $held idle (select cannot watch fds >= 1024)")
            fi
            done_idle+="$held "
            start_server "$backend" "$out/logs/$backend-c$c-i$held.server.log" || die "cannot start echo-mux --backend $backend"
            measure tcp "$backend" "$c" "$held"
        done
    done
    for c in $udp_senders; do
        log=$out/logs/$backend-udp-c$c.server.log
        if ! start_server "$backend" "$log" udp; then
            # A daemon without UDP listeners: say so once and measure TCP only.
            notes+=("no UDP rows: echo-mux did not start a UDP listener ($(head -c 200 "$log" | tr '\n' ' ' | sed 's/ *$//'))")
            udp_senders=""
            break
        fi
        measure udp "$backend" "$c" 0
    done
done

"$plot_bin" "$csv" "$svg" \
    --title "echo-mux: epoll vs poll vs select" \
    --subtitle "$size B messages (UDP: datagrams), 1 outstanding per connection or socket, ${duration} s per point after ${warmup} s warmup; $pin_note; select capped at $select_max descriptors" ||
    die "echo-mux-plot failed"

if ((${#notes[@]})); then
    echo
    echo "notes:"
    printf '  %s\n' "${notes[@]}" | tee "$out/notes.txt"
fi
echo
echo "csv: $csv"
echo "svg: $svg"
