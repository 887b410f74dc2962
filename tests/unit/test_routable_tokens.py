"""Routable tokens (issue 18, ADR 0014): the generator reproduces the research note's worked example, the
decoders read every routable kind and say precisely why they refuse a malformed one, and the transform ->
validate -> classify phases route generated tokens to their cell.

Expected strings come from ``/work/shared/upstream/routable-tokens.md`` sections 1.3 and 2.4 (constructed
there from GitLab's documented layout, not copied tokens).
"""

from __future__ import annotations

import base64
import functools
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cells_dataplane.routable_token import (
    MAX_JWT_SEGMENT,
    MAX_VALUE,
    Credential,
    Failure,
    Reason,
    Routing,
    crc36,
    decode_base64_text,
    decode_basic_credential,
    decode_routable_json,
    decode_routable_payload,
    decode_routable_token,
    parse_base36,
    to_base36,
)
from cells_dataplane.transforms import (
    Applied,
    NotApplied,
    Phases,
    Scope,
    SpecProblem,
    Step,
    TransformType,
    Unresolved,
    parse_phases,
    render_transform,
    resolve,
)
from cells_formats.ecmaregex import compile_pattern
from tests.support.tokens import (
    WORKED_EXAMPLE_RANDOM,
    basic_authorization,
    job_token,
    jwt_segment,
    personal_access_token,
    raw_routable_token,
    routable_token,
    runner_token,
    with_crc,
)

# Fixed random bytes: every example token is the same on every run (the property tests draw their own).
R = bytes(range(16))
pat = functools.partial(personal_access_token, random_bytes=R)
runner = functools.partial(runner_token, random_bytes=R)

# The note's section 1.3 and 2.4, verbatim.
NOTE_PAT = "glpat-oKGio6SlpqeoqaqrrK2ur2M6MgpvOjEKdTp5YQw.01.1312v6pf5"
NOTE_RUNNER = "glrt-t2_oKGio6SlpqeoqaqrrK2ur2M6MgpnOjI1Cm86MQp1OnlhEQ.01.1a1ev1coy"
NOTE_JWT_PAYLOAD = "eyJjIjoiMiIsIm8iOiIxIiwidSI6InlhIiwicCI6IjM5dSIsImciOiIyNSJ9"
NOTE_BASIC = "Basic b2F1dGgyOmdscGF0LW9LR2lvNlNscHFlb3FhcXJySzJ1cjJNNk1ncHZPakVLZFRwNVlRdy4wMS4xMzEydjZwZjU="

# Rules in the current dialect [G6]: the match regexes are the note's (section 2.4) or follow them.
V1_TOKEN = r"(?<payload>[0-9A-Za-z_-]{27,300})\.01\.(?<payload_length>[0-9a-z]{2})[0-9a-z]{7}"
PAT_VALUE = r"^(?:[A-Za-z0-9_]+-)?glpat-" + V1_TOKEN + "$"
BEARER_VALUE = r"^Bearer (?:[A-Za-z0-9_]+-)?glpat-" + V1_TOKEN + "$"
RUNNER_VALUE = r"^glrtr?-" + V1_TOKEN + "$"
JOB_VALUE = (
    r"^(?:[A-Za-z0-9_]+-)?glcbt-"
    r"(?<jwt_header>[A-Za-z0-9_-]+)\.(?<jwt_payload>[A-Za-z0-9_-]+)\.(?<jwt_signature>[A-Za-z0-9_-]+)$"
)
BASIC_VALUE = r"^Basic (?<credentials>[A-Za-z0-9+/]+={0,2})$"
# Inside Basic: any user, a v1 token whatever its prefix [M1]; or a job token's JWT.
# The capture takes the prefix too and the length field strips it: a separate prefix pattern such as
# "[a-z]+-" would eat into payloads that contain "-" (base64url does; see test_prefix_agnostic_capture).
BASIC_V1 = r"^[^:]*:(?<payload>[0-9A-Za-z_-]{27,330})\.01\.(?<payload_length>[0-9a-z]{2})[0-9a-z]{7}$"
BASIC_JWT = r"^[^:]*:(?:[A-Za-z0-9_]+-)?glcbt-[A-Za-z0-9_-]+\.(?<jwt_payload>[A-Za-z0-9_-]+)\.[A-Za-z0-9_-]+$"

TOKEN_PAYLOAD = {"type": "routable-token-payload", "input": ["${payload}", "${payload_length}"], "output": "decoded"}
JSON_PAYLOAD = {"type": "routable-json", "input": ["${jwt_payload}"], "output": "decoded"}
EXIST_C = {"exist": ["${decoded.c}"]}
CELL = "${decoded.c}"
BASIC_TO_TOKEN = [
    {"type": "decode-base64-match", "input": ["${credentials}"], "regexValue": BASIC_V1, "output": "basic"},
    {"type": "routable-token-payload", "input": ["${basic.payload}", "${basic.payload_length}"], "output": "decoded"},
]
BASIC_TO_JWT = [
    {"type": "decode-base64-match", "input": ["${credentials}"], "regexValue": BASIC_JWT, "output": "basic"},
    {"type": "routable-json", "input": ["${basic.jwt_payload}"], "output": "decoded"},
]


