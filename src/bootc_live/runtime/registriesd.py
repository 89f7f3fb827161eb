"""containers-registries.d(5): where an image's signatures are kept, as skopeo reads it.

Every `*.yaml` of the directory, merged: at most one `default-docker` section across the
files, each `docker:` scope in one file only. A section names a lookaside store (`lookaside`,
or its old name `sigstore`; `lookaside-staging`/`sigstore-staging` for writing) and whether
sigstore attachments are used. The section of the most specific scope that sets a value
applies (the image, its repository, parent namespaces, the host, `*.` wildcards — the lookup
of policy.json's docker scopes), then `default-docker`, then the built-in default.

As containers/image reads these files (YAML into Go's encoding/json): section and setting
names match whatever their case, a name it does not know is passed over, an empty or null
value is one not set, and YAML 1.1's yes/no/on/off are booleans. Two names in one mapping that
mean the same setting are an error (containers/image takes one of them silently).

The files are read by a small YAML subset (block mappings of plain or quoted strings and
booleans, comments); anything beyond it is an error naming the file and line, never a guess.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Union
from urllib.parse import unquote, urlsplit, urlunsplit

from .errors import BootcLiveError, ImageError, shown
from .policy import DockerReference, docker_namespaces
from .sources import read_file

DEFAULT_DIR = "/etc/containers/registries.d"
BUILTIN_LOOKASIDE = "file:///var/lib/containers/sigstore"  # containers/image's, for root
FILE_LIMIT = 1 << 20
URL_SCHEMES = ("file", "http", "https")

Value = Union[str, bool, None, "dict[str, Value]"]


class YamlMapping(dict[str, Value]):
    """A mapping as read, with the line each key is on (for messages)."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: dict[str, int] = {}


class RegistriesDError(BootcLiveError):
    """A registries.d file is malformed, or two of them disagree."""


# The YAML subset.

# YAML 1.1's booleans, as go-yaml v2 (which containers/image reads these files with) has them.
_BOOLEANS = {
    **dict.fromkeys(("true", "True", "TRUE", "yes", "Yes", "YES", "on", "On", "ON"), True),
    **dict.fromkeys(("y", "Y"), True),
    **dict.fromkeys(("false", "False", "FALSE", "no", "No", "NO", "off", "Off", "OFF"), False),
    **dict.fromkeys(("n", "N"), False),
}
_BEYOND = "&*!|>[]{}%@`"  # anchors, aliases, tags, block scalars, flow collections, directives


def parse_yaml(text: str, source: str) -> YamlMapping:
    """A YAML document of nested block mappings whose leaves are strings, booleans or empty."""
    root = YamlMapping()
    # (indent of the mapping's keys, the mapping); the key that opened a mapping awaits its
    # first line to learn the indent.
    stack: list[tuple[int, YamlMapping]] = [(0, root)]
    opened: tuple[YamlMapping, str] | None = None
    begun = False  # past the document's start: its first line or a `---`
    # A byte order mark may start the stream (YAML 1.1 5.2; go-yaml drops it).
    for number, raw in enumerate(text.removeprefix("\ufeff").split("\n"), 1):
        where = f"{source}:{number}"
        line = _strip_comment(raw.rstrip("\r"), where)
        if not line.strip():
            continue
        if line.rstrip() == "---":
            if begun:
                raise RegistriesDError(f"{where}: a second YAML document (one is read here)")
            begun = True
            continue
        begun = True
        if "\t" in line[: len(line) - len(line.lstrip(" \t"))]:
            raise RegistriesDError(f"{where}: indented with a tab (YAML allows only spaces)")
        indent = len(line) - len(line.lstrip(" "))
        if opened is not None:
            parent, key = opened
            opened = None
            if indent > stack[-1][0]:
                child = YamlMapping()
                parent[key] = child
                stack.append((indent, child))
        while indent < stack[-1][0]:
            stack.pop()
        if indent != stack[-1][0]:
            raise RegistriesDError(f"{where}: indentation does not match any mapping above")
        key, value = _entry(line.strip(), where)
        mapping = stack[-1][1]
        if key in mapping:
            raise RegistriesDError(f"{where}: {shown(key)} appears twice in one mapping")
        mapping[key] = _scalar(value, where) if value else None
        mapping.lines[key] = number
        if not value:
            opened = (mapping, key)
    return root


def _strip_comment(line: str, where: str) -> str:
    """The line without its comment (a # at the start or after a space, outside quotes)."""
    quote = ""
    for i, c in enumerate(line):
        if quote:
            if c == quote:
                quote = ""
        elif c in "'\"" and (i == 0 or line[i - 1] in " :"):
            quote = c
        elif c == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i].rstrip()
    if quote:
        raise RegistriesDError(f"{where}: a quoted string is not closed on its line")
    return line


