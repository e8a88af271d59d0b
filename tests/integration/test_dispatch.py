"""The outbox relay on real wire: an aiosmtpd server on loopback, a local Slack-style webhook,
both database backends. Nothing of procure is mocked; only Slack's host is pointed here."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from apprise.plugins.slack import NotifySlack
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from models import actions, lifecycle
from models.assets import SerialIn
from models.db import transaction
from models.errors import TransitionNotAllowed
from models.outbox import Delivery, Notification
from notifications.context import Links
from notifications.dispatch import LEASE, Dispatcher, backoff
from notifications.routing import Routes, parse_routes
from notifications.sink import MailSink, free_port
from tests.factories import IDA, IVAN, NINA, NOW, PAUL, RITA, approve_all, decide, status, submit
from tests.wire import WebhookReceiver

KEY = b"k" * 32
SLACK = "slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ/#procure"


def routes_for(port: int, *, extra: str = "", cto: int = 5) -> Routes:
    mail = f"mailto://127.0.0.1:{port}?from=procure@example.com&name=procure&cto={cto}"
    text = f"""
version: 1
urls:
  - "{mail}":
      - tag: people
  - "{mail}&to=it-team@example.com":
      - tag: it
  - "{mail}&to=purchasing@example.com":
      - tag: purchasing
  - "{mail}&to=hr@example.com,people-ops@example.com":
      - tag: hr
  - "{mail}&to=finance@example.com":
      - tag: finance, management
  - "{mail}&to=ops@example.com":
      - tag: operators
{extra}"""
    return parse_routes(text, "apprise.yml")


def dispatcher(engine: Engine, routes: Routes, **kw: object) -> Dispatcher:
    return Dispatcher(engine, routes, Links("https://procure.example.com", KEY, NOW), **kw)  # type: ignore[arg-type]


def rows(engine: Engine) -> list[Notification]:
    with Session(engine) as session:
        return list(session.exec(select(Notification).order_by(col(Notification.id))).all())


def deliveries(engine: Engine) -> list[Delivery]:
    with Session(engine) as session:
        return list(session.exec(select(Delivery).order_by(col(Delivery.id))).all())


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[MailSink]:
    with MailSink(tmp_path / "mail") as server:
        yield server


# ------------------------------------------------------------------ email


def test_a_submitted_request_mails_the_requester_the_reviewers_and_the_teams(
    engine: Engine, sink: MailSink
) -> None:
    ref = submit(engine)
    report = dispatcher(engine, routes_for(sink.port)).run(now=NOW)

    assert report.claimed == report.sent == 8 and not report.failures
    assert {r.status for r in rows(engine)} == {"sent"}
    # One message per address: 1 requester + 4 approvers + 2 teams + HR's two addresses.
    assert report.deliveries == len(sink.received) == 9
    assert [r.recipients for r in sink.to("hr@example.com")] == [("hr@example.com",)]
    assert len(sink.to("people-ops@example.com")) == 1

    (mail,) = sink.to("paul.purchasing@example.com")
    message = mail.message
    assert message["Subject"].startswith(f"Your decision: {ref} onboarding for Nina Newhire")
    assert message["To"] == "Paul Purchasing <paul.purchasing@example.com>"
    assert message["From"] == "procure <procure@example.com>"
    assert message["Auto-Submitted"] == "auto-generated"
    # Every message about the request is in one thread, marked by when the request was created.
    thread = message["References"]
    assert re.fullmatch(rf"<procure\.{ref.lower()}\.[0-9a-f]{{12}}@example\.com>", thread)
    assert {m.message["In-Reply-To"] for m in sink.received} == {thread}
    assert {m.message["References"] for m in sink.received} == {thread}
    assert message.get_content_type() == "multipart/alternative"
    text, html = mail.part("plain"), mail.part("html")
    # The links survive in the plain part as working URLs, and are buttons in the HTML.
    links = re.findall(r"https://procure\.example\.com/a/\S+", text)
    assert {link.rsplit("=", 1)[-1] for link in links} == {"approve", "reject", "send_back"}
    for link in links:
        assert f'href="{link.replace("&", "&amp;")}"' in html
    assert re.search(r"1 × .* \(LAPTOP-STD-14\) at €[\d,]+\.\d\d", text)
    assert "Cost of involving purchasing late" in text
    assert "<!doctype html>" in html

    (team,) = sink.to("it-team@example.com")
    assert team.message["Subject"].startswith(f"Joint review (IT and purchasing): {ref}")
    assert "/a/" not in team.part("plain")  # a team copy cannot decide: no approval links

    # The demo folder: each message as .eml and .html.
    files = sorted(p.name for p in (sink.folder or Path()).iterdir())
    assert len(files) == 18 and any(f.endswith("paul.purchasing@example.com.eml") for f in files)


def test_a_request_for_a_decision_made_before_it_went_is_dropped_not_sent(
    engine: Engine, sink: MailSink
) -> None:
    """Ida approves for IT within the dispatcher's minute: IT's requests for that decision
    (hers, Ivan's, the IT team's) would ask for what is done, so they are dropped; purchasing's
    still go, as does the requester's news."""
    ref = submit(engine)
    decide(engine, ref, IDA)
    report = dispatcher(engine, routes_for(sink.port)).run(now=NOW)

    dropped = {(r.event, r.audience) for r in rows(engine) if r.status == "dropped"}
    assert dropped == {
        ("approval_needed", f"person:{IDA}"),
        ("approval_needed", f"person:{IVAN}"),
        ("review_needed", "team:it"),
    }
    assert report.dropped == 3 and report.sent == report.claimed - 3 and not report.failures
    # The line `procure notify send` prints and the dispatch flow logs names every outcome.
    assert report.summary == (
        f"{report.claimed} due: {report.sent} sent, 0 to retry, 0 given up, "
        f"3 dropped (out of date before they went) ({report.deliveries} deliveries)"
    )
    assert not sink.to(IDA) and not sink.to(IVAN) and not sink.to("it-team@example.com")
    assert sink.to(PAUL) and sink.to("purchasing@example.com") and sink.to(RITA)
    for row in rows(engine):
        if row.status == "dropped":
            assert row.last_error == "not sent: stage joint_review has its it decision already"
            assert row.sent_at is None