def phases(match_value: str, transform, validate=EXIST_C, value: str | None = CELL) -> tuple[Phases, object]:
    """The rule's phases (must be accepted) and its compiled match pattern."""
    pattern = compile_pattern(match_value)
    parsed = parse_phases(transform, validate, value, pattern.group_names)
    assert isinstance(parsed, Phases), parsed
    return parsed, pattern


GROUP_NAMES = ("payload", "payload_length", "credentials", "jwt_payload")


def any_phases(transform) -> Phases:
    parsed = parse_phases(transform, EXIST_C, CELL, GROUP_NAMES)
    assert isinstance(parsed, Phases), parsed
    return parsed


PAT_PHASES = any_phases(TOKEN_PAYLOAD)
BASIC_PHASES = any_phases(BASIC_TO_TOKEN)
JWT_BASIC_PHASES = any_phases(BASIC_TO_JWT)


def route(match_value: str, transform, header_value: str, **kwargs) -> Applied | NotApplied:
    """Match a header value, then transform -> validate -> classify, as the router will."""
    rule, pattern = phases(match_value, transform, **kwargs)
    hit = pattern.search(header_value)
    assert hit is not None, f"{header_value!r} does not match {match_value!r}"
    return rule.apply(hit.named)


# --- the note's worked example ----------------------------------------------------------------------------


def test_generator_reproduces_the_worked_example_byte_for_byte():
    token = pat(2, 1, 1234, random_bytes=WORKED_EXAMPLE_RANDOM)
    assert token == NOTE_PAT
    assert len(token) == 58


def test_worked_example_decodes_to_cell_2_organization_1_user_1234():
    assert decode_routable_token(NOTE_PAT) == Routing({"c": 2, "o": 1, "u": 1234})
    assert to_base36(1234) == "ya"
    assert crc36(NOTE_PAT[:-7]) == "12v6pf5"


def test_runner_example_is_reproduced_and_its_partition_marker_stripped():
    token = runner(2, 1, group=77, user=1234, random_bytes=WORKED_EXAMPLE_RANDOM)
    assert token == NOTE_RUNNER
    assert decode_routable_token(token) == Routing({"c": 2, "g": 77, "o": 1, "u": 1234})
    prefixed = token.removeprefix("glrt-").split(".")[0]
    assert prefixed.startswith("t2_")
    # The length field (1a = 46) is what drops "t2_": without it the 49 characters are not base64.
    assert decode_routable_payload(prefixed, "1a") == Routing({"c": 2, "g": 77, "o": 1, "u": 1234})
    without_length = decode_routable_payload(prefixed)
    assert isinstance(without_length, Failure) and without_length.reason is Reason.BAD_BASE64


def test_job_token_and_basic_header_reproduce_the_note():
    token = job_token(2, 1, 1234, project=4242, group=77)
    assert token.split(".")[1] == NOTE_JWT_PAYLOAD
    assert decode_routable_json(NOTE_JWT_PAYLOAD) == Routing({"c": 2, "o": 1, "u": 1234, "p": 4242, "g": 77})
    assert basic_authorization("oauth2", NOTE_PAT) == NOTE_BASIC
    assert decode_basic_credential(NOTE_BASIC.removeprefix("Basic ")) == Credential("oauth2", NOTE_PAT)


def test_runner_token_variants():
    registered = runner(3, 1, project=9, runner_type="project", registered=True, with_type_key=True)
    assert registered.startswith("glrtr-t3_")
    assert decode_routable_token(registered) == Routing({"c": 3, "o": 1, "p": 9, "t": 3})
    plain = runner(3, 1, group=5, partition_marker=False)
    assert plain.startswith("glrt-") and not plain.startswith("glrt-t")
    assert decode_routable_token(plain) == Routing({"c": 3, "g": 5, "o": 1})


def test_generator_follows_the_rails_rules():
    with pytest.raises(ValueError, match="'o'"):
        routable_token("glpat-", {"c": 1, "u": 2})
    with pytest.raises(ValueError, match="invalid routing keys"):
        routable_token("glpat-", {"o": 1, "x": 2})
    with pytest.raises(ValueError, match="too big"):
        routable_token("glpat-", {"o": "z" * 200})
    # A cell without a configured id mints tokens without c (compact_blank [G1]).
    assert decode_routable_token(pat(None, 1, 5)) == Routing({"o": 1, "u": 5})


# --- base36 -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "Z", "-1", "1_0", " 1", "1x!", to_base36(MAX_VALUE + 1), "0" * 14])
def test_parse_base36_is_strict(text):
    assert parse_base36(text) is None


def test_parse_base36_reads_ids():
    assert parse_base36("ya") == 1234
    assert parse_base36(to_base36(MAX_VALUE)) == MAX_VALUE
    assert parse_base36("0") == 0
    with pytest.raises(ValueError):
        to_base36(-1)


# --- malformed tokens: every shape has its reason ---------------------------------------------------------

RANDOM = bytes(16)


