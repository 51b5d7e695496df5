#!/usr/bin/env bash
# hammer.sh: many parallel netcat clients against an echo server; each sends a random payload,
# keeps what comes back, and the two are compared by SHA-256. Loopback testing tool for echo-mux
# (works against any raw echo server that closes after echoing a half-closed connection, and
# with --udp against any UDP echo server).
set -euo pipefail

prog=hammer.sh
host=127.0.0.1
port=50007
clients=20
bytes=65536
rounds=1
timeout_s=60
udp=0
bytes_given=0

usage() {
    cat <<USAGE
Usage: scripts/$prog [--udp] [--host H] [--port P] [--clients N] [--bytes B] [--rounds R] [--timeout S]

Starts N netcat clients at once against an echo server. Each sends B random bytes (fresh from
/dev/urandom every round), half-closes (nc -N) and saves what the server echoes back until it
closes; the SHA-256 of what was sent and what came back must match. Repeats R rounds.

With --udp one probe datagram goes first: if nothing comes back within 2 s, hammer.sh says so in
one line and exits 1 without starting the clients. Then each client is nc -u: its B bytes leave as datagrams of at most 16 KiB (nc's read
size), and it keeps listening until B bytes have come back, then 0.2 s more (so a duplicated
or extra datagram shows up), or until --timeout. A lost datagram is a failure: UDP may drop
under load, so keep N x B within the server's receive buffer (about 200 KiB by default).

Options:
  --udp         UDP instead of TCP (default B is then 1024)
  --host H      server host (default $host)
  --port P      server port (default $port)
  --clients N   parallel clients per round (default $clients)
  --bytes B     payload size per client in bytes (default $bytes; 1024 with --udp)
  --rounds R    rounds (default $rounds)
  --timeout S   give up on one client after S seconds (default $timeout_s)
  -h, --help    this text

Prints one line per failed client and, last, 'X passed, Y failed'.
Exit status: 0 all passed, 1 some client failed, 2 bad usage or missing tool.
Needs: nc from netcat-openbsd (apt-get install -y netcat-openbsd), sha256sum, timeout.
USAGE
}

die_usage() {
    echo "$prog: $*" >&2
    exit 2
}

while (($#)); do
    case $1 in
        -h | --help)
            usage
            exit 0
            ;;
        --udp)
            udp=1
            shift
            continue
            ;;
        --host | --port | --clients | --bytes | --rounds | --timeout)
            (($# >= 2)) || die_usage "option '$1' needs a value"
            opt=${1#--}
            val=$2
            shift 2
            ;;
        --host=* | --port=* | --clients=* | --bytes=* | --rounds=* | --timeout=*)
            opt=${1%%=*}
            opt=${opt#--}
            val=${1#*=}
            shift
            ;;
        *) die_usage "unknown option '$1' (try --help)" ;;
    esac
    case $opt in
        host)
            [[ -n $val ]] || die_usage "invalid value '' for '--host'"
            host=$val
            ;;
        port)
            if ! [[ $val =~ ^[0-9]{1,5}$ ]] || ((10#$val < 1 || 10#$val > 65535)); then
                die_usage "invalid value '$val' for '--port': expected 1-65535"
            fi
            port=$val
            ;;
        clients | rounds | timeout)
            [[ $val =~ ^[1-9][0-9]{0,5}$ ]] ||
                die_usage "invalid value '$val' for '--$opt': expected a whole number from 1"
            case $opt in
                clients) clients=$val ;;
                rounds) rounds=$val ;;
                timeout) timeout_s=$val ;;
            esac
            ;;
        bytes)
            [[ $val =~ ^[0-9]{1,10}$ ]] ||
                die_usage "invalid value '$val' for '--bytes': expected a whole number of bytes"
            bytes=$val
            bytes_given=1
            ;;
    esac
done
((bytes_given || !udp)) || bytes=1024

for tool in nc sha256sum timeout head; do
    command -v "$tool" >/dev/null 2>&1 || {
        hint=""
        [[ $tool == nc ]] && hint=" (apt-get install -y netcat-openbsd)"
        echo "$prog: '$tool' not found$hint" >&2
        exit 2
    }
