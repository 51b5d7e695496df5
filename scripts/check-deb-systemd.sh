#!/usr/bin/env bash
# The Debian package's maintainer scripts where systemd runs, on a machine where it does not
# (CI, containers): scripts/check-deb.sh calls this after its own checks. It makes the
# scripts believe systemd runs (/run/systemd/system exists, for a few seconds) and records what
# they ask of systemctl: install must start echo-mux.socket and not the socket-activated
# service; a reinstall (upgrade) must neither stop nor restart any unit, and must reload
# echo-mux.service (after daemon-reload) when it runs, and leave it alone when it does not;
# removal must stop the units, purge must forget the enablement. The fake systemctl answers
# is-enabled the way systemd would from the links deb-systemd-helper made, and is-active
# from a list of the units each step pretends are running ($work/active).
# Offline calls (--root=/: deb-systemd-helper's `systemctl preset`) go to the real systemctl,
# which needs no running systemd for them. Root only; the package must not be installed.
set -euo pipefail

usage() {
    echo "Usage: scripts/check-deb-systemd.sh --deb PATH   (as root, echo-mux not installed, no running systemd)"
}

deb=
while [ $# -gt 0 ]; do
    case $1 in
        --deb) [ $# -ge 2 ] || { usage >&2; exit 2; }; deb=$2; shift 2 ;;
        --deb=*) deb=${1#*=}; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "check-deb-systemd.sh: unknown option '$1' (try --help)" >&2; exit 2 ;;
    esac
done

pkg=echo-mux
wants=/etc/systemd/system/sockets.target.wants/echo-mux.socket
fail() {
    echo "FAIL: $*" >&2
    exit 1
}
ok() { echo "ok: $*"; }
trap 'echo "FAIL: line $LINENO: $BASH_COMMAND" >&2' ERR

[ -n "$deb" ] && [ -f "$deb" ] || { usage >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || fail "run as root: the check installs and purges the package"
[ ! -d /run/systemd/system ] || fail "systemd runs here: nothing to emulate (check-deb.sh checks the real thing)"
if dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'installed\|config-files'; then
    fail "$pkg is already installed here; this check installs and purges it: dpkg --purge $pkg first"
fi
real_systemctl=$(command -v systemctl) || fail "systemctl is not installed (apt-get install systemd)"
real_invoke=$(command -v deb-systemd-invoke) || fail "deb-systemd-invoke is not installed (apt-get install init-system-helpers)"

work=$(mktemp -d)
fake_run_systemd=/run/systemd
[ -e /run/systemd ] && fake_run_systemd=/run/systemd/system
cleanup() {
    rm -rf -- "$fake_run_systemd"
    if dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'installed\|config-files'; then
        dpkg --purge "$pkg" >/dev/null 2>&1 || true
    fi
    rm -rf -- "$work"
}
trap cleanup EXIT
mkdir -p /run/systemd/system
mkdir -p "$work/bin"
cat >"$work/bin/systemctl" <<EOF
#!/bin/sh
case " \$* " in *" --root="*) exec $real_systemctl "\$@" ;; esac
echo "\$*" >>"$work/systemctl.log"
for last; do :; done
case " \$* " in
    *" is-enabled "*)
        case \$last in
            echo-mux.socket) [ -L $wants ] && { echo enabled; exit 0; }; echo disabled; exit 1 ;;
            echo-mux.service) echo indirect; exit 0 ;;
        esac; echo disabled; exit 1 ;;
    *" is-active "*) grep -qx "\$last" "$work/active" && exit 0; exit 3 ;;
