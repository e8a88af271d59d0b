"""Rendering notifications: one template file per event, four outputs, a sandbox for overrides.

Every test renders real notification rows: `notifications.samples.sample_database()` drives
sample requests through every path that notifies someone, and `ContextBuilder` turns each
row into the context a template sees, exactly as the dispatcher does. Nothing below is a
hand-written context, except where a test edits a real one to break or poison it.

- subject: one line, raw values, at most SUBJECT_MAX characters;
- text: raw values (a plain-text part shows what people wrote);
- html: a full document, autoescaped, dir="auto" around what people typed;
- slack: plain text like the text part (Apprise's Slack plugin escapes `&`, `<` and `>` on
  the way out; tests/integration/test_dispatch.py checks the wire), so nothing here may
  escape it a second time.
"""

from __future__ import annotations

import copy
import html
import re
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from models.db import transaction
from models.errors import InputError
from models.lifecycle import RequestStatus
from models.org import Person
from models.outbox import Notification
from models.requests import Decision, Request
from models.tokens import read_receipt_token
from notifications.context import APPROVAL_EVENTS, ContextBuilder, Links, delivery_invite
from notifications.render import (
    OVERRIDE_SECONDS,
    SUBJECT_MAX,
    TEMPLATES,
    Message,
    Renderer,
    RenderError,
    day,
    ending,
    label,
    money,
    plural,
    sentence,
    than,
)
from notifications.samples import (
    BOB,
    NINA,
    NOW,
    RITA,
    SARA,
    sample_copies,
    sample_database,
    sample_rows,
    sample_variant,
)
from procure.cli import main

EVENTS = Renderer.events()
BASE_URL = "https://procure.example.com"
KEY = b"render-tests-signing-key-0123456789abcdef"
ROOT = TEMPLATES.parent.parent

# Hostile free text: markup and script, emoji, right-to-left script, a header injection and
# a Slack broadcast, all in one string (what a justification or a comment may contain).
SCRIPT = "<script>alert(1)</script><img src=x onerror=alert(1)>"
EMOJI = "🚀💻"
RTL = "مرحبا بالعالم"
CRLF = "evil\r\nBcc: victim@example.com"
HOSTILE = f"{SCRIPT} {EMOJI} {RTL} {CRLF} <!channel> & co"
# The requester's name: hostile too, with right-to-left text of its own (names sit inside
# sentences of the template: in HTML each is isolated in a <bdi>, not a dir="auto" block).
NAME_RTL = "ريتا"
HOSTILE_NAME = f"Rita {NAME_RTL} {EMOJI} <script>alert(2)</script>\r\nBcc: victim@example.com"


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def sample_engine() -> Iterator[Engine]:
    """The sample run (every event queued at least once), built once for the module."""
    with sample_database() as engine:
        yield engine


@pytest.fixture(scope="module")
def hostile_engine() -> Iterator[Engine]:
    """A second sample run whose free text (and the requester's name) is hostile."""
    with sample_database() as engine:
        with transaction(engine) as session:
            for request in session.exec(select(Request)).all():
                request.justification = HOSTILE
                session.add(request)
            for decision in session.exec(select(Decision)).all():
                decision.comment = HOSTILE
                session.add(decision)
            for row in session.exec(select(Notification)).all():
                context = dict(row.context or {})
                poisoned: dict[str, Any] = {
                    k: HOSTILE for k in ("comment", "reason") if k in context
                }
                if poisoned:
                    row.context = {**context, **poisoned}
                    session.add(row)
            rita = session.exec(select(Person).where(Person.email == RITA)).one()
            rita.name = HOSTILE_NAME
            session.add(rita)
        yield engine


@pytest.fixture
def session(sample_engine: Engine) -> Iterator[Session]:
    with Session(sample_engine) as session:
        yield session


@pytest.fixture
def hostile_session(hostile_engine: Engine) -> Iterator[Session]:
    with Session(hostile_engine) as session:
        yield session


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer()


def builder(session: Session) -> ContextBuilder:
    return ContextBuilder(session, Links(BASE_URL, KEY, NOW))


def sample(session: Session, event: str) -> tuple[Notification, dict[str, Any]]:
    """The sample row of an event and its context (a fresh copy, free to edit)."""
    row = sample_rows(session)[event]
    return row, copy.deepcopy(builder(session).build(row))


def context_of(session: Session, event: str) -> dict[str, Any]:
    return sample(session, event)[1]


def addressed(context: dict[str, Any]) -> str:
    """Who a message's footer says it is for: a person by name, a team as 'the IT team'."""
    recipient = context["recipient"]
    return f"the {recipient['name']} team" if recipient["kind"] == "team" else recipient["name"]


class Tree(HTMLParser):
    """Every element and every text node of an HTML document, with the elements it sits in."""

    VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta"})

    def __init__(self, document: str):
        super().__init__(convert_charrefs=True)
        self.open: list[tuple[str, dict[str, str | None]]] = []
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.texts: list[tuple[str, tuple[tuple[str, dict[str, str | None]], ...]]] = []
        self.feed(document)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = (tag, dict(attrs))
        self.elements.append(element)
        if tag not in self.VOID:
            self.open.append(element)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self.open) - 1, -1, -1):
            if self.open[i][0] == tag:
                del self.open[i:]
                return

    def handle_data(self, data: str) -> None:
        self.texts.append((data, tuple(self.open)))

    def title(self) -> str:
        return "".join(text for text, where in self.texts if where and where[-1][0] == "title")


LEAKS = re.compile(r"\bUndefined\b|\bNone\b(?! confirmed yet)|\{\{|\{%|\bjinja2\b")


# ------------------------------------------------------------------ every event renders


def test_every_event_has_a_template_and_a_sample_row(session: Session) -> None:
    assert sorted(EVENTS) == EVENTS and len(EVENTS) == len(set(EVENTS))
    assert not [e for e in EVENTS if e.startswith("_")]
    assert {"approval_needed", "reminder", "delivery_scheduled", "digest"} <= set(EVENTS)
    assert set(sample_rows(session)) == set(EVENTS)
    for event in EVENTS:
        assert (TEMPLATES / f"{event}.j2").is_file()


def test_the_check_renders_a_persons_and_a_teams_copy_of_an_event(
    session: Session, renderer: Renderer
) -> None:
    """A team's copy is built from its own notice (an escalation's lacked a field the
    template used, and only the person's copy was checked)."""
    copies = sample_copies(session)
    assert set(copies) == set(EVENTS)
    for event, rows in copies.items():
        kinds = [sample_variant(row) for row in rows]
        assert len(kinds) == len(set(kinds)) and rows[0] is sample_rows(session)[event]
    both = {event for event, rows in copies.items() if len(rows) >= 2}
    assert {"delivery_scheduled", "ordered", "no_approver"} <= both, both
    for event in sorted(both):
        for row in copies[event]:
            assert renderer.render(event, builder(session).build(row)).warnings == ()
    # no_approver's other case is checked too: a part nobody may decide, not even in its
    # escalation role's place (its own headline, reason and remedy), after the common one.
    common, stuck = copies["no_approver"]
    assert (sample_variant(common), sample_variant(stuck)) == (
        ("team", False, False),
        ("team", True, False),
    )
    # device_assigned's: a list of a person's devices (the preview), and one device.
    several, one = copies["device_assigned"]
    assert (sample_variant(several), sample_variant(one)) == (
        ("person", False, True),
        ("person", False, False),
    )
    message = renderer.render("no_approver", builder(session).build(stuck))
    assert message.subject.startswith("Nobody may decide PR-")
    assert "It waits until the roles change: give the role finance" in message.text


