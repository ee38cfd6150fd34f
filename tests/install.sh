#!/bin/sh
# install.sh — make install / make uninstall into a temp prefix (run by make test).
#
# Installs into PREFIX=$tmp/prefix, builds a small libherald program with
# nothing but `pkg-config --cflags --libs herald` (PKG_CONFIG_PATH pointing
# into the prefix), runs it against the installed broker (it publishes one
# event and prints the id), then checks that make uninstall leaves no file.
# Then the same with DESTDIR: the files go to DESTDIR/PREFIX, herald.pc
# names PREFIX. Waits are on conditions with a deadline, never a bare sleep.
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

prefix=$tmp/prefix
$MAKE -s -C "$root" install PREFIX="$prefix" > "$tmp/install.log" 2>&1 || { cat "$tmp/install.log" >&2; fail "make install PREFIX=$prefix"; }
pc=$prefix/lib/pkgconfig/herald.pc
[ -f "$pc" ] || fail "no $pc"
grep -qx "prefix=$prefix" "$pc" || fail "herald.pc does not name the prefix it was installed to: $(grep '^prefix=' "$pc")"

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
"$prefix/bin/heraldctl" --broker "ipc://$tmp/adm" stats --json | grep -q '"published":1' \
    || fail "the broker does not count the program's publish"
kill "$broker"; wait "$broker" 2>/dev/null || true; broker=""

$MAKE -s -C "$root" uninstall PREFIX="$prefix" > "$tmp/uninstall.log" 2>&1 || { cat "$tmp/uninstall.log" >&2; fail "make uninstall"; }
left=$(find "$prefix" ! -type d)
[ -z "$left" ] || fail "make uninstall left: $left"

# DESTDIR: files under DESTDIR/PREFIX, herald.pc says PREFIX; uninstall the same way.
$MAKE -s -C "$root" install DESTDIR="$tmp/stage" PREFIX=/opt/herald > "$tmp/install.log" 2>&1 || { cat "$tmp/install.log" >&2; fail "make install DESTDIR"; }
grep -qx 'prefix=/opt/herald' "$tmp/stage/opt/herald/lib/pkgconfig/herald.pc" || fail "DESTDIR: herald.pc does not say prefix=/opt/herald"
[ -x "$tmp/stage/opt/herald/bin/herald-broker" ] || fail "DESTDIR: no bin/herald-broker under DESTDIR/PREFIX"
$MAKE -s -C "$root" uninstall DESTDIR="$tmp/stage" PREFIX=/opt/herald > "$tmp/uninstall.log" 2>&1 || fail "make uninstall DESTDIR"
left=$(find "$tmp/stage" ! -type d)
[ -z "$left" ] || fail "make uninstall DESTDIR left: $left"
echo "install.sh: ok (published $id through a program built with pkg-config from $prefix)"
