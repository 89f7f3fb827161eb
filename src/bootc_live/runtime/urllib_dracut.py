"""ftp://, tftp:// and nfs:// URLs, fetched into a file by dracut's url-lib (http is ours)."""

from __future__ import annotations

import os

from .http import redact
from .run import run


def fetch(url: str, path: str) -> None:
    """Fetch `url` into the file `path` with url-lib's fetch_url."""
    run(
        # url-lib needs dracut-lib, and sourcing it does not end with status 0: no && after it.
        # The URL goes in the environment: a password in it stays out of the logged argv.
        [
            "sh",
            "-c",
            '. /lib/dracut-lib.sh; . /lib/url-lib.sh; fetch_url "$BOOTC_URL" "$1"',
            "fetch_url",
            path,
        ],
        # RD_DEBUG=no: under rd.debug, dracut-lib would trace url-lib's commands, URL and all.
        env={**os.environ, "BOOTC_URL": url, "RD_DEBUG": "no"},
        hint=f"check {redact(url)} and the network",
    )