@pytest.mark.parametrize("event", EVENTS)
def test_every_event_renders_all_four_parts(
    session: Session, renderer: Renderer, event: str
) -> None:
    row, context = sample(session, event)
    message = renderer.render(event, context)

    assert isinstance(message, Message) and message.event == event
    assert message.warnings == ()
    # Subject: one line, not blank, bounded.
    assert message.subject.strip() == message.subject
    assert message.subject and len(message.subject) <= SUBJECT_MAX
    assert "\r" not in message.subject and "\n" not in message.subject
    # Text: greets its reader, ends with one newline, names who it is for.
    assert message.text.strip() and message.text.endswith("\n")
    assert not message.text.endswith("\n\n")
    assert message.text.startswith(f"Hello {context['recipient']['name']}")
    assert f"procure sends this to {addressed(context)}." in message.text
    assert "\n\n\n\n" not in message.text
    # A request's summary rows line up: none loses its indent to the blank lines above it.
    rows = [ln for ln in message.text.splitlines() if ln.strip().startswith("Request     ")]
    assert all(ln.startswith("  Request     ") for ln in rows), rows
    # HTML: a full document whose title is the subject.
    assert message.html.lstrip().lower().startswith("<!doctype html>")
    assert message.html.rstrip().endswith("</html>")
    for tag in ("<html", "<head>", '<meta charset="utf-8">', "<body", "</body>"):
        assert tag in message.html
    tree = Tree(message.html)
    assert tree.title().strip() == message.subject
    # Slack: not empty, no empty-line runs.
    assert message.slack.strip() and "\n\n\n" not in message.slack
    # No blanks where a value should be.
    for part in (message.subject, message.text, message.html, message.slack):
        assert not LEAKS.search(part), LEAKS.search(part)
    if context["request"] is not None:
        assert context["request"]["id"] in message.subject + message.text
        assert context["links"]["request"] in message.text
        assert f'href="{html.escape(context["links"]["request"])}"' in message.html
    assert row.audience == f"{context['recipient']['kind']}:{context['recipient']['address']}"


def test_the_time_zone_of_the_context_shows_in_the_subject(
    session: Session, renderer: Renderer
) -> None:
    context = context_of(session, "review_needed")
    assert context["tz"] == "Europe/Berlin"
    due = datetime.fromisoformat(context["notice"]["due_at"])
    local = due.astimezone(ZoneInfo("Europe/Berlin"))
    message = renderer.render("review_needed", context)
    assert f"due {day(local)}, {local:%H:%M} CET" in message.subject
    # The same moment in another organisation's zone reads differently.
    context["tz"] = "America/New_York"
    other = renderer.render("review_needed", context)
    there = due.astimezone(ZoneInfo("America/New_York"))
    assert f"{there:%H:%M} EST" in other.subject and other.subject != message.subject


def test_a_long_subject_is_cut_to_the_maximum(session: Session, renderer: Renderer) -> None:
    context = context_of(session, "cancelled")
    context["people"][RITA] = "Rita " + "very " * 100 + "long"
    message = renderer.render("cancelled", context)
    assert len(message.subject) == SUBJECT_MAX
    assert message.subject.startswith(f"{context['request']['id']} cancelled by Rita very")
    # The text shows the whole name: only the subject is cut.
    assert "very " * 100 + "long" in message.text


# ------------------------------------------------------------------ approval links


@pytest.mark.parametrize("event", sorted(APPROVAL_EVENTS))
def test_approval_events_carry_approve_reject_send_back_links(
    session: Session, renderer: Renderer, event: str
) -> None:
    row, context = sample(session, event)
    assert row.audience.startswith("person:")
    links = context["links"]
    message = renderer.render(event, context)

    urls_in_text = set(re.findall(r"https?://\S+", message.text))
    page = links["page"]
    assert page.startswith(f"{BASE_URL}/a/")
    for decision in ("approve", "reject", "send_back"):
        url = links[decision]
        assert url == f"{page}?decision={decision}"
        # Plain text: the whole URL, on its own, so that a mail client links it.
        assert url in urls_in_text
        # HTML: a link (the attribute escaped as HTML wants it).
        assert f'href="{html.escape(url)}"' in message.html
        assert url in message.slack
    assert [(b.label, b.url, b.style) for b in message.buttons] == [
        ("Approve", links["approve"], "primary"),
        ("Reject", links["reject"], "danger"),
        ("Send back", links["send_back"], ""),
        ("Open request", links["request"], ""),
    ]
    assert links["inbox"] in message.text


def test_a_team_copy_has_no_approval_links(session: Session, renderer: Renderer) -> None:
    row, context = sample(session, "review_needed")
    assert row.audience == "team:purchasing"
    assert set(context["links"]) == {"request"}
    message = renderer.render("review_needed", context)
    for part in (message.text, message.html, message.slack):
        assert "?decision=" not in part and "/a/" not in part
    assert "Approve" not in message.html and "Approve:" not in message.text
    assert [(b.label, b.url) for b in message.buttons] == [
        ("Open request", context["links"]["request"])
    ]
    assert "procure sends this to the purchasing team." in message.text


def test_approval_links_only_while_the_stage_is_open(session: Session, renderer: Renderer) -> None:
    rows = session.exec(
        select(Notification)
        .where(col(Notification.event).in_(sorted(APPROVAL_EVENTS)))
        .order_by(col(Notification.id))
    ).all()
    closed = []
    for row in rows:
        assert row.request_id is not None
        request = session.get(Request, row.request_id)
        assert request is not None
        if request.status != RequestStatus.IN_REVIEW:
            closed.append(row)
    assert closed, "the sample run has approval requests of decided requests"
    for row in closed:
        context = builder(session).build(row)
        assert not {"approve", "reject", "send_back", "page"} & set(context["links"])
        message = renderer.render(row.event, context)
        assert "?decision=" not in message.text + message.html
        assert "Approve" not in [b.label for b in message.buttons]


# ------------------------------------------------------------------ one environment per output


def test_each_output_escapes_for_its_own_kind(session: Session, renderer: Renderer) -> None:
    context = context_of(session, "cancelled")
    context["people"][RITA] = "Tom & <Jerry>"
    context["request"]["justification"] = "R&D <b>bold</b> > plan"
    message = renderer.render("cancelled", context)

    # Subject and text: as written.
    assert message.subject == f"{context['request']['id']} cancelled by Tom & <Jerry>"
    assert "Tom & <Jerry> cancelled" in message.text
    assert "R&D <b>bold</b> > plan" in message.text
    # HTML: escaped, exactly once.
    assert "Tom &amp; &lt;Jerry&gt;" in message.html
    assert "R&amp;D &lt;b&gt;bold&lt;/b&gt; &gt; plan" in message.html
    assert "<Jerry>" not in message.html and "<b>bold" not in message.html
    assert "&amp;amp;" not in message.html and "&amp;lt;" not in message.html
    assert not [tag for tag, _ in Tree(message.html).elements if tag in {"b", "jerry"}]
    # Slack: plain text, as written; Apprise escapes it once on the way out, so an escape
    # here would show "&amp;" in the channel.
    assert "Tom & <Jerry> cancelled" in message.slack
    assert "R&D <b>bold</b> > plan" in message.slack
    assert "&amp;" not in message.slack and "&lt;" not in message.slack


def test_the_slack_part_is_the_text_without_its_footer(
    session: Session, renderer: Renderer
) -> None:
    for event in ("approval_needed", "cancelled", "digest", "undeliverable"):
        message = renderer.render(event, context_of(session, event))
        assert message.text.startswith(message.slack), event
        footer = message.text[len(message.slack) :]
        assert footer.lstrip("\n").startswith("--\n") and "procure sends this to" in footer
        assert "procure sends this to" not in message.slack


# ------------------------------------------------------------------ hostile free text


def _has_hostile_text(context: dict[str, Any]) -> bool:
    return context["request"] is not None or bool(
        {"comment", "reason"} & set(context["notice"] or {})
    )


@pytest.mark.parametrize("event", EVENTS)
def test_hostile_free_text_is_harmless_in_every_event(
    hostile_session: Session, renderer: Renderer, event: str
) -> None:
    _, context = sample(hostile_session, event)
    message = renderer.render(event, context)

    # Subject: one line whatever a name or comment contains.
    assert "\r" not in message.subject and "\n" not in message.subject
    assert len(message.subject) <= SUBJECT_MAX
    # HTML: no script element and no event-handler attribute anywhere, only escaped text.
    assert "<script" not in message.html.lower() and "<img" not in message.html.lower()
    tree = Tree(message.html)
    assert "script" not in {tag for tag, _ in tree.elements}
    assert "img" not in {tag for tag, _ in tree.elements}
    assert not [
        (tag, name) for tag, attrs in tree.elements for name in attrs if name.startswith("on")
    ]
    # Slack: the text as written (Apprise escapes it once, on the way out), never pre-escaped.
    assert message.text.startswith(message.slack)
    assert "&lt;" not in message.slack and "&amp;" not in message.slack

    if _has_hostile_text(context):
        assert SCRIPT in message.slack
        # Emoji and right-to-left text come through intact where people wrote them.
        for part in (message.text, message.html):
            assert EMOJI in part and RTL in part
        # The plain text shows what people wrote, as they wrote it.
        assert SCRIPT in message.text
        assert html.escape(SCRIPT, quote=False) in message.html
        # Free text in the HTML sits inside an element with dir="auto".
        found = [where for text, where in tree.texts if RTL in text]
        assert found
        for where in found:
            assert any(attrs.get("dir") == "auto" for _, attrs in where), [t for t, _ in where]


