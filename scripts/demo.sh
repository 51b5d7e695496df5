#!/usr/bin/env bash
# demo.sh: the textbook session. echo-mux in stamp mode holds every reply for 5 s; three
# clients connect at once; all three get their "Echo=>... at <ctime>" answers after about 5 s,
# not 15, because one thread multiplexes them with timers instead of sleeping.
set -euo pipefail

prog=demo.sh
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
delay=5

usage() {
    cat <<USAGE
Usage: scripts/$prog [--delay SECONDS]

Builds echo-mux (release) if needed, starts it as
    echo-mux --mode stamp --delay ${delay}s --listen 127.0.0.1:0
sends one line from each of three nc clients at the same time, prints their answers and how
long they took (about the delay once, not three times), then stops echo-mux with SIGTERM.

Options:
  --delay SECONDS   the server's --delay (default $delay)
  -h, --help        this text
Environment: ECHO_MUX overrides the binary (then nothing is built).
Needs nc from netcat-openbsd (apt-get install -y netcat-openbsd).
USAGE
}

while (($#)); do
    case $1 in
        -h | --help)
            usage
            exit 0
            ;;
        --delay)
            (($# >= 2)) || die_usage "option '--delay' needs a value"
            [[ $2 =~ ^[0-9]{1,3}$ ]] || die_usage "invalid value '$2' for '--delay': expected whole seconds, e.g. 5"
            delay=$2
            shift 2
            ;;
        *) die_usage "unknown option '$1' (try --help)" ;;
    esac
done

if ! command -v nc >/dev/null 2>&1 || ! nc -h 2>&1 | grep -q -- '-N'; then
    die "needs nc from netcat-openbsd (apt-get install -y netcat-openbsd)"
fi

cd "$root"
server_bin=$(release_bin echo-mux)
build_bins "== building echo-mux (cargo build --release) if needed" echo-mux
[[ -x $server_bin ]] || die "$server_bin not found"

work=$(mktemp -d "${TMPDIR:-/tmp}/echo-mux-demo.XXXXXX")
server_pid=""
client_pids=()
cleanup() {
    kill_pids "${client_pids[@]}"
    if [[ -n $server_pid ]] && kill -0 "$server_pid" 2>/dev/null; then
        kill -KILL "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
on_exit cleanup

echo "== starting: echo-mux --mode stamp --delay ${delay}s --listen 127.0.0.1:0"
if ! spawn_server "$work/server.log" "$server_bin" --mode stamp --delay "${delay}s" --listen 127.0.0.1:0; then
    fail_log "$work/server.log" "echo-mux did not start"
    exit 1
fi
sed 's/^/   server: /' "$work/server.log"

echo "== three clients connect at once, each sends one line"
start=$(date +%s.%N)
for i in 1 2 3; do
    line="Hello from client $i"
    echo "   client $i -> $line"
    # nc -N half-closes after the line; the server answers after the delay, then closes.
    printf '%s\n' "$line" | timeout $((delay + 20)) nc -N 127.0.0.1 "$port" >"$work/answer.$i" 2>&1 &
    client_pids+=("$!")
done
failed=0
for i in 1 2 3; do
    wait "${client_pids[$((i - 1))]}" || failed=1
done
client_pids=()
end=$(date +%s.%N)
for i in 1 2 3; do
    if [[ -s $work/answer.$i ]]; then
        sed "s/^/   client $i <- /" "$work/answer.$i"
    else
        echo "   client $i <- (nothing)"
        failed=1
    fi
done
elapsed=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f", b - a }')
echo "== all three answered in ${elapsed} s: the ${delay} s delays ran side by side (one after the other would take $((3 * delay)) s)"

echo "== stopping echo-mux with SIGTERM"
kill -TERM "$server_pid"
status=0
kill_lingering "$server_pid" "echo-mux still running 10 s after SIGTERM; killing it"
wait "$server_pid" || status=$?
server_pid=""
tail -n +2 "$work/server.log" | sed 's/^/   server: /'
echo "== echo-mux exited with status $status"
((failed == 0 && status == 0))
