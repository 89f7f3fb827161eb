#!/bin/sh
# systemd generator: for root=original-live:…, /sysroot is a bind of /run/original-live, which
# original-live.service prepares first; from a URL, once the network is online.

# shellcheck source=/dev/null
type getarg > /dev/null 2>&1 || . /lib/dracut-lib.sh
# shellcheck source=/dev/null
. /lib/original-live-lib.sh

original_live_root_ours || exit 0

early="${2:-/tmp}"
# The early directory: this sysroot.mount replaces the one systemd-fstab-generator makes of root=.
mkdir -p "$early/initrd-root-fs.target.requires"
cat > "$early/sysroot.mount" << 'UNIT'
[Unit]
Description=original-live root (bound from /run/original-live)
DefaultDependencies=no
Requires=original-live.service
After=original-live.service
Before=initrd-root-fs.target

[Mount]
What=/run/original-live
Where=/sysroot
Options=rbind
UNIT
ln -sf ../sysroot.mount "$early/initrd-root-fs.target.requires/sysroot.mount"
if [ "$(original_live_kind "$(getarg root=)")" = url ]; then
    mkdir -p "$early/original-live.service.d"
    cat > "$early/original-live.service.d/network.conf" << 'UNIT'
[Unit]
Wants=network-online.target
After=network-online.target
UNIT
fi
