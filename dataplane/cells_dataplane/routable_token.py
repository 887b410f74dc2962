"""Decode GitLab's routable tokens, JWT-shaped job tokens and Basic credentials (pure, standard library only).

A routable token (v1, issue 18, ``/work/shared/upstream/routable-tokens.md`` section 1, tags [G1] [G2]) is::

    <prefix><P>.<V>.<L><CRC>

``P`` is unpadded base64url of ``16 random bytes || routing text || one byte len(routing text)``; the routing
text is ``key:value`` lines sorted by key, joined by ``\\n``, integer values in base36; ``V`` is the version
``01``; ``L`` is ``len(P)`` in base36, two characters; ``CRC`` is CRC-32 of everything before it in base36,
seven characters. The decoder never needs the prefix: it takes the *last* ``L`` characters of the first
dot-separated part, which also drops markers such as a runner token's ``t2_`` partition marker.

Every function here answers instead of raising: a decoded value, or a :class:`Failure` with a precise
:class:`Reason`, because the router evaluates hostile headers and a token it cannot read is a routine
outcome (the rule does not apply), never an error of the router.

Where this decoder differs from Rails' ``Authn::TokenField::Decoders::V1::RoutablePayload`` [G2] (ADR 0014):
Rails is lenient in ways its own generator [G1] never produces; this decoder refuses those shapes, because
the router only routes and a token GitLab did not mint is not worth routing (the request still reaches the
default cell, where Rails authenticates it):

- the version must be ``01`` (Rails ignores the field; the router's rules pin ``\\.01\\.`` [G6] [M1]);
- exactly three dot-separated parts (Rails takes the first three);
- ``L`` is exactly two lower-case base36 characters and at least 1 (Rails' ``to_i(36)`` is lenient);
- no ``=`` padding in ``P`` (Rails' ``urlsafe_decode64`` would accept it; the generator never pads);
- no empty lines (Rails skips them), keys are lower-case letters, values are strict lower-case base36
  (Rails' ``to_i(36)`` reads ``"1x!"`` as 69 and ``""`` as 0), at most 2**63 - 1, keys appear once.

As in Rails: the CRC is compared as text with ``Zlib.crc32`` of the prefixed payload, version and length
rendered in base36 and left-padded to seven characters; base64 is strict (Ruby's ``strict_decode64``, which
``urlsafe_decode64`` calls, refuses non-zero padding bits); the first 16 bytes and the last byte are dropped
without comparing the last byte with the routing text's length (Rails hard-codes the 16 and ignores it).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

RANDOM_BYTES_LENGTH = 16  # [G1] RANDOM_BYTES_LENGTH
CRC_LENGTH = 7  # [G1] CRC_BYTES
LENGTH_FIELD_LENGTH = 2  # [G1] BASE64_PAYLOAD_LENGTH_HOLDER_BYTES
VERSION = "01"  # [G1] TOKEN_VERSION = 1, base36, left-padded to two characters
ROUTING_KEYS = ("c", "g", "o", "p", "t", "u")  # [G1] VALID_ROUTING_KEYS: cell, group, organization, project, type, user
MAX_ROUTING_TEXT = 159  # [G1] MAXIMUM_SIZE_OF_ROUTING_PAYLOAD (bytes of routing text)
MAX_VALUE = 2**63 - 1  # GitLab ids are bigint; anything above is not an id
MAX_JWT_SEGMENT = 8192  # a job token's claims are a few hundred bytes; bounds JSON parsing of hostile input

_BASE36 = re.compile(r"[0-9a-z]+")
_LENGTH_FIELD = re.compile(r"[0-9a-z]{2}")
_NOT_BASE64URL = re.compile(r"[^A-Za-z0-9_-]")
_BASE64 = re.compile(r"[A-Za-z0-9+/]*")
_KEY = re.compile(r"[a-z]+")
_ASCII_WHITESPACE = re.compile(r"[\t\n\f\r ]")
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


class Reason(StrEnum):
    """Why a value could not be decoded; CamelCase like the operator's condition reasons."""

    NOT_ASCII = "NotAscii"  # tokens, lengths and CRCs are ASCII by construction
    TOO_SHORT = "TooShort"  # no room for the CRC, or decoded bytes without routing text
    BAD_CRC = "BadCrc"
    BAD_SHAPE = "BadShape"  # not <prefixed payload>.<version>.<length>
    BAD_VERSION = "BadVersion"
    BAD_LENGTH = "BadLength"  # the length field is malformed, zero, or longer than what precedes it
    BAD_BASE64 = "BadBase64"
    BAD_PAYLOAD = "BadPayload"  # routing text that is not ASCII
    BAD_LINE = "BadLine"  # a routing-text line that is not key:value
    BAD_VALUE = "BadValue"  # a value that is not a base36 id
    DUPLICATE_KEY = "DuplicateKey"
    BAD_JSON = "BadJson"  # a JWT payload segment that is not one JSON object
    BAD_CLAIM = "BadClaim"  # a routing claim that is not a base36 string
    BAD_CREDENTIAL = "BadCredential"  # a Basic credential without ':'


