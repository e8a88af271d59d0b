"""Purchasing confirms a request's open contract terms from the link in its `terms_open` email:
the terms page on a real uvicorn server, the link taken from the email the SMTP sink captured.
Reading the page changes nothing; its form confirms the ticked terms, all or none."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import httpx
from sqlmodel import Session, select

from models import tokens
from models.audit import AuditEvent
from models.org import Person
from models.requests import Request, parse_ref
from tests.e2e.conftest import Site
from tests.factories import BOB, IDA, NOW, PAUL, PETRA, decide, row_counts, status, submit

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
TERMS = ["warranty", "sla", "returns", "erasure"]


def terms_held_up(site: Site, tag: str = "terms") -> str:
    """IT and purchasing approved their parts, the terms still open: terms_open sent."""
    ref = submit(site.engine, justification=f"Nina starts on Monday ({tag}).")
    decide(site.engine, ref, IDA)
    decide(site.engine, ref, PAUL, confirm_terms=False)
    site.dispatch()
    return ref


def terms_link(site: Site, email: str = PETRA) -> str:
    (link,) = set(site.links_to(email, "t"))
    return link


def confirmed(site: Site, ref: str) -> dict[str, Any]:
    with Session(site.engine) as session:
        request = session.get(Request, parse_ref(ref))
        assert request is not None
        return dict(request.terms)


def confirmations(site: Site) -> list[AuditEvent]:
    with Session(site.engine) as session:
        return list(
            session.exec(select(AuditEvent).where(AuditEvent.action == "terms_confirmed")).all()
        )


def opened(site: Site, link: str) -> str:
    """The page's CSRF token (its cookie is in the client now)."""
    page = site.client.get(link)
    assert page.status_code == 200, page.text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf is not None
    return csrf.group(1)


def press(site: Site, link: str, body: str) -> httpx.Response:
    csrf = opened(site, link)
    return site.client.post(
        link, content=f"csrf={csrf}&{body}".encode(), headers={**site.origin, **FORM}
    )


def signed(site: Site, email: str, ref: str, expires: Any = NOW + timedelta(days=14)) -> str:
    with Session(site.engine) as session:
        person = session.exec(select(Person).where(Person.email == email)).one()
    assert person.id is not None
    token = tokens.terms_token(
        person_id=person.id,
        request_id=parse_ref(ref),
        expires=expires,
        key=site.settings.signing_key(),
    )
    return f"/t/{token}"


def test_the_terms_email_links_to_a_page_that_confirms_them_in_the_reader_s_name(
    site: Site,
) -> None:
    ref = terms_held_up(site)
    (mail,) = [m for m in site.sink.to(PETRA) if m.subject.startswith("Contract terms to confirm")]
    link = terms_link(site)
    assert f"Confirm them: {link}" in mail.part("plain").splitlines()
    assert f'href="{link}"' in mail.part("html") and "Confirm them</a>" in mail.part("html")
    assert terms_link(site, PAUL) != link  # each reader their own link
    assert not site.links_to(BOB, "t")  # the budget owner is not asked
    # Opening it (a link scanner, many times) changes nothing.
    before = row_counts(site.engine)
    page = site.client.get(link)
    assert page.status_code == 200, page.text
    assert f"<title>Contract terms of {ref} · procure</title>" in page.text
    for name, label in zip(TERMS, ("warranty", "SLA", "returns", "erasure"), strict=True):
        box = f'<input type="checkbox" name="term" value="{name}" checked>'
        assert f"{box}<strong>{label}</strong>: open" in page.text, page.text
    assert 'name="note"' in page.text and "<script" not in page.text
    cookie = page.headers["set-cookie"]
    assert "procure_csrf=" in cookie and "Path=/t/" in cookie and "SameSite=strict" in cookie
    for _ in range(3):
        assert httpx.get(link, timeout=30).status_code == 200
    assert row_counts(site.engine) == before

    # Two terms now, with a note: confirmed as Petra, audited in her name.
    answer = press(site, link, "term=warranty&term=sla&note=3+years+NBD")
    assert answer.status_code == 200, answer.text
    assert "Confirmed warranty, SLA for" in answer.text
    assert "Still open: returns, erasure. The same link confirms them" in answer.text
    terms = confirmed(site, ref)
    assert sorted(terms) == ["sla", "warranty"]
    assert terms["sla"]["by"] == PETRA and terms["sla"]["note"] == "3 years NBD"
    assert [(e.actor, e.details["terms"]) for e in confirmations(site)] == [
        (PETRA, ["warranty", "sla"])
    ]
    # The page now shows them confirmed, by whom, with boxes for the rest only.
    page = site.client.get(link)
    assert "<strong>SLA</strong>: confirmed by <bdi>Petra" in page.text
    assert "3 years NBD" in page.text and 'value="sla"' not in page.text
    assert '<input type="checkbox" name="term" value="returns" checked>' in page.text
    # The rest: the checklist is complete, the final approval may go ahead.
    answer = press(site, link, "term=returns&term=erasure")
    assert answer.status_code == 200, answer.text
    assert "The checklist is complete: the final approval may go ahead." in answer.text
    assert sorted(confirmed(site, ref)) == sorted(TERMS)
    assert decide(site.engine, ref, BOB).request_status == "approved"
    # Pressed again: nothing changed, said so (409).
    before = row_counts(site.engine)
    csrf = site.client.cookies["procure_csrf"]
    again = site.client.post(
        link, content=f"csrf={csrf}&term=returns".encode(), headers={**site.origin, **FORM}
    )
    assert again.status_code == 409, again.text
    assert row_counts(site.engine) == before


