"""A new hire confirms receipt of their devices from the link in their rollout email: the
receipt page on a real uvicorn server, the link taken from the email the SMTP sink captured.
Reading the page changes nothing; its form confirms the ticked devices, all or none, once."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import httpx
from sqlmodel import Session, select

from models import actions, tokens
from models.assets import Asset, Assignment, SerialIn
from models.audit import AuditEvent
from models.db import transaction
from models.org import Person
from models.requests import parse_ref
from tests.e2e.conftest import Site
from tests.factories import (
    IDA,
    NINA,
    NOW,
    PAUL,
    RITA,
    approve_all,
    load_org_data,
    row_counts,
    submit,
)

LAPTOP, DOCK = "SN-K-LAPTOP", "SN-K-DOCK"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def rolled_out(site: Site, *, to_rita: tuple[str, ...] = (), tag: str = "receipt") -> str:
    """Nina's laptop and dock ordered, delivered and handed out (a device of `to_rita` to Rita
    instead); the rollout's emails sent."""
    ref = submit(
        site.engine,
        justification=f"Nina starts on Monday ({tag}).",
        lines=[{"sku": "LAPTOP-STD-14", "quantity": 1}, {"sku": "DOCK-USB4", "quantity": 1}],
    )
    approve_all(site.engine, ref)
    with transaction(site.engine) as session:
        actions.place_order(session, ref=ref, actor_email=PAUL, now=NOW)
    with transaction(site.engine) as session:
        units = [SerialIn(LAPTOP, "LAPTOP-STD-14"), SerialIn(DOCK, "DOCK-USB4")]
        actions.deliver(session, ref=ref, units=units, actor_email=IDA, now=NOW)
    with transaction(site.engine) as session:
        assignments = [Assignment(s, RITA if s in to_rita else NINA) for s in (LAPTOP, DOCK)]
        actions.roll_out(session, ref=ref, assignments=assignments, actor_email=IDA, now=NOW)
    site.dispatch()
    return ref


def receipt_link(site: Site, email: str = NINA) -> str:
    (link,) = site.links_to(email, "k")
    return link


def acknowledged(site: Site) -> dict[str, Any]:
    with Session(site.engine) as session:
        return {a.serial: a.acknowledged_at for a in session.exec(select(Asset)).all()}


def acknowledgements(site: Site) -> list[AuditEvent]:
    with Session(site.engine) as session:
        return list(session.exec(select(AuditEvent).where(AuditEvent.action == "acknowledge")))


def opened(site: Site, link: str) -> str:
    """The page's CSRF token (its cookie is in the client now)."""
    page = site.client.get(link)
    assert page.status_code == 200, page.text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf is not None
    return csrf.group(1)


def press(site: Site, link: str, body: str) -> httpx.Response:
    """The form's button, with this body (urlencoded) after the page's CSRF field."""
    csrf = opened(site, link)
    return site.client.post(
        link, content=f"csrf={csrf}&{body}".encode(), headers={**site.origin, **FORM}
    )


def test_the_rollout_email_links_to_a_page_of_the_devices_that_changes_nothing(
    site: Site,
) -> None:
    ref = rolled_out(site)
    (mail,) = [m for m in site.sink.to(NINA) if m.subject == f"Your 2 devices of {ref} are ready"]
    text = mail.part("plain")
    link = receipt_link(site)
    assert f"Confirm you received them: {link}" in text.splitlines()
    assert f'href="{link}"' in mail.part("html") and "Confirm you received them</a>" in mail.part(
        "html"
    )
    # Only Nina's own message carries it: the requester's and HR's rollout news do not.
    assert not site.links_to(RITA, "k") and not site.links_to("hr@example.com", "k")
    before = row_counts(site.engine)
    page = site.client.get(link)
    assert page.status_code == 200, page.text
    html = page.text
    assert f"<title>Your devices of {ref} · procure</title>" in html
    assert f"Nina Newhire, IT handed 2 devices of {ref} to you." in html
    for serial, sku, name in (
        (LAPTOP, "LAPTOP-STD-14", "Standard laptop 14&#34;"),
        (DOCK, "DOCK-USB4", "USB4 docking station"),
    ):
        box = f'<input type="checkbox" name="device" value="{serial}" checked>'
        assert f'{box}<strong>{serial}</strong> · {sku} <span dir="auto">({name})</span>' in html
    assert "<legend>Waiting for your confirmation</legend>" in html
    assert '<button type="submit">I have received these devices</button>' in html
    assert "<script" not in html
    headers = page.headers
    assert headers["referrer-policy"] == "same-origin" and headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["cache-control"] == "no-store"
    cookie = headers["set-cookie"]
    assert "procure_csrf=" in cookie and "Path=/k/" in cookie and "SameSite=strict" in cookie
    assert "HttpOnly" in cookie
    # A link scanner fetches it again and again: nothing is confirmed or written.
    scanner = httpx.Client(timeout=30)
    for _ in range(3):
        assert scanner.get(link).status_code == 200
        scanner.head(link)
    assert row_counts(site.engine) == before
    assert acknowledged(site) == {LAPTOP: None, DOCK: None}