@dataclass(frozen=True)
class Failure:
    """A value that could not be decoded, and exactly why (``detail`` is for people: logs, ``route``)."""

    reason: Reason
    detail: str

    def __str__(self) -> str:
        return f"{self.reason.value}: {self.detail}"


@dataclass(frozen=True)
class Routing:
    """The routing keys a token carries, as integers (``c`` cell, ``o`` organization, ``u`` user, ...)."""

    values: Mapping[str, int]

    def as_text(self) -> dict[str, str]:
        """The values as decimal strings: what ``${output.key}`` interpolates (ADR 0014, decision 1)."""
        return {key: str(value) for key, value in self.values.items()}


@dataclass(frozen=True)
class Credential:
    """An HTTP Basic credential: ``user-id:password`` split at the first colon (RFC 7617 section 2)."""

    user: str
    password: str


def to_base36(value: int) -> str:
    """``value`` in lower-case base36, as Ruby's ``Integer#to_s(36)`` renders it (no leading zeros)."""
    if value < 0:
        raise ValueError(f"base36 of a negative number: {value}")
    digits = []
    while True:
        value, digit = divmod(value, 36)
        digits.append(_DIGITS[digit])
        if value == 0:
            return "".join(reversed(digits))


def parse_base36(text: str) -> int | None:
    """The id a strict base36 string denotes, or None (empty, other characters, upper case, > 2**63 - 1)."""
    if len(text) > 13 or not _BASE36.fullmatch(text):  # 36**13 > 2**63: longer is never an id
        return None
    value = int(text, 36)
    return value if value <= MAX_VALUE else None


def crc36(text: str) -> str:
    """CRC-32 of ``text`` in base36, left-padded to seven characters: the last seven characters of a token."""
    return to_base36(zlib.crc32(text.encode("utf-8"))).rjust(CRC_LENGTH, "0")


def decode_routable_token(token: str, *, check_crc: bool = True) -> Routing | Failure:
    """Decode a whole routable token as GitLab's Rails decoder does [G2], CRC included.

    ``check_crc=False`` decodes what the router's ``routable-token-payload`` transform sees: its documented
    inputs are only ``payload`` and ``payload_length`` [G6], so the router cannot check the CRC, which covers
    the prefix and version as well (ADR 0014, decision 5). Diagnostics (``cells-operator route``) check it.
    """
    if not token.isascii():
        return Failure(Reason.NOT_ASCII, "a routable token is ASCII")
    if len(token) <= CRC_LENGTH:
        return Failure(Reason.TOO_SHORT, f"{len(token)} characters leave no room for the {CRC_LENGTH}-character CRC")
    body, crc = token[:-CRC_LENGTH], token[-CRC_LENGTH:]
    if check_crc and (expected := crc36(body)) != crc:
        return Failure(Reason.BAD_CRC, f"CRC {crc!r} does not match the token (CRC-32 of the rest is {expected!r})")
    parts = body.split(".")
    if len(parts) != 3:
        return Failure(
            Reason.BAD_SHAPE,
            f"expected <prefix><payload>.<version>.<length><crc>, found {len(parts)} dot-separated parts",
        )
    prefixed_payload, version, length = parts
    if version != VERSION:
        return Failure(Reason.BAD_VERSION, f"version {version!r} is not {VERSION!r}")
    return decode_routable_payload(prefixed_payload, length)


def decode_routable_payload(prefixed_payload: str, payload_length: str | None = None) -> Routing | Failure:
    """Decode the base64url payload of a routable token: the ``routable-token-payload`` transform.

    ``payload_length`` is the token's two-character base36 length field: the payload is the *last* that many
    characters of ``prefixed_payload``, so a capture that also took a prefix or a ``t2_`` marker still
    decodes [G2] [G6]. Without it, all of ``prefixed_payload`` is the payload.
    """
    if not (prefixed_payload.isascii() and (payload_length or "").isascii()):
        return Failure(Reason.NOT_ASCII, "a routable token is ASCII")
    payload = prefixed_payload
    if payload_length is not None:
        if not _LENGTH_FIELD.fullmatch(payload_length):
            return Failure(Reason.BAD_LENGTH, f"length field {payload_length!r} is not two base36 characters")
        length = int(payload_length, 36)
        if length == 0 or length > len(prefixed_payload):
            return Failure(
                Reason.BAD_LENGTH,
                f"length field {payload_length!r} = {length}, but {len(prefixed_payload)} characters precede it",
            )
        payload = prefixed_payload[-length:]
    raw = _strict_base64url(payload)
    if isinstance(raw, Failure):
        return raw
    if len(raw) < RANDOM_BYTES_LENGTH + 2:
        return Failure(
            Reason.TOO_SHORT,
            f"payload decodes to {len(raw)} bytes: no routing text after {RANDOM_BYTES_LENGTH} random bytes "
            "and before the length byte",
        )
    text = raw[RANDOM_BYTES_LENGTH:-1]
    if not text.isascii():
        return Failure(Reason.BAD_PAYLOAD, "routing text is not ASCII: not a v1 payload")
    return _routing_text(text.decode("ascii"))


