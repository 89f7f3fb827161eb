#!/bin/sh
# cmdline hook: a registry root needs the network (dracut then brings the links up).

# shellcheck source=/dev/null
type getarg > /dev/null 2>&1 || . /lib/dracut-lib.sh

case "$(getarg root=)" in
    bootc-live:docker://*)
        echo "rd.neednet=1" > /etc/cmdline.d/90-bootc-live-registry.conf
        [ -n "$(getarg ip=)" ] || echo "ip=dhcp" >> /etc/cmdline.d/90-bootc-live-registry.conf
        ;;
esac
