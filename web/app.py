"""The approval web app: the pages behind the links in notifications, and the HTTP JSON API.

Pages (server-rendered, no JavaScript):

- `GET /a/{token}`: the approval page. Reading it changes nothing (link scanners fetch every
  link in an email before people do); it shows what is being decided and a form.
- `POST /a/{token}`: the form's button. It decides, once: the link's nonce is recorded in the
  decision's transaction. CSRF-protected (a cookie and a form field that must match, and the
  Origin must be this site).
- `GET /r/{token}`: a request's status and timeline. `GET /inbox/{token}`: what waits for a person.
- `GET /k/{token}`, `POST /k/{token}`: a person confirms they received the devices of a request
  handed to them (web/receipt.py).
- `GET /t/{token}`, `POST /t/{token}`: whoever may confirm a request's open contract terms
  confirms them (web/terms.py).
- `GET /health`.

Every response carries strict security headers; tokens never reach a log line, and the
`Referrer-Policy: same-origin` keeps them out of other sites' logs.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import jinja2
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from starlette.concurrency import run_in_threadpool

from models import tokens
from models.actions import may_confirm_terms
from models.db import transaction
from models.errors import AlreadyDecided, InputError, NotFound, ProcureError, RuleViolation
from models.org import Person
from models.requests import Request as RequestRow
from models.requests import Stage, format_ref, parse_ref
from models.types import utcnow
from models.views import inbox as inbox_view
from notifications.context import ContextBuilder, Links
from notifications.render import TEMPLATES, configure
from procure.deciding import Decision, LinkOutdated, LinkRefused, LinkUsed, check_link, record

log = logging.getLogger("procure.web")

PAGES = Path(__file__).resolve().parent / "templates"
CSRF_COOKIE = "procure_csrf"
FORM_MAX = 64 * 1024
APPROVAL_FIELDS = frozenset({"csrf", "decision", "comment", "confirm_terms"})  # approval.j2's
OUTCOMES = {"approve": "Approve", "reject": "Reject", "send_back": "Send back"}
DONE = {"approve": "Approved", "reject": "Rejected", "send_back": "Sent back"}
CSRF_VERBS = {
    "approval": "decide",
    "receipt": "confirm",
    "terms": "confirm",
}  # "Please decide from the page"
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # Same-origin: the form's POST names its origin; no other site ever sees a link's token.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader(
            [jinja2.FileSystemLoader(str(PAGES)), jinja2.FileSystemLoader(str(TEMPLATES))]
        ),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return configure(env, "html")


class Web:
    """What the handlers share: settings, the database, the signing key, the page templates."""

    def __init__(self, settings: Any, engine: Engine, *, dispatch: bool = True):
        self.settings = settings
        self.engine = engine
        self.key = settings.signing_key()
        self.env = _environment()
        self.secure = settings.base_url.startswith("https://")
        self.dispatch = dispatch and settings.apprise_config is not None
        self._sender = ThreadPoolExecutor(1, thread_name_prefix="procure-web-notify")
        self._lock = threading.Lock()

    def now(self) -> datetime:
        return self.settings.now or utcnow()

    def links(self) -> Links:
        return Links(self.settings.base_url, self.key, self.now(), self.settings.link_days)

    def page(self, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        context.setdefault("people", {})
        context.setdefault("tz", "UTC")
        html = self.env.get_template(template).render(**context)
        return HTMLResponse(html, status_code=status)

    def problem(self, status: int, title: str, message: str) -> HTMLResponse:
        return self.page("problem.j2", status, title=title, message=message)

    # ------------------------------------------------------------------ after a decision

    def send_soon(self, request_ref: str) -> None:
        """Send the request's new notifications now, in the background (the next approver's
        email within a second); the scheduled dispatcher catches anything missed."""
        if not self.dispatch:
            return
        request_id = parse_ref(request_ref)
        self._sender.submit(self._send, request_id)

    def _send(self, request_id: int) -> None:
        from notifications.dispatch import dispatcher

        try:
            now = self.now()
            dispatcher(self.engine, self.settings, now=now).run(now=now, request_ids=[request_id])
        except InputError as exc:  # the routes file broke since the start: one line, no trace
            log.error("sending the notifications of %s: %s", format_ref(request_id), exc)
        except Exception:
            log.exception("sending the notifications of %s", format_ref(request_id))

    def close(self) -> None:
        self._sender.shutdown(wait=True)


def token_problem(web: Web, exc: tokens.TokenError) -> HTMLResponse:
    expired = "expired" in str(exc)
    return web.problem(410 if expired else 400, "This link cannot be used", str(exc))


@dataclass
class Form:
    """A posted form as text: one value per field, a list for each field the page sends several
    of (`lists`: checkboxes of one name), and what cannot be read."""

    fields: dict[str, str]
    lists: dict[str, list[str]]
    problems: list[str]


def read_form(body: bytes, fields: frozenset[str], lists: frozenset[str] = frozenset()) -> Form:
    """A form's fields as text, and what cannot be read: a field that is not UTF-8 (the page is;
    a browser sends it so) is named, never stored with its bytes replaced, and so is a field
    sent more than once (the page has one of each: two decisions are not one), a value sent
    twice under a name of `lists` (one checkbox ticked once), or a field the page does not have
    (neither in `fields` nor in `lists`: a hand-made or altered post, refused, not ignored)."""
    form = Form({}, {name: [] for name in lists}, [])
    repeated: dict[str, int] = {}
    # Latin-1 keeps every byte as it came (raw or %-escaped); each field is then decoded itself.
    for raw_name, raw_value in parse_qsl(body.decode("latin-1"), encoding="latin-1"):
        try:
            name = raw_name.encode("latin-1").decode("utf-8")
        except UnicodeDecodeError:
            form.problems.append("a field's name is not UTF-8 text")
            continue
        if name in form.fields:
            repeated[name] = repeated.get(name, 1) + 1
        try:
            value = raw_value.encode("latin-1").decode("utf-8")
        except UnicodeDecodeError:
            form.problems.append(f"{name}: is not UTF-8 text")
            continue
        if name not in lists:
            form.fields[name] = value
        elif value in form.lists[name]:
            form.problems.append(f"{name}: {value} sent twice; the form sends each once")
        else:
            form.lists[name].append(value)
    form.problems += [f"{name}: sent {n} times; the form sends one" for name, n in repeated.items()]
    form.problems += [
        f"{name}: is not a field of this form" for name in sorted(set(form.fields) - fields)
    ]
    return form


async def posted_form(
    web: Web,
    request: Request,
    form_name: str,
    fields: frozenset[str],
    lists: frozenset[str] = frozenset(),
    *,
    check: Callable[[Form], list[str]] | None = None,
) -> Form | Response:
    """A page's posted form, read and checked as every form of the site is: at most FORM_MAX
    (413), its CSRF token and origin (403), then what read_form and `check` find wrong (400).
    The form, or the answer to send instead."""
    body = await request.body()
    if len(body) > FORM_MAX:
        return web.problem(413, "Too much", "the form is larger than this page's form can be")
    form = read_form(body, fields, lists)
    refused = csrf_refused(web, request, form, form_name)
    if refused is not None:
        return refused
    if check is not None:
        form.problems += check(form)
    if form.problems:
        return web.problem(400, "This form cannot be read", "; ".join(form.problems))
    return form


def _same_origin(request: Request, base_url: str) -> bool:
    """A browser's POST names the page it came from; it must be this site."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    if not origin:
        # None sent, or hidden by a privacy setting: the CSRF cookie (SameSite=Strict, which
        # another site can neither read nor send) and the form's copy of it decide.
        return True
    if origin == "null":
        # An opaque origin: a sandboxed frame, a data: or file: page, a cross-site redirect.
        # procure's own forms (Referrer-Policy same-origin) name this site, so a
        # `null` one came from elsewhere (Django's CSRF check refuses it too).
        return False
    seen = urlsplit(origin)
    allowed = {urlsplit(base_url).netloc, request.headers.get("host", "")}
    return seen.netloc in allowed