def _strict_base64url(payload: str) -> bytes | Failure:
    """Unpadded base64url in canonical form, as Ruby's ``urlsafe_decode64`` decodes the generator's output."""
    if bad := _NOT_BASE64URL.search(payload):
        return Failure(Reason.BAD_BASE64, f"{bad.group()!r} is not a base64url character (no padding either)")
    if len(payload) % 4 == 1:
        return Failure(Reason.BAD_BASE64, f"{len(payload)} base64 characters cannot encode whole bytes")
    raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != payload:
        return Failure(Reason.BAD_BASE64, "non-zero padding bits (Ruby's strict decoder refuses them)")
    return raw


def _routing_text(text: str) -> Routing | Failure:
    """Parse ``key:value`` lines with base36 values into integers."""
    values: dict[str, int] = {}
    for number, line in enumerate(text.split("\n"), start=1):
        key, colon, value = line.partition(":")
        if not colon or ":" in value or not _KEY.fullmatch(key):
            return Failure(Reason.BAD_LINE, f"line {number} {line!r} is not <lower-case key>:<base36 value>")
        parsed = parse_base36(value)
        if parsed is None:
            return Failure(Reason.BAD_VALUE, f"{key}: {value!r} is not a base36 id (0 ... 2**63 - 1)")
        if key in values:
            return Failure(Reason.DUPLICATE_KEY, f"key {key!r} appears twice")
        values[key] = parsed
    return Routing(values)


def decode_routable_json(segment: str) -> Routing | Failure:
    """Read the routing claims of a JWT's payload segment: the ``routable-json`` transform [G8] [M1].

    A CI job token is ``glcbt-`` + a JWT whose claims ``c``, ``o``, ``u``, ``p``, ``g`` are base36 *strings*
    [G8]; the router's decoder is strict about them [M8], so a routing claim that is not a base36 string (a
    number, an upper-case string) is :attr:`Reason.BAD_CLAIM`. Other claims (``iss``, ``exp``, ...) are not
    routing data and are ignored; a JWT without routing claims decodes to nothing (``validate`` then says
    which key is missing). The signature is not verified: routing is not authentication, the cell verifies.
    """
    if len(segment) > MAX_JWT_SEGMENT:
        return Failure(
            Reason.BAD_LENGTH, f"JWT payload segment of {len(segment)} characters (at most {MAX_JWT_SEGMENT})"
        )
    if not segment.isascii():
        return Failure(Reason.NOT_ASCII, "a JWT segment is ASCII")
    raw = _strict_base64url(segment)
    if isinstance(raw, Failure):
        return raw
    try:
        claims = json.loads(raw.decode("utf-8"), object_pairs_hook=_unique_claims, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return Failure(Reason.BAD_JSON, f"payload segment is not JSON: {exc}")
    if not isinstance(claims, dict):
        return Failure(Reason.BAD_JSON, f"payload segment is a JSON {type(claims).__name__}, not an object")
    values: dict[str, int] = {}
    for key in ROUTING_KEYS:
        if key not in claims:
            continue
        claim = claims[key]
        parsed = parse_base36(claim) if isinstance(claim, str) else None
        if parsed is None:
            return Failure(Reason.BAD_CLAIM, f"claim {key!r} is {json.dumps(claim)[:40]}, not a base36 string")
        values[key] = parsed
    return Routing(values)


def _unique_claims(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys appear once (two ``c`` claims would make the cell ambiguous)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"claim {key!r} appears twice")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def decode_base64_text(value: str) -> str | Failure:
    """Base64 to text as a JavaScript worker's ``atob`` does it: the ``decode-base64-match`` transform's input.

    The router is a JavaScript worker; ``atob`` is the WHATWG "forgiving-base64 decode": ASCII whitespace
    removed, padding optional but never more than needed, padding bits ignored, and the result a *binary
    string* (one character per byte, i.e. Latin-1). So every byte sequence decodes, and ASCII credentials
    (every GitLab token) read the same whatever the client's charset (ADR 0014).
    """
    text = _ASCII_WHITESPACE.sub("", value)
    if len(text) % 4 == 0 and text.endswith("="):
        text = text[:-2] if text.endswith("==") else text[:-1]
    if len(text) % 4 == 1 or not _BASE64.fullmatch(text):
        return Failure(Reason.BAD_BASE64, "not base64 (forgiving-base64: alphabet A-Z a-z 0-9 + /, '=' padding)")
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error as exc:  # unreachable after the checks above; kept so the function never raises
        return Failure(Reason.BAD_BASE64, str(exc))
    return raw.decode("latin-1")


def decode_basic_credential(encoded: str) -> Credential | Failure:
    """``user-id:password`` from the base64 of an ``Authorization: Basic`` header (RFC 7617)."""
    text = decode_base64_text(encoded)
    if isinstance(text, Failure):
        return text
    user, colon, password = text.partition(":")
    if not colon:
        return Failure(Reason.BAD_CREDENTIAL, "a Basic credential is user-id:password; there is no ':'")
    return Credential(user, password)
