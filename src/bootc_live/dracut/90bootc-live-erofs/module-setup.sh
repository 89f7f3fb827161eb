#!/bin/bash
# dracut module bootc-live-erofs: bootc.live.erofs=1 packs the live root into a reproducible
# EROFS image, mounted read-only from a loop device with overlays for /etc and /var.

# shellcheck disable=SC2154  # dracut provides the inst_* helpers

check() {
    require_binaries mkfs.erofs || return 1
    return 255 # only when asked for
}

depends() {
    echo bootc-live
}

installkernel() {
    hostonly='' instmods loop erofs overlay
}

install() {
    inst_multiple mkfs.erofs
}
