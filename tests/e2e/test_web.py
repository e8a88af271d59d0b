"""The approval web app on a real uvicorn server on loopback, with the real SMTP sink: links
from captured emails, link scanners, forged and reused links, CSRF, races, the JSON API."""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from sqlmodel import Session, func, select

from models import actions, tokens
from models.links import UsedLink
from models.outbox import Notification
from models.requests import Stage
from tests.e2e.conftest import API_TOKEN, Site, wait_for
from tests.factories import (
    BOB,
    FIONA,
    IDA,
    IVAN,
    MAX,
    NOW,
    PAUL,
    PETRA,
    RITA,
    SARA,
    decide,
    load_org_data,
    submit,
)

# ------------------------------------------------------------------ pages


def test_an_approval_link_shows_the_decision_and_changes_nothing(site: Site) -> None:
    ref = submit(site.engine)
    site.dispatch()
    link = site.approval_link(PAUL)
    page = site.client.get(link + "?decision=approve")
    assert page.status_code == 200
    html = page.text
    assert f"Joint review (IT and purchasing): {ref}" in html
    assert 'value="approve" required checked' in html
    for piece in (
        "Lines",
        "Buy, lease or Device-as-a-Service",
        "residual",  # what buying's total subtracts, shown under CAPEX and OPEX
        "Cost of involving purchasing late",
    ):
        assert piece in html
    assert "I confirm the contract terms still open" in html  # Paul is purchasing
    # IT decides the same stage, but only purchasing confirms terms: no box for Ida.
    it_page = site.client.get(site.approval_link(IDA)).text
    assert "Joint review" in it_page and "I confirm the contract terms" not in it_page
    assert page.cookies.get("procure_csrf")
    headers = page.headers
    assert headers["referrer-policy"] == "same-origin"
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY" and headers["cache-control"] == "no-store"
    assert site.decisions() == 0


def test_approving_from_the_page_decides_once_and_tells_the_next_approver(site: Site) -> None:
    ref = submit(site.engine)
    site.dispatch()
    before = len(site.sink.received)
    answer = site.form(site.approval_link(IDA), "approve", comment="Fine by IT")
    assert answer.status_code == 200, answer.text
    # IT's part of the joint review: recorded, but neither the stage nor the request is approved.
    assert f"<title>Your approval is recorded: {ref} · procure</title>" in answer.text
    assert "Thank you: your approval is recorded" in answer.text
    assert "Joint review (IT and purchasing): <strong>approve</strong>" in answer.text
    assert (
        "Joint review (IT and purchasing) is not approved yet: it still waits for purchasing."
    ) in answer.text, answer.text
    assert "Approved:" not in answer.text and "approved yet" in answer.text
    assert site.decisions() == 1
    purchasing = site.form(site.approval_link(PAUL), "approve", confirm_terms="yes")
    assert purchasing.status_code == 200, purchasing.text
    # The joint review is done: the budget owner's approval request is sent at once.
    assert wait_for(
        lambda: any(
            "Your decision" in m.subject
            for m in site.sink.received[before:]
            if m.recipients != (IDA,) and m.recipients != (PAUL,)
        )
    )
    again = site.client.post(
        site.approval_link(IDA),
        data={"csrf": "x", "decision": "approve"},
        headers={**site.origin, "Cookie": "procure_csrf=x"},
    )
    assert again.status_code == 409 and "already used" in again.text
    # When, in the organisation's time zone as everywhere else (the site's clock: NOW).
    assert "already used: approve on 25 Nov 2026 at 10:00 CET" in again.text, again.text
    assert site.decisions() == 2


def test_the_confirmation_says_the_next_approvers_are_told_where_notices_go_out(
    site: Site,
) -> None:
    """Routes set up: the site sends the decision's notices at once, and says so."""
    submit(site.engine, justification="Told now.")
    site.dispatch()
    answer = site.form(site.approval_link(IDA), "approve")
    assert answer.status_code == 200, answer.text
    assert "Waiting for: Joint review (IT and purchasing). They are being told now." in answer.text
    assert "queued" not in answer.text


@pytest.mark.parametrize("site", ["no routes"], indirect=True)
def test_the_confirmation_says_the_notices_are_queued_without_routes(site: Site) -> None:
    """PROCURE_APPRISE_CONFIG unset: nobody is told (the notices wait in the queue), and the page
    said 'They have been told.'"""
    ref = submit(site.engine, justification="Nothing sent.")
    answer = site.form(site.signed_approval_link(ref, "joint_review", IDA), "approve")
    assert answer.status_code == 200, answer.text
    assert (
        "Waiting for: Joint review (IT and purchasing). Their notifications are queued, not "
        "sent: no notification routes are set up here (PROCURE_APPRISE_CONFIG)."
    ) in answer.text
    assert "been told" not in answer.text and "being told" not in answer.text
    with Session(site.engine) as session:
        statuses = set(session.exec(select(Notification.status)).all())
    assert statuses == {"pending"} and not site.sink.received  # nothing went anywhere