def framed(text: bytes, length_byte: int | None = None, **kwargs) -> str:
    """A correctly framed token (prefix, .01., length, CRC) around ``text`` as routing text."""
    length = len(text) if length_byte is None else length_byte
    return raw_routable_token("glpat-", RANDOM + text + bytes([length]), **kwargs)


MALFORMED = [
    pytest.param("glpat-é" + NOTE_PAT[7:], Reason.NOT_ASCII, id="not-ascii"),
    pytest.param("1234567", Reason.TOO_SHORT, id="no-room-for-crc"),
    pytest.param(NOTE_PAT[:-1] + "6", Reason.BAD_CRC, id="crc-changed"),
    pytest.param(NOTE_PAT.replace("oKGi", "oKGj"), Reason.BAD_CRC, id="payload-changed"),
    pytest.param(NOTE_PAT[:-7] + "12V6PF5", Reason.BAD_CRC, id="crc-upper-case"),
    pytest.param(with_crc(NOTE_PAT[:-7].replace(".01.", ".01")), Reason.BAD_SHAPE, id="two-parts"),
    pytest.param(with_crc("in.st-" + NOTE_PAT[:-7]), Reason.BAD_SHAPE, id="four-parts"),
    pytest.param(with_crc(NOTE_PAT[:-7].replace(".01.", ".02.")), Reason.BAD_VERSION, id="version-02"),
    pytest.param(with_crc(NOTE_PAT[:-7].replace(".01.", ".1.")), Reason.BAD_VERSION, id="version-1"),
    pytest.param(with_crc(NOTE_PAT[:-9] + "1D"), Reason.BAD_LENGTH, id="length-upper-case"),
    pytest.param(with_crc(NOTE_PAT[:-9] + "013"), Reason.BAD_LENGTH, id="length-three-chars"),
    pytest.param(with_crc(NOTE_PAT[:-9] + "00"), Reason.BAD_LENGTH, id="length-zero"),
    pytest.param(with_crc(NOTE_PAT[:-9] + "zz"), Reason.BAD_LENGTH, id="length-beyond-prefix"),
    pytest.param(
        with_crc(NOTE_PAT[:-9] + "14"), Reason.BAD_PAYLOAD, id="length-one-too-long"
    ),  # takes "-": shifted bytes
    pytest.param(with_crc(NOTE_PAT[:-13] + "=.01.14"), Reason.BAD_BASE64, id="padding"),
    pytest.param(with_crc(NOTE_PAT[:-13] + "xy.01.15"), Reason.BAD_BASE64, id="length-4n-plus-1"),
    pytest.param(with_crc(NOTE_PAT[:-13].replace("YQw", "YQx") + ".01.13"), Reason.BAD_BASE64, id="padding-bits"),
    pytest.param(raw_routable_token("glpat-", RANDOM + b"\x00"), Reason.TOO_SHORT, id="no-routing-text"),
    pytest.param(raw_routable_token("glpat-", RANDOM[:5]), Reason.TOO_SHORT, id="short-payload"),
    pytest.param(framed("c:2\no:\xe9".encode("latin-1")), Reason.BAD_PAYLOAD, id="routing-text-not-ascii"),
    pytest.param(framed(b"c2\no:1"), Reason.BAD_LINE, id="line-without-colon"),
    pytest.param(framed(b"c:2:3\no:1"), Reason.BAD_LINE, id="line-two-colons"),
    pytest.param(framed(b"c:2\n\no:1"), Reason.BAD_LINE, id="empty-line"),
    pytest.param(framed(b"c:2\no:1\n"), Reason.BAD_LINE, id="trailing-newline"),
    pytest.param(framed(b"C:2\no:1"), Reason.BAD_LINE, id="upper-case-key"),
    pytest.param(framed(b":2\no:1"), Reason.BAD_LINE, id="empty-key"),
    pytest.param(framed(b"c:\no:1"), Reason.BAD_VALUE, id="empty-value"),
    pytest.param(framed(b"c:A\no:1"), Reason.BAD_VALUE, id="upper-case-value"),
    pytest.param(framed(b"c:-1\no:1"), Reason.BAD_VALUE, id="negative-value"),
    pytest.param(framed(f"c:{to_base36(MAX_VALUE + 1)}\no:1".encode()), Reason.BAD_VALUE, id="value-too-big"),
    pytest.param(framed(b"c:2\nc:3\no:1"), Reason.DUPLICATE_KEY, id="duplicate-key"),
]


@pytest.mark.parametrize(("token", "reason"), MALFORMED)
def test_malformed_tokens_say_why(token, reason):
    result = decode_routable_token(token)
    assert isinstance(result, Failure), result
    assert result.reason is reason, str(result)
    assert result.detail


def test_every_reason_has_a_malformed_example():
    """Each Reason is produced by at least one example in this module (no reason is dead code)."""
    seen = {p.values[1] for p in MALFORMED} | {p.values[1] for p in MALFORMED_JWT} | {Reason.BAD_CREDENTIAL}
    assert seen == set(Reason)


