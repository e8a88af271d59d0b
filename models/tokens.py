"""Signed links: an approval link carries a token bound to one request, stage, round and person;
a view link one request and an audience; an inbox link one person; a receipt link one person
and one request (the devices handed to them); a terms link one person and one request (its
contract terms to confirm).

HMAC-SHA256 from the standard library over a small JSON payload, base64url-encoded. The key
comes from settings (never from the repository); the token expires; its nonce lets the web
app consume it once (in the same transaction as the decision it carries).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from models.errors import ProcureError


class TokenError(ProcureError):
    """A link that cannot be used: the reason says why (for the page that shows it)."""


@dataclass(frozen=True)
class ApprovalToken:
    """What an approval link grants."""

    request_id: int
    stage_id: int
    round: int
    person_id: int  # the addressee: the approver, or a delegate acting for one
    expires: int  # Unix time
    nonce: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(payload: dict[str, Any], key: bytes, purpose: str) -> str:
    """payload.signature, with the purpose mixed into the MAC (a token of one kind is no other)."""
    body = _b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
    mac = hmac.new(key, f"{purpose}.{body}".encode(), hashlib.sha256).digest()
    return f"{body}.{_b64(mac)}"


def _int(value: Any) -> int:
    """A whole number a database column holds (64 bits); ValueError for any other (a number
    beyond a float, 1e400, parses as infinity, which int() refuses with OverflowError)."""
    try:
        number = int(value)
    except OverflowError:
        raise ValueError(f"{value} is out of range") from None
    if not -(2**63) <= number < 2**63:
        raise ValueError(f"{number} is out of range")
    return number


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a value a link carries")


def unsign(token: str, key: bytes, purpose: str) -> dict[str, Any]:
    """The payload of a token this key signed for this purpose; TokenError otherwise."""
    if (
        not isinstance(token, str)
        or token.count(".") != 1
        or len(token) > 1000
        or not token.isascii()
    ):
        raise TokenError("this link is not a procure link (it is malformed)")
    body, signature = token.split(".")
    expected = hmac.new(key, f"{purpose}.{body}".encode(), hashlib.sha256).digest()
    # Compared as text: a token has exactly one spelling (no padding, no other alphabet, no
    # variant of the last character's unused bits), so a token string can be used as a key.
    if not hmac.compare_digest(_b64(expected), signature):
        raise TokenError("this link has been altered: it does not carry procure's signature")
    try:
        payload = json.loads(_unb64(body), parse_constant=_no_constant)
    except (ValueError, TypeError):
        raise TokenError("this link is not a procure link (it is malformed)") from None
    if not isinstance(payload, dict):
        raise TokenError("this link is not a procure link (it is malformed)")
    return payload


def approval_token(
    *, request_id: int, stage_id: int, round: int, person_id: int, expires: datetime, key: bytes
) -> str:
    payload = {
        "r": request_id,
        "s": stage_id,
        "n": round,
        "p": person_id,
        "e": int(expires.timestamp()),
        "k": secrets.token_hex(8),
    }
    return sign(payload, key, "approval")


def read_approval_token(token: str, key: bytes, now: datetime) -> ApprovalToken:
    """The grant of an approval link; TokenError if it was altered or has expired."""
    payload = unsign(token, key, "approval")
    try:
        grant = ApprovalToken(
            _int(payload["r"]),
            _int(payload["s"]),
            _int(payload["n"]),
            _int(payload["p"]),
            _int(payload["e"]),
            str(payload["k"]),
        )
    except (KeyError, TypeError, ValueError):
        raise TokenError("this link is not a procure approval link") from None
    if now.timestamp() > grant.expires:
        raise TokenError("this link has expired: open the request from your inbox instead")
    return grant


@dataclass(frozen=True)
class ViewToken:
    """What a "view this request" link grants: reading one request, for one audience."""

    request_id: int
    audience: str  # "person:dana@example.com" or "team:it"
    expires: int


def view_token(*, request_id: int, audience: str, expires: datetime, key: bytes) -> str:
    return sign({"r": request_id, "a": audience, "e": int(expires.timestamp())}, key, "view")


def read_view_token(token: str, key: bytes, now: datetime) -> ViewToken:
    payload = unsign(token, key, "view")
    try:
        grant = ViewToken(_int(payload["r"]), str(payload["a"]), _int(payload["e"]))
    except (KeyError, TypeError, ValueError):
        raise TokenError("this link is not a procure request link") from None
    if now.timestamp() > grant.expires:
        raise TokenError("this link has expired: open the request from your inbox instead")
    return grant


def inbox_token(*, person_id: int, expires: datetime, key: bytes) -> str:
    return sign({"p": person_id, "e": int(expires.timestamp())}, key, "inbox")


def read_inbox_token(token: str, key: bytes, now: datetime) -> int:
    """The person whose inbox this link opens."""
    payload = unsign(token, key, "inbox")
    try:
        person_id, expires = _int(payload["p"]), _int(payload["e"])
    except (KeyError, TypeError, ValueError):
        raise TokenError("this link is not a procure inbox link") from None
    if now.timestamp() > expires:
        raise TokenError("this link has expired: ask procure for a new one")
    return person_id


@dataclass(frozen=True)
class ReceiptToken:
    """What a receipt link grants: one person confirming the devices of one request handed to
    them. No nonce: confirming is idempotent, and the link works until every device is confirmed
    (a person may pick up a laptop today and its dock next week)."""

    person_id: int
    request_id: int
    expires: int


def receipt_token(*, person_id: int, request_id: int, expires: datetime, key: bytes) -> str:
    return sign({"p": person_id, "r": request_id, "e": int(expires.timestamp())}, key, "receipt")


def read_receipt_token(token: str, key: bytes, now: datetime) -> ReceiptToken:
    """The grant of a receipt link; TokenError if it was altered, is malformed or has expired."""
    payload = unsign(token, key, "receipt")
    try:
        grant = ReceiptToken(_int(payload["p"]), _int(payload["r"]), _int(payload["e"]))
    except (KeyError, TypeError, ValueError):
        raise TokenError("this link is not a procure receipt link") from None
    if now.timestamp() > grant.expires:
        raise TokenError("this link has expired: ask IT to record that you received your devices")
    return grant


@dataclass(frozen=True)
class TermsToken:
    """What a terms link grants: one person confirming the open contract terms of one request,
    as the rules let them (purchasing, a delegate, the escalation role). No nonce: confirming a
    term twice changes nothing, and the terms may be confirmed one by one."""

    person_id: int
    request_id: int
    expires: int


def terms_token(*, person_id: int, request_id: int, expires: datetime, key: bytes) -> str:
    return sign({"p": person_id, "r": request_id, "e": int(expires.timestamp())}, key, "terms")


def read_terms_token(token: str, key: bytes, now: datetime) -> TermsToken:
    """The grant of a terms link; TokenError if it was altered, is malformed or has expired."""
    payload = unsign(token, key, "terms")
    try:
        grant = TermsToken(_int(payload["p"]), _int(payload["r"]), _int(payload["e"]))
    except (KeyError, TypeError, ValueError):
        raise TokenError("this link is not a procure contract-terms link") from None
    if now.timestamp() > grant.expires:
        raise TokenError(
            "this link has expired: confirm the terms from your inbox or with procure terms"
        )
    return grant
