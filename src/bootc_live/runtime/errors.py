"""The error hierarchy: every expected failure is a BootcLiveError with a one-line message."""

from __future__ import annotations


class BootcLiveError(Exception):
    """A failure the user can act on: `str(err)` names the cause, `hint` the next step."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
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