def test_v0_tokens_have_no_version_field_and_are_refused():
    """v0 [G1-old]: base64url(routing text || 16 random bytes || [16]) "." L CRC, no version segment."""
    text = b"c:2\no:1\nu:ya"
    encoded = b64url(text + RANDOM + bytes([16]))
    token = with_crc(f"glpat-{encoded}.{to_base36(len(encoded)).rjust(2, '0')}")
    result = decode_routable_token(token)
    assert isinstance(result, Failure) and result.reason is Reason.BAD_SHAPE, result
    assert compile_pattern(PAT_VALUE).search(token) is None  # nor does the router's rule match it


def test_crc_is_not_checked_when_asked_not_to():
    """The router's transform sees only payload and length [G6]: a wrong CRC cannot stop it (decision 5)."""
    broken = NOTE_PAT[:-7] + "0000000"
    assert decode_routable_token(broken).reason is Reason.BAD_CRC
    assert decode_routable_token(broken, check_crc=False) == Routing({"c": 2, "o": 1, "u": 1234})


def test_length_byte_is_not_compared_as_in_rails():
    """Rails drops the last byte without reading it [G2]; so does this decoder."""
    assert decode_routable_token(framed(b"c:2\no:1", length_byte=99)) == Routing({"c": 2, "o": 1})


def test_unknown_lower_case_keys_are_kept():
    assert decode_routable_token(framed(b"c:2\no:1\nz:3")) == Routing({"c": 2, "o": 1, "z": 3})


# --- JWT claims and Basic credentials ---------------------------------------------------------------------


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


MALFORMED_JWT = [
    pytest.param(b64url(b"not json"), Reason.BAD_JSON, id="not-json"),
    pytest.param(b64url(b"[1, 2]"), Reason.BAD_JSON, id="array"),
    pytest.param(b64url(b'{"c": "2", "c": "3"}'), Reason.BAD_JSON, id="duplicate-claim"),
    pytest.param(b64url(b'{"c": NaN}'), Reason.BAD_JSON, id="nan"),
    pytest.param(b64url(b'{"c": "\xff"}'), Reason.BAD_JSON, id="not-utf8"),
    pytest.param(b64url(b"[" * 5000), Reason.BAD_JSON, id="deep-nesting"),
    pytest.param(b64url(b'{"c": 2}'), Reason.BAD_CLAIM, id="number-claim"),
    pytest.param(b64url(b'{"c": "Z"}'), Reason.BAD_CLAIM, id="upper-case-claim"),
    pytest.param(b64url(b'{"c": null}'), Reason.BAD_CLAIM, id="null-claim"),
    pytest.param(NOTE_JWT_PAYLOAD + "=", Reason.BAD_BASE64, id="padding"),
    pytest.param("a" * (MAX_JWT_SEGMENT + 1), Reason.BAD_LENGTH, id="too-long"),
    pytest.param("é", Reason.NOT_ASCII, id="not-ascii"),
]


@pytest.mark.parametrize(("segment", "reason"), MALFORMED_JWT)
def test_malformed_jwt_payloads_say_why(segment, reason):
    result = decode_routable_json(segment)
    assert isinstance(result, Failure), result
    assert result.reason is reason, str(result)


def test_jwt_without_routing_claims_decodes_to_nothing_and_ignores_other_claims():
    assert decode_routable_json(jwt_segment({"cell_id": 2, "iss": "gitlab"})) == Routing({})
    assert decode_routable_json(jwt_segment({"c": "a", "exp": 1, "sub": "x"})) == Routing({"c": 10})


def test_basic_credentials():
    assert decode_basic_credential(base64.b64encode(b"u:p:q").decode()) == Credential("u", "p:q")
    assert decode_basic_credential("dTpw") == Credential("u", "p")
    assert decode_base64_text("dTpw\n") == "u:p"  # forgiving-base64 strips ASCII whitespace
    assert decode_base64_text("dTo=") == "u:"  # padding accepted
    assert decode_base64_text("dTo") == "u:"  # and optional
    assert decode_base64_text(base64.b64encode("ü:p".encode()).decode()) == "Ã¼:p"  # atob: one char per byte
    assert decode_basic_credential("dXNlcg==").reason is Reason.BAD_CREDENTIAL  # "user", no colon
    for bad in ("dTpw=", "d", "dT*w", "dTpw==="):
        result = decode_basic_credential(bad)
        assert isinstance(result, Failure) and result.reason is Reason.BAD_BASE64, (bad, result)


# --- properties -------------------------------------------------------------------------------------------

ids = st.integers(min_value=0, max_value=MAX_VALUE)
optional_ids = st.one_of(st.none(), ids)
prefixes = st.one_of(
    st.sampled_from(["glpat-", "glrt-", "glrt-t2_", "glrtr-t3_", "gldt-", "inst-glpat-"]),
    st.from_regex(r"[A-Za-z0-9_-]{0,20}", fullmatch=True),
)


