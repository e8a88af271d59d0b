"""The contract-terms page: whoever may confirm a request's open contract terms (purchasing,
a delegate, the role purchasing's part is escalated to) confirms them from the link in their
`terms_open` email, as `procure terms ID --confirm TERM` does.

- `GET /t/{token}`: the request's four contract terms, each confirmed (by whom, or by which
  agreement) or open with a ticked box, a note, and the button. Reading it changes nothing
  (link scanners fetch every link). Someone the rules do not let confirm them gets 403 and why.
- `POST /t/{token}`: the form's button. The ticked terms are confirmed in one transaction
  through `actions.confirm_terms` in the link's person's name (on someone's behalf as the rules
  judge it), all or none. CSRF-protected as the approval form is. The link works until it
  expires: confirming twice changes nothing, and the terms may be confirmed one by one.
"""

from __future__ import annotations

import secrets
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from models import actions, tokens
from models.db import transaction
from models.economics import TERMS
from models.errors import InputError, NotFound, RuleViolation, TransitionNotAllowed
from models.lifecycle import OPEN_REQUEST_STATES
from models.org import Person
from models.requests import Request as RequestRow
from notifications.context import ContextBuilder
from web.app import Form, Web, posted_form, token_problem, with_csrf
from web.receipt import Refused

PREFIX = "/t/"
FIELDS = frozenset({"csrf", "note"})  # and "term", once for each box ticked
NAMES = frozenset({"term"})


def _holder(session: Session, grant: tokens.TermsToken) -> tuple[RequestRow, Person]:
    """The link's request and person; Refused if either is gone."""
    person = session.get(Person, grant.person_id)
    if person is None:
        raise Refused(404, "No such person", "the person this link was sent to no longer exists")
    request = session.get(RequestRow, grant.request_id)
    if request is None:
        raise Refused(404, "No such request", "the request of these terms no longer exists")
    return request, person


def _context(web: Web, session: Session, request: RequestRow, person: Person) -> dict[str, Any]:
    """The request as its page shows it, each term with its state, and everyone's names."""
    builder = ContextBuilder(session, web.links())
    context = builder.page(request.id or 0, f"person:{person.email}")
    confirmed = context["request"]["terms"]["confirmed"]
    for entry in confirmed.values():
        for email in (entry.get("by"), entry.get("on_behalf_of")):
            found = builder.person(email) if email and email != "agreement" else None
            if found is not None:
                context["people"][email] = found.name
    context["terms"] = [{"name": n, "entry": confirmed.get(n)} for n in TERMS]
    context["reader"] = person.name
    return context


def _page(
    web: Web,
    session: Session,
    token: str,
    request: RequestRow,
    person: Person,
    *,
    ticked: set[str] | None = None,
    note: str = "",
    error: str | None = None,
    status: int = 200,
) -> Response:
    """The terms and the form (boxes ticked: every open term, or what was sent back with an
    error), with a fresh CSRF cookie; 403 and why for someone who may not confirm them."""
    context = _context(web, session, request, person)
    missing = context["request"]["terms"]["missing"]
    if missing:
        refusal = actions.terms_refusal(session, request, person, now=web.now())
        if refusal is not None:
            status_code = 409 if request.status not in OPEN_REQUEST_STATES else 403
            return web.problem(status_code, "Not yours to confirm now", refusal)
    csrf = secrets.token_urlsafe(32)
    response = web.page(
        "terms.j2",
        status,
        **context,
        ticked=set(missing) if ticked is None else ticked,
        note=note,
        action=f"{PREFIX}{token}",
        csrf=csrf,
        error=error,
    )
    return with_csrf(web, response, csrf, PREFIX)


def _unknown_terms(form: Form) -> list[str]:
    return [
        f"term: {n} is not a contract term ({', '.join(TERMS)})"
        for n in form.lists["term"]
        if n not in TERMS
    ]


def install(app: FastAPI, web: Web) -> None:
    """The contract-terms page's routes."""

    @app.get(PREFIX + "{token}", response_class=HTMLResponse, include_in_schema=False)
    def terms_page(token: str) -> Response:
        try:
            grant = tokens.read_terms_token(token, web.key, web.now())
        except tokens.TokenError as exc:
            return token_problem(web, exc)
        with transaction(web.engine, readonly=True) as session:
            try:
                request, person = _holder(session, grant)
            except Refused as exc:
                return web.problem(exc.status, exc.title, exc.message)
            return _page(web, session, token, request, person)

    @app.post(PREFIX + "{token}", response_class=HTMLResponse, include_in_schema=False)
    async def terms_post(token: str, request: Request) -> Response:
        form = await posted_form(web, request, "terms", FIELDS, NAMES, check=_unknown_terms)
        if not isinstance(form, Form):
            return form
        names = form.lists["term"]
        return await run_in_threadpool(_confirm, web, token, names, form.fields.get("note", ""))


def _confirm(web: Web, token: str, names: list[str], note: str) -> Response:
    try:
        grant = tokens.read_terms_token(token, web.key, web.now())
    except tokens.TokenError as exc:
        return token_problem(web, exc)
    now = web.now()
    try:
        # One transaction: every ticked term confirmed, or (a refusal) none.
        with transaction(web.engine) as session:
            request, person = _holder(session, grant)
            if not names:
                raise InputError("tick the contract terms you confirm")
            result = actions.confirm_terms(
                session,
                ref=request.id or 0,
                actor_email=person.email,
                names=names,
                note=note,
                now=now,
            )
            session.flush()
            ref = request.ref
    except Refused as exc:
        return web.problem(exc.status, exc.title, exc.message)
    except NotFound as exc:  # the request or person went between the two reads
        return web.problem(404, "Nothing to confirm here", str(exc))
    except TransitionNotAllowed as exc:  # decided since the page was opened
        return web.problem(409, "Nothing to confirm here", str(exc))
    except RuleViolation as exc:
        return web.problem(403, "Not yours to confirm now", str(exc))
    except InputError as exc:
        # The page again, as it is now, with the reason and what was sent (nothing ticked, a
        # note of several lines).
        message = "; ".join(p.message for p in exc.problems)
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
                ticked=set(names),
                note=note,
                error=message,
                status=400,
            )
    if result["confirmed"]:
        web.send_soon(ref)  # the notices left by the change (escalations; terms_open stale)
    with transaction(web.engine, readonly=True) as session:
        request, person = _holder(session, grant)
        context = _context(web, session, request, person)
    already = [n for n in names if n not in result["confirmed"]]
    return web.page(
        "terms_confirmed.j2",
        200 if result["confirmed"] else 409,
        **context,
        confirmed=result["confirmed"],
        already=already,
    )