def test_a_hostile_name_stays_on_one_subject_line(
    hostile_session: Session, renderer: Renderer
) -> None:
    _, context = sample(hostile_session, "cancelled")
    assert context["people"][RITA] == HOSTILE_NAME
    message = renderer.render("cancelled", context)
    flattened = f"Rita {NAME_RTL} {EMOJI} <script>alert(2)</script> Bcc: victim@example.com"
    assert message.subject == f"{context['request']['id']} cancelled by {flattened}"
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in message.html
    assert NAME_RTL in message.html and NAME_RTL in message.text
    # In the HTML every occurrence of the name is isolated, so its right-to-left script cannot
    # reorder the sentence around it; the title (no markup allowed there) is the subject.
    tree = Tree(message.html)
    shown = [where for text, where in tree.texts if NAME_RTL in text]
    assert len(shown) >= 2  # the heading and the hidden preheader at least
    for where in shown:
        if where[-1][0] != "title":
            assert where[-1][0] == "bdi", [tag for tag, _ in where]
    assert tree.title().strip() == message.subject
    assert "<bdi>" not in message.subject and "bdi" not in tree.title()
    # The quoted reason keeps its line break in the text, where it cannot start a header.
    assert CRLF in message.text


# ------------------------------------------------------------------ StrictUndefined


def _source_line(template: str, line: int) -> str:
    return (ROOT / template).read_text(encoding="utf-8").splitlines()[line - 1]


@pytest.mark.parametrize(
    ("event", "break_it", "template", "token"),
    [
        (
            "approval_needed",
            lambda c: c["notice"].pop("stage_name"),
            "approval_needed.j2",
            "notice.stage_name",
        ),
        ("cancelled", lambda c: c.pop("request"), "cancelled.j2", "request.id"),
        ("digest", lambda c: c["notice"].pop("sections"), "digest.j2", "s.waiting_for_you"),
        # Without its list, an alert reads as a row from before grouping: one device's fields.
        ("lifecycle_alert", lambda c: c["notice"].pop("devices"), "lifecycle_alert.j2", "serial"),
    ],
    ids=["notice-key", "no-request", "digest-sections", "lifecycle-devices"],
)
def test_a_missing_context_value_names_the_template_and_line(
    session: Session,
    renderer: Renderer,
    event: str,
    break_it: Any,
    template: str,
    token: str,
) -> None:
    context = context_of(session, event)
    break_it(context)
    with pytest.raises(RenderError) as info:
        renderer.render(event, context)
    error = info.value
    assert error.template == f"notifications/templates/{template}"
    assert error.line is not None and error.line >= 1
    assert str(error).startswith(f"{error.template}:{error.line}: ")
    assert "UndefinedError" in str(error)
    assert token in _source_line(error.template, error.line)
    problem = error.problem()
    assert (problem.source, problem.line) == (error.template, error.line)
    assert "UndefinedError" in problem.message


def test_an_undefined_value_passed_to_a_macro_names_the_macro_line(
    session: Session, renderer: Renderer
) -> None:
    context = context_of(session, "return_requested")
    del context["notice"]["reason"]
    with pytest.raises(RenderError) as info:
        renderer.render("return_requested", context)
    error = info.value
    assert error.template is not None and error.template.endswith(".j2")
    assert error.line is not None
    assert "'reason'" in str(error)
    # The macro that tests the value (or the event template that passes it) is named.
    assert "said" in _source_line(error.template, error.line) or "reason" in _source_line(
        error.template, error.line
    )


def test_a_bad_amount_in_the_context_names_the_template_line(
    session: Session, renderer: Renderer
) -> None:
    context = context_of(session, "approved")
    context["request"]["total"] = "a lot"
    with pytest.raises(RenderError) as info:
        renderer.render("approved", context)
    error = info.value
    assert "not an amount: 'a lot'" in str(error)
    assert error.template is not None and error.line is not None
    assert "money" in _source_line(error.template, error.line)


@pytest.mark.parametrize(
    "event", ["nope", "../approved", "_base", "_message", "Approved", "approved.j2", "", "a" * 70]
)
def test_an_unknown_event_is_a_render_error(
    session: Session, renderer: Renderer, event: str
) -> None:
    context = context_of(session, "approved")
    with pytest.raises(RenderError, match="no template for event"):
        renderer.render(event, context)


# ------------------------------------------------------------------ the override folder


