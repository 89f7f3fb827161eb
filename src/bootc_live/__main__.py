"""The `bootc-live` program (and `python -m bootc_live`).

The command line's modules are imported here, inside the program: an interrupt while they load
(the first half second) ends as any other does, in one line and 130, not in a traceback.
"""

import signal
import sys


def launch() -> None:
    try:
        from bootc_live.cli import program
    except KeyboardInterrupt:
        print(f"bootc-live: interrupted by {signal.SIGINT.name}", file=sys.stderr)
        sys.exit(128 + signal.SIGINT)
    program()


if __name__ == "__main__":
    launch()
