#!/bin/sh
# cmdline hook: claim root=bootc-live:… so dracut waits for no block device.
# Validating the options is the runtime's job (one parser); it runs in the mount hook.

# shellcheck source=/dev/null
type getarg > /dev/null 2>&1 || . /lib/dracut-lib.sh
# shellcheck source=/dev/null
type bootc_live_root_kind > /dev/null 2>&1 || . /lib/bootc-live-lib.sh

if bootc_live_root_ours; then
    root=$(getarg root=)
    rootok=1
    export root rootok
fi
