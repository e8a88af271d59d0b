"""What a template sees: the notification, the request and device it is about, and its links.

The context of every event has the same top-level names (templates never guess):

- `event`, `now` (ISO), `tz` (the organisation's time zone)
- `recipient`: {"kind": "person"|"team", "address": email or team, "name": ...}
- `notice`: what the action recorded with the notification (stage, outcome, comment, dates...)
- `request`: the request as `procure request show --json` prints it (lines, stages, pending,
  sourcing, tco, delivery, ledger, budget, terms, ...) or None
- `stage`: the request's stage the notification is about (from `request.stages`) or None
- `asset`: the device as `procure asset show --json` prints it, or None
- `people`: {email: name} for everyone the request or the notice mentions (the `who` filter uses it)
- `links`: URLs for the reader: `request` (read the request), `inbox`, for an approver
  `page`, `approve`, `reject`, `send_back` (each opens the approval page; only its POST decides),
  for a person handed devices `receipt` (the page where they confirm they received them), and
  for a person asked to confirm contract terms `terms` (the page where they confirm them)
- `attachments`: files to attach (a calendar entry for a delivery date)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session, col, select

from models import pipeline, tokens
from models.actions import spec_for
from models.assets import Asset
from models.lifecycle import RequestStatus, StageStatus
from models.org import Person, roles_of
from models.outbox import Notification
from models.requests import Request, Stage, format_ref
from models.types import as_utc
from models.views import DEVICES_LISTED, asset_detail, request_detail
from notifications.render import Attachment, label

# Events whose addressee decides a stage: their links carry an approval token.
APPROVAL_EVENTS = frozenset({"approval_needed", "reminder", "overdue"})
# Events that hand devices to their addressee: their links carry a receipt token.
RECEIPT_EVENTS = frozenset({"device_assigned"})
RECEIPT_DAYS = 30
# Events asking their addressee to confirm contract terms: their links carry a terms token.
TERMS_EVENTS = frozenset({"terms_open"})


@dataclass
class Links:
    """Builds the URLs in a message (the approval web app serves them)."""

    base_url: str
    key: bytes
    now: datetime
    link_days: int = 14

    def expires(self, due: datetime | None = None) -> datetime:
        start = max(as_utc(due), self.now) if due is not None else self.now
        return start + timedelta(days=self.link_days)

    def approval(self, request: Request, stage: Stage, person: Person) -> dict[str, str]:
        assert request.id is not None and stage.id is not None and person.id is not None
        token = tokens.approval_token(
            request_id=request.id,
            stage_id=stage.id,
            round=stage.round,
            person_id=person.id,
            expires=self.expires(stage.due_at),
            key=self.key,
        )
        page = f"{self.base_url}/a/{token}"
        return {
            "page": page,
            "approve": f"{page}?decision=approve",
            "reject": f"{page}?decision=reject",
            "send_back": f"{page}?decision=send_back",
        }

    def request(self, request_id: int, audience: str) -> str:
        token = tokens.view_token(
            request_id=request_id,
            audience=audience,
            expires=self.now + timedelta(days=90),
            key=self.key,
        )
        return f"{self.base_url}/r/{token}"

    def receipt(self, request_id: int, person: Person) -> str:
        """The page where a person confirms they received the devices of a request handed to
        them: 30 days, time to pick them up."""
        assert person.id is not None
        token = tokens.receipt_token(
            person_id=person.id,
            request_id=request_id,
            expires=self.now + timedelta(days=RECEIPT_DAYS),
            key=self.key,
        )
        return f"{self.base_url}/k/{token}"

    def terms(self, request_id: int, person: Person) -> str:
        """The page where a person confirms a request's open contract terms: valid as long as an
        approval link (PROCURE_LINK_DAYS)."""
        assert person.id is not None
        token = tokens.terms_token(
            person_id=person.id, request_id=request_id, expires=self.expires(), key=self.key
        )
        return f"{self.base_url}/t/{token}"

    def inbox(self, person: Person) -> str:
        assert person.id is not None
        token = tokens.inbox_token(
            person_id=person.id, expires=self.now + timedelta(days=30), key=self.key
        )
        return f"{self.base_url}/inbox/{token}"


@dataclass
class ContextBuilder:
    """Contexts for a batch of notifications; each request is read once per batch."""

    session: Session
    links: Links
    _requests: dict[int, tuple[Request, dict[str, Any], str]] = field(default_factory=dict)
    _people: dict[str, Person | None] = field(default_factory=dict)
    _timezone: str | None = None

    def timezone(self) -> str:
        """The organisation's time zone (the active pipeline's calendar), for rows without a
        request; UTC before any pipeline is installed."""
        if self._timezone is None:
            row = pipeline.active_row(self.session)
            self._timezone = pipeline.spec_of(row).calendar.timezone if row else "UTC"
        return self._timezone

    def person(self, email: str) -> Person | None:
        if email not in self._people:
            self._people[email] = self.session.exec(
                select(Person).where(Person.email == email)
            ).first()
        return self._people[email]

    def _request(self, request_id: int) -> tuple[Request, dict[str, Any], str]:
        if request_id not in self._requests:
            request = self.session.get(Request, request_id)
            if request is None:
                raise LookupError(f"request {format_ref(request_id)} no longer exists")
            detail = request_detail(self.session, request, now=self.links.now)
            tz = spec_for(self.session, request).calendar.timezone
            self._requests[request_id] = (request, detail, tz)
        return self._requests[request_id]

    def request_created(self, request_id: int) -> datetime:
        """When a request was created: what tells its email thread from another installation's
        request of the same number."""
        return self._request(request_id)[0].created_at

    def _names(self, emails: set[str]) -> dict[str, str]:
        missing = [e for e in emails if e not in self._people]
        if missing:
            found = self.session.exec(select(Person).where(col(Person.email).in_(missing)))
            for person in found.all():
                self._people[person.email] = person
            for e in missing:
                self._people.setdefault(e, None)
        return {e: p.name for e in emails if (p := self._people.get(e)) is not None}

    def page(self, request_id: int, audience: str | None = None) -> dict[str, Any]:
        """What the web pages show of a request, with the names the templates' `who` needs, as
        the link's audience may see it (`seen_by`)."""
        _, view, tz = self._request(request_id)
        view = self.seen_by(view, audience)
        return {
            "request": view,
            "tz": tz,
            "now": self.links.now.isoformat(),
            "people": self._names({m for m in mentioned_in(view) if m}),
        }

    def seen_by(self, view: dict[str, Any], audience: str | None) -> dict[str, Any]:
        """A request's page as its reader sees it. A person who only holds devices of it (a
        new hire of a rollout, whose rollout email links the request) sees their own devices and
        the request's own events, not every colleague's name and serial; whoever asked for it,
        decides it, or holds a team role sees it all. Past DEVICES_LISTED devices, their
        events are counted by day, action and who (a rollout's hundreds of deliveries)."""
        kind, _, email = (audience or "").partition(":")
        if kind == "person" and not self._involved(view, email):
            own = [a for a in view["assets"] if a["assigned_to"] == email]
            serials = {a["serial"] for a in own}
            view = {
                **view,
                "assets": own,
                "device_counts": [],
                "timeline": [
                    e
                    for e in view["timeline"]
                    if e["entity"] != "asset" or e["entity_id"] in serials
                ],
            }
        devices = {e["entity_id"] for e in view["timeline"] if e["entity"] == "asset"}
        if len(devices) > DEVICES_LISTED:
            view = {**view, "timeline": _counted(view["timeline"])}
        return view

    def _involved(self, view: dict[str, Any], email: str) -> bool:
        """Whether a person asked for the request, is asked or has decided, may confirm its
        terms, or holds a team role (IT, purchasing, HR, finance, management)."""
        people = {view["requester"], view["on_behalf_of"]}
        for stage in view["stages"]:
            people |= {d["by"] for d in stage["decisions"]}
            people |= {d["on_behalf_of"] for d in stage["decisions"]}
        for pending in view["pending"]:
            people |= set(pending["approvers"])
        confirm_by = (view.get("terms") or {}).get("confirm_by")
        people |= set(confirm_by["people"]) if confirm_by else set()
        if email in people:
            return True
        person = self.person(email)
        return person is not None and bool(roles_of(self.session, person.id or 0) - {"requester"})

    def build(self, row: Notification) -> dict[str, Any]:
        """The template context of one notification row (see the module doc)."""
        tz = self.timezone()
        kind, _, address = row.audience.partition(":")
        recipient: dict[str, Any] = {"kind": kind, "address": address, "name": address}
        reader = self.person(address) if kind == "person" else None
        if reader is not None:
            recipient["name"] = reader.name
        elif kind == "team":
            recipient["name"] = label(address)  # "Hello IT team", not "Hello it team"
        notice = dict(row.context or {})
        if row.event in APPROVAL_EVENTS:
            notice.setdefault("on_behalf_of", None)  # set when a delegate is addressed
        if row.event in APPROVAL_EVENTS or row.event == "no_approver":
            notice.setdefault("escalation", None)  # set when nobody else may decide the part
        request_view: dict[str, Any] | None = None
        stage_view: dict[str, Any] | None = None
        asset_view: dict[str, Any] | None = None
        links: dict[str, str] = {}
        attachments: list[Attachment] = []
        mentioned: set[str | None] = {address} if kind == "person" else set()
        if row.request_id is not None:
            request, request_view, tz = self._request(row.request_id)
            assert request.id is not None
            links["request"] = self.links.request(request.id, row.audience)
            stage_key = notice.get("stage")
            stage_view = next((s for s in request_view["stages"] if s["stage"] == stage_key), None)
            mentioned |= mentioned_in(request_view)
            if (
                row.event in APPROVAL_EVENTS
                and reader is not None
                and row.stage_id is not None
                and request.status == RequestStatus.IN_REVIEW
            ):
                stage = self.session.get(Stage, row.stage_id)
                if stage is not None and stage.status == StageStatus.OPEN:
                    links.update(self.links.approval(request, stage, reader))
            if row.event in RECEIPT_EVENTS and reader is not None:
                links["receipt"] = self.links.receipt(request.id, reader)
            if row.event in TERMS_EVENTS and reader is not None:
                links["terms"] = self.links.terms(request.id, reader)
            if row.event == "delivery_scheduled" and notice.get("date"):
                attachments.append(
                    delivery_invite(
                        request_view,
                        str(notice["date"]),
                        self.links.now,
                        sequence=int(notice.get("sequence") or 0),
                    )
                )
        if row.asset_id is not None:
            asset = self.session.get(Asset, row.asset_id)
            if asset is not None:
                asset_view = asset_detail(self.session, asset)
                mentioned.add(asset_view["assigned_to"])
        for key in ("by", "on_behalf_of", "holder"):
            mentioned.add(notice.get(key))
        mentioned |= set(notice.get("approvers") or [])
        for section in (notice.get("sections") or {}).values():  # a digest's, by name
            for item in section.get("items", []) if isinstance(section, dict) else []:
                mentioned |= set(item.get("approvers") or []) if isinstance(item, dict) else set()
        if reader is not None:
            links["inbox"] = self.links.inbox(reader)
        return {
            "event": row.event,
            "now": self.links.now.isoformat(),
            "tz": tz,
            "recipient": recipient,
            "notice": notice,
            "request": request_view,
            "stage": stage_view,
            "asset": asset_view,
            "people": self._names({m for m in mentioned if m}),
            "links": links,
            "attachments": attachments,
        }


