#!/bin/sh
# mount hook (a shell initrd): the original pipeline, its root bound at $NEWROOT.

# shellcheck source=/dev/null
type getarg > /dev/null 2>&1 || . /lib/dracut-lib.sh
# shellcheck source=/dev/null
. /lib/original-live-lib.sh

if original_live_root_ours && ! ismounted "$NEWROOT"; then
    /sbin/original-live-root "$NEWROOT" || die "original-live: the root could not be set up"
fi
