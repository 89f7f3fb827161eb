#!/bin/bash
# dracut module original-live: the ORIGINAL pipeline, rebuilt as a bench baseline (bench/boot's
# original-* rows). Not part of bootc-live: nothing in src/ installs or uses it.
#
# What it does at boot (original-live-root.sh): the oci-archive into RAM (embedded: where the
# kernel unpacked it; a URL: downloaded by dracut's url-lib, curl), `tar -x` into a directory in
# RAM, `umoci unpack` into a tmpfs, the root bind-mounted read-only with /etc and /var writable.

# shellcheck disable=SC2154  # dracut provides moddir, initdir, systemd paths and inst_* helpers

check() {
    require_binaries tar umoci curl || return 1
    return 255 # only when asked for (dracut --add original-live)
}

depends() {
    # the original's net variant: dracut's network stack and url-lib (curl)
    echo bash network url-lib
}

install() {
    inst_multiple tar umoci cp rm mkdir stat mount
    inst_simple "$moddir/original-live-lib.sh" /lib/original-live-lib.sh
    inst_script "$moddir/original-live-root.sh" /sbin/original-live-root
    inst_hook cmdline 30 "$moddir/original-live-cmdline.sh"
    if dracut_module_included "systemd-networkd"; then
        inst_simple "$moddir/99-original-live.network" /etc/systemd/network/99-original-live.network
    fi
    if dracut_module_included "systemd"; then
        inst_simple "$moddir/original-live.service" "$systemdsystemunitdir/original-live.service"
        inst_script "$moddir/original-live-generator.sh" \
            "$systemdutildir/system-generators/original-live-generator"
    else
        inst_hook mount 90 "$moddir/original-live-mount.sh"
    fi
}
