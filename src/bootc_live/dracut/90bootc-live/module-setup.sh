#!/bin/bash
# dracut module bootc-live: boot live, from RAM, from a bootc (OCI) image.
# The work is done by a stdlib-only Python runtime; this file only installs it.

# shellcheck disable=SC2154  # dracut provides moddir, initdir and the inst_* helpers

check() {
    require_binaries python3 mount umount || return 1
    return 255 # only when asked for (dracut -a bootc-live)
}

depends() {
    echo base
}

# The real interpreter behind python3 (never a shim or a venv wrapper).
_bootc_live_python() {
    local py
    py=$(command -v python3) || return 1
    py=$(readlink -f "$py")
    "$py" -c 'import sys; sys.exit(sys.prefix != sys.base_prefix)' || return 1
    echo "$py"
}

# An extension module and every shared library it loads. dracut resolves the libraries of
# executable files only, and distributions install extension modules without the x bit, so
# `_ssl` would arrive without libssl (and `_hashlib` without libcrypto). ldd lists the whole
# closure; a library it cannot find is left to the build's self-check, which names it.
# `inst`, not `inst_library`: dracut-ng (Debian 13) has no inst_library.
_bootc_live_inst_extension() {
    local lib
    inst "$1" || return 1
    while IFS= read -r lib; do
        inst "$lib"
    done < <(ldd "$1" 2> /dev/null | sed -n 's|.*=> \(/[^ ]*\) (0x.*|\1|p')
}

# A packed root (root=bootc-live:packed:…, packed.img of bootc-live build) is mounted from a loop
# device, squashfs or EROFS as the build chose for this kernel, with overlays for /etc and /var.
# In this module, not an optional one: build always writes packed.img, so every initramfs it
# makes must boot it (a few hundred KiB, freed at boot when unused).
# root=bootc-live:block:… reads the image from a local filesystem: the usual ones for a disk of
# images or a USB stick (the image's own dracut configuration may add more).
installkernel() {
    hostonly='' instmods loop squashfs erofs overlay
    hostonly='' instmods ext4 vfat isofs nls_cp437 nls_ascii nls_iso8859_1 nls_utf8
}

install() {
    local py
    # dracut goes on when install() returns 1, and the self-check then said only that python3
    # does not start: stop it here, saying why.
    py=$(_bootc_live_python) || {
        dfatal "bootc-live: no usable python3 in $dracutsysrootdir/usr/bin (none, or a virtual environment's, not a real interpreter)"
        exit 1
    }
    inst_binary "$py" /usr/bin/python3
    inst_multiple mount umount
    # Decompressors faster than the stdlib's zlib, when this userland has them (decompress.py)
    inst_multiple -o zstd igzip
    # Signature checks (a policy at /etc/containers/policy.json, from bootc-live build --policy):
    # gpgv for simple signing, openssl for sigstore. Optional here; the build's self-check
    # fails when a policy is in and a tool it needs is not.
    inst_multiple -o gpgv openssl

    # The runtime, and just the part of the standard library it imports: found by importing it.
    inst_dir /usr/lib/bootc-live
    cp -a "$moddir/python/." "$initdir/usr/lib/bootc-live/"
    inst_simple "$moddir/bootc-live-boot" /usr/lib/bootc-live/bootc-live-boot
    local files file
    # dracut goes on when install() fails: the initramfs would have python3 and no standard
    # library (the self-check then said only that python3 does not start). Stop it, saying why.
    files=$("$py" -S -E "$moddir/stdlib-files.py" "$moddir/python") || {
        dfatal "bootc-live: ${files:-the runtime does not import with $py}"
        exit 1
    }
    while IFS= read -r file; do
        case "$file" in
            *.so) _bootc_live_inst_extension "$file" ;;
            *) inst_simple "$file" ;;
        esac
    done <<< "$files"
    "$py" -S -E -m compileall -q "$initdir/usr/lib/bootc-live" > /dev/null

    inst_simple "$moddir/bootc-live-lib.sh" /lib/bootc-live-lib.sh
    inst_hook cmdline 90 "$moddir/bootc-live-cmdline.sh"
    if dracut_module_included "systemd"; then
        # systemd initrd: /sysroot is our tmpfs, filled by a service before initrd-root-fs.target
        inst_simple "$moddir/bootc-live.service" "$systemdsystemunitdir/bootc-live.service"
        inst_script "$moddir/bootc-live-generator.sh" \
            "$systemdutildir/system-generators/bootc-live-generator"
    else
        # classic shell initrd: a mount hook
        inst_hook mount 90 "$moddir/bootc-live-mount.sh"
    fi
}