done
# -N (shut down the socket's sending side at end of input) and -q (quit after end of input)
# are netcat-openbsd's.
for flag in N q; do
    if ! nc -h 2>&1 | grep -q -- "-$flag"; then
        echo "$prog: this nc has no -$flag option; install netcat-openbsd (apt-get install -y netcat-openbsd)" >&2
        exit 2
    fi
done

# udp_probe: one short datagram to the server, and any datagram back within 2 s. UDP has no
# handshake, so without this an absent server would show as every client getting nothing
# back. bash's /dev/udp gives a connected socket: an ICMP "port unreachable" (nothing bound
# there) ends the wait at once; a server that stays silent runs out the 2 s. head reads the
# whole datagram in one read.
udp_probe() {
    local got
    got=$(
        exec 3<>"/dev/udp/$host/$port" || exit 1
        printf 'hammer.sh probe\n' >&3 || exit 1
        timeout 2 head -c 1 <&3 2>/dev/null | od -An -c
    ) 2>/dev/null || return 1
    [[ -n $got ]]
}

if ((udp)) && ! udp_probe; then
    echo "$prog: no UDP echo from $host:$port (is the server running?)" >&2
    echo "0 passed, $((clients * rounds)) failed"
    exit 1
fi
if ((!udp)) && ! timeout 10 nc -z -w 5 "$host" "$port" 2>/dev/null; then
    echo "$prog: cannot connect to $host:$port (is the server running?)" >&2
    echo "0 passed, $((clients * rounds)) failed"
    exit 1
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/hammer.XXXXXX")
pids=()
cleanup() {
    local pid
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# tcp_client I: client I over TCP; at most timeout_s seconds in all (nc -w also gives up on a
# silent peer). Its exit status is nc's.
tcp_client() {
    timeout "$timeout_s" nc -N -w "$timeout_s" "$host" "$port" \
        <"$work/in.$1" >"$work/out.$1" 2>"$work/err.$1"
}

# udp_client I: client I over UDP. nc -u closes its socket at the end of its input, so the input
# stays open until every byte is back (or nc has exited, or timeout_s has passed), then 0.2 s
# more to catch extra datagrams; -q 0 then ends nc at once. Its exit status is nc's.
udp_client() {
    local out=$work/out.$1 gone=$work/gone.$1
    {
        cat "$work/in.$1"
        local ticks=$((timeout_s * 20))
        while (($(stat -c %s "$out") < bytes && ticks-- > 0)) && [[ ! -e $gone ]]; do
            sleep 0.05
        done
        [[ -e $gone ]] || sleep 0.2
    } | {
        local rc=0
        timeout $((timeout_s + 5)) nc -u -q 0 "$host" "$port" >"$out" 2>"$work/err.$1" || rc=$?
        : >"$gone"
        return "$rc"
    }
}

client=tcp_client
proto=""
if ((udp)); then
    client=udp_client
    proto=/udp
fi

passed=0
failed=0
for ((r = 1; r <= rounds; r++)); do
    echo "round $r/$rounds: $clients clients x $bytes bytes to $host:$port$proto"
    pids=()
    for ((i = 1; i <= clients; i++)); do
        head -c "$bytes" /dev/urandom >"$work/in.$i"
        : >"$work/out.$i"
        rm -f "$work/gone.$i"
        (
            rc=0
            "$client" "$i" || rc=$?
            echo "$rc" >"$work/rc.$i"
        ) &
        pids+=("$!")
    done
    for pid in "${pids[@]}"; do
        wait "$pid" || true
    done
    pids=()
    for ((i = 1; i <= clients; i++)); do
        want=$(sha256sum <"$work/in.$i")
        got=$(sha256sum <"$work/out.$i")
        rc=$(cat "$work/rc.$i" 2>/dev/null || echo '?')
        if [[ $want == "$got" && $rc == 0 ]]; then
            passed=$((passed + 1))
            continue
        fi
        failed=$((failed + 1))
        size=$(wc -c <"$work/out.$i")
        why=""
        [[ $want == "$got" ]] || why="echo differs: sent $bytes bytes, got $size back"
        case $rc in
            0) ;;
            124) why="${why:+$why; }timed out after ${timeout_s}s" ;;
            *) why="${why:+$why; }nc exited with status $rc" ;;
        esac
        err=$(head -c 200 "$work/err.$i" | tr '\n' ' ')
        echo "FAIL round $r client $i: $why${err:+ ($err)}"
    done
done

echo "$passed passed, $failed failed"
((failed == 0))