esac
exit 0
EOF
# A container's /usr/sbin/policy-rc.d ("exit 101": never start services) would veto every
# start; deb-systemd-invoke looks for it under $DPKG_ROOT, so point that at an empty tree.
# The real deb-systemd-invoke still decides what to start, through the fake systemctl.
mkdir -p "$work/no-policy"
cat >"$work/bin/deb-systemd-invoke" <<EOF
#!/bin/sh
DPKG_ROOT=$work/no-policy exec $real_invoke "\$@"
EOF
chmod 0755 "$work/bin/systemctl" "$work/bin/deb-systemd-invoke"
export PATH="$work/bin:$PATH"
# Run one dpkg action and keep what it asked of systemctl in $calls.
calls=
: >"$work/active"
running() { printf '%s\n' "$@" >"$work/active"; }
under_systemd() {
    : >"$work/systemctl.log"
    dpkg "$@" >"$work/dpkg-emulated" 2>&1 || { cat "$work/dpkg-emulated" >&2; fail "dpkg $* under emulated systemd failed"; }
    calls=$(cat "$work/systemctl.log")
}
called() { grep -q -- "$1" <<<"$calls"; }
shown() { echo "$calls" | tr '\n' ';' | sed 's/;$//; s/;/; /g'; }
says() { fail "$1; systemctl was called with:
$calls"; }

under_systemd -i "$deb"
called ' daemon-reload' || says "install did not reload systemd"
called ' start .*echo-mux.socket' || says "install did not start echo-mux.socket"
called ' start .*echo-mux.service' && says "install started echo-mux.service (socket-activated: it waits for a connection)"
ok "emulated systemd, install: daemon-reload, start echo-mux.socket (the service waits for a connection) [systemctl $(shown)]"
# An upgrade while the sockets listen but the service waits for its first connection: the
# next connection starts the new binary; nothing to stop, restart or reload.
running echo-mux.socket echo-mux-metrics.socket
under_systemd -i "$deb"
called ' daemon-reload' || says "upgrade did not reload systemd"
called ' stop ' && says "upgrade stopped a unit"
called 'restart' && says "upgrade restarted a unit (a restarted socket takes the service down with it)"
called '^reload ' && says "upgrade reloaded echo-mux.service, which was not running"
ok "emulated systemd, upgrade with the service idle: daemon-reload, no stop, no restart, no reload [systemctl $(shown)]"
# An upgrade while echo-mux.service runs: reloaded in place (SIGHUP through ExecReload=), after
# systemd has read the new unit files; never stopped or restarted, so no connection drops.
running echo-mux.socket echo-mux-metrics.socket echo-mux.service
under_systemd -i "$deb"
called '^reload echo-mux\.service$' || says "upgrade did not reload the running echo-mux.service"
called ' stop ' && says "upgrade stopped a unit"
called 'restart' && says "upgrade restarted a unit"
first_reload=$(grep -n -m1 ' daemon-reload' <<<"$calls" | cut -d: -f1)
service_reload=$(grep -n -m1 '^reload echo-mux\.service$' <<<"$calls" | cut -d: -f1)
[ "$first_reload" -lt "$service_reload" ] || says "upgrade reloaded echo-mux.service before systemd read the new units"
ok "emulated systemd, upgrade with the service running: daemon-reload, then reload echo-mux.service; no stop, no restart [systemctl $(shown)]"
# An upgrade from 0.2.0, whose daemon ignores SIGHUP: the installed postinst, replayed as
# dpkg runs it for that upgrade, restarts the running service once instead.
: >"$work/systemctl.log"
sh "/var/lib/dpkg/info/$pkg.postinst" configure 0.2.0 >"$work/dpkg-emulated" 2>&1 ||
    { cat "$work/dpkg-emulated" >&2; fail "postinst configure 0.2.0 failed"; }
calls=$(cat "$work/systemctl.log")
called ' restart echo-mux\.service$' || says "an upgrade from 0.2.0 did not restart echo-mux.service"
called '^reload ' && says "an upgrade from 0.2.0 reloaded (its daemon ignores SIGHUP)"
ok "emulated systemd, upgrade from 0.2.0 with the service running: restart echo-mux.service once [systemctl $(shown)]"
running echo-mux.socket echo-mux-metrics.socket
under_systemd -r "$pkg"
# (echo-mux-metrics.socket, a unit the package ships without [Install], is stopped too.)
called '^stop \(echo-mux-metrics\.socket \)\{0,1\}echo-mux\.service echo-mux\.socket$' ||
    says "removal did not stop the units"
ok "emulated systemd, removal: stop echo-mux-metrics.socket, echo-mux.service, echo-mux.socket [systemctl $(shown)]"
under_systemd --purge "$pkg"
[ ! -e "$wants" ] || fail "$wants left after purge"
ok "emulated systemd, purge: enablement forgotten"