def test_requests_for_a_stage_decided_before_they_went_are_dropped_and_the_next_go(
    engine: Engine, sink: MailSink
) -> None:
    ref = submit(engine)
    decide(engine, ref, IDA)
    decide(engine, ref, PAUL, confirm_terms=True)  # the joint review is approved
    report = dispatcher(engine, routes_for(sink.port)).run(now=NOW)

    joint = [r for r in rows(engine) if r.event in ("approval_needed", "review_needed")]
    dropped = [r for r in joint if r.status == "dropped"]
    assert len(dropped) == 6 and report.dropped == 6  # four people and two teams
    assert {r.last_error for r in dropped} == {"not sent: stage joint_review is approved already"}
    # The budget owner's stage opened with the approval: its request goes out.
    (budget,) = [r for r in joint if r.status == "sent"]
    assert budget.event == "approval_needed" and budget.audience.startswith("person:")
    assert sink.to(budget.audience.removeprefix("person:"))
    # Nobody of the joint review is asked for the decision they made.
    for who in (IDA, PAUL):
        assert all(not m.message["Subject"].startswith("Your decision") for m in sink.to(who))


def test_a_sent_row_is_never_sent_again(engine: Engine, sink: MailSink) -> None:
    submit(engine)
    relay = dispatcher(engine, routes_for(sink.port))
    relay.run(now=NOW)
    again = relay.run(now=NOW + timedelta(hours=1))
    assert again.claimed == 0
    assert len(sink.received) == 9
    assert all(d.ok for d in deliveries(engine))