@given(
    prefix=prefixes,
    cell=ids,
    organization=ids,
    user=ids,
    group=optional_ids,
    project=optional_ids,
    runner_type=st.one_of(st.none(), st.integers(1, 3)),
    random=st.binary(min_size=16, max_size=16),
)
def test_generation_and_decoding_round_trip(prefix, cell, organization, user, group, project, runner_type, random):
    payload = {"c": cell, "o": organization, "u": user, "g": group, "p": project, "t": runner_type}
    token = routable_token(prefix, payload, random)
    expected = {k: v for k, v in payload.items() if v is not None}
    assert decode_routable_token(token) == Routing(expected)
    # The router's view: the prefix-agnostic Basic rule captures payload and length, the transform decodes.
    outcome = route(
        r"^(?<payload>[0-9A-Za-z_-]+)\.01\.(?<payload_length>[0-9a-z]{2})[0-9a-z]{7}$", TOKEN_PAYLOAD, token
    )
    assert outcome == Applied(str(cell), {"decoded": {k: str(v) for k, v in expected.items()}}, outcome.steps)


@given(cell=ids, organization=ids, user=ids, project=optional_ids, group=optional_ids)
def test_job_tokens_round_trip(cell, organization, user, project, group):
    token = job_token(cell, organization, user, project, group, extra_claims={"iss": "gitlab.example", "exp": 1})
    outcome = route(JOB_VALUE, JSON_PAYLOAD, token)
    assert isinstance(outcome, Applied), outcome
    assert outcome.value == str(cell)
    expected = {"c": cell, "o": organization, "u": user, "p": project, "g": group}
    assert outcome.outputs["decoded"] == {k: str(v) for k, v in expected.items() if v is not None}


@given(
    user=st.text(max_size=40).filter(lambda u: ":" not in u),
    cell=ids,
    kind=st.sampled_from(["pat", "runner", "job"]),
    random=st.binary(min_size=16, max_size=16),
)
def test_basic_credentials_route_for_any_user_name(user, cell, kind, random):
    """Chained decode-base64-match -> routable-token-payload / routable-json, any user-id before the colon."""
    if kind == "job":
        outcome = route(BASIC_VALUE, BASIC_TO_JWT, basic_authorization(user, job_token(cell, 1, 2)))
    else:
        token = pat(cell, 1, 2, random_bytes=random) if kind == "pat" else runner(cell, 1, group=3, random_bytes=random)
        outcome = route(BASIC_VALUE, BASIC_TO_TOKEN, basic_authorization(user, token))
    assert isinstance(outcome, Applied), outcome
    assert outcome.value == str(cell)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
step_like = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from([*(t.value for t in TransformType), "other"]) | json_values,
        "input": st.lists(st.sampled_from(["${payload}", "${payload_length}", "${decoded.c}", "$x", "${a.b.c}"]))
        | json_values,
        "output": st.sampled_from(["decoded", "basic", "payload", "1x"]) | json_values,
        "regexValue": st.sampled_from([BASIC_V1, "(", "(?<c>x)"]) | json_values,
        "extra": json_values,
    },
)


@given(
    transform=st.none() | step_like | st.lists(step_like, max_size=5) | json_values,
    validate=st.none() | st.fixed_dictionaries({"exist": st.lists(st.text(max_size=20), max_size=3)}) | json_values,
    value=st.none() | st.sampled_from(["${decoded.c}", "${payload}", "x", "${"]) | st.text(max_size=20) | json_values,
)
def test_parse_phases_never_raises(transform, validate, value):
    """Admission and the planner will call it on whatever a user applied: an answer, never an exception."""
    result = parse_phases(transform, validate, value, GROUP_NAMES)
    assert isinstance(result, Phases | SpecProblem)
    if isinstance(result, SpecProblem):
        assert result.reason and result.message


@given(
    random=st.binary(min_size=16, max_size=16),
    position=st.integers(min_value=0),
    replacement=st.characters(min_codepoint=0x21, max_codepoint=0x7E),
)
def test_any_single_character_change_is_caught_by_the_crc(random, position, replacement):
    """CRC-32 detects every burst of up to 32 bits, so every one-character substitution is refused."""
    token = pat(2, 1, 1234, random_bytes=random)
    index = position % len(token)
    if token[index] == replacement:
        replacement = "!" if replacement != "!" else "#"
    changed = token[:index] + replacement + token[index + 1 :]
    result = decode_routable_token(changed)
    assert isinstance(result, Failure) and result.reason is Reason.BAD_CRC, (changed, result)


@given(st.text(max_size=400), st.one_of(st.none(), st.text(max_size=3)))
def test_decoders_never_raise(text, length):
    for result in (
        decode_routable_token(text),
        decode_routable_token(text, check_crc=False),
        decode_routable_payload(text, length),
        decode_routable_json(text),
        decode_basic_credential(text),
    ):
        assert isinstance(result, Routing | Failure | Credential)


@given(st.dictionaries(st.sampled_from(GROUP_NAMES), st.one_of(st.none(), st.text(max_size=300))))
def test_phases_never_raise(groups):
    for rule in (PAT_PHASES, BASIC_PHASES, JWT_BASIC_PHASES):
        assert isinstance(rule.apply(groups), Applied | NotApplied)


# --- transform -> validate -> classify ---------------------------------------------------------------------


def test_note_pat_rule_routes_the_worked_example_to_cell_2():
    outcome = route(PAT_VALUE, TOKEN_PAYLOAD, NOTE_PAT)
    assert isinstance(outcome, Applied)
    assert outcome.value == "2"
    assert outcome.outputs == {"decoded": {"c": "2", "o": "1", "u": "1234"}}
    assert [s.step.type for s in outcome.steps] == [TransformType.ROUTABLE_TOKEN_PAYLOAD]


