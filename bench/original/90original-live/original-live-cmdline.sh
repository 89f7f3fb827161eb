#!/bin/sh
# cmdline hook: claim root=original-live:… (dracut then waits for no block device); a URL
# needs the network.

# shellcheck source=/dev/null
type getarg > /dev/null 2>&1 || . /lib/dracut-lib.sh
# shellcheck source=/dev/null
. /lib/original-live-lib.sh

if original_live_root_ours; then
    root=$(getarg root=)
    rootok=1
    export root rootok
    if [ "$(original_live_kind "$root")" = url ]; then
        echo "rd.neednet=1" > /etc/cmdline.d/90-original-live.conf
        [ -n "$(getarg ip=)" ] || echo "ip=dhcp" >> /etc/cmdline.d/90-original-live.conf
    fi
fi
