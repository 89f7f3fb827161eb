#!/bin/sh
# systemd generator: when the root is fetched, bootc-live.service waits for network-online.target;
# with rd.net.wait-any-if, one configured link is enough.

# shellcheck source=/dev/null
type getarg > /dev/null 2>&1 || . /lib/dracut-lib.sh
# shellcheck source=/dev/null
type bootc_live_root_kind > /dev/null 2>&1 || . /lib/bootc-live-lib.sh

bootc_live_root_fetched || exit 0

early="${2:-/tmp}"
mkdir -p "$early/bootc-live.service.d"
cat > "$early/bootc-live.service.d/network.conf" << 'UNIT'
[Unit]
Wants=network-online.target
After=network-online.target
UNIT
if bootc_live_option_on rd.net.wait-any-if; then
    mkdir -p "$early/systemd-networkd-wait-online.service.d"
    cat > "$early/systemd-networkd-wait-online.service.d/bootc-live-any.conf" << 'UNIT'
[Service]
ExecStart=
ExecStart=/usr/lib/systemd/systemd-networkd-wait-online --any
UNIT
fi
