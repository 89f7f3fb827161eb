"""ftp://, tftp:// and nfs:// URLs, fetched into a file by dracut's url-lib (http is ours)."""

from __future__ import annotations

import os

from .http import Policy, redact
from .run import run


def curl_args(policy: Policy) -> list[str]:
    """What url-lib's curl (ftp://, tftp://) is given besides its own arguments, for
    bootc.retries= and bootc.timeout=: its retries, and no more than `stall` seconds without
    a connection or a byte. nfs:// is mounted, by the kernel's NFS client and its own
    retries."""
    stall = str(max(1, round(policy.stall)))
    args = ["--connect-timeout", stall, "--speed-time", stall, "--speed-limit", "1"]
    return args + ([] if policy.retries is None else ["--retry", str(policy.retries)])


def fetch(url: str, path: str, policy: Policy) -> None:
    """Fetch `url` into the file `path` with url-lib's fetch_url, within `policy`'s bounds."""
    run(
        # url-lib needs dracut-lib, and sourcing it does not end with status 0: no && after it.
        # The URL goes in the environment: a password in it stays out of the logged argv.
        # url-lib's curl_args is a plain variable, expanded unquoted: ours go after its own.
        [
            "sh",
            "-c",
            ". /lib/dracut-lib.sh; . /lib/url-lib.sh; "
            'curl_args="$curl_args $BOOTC_CURL_ARGS"; fetch_url "$BOOTC_URL" "$1"',
            "fetch_url",
            path,
        ],
        # RD_DEBUG=no: under rd.debug, dracut-lib would trace url-lib's commands, URL and all.
        env={
            **os.environ,
            "BOOTC_URL": url,
            "BOOTC_CURL_ARGS": " ".join(curl_args(policy)),
            "RD_DEBUG": "no",
        },
        hint=f"check {redact(url)} and the network",
    )