def _override(folder: Path, name: str, source: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(source, encoding="utf-8")
    return path


def test_an_override_replaces_its_event_only(
    session: Session, renderer: Renderer, tmp_path: Path
) -> None:
    _override(
        tmp_path,
        "approved.j2",
        '{% extends "_message.j2" %}\n'
        "{% block headline %}Go ahead: {{ request.id }} for {{ request.total|money }}"
        "{% endblock %}\n"
        "{% block message %}ACME says yes to {{ request.justification }}.{% endblock %}\n",
    )
    custom = Renderer(overrides=tmp_path)
    context = context_of(session, "approved")
    message = custom.render("approved", context)
    request = context["request"]
    assert message.warnings == ()
    assert message.subject == f"Go ahead: {request['id']} for {money(request['total'])}"
    assert f"ACME says yes to {request['justification']}." in message.text
    assert "<h1" in message.html and "Go ahead:" in message.html
    assert message != renderer.render("approved", context)
    # Another event keeps the built-in template.
    rejected = context_of(session, "rejected")
    assert custom.render("rejected", rejected) == renderer.render("rejected", rejected)


def test_an_overridden_partial_changes_every_event(
    session: Session, renderer: Renderer, tmp_path: Path
) -> None:
    base = (TEMPLATES / "_base.j2").read_text(encoding="utf-8")
    assert base.count("procure sends this to") == 2
    _override(tmp_path, "_base.j2", base.replace("procure sends this to", "ACME procure mails"))
    custom = Renderer(overrides=tmp_path)
    for event in ("rejected", "digest"):
        context = context_of(session, event)
        message = custom.render(event, context)
        assert message.warnings == ()
        assert f"ACME procure mails {addressed(context)}." in message.text
        assert "ACME procure mails" in message.html
        assert message.subject == renderer.render(event, context).subject


def test_a_broken_partial_falls_back_for_every_event(
    session: Session, renderer: Renderer, tmp_path: Path
) -> None:
    _override(tmp_path, "_message.j2", "{% block headline %}{{ unclosed {% endblock %}")
    custom = Renderer(overrides=tmp_path)
    for event in ("approved", "closed"):
        context = context_of(session, event)
        message = custom.render(event, context)
        assert message == renderer.render(event, context)
        (warning,) = message.warnings
        assert "_message.j2" in warning and "TemplateSyntaxError" in warning


BROKEN_OVERRIDES = {
    "syntax": ("{{ request.id ", "TemplateSyntaxError"),
    "undefined": ("{{ no_such_value }}", "'no_such_value' is undefined"),
    "range": ("{% for i in range(10**9) %}{{ i }}{% endfor %}", "range longer than 1000"),
    "repeat": ("{{ 'x' * 10**9 }}", "repetition too large"),
    "power": ("{{ 2 ** 100000 }}", "power too large"),
    "filter": ("{{ 'x'|center(100000) }}", "too large"),
    "attribute": ("{{ ''.__class__.__mro__ }}", "unsafe"),
    "doubling-macro": (
        "{% macro grow(s) %}{{ grow(s ~ s) }}{% endmacro %}{{ grow('x') }}",
        "value too large",
    ),
    "output": (
        "{% for i in range(1000) %}{{ 'x' * 60000 }}{% endfor %}",
        "output longer than",
    ),
}


@pytest.mark.parametrize("problem", list(BROKEN_OVERRIDES))
def test_a_broken_override_falls_back_to_the_built_in_template(
    session: Session, renderer: Renderer, tmp_path: Path, problem: str
) -> None:
    source, says = BROKEN_OVERRIDES[problem]
    path = _override(
        tmp_path,
        "approved.j2",
        f'{{% extends "_message.j2" %}}{{% block headline %}}{source}{{% endblock %}}',
    )
    context = context_of(session, "approved")
    message = Renderer(overrides=tmp_path).render("approved", context)
    assert message == renderer.render("approved", context)  # warnings are not compared
    (warning,) = message.warnings
    assert warning.startswith("template override failed, used the built-in one: ")
    assert says in warning
    assert str(path) in warning or "approved.j2" in warning


def test_a_slow_override_is_stopped_and_falls_back(
    session: Session, renderer: Renderer, tmp_path: Path
) -> None:
    # A billion iterations with every range within its bound: only the clock stops it.
    _override(
        tmp_path,
        "approved.j2",
        '{% extends "_message.j2" %}{% block headline %}'
        "{% for i in range(1000) %}{% for j in range(1000) %}{% for k in range(1000) %}"
        "{% endfor %}{% endfor %}{% endfor %}slow{% endblock %}",
    )
    context = context_of(session, "approved")
    message = Renderer(overrides=tmp_path).render("approved", context)
    assert message == renderer.render("approved", context)
    (warning,) = message.warnings
    assert f"took longer than {OVERRIDE_SECONDS:g} s to render" in warning
    assert "approved.j2" in warning


def test_a_recursive_override_falls_back(
    session: Session, renderer: Renderer, tmp_path: Path
) -> None:
    _override(
        tmp_path,
        "approved.j2",
        '{% extends "_message.j2" %}'
        "{% macro deeper(n) %}{{ deeper(n + 1) }}{% endmacro %}"
        "{% block headline %}{{ deeper(0) }}{% endblock %}",
    )
    context = context_of(session, "approved")
    message = Renderer(overrides=tmp_path).render("approved", context)
    assert message == renderer.render("approved", context)
    assert message.warnings


@pytest.mark.parametrize(
    "body",
    [
        # A string doubled inside a list, through a macro and through a recursive loop:
        # the size bound counts the strings inside containers too.
        "{% macro d(l) %}{{ d([l[0] ~ l[0]]) }}{% endmacro %}{{ d(['x']) }}",
        "{% for x in ['x'] recursive %}{{ loop([x ~ x]) }}{% endfor %}",
        "{% macro d(m) %}{{ d({'k': m.k ~ m.k}) }}{% endmacro %}{{ d({'k': 'x'}) }}",
    ],
)
def test_a_string_doubled_inside_a_container_is_stopped_by_the_size_bound(
    session: Session, renderer: Renderer, tmp_path: Path, body: str
) -> None:
    _override(
        tmp_path,
        "approved.j2",
        '{% extends "_message.j2" %}{% block headline %}' + body + "{% endblock %}",
    )
    context = context_of(session, "approved")
    message = Renderer(overrides=tmp_path).render("approved", context)
    assert message == renderer.render("approved", context)
    assert "value too large for a template" in message.warnings[0]


def test_an_override_with_an_empty_subject_falls_back(
    session: Session, renderer: Renderer, tmp_path: Path
) -> None:
    _override(
        tmp_path,
        "approved.j2",
        '{% extends "_message.j2" %}{% block headline %}{{ "  " }}\n{% endblock %}',
    )
    custom = Renderer(overrides=tmp_path)
    context = context_of(session, "approved")
    message = custom.render("approved", context)
    assert message == renderer.render("approved", context)
    (warning,) = message.warnings
    assert "rendered an empty subject or text" in warning
    # The check itself is a RenderError naming the template.
    with pytest.raises(RenderError, match="empty subject or text") as info:
        custom._render_all(custom.sandboxes, "approved", context, bounded=True)
    assert info.value.template == "approved.j2"


def test_an_override_with_an_empty_text_falls_back(
    session: Session, renderer: Renderer, tmp_path: Path
) -> None:
    _override(
        tmp_path,
        "closed.j2",
        "{% if part == 'subject' %}Closed{% elif part == 'html' %}<p>x</p>{% endif %}",
    )
    context = context_of(session, "closed")
    message = Renderer(overrides=tmp_path).render("closed", context)
    assert message == renderer.render("closed", context)
    assert "empty subject or text" in message.warnings[0]


def test_an_override_folder_that_is_a_file_is_bad_input(tmp_path: Path) -> None:
    path = tmp_path / "templates.j2"
    path.write_text("{{ x }}", encoding="utf-8")
    for folder in (path, tmp_path / "missing"):
        with pytest.raises(InputError, match="PROCURE_TEMPLATES_DIR") as info:
            Renderer(overrides=folder)
        (problem,) = info.value.problems
        assert problem.field == "PROCURE_TEMPLATES_DIR"
        assert str(folder) in problem.message and "not a folder" in problem.message


# ------------------------------------------------------------------ filters


@pytest.mark.parametrize(
    ("value", "currency", "expected"),
    [
        ("1234.5", "EUR", "€1,234.50"),
        (Decimal("1098"), "EUR", "€1,098.00"),
        ("-1234.5", "USD", "-$1,234.50"),
        ("0.1", "GBP", "£0.10"),
        ("99.999", "CHF", "CHF 100.00"),
        ("1234567.891", "EUR", "€1,234,567.89"),
        (7, "EUR", "€7.00"),
        ("5", "SEK", "SEK 5.00"),
        ("-0.001", "EUR", "€0.00"),
        (None, "EUR", "—"),
    ],
)
def test_money(value: Any, currency: str, expected: str) -> None:
    assert money(value, currency) == expected


def test_money_defaults_to_euro_and_refuses_what_is_not_an_amount() -> None:
    assert money("12") == "€12.00"
    with pytest.raises(ValueError, match="not an amount: 'twelve'"):
        money("twelve")


def test_an_individual_order_cheaper_than_the_agreement_reads_less_not_minus_more(
    session: Session, renderer: Renderer
) -> None:
    assert (than("2900.00"), than("-1900.00", "SEK"), than("0.00")) == (
        "€2,900.00 more than",
        "SEK 1,900.00 less than",
        "the same as",
    )
    context = context_of(session, "approval_needed")
    src = context["request"]["sourcing"][0]
    src.update(mode="individual", framework_agreement="FA-2026-NORDIC", difference="-1900.00")
    src.update(framework_price="879.00", justification="")
    message = renderer.render("approval_needed", context)
    assert "individual order: €1,900.00 less than under FA-2026-NORDIC at €879.00" in message.text
    assert "€1,900.00 less than FA-2026-NORDIC" in message.html
    assert "-€1,900.00" not in message.text + message.html


@pytest.mark.parametrize(("value", "expected"), [("0.125", "€0.13"), ("2.665", "€2.67")])
def test_money_rounds_half_a_cent_up_like_the_ledger(value: str, expected: str) -> None:
    assert money(value) == expected


@pytest.mark.parametrize(
    ("count", "args", "expected"),
    [
        (1, ("device",), "1 device"),
        (0, ("device",), "0 devices"),
        (3, ("device",), "3 devices"),
        ("2", ("entry", "entries"), "2 entries"),
        (1, ("entry", "entries"), "1 entry"),
    ],
)
def test_plural(count: Any, args: tuple[str, ...], expected: str) -> None:
    assert plural(count, *args) == expected


def test_label() -> None:
    assert label("in_review") == "in review"
    assert label("send_back") == "send back"
    assert label("approve") == "approve"
    assert label(None) == "—"


def test_an_ownership_kind_keeps_its_capitals_at_the_start_of_a_sentence() -> None:
    """'DaaS' and 'IT' keep their capitals where a sentence starts with them (Jinja's
    capitalize made 'Daas'); what ends for a device reads 'DaaS contract', 'lease', 'warranty'."""
    assert [label(k) for k in ("daas", "lease", "leased")] == ["DaaS", "lease", "leased"]
    assert [sentence(label(k)) for k in ("daas", "lease", "it_review")] == [
        "DaaS",
        "Lease",
        "IT review",
    ]
    assert [ending(k) for k in ("daas", "lease", "warranty")] == [
        "DaaS contract",
        "lease",
        "warranty",
    ]
    assert [sentence(ending(k)) for k in ("daas", "lease")] == ["DaaS contract", "Lease"]
    assert sentence("") == ""


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-12-07", "Mon 7 Dec 2026"),
        (date(2027, 1, 6), "Wed 6 Jan 2027"),
        (datetime(2026, 11, 25, 9, 0, tzinfo=UTC), "Wed 25 Nov 2026"),
        ("2026-11-25T09:00:00+00:00", "Wed 25 Nov 2026"),
        (None, "—"),
        ("", "—"),
    ],
)
def test_day(value: Any, expected: str) -> None:
    assert day(value) == expected


def test_day_refuses_what_is_not_a_date() -> None:
    with pytest.raises(ValueError, match="not a date"):
        day("next tuesday")