def test_a_scheduled_delivery_carries_a_calendar_invitation(engine: Engine, sink: MailSink) -> None:
    ref = submit(engine)
    approve_all(engine, ref)
    with transaction(engine) as session:
        actions.place_order(session, ref=ref, actor_email=PAUL, now=NOW)
        actions.schedule_delivery(
            session, ref=ref, on=NOW.date() + timedelta(days=20), actor_email=IVAN, now=NOW
        )
    dispatcher(engine, routes_for(sink.port)).run(now=NOW)
    scheduled = [r for r in sink.to(RITA) if "delivery scheduled" in r.message["Subject"]]
    assert len(scheduled) == 1
    message = scheduled[0].message
    assert message.get_content_type() == "multipart/mixed"
    (invite,) = list(message.iter_attachments())
    assert invite.get_content_type() == "text/calendar"
    assert invite.get_filename().endswith(".ics")
    body = invite.get_content()
    day = (NOW.date() + timedelta(days=20)).strftime("%Y%m%d")
    assert f"DTSTART;VALUE=DATE:{day}" in body and ref in body


def _invite(mail: Any) -> dict[str, str]:
    """A mailed delivery_scheduled's calendar entry, unfolded, by property."""
    (invite,) = list(mail.message.iter_attachments())
    lines = invite.get_content().replace("\r\n ", "").split("\r\n")
    return dict(line.split(":", 1) for line in lines if ":" in line)


def _ordered(engine: Engine) -> str:
    ref = submit(engine)
    approve_all(engine, ref)
    with transaction(engine) as session:
        actions.place_order(session, ref=ref, actor_email=PAUL, now=NOW)
    return ref


def _schedule(engine: Engine, ref: str, on: date) -> None:
    with transaction(engine) as session:
        actions.schedule_delivery(session, ref=ref, on=on, actor_email=IVAN, now=NOW)


def test_a_delivery_date_moved_back_is_told_once_per_change_and_supersedes_what_waits(
    engine: Engine, sink: MailSink
) -> None:
    """8 Dec, then 15 Dec, then 8 Dec again: the move back was told nobody (its key was the
    date's, taken by the first), and the 15 Dec notices still waiting would have gone too."""
    ref = _ordered(engine)
    relay = dispatcher(engine, routes_for(sink.port))
    first, second = date(2026, 12, 8), date(2026, 12, 15)
    _schedule(engine, ref, first)
    relay.run(now=NOW)
    (told,) = [m for m in sink.to(RITA) if "delivery scheduled" in m.message["Subject"]]
    invite = _invite(told)
    assert invite["DTSTART;VALUE=DATE"] == "20261208"

    _schedule(engine, ref, second)
    _schedule(engine, ref, first)
    queued = [r for r in rows(engine) if r.event == "delivery_scheduled"]
    # Each real change queued one notice per audience: the requester, IT, HR (onboarding).
    assert len(queued) == 9
    _schedule(engine, ref, first)  # the same date again: nothing changes, nobody is told
    assert len([r for r in rows(engine) if r.event == "delivery_scheduled"]) == 9
    assert status(engine, ref) == "delivery_scheduled"

    report = relay.run(now=NOW + timedelta(minutes=1))
    settled = [r for r in rows(engine) if r.event == "delivery_scheduled"][3:]
    stale, latest = settled[:3], settled[3:]
    assert report.dropped == 3 and report.sent == 3 and not report.failures
    assert [r.status for r in stale] == ["dropped"] * 3
    assert [r.status for r in latest] == ["sent"] * 3
    for old, new in zip(stale, latest, strict=True):
        assert old.context["date"] == "2026-12-15" and new.context["date"] == "2026-12-08"
        assert (
            old.last_error == f"not sent: superseded by notification {new.id} (delivery_scheduled)"
        )
    # Rita, IT and HR hear of the 8th again; nobody hears of the 15th.
    for address in (RITA, "it-team@example.com", "hr@example.com"):
        mails = [m for m in sink.to(address) if "delivery scheduled" in m.message["Subject"]]
        assert [m.message["Subject"].split(" for ", 1)[1][:15] for m in mails] == [
            "Tue 8 Dec 2026",
            "Tue 8 Dec 2026",
        ], address
    # The invitation updates the same calendar event: same UID, a higher SEQUENCE.
    moved = _invite([m for m in sink.to(RITA) if "delivery scheduled" in m.message["Subject"]][1])
    assert moved["UID"] == invite["UID"] and ref in moved["UID"]
    assert int(moved["SEQUENCE"]) > int(invite["SEQUENCE"])
    assert moved["DTSTART;VALUE=DATE"] == "20261208"


