#!/bin/sh
# install.sh — make install / make uninstall into a temp prefix (run by make test).
#
# Installs into PREFIX=$tmp/prefix, builds a small libherald program with
# nothing but `pkg-config --cflags --libs herald` (PKG_CONFIG_PATH pointing
# into the prefix), runs it against the installed broker (it publishes one
# event and prints the id), then checks that make uninstall leaves no file.
# Then the same with DESTDIR: the files go to DESTDIR/PREFIX, herald.pc
# names PREFIX. Both times the man pages (man/) and systemd units (systemd/)
# must be in place: each page renders with `man --warnings -l` without a
# word on stderr and is found by name under PREFIX/share/man, each unit names
# PREFIX/bin, and `systemd-analyze verify` (when there is one) accepts the
# units whose program is installed, silently. The Python client must import
# from PREFIX/lib/python3/dist-packages with Debian's /usr/bin/python3 and
# publish to the installed broker. Waits are on conditions with a deadline,
# never a bare sleep.
set -eu
MAKE=${MAKE:-make}
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/herald-install.XXXXXX")
broker=""
cleanup() {
    if [ -n "$broker" ]; then kill "$broker" 2>/dev/null || true; wait "$broker" 2>/dev/null || true; fi
    rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "install.sh: FAIL: $*" >&2; exit 1; }

# check_extras BASE PREFIX: the man pages and units of an install whose files
# are under BASE (DESTDIR/PREFIX) and which names PREFIX.
check_extras() {
    base=$1 named=$2
    command -v man > /dev/null || fail "no man command (Debian: apt-get install man-db)"
    for src in "$root"/man/*.[0-9]; do
        page=$(basename "$src") sec=${src##*.}
        f=$base/share/man/man$sec/$page
        [ -f "$f" ] || fail "no $f"
        MANWIDTH=80 man --warnings -l "$f" > "$tmp/man.out" 2> "$tmp/man.err" || fail "man -l $f failed: $(cat "$tmp/man.err")"
        [ ! -s "$tmp/man.err" ] || fail "man --warnings -l $f: $(head -3 "$tmp/man.err")"
        [ -s "$tmp/man.out" ] || fail "man -l $f rendered nothing"
        man -M "$base/share/man" -w "$sec" "${page%.*}" > /dev/null 2>&1 || fail "man -M $base/share/man $sec ${page%.*}: not found by name"
    done
    for src in "$root"/systemd/*.service.in; do
        unit=$(basename "$src" .in)
        f=$base/lib/systemd/system/$unit
        [ -f "$f" ] || fail "no $f"
        ! grep -q '@[A-Z]*@' "$f" || fail "$f keeps a placeholder: $(grep '@[A-Z]*@' "$f")"
        grep -q "^ExecStart=$named/bin/herald-" "$f" || fail "$f does not start a program of $named/bin: $(grep '^ExecStart' "$f")"
    done
}

# verify_units PREFIX: systemd-analyze verify, with the installed man pages
# for Documentation=, on each unit whose program is installed.
verify_units() {
    command -v systemd-analyze > /dev/null || { echo "install.sh: no systemd-analyze: units not verified"; return 0; }
    units=""
    for f in "$1"/lib/systemd/system/*.service; do
        prog=$(sed -n 's/^ExecStart=\([^ ]*\).*/\1/p' "$f")
        [ -x "$prog" ] && units="$units $f"
    done
    [ -n "$units" ] || fail "no installed unit to verify"
    # shellcheck disable=SC2086
    MANPATH=$1/share/man systemd-analyze verify $units > "$tmp/verify.out" 2>&1 || fail "systemd-analyze verify: $(cat "$tmp/verify.out")"
    [ ! -s "$tmp/verify.out" ] || fail "systemd-analyze verify: $(cat "$tmp/verify.out")"
}

prefix=$tmp/prefix
$MAKE -s -C "$root" install PREFIX="$prefix" > "$tmp/install.log" 2>&1 || { cat "$tmp/install.log" >&2; fail "make install PREFIX=$prefix"; }
pc=$prefix/lib/pkgconfig/herald.pc
[ -f "$pc" ] || fail "no $pc"
grep -qx "prefix=$prefix" "$pc" || fail "herald.pc does not name the prefix it was installed to: $(grep '^prefix=' "$pc")"
check_extras "$prefix" "$prefix"
verify_units "$prefix"

