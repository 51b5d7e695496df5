#!/usr/bin/env bash
# compare-backends.sh: echo-mux with --backend epoll, poll and select under the same load
# (echo-mux-bench), over active-connection and idle-connection counts; writes a CSV and an SVG.
# Loopback only; every process it starts is stopped on exit.
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
out=""
build=1
select_max=1000 # connections + idle that select may hold (FD_SETSIZE is 1024, less spare fds)

usage() {
    cat <<USAGE
Usage: scripts/$prog [--quick] [--duration S] [--warmup S] [--out DIR] [options]

Runs echo-mux (release build) once per backend and load point, each time on a free port
(--listen 127.0.0.1:0), and drives it with echo-mux-bench: C active connections sending
SIZE-byte messages (one outstanding each) while I idle connections are held open. The server is
pinned to CPU 0 and the load generator to CPU 1 when there are 2 CPUs or more.

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
  --size BYTES        message size (default $size)
  --no-build          do not run cargo build (use what is in target/release)
  -h, --help          this text

select cannot watch descriptors >= 1024: for it, connections + idle is capped at $select_max
(the idle count is lowered; a point that would repeat one already measured is skipped). The
CSV's idle column is the number actually held. Every skip or cap is printed.

Environment: ECHO_MUX, ECHO_MUX_BENCH, ECHO_MUX_PLOT override the binaries (then nothing is
built for that one).
CSV columns: backend,connections,idle,size,rps,mbps,p50_us,p99_us,p999_us,errors
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
        --duration | --warmup | --out | --backends | --connections | --idle | --size)
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

# start_server BACKEND LOG: starts echo-mux on a free loopback port; sets server_pid and port.
start_server() {
    local backend=$1 log=$2
    spawn_server "$log" "${server_pin[@]}" "$server_bin" --backend "$backend" --listen 127.0.0.1:0 && return 0
    fail_log "$log" "echo-mux --backend $backend did not report a listening port"
    stop_server
    return 1
}

# ---------------------------------------------------------------- the runs
csv=$out/backends.csv
svg=$out/backends.svg
echo "backend,connections,idle,size,rps,mbps,p50_us,p99_us,p999_us,errors" >"$csv"
notes=()
bench_limit=$(awk -v d="$duration" -v w="$warmup" 'BEGIN { printf "%d", d + w + 120 }')

echo "echo-mux backends: $size B messages, ${duration}s per point after ${warmup}s warmup; $pin_note"
echo "output: $out"
printf '%-7s %6s %6s %12s %10s %10s %7s\n' backend conns idle req/s p50_us p99_us errors
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
            tag="$backend-c$c-i$held"
            start_server "$backend" "$out/logs/$tag.server.log" || die "cannot start echo-mux --backend $backend"
            rc=0
            run_bench "$out/logs/$tag.json" "$out/logs/$tag.bench.log" \
                -c "$c" --idle "$held" -s "$size" -d "${duration}s" -w "${warmup}s" || rc=$?
            stop_server
            if ((rc != 0 && rc != 3)) || [[ ! -s $out/logs/$tag.json ]]; then
                why=$(head -c 300 "$out/logs/$tag.bench.log")
                notes+=("$backend: $c connections + $held idle FAILED (bench exit $rc: $why)")
                printf '%-7s %6s %6s %12s\n' "$backend" "$c" "$held" "FAILED (exit $rc)"
                continue
            fi
            j=$out/logs/$tag.json
            rps=$(jget rps "$j")
            p50=$(jget p50_us "$j")
            p99=$(jget p99_us "$j")
            errors=$(jget errors "$j")
            echo "$backend,$c,$held,$size,$rps,$(jget mbps "$j"),$p50,$p99,$(jget p999_us "$j"),$errors" >>"$csv"
            printf '%-7s %6s %6s %12.0f %10.1f %10.1f %7s\n' "$backend" "$c" "$held" "$rps" "$p50" "$p99" "$errors"
            if ((errors > 0)); then
                notes+=("$backend: $c connections + $held idle saw $errors errors: $(sed -n 's/.*"first_error":"\([^"]*\)".*/\1/p' "$j")")
            fi
        done
    done
done

"$plot_bin" "$csv" "$svg" \
    --title "echo-mux: epoll vs poll vs select" \
    --subtitle "$size B messages, 1 outstanding per connection, ${duration} s per point after ${warmup} s warmup; $pin_note; select capped at $select_max descriptors" ||
    die "echo-mux-plot failed"

if ((${#notes[@]})); then
    echo
    echo "notes:"
    printf '  %s\n' "${notes[@]}" | tee "$out/notes.txt"
fi
echo
echo "csv: $csv"
echo "svg: $svg"
