"""The HTTP JSON API (documented at /api/docs): submit, list and show requests, a person's
pending approvals, decide, health. Every call but health needs `Authorization: Bearer
$PROCURE_API_TOKEN`. Errors are JSON, `{"error": ..., "problems": [...]}`, with the right 4xx.
"""

from __future__ import annotations

import hmac
from dataclasses import replace
from typing import Annotated, Any, Literal, cast

from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import IntegrityError, OperationalError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from models import actions
from models.db import transaction
from models.errors import (
    AlreadyDecided,
    ConcurrentUpdate,
    InputError,
    NotFound,
    ProcureError,
    RuleViolation,
    TransitionNotAllowed,
)
from models.lifecycle import RequestStatus
from models.requests import Draft, RequestCreate
from models.sources import Document, decode, parse_json, validate
from models.views import inbox as inbox_view
from models.views import request_detail, request_rows
from procure.deciding import Decision, describe, record


def _web(request: Request) -> Any:
    return request.app.state.web


def authorised(request: Request, authorization: Annotated[str | None, Header()] = None) -> None:
    """The API token of this installation (PROCURE_API_TOKEN), as a bearer token."""
    configured = _web(request).settings.api_token
    if configured is None:
        raise ApiError(401, "the API is off: set PROCURE_API_TOKEN to use it")
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode(), configured.get_secret_value().encode()
    ):
        raise ApiError(401, "missing or wrong API token (Authorization: Bearer ...)")


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


Authorised = Depends(authorised)
router = APIRouter(prefix="/api", tags=["api"])


class DecisionIn(BaseModel):
    """One approver's decision on a request's pending stage."""

    model_config = ConfigDict(extra="forbid")  # a misspelt field is refused, not ignored

    approver: str = Field(description="The approver's email address", max_length=320)
    decision: Literal["approve", "reject", "send_back"]
    comment: str = Field(
        default="",
        max_length=4000,
        description="Why, shown to the requester; needed to reject or send back",
    )
    stage: str | None = Field(default=None, description="Which stage, if they can decide several")
    confirm_terms: bool = Field(
        default=False,
        description="Purchasing's part of the review (or its escalation role): confirm the open contract terms too",
    )


@router.get("/health")
def health(request: Request) -> dict[str, str]:
    """Whether the service and its database answer."""
    with transaction(_web(request).engine, readonly=True) as session:
        request_rows(session, limit=1)
    return {"status": "ok"}


@router.get("/requests", dependencies=[Authorised])
def list_requests(
    request: Request,
    status: Annotated[
        RequestStatus | None, Query(description="Only requests in this status")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[dict[str, Any]]:
    """Requests, newest first."""
    with transaction(_web(request).engine, readonly=True) as session:
        return request_rows(session, status=status.value if status else None, limit=limit)


# The largest request body (a request with many lines is a few kilobytes).
BODY_MAX = 1_000_000


def _inlined(schema: dict[str, Any]) -> dict[str, Any]:
    """A model's JSON schema with its $defs written in place (an OpenAPI document resolves
    "#/$defs/..." against its own root, where they are not)."""
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return inline(defs[ref.removeprefix("#/$defs/")])
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    return cast(dict[str, Any], inline(schema))


@router.post(
    "/requests",
    status_code=201,
    dependencies=[Authorised],
    responses={200: {"description": "The request this content (idempotency key) submitted before"}},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": _inlined(RequestCreate.model_json_schema())}
            },
        }
    },
)
async def submit_request(request: Request, response: Response) -> dict[str, Any]:
    """Submit a request (the same fields as a request file; amounts as JSON numbers or strings,
    read exactly as written). 201 with the new request; 200 with the existing one when the same
    content (its idempotency key) was submitted before."""
    web = _web(request)
    raw = await request.body()
    if len(raw) > BODY_MAX:
        raise ApiError(413, f"the body is larger than a request can be ({BODY_MAX:,} bytes)")
    # As a request file is read: numbers with a point become exact decimals, never floats.
    doc = parse_json(decode(raw, "body"), "body")
    create = validate(RequestCreate, doc.data, doc)
    detail, created = await run_in_threadpool(_submit, web, create, doc)
    if not created:
        response.status_code = 200
    return detail


def _submit(web: Any, create: RequestCreate, doc: Document) -> tuple[dict[str, Any], bool]:
    with transaction(web.engine) as session:
        (result,) = actions.submit(session, drafts=[Draft(create, doc, ())], now=web.now())
        detail = request_detail(session, actions.get_request(session, result.ref), now=web.now())
    return detail, result.created