def _handed_out(engine: Engine, serial: str) -> None:
    ref = _ordered(engine)
    with transaction(engine) as session:
        actions.deliver(session, ref=ref, units=[SerialIn(serial)], actor_email=IVAN, now=NOW)
        actions.roll_out(session, ref=ref, actor_email=IVAN, now=NOW)


def _return_mails(sink: MailSink) -> list[str]:
    """What Nina was told of her laptop's return, in order: asked back, or kept."""
    subjects = [m.message["Subject"] for m in sink.to(NINA)]
    return [
        "asked" if s.startswith("Please return") else "kept"
        for s in subjects
        if s.startswith(("Please return", "You keep"))
    ]


def test_a_device_asked_back_again_after_a_cancelled_return_is_told_again(
    engine: Engine, sink: MailSink
) -> None:
    """Asked back, kept, asked back again: the second request queued nothing (its key was the
    serial, taken by the first), so Nina's last message said she keeps the laptop."""
    _handed_out(engine, "N-1")
    relay = dispatcher(engine, routes_for(sink.port))
    relay.run(now=NOW)  # the request's own news, up to the hand-out
    moments = iter(NOW + timedelta(minutes=n) for n in range(1, 20))

    def move(step: Any, **kw: Any) -> None:
        with transaction(engine) as session:
            step(session, serial="N-1", actor_email=IDA, now=NOW, **kw)

    # Asked back and kept before the dispatcher runs: nobody hears of either.
    move(actions.request_return, reason="Refresh")
    move(actions.cancel_return, reason="Not yet")
    report = relay.run(now=next(moments))
    assert report.sent == 0 and report.dropped == 4 and _return_mails(sink) == []
    assert {r.last_error for r in rows(engine) if r.event == "return_cancelled"} == {
        "not sent: the return_requested it takes back never reached them"
    }

    move(actions.request_return, reason="Refresh")
    relay.run(now=next(moments))
    move(actions.cancel_return, reason="The refresh is postponed")
    relay.run(now=next(moments))
    assert _return_mails(sink) == ["asked", "kept"]
    move(actions.request_return, reason="The refresh is on after all")
    report = relay.run(now=next(moments))
    assert report.sent == 2 and report.dropped == 0  # Nina and IT
    assert _return_mails(sink) == ["asked", "kept", "asked"]
    (last,) = [m for m in sink.to(NINA) if "The refresh is on after all" in m.part("plain")]
    assert last.message["Subject"].startswith("Please return")

    # Asked back again while asked back: refused, nothing queued.
    before = len(rows(engine))
    with pytest.raises(TransitionNotAllowed), transaction(engine) as session:
        actions.request_return(session, serial="N-1", actor_email=IDA, now=NOW)
    assert len(rows(engine)) == before

    # Kept, asked back, kept, before the dispatcher runs: only the last, which tells of the
    # change from what Nina heard last (asked back), goes; the two before it are stale.
    move(actions.cancel_return, reason="Postponed")
    move(actions.request_return, reason="On")
    move(actions.cancel_return, reason="Postponed for good")
    report = relay.run(now=next(moments))
    assert report.sent == 2 and report.dropped == 4 and not report.failures
    assert _return_mails(sink) == ["asked", "kept", "asked", "kept"]
    assert "Postponed for good" in sink.to(NINA)[-1].part("plain")

    # Asked back and kept again before the dispatcher runs: the last Nina heard is that she
    # keeps it: neither goes.
    move(actions.request_return, reason="Refresh")
    move(actions.cancel_return, reason="No refresh")
    report = relay.run(now=next(moments))
    assert report.sent == 0 and report.dropped == 4
    assert _return_mails(sink) == ["asked", "kept", "asked", "kept"]
    cancels = [r for r in rows(engine) if r.event == "return_cancelled"]
    told = {r.audience: r.id for r in cancels if r.context["reason"] == "Postponed for good"}
    assert {(r.audience, r.status, r.last_error) for r in cancels[-2:]} == {
        (
            audience,
            "dropped",
            f"not sent: the last they were told is notification {id_} (return_cancelled)",
        )
        for audience, id_ in told.items()
    }


