#!/usr/bin/env bash
# Build the Debian package with cargo-deb and check it for real (SPEC §11): its exact file
# list, lintian, an install on this machine, the installed binary, units, man page and
# completions, removal and purge with nothing left behind, and the maintainer scripts'
# systemctl calls under an emulated systemd. Run as root on a Debian machine that does not
# have echo-mux installed (.ci/run does, after the tests). One line per check; exit 1 on the
# first failure.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: scripts/check-deb.sh [--deb PATH]

  --deb PATH   check this .deb instead of building one with `cargo deb --locked`
  -h, --help   show this help

Needs root, dpkg, lintian, man-db, bash-completion, zsh, fish and systemd-analyze
(apt-get install lintian man-db bash-completion zsh fish systemd), and cargo-deb
(cargo install cargo-deb --locked) unless --deb is given.
EOF
}

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
deb=
while [ $# -gt 0 ]; do
    case $1 in
        --deb) [ $# -ge 2 ] || { echo "check-deb.sh: --deb needs a path" >&2; exit 2; }; deb=$2; shift 2 ;;
        --deb=*) deb=${1#*=}; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "check-deb.sh: unknown option '$1' (try --help)" >&2; exit 2 ;;
    esac
done

pkg=echo-mux
# Lintian tags accepted, all of them "I:" (information), none a warning or an error:
#   hardening-no-fortify-functions   Rust does not call glibc's _chk functions; there is no
#                                    C code to fortify.
#   no-md5sums-control-file          cargo-deb writes no md5sums; debsums is optional.
#   package-supports-alternative-init-but-no-init.d-script
#                                    systemd only: the daemon relies on socket activation
#                                    and sd_notify (SPEC §6); no sysvinit script.
#   spelling-error-in-binary         "wTH" is a byte pattern in machine code, not text.
#   binary-has-unneeded-section      a .comment section left by the Rust toolchain's strip.
# Anything at warning or error level fails the check (--fail-on error,warning).

fail() {
    echo "FAIL: $*" >&2
    exit 1
}
ok() { echo "ok: $*"; }
# Any other failing command is a failed check too: say which.
trap 'echo "FAIL: line $LINENO: $BASH_COMMAND" >&2' ERR
need() {
    command -v "$1" >/dev/null 2>&1 || fail "$1 is not installed (apt-get install $2)"
}

[ "$(id -u)" -eq 0 ] || fail "run as root: the check installs and purges the package"
need dpkg-deb dpkg
need lintian lintian
need man man-db
need systemd-analyze systemd
need zsh zsh
need fish fish
[ -f /usr/share/bash-completion/bash_completion ] || fail "bash-completion is not installed (apt-get install bash-completion)"
if dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'installed\|config-files'; then
    fail "$pkg is already installed here; this check installs and purges it: dpkg --purge $pkg first"
fi

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
arch=$(dpkg --print-architecture)
work=$(mktemp -d)
cleanup() {
    # Never leave the package installed.
    if dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'installed\|config-files'; then
        dpkg --purge "$pkg" >/dev/null 2>&1 || true
    fi
    rm -rf -- "$work"
}
trap cleanup EXIT

# --- Build --------------------------------------------------------------------------------
if [ -z "$deb" ]; then
    need cargo-deb "cargo install cargo-deb --locked"
    start=$SECONDS
    deb=$(cargo deb --locked | tail -n 1)
    ok "cargo deb built $deb in $((SECONDS - start)) s"
fi
[ -f "$deb" ] || fail "no package at $deb"
[ "$(basename "$deb")" = "${pkg}_${version}_${arch}.deb" ] || fail "unexpected file name $(basename "$deb") (want ${pkg}_${version}_${arch}.deb)"

# --- Contents -----------------------------------------------------------------------------
dpkg-deb -c "$deb" >"$work/listing"
# (The archive root "./", which dpkg-deb -b lists and cargo-deb does not, is no file.)
awk '$6 != "./" {print $1, $6}' "$work/listing" | sort -k2 >"$work/contents"
grep -v '^#' debian/expected-contents | sort -k2 >"$work/expected"
if ! diff -u "$work/expected" "$work/contents" >"$work/contents.diff"; then
    cat "$work/contents.diff" >&2
    fail "dpkg-deb -c differs from debian/expected-contents (- expected, + packaged)"
fi
awk '$2 != "0/0" && $2 != "root/root" { bad = 1; print "not owned by root:", $0 } END { exit bad }' \
    "$work/listing" >&2 || fail "files not owned by root"
ok "dpkg-deb -c lists exactly debian/expected-contents ($(grep -c . "$work/expected") entries)"

field() { dpkg-deb -f "$deb" "$1"; }
[ "$(field Package)" = "$pkg" ] || fail "Package: $(field Package)"
[ "$(field Version)" = "$version" ] || fail "Version: $(field Version), Cargo.toml says $version"
[ "$(field Architecture)" = "$arch" ] || fail "Architecture: $(field Architecture)"
field Depends | grep -q 'libc6' || fail "Depends: '$(field Depends)' lacks libc6"
ok "control: $pkg $version $arch, Depends: $(field Depends)"

# The packaged units are systemd/ itself, byte for byte: one source (SPEC §11).
dpkg-deb -x "$deb" "$work/root"
for unit in echo-mux.service echo-mux.socket echo-mux-metrics.socket; do
    cmp -s "systemd/$unit" "$work/root/usr/lib/systemd/system/$unit" || fail "packaged $unit differs from systemd/$unit"
done
grep -qx 'ExecStart=/usr/bin/echo-mux --backend epoll --workers auto' "$work/root/usr/lib/systemd/system/echo-mux.service" ||
    fail "packaged echo-mux.service does not run /usr/bin/echo-mux"
ok "packaged units are systemd/ unchanged, ExecStart=/usr/bin/echo-mux --backend epoll --workers auto"

dpkg-deb -e "$deb" "$work/control"
for script in postinst prerm postrm; do
    [ -f "$work/control/$script" ] || fail "no $script maintainer script"
    sh -n "$work/control/$script" || fail "$script is not valid sh"
done
grep -q 'deb-systemd-helper enable echo-mux.socket' "$work/control/postinst" || fail "postinst does not enable echo-mux.socket"
ok "maintainer scripts: postinst, prerm, postrm parse; postinst enables echo-mux.socket"

# --- lintian ------------------------------------------------------------------------------
# lintian warns that it runs as root; that line is not about the package.
if ! lintian --display-info --fail-on error,warning "$deb" >"$work/lintian" 2>&1; then
    cat "$work/lintian" >&2
    fail "lintian reports an error or a warning"
fi
grep -v 'running with root privileges' "$work/lintian" | sed 's/^/  lintian: /' || true
ok "lintian: no error, no warning"

# --- Install (no systemd running here: the maintainer scripts must cope) -------------------
# What exists before, to prove the purge leaves nothing of ours behind.
# (find may meet files that vanish meanwhile: other processes' business, not an error here.)
snapshot() { { find /etc /usr /var/lib /run -xdev 2>/dev/null || true; } | sort; }
snapshot >"$work/before"
running_systemd=no
[ -d /run/systemd/system ] && running_systemd=yes
dpkg -i "$deb" >"$work/dpkg-i" 2>&1 || { cat "$work/dpkg-i" >&2; fail "dpkg -i failed"; }
grep -i 'warning\|error' "$work/dpkg-i" >&2 && fail "dpkg -i printed a warning or an error"
[ "$(dpkg-query -W -f='${Status}' "$pkg")" = "install ok installed" ] || fail "dpkg-query: $(dpkg-query -W -f='${Status}' "$pkg")"
ok "dpkg -i (systemd running: $running_systemd): install ok installed"

out=$(/usr/bin/echo-mux --version) || fail "/usr/bin/echo-mux --version failed"
[ "$out" = "echo-mux $version" ] || fail "/usr/bin/echo-mux --version printed '$out'"
ok "/usr/bin/echo-mux --version: $out"

out=$(systemd-analyze verify /usr/lib/systemd/system/echo-mux.socket /usr/lib/systemd/system/echo-mux-metrics.socket \
    /usr/lib/systemd/system/echo-mux.service 2>&1) ||
    fail "systemd-analyze verify failed: $out"
[ -z "$out" ] || fail "systemd-analyze verify is not clean: $out"
ok "systemd-analyze verify on the installed units: clean (Documentation=man:echo-mux(8) resolves)"

# Enabled even without a running systemd: deb-systemd-helper writes the symlink itself.
wants=/etc/systemd/system/sockets.target.wants/echo-mux.socket
# (bookworm's deb-systemd-helper links to /lib/systemd/system/, the same file on a usr-merged system.)
[ -L "$wants" ] && [ "$(readlink -f "$wants")" = "$(readlink -f /usr/lib/systemd/system/echo-mux.socket)" ] ||
    fail "$wants is not a link to the packaged unit"
ok "echo-mux.socket enabled: $wants -> $(readlink "$wants")"
if [ "$running_systemd" = yes ]; then
    systemctl is-active --quiet echo-mux.socket || fail "systemd runs, but the install did not start echo-mux.socket"
    ok "echo-mux.socket started by the install"
fi

[ "$(man -w echo-mux)" = /usr/share/man/man8/echo-mux.8.gz ] || fail "man -w echo-mux: $(man -w echo-mux 2>&1)"
out=$(MANWIDTH=80 man echo-mux 2>&1 >/dev/null) || true
[ -z "$out" ] || fail "man echo-mux warns: $out"
MANWIDTH=80 man echo-mux 2>/dev/null | grep -q 'EXIT STATUS' || fail "man echo-mux does not render"
ok "man echo-mux renders without a warning"

out=$(bash -c 'source /usr/share/bash-completion/completions/echo-mux; complete -p echo-mux' 2>&1) ||
    fail "bash completion not registered: $out"
case $out in
    "complete "*"-F "*" echo-mux") ;;
    *) fail "bash completion not registered: '$out'" ;;