def test_cell_id_value_is_decimal():
    """Decision 1: cell 10 is ``a`` in the token and ``10`` in CELL_ID, the id config.toml knows."""
    token = pat(10, 1, 1)
    assert "c:a" in base64.urlsafe_b64decode(token.split(".")[0][6:] + "==")[16:-1].decode()
    assert route(PAT_VALUE, TOKEN_PAYLOAD, token).value == "10"
    assert route(PAT_VALUE, TOKEN_PAYLOAD, token, value="cell-${decoded.c}").value == "cell-10"
    # Passing base36 through would send cell 36 ("10" in base36) to cell 10.
    assert to_base36(36) == "10"
    assert route(PAT_VALUE, TOKEN_PAYLOAD, pat(36, 1, 1)).value == "36"


@pytest.mark.parametrize(
    ("match_value", "transform", "header_value", "cell"),
    [
        pytest.param(PAT_VALUE, TOKEN_PAYLOAD, pat(3, 1, 7), "3", id="private-token"),
        pytest.param(PAT_VALUE, TOKEN_PAYLOAD, pat(4, 1, 7, instance_prefix="acme"), "4", id="instance-prefix"),
        pytest.param(BEARER_VALUE, TOKEN_PAYLOAD, "Bearer " + pat(5, 1, 7), "5", id="bearer"),
        pytest.param(RUNNER_VALUE, TOKEN_PAYLOAD, runner(6, 1, group=2), "6", id="runner-token"),
        pytest.param(
            RUNNER_VALUE,
            TOKEN_PAYLOAD,
            runner(7, 1, project=2, runner_type="project", registered=True),
            "7",
            id="runner-registered",
        ),
        pytest.param(JOB_VALUE, JSON_PAYLOAD, job_token(8, 1, 7, project=3), "8", id="job-token"),
        pytest.param(
            BASIC_VALUE,
            BASIC_TO_TOKEN,
            basic_authorization("oauth2", pat(9, 1, 7)),
            "9",
            id="basic-pat",
        ),
        pytest.param(
            BASIC_VALUE, BASIC_TO_TOKEN, basic_authorization("x", runner(11, 1, group=2)), "11", id="basic-runner"
        ),
        pytest.param(
            BASIC_VALUE,
            BASIC_TO_JWT,
            basic_authorization("gitlab-ci-token", job_token(12, 1, 7)),
            "12",
            id="basic-job-token",
        ),
        pytest.param(BASIC_VALUE, BASIC_TO_TOKEN, NOTE_BASIC, "2", id="basic-note-example"),
    ],
)
def test_every_routable_kind_reaches_its_cell(match_value, transform, header_value, cell):
    outcome = route(match_value, transform, header_value)
    assert isinstance(outcome, Applied), outcome
    assert outcome.value == cell


def test_prefix_agnostic_capture():
    """Regression (found by the Basic property test): base64url payloads contain "-", so a rule that
    matches the prefix separately ("[a-z]+-") can end it inside the payload and capture too little; the
    length field then points before the capture (BadLength). Capturing prefix and payload together and
    letting payload_length strip the prefix [G2] [G6] works for every prefix."""
    token = pat(2, 1, 1234, random_bytes=bytes.fromhex("6be0000102030405060708090a0b0c0d"))
    assert token.startswith("glpat-a-")  # the payload starts with "a-"
    naive = r"^[^:]*:(?:[A-Za-z0-9_]+-)*[a-z]+-" + V1_TOKEN + "$"
    steps = [BASIC_TO_TOKEN[0] | {"regexValue": naive}, BASIC_TO_TOKEN[1]]
    broken = route(BASIC_VALUE, steps, basic_authorization("u", token))
    assert isinstance(broken, NotApplied) and broken.reason == "BadLength", broken
    assert route(BASIC_VALUE, BASIC_TO_TOKEN, basic_authorization("u", token)).value == "2"
    assert route(PAT_VALUE, TOKEN_PAYLOAD, token).value == "2"


def test_chained_basic_rule_keeps_both_steps_outputs():
    outcome = route(BASIC_VALUE, BASIC_TO_TOKEN, NOTE_BASIC)
    assert isinstance(outcome, Applied)
    assert outcome.outputs["basic"] == {"payload": NOTE_PAT[:-13], "payload_length": "13"}  # prefix included
    assert outcome.outputs["decoded"] == {"c": "2", "o": "1", "u": "1234"}
    assert [s.step.output for s in outcome.steps] == ["basic", "decoded"]


def test_token_without_cell_fails_validation_with_the_missing_key():
    outcome = route(PAT_VALUE, TOKEN_PAYLOAD, pat(None, 1, 5))
    assert isinstance(outcome, NotApplied)
    assert (outcome.phase, outcome.reason) == ("validate", "NotExist")
    assert "output 'decoded' has no key 'c' (it has: o, u)" in outcome.detail
    jwt = route(JOB_VALUE, JSON_PAYLOAD, "glcbt-" + ".".join([jwt_segment({}), jwt_segment({"cell_id": 2}), "sig"]))
    assert isinstance(jwt, NotApplied) and jwt.reason == "NotExist" and "(it has: none)" in jwt.detail


