"""The one JSON loader for documents from outside (servers, archives): bounded size and depth.

`json.loads` alone answers a deeply nested document with RecursionError, a huge one with all
the memory it takes, and bytes that are not UTF-8 with UnicodeDecodeError: each becomes here
one `ValueError` naming the reason, which callers turn into their own one-line error.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from itertools import accumulate
from typing import Any

SIZE_LIMIT = 16 << 20
DEPTH_LIMIT = 64  # an OCI index or manifest nests 4 or 5 levels
# A string, or an unterminated one to the end: a match never fails, so never backtracks (one
# that could fail is tried again from every quote after, quadratic in a run of escaped quotes).
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*(?:"|\\?\Z)', re.DOTALL)
# Bracket bytes to steps of depth: an opening one to 2, a closing one to 0 (then minus 1).
_STEPS = bytes.maketrans(b"[{]}", b"\x02\x02\x00\x00")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[{]}")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def depth(data: bytes) -> int:
    """How deeply the arrays and objects of a JSON text nest (strings are not looked into)."""
    brackets = _STRING.sub(b"", data).translate(_STEPS, _NOT_BRACKETS)
    return max(accumulate(step - 1 for step in brackets), default=0)


def loads(
    data: bytes,
    size_limit: int = SIZE_LIMIT,
    depth_limit: int = DEPTH_LIMIT,
    object_pairs_hook: Callable[[list[tuple[str, Any]]], Any] | None = None,
) -> Any:
    """Parse `data`; ValueError (with the reason) when it is too large, too deep or not JSON.
    JSON text is UTF-8 without a byte order mark (RFC 8259), as Go reads it: json.loads would
    take UTF-16 or UTF-32, or a BOM, from bytes, so a signed payload or a policy could be
    read here as something containers/image refuses."""
    if len(data) > size_limit:
        raise ValueError(f"larger than {size_limit} bytes")
    if depth(data) > depth_limit:
        raise ValueError(f"nested more than {depth_limit} levels deep")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("not UTF-8 text") from None
    if text.startswith("\ufeff"):
        raise ValueError("it begins with a byte order mark")
    try:
        return json.loads(
            text, parse_constant=_refuse_constant, object_pairs_hook=object_pairs_hook
        )
    except RecursionError:  # not reached after the depth check; kept as the last guard
        raise ValueError(f"nested more than {depth_limit} levels deep") from None
    except ValueError as err:
        raise ValueError(str(err)) from None
