#!/bin/sh
# Install the Debian packages the project needs, idempotently.
# As root it installs them; otherwise it prints the exact command and fails,
# because a half-equipped machine gives confusing errors much later.
set -eu

# chromium: tests/test_report.py opens the HTML performance report in a real headless browser.
PACKAGES="build-essential ninja-build pkg-config libglib2.0-dev libpixman-1-dev \
flex bison libslirp-dev python3-venv python3-dev xz-utils cpio \
seabios qemu-system-data busybox-static \
clang libclang-rt-14-dev \
libsqlite3-dev redis-server redis-tools \
chromium gdb util-linux"

# The QEMU 10.0.2 source lives in bookworm-backports, which needs a deb-src entry.
SRC_LIST=/etc/apt/sources.list.d/sds-backports-src.sources
SRC_ENTRY='Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg'

missing=""
for p in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
need_src=0
[ -f "$SRC_LIST" ] || need_src=1

if [ -z "$missing" ] && [ "$need_src" = 0 ]; then
    echo "setup-system: all Debian packages present"
    exit 0
fi

if [ "$(id -u)" != 0 ]; then
    echo "setup-system: not root; run this as root, then retry:" >&2
    [ "$need_src" = 1 ] && printf "  printf '%s\\n' > %s\n" "$(echo "$SRC_ENTRY" | sed ':a;N;$!ba;s/\n/\\n/g')" "$SRC_LIST" >&2
    echo "  apt-get update && apt-get install -y --no-install-recommends$missing" >&2
    exit 1
fi

if [ "$need_src" = 1 ]; then
    echo "$SRC_ENTRY" > "$SRC_LIST"
fi
echo "setup-system: installing:$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get -o DPkg::Lock::Timeout=600 update -qq
# redis-server's postinst would start a daemon; policy-rc.d keeps the machine quiet.
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends $missing >/dev/null
echo "setup-system: done"
