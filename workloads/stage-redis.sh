#!/bin/sh
# Stages Debian's redis-server, redis-benchmark and redis-cli with every shared
# library they load, and the dynamic loader, under DEST:
#   DEST/bin/<program>   the ELF files, unchanged
#   DEST/lib/            their libraries and ld-linux-x86-64.so.2
# They run as `DEST/lib/ld-linux-x86-64.so.2 --library-path DEST/lib DEST/bin/X`,
# so the guest needs no /lib64 or /etc/ld.so.cache of its own.
# Also writes DEST/PACKAGES: the Debian packages owning those libraries.
# Usage: stage-redis.sh DEST
set -eu

dest=$1
rm -rf "$dest"
mkdir -p "$dest/bin" "$dest/lib"

# redis-server is a symlink to redis-check-rdb in Debian; the binary picks its
# mode from argv[0], so it is copied under the name redis-server.
for prog in redis-server redis-benchmark redis-cli; do
	cp -L "/usr/bin/$prog" "$dest/bin/$prog"
done

owner() {
	# Debian 12 registers some files under /lib and some under /usr/lib.
	for candidate in "$1" "$(readlink -f "$1")" "/usr$1" "${1#/usr}"; do
		pkg=$(dpkg-query -S "$candidate" 2>/dev/null | head -n1 | cut -d: -f1)
		if [ -n "$pkg" ]; then
			echo "$pkg"
			return 0
		fi
	done
	echo "stage-redis.sh: no Debian package owns $1" >&2
	return 1
}

libs=$(for prog in redis-server redis-benchmark redis-cli; do
	ldd "/usr/bin/$prog" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'
done | sort -u)

for lib in $libs; do
	case $lib in
	*/ld-linux-x86-64.so.2) cp -L "$lib" "$dest/lib/ld-linux-x86-64.so.2" ;;
	*) cp -L "$lib" "$dest/lib/$(basename "$lib")" ;;
	esac
	owner "$lib"
done | sort -u >"$dest/PACKAGES"