def test_a_link_whose_part_was_decided_elsewhere_says_who_decided_and_when(site: Site) -> None:
    """Ida approves IT's part of the joint review from the command line: Ivan's link (IT too)
    and Ida's own now say so on opening, by name and time, with no form; opening them and
    pressing a forged button change nothing. Paul's part (purchasing) still has its form."""
    ref = submit(site.engine)
    site.dispatch()
    ivan, ida = site.approval_link(IVAN), site.approval_link(IDA)
    decide(site.engine, ref, IDA, comment="Fine by IT")
    page = site.client.get(ivan)
    assert page.status_code == 409, page.text
    assert "Nothing to decide here" in page.text and "<form" not in page.text
    assert (
        f"Joint review (IT and purchasing) of {ref} has moved on since this link was sent: "
        "the IT part was already decided by Ida Infrastructure (approve on 25 Nov 2026 at "
        "10:00 CET)"
    ) in page.text, page.text
    own = site.client.get(ida)
    assert own.status_code == 409 and "<form" not in own.text
    assert (
        f"you already decided Joint review (IT and purchasing) of {ref}: approve on "
        "25 Nov 2026 at 10:00 CET; a decision cannot be changed"
    ) in own.text, own.text
    for link, outcome in ((ivan, "reject"), (ida, "approve")):
        pressed = site.client.post(
            link,
            data={"csrf": "x", "decision": outcome, "comment": "No"},
            headers={**site.origin, "Cookie": "procure_csrf=x"},
        )
        assert pressed.status_code == 409 and "already decided" in pressed.text, pressed.text
    assert site.decisions() == 1
    with Session(site.engine) as session:
        assert session.exec(select(func.count()).select_from(UsedLink)).one() == 0
    assert "<form" in site.client.get(site.approval_link(PAUL)).text


def test_a_link_its_addressee_may_no_longer_use_says_why_on_opening(site: Site) -> None:
    """Ivan left after his email went out: his link says so when he opens it (403, no form),
    not after he has chosen and pressed the button; nothing is written either way."""
    submit(site.engine)
    site.dispatch()
    link = site.approval_link(IVAN)
    ivan = {"email": IVAN, "name": "Ivan Install", "department": "IT", "roles": ["it"]}
    load_org_data(site.engine, {"people": [{**ivan, "active": False}]})
    page = site.client.get(link)
    assert page.status_code == 403, page.text
    assert "Not yours to decide now" in page.text and "<form" not in page.text
    assert f"{IVAN} is not active and cannot decide" in page.text
    pressed = site.client.post(
        link,
        data={"csrf": "x", "decision": "approve"},
        headers={**site.origin, "Cookie": "procure_csrf=x"},
    )
    assert pressed.status_code == 403 and "is not active" in pressed.text, pressed.text
    assert site.decisions() == 0
    assert "<form" in site.client.get(site.approval_link(IDA)).text  # Ida still may


def test_finance_decides_from_its_email_a_budget_its_owner_asked_for(site: Site) -> None:
    """Bob asks from the budget he owns: nobody may give the budget owner's approval, so it is
    escalated to finance at once. Finance's team hears of it, and Fiona decides it from the
    link in her own email, as any approver; Sara's API call is refused."""
    ref = submit(site.engine, requester=BOB)
    decide(site.engine, ref, IDA)
    decide(site.engine, ref, PAUL)
    site.dispatch()
    (team,) = [m for m in site.sink.to("finance@example.com") if ref in m.subject]
    assert "Escalated to you" in team.subject
    assert "nobody approves their own request" in team.part("plain")
    (mail,) = [m for m in site.sink.to(FIONA) if "Your decision" in m.subject]
    assert "You are asked as finance, the stage's escalation, because nobody may decide" in (
        " ".join(mail.part("plain").split())
    )
    (inbox, *_) = site.links_to(FIONA, "inbox")
    listed = site.client.get(inbox).text
    assert f"escalated to you as finance: nobody may decide budget_owner ({BOB}" in listed
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    refused = site.client.post(
        f"/api/requests/{ref}/decisions",
        json={"approver": SARA, "decision": "approve"},
        headers=auth,
    )
    assert refused.status_code == 403 and "finance in place of budget_owner" in refused.text
    answer = site.form(site.approval_link(FIONA), "approve", comment="Checked by finance")
    assert answer.status_code == 200 and "Thank you: approved" in answer.text, answer.text
    assert f"<title>Approved: {ref} · procure</title>" in answer.text
    assert "The request's status is now <strong>approved</strong>." in answer.text


def test_management_deciding_purchasing_s_part_confirms_the_terms_from_its_page(
    site: Site,
) -> None:
    """Paul asks for Petra's laptop: nobody in purchasing may decide its part of the joint
    review, so management does at once, and the contract terms come with it: its team hears
    so, Max's page has the box, and his approval settles them for the budget owner."""
    ref = submit(site.engine, requester=PAUL, on_behalf_of=PETRA)
    decide(site.engine, ref, IDA)
    site.dispatch()
    (team,) = [m for m in site.sink.to("management@example.com") if ref in m.subject]
    told = " ".join(team.part("plain").split())
    assert "Purchasing's part includes the contract terms still open (warranty, SLA" in told
    (mail,) = [m for m in site.sink.to(MAX) if "Your decision" in m.subject]
    assert "still to confirm by management in place of purchasing, as nobody may decide" in (
        " ".join(mail.part("plain").split())
    )
    link = site.approval_link(MAX)
    assert "I confirm the contract terms still open" in site.client.get(link).text
    answer = site.form(link, "approve", confirm_terms="yes")
    assert answer.status_code == 200, answer.text
    assert "Thank you: your approval is recorded" in answer.text and "as management" in answer.text
    assert "not approved yet" not in answer.text  # the joint review is done; Bob's stage waits
    assert decide(site.engine, ref, BOB).request_status == "approved"


