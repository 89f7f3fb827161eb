#!/bin/sh
# systemd generator: for root=original-live:…, original-live.service prepares the root and binds
# it at /sysroot before initrd-root-fs.target; from a URL, once the network is online.

# shellcheck source=/dev/null
type getarg > /dev/null 2>&1 || . /lib/dracut-lib.sh
# shellcheck source=/dev/null
. /lib/original-live-lib.sh

original_live_root_ours || exit 0

early="${2:-/tmp}"
mkdir -p "$early/initrd-root-fs.target.requires"
ln -sf /usr/lib/systemd/system/original-live.service \
    "$early/initrd-root-fs.target.requires/original-live.service"
if [ "$(original_live_kind "$(getarg root=)")" = url ]; then
    mkdir -p "$early/original-live.service.d"
    cat > "$early/original-live.service.d/network.conf" << 'UNIT'
[Unit]
Wants=network-online.target
After=network-online.target
UNIT
fi
