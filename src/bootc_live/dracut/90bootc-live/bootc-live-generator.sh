#!/bin/sh
# systemd generator: for root=bootc-live:…, /sysroot is a tmpfs that bootc-live.service fills.
# The unit goes into the early directory so it replaces the one systemd-fstab-generator makes
# from root=; the runtime sizes it explicitly and applies rootflags= before it unpacks.

# shellcheck source=/dev/null
type getarg > /dev/null 2>&1 || . /lib/dracut-lib.sh
# shellcheck source=/dev/null
type bootc_live_root_kind > /dev/null 2>&1 || . /lib/bootc-live-lib.sh

bootc_live_root_ours || exit 0

early="${2:-/tmp}"
mkdir -p "$early/initrd-root-fs.target.requires"
cat > "$early/sysroot.mount" << 'UNIT'
[Unit]
Description=bootc-live root in RAM (filled by bootc-live.service)
DefaultDependencies=no
Before=initrd-root-fs.target

[Mount]
What=bootc-live
Where=/sysroot
Type=tmpfs
Options=mode=0755,suid,dev
UNIT
ln -sf /usr/lib/systemd/system/bootc-live.service \
    "$early/initrd-root-fs.target.requires/bootc-live.service"