def csrf_refused(web: Web, request: Request, form: Form, page: str) -> HTMLResponse | None:
    """A 403 page unless the form came from this site's `page` ("approval", "receipt", "terms"): its
    CSRF field matches the cookie that page set, and the browser's Origin is this site."""
    cookie = request.cookies.get(CSRF_COOKIE, "")
    given = form.fields.get("csrf", "")
    if (
        cookie
        and hmac.compare_digest(cookie.encode(), given.encode())  # any text, no TypeError
        and _same_origin(request, web.settings.base_url)
    ):
        return None
    return web.problem(
        403,
        f"Please {CSRF_VERBS[page]} from the page",
        f"this form did not come from procure's {page} page (or the page is too old): "
        "open the link from your email again and press the button there",
    )


def with_csrf(web: Web, response: Response, csrf: str, path: str) -> Response:
    """The page's CSRF cookie, for the form posted back to `path` (its prefix: "/a/")."""
    response.set_cookie(
        CSRF_COOKIE,
        csrf,
        httponly=True,
        samesite="strict",
        secure=web.secure,
        path=path,
        max_age=3600,
    )
    return response


def create_app(settings: Any | None = None, engine: Engine | None = None) -> FastAPI:
    """The web app for one installation (settings and database from the environment)."""
    from procure import settings as settings_module
    from procure.database import open_database

    settings = settings or settings_module.load()
    engine = engine or open_database(settings.db_url)
    web = Web(settings, engine)
    app = FastAPI(
        title="procure",
        summary="IT procurement pipelines: the approval pages and the HTTP API",
        version="1",
        docs_url="/api/docs",
        redoc_url=None,
        openapi_url="/api/openapi.json",
    )
    app.state.web = web

    @app.middleware("http")
    async def secure_headers(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if web.secure:
            response.headers.setdefault(
                "Strict-Transport-Security", "max-age=31536000; includeSubDomains"
            )
        return response

    @app.get("/health", include_in_schema=False)
    def health() -> dict[str, str]:
        with Session(engine) as session:
            session.exec(select(Person.id).limit(1)).first()
        return {"status": "ok"}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def home() -> Response:
        """What the address `procure web` prints shows: where decisions are made."""
        return web.page("home.j2")

    @app.get("/a/{token}", response_class=HTMLResponse, include_in_schema=False)
    def approval_page(token: str, request: Request, decision: str | None = None) -> Response:
        try:
            grant = tokens.read_approval_token(token, web.key, web.now())
        except tokens.TokenError as exc:
            return token_problem(web, exc)
        return _approval_form(web, token, grant, chosen=decision)

    @app.post("/a/{token}", response_class=HTMLResponse, include_in_schema=False)
    async def approval_post(token: str, request: Request) -> Response:
        form = await posted_form(web, request, "approval", APPROVAL_FIELDS)
        if not isinstance(form, Form):
            return form
        return await run_in_threadpool(_decide, web, token, form.fields)

    @app.get("/r/{token}", response_class=HTMLResponse, include_in_schema=False)
    def request_page(token: str) -> Response:
        try:
            grant = tokens.read_view_token(token, web.key, web.now())
        except tokens.TokenError as exc:
            return token_problem(web, exc)
        with Session(engine) as session:
            try:
                context = ContextBuilder(session, web.links()).page(
                    grant.request_id, grant.audience
                )
            except (NotFound, KeyError):
                return web.problem(404, "No such request", "this request no longer exists")
        return web.page("request.j2", **context)

    @app.get("/inbox/{token}", response_class=HTMLResponse, include_in_schema=False)
    def inbox_page(token: str) -> Response:
        try:
            person_id = tokens.read_inbox_token(token, web.key, web.now())
        except tokens.TokenError as exc:
            return token_problem(web, exc)
        with Session(engine) as session:
            person = session.get(Person, person_id)
            if person is None:
                return web.problem(404, "No such person", "this inbox no longer exists")
            items = inbox_view(session, person, now=web.now())
            links = web.links()
            for item in items:
                request_id = parse_ref(item["id"])
                if item["what"] == "terms":  # the page that confirms them (/t/TOKEN)
                    item["link"] = links.terms(request_id, person)
                    continue
                stage = session.exec(
                    select(Stage).where(Stage.request_id == request_id, Stage.key == item["stage"])
                ).one()
                row = session.get(RequestRow, request_id)
                assert row is not None
                item["link"] = (  # nobody may decide it: the request page, not a decision form
                    links.request(request_id, f"person:{person.email}")
                    if item["nobody"]
                    else links.approval(row, stage, person)["page"]
                )
            tz = ContextBuilder(session, links).timezone()  # as the emails and pages show times
        return web.page("inbox.j2", reader=person.name, email=person.email, items=items, tz=tz)

    from web import api, receipt, terms

    receipt.install(app, web)
    terms.install(app, web)
    api.install(app)
    return app


def _approval_form(
    web: Web,
    token: str,
    grant: tokens.ApprovalToken,
    *,
    chosen: str | None,
    comment: str = "",
    confirmed: bool = False,
    error: str | None = None,
    invalid: set[str] | None = None,
    status: int = 200,
) -> Response:
    """The approval page: the request and the form, with a fresh CSRF cookie. After a refused
    form it comes back with the reason, the decision chosen, the comment typed and the
    contract terms' box as it was."""
    with Session(web.engine) as session:
        try:
            req, stage, person = check_link(session, grant, now=web.now())
        except (LinkUsed, LinkOutdated) as exc:
            return web.problem(409, "Nothing to decide here", str(exc))
        except LinkRefused as exc:
            return web.problem(403, "Not yours to decide now", str(exc))
        context = ContextBuilder(session, web.links()).page(req.id or 0)
        view = context["request"]
        stage_view = next(s for s in view["stages"] if s["stage"] == stage.key)
        # The box is for whoever may confirm the contract terms with this decision: purchasing's
        # part of the review (or the escalation role in its place), as decide judges it.
        purchasing = bool(view["terms"]["missing"]) and may_confirm_terms(
            session, req, person, stage_key=stage.key, now=web.now()
        )
    csrf = secrets.token_urlsafe(32)
    response = web.page(
        "approval.j2",
        status,
        **context,
        stage=stage_view,
        reader=person.name,
        action=f"/a/{token}",
        csrf=csrf,
        chosen=chosen if chosen in OUTCOMES else None,
        outcomes=OUTCOMES,
        ask_terms=purchasing,
        comment=comment,
        confirmed=confirmed,
        error=error,
        invalid=invalid or set(),
    )
    return with_csrf(web, response, csrf, "/a/")


def _decide(web: Web, token: str, form: dict[str, str]) -> Response:
    try:
        grant = tokens.read_approval_token(token, web.key, web.now())
    except tokens.TokenError as exc:
        return token_problem(web, exc)
    outcome = form.get("decision", "")
    if outcome not in OUTCOMES:
        return web.problem(400, "Choose a decision", "choose approve, reject or send back")
    terms = form.get("confirm_terms")
    if terms not in (None, "yes"):
        return web.problem(
            400,
            "This form cannot be read",
            f"confirm_terms: is {terms!r}; the box sends 'yes' when ticked and nothing when not",
        )
    try:
        result = record(
            web.engine,
            Decision(
                ref=grant.request_id,
                actor_email="",
                outcome=outcome,
                comment=form.get("comment", ""),
                confirm_terms=terms == "yes",
            ),
            now=web.now(),
            link=grant,
            after=lambda r: web.send_soon(r.ref),
        )
    except (LinkUsed, LinkOutdated, AlreadyDecided) as exc:
        return web.problem(409, "Nothing to decide here", str(exc))
    except (InputError, RuleViolation) as exc:
        # The form again, with the reason, the choice and the comment kept: a missing comment
        # is fixed there, and what cannot be approved (terms still open, a budget stop) can
        # often still be sent back or rejected from the same page.
        problems = exc.problems if isinstance(exc, InputError) else []
        return _approval_form(
            web,
            token,
            grant,
            chosen=outcome,
            comment=form.get("comment", ""),
            confirmed=form.get("confirm_terms") == "yes",
            error="; ".join(str(p) for p in problems) or str(exc),
            invalid={p.field for p in problems if p.field},
            status=400 if isinstance(exc, InputError) else 403,
        )
    except ProcureError as exc:
        return web.problem(409, "That did not work", str(exc))
    with transaction(web.engine, readonly=True) as session:
        context = ContextBuilder(session, web.links()).page(grant.request_id)
    if result.noop:
        done = "Already recorded"
    elif result.outcome == "approve" and result.request_status != "approved":
        done = "Your approval is recorded"  # a part or a stage: the request still waits
    else:
        done = DONE[result.outcome]
    decided = next(s for s in context["request"]["stages"] if s["stage"] == result.stage)
    return web.page(
        "done.j2",
        **context,
        result=result,
        done=done,
        decided_stage=decided,
        notifying=web.dispatch,  # routes set up: this site sends the notices; else queued
    )
