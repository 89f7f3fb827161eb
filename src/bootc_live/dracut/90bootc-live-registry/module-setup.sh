#!/bin/bash
# dracut module bootc-live-registry: root=bootc-live:docker://REF, pulled by the runtime's own
# OCI distribution client. The network comes from bootc-live-net; `bootc-live build --ca FILE`
# and `--auth-file FILE` add /etc/bootc-live/ca.pem and /etc/bootc-live/auth.json (0600).

# shellcheck disable=SC2154  # dracut provides moddir and the inst_* helpers

check() {
    return 255 # only when asked for
}

depends() {
    echo bootc-live-net
}

install() {
    inst_multiple -o /etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt
    inst_hook cmdline 19 "$moddir/bootc-live-registry-cmdline.sh"
}