def _entry(text: str, where: str) -> tuple[str, str]:
    if text.startswith(("- ", "? ")) or text == "-" or text.startswith("---"):
        raise RegistriesDError(f"{where}: only mappings of keys to values are read here")
    if text[0] in "'\"":
        end = _closing_quote(text, where)
        key, rest = _unquote(text[: end + 1], where), text[end + 1 :]
        if not rest.startswith(":"):
            raise RegistriesDError(f"{where}: expected `:` after the key")
        return key, rest[1:].strip()
    # A plain key ends at the first `: ` (or a `:` ending the line): host:port keys keep theirs.
    m = re.match(r"(.*?):(?: +(.*))?$", text)
    if not m or not m.group(1):
        raise RegistriesDError(f"{where}: expected `key: value`")
    key = m.group(1).rstrip()
    if key[0] in _BEYOND or ": " in key:
        raise RegistriesDError(f"{where}: {shown(key)} is beyond the YAML read here")
    return key, (m.group(2) or "").strip()


def _closing_quote(text: str, where: str) -> int:
    quote, i = text[0], 1
    while i < len(text):
        if text[i] == "\\" and quote == '"':
            i += 2
            continue
        if text[i] == quote:
            if quote == "'" and text[i + 1 : i + 2] == "'":
                i += 2
                continue
            return i
        i += 1
    raise RegistriesDError(f"{where}: a quoted string is not closed on its line")


def _unquote(text: str, where: str) -> str:
    body = text[1:-1]
    if text[0] == "'":
        return body.replace("''", "'")
    escapes = {'"': '"', "\\": "\\", "/": "/", "n": "\n", "t": "\t"}
    out, i = "", 0
    while i < len(body):
        c = body[i]
        if c == "\\":
            nxt = body[i + 1 : i + 2]
            if nxt not in escapes:
                raise RegistriesDError(f"{where}: the escape \\{shown(nxt)} is not read here")
            out += escapes[nxt]
            i += 2
            continue
        out += c
        i += 1
    return out


def _scalar(text: str, where: str) -> Value:
    if text[0] in "'\"":
        end = _closing_quote(text, where)
        if text[end + 1 :].strip():
            raise RegistriesDError(f"{where}: text after a quoted string")
        return _unquote(text, where)
    if text in _BOOLEANS:
        return _BOOLEANS[text]
    if text in ("~", "null", "Null", "NULL"):
        return None
    if text[0] in _BEYOND or text.startswith(("- ", "? ")):
        raise RegistriesDError(f"{where}: {shown(text)} is beyond the YAML read here")
    return text


# registries.d.


@dataclass(frozen=True)
class Section:
    """One configuration section (default-docker, or a docker: scope)."""

    source: str
    lookaside: str | None = None
    lookaside_staging: str | None = None
    sigstore: str | None = None  # the old name of lookaside
    sigstore_staging: str | None = None
    use_sigstore_attachments: bool | None = None

    def top_level(self, write: bool) -> str | None:
        """The store's URL, for reading or (`write`) for adding signatures."""
        if write and (self.lookaside_staging or self.sigstore_staging):
            return self.lookaside_staging or self.sigstore_staging
        return self.lookaside or self.sigstore


_FIELDS = {f.name.replace("_", "-"): f.name for f in fields(Section) if f.name != "source"}


def _go_name(key: str) -> str | None:
    """`key` as Go's encoding/json compares it with a field's (ASCII) name: regardless of case,
    with U+017F and U+212A for s and k (every name here has one of them); None when it can be
    no name of ours."""
    folded = key.replace("\u017f", "s").replace("\u212a", "k")
    return folded.lower() if folded.isascii() else None


def _where(mapping: Value, key: str, source: str) -> str:
    """file:line of `key` in `mapping` (file alone when the line is not known)."""
    line = mapping.lines.get(key) if isinstance(mapping, YamlMapping) else None
    return f"{source}:{line}" if line else source


def _known(
    mapping: dict[str, Value], names: Collection[str], source: str, where: str
) -> dict[str, tuple[str, Value]]:
    """{name: (key as written, value)} for the keys of `mapping` that are one of `names` as
    containers/image matches them; the others it passes over, and so do we. Two keys for one
    name are an error: containers/image would take one (the last by byte order) silently."""
    found: dict[str, tuple[str, Value]] = {}
    for key, value in mapping.items():
        name = _go_name(key)
        if name is None or name not in names:
            continue
        if name in found:
            first = found[name][0]
            raise RegistriesDError(
                f"{_where(mapping, key, source)}: {shown(key)} sets {_join(where, name)}, as "
                f"{shown(first)} does ({_where(mapping, first, source)}): keep one"
            )
        found[name] = (key, value)
    return found


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _section(value: Value, at: str, source: str, where: str) -> Section | None:
    """The section `value` (at file:line `at`); None when it is null, which containers/image
    reads as no section for default-docker."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise RegistriesDError(f"{at}: {where} must be a mapping")
    settings: dict[str, str | bool] = {}
    for key, (written, item) in _known(value, _FIELDS, source, where).items():
        at = f"{_where(value, written, source)}: {where}.{written}"
        if item is None:
            continue  # null: not set
        if key == "use-sigstore-attachments":
            if not isinstance(item, bool):
                raise RegistriesDError(f"{at} must be true or false")
            settings[_FIELDS[key]] = item
            continue
        if item == "":
            continue  # an empty URL is none, and a less specific section's applies
        if key.endswith("-staging") and isinstance(item, str) and item.startswith("/"):
            # Only written to (by skopeo, podman): containers-registries.d(5)'s example names a
            # directory, as a path.
            item = urlunsplit(("file", "", item, "", ""))
        if not isinstance(item, str) or urlsplit(item).scheme not in URL_SCHEMES:
            raise RegistriesDError(f"{at} must be a file://, http:// or https:// URL")
        elif not _usable_path(item):
            raise RegistriesDError(f"{at}: its path has a NUL or bytes that are not UTF-8 (%00…)")
        settings[_FIELDS[key]] = item
    return Section(source, **settings)  # type: ignore[arg-type]


def _usable_path(url: str) -> bool:
    """Whether a URL's path, %-decoded, is text without a NUL (a file name, a URL path)."""
    try:
        return "\0" not in unquote(urlsplit(url).path, errors="strict")
    except UnicodeDecodeError:
        return False