def test_confirming_from_the_page_acknowledges_the_devices_as_the_person_once(
    site: Site,
) -> None:
    ref = rolled_out(site)
    link = receipt_link(site)
    answer = press(site, link, f"device={LAPTOP}&device={DOCK}")
    assert answer.status_code == 200, answer.text
    assert f"<title>Received: {ref} · procure</title>" in answer.text
    assert "Thank you, Nina Newhire" in answer.text
    assert f"You confirmed that you received 2 devices of {ref}:" in answer.text
    # When, in the organisation's time zone (NOW is 09:00 UTC), as the other pages show times.
    said = "confirmed on Wed 25 Nov 2026, 10:00 CET"
    assert f"<strong>{LAPTOP}</strong> · LAPTOP-STD-14" in answer.text
    assert answer.text.count(said) == 2, answer.text
    assert "Still waiting" not in answer.text
    assert acknowledged(site) == {LAPTOP: NOW, DOCK: NOW}
    rows = acknowledgements(site)
    assert sorted((r.entity, r.entity_id, r.actor, r.request_id) for r in rows) == [
        ("asset", DOCK, NINA, parse_ref(ref)),
        ("asset", LAPTOP, NINA, parse_ref(ref)),
    ]
    # Pressed again (the back button, another tab): 409, saying when, and nothing written.
    before = row_counts(site.engine)
    again = site.client.post(
        link,
        content=f"csrf={site.client.cookies['procure_csrf']}&device={LAPTOP}".encode(),
        headers={**site.origin, **FORM},
    )
    assert again.status_code == 409, again.text
    assert "Already confirmed" in again.text and "nothing was changed" in again.text
    assert f"<strong>{LAPTOP}</strong> · LAPTOP-STD-14" in again.text and said in again.text
    assert row_counts(site.engine) == before
    # The page now has nothing to confirm: no form, each device with its date.
    page = site.client.get(link)
    assert page.status_code == 200 and "<form" not in page.text
    assert "Nothing waits for your confirmation." in page.text
    assert page.text.count(said) == 2


def test_only_the_ticked_devices_are_confirmed_and_the_link_confirms_the_rest_later(
    site: Site,
) -> None:
    rolled_out(site)
    link = receipt_link(site)
    answer = press(site, link, f"device={DOCK}")  # the laptop is not there yet
    assert answer.status_code == 200, answer.text
    assert "You confirmed that you received 1 device of" in answer.text
    assert f"Still waiting for your confirmation: {LAPTOP}. The same link confirms it" in (
        answer.text
    )
    assert acknowledged(site) == {LAPTOP: None, DOCK: NOW}
    page = site.client.get(link).text
    assert f'name="device" value="{LAPTOP}" checked>' in page
    assert f'value="{DOCK}"' not in page  # no box for what is confirmed
    assert "Your other devices of" in page and "confirmed on Wed 25 Nov 2026, 10:00 CET" in page
    later = press(site, link, f"device={LAPTOP}")
    assert later.status_code == 200, later.text
    assert acknowledged(site) == {LAPTOP: NOW, DOCK: NOW}
    assert len(acknowledgements(site)) == 2


