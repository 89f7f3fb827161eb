"""ftp://, tftp:// and nfs:// URLs, fetched into a file by dracut's url-lib (http is ours)."""

from __future__ import annotations

import contextlib
import os
import urllib.parse

from .errors import BootcLiveError, SpaceError
from .http import Policy, redact, scrub
from .run import CommandError, run

# Where dracut installs them in the initramfs (url-lib sources dracut-lib itself by this path).
DRACUT_LIB = "/lib/dracut-lib.sh"
URL_LIB = "/lib/url-lib.sh"
RETRIES_UNBOUNDED = 1000  # curl's --retry without bootc.retries=: --retry-max-time bounds it
FULL_BELOW = 1 << 20  # bytes left on the destination's filesystem when a fetch failed: full
# fetch_url's own exit statuses (url-lib.sh); any other is its command's (curl, mount, cp).
UNHANDLED, UNPARSEABLE = 254, 255
# curl's exit statuses (curl(1), EXIT CODES) whose reason its own last line may not give: for
# a TFTP server's "file not found" curl 7.88 prints a stale "getpeername() failed".
CURL_MEANS = {
    6: "the server's name does not resolve",
    7: "the server does not answer",
    9: "the server refused the directory",
    28: "the server was silent or too slow for bootc.timeout=",
    67: "the server refused the user or password",
    68: "the TFTP server has no such file",
    69: "the TFTP server refused access to the file",
    71: "the TFTP server broke the protocol",
    72: "the TFTP server did not know the transfer",
    78: "the server has no such file",
}


def curl_args(policy: Policy) -> list[str]:
    """What url-lib's curl (ftp://, tftp://) is given besides its own arguments, for
    bootc.retries= and bootc.timeout=: its retries (without bootc.retries=, for Policy.total
    seconds); a try ends after `stall` seconds without a
    connection, or with fewer than `low_speed` bytes a second over `stall` seconds (no byte,
    or a trickle: at one byte a second a server held the boot for ever, where http's fetch
    gives up). nfs:// is mounted, by the kernel's NFS client and its own retries."""
    stall = str(max(1, round(policy.stall)))
    args = ["--connect-timeout", stall, "--speed-time", stall]
    args += ["--speed-limit", str(policy.low_speed)]
    if policy.retries is None:
        # As over http: retried for `total` seconds (url-lib's own --retry 3 gave up after 7 s
        # on a server still starting), its refused connections too (url-lib's
        # --retry-connrefused).
        return [
            *args,
            "--retry",
            str(RETRIES_UNBOUNDED),
            "--retry-max-time",
            str(max(1, round(policy.total))),
        ]
    return [*args, "--retry", str(policy.retries)]


def fetch(url: str, path: str, policy: Policy, full_hint: str = "add RAM") -> None:
    """Fetch `url` into the file `path` with url-lib's fetch_url, within `policy`'s bounds.
    A fetch that filled `path`'s filesystem is a SpaceError (`full_hint` the next step);
    any other failure names the URL (without its password) and url-lib's reason."""
    try:
        run(
            # url-lib needs dracut-lib, and sourcing it does not end with status 0: no && after
            # it. The URL goes in the environment: a password in it stays out of the logged
            # argv. url-lib's curl_args is a plain variable, expanded unquoted: ours go after
            # its own.
            [
                "sh",
                "-c",
                '. "$1"; . "$2"; '
                'curl_args="$curl_args $BOOTC_CURL_ARGS"; fetch_url "$BOOTC_URL" "$3"',
                "fetch_url",
                DRACUT_LIB,
                URL_LIB,
                path,
            ],
            # RD_DEBUG=no: under rd.debug, dracut-lib would trace url-lib's commands, URL and
            # all.
            env={
                **os.environ,
                "BOOTC_URL": url,
                "BOOTC_CURL_ARGS": " ".join(curl_args(policy)),
                "RD_DEBUG": "no",
            },
        )
    except CommandError as err:
        raise _failure(err, url, path, full_hint) from None


def _failure(err: CommandError, url: str, path: str, full_hint: str) -> BootcLiveError:
    """What a failed fetch_url means, in one line without the URL's password."""
    where = redact(url)
    with contextlib.suppress(OSError):
        fs = os.statvfs(os.path.dirname(path) or ".")
        if fs.f_bavail * fs.f_frsize < FULL_BELOW:  # curl's (23), cp's ENOSPC: RAM, not the net
            written = os.path.getsize(path) if os.path.exists(path) else 0
            return SpaceError(
                f"no space left to download {where} ({written >> 20} MiB written): it is "
                "stored whole in RAM first",
                full_hint,
            )
    scheme = urllib.parse.urlsplit(url).scheme
    if err.returncode == UNHANDLED:
        return BootcLiveError(
            f"this initramfs cannot fetch {scheme}:// URLs: dracut's url-lib has no handler "
            "for them",
            "add dracut's nfs module (the image needs nfs-utils) and rebuild it with "
            "bootc-live build, or serve the file over http(s), ftp or tftp"
            if scheme.startswith("nfs")
            else "serve the file over http(s), ftp, tftp or nfs",
        )
    if err.returncode == UNPARSEABLE:
        return BootcLiveError(f"dracut's url-lib cannot read the URL {where}", "fix root=")
    reason = scrub(err.detail, url)  # url-lib's warning quotes the URL whole
    if scheme in ("ftp", "tftp") and err.returncode in CURL_MEANS:
        reason = f"{CURL_MEANS[err.returncode]} ({reason})"
    return BootcLiveError(
        f"could not fetch {where}: {reason}",
        "check the URL, that the server has the file, and the network",
    )