@dataclass(frozen=True)
class RegistriesD:
    """The merged configuration of a registries.d directory."""

    docker: Mapping[str, Section]
    default_docker: Section | None = None

    @classmethod
    def load(cls, directory: str = DEFAULT_DIR) -> RegistriesD:
        """Every *.yaml of `directory`, merged; a missing directory configures nothing."""
        try:
            names = sorted(n for n in os.listdir(directory) if n.endswith(".yaml"))
        except FileNotFoundError:
            return cls({})
        except OSError as err:
            raise RegistriesDError(f"{directory}: cannot be read: {err.strerror}") from None
        texts = {}
        for name in names:
            path = os.path.join(directory, name)
            try:
                hint = "make it a regular file, or remove it"  # a link to /dev/null: empty
                data = read_file(path, path, FILE_LIMIT, hint, null_is_empty=True)
            except ImageError as err:
                raise RegistriesDError(str(err), err.hint) from None
            except OSError as err:
                raise RegistriesDError(f"{path}: cannot be read: {err.strerror}") from None
            try:
                texts[path] = data.decode()
            except UnicodeDecodeError:
                raise RegistriesDError(f"{path}: not UTF-8 text") from None
        return cls.parse(texts)

    @classmethod
    def parse(cls, texts: Mapping[str, str]) -> RegistriesD:
        """Merge files given as {path: text}."""
        default: Section | None = None
        docker: dict[str, Section] = {}
        for source, text in texts.items():
            doc = parse_yaml(text, source)
            sections = _known(doc, ("default-docker", "docker"), source, "")
            key, value = sections.get("default-docker", ("", None))
            found = _section(value, _where(doc, key, source), source, "default-docker")
            if found is not None:
                if default is not None:
                    raise RegistriesDError(
                        f'"default-docker" is defined both in {default.source} and {source}'
                    )
                default = found
            key, scopes = sections.get("docker", ("", None))
            if scopes is None:
                continue
            if not isinstance(scopes, dict):
                raise RegistriesDError(
                    f"{_where(doc, key, source)}: docker must be a mapping of scopes"
                )
            for scope, value in scopes.items():
                if scope in docker:
                    raise RegistriesDError(
                        f"{shown(scope)} is configured both in {docker[scope].source} and {source}"
                    )
                at = _where(scopes, scope, source)
                docker[scope] = _section(value, at, source, f"docker.{scope}") or Section(source)
        return cls(docker, default)

    def _sections(self, ref: DockerReference) -> list[Section]:
        """The sections that apply to `ref`, most specific first."""
        try:
            scopes = docker_namespaces(ref)
        except ValueError as err:
            raise RegistriesDError(f"{ref}: {err}") from None
        found = [self.docker[scope] for scope in scopes if scope in self.docker]
        return found + ([self.default_docker] if self.default_docker else [])

    def lookaside(self, ref: DockerReference, write: bool = False) -> str:
        """The lookaside URL of `ref`'s repository (its signatures are below it)."""
        top = next(
            (url for s in self._sections(ref) if (url := s.top_level(write))), BUILTIN_LOOKASIDE
        )
        parts = urlsplit(top)
        return urlunsplit(parts._replace(path=f"{parts.path}/{ref.path}"))

    def use_sigstore_attachments(self, ref: DockerReference) -> bool:
        """Whether `ref`'s sigstore attachments (tag sha256-HEX.sig) are read."""
        for section in self._sections(ref):
            if section.use_sigstore_attachments is not None:
                return section.use_sigstore_attachments
        return False


def signature_url(lookaside: str, manifest_digest: str, number: int) -> str:
    """The URL of signature `number` (from 1) of a manifest below a repository's lookaside URL:
    …/NAME@sha256=HEX/signature-N."""
    algorithm, _, hex_value = manifest_digest.partition(":")
    parts = urlsplit(lookaside)
    path = f"{parts.path}@{algorithm}={hex_value}/signature-{number}"
    return urlunsplit(parts._replace(path=path))


def signature_urls(lookaside: str, manifest_digest: str) -> Iterator[str]:
    """signature-1, signature-2 …: read until the first that does not exist."""
    number = 1
    while True:
        yield signature_url(lookaside, manifest_digest, number)
        number += 1
