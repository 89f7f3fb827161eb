#!/bin/bash
# The original pipeline (bench baseline): obtain the oci-archive into RAM, `tar -x` it into a
# directory in RAM, `umoci unpack` the image into a tmpfs, bind-mount its rootfs read-only with
# /etc and /var writable, at /run/original-live; and that at $1 when given (dracut's $NEWROOT in
# a shell initrd; in a systemd initrd, sysroot.mount binds it). The archive is kept, as the
# original keeps it by default (for a kexec to reuse); the extracted layout is removed.

# shellcheck source=/dev/null
type getarg > /dev/null 2>&1 || . /lib/dracut-lib.sh
# shellcheck source=/dev/null
. /lib/original-live-lib.sh

# The failed status line and the message (also for the journal), then stop: exit 1.
original_live_fail() {
    local message="${1//[\"\\]/}"
    original_live_status failed "message=\"$message\""
    echo "original-live: $message" >&2
    exit 1
}

PATH=/usr/sbin:/usr/bin:/sbin:/bin
newroot="$1"
root=$(getarg root=)
kind=$(original_live_kind "$root")
source="${root#original-live:}"
label=$(getarg bootclabel=)
label="${label:-latest}"
[ -n "$kind" ] || exit 0

original_live_status start "source=\"$kind\""

# The work space: a tmpfs of its own (the kernel's default size, half the RAM). The original
# used /run/initramfs, which a systemd initrd caps at 20 % of the RAM.
workspace=/run/initramfs/original-live
mkdir -p "$workspace"
mount -t tmpfs -o mode=0755 original-live-work "$workspace" || original_live_fail "cannot mount the work space"

# The archive into RAM.
original_live_status fetching
if [ "$kind" = path ]; then
    # embedded in the initramfs (or appended as an initrd): the kernel unpacked it into RAM
    archive="$source"
    [ -f "$archive" ] || original_live_fail "no oci-archive at $archive"
else
    # shellcheck source=/dev/null
    . /lib/url-lib.sh
    archive="$workspace/root.oci"
    tries=1
    while ! fetch_url "$source" "$archive" > /dev/null || [ ! -s "$archive" ]; do
        [ "$tries" -ge 100 ] && original_live_fail "cannot download $source after $tries attempts"
        tries=$((tries + 1))
        sleep 5
    done
fi
original_live_status fetched "archive_bytes=$(stat -c %s "$archive")"

# tar -x into a directory in RAM: the OCI image layout.
layout="$workspace/img"
mkdir -p "$layout"
tar -C "$layout" -xf "$archive" || original_live_fail "tar cannot extract $archive"
original_live_status extracted

# umoci unpack into a tmpfs (suid, dev: the root needs them).
bundle="$workspace/bundle"
mkdir -p "$bundle"
mount -t tmpfs -o suid,dev,mode=0755 original-live "$bundle" || original_live_fail "cannot mount the root's tmpfs"
umoci unpack --image "$layout:$label" "$bundle" || original_live_fail "umoci cannot unpack $layout:$label"
original_live_status unpacked

# The root read-only, /etc and /var writable: bind mounts.
live=/run/original-live
mkdir -p "$live"
mount --bind --make-shared -o ro "$bundle/rootfs" "$live" || original_live_fail "cannot bind the root"
mount --bind -o rw "$bundle/rootfs/var" "$live/var" || original_live_fail "cannot bind /var"
mount --bind -o rw "$bundle/rootfs/etc" "$live/etc" || original_live_fail "cannot bind /etc"
rm -rf "$layout"
if [ -n "$newroot" ]; then
    mount --rbind "$live" "$newroot" || original_live_fail "cannot bind the root at $newroot"
fi
original_live_status ready
