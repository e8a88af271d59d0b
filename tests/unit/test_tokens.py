"""Signed links (models/tokens.py) and the key they are signed with (procure/settings.py)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import stat
import string
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.errors import InputError
from models.tokens import (
    ApprovalToken,
    ReceiptToken,
    TermsToken,
    TokenError,
    ViewToken,
    approval_token,
    inbox_token,
    read_approval_token,
    read_inbox_token,
    read_receipt_token,
    read_terms_token,
    read_view_token,
    receipt_token,
    sign,
    terms_token,
    unsign,
    view_token,
)
from procure import settings as procure_settings
from tests.conftest import utc

KEY = b"k3y-for-tests-" + b"x" * 32
OTHER_KEY = b"another-key-for-tests-" + b"y" * 32
NOW = utc(2026, 11, 25, 9, 0)
LATER = NOW + timedelta(days=14)
URLSAFE = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"

Reader = Callable[[str, bytes, datetime], object]


def _approval(expires: datetime = LATER, key: bytes = KEY) -> str:
    return approval_token(
        request_id=11, stage_id=22, round=3, person_id=44, expires=expires, key=key
    )


def _view(expires: datetime = LATER, key: bytes = KEY) -> str:
    return view_token(request_id=11, audience="team:it", expires=expires, key=key)


def _inbox(expires: datetime = LATER, key: bytes = KEY) -> str:
    return inbox_token(person_id=44, expires=expires, key=key)


def _receipt(expires: datetime = LATER, key: bytes = KEY) -> str:
    return receipt_token(person_id=44, request_id=11, expires=expires, key=key)


def _terms(expires: datetime = LATER, key: bytes = KEY) -> str:
    return terms_token(person_id=44, request_id=11, expires=expires, key=key)


KINDS: dict[str, tuple[Callable[..., str], Reader]] = {
    "approval": (_approval, read_approval_token),
    "view": (_view, read_view_token),
    "inbox": (_inbox, read_inbox_token),
    "receipt": (_receipt, read_receipt_token),
    "terms": (_terms, read_terms_token),
}
READERS: list[Reader] = [
    read_approval_token,
    read_view_token,
    read_inbox_token,
    read_receipt_token,
    read_terms_token,
]


def _forge(raw: bytes, purpose: str, key: bytes = KEY) -> str:
    """A token over arbitrary bytes with a correct MAC: what only the key holder can make."""
    body = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    mac = hmac.new(key, f"{purpose}.{body}".encode(), hashlib.sha256).digest()
    return f"{body}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


def _flip(token: str, index: int) -> str:
    """The token with the character at index changed so that what it encodes changes too.

    A base64 character's top bit always carries data (the last character of a 32-byte MAC
    has two padding bits at the bottom), so flipping it changes the decoded bytes."""
    char = token[index]
    new = URLSAFE[URLSAFE.index(char) ^ 32] if char in URLSAFE else "A"
    return token[:index] + new + token[index + 1 :]


# --- round trips ---------------------------------------------------------------------------


def test_an_approval_token_carries_its_grant() -> None:
    token = _approval()
    grant = read_approval_token(token, KEY, NOW)
    assert grant == ApprovalToken(
        request_id=11,
        stage_id=22,
        round=3,
        person_id=44,
        expires=int(LATER.timestamp()),
        nonce=grant.nonce,
    )
    assert len(grant.nonce) == 16
    int(grant.nonce, 16)  # hex
    assert set(token) <= set(URLSAFE + ".")  # fits in a URL as it is


def test_two_approval_tokens_for_the_same_grant_have_different_nonces() -> None:
    first, second = _approval(), _approval()
    assert first != second
    assert read_approval_token(first, KEY, NOW).nonce != read_approval_token(second, KEY, NOW).nonce


def test_a_view_token_carries_request_and_audience() -> None:
    token = view_token(request_id=7, audience="person:dana@example.com", expires=LATER, key=KEY)
    assert read_view_token(token, KEY, NOW) == ViewToken(
        7, "person:dana@example.com", int(LATER.timestamp())
    )


def test_an_inbox_token_carries_its_person() -> None:
    assert read_inbox_token(_inbox(), KEY, NOW) == 44


def test_a_receipt_token_carries_its_person_and_request() -> None:
    token = _receipt()
    assert read_receipt_token(token, KEY, NOW) == ReceiptToken(44, 11, int(LATER.timestamp()))
    assert set(token) <= set(URLSAFE + ".")
    # The same grant signs the same token: no nonce, it confirms as often as it is used.
    assert _receipt() == token


def test_a_terms_token_carries_its_person_and_request() -> None:
    token = _terms()
    assert read_terms_token(token, KEY, NOW) == TermsToken(44, 11, int(LATER.timestamp()))
    assert _terms() == token  # no nonce: confirming twice changes nothing
    with pytest.raises(TokenError, match="expired"):
        read_terms_token(token, KEY, LATER + timedelta(seconds=1))


json_scalars = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8)
small_payloads = st.dictionaries(
    st.text(max_size=5), json_scalars | st.lists(json_scalars, max_size=2), max_size=3
)


@settings(max_examples=60, deadline=None)
@given(
    payload=small_payloads,
    purpose=st.sampled_from(["approval", "view", "inbox", "receipt", "x"]),
)
def test_sign_and_unsign_round_trip_any_small_payload(
    payload: dict[str, Any], purpose: str
) -> None:
    assert unsign(sign(payload, KEY, purpose), KEY, purpose) == payload


# --- refusals ------------------------------------------------------------------------------


@pytest.mark.parametrize("signed_as", sorted(KINDS))
@pytest.mark.parametrize("read_as", sorted(KINDS))
def test_a_token_of_one_purpose_is_no_token_of_another(signed_as: str, read_as: str) -> None:
    make, _ = KINDS[signed_as]
    _, read = KINDS[read_as]
    token = make()
    if signed_as == read_as:
        assert read(token, KEY, NOW)
    else:
        with pytest.raises(TokenError, match="altered"):
            read(token, KEY, NOW)


def test_unsign_mixes_the_purpose_into_the_signature() -> None:
    token = sign({"p": 1}, KEY, "inbox")
    assert unsign(token, KEY, "inbox") == {"p": 1}
    with pytest.raises(TokenError, match="altered"):
        unsign(token, KEY, "inbox2")
    with pytest.raises(TokenError, match="altered"):
        unsign(token, KEY, "")


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_changing_any_one_character_is_refused(kind: str) -> None:
    make, read = KINDS[kind]
    token = make()
    for index in range(len(token)):
        tampered = _flip(token, index)
        assert tampered != token
        with pytest.raises(TokenError):
            read(tampered, KEY, NOW)


def test_a_payload_swapped_in_from_another_token_is_refused() -> None:
    mine = inbox_token(person_id=1, expires=LATER, key=KEY)
    theirs = inbox_token(person_id=2, expires=LATER, key=KEY)
    spliced = theirs.split(".")[0] + "." + mine.split(".")[1]
    with pytest.raises(TokenError, match="altered"):
        read_inbox_token(spliced, KEY, NOW)


def test_a_rewritten_payload_with_the_old_signature_is_refused() -> None:
    token = _inbox()
    body, signature = token.split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    payload["p"] = 1  # someone else's inbox
    new_body = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    with pytest.raises(TokenError, match="altered"):
        read_inbox_token(f"{new_body}.{signature}", KEY, NOW)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_token_signed_with_another_key_is_refused(kind: str) -> None:
    make, read = KINDS[kind]
    token = make(key=OTHER_KEY)
    assert read(token, OTHER_KEY, NOW)
    with pytest.raises(TokenError, match="altered"):
        read(token, KEY, NOW)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_token_works_until_it_expires_and_not_a_second_longer(kind: str) -> None:
    make, read = KINDS[kind]
    token = make(expires=LATER)
    assert read(token, KEY, NOW)
    assert read(token, KEY, LATER)  # the last second still counts
    with pytest.raises(TokenError, match="expired"):
        read(token, KEY, LATER + timedelta(seconds=1))
    with pytest.raises(TokenError, match="expired"):
        read(token, KEY, LATER + timedelta(days=365))


def test_a_token_that_expired_when_it_was_made_is_refused() -> None:
    with pytest.raises(TokenError, match="expired"):
        read_approval_token(_approval(expires=NOW - timedelta(minutes=1)), KEY, NOW)


@pytest.mark.parametrize(
    ("purpose", "read", "payload", "message"),
    [
        ("approval", read_approval_token, {}, "not a procure approval link"),
        ("approval", read_approval_token, {"r": 1, "s": 2}, "not a procure approval link"),
        (
            "approval",
            read_approval_token,
            {"r": "one", "s": 2, "n": 1, "p": 4, "e": 2**40, "k": "ab"},
            "not a procure approval link",
        ),
        ("view", read_view_token, {}, "not a procure request link"),
        ("view", read_view_token, {"r": 1, "e": 2**40}, "not a procure request link"),
        (
            "view",
            read_view_token,
            {"r": [1], "a": "team:it", "e": 2**40},
            "not a procure request link",
        ),
        ("inbox", read_inbox_token, {}, "not a procure inbox link"),
        ("inbox", read_inbox_token, {"p": 1}, "not a procure inbox link"),
        ("inbox", read_inbox_token, {"p": None, "e": 2**40}, "not a procure inbox link"),
        ("receipt", read_receipt_token, {}, "not a procure receipt link"),
        ("receipt", read_receipt_token, {"p": 1, "e": 2**40}, "not a procure receipt link"),
        (
            "receipt",
            read_receipt_token,
            {"p": 1, "r": "PR-0001", "e": 2**40},
            "not a procure receipt link",
        ),
    ],
)
def test_a_signed_payload_without_the_fields_of_its_kind_is_refused(
    purpose: str, read: Reader, payload: dict[str, Any], message: str
) -> None:
    with pytest.raises(TokenError, match=message):
        read(sign(payload, KEY, purpose), KEY, NOW)


@pytest.mark.parametrize("raw", [b"[1, 2]", b'"text"', b"42", b"null", b"not json", b"\xff\xfe"])
def test_a_signed_body_that_is_not_a_json_object_is_refused(raw: bytes) -> None:
    with pytest.raises(TokenError, match="malformed"):
        unsign(_forge(raw, "inbox"), KEY, "inbox")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"p": Infinity, "e": 9999999999}', "malformed"),
        (b'{"p": NaN, "e": 9999999999}', "malformed"),
        (b'{"p": 1, "e": -Infinity}', "malformed"),
        (b'{"p": 1e400, "e": 9999999999}', "not a procure inbox link"),  # a float's infinity
        (b'{"p": 1, "e": 1e999}', "not a procure inbox link"),
        (b'{"p": 9223372036854775808, "e": 9999999999}', "not a procure inbox link"),  # 2**63
    ],
)
def test_a_signed_number_beyond_any_id_or_time_is_refused(raw: bytes, message: str) -> None:
    """Refused as a bad link (400), never an OverflowError (500), though only the key's holder
    could sign it."""
    with pytest.raises(TokenError, match=message):
        read_inbox_token(_forge(raw, "inbox"), KEY, NOW)


GARBAGE = [
    "",
    ".",
    "..",
    "no-dot-at-all",
    "a.b.c",
    "a.b",
    ".signature-only",
    "payload-only.",
    "!!!.###",
    "%%%%.%%%%",
    "é.ü",
    "eyJwIjoxfQ.",
    "eyJwIjoxfQ.@@@",
    " " * 40 + "." + " " * 40,
    "\x00.\x00",
    "x" * 5000 + "." + "y" * 5000,
    "A" * 990 + "." + "B" * 43,  # over the 1000-character limit
]


@pytest.mark.parametrize("garbage", GARBAGE, ids=range(len(GARBAGE)))
@pytest.mark.parametrize("read", READERS)
def test_garbage_is_refused_with_a_token_error(garbage: str, read: Reader) -> None:
    with pytest.raises(TokenError):
        read(garbage, KEY, NOW)


@pytest.mark.parametrize("not_text", [None, b"a.b", 12, ["a", "b"]])
def test_a_token_that_is_not_text_is_refused(not_text: object) -> None:
    with pytest.raises(TokenError, match="malformed"):
        unsign(not_text, KEY, "inbox")  # type: ignore[arg-type]


def test_a_valid_token_padded_past_the_length_limit_is_refused() -> None:
    token = _inbox()
    body, signature = token.split(".")
    assert read_inbox_token(token, KEY, NOW) == 44
    with pytest.raises(TokenError, match="malformed"):
        read_inbox_token(body + "." + signature + "=" * (1001 - len(token)), KEY, NOW)


@settings(max_examples=150, deadline=None)
@given(text=st.text(max_size=1200), read=st.sampled_from(READERS))
def test_arbitrary_text_is_refused_with_a_token_error(text: str, read: Reader) -> None:
    with pytest.raises(TokenError):
        read(text, KEY, NOW)


@settings(max_examples=150, deadline=None)
@given(
    text=st.text(alphabet=URLSAFE + ".=+/", max_size=200),
    read=st.sampled_from(READERS),
)
def test_arbitrary_token_shaped_text_is_refused_with_a_token_error(text: str, read: Reader) -> None:
    with pytest.raises(TokenError):
        read(text, KEY, NOW)


@settings(max_examples=100, deadline=None)
@given(raw=st.binary(max_size=300))
def test_any_signed_bytes_give_a_dict_or_a_token_error(raw: bytes) -> None:
    try:
        payload = unsign(_forge(raw, "view"), KEY, "view")
    except TokenError:
        return
    assert isinstance(payload, dict)
    assert payload == json.loads(raw)


def test_a_lone_surrogate_in_the_payload_part_is_refused_with_a_token_error() -> None:
    with pytest.raises(TokenError):
        unsign("\ud800.x", KEY, "inbox")


def test_a_token_has_exactly_one_accepted_spelling() -> None:
    token = sign({"p": 1}, KEY, "inbox")
    body, signature = token.split(".")
    variants = {body + "." + signature[:-1] + c for c in URLSAFE if c != signature[-1]}
    variants |= {
        token + "=",
        body + "." + signature.replace("-", "+").replace("_", "/"),
    }
    variants.discard(token)
    accepted = []
    for variant in variants:
        try:
            unsign(variant, KEY, "inbox")
        except TokenError:
            continue
        accepted.append(variant)
    assert accepted == []


# --- the signing key -----------------------------------------------------------------------


@pytest.fixture(autouse=True)
def procure_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in ("PROCURE_SECRET_KEY", "PROCURE_ENVIRONMENT", "PROCURE_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "procure-home"
    monkeypatch.setenv("PROCURE_HOME", str(home))
    return home


GOOD_KEY = "Kq3xV8mB2nL7pR4tW9yZ1cF6hJ0dS5gA-e"  # 34 characters


def test_a_key_from_the_environment_is_used_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROCURE_SECRET_KEY", GOOD_KEY)
    key = procure_settings.load().signing_key()
    assert key == GOOD_KEY.encode()
    assert read_inbox_token(_inbox(key=key), key, NOW) == 44


def test_a_key_of_exactly_the_minimum_length_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    key = "z" * procure_settings.MIN_KEY_LENGTH
    monkeypatch.setenv("PROCURE_SECRET_KEY", key)
    assert procure_settings.load().signing_key() == key.encode()


@pytest.mark.parametrize(
    "weak",
    [
        "changeme",
        "CHANGEME",
        "change-me",
        "secret",
        "dev",
        "short-but-random-Xq9",
        "z" * (procure_settings.MIN_KEY_LENGTH - 1),
        "changeme".ljust(procure_settings.MIN_KEY_LENGTH + 4),  # a placeholder padded to length
    ],
)
@pytest.mark.parametrize("environment", ["development", "production"])
def test_a_weak_or_placeholder_key_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, weak: str, environment: str, tmp_path: Path
) -> None:
    monkeypatch.setenv("PROCURE_SECRET_KEY", weak)
    monkeypatch.setenv("PROCURE_ENVIRONMENT", environment)
    loaded = procure_settings.load()
    with pytest.raises(
        InputError, match=r"^PROCURE_SECRET_KEY: too weak: use at least 32"
    ) as caught:
        loaded.signing_key()
    assert caught.value.problems[0].field == "PROCURE_SECRET_KEY"
    assert not list(tmp_path.rglob("secret.key"))  # and none was generated in its place


def test_a_refused_key_is_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    weak = "Zq7-not-long-enough"
    monkeypatch.setenv("PROCURE_SECRET_KEY", weak)
    with pytest.raises(InputError) as caught:
        procure_settings.load().signing_key()
    assert weak not in str(caught.value)
    assert weak not in repr(caught.value.problems)


def test_production_without_a_key_is_refused(
    monkeypatch: pytest.MonkeyPatch, procure_home: Path
) -> None:
    monkeypatch.setenv("PROCURE_ENVIRONMENT", "production")
    loaded = procure_settings.load()
    assert loaded.environment == "production"
    with pytest.raises(InputError, match=r"^PROCURE_SECRET_KEY: is not set: production") as caught:
        loaded.signing_key()
    assert caught.value.problems[0].field == "PROCURE_SECRET_KEY"
    assert not procure_home.exists()  # nothing generated


def test_production_ignores_a_generated_development_key(
    monkeypatch: pytest.MonkeyPatch, procure_home: Path
) -> None:
    procure_settings.load().signing_key()  # development: generates one
    assert (procure_home / "secret.key").exists()
    monkeypatch.setenv("PROCURE_ENVIRONMENT", "production")
    with pytest.raises(InputError, match="PROCURE_SECRET_KEY"):
        procure_settings.load().signing_key()


def test_an_unknown_environment_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PROCURE_ENVIRONMENT", "staging")
    with pytest.raises(InputError, match=r"^PROCURE_ENVIRONMENT: "):
        procure_settings.load()


def test_development_generates_a_private_key_once(procure_home: Path) -> None:
    home = procure_home
    assert not home.exists()
    first = procure_settings.load().signing_key()
    path = home / "secret.key"
    assert path.is_file()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) >= procure_settings.MIN_KEY_LENGTH
    assert path.read_bytes().strip() == first
    assert [p.name for p in home.iterdir()] == ["secret.key"]  # no temporary file left behind
    # The next call, and the next process (a new Settings), read the same key.
    assert procure_settings.load().signing_key() == first
    assert procure_settings.Settings().signing_key() == first
    assert read_inbox_token(_inbox(key=first), first, NOW) == 44


def test_each_installation_generates_its_own_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PROCURE_HOME", str(tmp_path / "one"))
    one = procure_settings.load().signing_key()
    monkeypatch.setenv("PROCURE_HOME", str(tmp_path / "two"))
    two = procure_settings.load().signing_key()
    assert one != two
    with pytest.raises(TokenError, match="altered"):
        read_inbox_token(_inbox(key=one), two, NOW)


def test_an_existing_key_file_is_read_not_replaced(procure_home: Path) -> None:
    home = procure_home
    home.mkdir()
    (home / "secret.key").write_text(GOOD_KEY + "\n")
    assert procure_settings.load().signing_key() == GOOD_KEY.encode()
    assert (home / "secret.key").read_text() == GOOD_KEY + "\n"


def test_a_key_from_the_environment_wins_over_the_file(
    monkeypatch: pytest.MonkeyPatch, procure_home: Path
) -> None:
    procure_settings.load().signing_key()
    monkeypatch.setenv("PROCURE_SECRET_KEY", GOOD_KEY)
    assert procure_settings.load().signing_key() == GOOD_KEY.encode()


def test_the_key_never_appears_when_settings_are_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROCURE_SECRET_KEY", GOOD_KEY)
    loaded = procure_settings.load()
    assert loaded.signing_key() == GOOD_KEY.encode()
    for shown in (repr(loaded), str(loaded), loaded.model_dump_json(), str(loaded.model_dump())):
        assert GOOD_KEY not in shown
        assert "secret_key" in shown  # the field is there, masked


def test_a_generated_key_never_appears_when_settings_are_shown() -> None:
    loaded = procure_settings.load()
    key = loaded.signing_key().decode()
    assert key not in repr(loaded)
    assert key not in str(loaded)


# --- the base URL --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    ["ftp://x", "not a url", "procure.example.com", "https://procure example.com", "https://", ""],
)
def test_a_bad_base_url_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, bad: str
) -> None:
    monkeypatch.setenv("PROCURE_BASE_URL", bad)
    with pytest.raises(
        InputError, match=r"^PROCURE_BASE_URL: .* is not an http\(s\) URL"
    ) as caught:
        procure_settings.load()
    (problem,) = caught.value.problems
    assert problem.field == "PROCURE_BASE_URL"


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        ("https://approve.example.com/?x=1#frag", "has a query or a fragment"),
        ("https://approve.example.com/approvals#", "has a query or a fragment"),
        ("https://approve.example.com?", "has a query or a fragment"),
        ("https://:8000", "names no host"),
        ("https://approve.example.com:99999", "has a port that is not a number"),
        ("https://approve.example.com:http", "has a port that is not a number"),
        ("https://user:s3cr3t-pw@approve.example.com/p", "holds a user name or password"),
        ("https://user@approve.example.com", "holds a user name or password"),
    ],
)
def test_a_base_url_links_cannot_be_built_on_is_refused_without_echoing_credentials(
    monkeypatch: pytest.MonkeyPatch, bad: str, says: str
) -> None:
    # Links are the base URL followed by their own path: a query or a fragment would swallow
    # the path, and credentials would be mailed to everyone.
    monkeypatch.setenv("PROCURE_BASE_URL", bad)
    with pytest.raises(InputError, match=rf"^PROCURE_BASE_URL: .*{says}") as caught:
        procure_settings.load()
    assert "s3cr3t-pw" not in str(caught.value)
    if "@" in bad:
        assert "user" not in str(caught.value).split("holds")[0]


def test_a_base_url_with_a_path_and_a_port_is_kept() -> None:
    loaded = procure_settings.load(base_url="https://intranet.example.com:8443/procure/")
    assert loaded.base_url == "https://intranet.example.com:8443/procure"


def test_a_bad_base_url_given_directly_is_refused_naming_the_variable() -> None:
    with pytest.raises(InputError, match=r"^PROCURE_BASE_URL: 'ftp://x' is not an http\(s\) URL"):
        procure_settings.load(base_url="ftp://x")


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("https://procure.example.com/", "https://procure.example.com"),
        ("  http://127.0.0.1:8000  ", "http://127.0.0.1:8000"),
        ("https://example.com/procure/", "https://example.com/procure"),
    ],
)
def test_a_good_base_url_is_kept_without_its_trailing_slash(
    monkeypatch: pytest.MonkeyPatch, given: str, kept: str
) -> None:
    monkeypatch.setenv("PROCURE_BASE_URL", given)
    assert procure_settings.load().base_url == kept


def test_every_bad_setting_is_named_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROCURE_BASE_URL", "ftp://x")
    monkeypatch.setenv("PROCURE_LINK_DAYS", "0")
    with pytest.raises(InputError) as caught:
        procure_settings.load()
    assert {p.field for p in caught.value.problems} == {"PROCURE_BASE_URL", "PROCURE_LINK_DAYS"}
