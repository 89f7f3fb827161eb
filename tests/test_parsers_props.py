"""Property-based tests of the parsers that read what a server says: headers, Content-Range,
WWW-Authenticate, token answers, JSON documents, and the redaction of URLs. Whatever the input,
each returns a sane value or raises its one documented error, never anything else."""

from __future__ import annotations

import contextlib
import json
import math
import re
import string
from collections.abc import Iterator

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bootc_live.runtime import http, jsondoc, signatures, strictjson
from bootc_live.runtime.registry import RegistryError, parse_challenge, parse_token
from servers import hard_timeout


@pytest.fixture(autouse=True)
def _hard_timeout() -> Iterator[None]:
    with hard_timeout(60):
        yield


SETTINGS = settings(max_examples=300, deadline=None)
HEADER_TEXT = st.text(st.characters(min_codepoint=0, max_codepoint=0x2FF), max_size=60)


@SETTINGS
@given(HEADER_TEXT)
@example("bytes 0-511/*")
@example("bytes 5-4/10")
@example("bytes 0-9/5")
@example("bytes 0-" + "9" * 30 + "/*")
def test_content_range_any_text(text: str) -> None:
    try:
        first, last, total = http.parse_content_range(text)
    except ValueError as err:
        assert str(err).startswith("invalid Content-Range")
        return
    assert 0 <= first <= last and (total is None or last < total)


@SETTINGS
@given(st.integers(0, 10**18), st.integers(0, 10**18), st.integers(1, 10**18) | st.none())
def test_content_range_round_trip(a: int, b: int, total: int | None) -> None:
    first, last = min(a, b), max(a, b)
    text = f"bytes {first}-{last}/{'*' if total is None else total}"
    if total is not None and last >= total:
        try:
            http.parse_content_range(text)
        except ValueError:
            return
        raise AssertionError("a range past the total was accepted")
    assert http.parse_content_range(text) == (first, last, total)


@SETTINGS
@given(HEADER_TEXT | st.from_regex(r"[0-9]{1,30}", fullmatch=True))
@example("abc")
@example("12, 12")
@example("12, 13")
@example("-1")
def test_content_length_any_text(text: str) -> None:
    try:
        length = http.parse_content_length(text)
    except ValueError as err:
        assert str(err).startswith("invalid Content-Length")
        return
    assert length is not None and 0 <= length < 10**19
    assert str(length) == text.split(",")[0].strip().lstrip("0") or length == 0


@SETTINGS
@given(HEADER_TEXT | st.from_regex(r"[0-9]{1,500}", fullmatch=True))
@example("9" * 400)
@example("Wed, 21 Oct 9999 07:28:00 GMT")
@example("Wed, 21 Oct 1999 07:28:00 GMT")
def test_retry_after_any_text(text: str) -> None:
    value = http.parse_retry_after(text)
    assert value is None or value >= 0
    slept: list[float] = []
    retrier = http.Retrier("http://h/", http.Policy(retries=3), lambda _m: None, slept.append)
    retrier.failed("HTTP 503", value)
    assert len(slept) == 1 and 0 <= slept[0] <= http.Policy.max_retry_after


QUOTABLE = st.text(st.characters(blacklist_characters='"\\', min_codepoint=0x20), max_size=40)


@SETTINGS
@given(st.text(max_size=200))
def test_challenge_any_text(text: str) -> None:
    scheme, params = parse_challenge(text)
    assert scheme == scheme.lower()
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in params.items())


@SETTINGS
@given(st.sampled_from(["Bearer", "bearer", "BASIC"]), QUOTABLE, QUOTABLE, QUOTABLE)
def test_challenge_round_trip(scheme: str, realm: str, service: str, scope: str) -> None:
    header = f'{scheme} realm="{realm}",service="{service}", scope="{scope}"'
    assert parse_challenge(header) == (
        scheme.lower(),
        {"realm": realm, "service": service, "scope": scope},
    )


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        # What registries send (Docker Hub, GHCR, Quay, ECR), unchanged.
        (
            'Bearer realm="https://auth.docker.io/token",service="registry.docker.io"',
            ("bearer", {"realm": "https://auth.docker.io/token", "service": "registry.docker.io"}),
        ),
        ('Basic realm="https://1.dkr.ecr.aws",service="ecr.amazonaws.com"', ("basic", {
            "realm": "https://1.dkr.ecr.aws", "service": "ecr.amazonaws.com"})),
        # RFC 7235: names in any case, token values, escapes, commas inside quotes.
        ('Bearer Realm="https://t/token",SERVICE=reg', ("bearer", {
            "realm": "https://t/token", "service": "reg"})),
        ('Bearer realm="a\\"b",scope="repository:x:pull,push"', ("bearer", {
            "realm": 'a"b', "scope": "repository:x:pull,push"})),
        # Several challenges: Bearer, else Basic, whatever comes first.
        ('Basic realm="r", Bearer realm="https://t/token",service="s"', ("bearer", {
            "realm": "https://t/token", "service": "s"})),
        ('Negotiate abc==, Basic realm="q"', ("basic", {"realm": "q"})),
        ("", ("", {})),
    ],
)  # fmt: skip
def test_challenge_forms(header: str, expected: tuple[str, dict[str, str]]) -> None:
    assert parse_challenge(header) == expected


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@SETTINGS
@given(
    st.one_of(
        st.binary(max_size=200),
        st.builds(
            lambda token, life: json.dumps({"token": token, "expires_in": life}).encode(),
            st.text(max_size=40) | st.integers() | st.none(),
            JSON_VALUES,
        ),
        st.builds(lambda v: json.dumps(v).encode(), JSON_VALUES),
    )
)
@example(b'{"token": "t", "expires_in": ' + b"9" * 400 + b"}")
@example(b'{"token": "t", "expires_in": 1e999}')
@example(b'{"token": "a\\r\\nb"}')
@example(b'{"access_token": "x"}')
def test_token_any_answer(data: bytes) -> None:
    try:
        token, lifetime = parse_token(data, "token service T")
    except RegistryError as err:
        assert str(err).startswith("token service T answered")
        obj = None
        with contextlib.suppress(ValueError):
            obj = json.loads(data)
        if isinstance(obj, dict) and isinstance(obj.get("token"), str) and len(obj["token"]) > 3:
            assert obj["token"] not in str(err)  # a token is a secret, even a malformed one
        return
    assert token and all(0x21 <= ord(c) <= 0x7E for c in token)
    assert math.isfinite(lifetime) and 0 <= lifetime <= 86400


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@SETTINGS
@given(JSON_VALUES)
def test_json_loader_round_trips_and_measures_depth(value: object) -> None:
    data = json.dumps(value).encode()
    assert jsondoc.loads(data) == value

    def depth(v: object) -> int:
        if isinstance(v, list):
            return 1 + max(map(depth, v), default=0)
        if isinstance(v, dict):
            return 1 + max(map(depth, v.values()), default=0)
        return 0

    assert jsondoc.depth(data) == depth(value)


