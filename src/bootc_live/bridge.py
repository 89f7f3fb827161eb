"""One guest connection to one host connection: `python -m bootc_live.bridge HOST PORT`.

QEMU's guestfwd to a chardev shares a single host connection among all guest connections;
with `guestfwd=…-cmd:` QEMU runs this once per guest connection on its stdin/stdout instead.
Only loopback addresses are accepted.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
import threading


def main(argv: list[str]) -> int:
    host, port = argv[1], int(argv[2])
    if not ipaddress.ip_address(host).is_loopback:
        print(f"bridge: {host} is not a loopback address", file=sys.stderr)
        return 2
    conn = socket.create_connection((host, port))

    def guest_to_host() -> None:
        while data := os.read(0, 1 << 16):
            conn.sendall(data)
        conn.shutdown(socket.SHUT_WR)

    threading.Thread(target=guest_to_host, daemon=True).start()
    while data := conn.recv(1 << 16):
        os.write(1, data)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
