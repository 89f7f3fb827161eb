#!/bin/bash
# dracut module bootc-live-net: the network for root=bootc-live:URL and docker://REF.
# dracut's own network stack brings the links up; the bootc-live runtime fetches (its own OCI
# distribution client pulls from registries). `bootc-live build --ca FILE` and `--auth-file
# FILE` add /etc/bootc-live/ca.pem and /etc/bootc-live/auth.json (0600).

# shellcheck disable=SC2154  # dracut provides moddir, initdir, systemd paths and inst_* helpers

check() {
    return 255 # only when asked for
}

depends() {
    echo bootc-live network url-lib
}

install() {
    # The CA bundle for https (the runtime reads the first that exists).
    inst_multiple -o /etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt
    inst_hook cmdline 19 "$moddir/bootc-live-net-cmdline.sh"
    if dracut_module_included "systemd-networkd"; then
        # DHCP on every ethernet link unless ip= or another .network says otherwise.
        inst_simple "$moddir/99-bootc-live.network" /etc/systemd/network/99-bootc-live.network
    fi
    if dracut_module_included "systemd"; then
        inst_script "$moddir/bootc-live-net-generator.sh" \
            "$systemdutildir/system-generators/bootc-live-net-generator"
    fi
}
