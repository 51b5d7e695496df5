#!/usr/bin/env bash
# check-metrics.sh: a real Prometheus server scrapes echo-mux's --metrics (SPEC §12).
#
#     scripts/check-metrics.sh [--workers N] [--seconds S]
#
# Starts echo-mux on loopback (free ports) with --metrics, checks a live scrape with
# `promtool check metrics` (it must print nothing), drives traffic with echo-mux-bench, then
# starts `prometheus` (Debian package prometheus) with its own temporary storage and a
# scrape_interval of 250ms pointed at echo-mux, and reads the counters back through its HTTP
# API (/api/v1/query) until they equal the daemon's own SIGUSR1 totals (30 s deadline).
# With --workers, also that the per-worker series add up to the totals. Everything it
# starts is stopped at the end. Exit 0 when all holds, 1 otherwise, 2 for bad usage.
#
# Binaries: $ECHO_MUX and $ECHO_MUX_BENCH, else target/release/ (built if missing).
set -euo pipefail
prog=check-metrics.sh
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib.sh
source "$root/scripts/lib.sh"

workers=1
seconds=2
while (($#)); do
    case $1 in
    --workers) workers=${2:?}; shift 2 ;;
    --seconds) seconds=${2:?}; shift 2 ;;
    -h | --help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die_usage "unknown option '$1' (see --help)" ;;
    esac
done
[[ $workers =~ ^[1-9][0-9]*$ ]] || die_usage "invalid value '$workers' for '--workers'"
is_seconds "$seconds" || die_usage "invalid value '$seconds' for '--seconds'"
for tool in prometheus promtool; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found (apt-get install -y prometheus)"
done
build_bins "building echo-mux and echo-mux-bench (release) ..." echo-mux echo-mux-bench
echo_mux=$(release_bin echo-mux)
bench_bin=$(release_bin echo-mux-bench)
need_executable "$echo_mux" "$bench_bin"

tmp=$(mktemp -d)
prom_pid=""
cleanup() {
    stop_all
    if [[ -n $prom_pid ]]; then
        kill -TERM "$prom_pid" 2>/dev/null || true
        kill_lingering "$prom_pid" "prometheus $prom_pid did not stop within 10 s; killing it"
        wait "$prom_pid" 2>/dev/null || true
    fi
    rm -rf "$tmp"
}
on_exit cleanup

# http_get PORT PATH: the body of GET PATH from 127.0.0.1:PORT (HTTP/1.0, no curl needed).
http_get() {
    local answer
    exec 3<>"/dev/tcp/127.0.0.1/$1" || return 1
    printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$2" >&3
    answer=$(timeout 10 cat <&3) || true
    exec 3<&-
    printf '%s\n' "$answer" | sed '1,/^\r$/d'
}

# ---------------------------------------------------------------- echo-mux
args=(--listen 127.0.0.1:0 --metrics 127.0.0.1:0 --workers "$workers")
spawn_server "$tmp/echo-mux.log" "$echo_mux" "${args[@]}" ||
    { fail_log "$tmp/echo-mux.log" "echo-mux did not start"; exit 1; }
mport=""
for ((i = 0; i < 200; i++)); do
    mport=$(sed -n 's/.*metrics on 127\.0\.0\.1:\([0-9][0-9]*\):.*/\1/p' "$tmp/echo-mux.log" | head -n 1)
    [[ -n $mport ]] && break
    sleep 0.05
done
[[ -n $mport ]] || { fail_log "$tmp/echo-mux.log" "no 'metrics on' line"; exit 1; }
echo "echo-mux (pid $server_pid, $workers worker(s)): echo on 127.0.0.1:$port, metrics on 127.0.0.1:$mport"

http_get "$mport" /metrics >"$tmp/scrape.txt"
grep -q '^echo_mux_connections_accepted_total ' "$tmp/scrape.txt" ||
    { fail_log "$tmp/scrape.txt" "the scrape has no accepted counter"; exit 1; }
if ! promtool check metrics <"$tmp/scrape.txt" >"$tmp/promtool.txt" 2>&1 || [[ -s $tmp/promtool.txt ]]; then
    fail_log "$tmp/promtool.txt" "promtool check metrics is not silent on a live scrape"
    exit 1