# A program that publishes one event and prints the id the broker confirmed.
cat > "$tmp/app.c" <<'EOF'
#include <herald.h>
#include <stdio.h>
#include <string.h>
int main(int argc, char **argv)
{
    herald_options o = { .endpoint = argv[1], .timeout_ms = 10000 };
    herald_client *c = herald_connect(&o);
    if (!c) { fprintf(stderr, "connect: %s\n", herald_last_error(NULL)); return 1; }
    char id[HERALD_ID_MAX];
    int rc = herald_publish(c, "t", "hi", 2, NULL, id);
    if (rc != 0) { fprintf(stderr, "publish: %s\n", herald_strerror(rc)); return 1; }
    printf("%s\n", id);
    herald_close(&c);
    return argc == 2 ? 0 : 2;
}
EOF
flags=$(PKG_CONFIG_PATH=$prefix/lib/pkgconfig pkg-config --cflags --libs herald) || fail "pkg-config --cflags --libs herald"
# make test SANITIZE=...: the installed library carries the sanitizer runtime's references
san=${SANITIZE:+-fsanitize=$SANITIZE}
# shellcheck disable=SC2086
cc $san -o "$tmp/app" "$tmp/app.c" $flags || fail "cc app.c $flags"

# The installed broker on ipc:// endpoints in the temp dir.
cat > "$tmp/herald.cfg" <<EOF
broker = { publish_endpoint = "ipc://$tmp/pub"; worker_endpoint = "ipc://$tmp/wrk";
  admin_endpoint = "ipc://$tmp/adm"; data_dir = "$tmp/data"; };
topics = ( { name = "t"; } );
EOF
"$prefix/bin/herald-broker" -c "$tmp/herald.cfg" > "$tmp/broker.log" 2>&1 &
broker=$!
end=$(( $(date +%s) + 30 ))
until "$prefix/bin/heraldctl" --broker "ipc://$tmp/adm" --timeout 1 stats > /dev/null 2>&1; do
    kill -0 "$broker" 2>/dev/null || { cat "$tmp/broker.log" >&2; fail "the installed broker exited"; }
    [ "$(date +%s)" -lt "$end" ] || fail "the installed broker did not answer in 30 s"
done
id=$(env -u LD_LIBRARY_PATH "$tmp/app" "ipc://$tmp/pub") || fail "the program built with pkg-config did not publish (id '$id')"
echo "$id" | grep -Eq '^[0-9A-Za-z_-]{1,63}$' || fail "not a message id: '$id'"
# The Python client from the install (not the checkout): imports, publishes.
pydir=$prefix/lib/python3/dist-packages
[ -f "$pydir/herald/__init__.py" ] || fail "no $pydir/herald/__init__.py"
pyid=$(cd "$tmp" && PYTHONPATH=$pydir PYTHONDONTWRITEBYTECODE=1 /usr/bin/python3 -c '
import sys, herald
assert herald.__file__.startswith(sys.argv[1]), herald.__file__
with herald.Publisher(sys.argv[2]) as p:
    print(p.publish("t", b"from python"))' "$pydir" "ipc://$tmp/pub") || fail "import herald / publish from $pydir"
echo "$pyid" | grep -Eq '^[0-9A-Za-z_]{1,40}-1$' || fail "not a message id from the Python client: '$pyid'"
"$prefix/bin/heraldctl" --broker "ipc://$tmp/adm" stats --json | grep -q '"published":2' \
    || fail "the broker does not count the program's and the Python client's publishes"
kill "$broker"; wait "$broker" 2>/dev/null || true; broker=""

$MAKE -s -C "$root" uninstall PREFIX="$prefix" > "$tmp/uninstall.log" 2>&1 || { cat "$tmp/uninstall.log" >&2; fail "make uninstall"; }
left=$(find "$prefix" ! -type d)
[ -z "$left" ] || fail "make uninstall left: $left"

# DESTDIR: files under DESTDIR/PREFIX, herald.pc and the units say PREFIX; uninstall the same way.
$MAKE -s -C "$root" install DESTDIR="$tmp/stage" PREFIX=/usr > "$tmp/install.log" 2>&1 || { cat "$tmp/install.log" >&2; fail "make install DESTDIR"; }
grep -qx 'prefix=/usr' "$tmp/stage/usr/lib/pkgconfig/herald.pc" || fail "DESTDIR: herald.pc does not say prefix=/usr"
[ -f "$tmp/stage/usr/lib/python3/dist-packages/herald/publisher.py" ] || fail "DESTDIR: no Python client under DESTDIR/PREFIX/lib/python3/dist-packages"
[ -x "$tmp/stage/usr/bin/herald-broker" ] || fail "DESTDIR: no bin/herald-broker under DESTDIR/PREFIX"
check_extras "$tmp/stage/usr" /usr
$MAKE -s -C "$root" uninstall DESTDIR="$tmp/stage" PREFIX=/usr > "$tmp/uninstall.log" 2>&1 || fail "make uninstall DESTDIR"
left=$(find "$tmp/stage" ! -type d)
[ -z "$left" ] || fail "make uninstall DESTDIR left: $left"
echo "install.sh: ok (published $id through a program built with pkg-config from $prefix, and $pyid from the installed Python client)"