def test_terms_already_confirmed_elsewhere_change_nothing(site: Site) -> None:
    ref = terms_held_up(site, "confirmed elsewhere")
    link = terms_link(site)
    csrf = opened(site, link)
    press(site, terms_link(site, PAUL), "term=warranty")  # Paul, in another browser tab
    site.client.cookies.set("procure_csrf", csrf, path="/t/")
    answer = site.client.post(
        link,
        content=f"csrf={csrf}&term=warranty&term=sla".encode(),
        headers={**site.origin, **FORM},
    )
    assert answer.status_code == 200, answer.text
    assert "Confirmed SLA for" in answer.text and "warranty was confirmed before" in answer.text
    terms = confirmed(site, ref)
    assert (terms["warranty"]["by"], terms["sla"]["by"]) == (PAUL, PETRA)


def test_someone_who_may_not_confirm_them_is_told_why_and_nothing_is_written(
    site: Site,
) -> None:
    ref = terms_held_up(site, "not IT's")
    link = signed(site, IDA, ref)  # a link signed for IT: the rules refuse it all the same
    before = row_counts(site.engine)
    page = site.client.get(link)
    assert page.status_code == 403 and "<form" not in page.text
    assert f"{IDA} cannot confirm contract terms: needs the role purchasing" in page.text
    csrf = opened(site, terms_link(site))
    pressed = site.client.post(
        link, content=f"csrf={csrf}&term=warranty".encode(), headers={**site.origin, **FORM}
    )
    assert pressed.status_code == 403, pressed.text
    assert "needs the role purchasing" in pressed.text and "Nothing was changed" in pressed.text
    assert row_counts(site.engine) == before and confirmed(site, ref) == {}


def test_forged_and_expired_links_are_refused(site: Site) -> None:
    ref = terms_held_up(site, "forged")
    link = terms_link(site)
    token = link.rsplit("/", 1)[1]
    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    before = row_counts(site.engine)
    forged = site.client.get(f"/t/{tampered}")
    assert forged.status_code == 400 and "altered" in forged.text
    expired_link = signed(site, PETRA, ref, NOW - timedelta(seconds=1))
    expired = site.client.get(expired_link)
    assert expired.status_code == 410 and "expired" in expired.text
    # A receipt link's token under /t/: not a terms link.
    receipt = tokens.receipt_token(
        person_id=1,
        request_id=parse_ref(ref),
        expires=NOW + timedelta(days=1),
        key=site.settings.signing_key(),
    )
    assert site.client.get(f"/t/{receipt}").status_code == 400
    csrf = opened(site, link)
    for url, code in ((f"/t/{tampered}", 400), (expired_link, 410)):
        pressed = site.client.post(
            url, content=f"csrf={csrf}&term=warranty".encode(), headers={**site.origin, **FORM}
        )
        assert pressed.status_code == code, pressed.text
    assert row_counts(site.engine) == before and confirmed(site, ref) == {}


def test_csrf_refused_and_bad_forms_write_nothing(site: Site) -> None:
    ref = terms_held_up(site, "bad forms")
    link = terms_link(site)
    before = row_counts(site.engine)
    body = {"csrf": "abc", "term": "warranty"}
    site.client.cookies.clear()
    assert site.client.post(link, data=body).status_code == 403  # no cookie
    refused = site.client.post(
        link, data=body, headers={"Cookie": "procure_csrf=abc", "Origin": "https://evil.example"}
    )
    assert refused.status_code == 403 and "Please confirm from the page" in refused.text
    for form, problem in (
        ("term=warranty&term=pricing", "term: pricing is not a contract term"),
        ("term=warranty&confirm=all", "confirm: is not a field of this form"),
        ("term=sla&term=sla", "term: sla sent twice"),
    ):
        answer = press(site, link, form)
        assert answer.status_code == 400 and problem in answer.text, (form, answer.text)
        assert "Nothing was changed" in answer.text
    nothing = press(site, link, "note=agreed")
    assert nothing.status_code == 400 and "tick the contract terms you confirm" in nothing.text
    assert 'value="agreed"' in nothing.text  # the form again, the note kept
    assert row_counts(site.engine) == before and confirmed(site, ref) == {}
    assert status(site.engine, ref) == "in_review"
