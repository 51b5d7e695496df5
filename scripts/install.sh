#!/usr/bin/env bash
# Install (or uninstall) echo-mux as a socket-activated systemd service.
# Run with --help for the options. Every action is reported on its own line.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: scripts/install.sh [OPTIONS]

Build echo-mux in release mode, install the binary and the systemd units, and (when systemd
is running and no DESTDIR is given) reload systemd and enable and start echo-mux.socket.

Options:
  --prefix DIR     install the binary as DIR/bin/echo-mux (default: $PREFIX or /usr/local)
  --destdir DIR    stage everything under DIR, e.g. for packaging (default: $DESTDIR or none);
                   systemctl is never run when a DESTDIR is set
  --unitdir DIR    where the units go (default: /etc/systemd/system)
  --binary PATH    install this echo-mux binary instead of building one (implies --no-build)
  --no-build       do not run cargo; install target/release/echo-mux as it is
  --uninstall      stop and disable the units (when systemd runs), then remove exactly the
                   four files an install with the same --prefix/--destdir/--unitdir made
  -h, --help       show this help

Installed files:
  $DESTDIR$PREFIX/bin/echo-mux
  $DESTDIR$UNITDIR/echo-mux.service    (ExecStart= points at $PREFIX/bin/echo-mux)
  $DESTDIR$UNITDIR/echo-mux.socket
  $DESTDIR$UNITDIR/echo-mux-metrics.socket   (started by echo-mux.socket: GET /metrics, /status)
EOF
}

die() {
    echo "install.sh: $*" >&2
    exit 2
}

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
prefix=${PREFIX:-/usr/local}
destdir=${DESTDIR:-}
unitdir=/etc/systemd/system
binary=
build=yes
action=install

while [ $# -gt 0 ]; do
    case $1 in
        --prefix) [ $# -ge 2 ] || die "--prefix needs a directory"; prefix=$2; shift 2 ;;
        --prefix=*) prefix=${1#*=}; shift ;;
        --destdir) [ $# -ge 2 ] || die "--destdir needs a directory"; destdir=$2; shift 2 ;;
        --destdir=*) destdir=${1#*=}; shift ;;
        --unitdir) [ $# -ge 2 ] || die "--unitdir needs a directory"; unitdir=$2; shift 2 ;;
        --unitdir=*) unitdir=${1#*=}; shift ;;
        --binary) [ $# -ge 2 ] || die "--binary needs a path"; binary=$2; build=no; shift 2 ;;
        --binary=*) binary=${1#*=}; build=no; shift ;;
        --no-build) build=no; shift ;;
        --uninstall) action=uninstall; shift ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown option '$1' (try --help)" ;;
    esac
done

# systemd wants an absolute ExecStart= and splits it at whitespace.
for dir in "$prefix" "$unitdir"; do
    case $dir in
        /*) ;;
        *) die "'$dir' is not an absolute path" ;;
    esac
    case $dir in
        *[[:space:]]*) die "'$dir' contains whitespace, which ExecStart= cannot hold" ;;
    esac
done
prefix=${prefix%/}
unitdir=${unitdir%/}
destdir=${destdir%/}

bin_path=$prefix/bin/echo-mux
bin_dest=$destdir$bin_path
units=(echo-mux.service echo-mux.socket echo-mux-metrics.socket)

# systemctl only for a live install on a machine booted with systemd.
if [ -z "$destdir" ] && [ -d /run/systemd/system ]; then
    live=yes
else
    live=no
fi

if [ "$action" = uninstall ]; then
    if [ "$live" = yes ]; then
        # Stop the socket first so no new connection re-activates the service.
        systemctl disable --now echo-mux.socket || echo "echo-mux.socket was not enabled"
        systemctl stop echo-mux.service || echo "echo-mux.service was not running"
        echo "stopped and disabled echo-mux.socket and echo-mux.service"
    fi
    for f in "$bin_dest" "${units[@]/#/$destdir$unitdir/}"; do
        if [ -e "$f" ] || [ -L "$f" ]; then
            rm -f -- "$f"
            echo "removed $f"
        else
            echo "not present: $f"
        fi
    done
    if [ "$live" = yes ]; then
        systemctl daemon-reload
        echo "ran systemctl daemon-reload"
    fi
    exit 0
fi

if [ -z "$binary" ]; then
    binary=${CARGO_TARGET_DIR:-$root/target}/release/echo-mux
    if [ "$build" = yes ]; then
        (cd "$root" && cargo build --release --locked)
        echo "built $binary"
    fi
fi
[ -f "$binary" ] && [ -x "$binary" ] || die "no executable at $binary (build it, or pass --binary PATH)"

install -D -m 0755 -- "$binary" "$bin_dest"
echo "installed $bin_dest"

for unit in "${units[@]}"; do
    src=$root/systemd/$unit
    dest=$destdir$unitdir/$unit
    [ -f "$src" ] || die "missing $src"
    mkdir -p -- "$destdir$unitdir"
    # Point ExecStart= at the installed binary, keeping its arguments. ENVIRON, not -v, so
    # that awk does not interpret backslashes in the path.
    BIN=$bin_path awk '
        /^ExecStart=/ { sub(/^ExecStart=[^ ]*/, ""); print "ExecStart=" ENVIRON["BIN"] $0; next }
        { print }
    ' "$src" >"$dest.tmp"
    chmod 0644 "$dest.tmp"
    mv -f -- "$dest.tmp" "$dest"
    if [ "$unit" = echo-mux.service ]; then
        echo "installed $dest (ExecStart=$bin_path ...)"
    else
        echo "installed $dest"
    fi
done

if [ "$live" = yes ]; then
    systemctl daemon-reload
    echo "ran systemctl daemon-reload"
    systemctl enable --now echo-mux.socket
    echo "enabled and started echo-mux.socket (echo-mux.service starts at the first connection)"
else
    if [ -n "$destdir" ]; then
        echo "DESTDIR is set: systemctl not run"
    else
        echo "systemd is not running: systemctl not run"
    fi
    echo "to start later: systemctl daemon-reload && systemctl enable --now echo-mux.socket"
fi