@pytest.mark.parametrize(
    ("value", "tz", "expected"),
    [
        ("2026-11-25T09:00:00+00:00", "Europe/Berlin", "Wed 25 Nov 2026, 10:00 CET"),
        ("2026-07-01T12:00:00+00:00", "Europe/Berlin", "Wed 1 Jul 2026, 14:00 CEST"),
        ("2026-11-25T09:00:00", "Europe/Berlin", "Wed 25 Nov 2026, 10:00 CET"),  # naive: UTC
        ("2026-11-25T09:00:00+00:00", "America/New_York", "Wed 25 Nov 2026, 04:00 EST"),
        ("2026-11-25T23:30:00+00:00", "Europe/Berlin", "Thu 26 Nov 2026, 00:30 CET"),
        ("2026-11-25T09:00:00+00:00", None, "Wed 25 Nov 2026, 09:00 UTC"),
        ("2026-12-07", "Europe/Berlin", "Mon 7 Dec 2026"),
        (None, "Europe/Berlin", "—"),
    ],
)
def test_when_reads_the_time_zone_from_the_context(
    renderer: Renderer, value: Any, tz: str | None, expected: str
) -> None:
    template = renderer.envs["text"].from_string("{{ moment|when }}")
    variables: dict[str, Any] = {"moment": value}
    if tz is not None:
        variables["tz"] = tz
    assert template.render(variables) == expected


def test_who_names_people_from_the_context(renderer: Renderer) -> None:
    template = renderer.envs["text"].from_string("{{ a|who }} / {{ b|who }} / {{ c|who }}")
    people = {"ann@example.com": "Ann Analyst"}
    assert (
        template.render(a="ann@example.com", b="bob@example.com", c=None, people=people)
        == "Ann Analyst / bob@example.com / —"
    )


def test_filters_are_the_same_in_every_output(renderer: Renderer) -> None:
    source = "{{ n|plural('device') }} {{ a|money('USD') }} {{ s|label }} {{ d|day }}"
    values = {"n": 2, "a": "1500", "s": "to_order", "d": "2026-12-07"}
    expected = "2 devices $1,500.00 to order Mon 7 Dec 2026"
    for env in renderer.envs.values():
        assert env.from_string(source).render(values) == expected


# ------------------------------------------------------------------ devices handed out


def test_device_assigned_lists_a_persons_devices_in_one_message(
    session: Session, renderer: Renderer
) -> None:
    """Nina's laptop and dock were two messages; the preview is her one message listing both."""
    row, context = sample(session, "device_assigned")
    assert row.audience == f"person:{NINA}"
    devices = context["notice"]["devices"]
    assert [(d["serial"], d["sku"]) for d in devices] == [
        ("SN-SAMPLE-0001", "LAPTOP-STD-14"),
        ("SN-SAMPLE-0002", "DOCK-USB4"),
    ]
    message = renderer.render("device_assigned", context)
    ref = context["request"]["id"]
    assert message.subject == f"Your 2 devices of {ref} are ready"
    assert f"IT assigned the 2 devices listed below to you ({ref})." in message.text
    for part in (message.text, message.slack):
        assert '  SN-SAMPLE-0001 · LAPTOP-STD-14 (Standard laptop 14")\n' in part
        assert "  SN-SAMPLE-0002 · DOCK-USB4 (USB4 docking station)\n" in part
    tree = Tree(message.html)
    cells = [text for text, where in tree.texts if where and where[-1][0] == "td"]
    assert [c for c in cells if c.startswith(("SN-", "LAPTOP", "DOCK"))] == [
        "SN-SAMPLE-0001",
        "LAPTOP-STD-14 ",
        "SN-SAMPLE-0002",
        "DOCK-USB4 ",
    ]
    assert "Standard laptop 14&#34;" in message.html and "USB4 docking station" in message.html
    assert "With</th>" not in message.html  # they are all the reader's: no holder column
    assert not LEAKS.search(message.text + message.html)
    # The way to confirm: a link to the receipt page, for Nina and this request, in each part.
    link = context["links"]["receipt"]
    assert link.startswith(f"{BASE_URL}/k/")
    grant = read_receipt_token(link.rsplit("/", 1)[1], KEY, NOW)
    nina = session.exec(select(Person).where(Person.email == NINA)).one()
    assert (grant.person_id, grant.request_id) == (nina.id, row.request_id)
    assert f"\n\nConfirm you received them: {link}\n\nYour devices\n" in message.text
    assert f"Confirm you received them: {link}" in message.slack
    assert f'href="{html.escape(link)}"' in message.html
    assert "Confirm you received them</a>" in message.html
    assert [(b.label, b.url, b.style) for b in message.buttons] == [
        ("Confirm receipt", link, "primary"),
        ("Open request", context["links"]["request"], ""),
    ]


def test_only_a_person_handed_devices_gets_a_receipt_link(session: Session) -> None:
    for event, rows in sample_copies(session).items():
        for row in rows:
            links = builder(session).build(row)["links"]
            expected = event == "device_assigned" and row.audience.startswith("person:")
            assert ("receipt" in links) == expected, (event, row.audience)


def test_device_assigned_for_one_device_names_it_and_an_older_row_reads_so_too(
    session: Session, renderer: Renderer
) -> None:
    (one,) = [r for r in sample_copies(session)["device_assigned"] if not sample_variant(r)[2]]
    context = builder(session).build(one)
    (device,) = context["notice"]["devices"]
    message = renderer.render("device_assigned", context)
    assert message.subject == f"Your LAPTOP-STD-14 ({device['serial']}) is ready"
    assert (
        f'IT assigned the device LAPTOP-STD-14 (Standard laptop 14") with serial number '
        f"{device['serial']} to you ({context['request']['id']})."
    ) in message.text
    assert "Your devices" not in message.text and "Serial</th>" not in message.html
    assert f"Confirm you received it: {context['links']['receipt']}" in message.text
    assert "Confirm you received it</a>" in message.html
    assert context["asset"]["serial"] == device["serial"]  # the one device's own row
    # A row queued before devices were grouped holds its device's serial and sku only.
    legacy = copy.deepcopy(context)
    legacy["notice"] = {"serial": device["serial"], "sku": device["sku"]}
    old = renderer.render("device_assigned", legacy)
    assert old.subject == message.subject
    assert f"IT assigned the device LAPTOP-STD-14 with serial number {device['serial']}" in old.text


@pytest.mark.parametrize("event", ["return_requested", "return_cancelled"])
def test_a_return_s_reason_is_in_the_words_of_whoever_asked(
    session: Session, renderer: Renderer, event: str
) -> None:
    """IT's reason is quoted under IT's name; a scheduled flow's (a lease ending, a leaver) reads
    "Why: …"; a row queued before the asker was kept, the same way. Never "Reason wrote:"."""
    row = sample_rows(session)[event]
    context = builder(session).build(row)
    asker = context["people"][context["notice"]["by"]]
    said = context["notice"]["reason"]
    message = renderer.render(event, context)
    assert f'{asker} wrote:\n  "{said}"' in message.text
    assert f"{html.escape(asker)}</bdi></span> wrote:" in message.html
    for by in ("system", None):
        flow = copy.deepcopy(context)
        flow["notice"] = {**flow["notice"], "by": by, "reason": "the lease ends on 2027-01-31"}
        if by is None:
            del flow["notice"]["by"]
        text = renderer.render(event, flow).text
        assert "Why: The lease ends on 2027-01-31" in text and "wrote" not in text, by
        assert "<strong>Why:</strong>" in renderer.render(event, flow).html


# ------------------------------------------------------------------ lifecycle alerts


def _lifecycle_alerts(session: Session) -> dict[int, dict[str, Any]]:
    """The sample run's lifecycle alerts to IT by the number of devices they list: Nina's laptop
    alone, and the three desk laptops of one request ending the same day."""
    rows = session.exec(
        select(Notification).where(
            Notification.event == "lifecycle_alert", Notification.audience == "team:it"
        )
    ).all()
    contexts = [builder(session).build(row) for row in rows]
    return {c["notice"]["count"]: c for c in contexts}


def test_a_lifecycle_alert_lists_every_device_of_its_group(
    session: Session, renderer: Renderer
) -> None:
    context = _lifecycle_alerts(session)[3]
    assert sample_rows(session)["lifecycle_alert"].context == context["notice"]  # the preview
    notice = context["notice"]
    message = renderer.render("lifecycle_alert", context)
    assert message.subject.startswith(f"Warranty of 3 devices of {notice['ref']} ends ")
    assert f"The warranty of the 3 devices of {notice['ref']} listed below" in message.text
    assert "one refresh request for all of them for Rita Requester to confirm" in message.text
    for device in notice["devices"]:
        holder = context["people"][device["holder"]]
        assert f"  {device['serial']} · {device['sku']} · {holder}\n" in message.text
        assert f">{device['serial']}</td>" in message.html
        assert f"<bdi>{html.escape(holder)}</bdi>" in message.html
    assert [d["holder"] for d in notice["devices"]] == [NINA, BOB, SARA]
    assert "Status</th>" not in message.html  # the devices are in use: no status column