def test_nothing_ticked_says_so_and_writes_nothing(site: Site) -> None:
    rolled_out(site)
    link = receipt_link(site)
    before = row_counts(site.engine)
    answer = press(site, link, "")
    assert answer.status_code == 400, answer.text
    assert "Nothing confirmed yet:</strong> tick the devices you received" in answer.text
    # The form again, as sent (nothing ticked), with a fresh cookie to send it again.
    assert f'name="device" value="{LAPTOP}">' in answer.text
    assert answer.cookies.get("procure_csrf")
    assert row_counts(site.engine) == before


def test_someone_else_s_device_in_the_form_refuses_the_lot(site: Site) -> None:
    """The dock went to Rita: a form naming it (or a serial nobody has) next to Nina's laptop
    confirms neither."""
    ref = rolled_out(site, to_rita=(DOCK,))
    link = receipt_link(site)
    page = site.client.get(link).text
    assert f'value="{DOCK}"' not in page and "1 device of" in page  # only her laptop
    before = row_counts(site.engine)
    for serial in (DOCK, "SN-NOBODY-HAS"):
        answer = press(site, link, f"device={LAPTOP}&device={serial}")
        assert answer.status_code == 400, answer.text
        assert f"{serial}: not a device of {ref} handed to {NINA}" in answer.text
    assert row_counts(site.engine) == before
    assert acknowledged(site) == {LAPTOP: None, DOCK: None}
    # Rita's own link confirms her dock, not Nina's laptop.
    rita = receipt_link(site, RITA)
    assert press(site, rita, f"device={LAPTOP}").status_code == 400
    assert press(site, rita, f"device={DOCK}").status_code == 200
    assert [r.actor for r in acknowledgements(site)] == [RITA]


def test_a_device_returned_since_the_page_was_opened_refuses_the_lot(site: Site) -> None:
    rolled_out(site)
    link = receipt_link(site)
    csrf = opened(site, link)
    with transaction(site.engine) as session:
        actions.receive_return(session, serial=DOCK, actor_email=IDA, now=NOW)
    before = row_counts(site.engine)
    answer = site.client.post(
        link,
        content=f"csrf={csrf}&device={LAPTOP}&device={DOCK}".encode(),
        headers={**site.origin, **FORM},
    )
    assert answer.status_code == 409, answer.text
    assert f"{DOCK} cannot be confirmed: it was returned" in answer.text
    # The page as it is now: the laptop still to confirm, the dock no longer hers.
    assert f"<strong>{DOCK}</strong> · DOCK-USB4" in answer.text
    assert "no longer with you: it was returned" in answer.text
    assert f'name="device" value="{LAPTOP}" checked>' in answer.text
    assert row_counts(site.engine) == before
    assert acknowledged(site) == {LAPTOP: None, DOCK: None}
    # IT asks for the laptop back before she confirmed it: nothing left to confirm.
    with transaction(site.engine) as session:
        actions.request_return(session, serial=LAPTOP, actor_email=IDA, reason="Swap", now=NOW)
    page = site.client.get(link)
    assert page.status_code == 200 and "<form" not in page.text
    assert f"<strong>{LAPTOP}</strong> · LAPTOP-STD-14" in page.text
    assert "not confirmed: IT asked for it back" in page.text
    csrf = site.client.cookies["procure_csrf"]  # each page sets a fresh one
    pressed = site.client.post(
        link, content=f"csrf={csrf}&device={LAPTOP}".encode(), headers={**site.origin, **FORM}
    )
    assert pressed.status_code == 409 and "IT asked for it back" in pressed.text
    assert acknowledged(site) == {LAPTOP: None, DOCK: None}