def test_without_validate_an_unresolved_value_is_reported_by_classify():
    outcome = route(PAT_VALUE, TOKEN_PAYLOAD, pat(None, 1, 5), validate=None)
    assert isinstance(outcome, NotApplied)
    assert (outcome.phase, outcome.reason) == ("classify", "UnresolvedValue")


def test_transform_failures_name_the_step_and_keep_earlier_results():
    bad_crc_ok = NOTE_PAT[:-7] + "0000000"  # the CRC is not captured: the transform cannot see it
    assert route(PAT_VALUE, TOKEN_PAYLOAD, bad_crc_ok).value == "2"
    bad_payload = with_crc("glpat-" + "A" * 27 + ".01.0r")
    outcome = route(PAT_VALUE, TOKEN_PAYLOAD, bad_payload)
    assert isinstance(outcome, NotApplied)
    assert (outcome.phase, outcome.reason, outcome.step) == ("transform", "BadLine", 0)  # three NUL bytes
    assert outcome.detail.startswith("transform 1 (routable-token-payload -> decoded)")
    # Basic: the password is no routable token -> the re-match fails in step 1.
    no_token = route(BASIC_VALUE, BASIC_TO_TOKEN, basic_authorization("user", "hunter2"))
    assert isinstance(no_token, NotApplied) and (no_token.reason, no_token.step) == ("NoMatch", 0)
    # Basic: step 1 matches a broken payload; step 2 fails and step 1's result is kept.
    broken = basic_authorization("u", with_crc("glpat-" + "A" * 26 + "B.01.0r"))
    outcome = route(BASIC_VALUE, BASIC_TO_TOKEN, broken)
    assert isinstance(outcome, NotApplied)
    assert (outcome.phase, outcome.reason, outcome.step) == ("transform", "BadBase64", 1)
    assert [s.step.output for s in outcome.steps] == ["basic"]


def test_input_of_a_group_that_did_not_participate_is_unresolved():
    rule, _ = phases(r"^(?:(?<payload>x)|y)$", TOKEN_PAYLOAD | {"input": ["${payload}"]})
    outcome = rule.apply({"payload": None})
    assert isinstance(outcome, NotApplied)
    assert (outcome.phase, outcome.reason) == ("transform", "UnresolvedInput")
    assert "did not participate" in outcome.detail


def test_validate_on_groups_without_transform():
    rule, pattern = phases(r"^(?<cell>\d+)?-(?<rest>.*)$", None, {"exist": ["${cell}"]}, "${cell}")
    assert rule.apply(pattern.search("7-x").named) == Applied("7", {})
    missing = rule.apply(pattern.search("-x").named)
    assert isinstance(missing, NotApplied) and missing.phase == "validate" and "did not participate" in missing.detail
    empty, _ = phases(r"^(?<cell>\d*)-$", None, {"exist": ["${cell}"]}, "${cell}")
    result = empty.apply({"cell": ""})
    assert isinstance(result, NotApplied) and result.detail.endswith("it is empty")


def test_resolve_templates():
    scope = Scope({"a": "x", "b": None}, {"decoded": {"c": "2"}})
    assert resolve("cell-${decoded.c}/${a}", scope) == "cell-2/x"
    assert resolve("plain", scope) == "plain"
    for template, detail in [
        ("${b}", "did not participate"),
        ("${zz}", "no named group 'zz'"),
        ("${decoded}", "is an output"),
        ("${decoded.o}", "has no key 'o' (it has: c)"),
        ("${other.c}", "no output 'other'"),
        ("${a.b.c}", "is not ${name} or ${output.key}"),
    ]:
        result = resolve(template, scope)
        assert isinstance(result, Unresolved) and detail in result.detail, (template, result)


def test_render_transform_publishes_one_step_as_an_object_and_a_chain_as_an_array():
    one = (Step(TransformType.ROUTABLE_TOKEN_PAYLOAD, ("${payload}", "${payload_length}"), "decoded"),)
    assert render_transform(one) == TOKEN_PAYLOAD
    chain = parse_phases(BASIC_TO_TOKEN, EXIST_C, CELL, ["credentials"])
    assert isinstance(chain, Phases)
    assert render_transform(chain.steps) == BASIC_TO_TOKEN
    assert json.loads(json.dumps(render_transform(chain.steps))) == BASIC_TO_TOKEN


# --- static checks: what admission and the planner will refuse --------------------------------------------

GROUPS = ("payload", "payload_length", "credentials")


