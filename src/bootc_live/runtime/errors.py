"""The error hierarchy: every expected failure is a BootcLiveError with a one-line message."""

from __future__ import annotations

import re

SHOWN = 60  # characters kept at each end of a name shown in a message
MESSAGE_LIMIT = 500  # characters of a message, whatever it quotes
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _one_line(text: str) -> str:
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def _middle(text: str, keep: int) -> str:
    if len(text) <= 2 * keep + 1:
        return text
    return f"{text[:keep]}…{text[-keep:]}"


def shown(value: str | bytes, keep: int = SHOWN) -> str:
    """A name or value as put into a message: one line, not UTF-8 escaped, long ones shortened
    in the middle (the first and last `keep` characters kept)."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "backslashreplace")
    return _middle(_one_line(value), keep)


class BootcLiveError(Exception):
    """A failure the user can act on: `str(err)` names the cause, `hint` the next step.

    The message is made one line and capped, whatever it quotes (names are shortened where
    they are put into it, with `shown`)."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(_middle(_one_line(message), MESSAGE_LIMIT // 2))
        self.hint = hint

    def line(self) -> str:
        """The one-line report: cause, then the next step."""
        text = str(self)
        return f"{text}; {self.hint}" if self.hint else text


class ImageError(BootcLiveError):
    """The image (index, manifest, config) is missing, ambiguous or malformed."""


class VerificationError(BootcLiveError):
    """A blob or layer does not match its digest, size or diff_id."""


class LayerError(BootcLiveError):
    """A layer's tar stream is malformed or asks for something forbidden."""


class SpaceError(BootcLiveError):
    """The destination ran out of space."""