def test_a_lifecycle_alert_for_one_device_reads_as_before_grouping(
    session: Session, renderer: Renderer
) -> None:
    context = _lifecycle_alerts(session)[1]
    (device,) = context["notice"]["devices"]
    message = renderer.render("lifecycle_alert", context)
    assert message.subject.startswith(f"Warranty of {device['serial']} ends ")
    assert (
        f"The warranty of {device['sku']} {device['serial']}, used by Nina Newhire, ends on"
        in message.text
    )
    assert "Devices" not in message.text
    # A row queued before alerts were grouped (one device's fields, no list) reads the same.
    legacy = copy.deepcopy(context)
    notice = legacy["notice"]
    legacy["notice"] = {
        **{k: notice[k] for k in ("ends", "end", "days_left")},
        **device,
    }
    assert renderer.render("lifecycle_alert", legacy) == message


# ------------------------------------------------------------------ the calendar attachment


def test_delivery_scheduled_attaches_a_calendar_entry(session: Session, renderer: Renderer) -> None:
    _, context = sample(session, "delivery_scheduled")
    message = renderer.render("delivery_scheduled", context)
    (attachment,) = message.attachments
    request_id = context["request"]["id"]
    assert attachment.content_type == "text/calendar"
    assert attachment.filename == f"delivery-{request_id}.ics"
    data = attachment.data
    assert data.count(b"\n") == data.count(b"\r\n") and data.endswith(b"\r\n")
    lines = data.split(b"\r\n")[:-1]
    assert all(len(line) <= 75 for line in lines), [len(line) for line in lines]
    text = data.decode("utf-8").replace("\r\n ", "")  # unfolded
    unfolded = text.split("\r\n")
    assert unfolded[0] == "BEGIN:VCALENDAR" and unfolded[-2] == "END:VCALENDAR"
    on = context["notice"]["date"].replace("-", "")
    assert f"DTSTART;VALUE=DATE:{on}" in unfolded
    (uid,) = [line for line in unfolded if line.startswith("UID:")]
    assert re.fullmatch(rf"UID:delivery-{request_id}-[0-9a-f]{{12}}@procure", uid)
    assert f"SEQUENCE:{context['notice']['sequence']}" in unfolded
    assert f"DTSTAMP:{NOW:%Y%m%dT%H%M%SZ}" in unfolded
    assert any(line.startswith(f"SUMMARY:Delivery of {request_id}") for line in unfolded)
    # The folded continuation lines start with a space.
    assert any(line.startswith(b" ") for line in lines)


def test_a_moved_delivery_date_updates_the_same_calendar_event() -> None:
    """The UID held the date: a moved delivery added a second event to the calendar, the old
    date's stayed. Now one event per request, its SEQUENCE rising with each change; another
    installation's request of the same number (created at another time) is another event."""
    request = {
        "id": "PR-0042",
        "kind": "onboarding",
        "on_behalf_of": "nina@example.com",
        "requester": "rita@example.com",
        "needed_by": "2026-12-30",
        "created_at": "2026-11-25T09:00:00+00:00",
        "lines": [{"quantity": 1}],
    }

    def entry(on: str, sequence: int, **changes: str) -> dict[str, str]:
        data = delivery_invite({**request, **changes}, on, NOW, sequence=sequence).data
        lines = data.decode().replace("\r\n ", "").split("\r\n")
        return dict(line.split(":", 1) for line in lines if ":" in line)

    first, moved = entry("2026-12-08", 3), entry("2026-12-15", 5)
    assert first["UID"] == moved["UID"]
    assert (first["SEQUENCE"], moved["SEQUENCE"]) == ("3", "5")
    assert (first["DTSTART;VALUE=DATE"], moved["DTSTART;VALUE=DATE"]) == ("20261208", "20261215")
    elsewhere = entry("2026-12-08", 3, created_at="2026-10-01T12:00:00+00:00")
    assert elsewhere["UID"] != first["UID"]


def test_only_delivery_scheduled_has_an_attachment(session: Session, renderer: Renderer) -> None:
    for event in EVENTS:
        message = renderer.render(event, context_of(session, event))
        assert bool(message.attachments) == (event == "delivery_scheduled"), event


def test_a_part_delivered_without_a_date_says_what_arrived_and_announces_no_date(
    session: Session, renderer: Renderer
) -> None:
    """Two of the three desk laptops arrived before a delivery date was agreed: the requester,
    IT and purchasing read how many arrived and that the third has no date, and get no date
    and no calendar invitation for it; when all have arrived, the notice reads as before."""
    copies = sample_copies(session)["delivered"]
    assert sorted(sample_variant(r) for r in copies) == [
        ("person", False, False),
        ("person", True, False),
        ("team", False, False),
        ("team", True, False),
    ]
    partial = [r for r in copies if sample_variant(r)[1]]
    whole = sample_rows(session)["delivered"]
    assert not sample_variant(whole)[1]  # the preview shows the common case
    for row in partial:
        context = builder(session).build(row)
        ref = context["request"]["id"]
        message = renderer.render("delivered", context)
        assert message.subject == f"{ref}: 2 of 3 units arrived, no delivery date for the other 1"
        said = (
            f"2 of the 3 units of {ref} have arrived (by Tue 15 Dec 2026) and their serial "
            "numbers are recorded. No delivery date is agreed for the other 1: purchasing "
            "records it with procure schedule once the supplier confirms it. IT hands the "
            "devices out when all have arrived."
        )
        for part in (message.text, message.slack, html.unescape(message.html)):
            assert said in part
            assert "arrive on" not in part and "scheduled" not in part.lower()
        assert not message.attachments and not message.warnings
        assert not LEAKS.search(message.text + message.html)
    told = session.exec(select(Notification).where(Notification.event == "delivered")).all()
    assert {r.audience for r in told if sample_variant(r)[1]} == {
        f"person:{RITA}",
        "team:it",
        "team:purchasing",
    }
    whole_message = renderer.render("delivered", builder(session).build(whole))
    assert "delivered: " in whole_message.subject and "no delivery date" not in whole_message.text


def test_a_calendar_entry_folds_multibyte_text_by_octets() -> None:
    request = {
        "id": "PR-0042",
        "kind": "onboarding",
        "on_behalf_of": "Zoë Ünal; Ärger, " + "é" * 80 + "\r\nX-INJECTED:1",
        "requester": "rita@example.com",
        "needed_by": "2026-12-30",
        "lines": [{"quantity": 2}, {"quantity": "3"}],
    }
    attachment = delivery_invite(request, "2026-12-21", NOW)
    data = attachment.data
    lines = data.split(b"\r\n")[:-1]
    assert all(len(line) <= 75 for line in lines)
    assert data.count(b"\n") == data.count(b"\r\n")
    for line in lines:
        line.decode("utf-8")  # a fold never splits a character
    unfolded = data.decode("utf-8").replace("\r\n ", "").split("\r\n")
    assert "DTSTART;VALUE=DATE:20261221" in unfolded
    assert "SUMMARY:Delivery of PR-0042: 5 device(s)" in unfolded
    (description,) = [line for line in unfolded if line.startswith("DESCRIPTION:")]
    assert "Zoë Ünal\\; Ärger\\, " in description and "\\nX-INJECTED:1" in description
    assert not [line for line in unfolded if line.startswith("X-INJECTED")]


# ------------------------------------------------------------------ wording


def test_a_team_s_review_notice_reads_as_sentences(session: Session, renderer: Renderer) -> None:
    finance = renderer.render(
        "review_needed", builder(session).build(sample_rows(session, "finance")["review_needed"])
    )
    assert re.search(r"waits for Finance approval\. Decide by \w{3} \d", finance.text), finance.text
    joint = renderer.render(
        "review_needed", builder(session).build(sample_rows(session, "it")["review_needed"])
    )
    assert "the contract terms; decide by " in joint.text
    for message in (finance, joint):
        assert not re.search(r"\. [a-z]", message.text.split("\n\n")[1]), message.text


def test_the_digest_names_stages_as_the_other_notices_do(
    session: Session, renderer: Renderer
) -> None:
    message = renderer.render("digest", context_of(session, "digest"))
    assert " · Joint review (IT and purchasing) · due " in message.text, message.text
    assert " · joint review · " not in message.text
    assert " &middot; Joint review (IT and purchasing) &middot; due " in message.html
    assert "\n\nThis is the " in message.text