@pytest.mark.parametrize(
    ("transform", "validate", "value", "reason"),
    [
        pytest.param("routable-token-payload", None, None, "InvalidTransform", id="string"),
        pytest.param([], None, None, "InvalidTransform", id="empty-array"),
        pytest.param([TOKEN_PAYLOAD] * 5, None, None, "InvalidTransform", id="too-many-steps"),
        pytest.param(TOKEN_PAYLOAD | {"extra": 1}, None, None, "InvalidTransform", id="unknown-field"),
        pytest.param(TOKEN_PAYLOAD | {"type": "base64-json"}, None, None, "UnknownTransform", id="unknown-type"),
        pytest.param(TOKEN_PAYLOAD | {"input": []}, None, None, "InvalidTransformInput", id="no-input"),
        pytest.param(
            TOKEN_PAYLOAD | {"input": ["${payload}"] * 3}, None, None, "InvalidTransformInput", id="three-inputs"
        ),
        pytest.param(
            JSON_PAYLOAD | {"input": ["${payload}", "${payload}"]},
            None,
            None,
            "InvalidTransformInput",
            id="json-two-inputs",
        ),
        pytest.param(TOKEN_PAYLOAD | {"input": "${payload}"}, None, None, "InvalidTransformInput", id="input-not-list"),
        pytest.param(TOKEN_PAYLOAD | {"output": "de-coded"}, None, None, "InvalidOutputName", id="bad-output-name"),
        pytest.param(
            {k: v for k, v in TOKEN_PAYLOAD.items() if k != "output"}, None, None, "InvalidOutputName", id="no-output"
        ),
        pytest.param(
            [BASIC_TO_TOKEN[0], BASIC_TO_TOKEN[1] | {"output": "basic"}],
            None,
            None,
            "DuplicateOutput",
            id="duplicate-output",
        ),
        pytest.param(TOKEN_PAYLOAD | {"output": "payload"}, None, None, "OutputShadowsGroup", id="output-is-a-group"),
        pytest.param(
            {k: v for k, v in BASIC_TO_TOKEN[0].items() if k != "regexValue"},
            None,
            None,
            "MissingRegexValue",
            id="no-regex",
        ),
        pytest.param(TOKEN_PAYLOAD | {"regexValue": "x"}, None, None, "RegexValueNotAllowed", id="regex-not-allowed"),
        pytest.param(BASIC_TO_TOKEN[0] | {"regexValue": "(?<a>"}, None, None, "InvalidPattern", id="bad-pattern"),
        pytest.param(
            BASIC_TO_TOKEN[0] | {"regexValue": "(?<=a+)b"}, None, None, "UnsupportedPattern", id="unsupported-pattern"
        ),
        pytest.param(
            TOKEN_PAYLOAD | {"input": ["${nope}"]}, None, None, "UnknownInterpolation", id="input-names-no-group"
        ),
        pytest.param(
            TOKEN_PAYLOAD | {"input": ["${decoded.c}"]}, None, None, "OutputUsedBeforeDefined", id="own-output"
        ),
        pytest.param(list(reversed(BASIC_TO_TOKEN)), None, None, "OutputUsedBeforeDefined", id="chain-out-of-order"),
        pytest.param(TOKEN_PAYLOAD | {"input": ["$payload"]}, None, None, "InvalidInterpolation", id="bare-dollar"),
        pytest.param(
            TOKEN_PAYLOAD | {"input": ["${payload.x}"]}, None, None, "InvalidInterpolation", id="key-on-group"
        ),
        pytest.param(TOKEN_PAYLOAD, {"exist": "${decoded.c}"}, None, "InvalidValidate", id="exist-not-list"),
        pytest.param(TOKEN_PAYLOAD, {"exist": []}, None, "InvalidValidate", id="exist-empty"),
        pytest.param(
            TOKEN_PAYLOAD, {"exist": ["${decoded.c}"], "match": 1}, None, "InvalidValidate", id="validate-extra"
        ),
        pytest.param(
            TOKEN_PAYLOAD, {"exist": ["${decoded}"]}, None, "InvalidInterpolation", id="exist-output-without-key"
        ),
        pytest.param(TOKEN_PAYLOAD, {"exist": ["${decoded.cell}"]}, None, "UnknownOutputKey", id="exist-unknown-key"),
        pytest.param(TOKEN_PAYLOAD, None, "${decoded.cell}", "UnknownOutputKey", id="value-unknown-key"),
        pytest.param(TOKEN_PAYLOAD, None, "${dekoded.c}", "UnknownInterpolation", id="value-unknown-output"),
        pytest.param(BASIC_TO_TOKEN[:1], None, "${basic.c}", "UnknownOutputKey", id="regex-output-keys"),
        pytest.param(None, {"exist": ["${decoded.c}"]}, None, "UnknownInterpolation", id="no-transform"),
        pytest.param(TOKEN_PAYLOAD, None, 2, "InvalidClassifyValue", id="value-not-a-string"),
    ],
)
def test_spec_problems(transform, validate, value, reason):
    problem = parse_phases(transform, validate, value, GROUPS)
    assert isinstance(problem, SpecProblem), problem
    assert problem.reason == reason, problem
    assert problem.message


def test_accepted_phases_for_every_sample_shape():
    for transform in (TOKEN_PAYLOAD, JSON_PAYLOAD | {"input": ["${payload}"]}, BASIC_TO_TOKEN, BASIC_TO_JWT):
        assert isinstance(parse_phases(transform, EXIST_C, CELL, GROUPS), Phases), transform
    assert parse_phases() == Phases()