@SETTINGS
@given(st.binary(max_size=300) | st.integers(0, 3000).map(nested))
@example(nested(100_000))
@example(b'"\\\\"[[[[')
def test_json_loader_any_bytes(data: bytes) -> None:
    try:
        jsondoc.loads(data)
    except ValueError:
        return
    assert jsondoc.depth(data) <= jsondoc.DEPTH_LIMIT


@SETTINGS
@given(JSON_VALUES, st.sampled_from(["utf-8-sig", "utf-16", "utf-16-le", "utf-32"]))
def test_json_loader_reads_utf8_only_without_a_bom(value: object, encoding: str) -> None:
    """As Go's decoder: json.loads took UTF-16, UTF-32 and a BOM from bytes, so a signed
    payload or policy.json in them was read here and refused by containers/image."""
    data = json.dumps(value).encode(encoding)
    with pytest.raises(ValueError):
        jsondoc.loads(data)
    with pytest.raises(ValueError):
        strictjson.loads(data, 1 << 20)
    if encoding == "utf-8-sig":
        with pytest.raises(ValueError, match=r"^it begins with a byte order mark$"):
            jsondoc.loads(data)


def test_json_loader_is_linear_in_unterminated_strings() -> None:
    # Each quote of a run of escaped quotes opens a string that never closes: a scan that
    # tried each again from every quote took minutes for this; one pass takes milliseconds.
    with hard_timeout(20), pytest.raises(ValueError, match="Unterminated string"):
        jsondoc.loads(b'{"a": "' + b'\\"' * 300_000)


SAFE = string.ascii_letters + string.digits
PASSWORDS = st.text(SAFE, min_size=4, max_size=20).map(lambda p: f"PW{p}")


@SETTINGS
@given(
    st.text(SAFE, max_size=10),
    PASSWORDS,
    st.text(SAFE + "/.-", max_size=30),
    st.text(SAFE + "=&%", max_size=30),
)
def test_redacted_urls_hold_no_credentials(user: str, password: str, path: str, query: str) -> None:
    url = f"https://{user}:{password}@reg.example:5000/{path}" + (f"?{query}" if query else "")
    printed = http.redact(url)
    assert printed == f"https://***@reg.example:5000/{path}" + ("?…" if query else "")
    bare, credentials = http.split_credentials(url)
    assert credentials == (user, password) and password not in bare


@SETTINGS
@given(
    st.text(SAFE, max_size=10),
    st.text(SAFE + "/?#:", min_size=1, max_size=20).map(lambda p: f"PW{p}"),
    st.text(SAFE + "/.-", max_size=30),
)
def test_a_password_not_percent_encoded_is_not_printed(user: str, password: str, path: str) -> None:
    """A /, ? or # in a password ends the host early (urlsplit reads USER:PW… as the host and
    the rest as path, query or fragment): none of it is shown, wherever the parser put it."""
    printed = http.redact(f"https://{user}:{password}@reg.example:5000/{path}")
    assert password not in printed, printed
    for piece in re.split(r"[/?#:]", password):  # each part, unless the URL's own text has it
        if len(piece) > 2 and piece not in f"https://***@reg.example:5000/{path}?…":
            assert piece not in printed, printed


@SETTINGS
@given(st.text(max_size=100))
def test_redact_any_text(text: str) -> None:
    printed = http.redact(text)
    assert printed.isprintable() and len(printed) <= 300


@SETTINGS
@given(st.binary(max_size=64) | st.binary(max_size=8).map(lambda b: b"\x99\x00\x0d" + b))
def test_keyring_framing_any_bytes(data: bytes) -> None:
    """Never an exception; whole packets only (one cut short is refused)."""
    whole = signatures._public_keyring(data)
    if whole:
        assert not signatures._public_keyring(data[:-1]) or data[:-1] == b""