esac
# And it completes: `echo-mux --max-b<TAB>` offers --max-buffer.
out=$(bash -c 'source /usr/share/bash-completion/completions/echo-mux
    fn=$(complete -p echo-mux | sed -n "s/.*-F \([^ ]*\) .*/\1/p")
    COMP_WORDS=(echo-mux --max-b); COMP_CWORD=1; COMP_LINE="echo-mux --max-b"; COMP_POINT=${#COMP_LINE}
    "$fn" echo-mux --max-b echo-mux; echo "${COMPREPLY[*]}"' 2>&1) || true
[ "$out" = "--max-buffer" ] || fail "bash completion of '--max-b' gave '$out'"
# Values, not file names, for the options that take a fixed set (run where files exist).
out=$(cd /usr/share/doc/echo-mux && bash -c 'source /usr/share/bash-completion/completions/echo-mux
    fn=$(complete -p echo-mux | sed -n "s/.*-F \([^ ]*\) .*/\1/p")
    COMP_WORDS=(echo-mux --backend ""); COMP_CWORD=2; COMP_LINE="echo-mux --backend "; COMP_POINT=${#COMP_LINE}
    "$fn" echo-mux "" --backend; echo "${COMPREPLY[*]}"' 2>&1) || true
[ "$out" = "epoll poll select auto" ] || fail "bash completion of '--backend ' gave '$out'"
# bash-completion's loader finds the file by the command's name, as in an interactive shell.
out=$(bash -c 'source /usr/share/bash-completion/bash_completion; __load_completion echo-mux && complete -p echo-mux') ||
    fail "bash-completion's loader does not find the completion"
[ -n "$out" ] || fail "bash-completion's loader does not find the completion"
ok "bash completion: $(echo "$out" | cut -c1-60)..., --max-b completes to --max-buffer, --backend offers its values"

zsh -n /usr/share/zsh/vendor-completions/_echo-mux || fail "zsh completion is not valid zsh"
out=$(zsh -fc 'fpath=(/usr/share/zsh/vendor-completions $fpath); autoload -Uz compinit; compinit -u -D; print -r -- ${_comps[echo-mux]}') || true
[ "$out" = _echo-mux ] || fail "zsh compinit does not pick up _echo-mux (got '$out')"
ok "zsh completion: valid, registered by compinit from vendor-completions"

fish -n /usr/share/fish/vendor_completions.d/echo-mux.fish || fail "fish completion is not valid fish"
out=$(HOME=$work fish -c 'complete -C "echo-mux --max-b"' | cut -f1) || true
[ "$out" = "--max-buffer" ] || fail "fish completion of '--max-b' gave '$out'"
out=$(cd /usr/share/doc/echo-mux && HOME=$work fish -c 'complete -C "echo-mux --mode "' | cut -f1 | sort | tr '\n' ' ') || true
[ "$out" = "raw stamp " ] || fail "fish completion of '--mode ' gave '$out'"
ok "fish completion: --max-b completes to --max-buffer, --mode offers raw and stamp"

# --- Remove, purge: nothing left ----------------------------------------------------------
dpkg-query -L "$pkg" | sort >"$work/owned"
dpkg -r "$pkg" >"$work/dpkg-r" 2>&1 || { cat "$work/dpkg-r" >&2; fail "dpkg -r failed"; }
[ ! -e /usr/bin/echo-mux ] || fail "/usr/bin/echo-mux still there after dpkg -r"
if [ "$running_systemd" = yes ] && systemctl is-active --quiet echo-mux.socket; then
    fail "echo-mux.socket still active after dpkg -r"
fi
ok "dpkg -r: removed ($(dpkg-query -W -f='${Status}' "$pkg"))"
dpkg --purge "$pkg" >"$work/dpkg-purge" 2>&1 || { cat "$work/dpkg-purge" >&2; fail "dpkg --purge failed"; }
if dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'installed\|config-files'; then
    fail "still known to dpkg after purge: $(dpkg-query -W -f='${Status}' "$pkg")"
fi
snapshot >"$work/after"
# Left behind = new since the install, and ours: a path the package owned, or one that names
# echo-mux (enable links, deb-systemd-helper state, masks, dpkg's own records).
comm -13 "$work/before" "$work/after" >"$work/new"
left=$( { grep -Fxf "$work/owned" "$work/new" || true; grep 'echo-mux' "$work/new" || true; } | sort -u)
[ -z "$left" ] || fail "left behind after purge:
$left"
while read -r path; do
    [ "$path" = /. ] && continue
    if [ -f "$path" ] || [ -L "$path" ]; then fail "$path is still there after purge"; fi
done <"$work/owned"
ok "dpkg --purge: no file of the package and nothing naming echo-mux is left"

# --- The maintainer scripts where systemd runs -------------------------------------------
if [ "$running_systemd" = yes ]; then
    echo "check-deb.sh: all checks passed for $(basename "$deb") (with the running systemd)"
else
    "$root/scripts/check-deb-systemd.sh" --deb "$deb"
    echo "check-deb.sh: all checks passed for $(basename "$deb")"
fi