def test_a_refused_approval_comes_back_with_the_form_to_send_back_instead(site: Site) -> None:
    """The budget owner's final approval meets contract terms purchasing left open: the page
    says why and keeps the form, and the same link sends the request back."""
    ref = submit(
        site.engine,
        justification="terms left open",
        lines=[
            {
                "sku": "MON-27",
                "quantity": 1,
                "sourcing": "individual",
                "sourcing_justification": "A dealer round the corner.",
            }
        ],
    )
    decide(site.engine, ref, IDA)
    decide(site.engine, ref, PAUL, confirm_terms=False)
    site.dispatch()
    link = site.approval_link(BOB)
    refused = site.form(link, "approve", comment="Fine by me")
    assert refused.status_code == 403, refused.text
    assert "Not decided yet:" in refused.text and "terms" in refused.text
    assert 'value="approve" required checked' in refused.text and "Fine by me" in refused.text
    back = site.form(link, "send_back", comment="Purchasing: please confirm the terms.")
    assert back.status_code == 200 and "Thank you: sent back" in back.text, back.text[-2000:]
    assert f"<title>Sent back: {ref} · procure</title>" in back.text
    assert "The request's status is now <strong>changes requested</strong>." in back.text


def test_sending_back_from_the_page_reaches_the_requester_with_the_comment(site: Site) -> None:
    ref = submit(site.engine)
    site.dispatch()
    answer = site.form(
        site.approval_link(PAUL), "send_back", comment="Please add a dock <b>now</b>"
    )
    assert answer.status_code == 200, answer.text
    assert "changes requested" in answer.text
    assert "<b>now</b>" not in answer.text  # escaped
    assert wait_for(lambda: any(f"{ref} sent back to you" in m.subject for m in site.sink.to(RITA)))
    (mail,) = [m for m in site.sink.to(RITA) if "sent back" in m.subject]
    assert "Please add a dock <b>now</b>" in mail.part("plain")


def test_rejecting_from_the_page_says_rejected(site: Site) -> None:
    ref = submit(site.engine)
    site.dispatch()
    answer = site.form(site.approval_link(IDA), "reject", comment="Not this model.")
    assert answer.status_code == 200, answer.text
    assert f"<title>Rejected: {ref} · procure</title>" in answer.text
    assert "Thank you: rejected" in answer.text and "Rejectd" not in answer.text
    assert "The request's status is now <strong>rejected</strong>." in answer.text


def test_sending_back_without_a_comment_shows_the_form_again_with_the_reason(site: Site) -> None:
    ref = submit(site.engine)
    site.dispatch()
    link = site.approval_link(PAUL)
    answer = site.form(link, "send_back", comment="  ")
    assert answer.status_code == 400, answer.text
    html = answer.text
    assert f"Joint review (IT and purchasing): {ref}" in html
    assert "Not decided yet:" in html
    assert "comment: is needed to send a request back: say what the requester should change" in html
    assert 'value="send_back" required checked' in html
    assert 'aria-invalid="true"' in html
    assert answer.cookies.get("procure_csrf")  # a fresh form: it can be sent again
    assert site.decisions() == 0
    with Session(site.engine) as session:
        assert session.exec(select(func.count()).select_from(UsedLink)).one() == 0
    # The same link still works, from the form shown again.
    csrf = re.search(r'name="csrf" value="([^"]+)"', html)
    assert csrf is not None
    sent = site.client.post(
        link,
        data={"csrf": csrf.group(1), "decision": "send_back", "comment": "Add a dock."},
        headers=site.origin,
    )
    assert sent.status_code == 200, sent.text
    assert "changes requested" in sent.text
    assert site.decisions() == 1


def test_a_refused_form_keeps_the_contract_terms_box_as_it_was(site: Site) -> None:
    """Paul ticks the contract terms and Reject, but writes no reason: the form comes back
    with the box still ticked (and unticked when it was)."""
    submit(site.engine)
    site.dispatch()
    link = site.approval_link(PAUL)
    ticked = site.form(link, "reject", confirm_terms="yes", comment="")
    assert ticked.status_code == 400, ticked.text
    assert 'value="reject" required checked' in ticked.text
    assert 'name="confirm_terms" value="yes" checked>' in ticked.text
    unticked = site.form(link, "send_back", comment="")
    assert unticked.status_code == 400, unticked.text
    assert 'name="confirm_terms" value="yes">' in unticked.text
    assert site.decisions() == 0


def test_a_refused_comment_comes_back_escaped_in_the_form(site: Site) -> None:
    submit(site.engine)
    site.dispatch()
    typed = "=</textarea><script>alert(1)</script>"
    answer = site.form(site.approval_link(IDA), "approve", comment=typed)
    assert answer.status_code == 400, answer.text
    assert "comment: starts with &#39;=&#39;" in answer.text  # the reason, escaped too
    assert "<script>alert(1)</script>" not in answer.text
    assert "=&lt;/textarea&gt;&lt;script&gt;alert(1)&lt;/script&gt;</textarea>" in answer.text
    assert 'value="approve" required checked' in answer.text
    assert site.decisions() == 0


