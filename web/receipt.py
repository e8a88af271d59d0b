"""The receipt page: a person confirms they received the devices of a request handed to them,
from the link in their `device_assigned` email (a new hire has no CLI).

- `GET /k/{token}`: the devices of the link's request handed to the link's person, each waiting
  for their confirmation, confirmed (when), asked back or no longer with them, and a form with a
  box for each one still waiting. Reading it changes nothing (link scanners fetch every link).
- `POST /k/{token}`: the form's button. The ticked devices are confirmed in one transaction,
  each through `actions.acknowledge` (audited in the person's name), all or none. CSRF-protected
  as the approval form is. The link works until it expires: one device picked up today, the
  dock next week.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from models import actions, tokens
from models.db import transaction
from models.errors import InputError, NotFound, RuleViolation
from models.org import Person
from models.requests import Request as RequestRow
from models.views import received
from web.app import Form, Web, posted_form, token_problem, with_csrf

PREFIX = "/k/"
FIELDS = frozenset({"csrf"})  # and "device", once for each box ticked
DEVICES = frozenset({"device"})


@dataclass
class Refused(Exception):
    """A link that confirms nothing: its person or request is gone, or the person left."""

    status: int
    title: str
    message: str


def _holder(session: Session, grant: tokens.ReceiptToken) -> tuple[RequestRow, Person]:
    """The link's request and person, if the person may still confirm; Refused otherwise."""
    person = session.get(Person, grant.person_id)
    if person is None:
        raise Refused(404, "No such person", "the person this link was sent to no longer exists")
    request = session.get(RequestRow, grant.request_id)
    if request is None:
        raise Refused(404, "No such request", "the request of these devices no longer exists")
    if not person.active:
        raise Refused(
            403,
            "Not yours to confirm now",
            f"{person.email} is not active and cannot confirm receiving devices; "
            "IT records where the devices are",
        )
    return request, person


def _page(
    web: Web,
    session: Session,
    token: str,
    request: RequestRow,
    person: Person,
    *,
    ticked: set[str] | None = None,
    error: str | None = None,
    status: int = 200,
) -> Response:
    """The devices and the form (boxes ticked: all still waiting, or what was sent back with
    an error), with a fresh CSRF cookie."""
    devices = received(session, request, person)
    if not devices:
        return web.problem(
            404,
            "Nothing to confirm here",
            f"no device of {request.ref} was handed to {person.email}",
        )
    waiting = [d["serial"] for d in devices if d["state"] == actions.WAITING]
    csrf = secrets.token_urlsafe(32)
    response = web.page(
        "receipt.j2",
        status,
        ref=request.ref,
        reader=person.name,
        devices=devices,
        ticked=set(waiting) if ticked is None else ticked,
        waiting=waiting,
        action=f"{PREFIX}{token}",
        csrf=csrf,
        error=error,
        tz=actions.spec_for(session, request).calendar.timezone,
    )
    return with_csrf(web, response, csrf, PREFIX)


def install(app: FastAPI, web: Web) -> None:
    """The receipt page's routes."""

    @app.get(PREFIX + "{token}", response_class=HTMLResponse, include_in_schema=False)
    def receipt_page(token: str) -> Response:
        try:
            grant = tokens.read_receipt_token(token, web.key, web.now())
        except tokens.TokenError as exc:
            return token_problem(web, exc)
        with transaction(web.engine, readonly=True) as session:
            try:
                request, person = _holder(session, grant)
            except Refused as exc:
                return web.problem(exc.status, exc.title, exc.message)
            return _page(web, session, token, request, person)

    @app.post(PREFIX + "{token}", response_class=HTMLResponse, include_in_schema=False)
    async def receipt_post(token: str, request: Request) -> Response:
        form = await posted_form(web, request, "receipt", FIELDS, DEVICES)
        if not isinstance(form, Form):
            return form
        return await run_in_threadpool(_confirm, web, token, form.lists["device"])


def _confirm(web: Web, token: str, serials: list[str]) -> Response:
    try:
        grant = tokens.read_receipt_token(token, web.key, web.now())
    except tokens.TokenError as exc:
        return token_problem(web, exc)
    now = web.now()
    try:
        # One transaction: every ticked device confirmed, or (a refusal) none.
        with transaction(web.engine) as session:
            request, person = _holder(session, grant)
            result = actions.confirm_receipt(
                session, ref=request.id or 0, actor_email=person.email, serials=serials, now=now
            )
            context: dict[str, Any] = {
                "ref": request.ref,
                "reader": person.name,
                "ticked": set(serials),
                "devices": received(session, request, person),
                "tz": actions.spec_for(session, request).calendar.timezone,
            }
    except Refused as exc:
        return web.problem(exc.status, exc.title, exc.message)
    except NotFound as exc:  # the request or person went between the two reads
        return web.problem(404, "Nothing to confirm here", str(exc))
    except (InputError, RuleViolation) as exc:
        # The page again, as it is now, with the reason: nothing ticked, a device not theirs
        # (a forged form), or one no longer theirs (returned since the page was opened).
        status = 400 if isinstance(exc, InputError) else 409
        message = (
            "; ".join(p.message for p in exc.problems) if isinstance(exc, InputError) else str(exc)
        )
        with transaction(web.engine, readonly=True) as session:
            try:
                request, person = _holder(session, grant)
            except Refused as refused:
                return web.problem(refused.status, refused.title, refused.message)
            return _page(
                web,
                session,
                token,
                request,
                person,
                ticked=set(serials),
                error=message,
                status=status,
            )
    if not result.confirmed:
        # Every device ticked was confirmed before (the button pressed twice, or another tab).
        return web.page("received.j2", 409, **context, already=True)
    return web.page("received.j2", **context, already=False)
