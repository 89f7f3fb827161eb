#!/bin/sh
# cmdline hook: a root that is fetched needs the network (dracut then brings the links up).

# shellcheck source=/dev/null
type getarg > /dev/null 2>&1 || . /lib/dracut-lib.sh

case "$(getarg root=)" in
    bootc-live:http://* | bootc-live:https://* | bootc-live:ftp://* | bootc-live:tftp://* | \
        bootc-live:nfs://*)
        echo "rd.neednet=1" > /etc/cmdline.d/90-bootc-live-net.conf
        [ -n "$(getarg ip=)" ] || echo "ip=dhcp" >> /etc/cmdline.d/90-bootc-live-net.conf
        ;;
esac
