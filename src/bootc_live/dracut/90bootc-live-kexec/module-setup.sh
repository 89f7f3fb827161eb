#!/bin/bash
# dracut module bootc-live-kexec: bootc.kexec=1 boots the image's own kernel and initramfs
# (found in the image by the runtime) with kexec, handing the image over.

# shellcheck disable=SC2154  # dracut provides the inst_* helpers

check() {
    require_binaries kexec || return 1
    return 255 # only when asked for
}

depends() {
    echo bootc-live
}

install() {
    inst_multiple kexec
}