# ------------------------------------------------------------------ Slack


def test_slack_gets_block_kit_with_link_buttons(
    engine: Engine, sink: MailSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    with WebhookReceiver() as hook:
        monkeypatch.setattr(NotifySlack, "webhook_url", hook.url)  # Slack's host, pointed here
        extra = f"""  - "{SLACK}":
      - tag: purchasing, {PAUL}
"""
        ref = submit(engine, justification="Fast & <urgent> *now*")
        report = dispatcher(engine, routes_for(sink.port, extra=extra)).run(now=NOW)
    assert not report.failures
    assert all(p.path == "/T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ" for p in hook.posts)
    payloads = [p.json() for p in hook.posts]
    assert len(payloads) == 2  # the purchasing channel and Paul's approval request
    by_title = {
        b["attachments"][0]["blocks"][0]["text"]["text"]: b["attachments"][0]["blocks"]
        for b in payloads
    }
    approval = next(v for k, v in by_title.items() if k.startswith("Your decision"))
    assert approval[0]["type"] == "header"
    assert approval[1]["type"] == "section" and approval[1]["text"]["type"] == "mrkdwn"
    section = approval[1]["text"]["text"]
    assert "Fast &amp; &lt;urgent&gt; *now*" in section  # Slack's own escaping of & < >
    buttons = approval[2]["elements"]
    assert [b["text"]["text"] for b in buttons] == [
        "Approve",
        "Reject",
        "Send back",
        "Open request",
    ]
    assert buttons[0]["url"].startswith("https://procure.example.com/a/")
    assert buttons[0]["url"].endswith("decision=approve")
    team = next(
        v for k, v in by_title.items() if k.startswith(f"Joint review (IT and purchasing): {ref}")
    )
    assert [b["text"]["text"] for b in team[2]["elements"]] == ["Open request"]


def test_slack_gets_a_receipt_button_for_devices_handed_to_a_person(
    engine: Engine, sink: MailSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nina's notices go to Slack too: her rollout message has the receipt page's button."""
    _handed_out(engine, "N-SLACK-1")
    with WebhookReceiver() as hook:
        monkeypatch.setattr(NotifySlack, "webhook_url", hook.url)
        extra = f"""  - "{SLACK}":
      - tag: {NINA}
"""
        report = dispatcher(engine, routes_for(sink.port, extra=extra)).run(now=NOW)
    assert not report.failures
    (blocks,) = [
        p.json()["attachments"][0]["blocks"]
        for p in hook.posts
        if "is ready" in p.json()["attachments"][0]["blocks"][0]["text"]["text"]
    ]
    buttons = blocks[2]["elements"]
    assert [(b["text"]["text"], b.get("style")) for b in buttons] == [
        ("Confirm receipt", "primary"),
        ("Open request", None),
    ]
    assert buttons[0]["url"].startswith("https://procure.example.com/k/")
    assert f"Confirm you received it: {buttons[0]['url']}" in blocks[1]["text"]["text"]
    (mail,) = [m for m in sink.to(NINA) if "is ready" in m.message["Subject"]]
    assert buttons[0]["url"] in mail.part("plain")  # the same link by email


def test_a_slack_error_is_retried_and_named(
    engine: Engine, sink: MailSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    with WebhookReceiver() as hook:
        monkeypatch.setattr(NotifySlack, "webhook_url", hook.url)
        hook.status, hook.reply = 404, b"channel_not_found"
        extra = f"""  - "{SLACK}":
      - tag: purchasing
"""
        submit(engine)
        relay = dispatcher(engine, routes_for(sink.port, extra=extra))
        report = relay.run(now=NOW)
        (failed,) = [r for r in rows(engine) if r.status == "pending"]
        assert failed.audience == "team:purchasing" and report.retried == 1
        assert "slack" in failed.last_error
        assert "TIiajkdnlazkcOXrIdevi7FQ" not in failed.last_error  # the token stays secret
        # The team's email copy went out and is not sent again on the retry.
        assert len(sink.to("purchasing@example.com")) == 1
        hook.status, hook.reply = 200, b"ok"
        again = relay.run(now=NOW + backoff(1))
    assert again.sent == 1 and len(sink.to("purchasing@example.com")) == 1
    assert len(hook.posts) == 2


def test_any_other_apprise_service_gets_the_subject_and_the_text_with_its_links(
    engine: Engine, sink: MailSink
) -> None:
    with WebhookReceiver() as hook:
        port = hook.url.rsplit(":", 1)[1]
        extra = f"""  - "json://127.0.0.1:{port}/hooks/hr":
      - tag: hr
"""
        ref = submit(engine)
        report = dispatcher(engine, routes_for(sink.port, extra=extra)).run(now=NOW)
    assert not report.failures
    (post,) = hook.posts
    assert post.path == "/hooks/hr"
    body = post.json()
    assert body["title"].startswith(f"For your information: {ref}")
    assert "https://procure.example.com/r/" in body["message"]  # the link, as a URL


# ------------------------------------------------------------------ failures


def test_smtp_down_keeps_every_row_and_sends_them_when_it_is_back(
    engine: Engine, tmp_path: Path
) -> None:
    port = free_port()  # nothing listens here yet
    submit(engine)
    relay = dispatcher(engine, routes_for(port))
    report = relay.run(now=NOW)
    assert report.claimed == 8 and report.retried == 8 and report.sent == 0
    for row in rows(engine):
        assert row.status == "pending" and row.attempts == 1
        assert row.next_attempt_at == NOW + timedelta(minutes=1)
        assert f"127.0.0.1:{port}" in row.last_error
        assert "refused" in row.last_error or "not tried" in row.last_error
    # Not due yet: nothing is claimed before the back-off.
    assert relay.run(now=NOW + timedelta(seconds=30)).claimed == 0
    with MailSink(port=port) as sink:
        later = relay.run(now=NOW + timedelta(minutes=1))
    assert later.sent == 8 and len(sink.received) == 9
    assert {r.status for r in rows(engine)} == {"sent"}


def test_a_refused_recipient_is_retried_while_the_others_go_out(
    engine: Engine, sink: MailSink
) -> None:
    sink.refuse["people-ops@example.com"] = "550 5.1.1 no such user"
    submit(engine)
    relay = dispatcher(engine, routes_for(sink.port))
    report = relay.run(now=NOW)
    assert report.sent == 7 and report.retried == 1
    (hr,) = [r for r in rows(engine) if r.status == "pending"]
    assert hr.audience == "team:hr"
    assert "refused people-ops@example.com: 550 5.1.1 no such user" in hr.last_error
    assert len(sink.to("hr@example.com")) == 1
    del sink.refuse["people-ops@example.com"]
    again = relay.run(now=NOW + backoff(1))
    assert again.sent == 1
    # hr@ had it already: only the refused address gets it on the retry.
    assert len(sink.to("hr@example.com")) == 1 and len(sink.to("people-ops@example.com")) == 1
    attempts = [(d.attempt, d.target.split(" via ")[0], d.ok) for d in deliveries(engine)]
    assert (1, "email people-ops@example.com", False) in attempts
    assert (2, "email people-ops@example.com", True) in attempts


def test_a_hanging_server_times_out_and_nothing_is_lost(engine: Engine, sink: MailSink) -> None:
    sink.delay = 3.0  # answers DATA after 3 s; the route waits 1 s
    submit(engine)
    relay = dispatcher(engine, routes_for(sink.port, cto=1))
    report = relay.run(now=NOW)
    assert report.sent == 0 and report.retried == 8
    assert any("timed out" in r.last_error for r in rows(engine))
    sink.delay = 0.0
    later = relay.run(now=NOW + backoff(1))
    assert later.sent == 8
    assert {r.status for r in rows(engine)} == {"sent"}
    # Every address has its message; some may have it twice (the server took one after the
    # client gave up: at most once more, never lost).
    for address in ("it-team@example.com", RITA, PAUL, "hr@example.com"):
        assert 1 <= len(sink.to(address)) <= 2


def test_after_max_attempts_a_row_is_dead_and_the_operators_are_told(
    engine: Engine, sink: MailSink
) -> None:
    sink.refuse["people-ops@example.com"] = "450 4.2.1 mailbox busy"
    submit(engine)
    relay = dispatcher(engine, routes_for(sink.port), max_attempts=3)
    at = NOW
    for attempt in (1, 2, 3):
        relay.run(now=at)
        at += backoff(attempt)
    (hr,) = [r for r in rows(engine) if r.audience == "team:hr"]
    assert hr.status == "dead" and hr.attempts == 3
    alerts = [r for r in rows(engine) if r.event == "undeliverable"]
    assert len(alerts) == 1 and alerts[0].audience == "team:operators"
    assert alerts[0].context["notification"] == hr.id
    relay.run(now=at)
    (alert,) = sink.to("ops@example.com")
    assert alert.message["Subject"].startswith("Undeliverable: informed for team:hr")
    assert f"procure notify retry {hr.id}" in alert.part("plain")
    # Requeued by an operator once the mailbox works: it goes out.
    del sink.refuse["people-ops@example.com"]
    with transaction(engine) as session:
        row = session.get(Notification, hr.id)
        assert row is not None
        lifecycle.settle_notification(
            session, row, "requeue", attempts=0, next_attempt_at=at, last_error=""
        )
    assert relay.run(now=at).sent == 1
    assert len(sink.to("people-ops@example.com")) == 1


def test_an_audience_without_a_route_waits_with_a_clear_error(
    engine: Engine, sink: MailSink
) -> None:
    text = f"""
urls:
  - "{sink.url}":
      - tag: people
"""
    submit(engine)
    report = dispatcher(engine, parse_routes(text, "routes.yml")).run(now=NOW)
    assert report.sent == 5 and report.retried == 3
    waiting = {r.audience: r.last_error for r in rows(engine) if r.status == "pending"}
    assert waiting["team:hr"] == "no route for team:hr: add a URL tagged hr to routes.yml"


def test_a_crashed_dispatcher_s_rows_are_sent_once_its_lease_lapses(
    engine: Engine, sink: MailSink
) -> None:
    submit(engine)
    with transaction(engine) as session:  # a dispatcher claims, then dies before sending
        claimed = lifecycle.claim_notifications(
            session, now=NOW, lease_until=NOW + LEASE, limit=100
        )
    assert len(claimed) == 8
    relay = dispatcher(engine, routes_for(sink.port))
    assert relay.run(now=NOW + timedelta(minutes=1)).claimed == 0  # still leased
    report = relay.run(now=NOW + LEASE)
    assert report.sent == 8 and len(sink.received) == 9
    assert {r.attempts for r in rows(engine)} == {2}


def test_two_dispatchers_at_once_send_each_message_once(engine: Engine, sink: MailSink) -> None:
    for i in range(6):
        submit(engine, idempotency_key=f"parallel-{i}")
    relays = [dispatcher(engine, routes_for(sink.port), chunk=5) for _ in range(2)]
    results: list[int] = []
    errors: list[BaseException] = []

    def run(relay: Dispatcher) -> None:
        try:
            results.append(relay.run(now=NOW).sent)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(r,)) for r in relays]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sum(results) == 48 == len(rows(engine))
    assert len(sink.received) == 6 * 9
    ids = [m.message["Message-ID"] for m in sink.received]
    assert len(set(ids)) == len(ids)


def test_backoff_doubles_and_is_capped() -> None:
    assert [backoff(n) for n in (1, 2, 3)] == [timedelta(minutes=m) for m in (1, 2, 4)]
    assert backoff(30) == timedelta(hours=6)