def _counted(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A timeline whose device events are counted: one entry for each day, action and actor
    ('100 devices deliver (ordered → delivered) by Ida'), at the first of them; the request's
    and its stages' events as they are."""
    out: list[dict[str, Any]] = []
    groups: dict[tuple[str, str, str, str | None, str | None], dict[str, Any]] = {}
    for e in events:
        if e["entity"] != "asset":
            out.append(e)
            continue
        key = ((e["at"] or "")[:10], e["action"], e["actor"], e["from"], e["to"])
        if key not in groups:
            groups[key] = {**e, "entity_id": "", "details": None, "count": 0}
            out.append(groups[key])
        groups[key]["count"] += 1
    for group in groups.values():
        group["entity_id"] = f"{group['count']} device{'s' if group['count'] != 1 else ''}"
    return out


def mentioned_in(request_view: dict[str, Any]) -> set[str | None]:
    """Everyone a request's view names: requester, employee, deciders, pending approvers,
    device holders."""
    out: set[str | None] = {request_view["requester"], request_view["on_behalf_of"]}
    for s in request_view["stages"]:
        out |= {d["by"] for d in s["decisions"]} | {d["on_behalf_of"] for d in s["decisions"]}
    for p in request_view["pending"]:
        out |= set(p["approvers"])
    out |= {a.get("assigned_to") for a in request_view.get("assets", [])}
    return out


def _fold(line: str) -> str:
    """RFC 5545 lines are at most 75 octets; longer ones continue on lines starting a space."""
    out: list[str] = []
    current = b""
    for ch in line:
        encoded = ch.encode()
        if len(current) + len(encoded) > (75 if not out else 74):
            out.append(current.decode())
            current = b""
        current += encoded
    out.append(current.decode())
    return "\r\n ".join(out)


def _ics_text(value: str) -> str:
    return (
        value.replace("\\", "\\\\")
        .replace(";", "\\;")
        .replace(",", "\\,")
        .replace("\r\n", "\\n")
        .replace("\n", "\\n")
        .replace("\r", "\\n")
    )


def delivery_invite(
    request: dict[str, Any], on: str, now: datetime, *, sequence: int = 0
) -> Attachment:
    """An all-day calendar entry for a delivery date (RFC 5545), to drop into a calendar. One
    event per request (its UID), whatever the date: a moved date comes with a higher `sequence`
    and replaces the entry in the reader's calendar instead of adding one."""
    day = on.replace("-", "")
    # The request's creation time tells it from another installation's request of that number.
    created = hashlib.sha256(str(request.get("created_at") or "").encode()).hexdigest()[:12]
    devices = sum(int(line["quantity"]) for line in request["lines"])
    summary = _ics_text(f"Delivery of {request['id']}: {devices} device(s)")
    description = _ics_text(
        f"{request['kind']} request {request['id']} for "
        f"{request['on_behalf_of'] or request['requester']}, needed by {request['needed_by']}"
    )
    stamp = as_utc(now).strftime("%Y%m%dT%H%M%SZ")
    body = "\r\n".join(
        _fold(line)
        for line in [
            "BEGIN:VCALENDAR",
            "VERSION:2.0",
            "PRODID:-//procure//delivery//EN",
            "METHOD:PUBLISH",
            "BEGIN:VEVENT",
            f"UID:delivery-{request['id']}-{created}@procure",
            f"SEQUENCE:{sequence}",
            f"DTSTAMP:{stamp}",
            f"DTSTART;VALUE=DATE:{day}",
            f"SUMMARY:{summary}",
            f"DESCRIPTION:{description}",
            "TRANSP:TRANSPARENT",
            "END:VEVENT",
            "END:VCALENDAR",
            "",
        ]
    )
    return Attachment(f"delivery-{request['id']}.ics", "text/calendar", body.encode())