def test_the_digest_lists_the_late_stages_escalated_to_the_team(
    session: Session, renderer: Renderer
) -> None:
    """A week after the sample's joint review was due, management's digest lists it (and the
    check renders every team's digest: their sections differ)."""
    copies = {row.audience for row in sample_copies(session)["digest"]}
    assert copies == {f"team:{t}" for t in ("it", "purchasing", "hr", "finance", "management")}
    row = sample_rows(session, "management")["digest"]
    context = copy.deepcopy(builder(session).build(row))
    message = renderer.render("digest", context)
    assert message.subject.endswith(", 3 late stages escalated to you"), message.subject
    late = re.findall(
        r"^  (PR-\d+) · (.+) · due (.+), (.+ late) · waiting for (.+)$", message.text, re.M
    )
    assert late[0][1:] == (
        "Joint review (IT and purchasing)",
        "Thu 26 Nov 2026, 17:00 CET",
        "3 working days late",
        "IT, purchasing: Ida Infrastructure, Ivan Install, Paul Purchasing, Petra Price",
    ), message.text
    assert late[-1][1:] == (
        "Finance approval",
        "Fri 27 Nov 2026, 16:00 CET",
        "2 working days late",
        "finance: nobody may decide it",
    ), message.text
    assert "Past their deadline, escalated to you: 3</h2>" in message.html
    assert (
        '3 working days late</strong> &middot; waiting for IT, purchasing: <span dir="auto"><bdi>Ida Infrastructure</bdi></span>'
        in message.html
    )
    # Less than a working day late says the hours; past the day's end, less than one hour.
    item = context["notice"]["sections"]["escalated_late"]["items"][0]
    item.update(late_workdays=0, late_hours=1)
    assert "17:00 CET, 1 working hour late · " in renderer.render("digest", context).text
    item.update(late_workdays=0, late_hours=0)
    assert "17:00 CET, less than a working hour late · " in renderer.render("digest", context).text


def test_the_undeliverable_notice_leaves_a_blank_line_after_the_error(
    session: Session, renderer: Renderer
) -> None:
    """The error stands apart from the summary of the request the notification was about."""
    context = context_of(session, "undeliverable")
    context["request"] = context_of(session, "approved")["request"]
    message = renderer.render("undeliverable", context)
    error = context["notice"]["error"]
    assert f"Last error:\n  {error}\n\n  Request     PR-" in message.text, message.text


# ------------------------------------------------------------------ procure notify


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Any:
    monkeypatch.setenv("PROCURE_HOME", str(tmp_path / "home"))
    for name in (
        "PROCURE_TEMPLATES_DIR",
        "PROCURE_APPRISE_CONFIG",
        "PROCURE_SECRET_KEY",
        "PROCURE_ENVIRONMENT",
        "PROCURE_BASE_URL",
    ):
        monkeypatch.delenv(name, raising=False)

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def test_notify_check_passes_the_built_in_templates(cli: Any, tmp_path: Path) -> None:
    folder = tmp_path / "overrides"
    folder.mkdir()
    code, out, err = cli("notify", "check", "--templates", str(folder))
    assert code == 0, err
    assert f"{len(EVENTS)} of {len(EVENTS)} events render cleanly" in out
    assert str(folder) in out


def test_notify_check_passes_a_good_override(cli: Any, tmp_path: Path) -> None:
    folder = tmp_path / "overrides"
    _override(
        folder,
        "approved.j2",
        '{% extends "_message.j2" %}{% block headline %}OK {{ request.id }}{% endblock %}',
    )
    code, out, err = cli("notify", "check", "--templates", str(folder))
    assert code == 0, err
    assert f"{len(EVENTS)} of {len(EVENTS)} events render cleanly" in out


def test_notify_check_fails_on_a_broken_override(cli: Any, tmp_path: Path) -> None:
    folder = tmp_path / "overrides"
    _override(
        folder,
        "approved.j2",
        '{% extends "_message.j2" %}{% block headline %}{{ no_such_value }}{% endblock %}',
    )
    code, out, err = cli("notify", "check", "--templates", str(folder))
    assert code == 2
    assert f"{len(EVENTS) - 1} of {len(EVENTS)} events render cleanly" in out
    assert "approved.j2" in err and "'no_such_value' is undefined" in err
    assert "template override failed" in err
    # The person's copy and the team's fall back alike: the failure is reported once.
    assert err.count("'no_such_value' is undefined") == 1, err


def test_notify_check_names_an_override_no_event_uses(cli: Any, tmp_path: Path) -> None:
    folder = tmp_path / "overrides"
    _override(folder, "aproved.j2", "{% block subject %}never used{% endblock %}")
    _override(folder, "_our_macros.j2", "{% macro sign() %}Facilities{% endmacro %}")
    code, _, err = cli("notify", "check", "--templates", str(folder))
    assert code == 2
    assert f"{folder / 'aproved.j2'}: no event is called 'aproved'" in err
    assert "(did you mean approved.j2?)" in err
    assert "_our_macros" not in err  # a partial of the organisation's own may be imported


def test_notify_check_refuses_a_templates_path_that_is_a_file(cli: Any, tmp_path: Path) -> None:
    path = tmp_path / "not-a-folder"
    path.write_text("x", encoding="utf-8")
    code, _, err = cli("notify", "check", "--templates", str(path))
    assert code == 2
    assert "PROCURE_TEMPLATES_DIR" in err and "not a folder" in err


def test_notify_preview_sample(cli: Any) -> None:
    code, out, err = cli("notify", "preview", "approval_needed", "--sample")
    assert code == 0, err
    assert out.startswith("To: person:")
    assert "\nSubject: Your decision: PR-" in out
    assert "Approve:    http://127.0.0.1:8000/a/" in out  # the default base URL


def test_notify_preview_a_queued_notification_by_its_id(cli: Any, tmp_path: Path) -> None:
    """`notify status` lists rows as #N; `--id N` previews one of them, a request's or one of
    no request (an HR leaver's, a digest) alike."""
    import json

    assert cli("init", "--sample")[0] == 0
    request = tmp_path / "request.yaml"
    request.write_text(
        "kind: onboarding\nrequester: rita.requester@example.com\n"
        "on_behalf_of: nina.newhire@example.com\ncost_centre: CC-ENG\nneeded_by: 2027-01-15\n"
        "justification: Nina joins.\nlines: [{sku: LAPTOP-STD-14, quantity: 1}]\n",
        encoding="utf-8",
    )
    assert cli("request", "submit", str(request))[0] == 0
    code, out, err = cli("notify", "status", "--json")
    assert code == 0, err
    rows = json.loads(out)["items"]
    row = next(r for r in rows if r["event"] == "review_needed")
    code, out, err = cli("notify", "preview", "review_needed", "--id", str(row["id"]))
    assert code == 0, err
    assert out.startswith(f"To: {row['audience']}\nSubject: ")
    for args, says in (
        (
            ["review_needed", "--id", "9999"],
            "--id: no notification #9999 (notify status lists them)",
        ),
        (
            ["approved", "--id", str(row["id"])],
            f"--id: #{row['id']} is a review_needed notification, not approved",
        ),
        (
            ["review_needed", "--id", str(row["id"]), "--to", "finance"],
            f"--to: #{row['id']} goes to {row['audience']}, not finance",
        ),
    ):
        code, out, err = cli("notify", "preview", *args)
        assert (code, out) == (2, ""), args
        assert says in err, err


def test_notify_preview_sample_to_one_audience(cli: Any) -> None:
    # The common escalation by default; a part nobody may decide is management's copy.
    code, out, err = cli("notify", "preview", "no_approver", "--sample")
    assert code == 0, err
    assert "\nSubject: Escalated to you: PR-" in out
    code, out, err = cli("notify", "preview", "no_approver", "--sample", "--to", "management")
    assert code == 0, err
    assert out.startswith("To: team:management\nSubject: Nobody may decide PR-")
    assert "It waits until the roles change: give the role finance" in out
    code, out, err = cli("notify", "preview", "ordered", "--sample", "--to", "it")
    assert code == 0 and out.startswith("To: team:it\n"), err
    code, out, err = cli("notify", "preview", "no_approver", "--sample", "--to", "hr")
    assert code == 2 and not out
    assert (
        "--to: no sample no_approver notification to hr; the samples have it for finance, management"
        in err
    )


def test_notify_preview_one_part(cli: Any) -> None:
    code, out, err = cli("notify", "preview", "approval_needed", "--sample", "--part", "html")
    assert code == 0, err
    assert out.lstrip().lower().startswith("<!doctype html>")
    assert out.rstrip().endswith("</html>") and "Subject:" not in out


