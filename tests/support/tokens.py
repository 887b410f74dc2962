"""Generate GitLab-shaped tokens for tests, following GitLab's documented layout (never copied tokens).

The routable layout is ``Authn::TokenField::Generator::RoutableToken`` [G1] as described in
``/work/shared/upstream/routable-tokens.md`` section 1.1: the routing payload's integer values in base36,
blank values dropped, pairs sorted by key and joined by ``\\n``; raw bytes are 16 random bytes, that text
and one byte holding its length; base64url without padding; ``.01.``; the payload length in two base36
characters; CRC-32 of all that in seven base36 characters. Job tokens are ``glcbt-`` + a JWT whose routing
claims are base36 strings [G8]; the signature here is a dummy (the router does not verify it).

``random_bytes`` is a parameter so tests are reproducible: the note's worked example uses ``a0 a1 ... af``.
"""

from __future__ import annotations

import base64
import json
import os
import zlib
from collections.abc import Mapping
from typing import Any

from cells_dataplane.routable_token import to_base36

WORKED_EXAMPLE_RANDOM = bytes(range(0xA0, 0xB0))  # the note's section 1.3: a0 a1 ... af
VALID_KEYS = frozenset("cgoptu")  # [G1] VALID_ROUTING_KEYS
MAX_ROUTING_TEXT = 159  # [G1] MAXIMUM_SIZE_OF_ROUTING_PAYLOAD
RUNNER_TYPES = {"instance": 1, "group": 2, "project": 3}  # [H1]: t = 1 instance, 2 group, 3 project
DUMMY_SIGNATURE = base64.urlsafe_b64encode(b"not a signature: the router does not verify").rstrip(b"=").decode()


def routing_text(payload: Mapping[str, int | str | None]) -> str:
    """``key:value`` lines as the generator builds them: ints base36, blanks dropped, sorted by key."""
    unknown = set(payload) - VALID_KEYS
    if unknown:
        raise ValueError(f"invalid routing keys {sorted(unknown)}; valid: {sorted(VALID_KEYS)}")
    if "o" not in payload:
        raise ValueError("missing required routing key 'o'")  # [G1] REQUIRED_ROUTING_KEYS
    rendered = {k: to_base36(v) if isinstance(v, int) else v for k, v in payload.items()}
    text = "\n".join(f"{k}:{v}" for k, v in sorted(rendered.items()) if v)  # compact_blank, sort
    if len(text) > MAX_ROUTING_TEXT:
        raise ValueError(f"routing payload is too big: {len(text)}; maximum is {MAX_ROUTING_TEXT}")
    return text


def routable_token(prefix: str, payload: Mapping[str, int | str | None], random_bytes: bytes | None = None) -> str:
    """A v1 routable token: ``<prefix><P>.01.<L><CRC>``."""
    random_bytes = os.urandom(16) if random_bytes is None else random_bytes
    if len(random_bytes) != 16:
        raise ValueError("the v1 layout has exactly 16 random bytes")
    text = routing_text(payload).encode("ascii")
    encoded = base64.urlsafe_b64encode(random_bytes + text + bytes([len(text)])).rstrip(b"=").decode("ascii")
    return with_crc(f"{prefix}{encoded}.01.{to_base36(len(encoded)).rjust(2, '0')}")


def personal_access_token(
    cell: int | None,
    organization: int,
    user: int,
    *,
    instance_prefix: str | None = None,
    random_bytes: bytes | None = None,
) -> str:
    """``glpat-`` (or ``<instance>-glpat-``) with ``c``, ``o``, ``u`` [G4] [G5]; ``cell=None``: no cell id."""
    prefix = f"{instance_prefix}-glpat-" if instance_prefix else "glpat-"
    return routable_token(prefix, {"c": cell, "o": organization, "u": user}, random_bytes)


def runner_token(
    cell: int | None,
    organization: int,
    *,
    group: int | None = None,
    project: int | None = None,
    user: int | None = None,
    runner_type: str = "group",
    partition_marker: bool = True,
    with_type_key: bool = False,
    registered: bool = False,
    random_bytes: bytes | None = None,
) -> str:
    """``glrt-t<n>_...`` (``glrtr-`` when registered with a registration token) [G6] [G11] [G17].

    The ``t<n>_`` partition marker sits between the type prefix and the payload; the length field lets the
    decoder skip it. ``with_type_key`` also writes the design's ``t`` key (open question 9: unverified).
    """
    number = RUNNER_TYPES[runner_type]
    prefix = ("glrtr-" if registered else "glrt-") + (f"t{number}_" if partition_marker else "")
    payload: dict[str, int | str | None] = {"c": cell, "o": organization, "g": group, "p": project, "u": user}
    if with_type_key:
        payload["t"] = number
    return routable_token(prefix, payload, random_bytes)


def jwt_segment(document: Mapping[str, Any]) -> str:
    """One JWT segment: compact JSON, base64url without padding (RFC 7515 section 2)."""
    raw = json.dumps(document, separators=(",", ":")).encode("utf-8")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def job_token_claims(
    cell: int | None, organization: int, user: int, project: int | None = None, group: int | None = None
) -> dict[str, str]:
    """Routing claims as base36 strings in the order ``c, o, u, p, g`` [G8]; ``None`` leaves a claim out."""
    claims = {"c": cell, "o": organization, "u": user, "p": project, "g": group}
    return {k: to_base36(v) for k, v in claims.items() if v is not None}


def job_token(
    cell: int | None,
    organization: int,
    user: int,
    project: int | None = None,
    group: int | None = None,
    *,
    instance_prefix: str | None = None,
    extra_claims: Mapping[str, Any] | None = None,
) -> str:
    """``glcbt-`` + ``header.payload.signature`` with base36 routing claims and a dummy signature [G8] [G9]."""
    prefix = f"{instance_prefix}-glcbt-" if instance_prefix else "glcbt-"
    claims: dict[str, Any] = {**job_token_claims(cell, organization, user, project, group), **(extra_claims or {})}
    header = jwt_segment({"alg": "RS256", "typ": "JWT"})
    return f"{prefix}{header}.{jwt_segment(claims)}.{DUMMY_SIGNATURE}"


def basic_authorization(user: str, password: str) -> str:
    """An ``Authorization`` header value for HTTP Basic: ``Basic base64(user:password)`` (RFC 7617)."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def raw_routable_token(prefix: str, raw: bytes, *, version: str = "01", length: str | None = None) -> str:
    """A token in the v1 *frame* around arbitrary raw bytes, with a correct CRC: for malformed-payload tests."""
    encoded = base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
    length = to_base36(len(encoded)).rjust(2, "0") if length is None else length
    return with_crc(f"{prefix}{encoded}.{version}.{length}")


def with_crc(body: str) -> str:
    """``body`` followed by its correct seven-character base36 CRC-32."""
    return body + to_base36(zlib.crc32(body.encode("utf-8"))).rjust(7, "0")
