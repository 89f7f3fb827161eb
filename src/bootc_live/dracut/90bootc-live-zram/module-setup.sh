#!/bin/bash
# dracut module bootc-live-zram: bootc.zram=SIZE keeps the live root compressed in RAM, on an
# ext4 filesystem on a zram device. The runtime makes the device; this file installs the tools.

# shellcheck disable=SC2154  # dracut provides the inst_* helpers

check() {
    require_binaries mkfs.ext4 || return 1
    return 255 # only when asked for
}

depends() {
    echo bootc-live
}

installkernel() {
    # The compressors bootc.zram.algorithm= may name, where they are modules (optional);
    # zram and ext4 last: their failure is the function's, which dracut checks.
    hostonly='' instmods -o lzo lzo-rle lz4 lz4hc zstd 842
    hostonly='' instmods zram ext4
}

install() {
    inst_multiple mkfs.ext4
    inst_multiple -o /etc/mke2fs.conf
}