def test_forged_expired_and_stale_links_are_refused_with_a_reason(site: Site) -> None:
    ref = rolled_out(site)
    link = receipt_link(site)
    token = link.rsplit("/", 1)[1]
    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    before = row_counts(site.engine)
    forged = site.client.get(f"/k/{tampered}")
    assert forged.status_code == 400 and "altered" in forged.text
    assert site.client.get("/k/not-a-token").status_code == 400
    key = site.settings.signing_key()
    with Session(site.engine) as session:
        nina = session.exec(select(Person).where(Person.email == NINA)).one()
    assert nina.id is not None
    request_id = parse_ref(ref)

    def signed(person_id: int, request: int, expires: Any = NOW + timedelta(days=30)) -> str:
        made = tokens.receipt_token(
            person_id=person_id, request_id=request, expires=expires, key=key
        )
        return f"/k/{made}"

    expired = site.client.get(signed(nina.id, request_id, NOW - timedelta(seconds=1)))
    assert expired.status_code == 410 and "expired" in expired.text
    # Signed for another purpose (an inbox link's token under /k/): not a receipt link.
    inbox = tokens.inbox_token(person_id=nina.id, expires=NOW + timedelta(days=1), key=key)
    assert site.client.get(f"/k/{inbox}").status_code == 400
    gone = site.client.get(signed(999_999, request_id))
    assert gone.status_code == 404 and "the person this link was sent to no longer exists" in (
        gone.text
    )
    missing = site.client.get(signed(nina.id, 999_999))
    assert missing.status_code == 404 and "no longer exists" in missing.text
    with Session(site.engine) as session:
        ida = session.exec(select(Person).where(Person.email == IDA)).one()
    assert ida.id is not None
    nothing = site.client.get(signed(ida.id, request_id))
    assert nothing.status_code == 404 and f"no device of {ref} was handed to {IDA}" in nothing.text
    # A POST with a forged or expired token, with a good CSRF pair: refused the same way.
    csrf = opened(site, link)
    for url, status in (
        (f"/k/{tampered}", 400),
        (signed(nina.id, request_id, NOW - timedelta(seconds=1)), 410),
    ):
        pressed = site.client.post(
            url, content=f"csrf={csrf}&device={LAPTOP}".encode(), headers={**site.origin, **FORM}
        )
        assert pressed.status_code == status, pressed.text
    assert row_counts(site.engine) == before


def test_a_person_no_longer_active_is_told_why_and_confirms_nothing(site: Site) -> None:
    rolled_out(site)
    link = receipt_link(site)
    csrf = opened(site, link)
    nina = {"email": NINA, "name": "Nina Newhire", "department": "Engineering"}
    load_org_data(site.engine, {"people": [{**nina, "active": False}]})
    before = row_counts(site.engine)
    page = site.client.get(link)
    assert page.status_code == 403 and "<form" not in page.text
    assert f"{NINA} is not active and cannot confirm receiving devices" in page.text
    pressed = site.client.post(
        link, content=f"csrf={csrf}&device={LAPTOP}".encode(), headers={**site.origin, **FORM}
    )
    assert pressed.status_code == 403 and "is not active" in pressed.text
    assert row_counts(site.engine) == before


def test_a_post_without_the_page_s_csrf_token_or_from_elsewhere_is_refused(site: Site) -> None:
    rolled_out(site)
    link = receipt_link(site)
    body = {"csrf": "abc", "device": LAPTOP}
    before = row_counts(site.engine)
    site.client.cookies.clear()
    assert site.client.post(link, data=body).status_code == 403  # no cookie
    for headers in (
        {"Cookie": "procure_csrf=xyz"},  # not the form's copy
        {"Cookie": "procure_csrf=abc", "Origin": "https://evil.example.com"},
        {"Cookie": "procure_csrf=abc", "Origin": "null"},
    ):
        refused = site.client.post(link, data=body, headers=headers)
        assert refused.status_code == 403, (headers, refused.text)
        assert "Please confirm from the page" in refused.text
        assert "this form did not come from procure&#39;s receipt page" in refused.text
    assert row_counts(site.engine) == before
    assert acknowledged(site) == {LAPTOP: None, DOCK: None}


def test_a_forged_form_is_refused_not_half_understood(site: Site) -> None:
    rolled_out(site)
    link = receipt_link(site)
    before = row_counts(site.engine)
    for body, problem in (
        (f"device={LAPTOP}&device={LAPTOP}", f"device: {LAPTOP} sent twice"),
        ("device=%FF%FE", "device: is not UTF-8 text"),
        (f"device={LAPTOP}&confirm=all", "confirm: is not a field of this form"),
    ):
        answer = press(site, link, body)
        assert answer.status_code == 400 and problem in answer.text, (body, answer.text)
        assert "Nothing was changed" in answer.text
    csrf = opened(site, link)
    twice = site.client.post(
        link,
        content=f"csrf={csrf}&csrf={csrf}&device={LAPTOP}".encode(),
        headers={**site.origin, **FORM},
    )
    assert twice.status_code == 400 and "csrf: sent 2 times" in twice.text
    assert row_counts(site.engine) == before
