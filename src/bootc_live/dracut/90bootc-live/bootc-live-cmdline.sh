#!/bin/sh
# cmdline hook: claim root=bootc-live:… so dracut waits for no block device.
# Validating the options is the runtime's job (one parser); it runs in the mount hook.

# shellcheck source=/dev/null
type getarg > /dev/null 2>&1 || . /lib/dracut-lib.sh
# shellcheck source=/dev/null
type bootc_live_root_kind > /dev/null 2>&1 || . /lib/bootc-live-lib.sh

# $root only has to be set, not to hold the value: the classic init evaluates it as shell code
# (export_n: root="$root") before switch root, where a $( ), ` or " in root= would run or break.
if bootc_live_root_ours; then
    root=bootc-live
    rootok=1
    export root rootok
fi
