"""JSON read the way containers/image reads its policy and signatures: a key twice is an error.

`json.loads` keeps the last of duplicated keys silently; a signature payload or a policy
that says two things must not be read as saying one. Objects come back as `Object`, which
remembers the first duplicated key; `check` turns it into the caller's error.
"""

from __future__ import annotations

from typing import Any

from . import jsondoc


class Object(dict):  # type: ignore[type-arg]
    """A JSON object; `duplicate` is a key it had twice (None when none)."""

    duplicate: str | None = None


def _object(pairs: list[tuple[str, Any]]) -> Object:
    obj = Object(pairs)
    if len(obj) != len(pairs):
        keys = [key for key, _ in pairs]
        obj.duplicate = next(key for key in keys if keys.count(key) > 1)
    return obj


def loads(data: bytes, size_limit: int) -> Any:
    """Parse `data` (bounded like jsondoc.loads); ValueError with the reason when it is not
    JSON. Duplicated keys are left for `duplicate_in` to find where they are."""
    return jsondoc.loads(data, size_limit=size_limit, object_pairs_hook=_object)


def duplicate_in(value: Any) -> str | None:
    """The key a JSON object `value` (as parsed by `loads`) had twice, if any."""
    return getattr(value, "duplicate", None)