def test_notify_preview_writes_files(cli: Any, tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    code, out, err = cli("notify", "preview", "approval_needed", "--sample", "--out", str(out_dir))
    assert code == 0, err
    names = {
        "approval_needed.html",
        "approval_needed.txt",
        "approval_needed.subject.txt",
        "approval_needed.slack.txt",
    }
    assert {p.name for p in out_dir.iterdir()} == names
    assert f"wrote 4 files to {out_dir}" in out
    subject = (out_dir / "approval_needed.subject.txt").read_text(encoding="utf-8")
    assert subject.startswith("Your decision: PR-") and subject.count("\n") == 1
    page = (out_dir / "approval_needed.html").read_text(encoding="utf-8")
    assert page.lower().startswith("<!doctype html>") and "?decision=approve" in page
    text = (out_dir / "approval_needed.txt").read_text(encoding="utf-8")
    assert text.startswith("Hello ") and "?decision=reject" in text
    assert (out_dir / "approval_needed.slack.txt").read_text(encoding="utf-8").strip()


def test_notify_preview_an_unknown_event_lists_the_events(cli: Any) -> None:
    code, out, err = cli("notify", "preview", "nope", "--sample")
    assert code == 2 and not out
    assert "no such event 'nope'" in err
    assert "approval_needed" in err and "undeliverable" in err


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ((), "give one of --request ID, --id N or --sample"),
        (("--sample", "--request", "PR-0001"), "give one of --request ID, --id N or --sample"),
        (("--sample", "--id", "3"), "give one of --request ID, --id N or --sample"),
        (("--id", "0"), "Invalid value for '--id'"),
        (("--sample", "--part", "bogus"), "'bogus': expected one of subject, text, html, slack"),
    ],
    ids=["neither", "both", "sample-and-id", "id-0", "bad-part"],
)
def test_notify_preview_bad_arguments(cli: Any, args: tuple[str, ...], says: str) -> None:
    code, _, err = cli("notify", "preview", "approved", *args)
    assert code == 2
    assert says in err


@pytest.mark.parametrize(
    ("outcome", "words"),
    [("approve", "approved by"), ("reject", "rejected by"), ("send_back", "sent back by")],
)
def test_a_decisions_subject_says_what_was_decided_in_plain_words(
    session: Session, renderer: Renderer, outcome: str, words: str
) -> None:
    context = context_of(session, "decision_made")
    context["notice"]["outcome"] = outcome
    assert f"{words} " in renderer.render("decision_made", context).subject


def test_a_teams_copy_greets_and_names_the_team_as_people_write_it(
    session: Session, renderer: Renderer
) -> None:
    (row,) = [r for r in sample_copies(session)["ordered"] if r.audience == "team:it"]
    message = renderer.render("ordered", builder(session).build(row))
    assert message.text.startswith("Hello IT team,")
    assert "procure sends this to the IT team." in message.text
    assert "procure sends this to the IT team." in message.html


ESCALATED_TERMS = {
    "role": "management",
    "people": ["max.management@example.com"],
    "delegates": [],
    "escalated": {
        "roles": ["purchasing"],
        "to": "management",
        "reason": "nobody may decide purchasing (paul.purchasing@example.com is excluded: "
        "nobody approves their own request)",
    },
}


def test_messages_say_management_confirms_the_terms_while_purchasing_s_part_is_escalated(
    session: Session, renderer: Renderer
) -> None:
    context = context_of(session, "approval_needed")
    terms = context["request"]["terms"]
    terms.update(missing=["sla", "erasure"], confirm_by=ESCALATED_TERMS)
    message = renderer.render("approval_needed", context)
    reason = ESCALATED_TERMS["escalated"]["reason"]  # type: ignore[index]
    assert (
        f"still to confirm by management in place of purchasing, as {reason}: SLA, erasure"
        in message.text
    )
    assert "Still to confirm by management in place of purchasing, as" in message.html
    assert "still to confirm by purchasing" not in message.text

    # Management, told that purchasing's part is theirs, hears that the terms come with it.
    context = context_of(session, "no_approver")
    context["notice"]["roles"] = ["purchasing"]
    context["request"]["terms"].update(missing=["sla"], confirm_by=ESCALATED_TERMS)
    told = "Purchasing's part includes the contract terms still open (SLA): confirm them"
    assert told in renderer.render("no_approver", context).text
    context["request"]["terms"].update(confirm_by={**ESCALATED_TERMS, "escalated": None})
    assert told not in renderer.render("no_approver", context).text


def test_terms_open_says_which_terms_hold_up_the_final_approval_and_how_to_confirm_them(
    session: Session, renderer: Renderer
) -> None:
    """Purchasing approved its part of the sample's developer workplace without the terms: each
    purchaser is told which terms are open, that the final approval waits, and the command."""
    row, context = sample(session, "terms_open")
    assert (
        row.audience.startswith("person:")
        and row.context["terms"] == context["request"]["terms"]["missing"]
    )
    ref = context["request"]["id"]
    message = renderer.render("terms_open", context)
    assert message.subject.startswith(f"Contract terms to confirm: {ref} onboarding, €")
    said = (
        f"{ref} from Rita Requester cannot be given its final approval until the contract terms "
        "still open are confirmed: warranty, SLA, returns, erasure. Confirm them on their page "
        f"(the link below), from your inbox, or with procure terms {ref} --all --as YOUR-EMAIL"
    )
    assert said in message.text and said in message.slack
    assert "still to confirm by purchasing: warranty, SLA, returns, erasure" in message.text
    assert "Budget owner approval: Bob Budget" in message.text  # what waits for them
    assert f"procure terms {ref} --all --as YOUR-EMAIL" in message.html
    assert context["links"]["inbox"] in message.html
    # The terms confirmed in part since it was queued: it names those still open.
    context["request"]["terms"]["missing"] = ["sla"]
    assert "still open are confirmed: SLA. " in renderer.render("terms_open", context).text
    # To a delegate, and to management when purchasing's part is escalated to it.
    context["notice"].update(
        on_behalf_of="paul.purchasing@example.com", escalation=ESCALATED_TERMS["escalated"]
    )
    text = renderer.render("terms_open", context).text
    assert "You may confirm them as delegate of Paul Purchasing" in text, text
    reason = ESCALATED_TERMS["escalated"]["reason"]  # type: ignore[index]
    assert f"You are asked as management, in place of purchasing, because {reason}." in text


def test_a_line_s_open_terms_leave_out_what_purchasing_confirmed(
    session: Session, renderer: Renderer
) -> None:
    """After purchasing confirmed the terms at the joint review, a line no longer says 'Terms not
    covered' beside the request's 'Confirmed' (it said both, for the same terms)."""
    context = context_of(session, "approval_needed")
    request = context["request"]
    assert request["sourcing"], "the sample request has sourced lines"
    for line in request["sourcing"]:
        line["missing_terms"] = ["warranty", "sla", "returns", "erasure"]
    by = {"by": "person", "person": "paul.purchasing@example.com"}
    purchasing = {"role": "purchasing", "people": [], "delegates": [], "escalated": None}
    request["terms"] = {
        "confirmed": {"warranty": by, "sla": by},
        "missing": ["returns", "erasure"],
        "confirm_by": purchasing,
    }
    message = renderer.render("approval_needed", context)
    assert "terms not covered: returns, erasure" in message.text
    assert "Terms not covered: returns, erasure" in message.html
    request["terms"] = {
        "confirmed": {t: by for t in ("warranty", "sla", "returns", "erasure")},
        "missing": [],
        "confirm_by": None,
    }
    message = renderer.render("approval_needed", context)
    assert "not covered" not in message.text.lower() + message.html.lower()


def test_the_ledger_names_the_lines_it_counts_no_devices_for(
    session: Session, renderer: Renderer
) -> None:
    """A dock per laptop does not double the devices the late-involvement cost is counted on:
    the approver sees which lines are left out, and why, beside the ledger's figures."""
    context = context_of(session, "approval_needed")
    ledger = context["request"]["ledger"]
    ledger["peripherals"] = []
    message = renderer.render("approval_needed", context)
    assert "Not counted as devices" not in message.text + message.html
    ledger["peripherals"] = [
        {"line": 2, "sku": "DOCK-USB4", "category": "dock", "quantity": 100},
        {"line": 3, "sku": "HEADSET-BT", "category": "accessory", "quantity": 100},
    ]
    message = renderer.render("approval_needed", context)
    counted = "Not counted as devices: 100 × DOCK-USB4 (dock), 100 × HEADSET-BT (accessory)"
    assert counted in message.text
    assert counted.replace("×", "&times;") in message.html