fi
echo "promtool check metrics: silent on a live scrape ($(wc -l <"$tmp/scrape.txt") lines)"

# ---------------------------------------------------------------- traffic
bench_limit=$((${seconds%.*} + 30))
run_bench "$tmp/bench.json" "$tmp/bench.log" --connections 8 --size 256 \
    --duration "${seconds}s" --warmup 0 ||
    { fail_log "$tmp/bench.log" "echo-mux-bench failed"; exit 1; }
echo "echo-mux-bench: $(jget requests "$tmp/bench.json") requests in ${seconds}s"

# ---------------------------------------------------------------- prometheus
cat >"$tmp/prometheus.yml" <<EOF
global:
  scrape_interval: 250ms
  scrape_timeout: 200ms
scrape_configs:
  - job_name: echo-mux
    static_configs:
      - targets: ["127.0.0.1:$mport"]
EOF
for attempt in 1 2 3 4 5; do
    pport=$(shuf -i 20000-60000 -n 1)
    (exec 3<>"/dev/tcp/127.0.0.1/$pport") 2>/dev/null && continue # taken
    prometheus --config.file="$tmp/prometheus.yml" --storage.tsdb.path="$tmp/data" \
        --web.listen-address="127.0.0.1:$pport" --log.level=warn 2>"$tmp/prometheus.log" &
    prom_pid=$!
    for ((i = 0; i < 200; i++)); do
        http_get "$pport" /-/ready 2>/dev/null | grep -q Ready && break 2
        kill -0 "$prom_pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -TERM "$prom_pid" 2>/dev/null || true
    wait "$prom_pid" 2>/dev/null || true
    prom_pid=""
    ((attempt < 5)) || { fail_log "$tmp/prometheus.log" "prometheus did not become ready"; exit 1; }
done
echo "prometheus (pid $prom_pid) on 127.0.0.1:$pport, scraping every 250ms"

# stats KEY: KEY from the daemon's newest SIGUSR1 line (asked for now).
stats_line() {
    local before
    before=$(grep -c 'stats: ' "$tmp/echo-mux.log" || true)
    kill -USR1 "$server_pid"
    for ((i = 0; i < 100; i++)); do
        (($(grep -c 'stats: ' "$tmp/echo-mux.log" || true) > before)) && break
        sleep 0.05
    done
    grep 'stats: ' "$tmp/echo-mux.log" | tail -n 1
}
field() { sed -n "s/.* $1=\\([0-9]*\\).*/\\1/p" <<<"$2"; }

# query EXPR: the value of a PromQL expression with one result, as an integer ("" if none).
query() {
    http_get "$pport" "/api/v1/query?query=$1" |
        sed -n 's/.*"value":\[[0-9.e+]*,"\([0-9.e+]*\)"\].*/\1/p' | head -n 1 |
        awk '{ if ($1 != "") printf "%d\n", $1 }'
}

line=$(stats_line)
echo "SIGUSR1: ${line#*stats: }"
checks=(
    "accepted echo_mux_connections_accepted_total"
    "rejected sum(echo_mux_connections_rejected_total)"
    "bytes_in echo_mux_received_bytes_total"
    "bytes_out echo_mux_sent_bytes_total"
)
if ((workers > 1)); then
    checks+=(
        "accepted sum(echo_mux_worker_connections_accepted_total)"
        "bytes_out sum(echo_mux_worker_sent_bytes_total)"
    )
fi
deadline=$((SECONDS + 30))
for check in "${checks[@]}"; do
    read -r key expr <<<"$check"
    want=$(field "$key" "$line")
    while :; do
        got=$(query "$expr")
        [[ $got == "$want" ]] && break
        if ((SECONDS > deadline)); then
            echo "$prog: $expr through Prometheus is '${got}', the daemon says $key=$want" >&2
            fail_log "$tmp/prometheus.log" "Prometheus never caught up"
            exit 1
        fi
        sleep 0.25
    done
    printf '  %-48s = %-12s (SIGUSR1 %s=%s)\n' "$expr" "$got" "$key" "$want"
done
[[ $(query 'up') == 1 ]] || die "Prometheus says the target is not up"
echo "ok: Prometheus reads the daemon's own totals"
