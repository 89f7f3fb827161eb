#!/bin/sh
# cmdline hook: a root that is fetched (a URL, a registry) needs the network (dracut then
# brings the links up).

# shellcheck source=/dev/null
type getarg > /dev/null 2>&1 || . /lib/dracut-lib.sh
# shellcheck source=/dev/null
type bootc_live_root_kind > /dev/null 2>&1 || . /lib/bootc-live-lib.sh

if bootc_live_root_fetched; then
    echo "rd.neednet=1" > /etc/cmdline.d/90-bootc-live-net.conf
    [ -n "$(getarg ip=)" ] || echo "ip=dhcp" >> /etc/cmdline.d/90-bootc-live-net.conf
fi
