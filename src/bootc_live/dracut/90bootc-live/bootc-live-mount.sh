#!/bin/sh
# mount hook: the runtime obtains, verifies and unpacks the image and mounts it at $NEWROOT.
# On failure it leaves nothing mounted and we stop with its one-line message.

# shellcheck source=/dev/null
type getarg > /dev/null 2>&1 || . /lib/dracut-lib.sh
# shellcheck source=/dev/null
type bootc_live_root_kind > /dev/null 2>&1 || . /lib/bootc-live-lib.sh

if bootc_live_root_ours && ! ismounted "$NEWROOT"; then
    if freed=$(bootc_live_freed); then
        bootc_live_die "$freed"
    fi
    if ! /usr/bin/python3 -S -E /usr/lib/bootc-live/bootc-live-boot "$NEWROOT"; then
        # no line when it died before writing one, or could not write it (memory ran out)
        error=$(cat "${BOOTC_LIVE_RUN:-/run/bootc-live}/error" 2> /dev/null)
        bootc_live_die "${error:-bootc-live: the live root could not be set up}"
    fi
fi