def test_a_comment_that_is_not_utf8_is_refused_by_name_and_nothing_is_written(
    site: Site,
) -> None:
    submit(site.engine)
    site.dispatch()
    link = site.approval_link(IDA)
    site.client.get(link)  # the page's cookie
    csrf = site.client.cookies["procure_csrf"]
    for body in (
        f"csrf={csrf}&decision=reject&comment=%FF%FEbad".encode(),
        f"csrf={csrf}&decision=reject&comment=".encode() + b"\xff\xfebad",  # raw bytes too
    ):
        answer = site.client.post(
            link,
            content=body,
            headers={**site.origin, "Content-Type": "application/x-www-form-urlencoded"},
        )
        assert answer.status_code == 400, answer.text
        assert "comment: is not UTF-8 text" in answer.text and "Nothing was changed" in answer.text
    assert site.decisions() == 0
    with Session(site.engine) as session:
        assert session.exec(select(func.count()).select_from(UsedLink)).one() == 0
    # Text in any script is UTF-8 and decides as usual.
    fine = site.client.post(
        link,
        content=f"csrf={csrf}&decision=reject&comment=%C3%BCber+%E2%9C%93".encode(),
        headers={**site.origin, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert fine.status_code == 200 and "über ✓" in fine.text, fine.text


def test_link_scanners_fetching_every_link_decide_nothing(site: Site) -> None:
    for i in range(5):
        submit(site.engine, idempotency_key=f"scan-{i}")
    site.dispatch()
    urls = set()
    for mail in site.sink.received:
        urls |= set(re.findall(rf"{re.escape(site.base)}/\S+", mail.part("plain")))
        urls |= set(re.findall(rf'href="({re.escape(site.base)}/[^"]+)"', mail.part("html")))
    assert len(urls) > 40
    scanner = httpx.Client(timeout=30, follow_redirects=True)
    for url in urls:
        response = scanner.get(url.replace("&amp;", "&"))
        assert response.status_code < 500
        scanner.head(url.replace("&amp;", "&"))
    assert site.decisions() == 0
    with Session(site.engine) as session:
        assert session.exec(select(func.count()).select_from(UsedLink)).one() == 0


def test_forged_expired_and_outdated_links_are_refused_with_a_reason(site: Site) -> None:
    ref = submit(site.engine)
    site.dispatch()
    link = site.approval_link(IDA)
    token = link.rsplit("/", 1)[1]
    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    response = site.client.get(f"/a/{tampered}")
    assert response.status_code == 400 and "altered" in response.text
    assert site.client.get("/a/not-a-token").status_code == 400
    key = site.settings.signing_key()
    with Session(site.engine) as session:
        stage = session.exec(select(Stage).where(Stage.key == "joint_review")).one()
        from models.org import Person

        rita = session.exec(select(Person).where(Person.email == RITA)).one()
        ida = session.exec(select(Person).where(Person.email == IDA)).one()
        budget = session.exec(select(Stage).where(Stage.key == "budget_owner")).one()
    assert stage.id and rita.id and ida.id and budget.id
    expired = tokens.approval_token(
        request_id=stage.request_id,
        stage_id=stage.id,
        round=1,
        person_id=ida.id,
        expires=NOW - timedelta(seconds=1),
        key=key,
    )
    response = site.client.get(f"/a/{expired}")
    assert response.status_code == 410 and "expired" in response.text
    # Rita's own request: a link in her name (forged with the key) still cannot approve it.
    own = tokens.approval_token(
        request_id=stage.request_id,
        stage_id=stage.id,
        round=1,
        person_id=rita.id,
        expires=NOW + timedelta(days=1),
        key=key,
    )
    refused = site.client.get(f"/a/{own}")  # said on opening: no form to fill in first
    assert refused.status_code == 403 and "<form" not in refused.text
    assert "nobody approves their own request" in refused.text
    # A stage that is not open yet, and an earlier round of an open one.
    waiting = tokens.approval_token(
        request_id=stage.request_id,
        stage_id=budget.id,
        round=1,
        person_id=ida.id,
        expires=NOW + timedelta(days=1),
        key=key,
    )
    assert site.client.get(f"/a/{waiting}").status_code == 409
    old_round = tokens.approval_token(
        request_id=stage.request_id,
        stage_id=stage.id,
        round=0,
        person_id=ida.id,
        expires=NOW + timedelta(days=1),
        key=key,
    )
    response = site.client.get(f"/a/{old_round}")
    assert response.status_code == 409 and "moved on" in response.text
    # A link signed with another key is altered, whatever it says.
    other = tokens.approval_token(
        request_id=stage.request_id,
        stage_id=stage.id,
        round=1,
        person_id=ida.id,
        expires=NOW + timedelta(days=1),
        key=b"z" * 40,
    )
    assert site.client.get(f"/a/{other}").status_code == 400
    assert site.decisions() == 0 and ref


def test_a_post_without_the_page_s_csrf_token_or_from_elsewhere_is_refused(site: Site) -> None:
    submit(site.engine)
    site.dispatch()
    link = site.approval_link(IDA)
    site.client.cookies.clear()
    no_cookie = site.client.post(link, data={"csrf": "abc", "decision": "approve"})
    assert no_cookie.status_code == 403
    mismatch = site.client.post(
        link, data={"csrf": "abc", "decision": "approve"}, headers={"Cookie": "procure_csrf=xyz"}
    )
    assert mismatch.status_code == 403
    foreign = site.client.post(
        link,
        data={"csrf": "abc", "decision": "approve"},
        headers={"Cookie": "procure_csrf=abc", "Origin": "https://evil.example.com"},
    )
    assert foreign.status_code == 403 and "did not come from procure" in foreign.text
    # An opaque origin (a sandboxed frame, a data: page) is not this site either, even with
    # the cookie and its copy.
    opaque = site.client.post(
        link,
        data={"csrf": "abc", "decision": "approve"},
        headers={"Cookie": "procure_csrf=abc", "Origin": "null"},
    )
    assert opaque.status_code == 403 and "did not come from procure" in opaque.text
    assert site.decisions() == 0


def test_a_forged_form_is_refused_not_half_understood(site: Site) -> None:
    """Only what the page sends decides: one decision, the terms' box 'yes' or absent, and no
    field the page does not have."""
    submit(site.engine)
    site.dispatch()
    link = site.approval_link(PAUL)
    site.client.get(link)
    csrf = site.client.cookies["procure_csrf"]
    form = "application/x-www-form-urlencoded"
    for body, problem in (
        (
            "decision=reject&decision=approve&comment=x",
            "decision: sent 2 times; the form sends one",
        ),
        (
            "decision=approve&confirm_terms=maybe",
            "confirm_terms: is &#39;maybe&#39;; the box sends",
        ),
        ("decision=approve&confirm_terms=yes&confirm_terms=no", "confirm_terms: sent 2 times"),
        # A field the page does not have is refused, not ignored: an amount, a second person.
        ("decision=approve&confirm_terms=yes&amount=1", "amount: is not a field of this form"),
        (
            "decision=approve&confirm_terms=yes&on_behalf_of=bob%40example.com",
            "on_behalf_of: is not a field of this form",
        ),
    ):
        answer = site.client.post(
            link,
            content=f"csrf={csrf}&{body}".encode(),
            headers={**site.origin, "Content-Type": form},
        )
        assert answer.status_code == 400 and problem in answer.text, (body, answer.text)
    assert site.decisions() == 0
    with Session(site.engine) as session:
        assert session.exec(select(func.count()).select_from(UsedLink)).one() == 0
    ticked = site.client.post(
        link,
        content=f"csrf={csrf}&decision=approve&confirm_terms=yes".encode(),
        headers={**site.origin, "Content-Type": form},
    )
    assert ticked.status_code == 200, ticked.text
    assert site.decisions() == 1


def test_fifty_concurrent_posts_on_one_stage_make_one_decision(site: Site) -> None:
    submit(site.engine)
    site.dispatch()
    urls = [site.approval_link(IDA), site.approval_link(IVAN)]

    def post(i: int) -> int:
        with httpx.Client(timeout=60) as client:
            return client.post(
                urls[i % 2],
                data={"csrf": "same", "decision": "approve"},
                headers={"Cookie": "procure_csrf=same", "Origin": site.base},
            ).status_code

    with ThreadPoolExecutor(25) as pool:
        codes = list(pool.map(post, range(50)))
    assert codes.count(200) == 1, codes
    assert set(codes) == {200, 409}, codes
    assert site.decisions() == 1


def test_the_request_and_inbox_pages(site: Site) -> None:
    ref = submit(site.engine)
    site.dispatch()
    (view, *_) = site.links_to(RITA, "r")
    page = site.client.get(view)
    assert page.status_code == 200 and f"{ref}: in review" in page.text and "Timeline" in page.text
    (inbox, *_) = site.links_to(PAUL, "inbox")
    page = site.client.get(inbox)
    assert page.status_code == 200 and ref in page.text
    # Due times in the organisation's zone (Europe/Berlin), as the emails and approval pages.
    assert re.search(r"due \w{3} \d+ \w{3} 2026, \d\d:\d\d CET", page.text), page.text
    link = re.search(r'href="([^"]+/a/[^"]+)"', page.text)
    assert link is not None and site.client.get(link.group(1)).status_code == 200
    assert site.client.get("/r/forged.token").status_code == 400
    assert site.client.get("/inbox/forged.token").status_code == 400


def test_a_rollout_s_page_counts_its_devices_and_shows_a_holder_only_their_own(
    site: Site,
) -> None:
    """The rollout email links each new hire to the request's page: they see their own devices,
    not every colleague's name and serial; the requester sees the devices counted by item and
    status, and their hundreds of events counted by day and action."""
    from models import actions
    from models.assets import Assignment, SerialIn
    from models.db import transaction
    from tests.factories import NINA, approve_all

    ref = submit(
        site.engine,
        kind="rollout",
        on_behalf_of=None,
        justification="Laptops for the new sales floor.",
        lines=[{"sku": "LAPTOP-STD-14", "quantity": 14}],
    )
    approve_all(site.engine, ref)
    serials = [f"SN-FLOOR-{n:02d}" for n in range(1, 15)]
    with transaction(site.engine) as session:
        actions.place_order(session, ref=ref, actor_email=PAUL, now=NOW)
    with transaction(site.engine) as session:
        actions.deliver(session, ref=ref, units=[SerialIn(s) for s in serials], now=NOW)
    with transaction(site.engine) as session:
        holders = [NINA, NINA] + [SARA] * 12
        actions.roll_out(
            session,
            ref=ref,
            assignments=[Assignment(s, h) for s, h in zip(serials, holders, strict=True)],
            now=NOW,
        )
    site.dispatch()
    nina_page = [u for u in site.links_to(NINA, "r")]
    assert nina_page, "Nina's rollout email links the request"
    page = site.client.get(nina_page[-1])
    assert page.status_code == 200, page.text
    assert "SN-FLOOR-01" in page.text and "SN-FLOOR-02" in page.text
    assert (
        "SN-FLOOR-03" not in page.text and "SN-FLOOR-14" not in page.text
    )  # not in the timeline either
    assert "Sara" not in page.text
    (rita_page, *_) = site.links_to(RITA, "r")
    page = site.client.get(rita_page)
    assert page.status_code == 200
    assert "14 devices (IT lists them with" in page.text and "SN-FLOOR-14" not in page.text
    assert ">14</td><td" in page.text  # 14 × LAPTOP-STD-14, deployed
    assert re.search(r"14 devices deliver \(ordered → delivered\)", page.text), page.text
    # Rita's rollout email counts them too, where it listed a line per device.
    texts = [mail.part("plain") for mail in site.sink.to(RITA)]
    counted = [t for t in texts if "14 devices (IT lists them with procure asset list" in t]
    assert counted and "14 × LAPTOP-STD-14 · deployed · 14 not yet confirmed" in counted[-1]
    assert not any("SN-FLOOR-14" in t for t in texts)


def test_the_contract_terms_to_confirm_reach_purchasing_s_inbox_page(site: Site) -> None:
    """Purchasing approved its part without the contract terms: the final approval waits for
    them. Paul is emailed once, his inbox page lists them with what to do, and once they are
    confirmed they are off it; a notice of terms confirmed before it went is not sent."""
    ref = submit(site.engine)
    decide(site.engine, ref, IDA)
    decide(site.engine, ref, PAUL, confirm_terms=False)
    site.dispatch()
    (mail,) = [m for m in site.sink.to(PAUL) if m.subject.startswith("Contract terms to confirm")]
    assert f"procure terms {ref} --all --as YOUR-EMAIL" in mail.part("plain")
    (inbox, *_) = [u for u in site.links_to(PAUL, "inbox") if u in mail.part("plain")]
    page = site.client.get(inbox)
    assert page.status_code == 200, page.text
    assert "contract terms to confirm: warranty, SLA, returns, erasure" in page.text
    assert f"procure terms {ref} --all --as {PAUL}" in page.text
    # Its link opens the page that confirms them (purchasing's part is decided: its approval
    # link answers 409).
    (item,) = [line for line in page.text.splitlines() if "contract terms to confirm" in line]
    link = re.search(r'href="([^"]+/t/[^"]+)"', item)
    assert link is not None, item
    shown = site.client.get(link.group(1))
    assert shown.status_code == 200 and 'name="term"' in shown.text, shown.text[-2000:]
    # Bob's inbox lists his decision, which waits for the terms.
    (bobs, *_) = site.links_to(BOB, "inbox")
    assert "contract terms to confirm" not in site.client.get(bobs).text

    with Session(site.engine) as session, session.begin():
        actions.confirm_terms(session, ref=ref, actor_email=PETRA, now=NOW)
    assert "contract terms to confirm" not in site.client.get(inbox).text

    # Confirmed before the notices went: they are dropped, not sent.
    other = submit(site.engine, justification="confirmed before the notice went")
    decide(site.engine, other, IDA)
    decide(site.engine, other, PAUL, confirm_terms=False)
    with Session(site.engine) as session, session.begin():
        actions.confirm_terms(session, ref=other, actor_email=PAUL, now=NOW)
    site.dispatch()
    assert not [m for m in site.sink.to(PETRA) if other in m.subject and "terms" in m.subject]
    with Session(site.engine) as session:
        statuses = session.exec(
            select(Notification.status).where(
                Notification.event == "terms_open", Notification.request_id == int(other[3:])
            )
        ).all()
    assert sorted(statuses) == ["dropped", "dropped"]


# ------------------------------------------------------------------ the API


def test_the_api_needs_its_token_and_answers_json(site: Site) -> None:
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    assert site.client.get("/api/health").json() == {"status": "ok"}
    refused = site.client.get("/api/requests")
    assert refused.status_code == 401 and "API token" in refused.json()["error"]
    wrong = site.client.get("/api/requests", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    body = {
        "kind": "refresh",
        "requester": RITA,
        "cost_centre": "CC-ENG",
        "needed_by": "2027-01-20",
        "lines": [{"sku": "MON-27", "quantity": 1}],
    }
    created = site.client.post("/api/requests", json=body, headers=auth)
    assert created.status_code == 201, created.text
    ref = created.json()["id"]
    assert site.client.get(f"/api/requests/{ref}", headers=auth).json()["status"] == "in_review"
    assert [r["id"] for r in site.client.get("/api/requests", headers=auth).json()] == [ref]
    pending = site.client.get(f"/api/people/{IDA}/pending", headers=auth).json()
    assert [p["id"] for p in pending] == [ref]
    decided = site.client.post(
        f"/api/requests/{ref}/decisions",
        json={"approver": IDA, "decision": "approve"},
        headers=auth,
    )
    assert decided.status_code == 200 and decided.json()["changed"] is True
    # Too late: who decided and when, in the organisation's time zone (NOW: 09:00 UTC).
    for approver, outcome, said in (
        (
            IVAN,
            "approve",
            "the IT part was already decided by Ida Infrastructure (approve on 25 Nov 2026 at "
            "10:00 CET)",
        ),
        (
            IDA,
            "reject",
            "you already decided approve on 25 Nov 2026 at 10:00 CET; a decision cannot be changed",
        ),
    ):
        late = site.client.post(
            f"/api/requests/{ref}/decisions",
            json={"approver": approver, "decision": outcome, "comment": "late"},
            headers=auth,
        )
        assert late.status_code == 409, late.text
        assert late.json()["error"] == f"{ref} joint_review: {said}"
    own = site.client.post(
        f"/api/requests/{ref}/decisions",
        json={"approver": RITA, "decision": "approve"},
        headers=auth,
    )
    assert own.status_code == 403 and "own" in own.json()["error"]
    bad = site.client.post(
        f"/api/requests/{ref}/decisions", json={"approver": IDA, "decision": "maybe"}, headers=auth
    )
    assert bad.status_code == 400, bad.text
    assert (bad.json()["problems"][0]["field"], bad.json()["problems"][0]["source"]) == (
        "decision",
        "body",
    )
    silent = site.client.post(
        f"/api/requests/{ref}/decisions",
        json={"approver": PAUL, "decision": "send_back", "comment": " "},
        headers=auth,
    )
    assert silent.status_code == 400, silent.text
    (problem,) = silent.json()["problems"]
    assert problem["field"] == "comment" and "needed to send a request back" in problem["message"]
    assert site.client.get(f"/api/requests/{ref}", headers=auth).json()["status"] == "in_review"
    missing = site.client.get("/api/requests/PR-9999", headers=auth)
    assert missing.status_code == 404 and "PR-9999" in missing.json()["error"]
    invalid = site.client.post("/api/requests", json={"kind": "onboarding"}, headers=auth)
    assert 400 <= invalid.status_code < 500 and invalid.json()["error"]
    assert site.client.get("/api/openapi.json").json()["info"]["title"] == "procure"


def test_the_api_reads_a_request_as_a_request_file_is_read(site: Site) -> None:
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    # A JSON number with a point is read exactly as written (never through a float), as the
    # CLI reads a JSON request file.
    text = (
        f'{{"kind": "refresh", "requester": "{RITA}", "cost_centre": "CC-ENG",'
        ' "needed_by": "2027-01-21", "justification": "API amounts", "lines": [{"sku": "MON-27",'
        ' "quantity": 3, "unit_price": 279.10, "sourcing": "individual",'
        ' "sourcing_justification": "Dealer."}]}'
    )
    headers = {**auth, "Content-Type": "application/json"}
    created = site.client.post("/api/requests", content=text, headers=headers)
    assert created.status_code == 201, created.text
    assert created.json()["total"] == "837.30"
    # The same content again is the same request: 200, not a second 201.
    again = site.client.post("/api/requests", content=text, headers=headers)
    assert again.status_code == 200 and again.json()["id"] == created.json()["id"]
    # Bad input is named by field and line of the body.
    bad = site.client.post(
        "/api/requests", content=text.replace("279.10", "279.101"), headers=headers
    )
    assert bad.status_code == 400, bad.text
    (problem,) = bad.json()["problems"]
    assert problem["field"] == "lines[0].unit_price" and problem["source"] == "body"
    broken = site.client.post("/api/requests", content=b'{"kind": ', headers=headers)
    assert broken.status_code == 400 and "invalid JSON" in broken.json()["problems"][0]["message"]
    ref = created.json()["id"]
    # A decision with a misspelt field is refused, not half understood; an unknown approver
    # is named by the body's field.
    typo = site.client.post(
        f"/api/requests/{ref}/decisions",
        json={"approver": IDA, "decision": "approve", "coment": "typo"},
        headers=auth,
    )
    assert typo.status_code == 400 and typo.json()["problems"][0]["field"] == "coment"
    stranger = site.client.post(
        f"/api/requests/{ref}/decisions",
        json={"approver": "nobody@example.com", "decision": "approve"},
        headers=auth,
    )
    assert stranger.status_code == 404, stranger.text
    assert stranger.json()["problems"][0]["field"] == "approver"
    assert (
        site.client.get(f"/api/requests/{ref}", headers=auth).json()["stages"][0]["decisions"] == []
    )
    schema = site.client.get("/api/openapi.json").json()
    body = schema["paths"]["/api/requests"]["post"]["requestBody"]["content"]["application/json"]
    assert "lines" in body["schema"]["properties"] and "$ref" not in json.dumps(body)


def test_the_api_answers_every_refusal_in_its_own_shape_with_the_documented_status(
    site: Site,
) -> None:
    """400 bad input, 404, 405 and 413 as JSON {"error", "problems"}, as the README says:
    also what the framework refuses before procure's code runs."""
    auth = {"Authorization": f"Bearer {API_TOKEN}"}

    def refused(response: Any, status: int, says: str) -> dict[str, Any]:
        assert response.status_code == status, response.text
        body = response.json()
        assert set(body) == {"error", "problems"} and says in json.dumps(body), body
        return cast(dict[str, Any], body)

    bogus = refused(site.client.get("/api/requests?status=bogus", headers=auth), 400, "bad input")
    assert [(p["field"], p["source"]) for p in bogus["problems"]] == [("status", "query")]
    long = {"approver": IDA, "decision": "reject", "comment": "x" * 4001}
    body = refused(
        site.client.post("/api/requests/PR-0001/decisions", json=long, headers=auth), 400, "4000"
    )
    assert body["problems"][0]["field"] == "comment"
    refused(
        site.client.post(
            "/api/requests/PR-0001/decisions",
            content=b'{"approver": "\xff\xfe", "decision": "approve"}',
            headers={**auth, "Content-Type": "application/json"},
        ),
        400,
        "",
    )
    refused(site.client.get("/api/nope", headers=auth), 404, "no such API address: /api/nope")
    refused(site.client.delete("/api/requests", headers=auth), 405, "DELETE is not allowed")
    huge = b'{"approver": "' + b"x" * 2_000_000 + b'"}'
    refused(
        site.client.post(
            "/api/requests/PR-0001/decisions",
            content=huge,
            headers={**auth, "Content-Type": "application/json"},
        ),
        413,
        "larger than a call takes",
    )
    # The pages keep their own answers.
    assert site.client.get("/nope").status_code == 404
    assert site.client.get("/api/requests", headers=auth).json() == []


def test_procure_web_and_serve_refuse_to_start_with_a_broken_routes_file(
    databases: Any, tmp_path: Path, capsys: Any, monkeypatch: Any
) -> None:
    """A routes file that is missing or has a bad line is named at the start (exit 2), as
    `procure notify check` names it, not in a traceback at every decision. The real commands
    run: one that started would listen until the timeout, and fail the test there."""
    import os
    import signal
    import subprocess
    import sys

    from notifications.sink import free_port
    from procure.cli import main

    bad = tmp_path / "routes.yml"
    bad.write_text("urls:\n  - nothing://here:\n      tag: it\n", encoding="utf-8")
    url = databases.url("sample")
    procure = str(Path(sys.executable).with_name("procure"))
    for routes, named in (
        (tmp_path / "missing.yml", "missing.yml: no such file"),
        (bad, ":2: urls[0]: Apprise cannot use this nothing://"),
    ):
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(tmp_path),
            "PROCURE_HOME": str(tmp_path / "home"),
            "PROCURE_DATABASE_URL": url,
            "PROCURE_APPRISE_CONFIG": str(routes),
            # The code under test, when it is not the installed one (a git worktree's).
            **{k: v for k, v in os.environ.items() if k == "PYTHONPATH"},
        }
        port = str(free_port())
        for command in (["web", "--port", port], ["serve", "--web-port", port]):
            process = subprocess.Popen(
                [procure, *command],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,  # its own group: a serve that started is stopped whole
            )
            try:
                out, err = process.communicate(timeout=90)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                out, err = process.communicate()
                raise AssertionError(f"{command} started with {routes}:\n{out}\n{err}") from None
            assert process.returncode == 2, (command, out, err)
            assert f"procure: bad input: {routes}" in err and named in err, (command, err)
            assert "procure web: http" not in out and "Traceback" not in err, (command, out)
            assert "serving" not in out, (command, out)
    assert not (tmp_path / "home" / "prefect" / "server.log").exists()  # no Prefect server began
    monkeypatch.setenv("PROCURE_APPRISE_CONFIG", str(bad))
    assert main(["--db", url, "notify", "check"]) == 2  # the same file, named the same way
    assert f"procure: bad input: {bad}" in capsys.readouterr().err


def test_procure_web_and_serve_name_a_busy_port_or_a_bad_host_before_listening(
    databases: Any, capsys: Any, monkeypatch: Any
) -> None:
    """One line naming the option, exit 2, and no "procure web: http://…" line before it."""
    import socket

    from procure.cli import main

    monkeypatch.delenv("PROCURE_APPRISE_CONFIG", raising=False)
    url = databases.url("sample")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        for command, named in (
            (["web", "--port", port], f"--port: {port} is in use on 127.0.0.1"),
            (["serve", "--web-port", port], f"--web-port: {port} is in use on 127.0.0.1"),
            (["web", "--host", "192.0.2.1"], "--host: cannot listen on 192.0.2.1"),  # TEST-NET
            (["web", "--host", "no-such-host.invalid"], "--host: 'no-such-host.invalid' is not"),
        ):
            capsys.readouterr()
            assert main(["--db", url, *command]) == 2, command
            out, err = capsys.readouterr()
            assert out == "" and err.startswith(f"procure: bad input: {named}"), (command, err)
            assert len(err.splitlines()) == 1, err


def test_a_routes_file_broken_after_the_start_is_logged_in_one_line(
    site: Site, caplog: Any
) -> None:
    submit(site.engine)
    site.dispatch()
    link = site.approval_link(IDA)
    assert site.settings.apprise_config is not None
    Path(site.settings.apprise_config).unlink()
    with caplog.at_level("ERROR", logger="procure.web"):
        assert site.form(link, "approve").status_code == 200
        assert wait_for(
            lambda: any("sending the notifications" in r.message for r in caplog.records)
        )
    (record,) = [r for r in caplog.records if r.name == "procure.web"]
    assert "apprise.yml: no such file" in record.getMessage() and record.exc_info is None


def test_procure_web_serves_the_pages_and_logs_no_token(databases: Any, tmp_path: Path) -> None:
    """The documented command, as a process: it answers, refuses a bad link, stops cleanly,
    never writes a link's token (a link's path) to its output, and, without PROCURE_BASE_URL,
    renders its links at the address it serves (--port), not at the default port 8000."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from models.db import make_engine
    from models.org import Person
    from notifications.sink import free_port
    from tests.e2e.conftest import KEY

    port = free_port()
    url = databases.url("sample")
    engine = make_engine(url)
    ref = submit(engine)
    with Session(engine) as session:
        ida = session.exec(select(Person).where(Person.email == IDA)).one()
    engine.dispose()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "PROCURE_HOME": str(tmp_path / "home"),
        "PROCURE_DATABASE_URL": url,
        "PROCURE_SECRET_KEY": KEY,
        "PROCURE_NOW": NOW.isoformat(),
        # The code under test, when it is not the installed one (a git worktree's).
        **{k: v for k, v in os.environ.items() if k == "PYTHONPATH"},
    }
    procure = str(Path(sys.executable).with_name("procure"))
    log = (tmp_path / "web.log").open("wb")
    process = subprocess.Popen(
        [procure, "web", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    secret_path = "/a/eyJzZWNyZXQiOiJ0b2tlbiJ9.c2lnbmF0dXJl"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        response = httpx.get(f"http://127.0.0.1:{port}{secret_path}", timeout=10)
        assert response.status_code == 400 and "altered" in response.text
        # The address it prints answers: where decisions are made, and the API.
        home = httpx.get(f"http://127.0.0.1:{port}/", timeout=10)
        assert home.status_code == 200 and "open the one in your email" in home.text
        assert 'href="/api/docs"' in home.text
        # A rendered link (Ida's inbox links to her approval page) is at this address.
        assert ida.id is not None
        token = tokens.inbox_token(
            person_id=ida.id, expires=NOW + timedelta(days=1), key=KEY.encode()
        )
        inbox = httpx.get(f"http://127.0.0.1:{port}/inbox/{token}", timeout=10)
        assert inbox.status_code == 200 and ref in inbox.text
        links = re.findall(r'href="(https?://[^/"]+)/a/', inbox.text)
        assert links == [f"http://127.0.0.1:{port}"], inbox.text
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
    output = (tmp_path / "web.log").read_text()
    assert (
        f"procure web: http://127.0.0.1:{port}/ (API docs: /api/docs; links in notifications: "
        f"http://127.0.0.1:{port})" in output
    )
    assert "eyJzZWNyZXQi" not in output and "Traceback" not in output