@router.get("/requests/{ref}", dependencies=[Authorised])
def show_request(request: Request, ref: str) -> dict[str, Any]:
    """One request: lines, stages, decisions, sourcing, TCO, ledger, budget, timeline."""
    web = _web(request)
    with transaction(web.engine, readonly=True) as session:
        return request_detail(session, actions.get_request(session, ref), now=web.now())


@router.get("/people/{email}/pending", dependencies=[Authorised])
def pending(request: Request, email: str) -> list[dict[str, Any]]:
    """What waits for this person (delegations included), oldest deadline first: their decisions
    and the contract terms they may confirm (`what`: decision or terms), as `procure inbox`."""
    web = _web(request)
    with transaction(web.engine, readonly=True) as session:
        person = actions.find_person(session, email, what="email")
        return inbox_view(session, person, now=web.now())


@router.post("/requests/{ref}/decisions", dependencies=[Authorised])
def decide(request: Request, ref: str, body: DecisionIn) -> dict[str, Any]:
    """Record a decision (the same rules as the CLI and the approval pages)."""
    web = _web(request)
    try:
        result = record(
            web.engine,
            Decision(
                ref=ref,
                actor_email=body.approver,
                outcome=body.decision,
                comment=body.comment,
                stage_key=body.stage,
                confirm_terms=body.confirm_terms,
            ),
            now=web.now(),
            after=lambda r: web.send_soon(r.ref),
        )
    except InputError as exc:  # the engine names the actor as the CLI's --as: here `approver`
        problems = [replace(p, field="approver") if p.field == "as" else p for p in exc.problems]
        raise type(exc)(problems) from None
    return describe(result)


def _problems(exc: InputError) -> list[dict[str, Any]]:
    return [
        {"message": p.message, "field": p.field, "source": p.source, "line": p.line}
        for p in exc.problems
    ]


def install(app: FastAPI) -> None:
    """The API's routes and its error handling (JSON, the right 4xx, never a traceback)."""
    app.include_router(router)

    def json(
        status: int, message: str, problems: list[dict[str, Any]] | None = None
    ) -> JSONResponse:
        return JSONResponse({"error": message, "problems": problems or []}, status_code=status)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        response = json(exc.status, exc.message)
        if exc.status == 401:
            response.headers["WWW-Authenticate"] = "Bearer"
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Bad input, as the engine's own refusals: 400, each problem by field and where
        # (the body, the query, the path).
        problems = []
        for e in exc.errors():
            where, *field = [str(p) for p in e.get("loc", ())] or [""]
            problems.append(
                {
                    "message": str(e.get("msg", "")),
                    "field": ".".join(field) or where,
                    "source": where,
                    "line": None,
                }
            )
        return json(400, "bad input", problems)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        # The API's own shape for what the framework refuses (no such address, a method the
        # address does not take, a body it cannot read); the pages keep theirs.
        if not request.url.path.startswith("/api"):
            return await http_exception_handler(request, exc)
        path = request.url.path
        message = {
            404: f"no such API address: {path}",
            405: f"{request.method} is not allowed on {path}",
        }.get(exc.status_code, str(exc.detail))
        response = json(exc.status_code, message)
        response.headers.update(exc.headers or {})
        return response

    @app.middleware("http")
    async def body_limit(request: Request, call_next: Any) -> Response:
        # A body larger than any call takes is refused before it is read.
        length = request.headers.get("content-length", "")
        if request.url.path.startswith("/api") and length.isdigit() and int(length) > BODY_MAX:
            return json(413, f"the body is larger than a call takes ({BODY_MAX:,} bytes)")
        return cast(Response, await call_next(request))

    @app.exception_handler(ProcureError)
    async def procure_error(request: Request, exc: ProcureError) -> JSONResponse:
        if isinstance(exc, NotFound):
            return json(404, str(exc), _problems(exc))
        if isinstance(exc, InputError):
            return json(400, "bad input", _problems(exc))
        if isinstance(exc, AlreadyDecided | TransitionNotAllowed | ConcurrentUpdate):
            return json(409, str(exc))  # the state is not (or no longer) what the call needs
        if isinstance(exc, RuleViolation):
            return json(403, str(exc))  # not this caller: their own request, a missing role
        return json(409, str(exc))

    @app.exception_handler(IntegrityError)
    async def integrity(request: Request, exc: IntegrityError) -> JSONResponse:
        return json(409, "the database refused the change (it conflicts with another one)")

    @app.exception_handler(OperationalError)
    async def database(request: Request, exc: OperationalError) -> JSONResponse:
        return json(503, "the database is not available; try again")
