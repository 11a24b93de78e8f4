#!/bin/sh
# Builds the guest workloads and stages them as a tree to merge into the guest
# initramfs root:
#   OUTDIR/opt/workloads/bin/<name>   one static executable per workload
#   OUTDIR/opt/workloads/MANIFEST     Debian package versions and compiler used
#   OUTDIR/opt/redis/{bin,lib}/       redis-server, redis-benchmark, redis-cli,
#                                     their shared libraries and the loader
# Usage: workloads/build.sh OUTDIR
# The output is deterministic for a given source tree and set of installed
# package versions (no timestamps; mtimes are pinned to SOURCE_DATE_EPOCH or 0),
# so the image can be cached by a hash of workloads/ plus the MANIFEST.
set -eu

if [ $# -ne 1 ]; then
	echo "usage: $0 OUTDIR" >&2
	exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
src=$here/src
out=$1
mkdir -p "$out"
out=$(cd "$out" && pwd)

# Debian packages the build needs on the host. redis-server and redis-tools
# provide the binaries copied into the guest; libsqlite3-dev the static library.
packages="gcc libc6-dev libsqlite3-dev redis-server redis-tools"
missing=""
for p in $packages; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
	echo "build.sh: missing Debian packages:$missing" >&2
	if [ "$(id -u)" = 0 ]; then
		echo "build.sh: installing them (apt-get install -y$missing)" >&2
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing >&2
	else
		echo "build.sh: run: sudo apt-get install -y$missing" >&2
		exit 1
	fi
fi

CC=${CC:-gcc}
# -ffile-prefix-map keeps the checkout's path out of the binaries (assert
# messages), so the same sources build the same bytes anywhere.
CFLAGS="-std=c11 -D_GNU_SOURCE -O2 -static -pthread -Wall -Wextra -Werror -ffile-prefix-map=$src=."

bin=$out/opt/workloads/bin
mkdir -p "$bin"
# One program per source file; sqlite.c also links Debian's static libsqlite3.
for file in "$src"/*.c; do
	name=$(basename "$file" .c)
	case $name in
	common | sqlite) continue ;;
	esac
	$CC $CFLAGS -o "$bin/$name" "$file" "$src/common.c"
done
# libsqlite3.a wants libm and (for extension loading) libdl; linking -static
# warns that dlopen needs the shared libc at run time, harmless since the
# workload loads no extensions.
$CC $CFLAGS -o "$bin/sqlite" "$src/sqlite.c" "$src/common.c" -lsqlite3 -lm -ldl 2>"$out/.sqlite-link.log" || {
	cat "$out/.sqlite-link.log" >&2
	exit 1
}
rm -f "$out/.sqlite-link.log"

"$here/stage-redis.sh" "$out/opt/redis"

# The MANIFEST: every Debian package whose files we ship or link in.
{
	echo "# Debian packages used to build /opt/workloads and /opt/redis"
	echo "compiler $($CC -dumpfullversion) $(dpkg-query -W -f='${Package}=${Version}' gcc-12 2>/dev/null || true)"
	for p in libc6-dev libsqlite3-dev redis-server redis-tools $(cat "$out/opt/redis/PACKAGES"); do
		dpkg-query -W -f='${Package} ${Version}\n' "$p"
	done | sort -u
} >"$out/opt/workloads/MANIFEST"
rm -f "$out/opt/redis/PACKAGES"

epoch=${SOURCE_DATE_EPOCH:-0}
find "$out/opt/workloads" "$out/opt/redis" -exec touch -h -d "@$epoch" {} +
