"""The `procure` command: operate the pipeline from a terminal.

Exit codes: 0 success, 1 refused by a rule, 2 bad input (file, argument, reference) or a
service that cannot be reached (the database, the Prefect server).
Read-only commands (list, show, inbox, audit verify) never import Prefect.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import date, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import Session

from models.errors import (
    FieldErrors,
    InputError,
    Problem,
    ProcureError,
    RuleViolation,
    problems_of,
)
from procure import failpoints
from procure.orchestration import PrefectUnavailable
from procure.text import money_text

T = TypeVar("T")

app = typer.Typer(
    name="procure",
    help="IT procurement pipelines: request, review together, approve, order, deliver, roll out, return, erase.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
request_app = typer.Typer(
    help="Submit, list, show, resubmit and cancel requests.", no_args_is_help=True
)
org_app = typer.Typer(
    help="Load the organisation: people, roles, cost centres, delegations.", no_args_is_help=True
)
catalog_app = typer.Typer(
    help="Load the catalog: suppliers, items, framework agreements, lease and DaaS offers, bundles.",
    no_args_is_help=True,
)
pipeline_app = typer.Typer(help="Check, install and show the pipeline file.", no_args_is_help=True)
asset_app = typer.Typer(
    help="Devices after delivery: show, acknowledge, return, erase, dispose.", no_args_is_help=True
)
audit_app = typer.Typer(help="The hash-chained audit trail.", no_args_is_help=True)
app.add_typer(request_app, name="request")
app.add_typer(org_app, name="org")
app.add_typer(catalog_app, name="catalog")
app.add_typer(pipeline_app, name="pipeline")
app.add_typer(asset_app, name="asset")
app.add_typer(audit_app, name="audit")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
# Who runs a command: --as, else PROCURE_USER (set once in an operator's shell).
USER_ENV = "PROCURE_USER"


def _actor_source(ctx: typer.Context, param: typer.CallbackParam, value: str | None) -> str | None:
    """Remember that --as came from PROCURE_USER, so a message about it names the variable."""
    source = ctx.get_parameter_source(param.name or "")
    if value is not None and getattr(source, "name", None) == "ENVIRONMENT":  # click's or typer's
        state().actor_from = USER_ENV
    return value


AsOpt = Annotated[
    str,
    typer.Option(
        "--as",
        help=f"Your email address (default: ${USER_ENV}).",
        metavar="EMAIL",
        envvar=USER_ENV,
        show_envvar=False,
        callback=_actor_source,
    ),
]
MaybeAsOpt = Annotated[
    str | None,
    typer.Option(
        "--as",
        help=f"Your email address (default: ${USER_ENV}), checked against your roles. Without "
        "either the audit trail records the change as done by 'system', as for a scheduled flow.",
        metavar="EMAIL",
        envvar=USER_ENV,
        show_envvar=False,
        callback=_actor_source,
    ),
]
FileArg = Annotated[Path, typer.Argument(metavar="FILE", help="A .yaml, .json or .csv file.")]
PipelineFileArg = Annotated[
    Path,
    typer.Argument(metavar="FILE", help="A pipeline file (.yaml), such as pipelines/default.yaml."),
]


# ------------------------------------------------------------------ plumbing


class State:
    """What the global options chose, and the engine opened on first use."""

    def __init__(self, db: str | None):
        from procure import settings

        self.settings = settings.load(**({"database_url": db} if db else {}))
        self._engine: Engine | None = None
        # Where the URL came from, for a message about it: --db, the environment, or the
        # default file under PROCURE_HOME (which --db replaces).
        self.source = (
            "--db"
            if db
            else "PROCURE_DATABASE_URL"
            if self.settings.database_url is not None
            else "PROCURE_HOME"
        )
        # Where the acting person's email came from, for a message about it (actions name it
        # "as"): --as, or PROCURE_USER.
        self.actor_from = "--as"

    @contextmanager
    def opening(self) -> Iterator[None]:
        """Problems with the database named by where its URL came from."""
        try:
            yield
        except InputError as exc:
            if self.source == "--db" or not any(p.field == "--db" for p in exc.problems):
                raise
            raise type(exc)(
                [replace(p, field=self.source) if p.field == "--db" else p for p in exc.problems]
            ) from None

    @property
    def url(self) -> str:
        return self.settings.db_url

    def now(self) -> datetime:
        from models.types import utcnow

        return self.settings.now or utcnow()

    def engine(self) -> Engine:
        if self._engine is None:
            from procure.database import open_database

            with self.opening():
                self._engine = open_database(self.url)
        return self._engine

    @contextmanager
    def write(self) -> Iterator[Session]:
        from models.db import transaction

        with transaction(self.engine()) as session:
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        from models.db import transaction

        with transaction(self.engine(), readonly=True) as session:
            yield session


_STATE: list[State] = []


def state() -> State:
    """The State the global options built for this invocation."""
    return _STATE[-1]


@app.callback()
def _global(
    ctx: typer.Context,
    db: Annotated[
        str | None,
        typer.Option(
            "--db",
            metavar="URL",
            help="Database URL (default: $PROCURE_DATABASE_URL, else a SQLite file in ~/.procure).",
        ),
    ] = None,
) -> None:
    _STATE.append(State(db))


def emit(data: Any) -> None:
    """Print data as JSON (Decimals and dates as strings)."""
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def fail(message: str, code: int = 2) -> NoReturn:
    typer.echo(f"procure: {message}", err=True)
    raise typer.Exit(code)


def parse_date(value: str, what: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InputError(Problem(f"not a date (YYYY-MM-DD): {value!r}", field=what)) from None


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 1 refused by a rule, 2 bad input)."""
    try:
        failpoints.check()  # a misspelt PROCURE_FAILPOINT is refused before anything runs
        result = app(args=argv, prog_name="procure", standalone_mode=False)
        return result if isinstance(result, int) else 0
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        typer.echo("procure: aborted", err=True)
        return 130
    except typer.TyperException as exc:  # usage errors: unknown option, missing argument, ...
        exc.show()  # type: ignore[attr-defined]
        return int(getattr(exc, "exit_code", 2))
    except InputError as exc:
        actor = _STATE[-1].actor_from if _STATE else "--as"
        _print_problems(
            "bad input", [replace(p, field=actor) if p.field == "as" else p for p in exc.problems]
        )
        return 2
    except RuleViolation as exc:
        typer.echo(f"procure: refused: {exc}", err=True)
        return 1
    except PrefectUnavailable as exc:  # a service procure needs, as the database below
        typer.echo(f"procure: {exc}", err=True)
        return 2
    except ProcureError as exc:
        typer.echo(f"procure: {exc}", err=True)
        return 1
    except IntegrityError as exc:
        typer.echo(
            f"procure: refused: the database rejected the change ({_first_line(exc)})", err=True
        )
        return 1
    except OperationalError as exc:
        typer.echo(f"procure: database error: {_first_line(exc)}", err=True)
        return 2
    except Exception as exc:
        if os.environ.get("PROCURE_DEBUG"):
            raise
        typer.echo(
            f"procure: internal error: {type(exc).__name__}: {exc} "
            "(this is a bug; PROCURE_DEBUG=1 shows the traceback)",
            err=True,
        )
        return 70
    finally:
        _STATE.clear()


def _first_line(exc: Exception) -> str:
    orig = getattr(exc, "orig", None) or exc
    return str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__


def _print_problems(title: str, problems: list[Problem]) -> None:
    if len(problems) == 1:
        typer.echo(f"procure: {title}: {problems[0]}", err=True)
        return
    typer.echo(f"procure: {title} ({len(problems)} problems):", err=True)
    for problem in problems[:50]:
        typer.echo(f"  {problem}", err=True)
    if len(problems) > 50:
        typer.echo(f"  … and {len(problems) - 50} more", err=True)


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


# ------------------------------------------------------------------ init, org, catalog, pipeline


@app.command()
def init(
    sample: Annotated[
        bool, typer.Option("--sample", help="Also load a sample organisation and catalog.")
    ] = False,
    json_: JsonOpt = False,
) -> None:
    """Create or upgrade the database schema; install the default pipeline if none is installed."""
    from models import pipeline as pipeline_mod
    from models.db import transaction
    from procure.database import migrate
    from sample import load as load_sample

    st = state()
    with st.opening():
        engine, before, after = migrate(st.url)
    st._engine = engine
    report: dict[str, Any] = {"database": _masked(st.url), "schema": {"from": before, "to": after}}
    now = st.now()
    with transaction(engine) as session:
        if pipeline_mod.active_row(session) is None:
            text = pipeline_mod.DEFAULT_PIPELINE.read_text(encoding="utf-8")
            row, _ = pipeline_mod.install(
                session,
                text=text,
                source=str(pipeline_mod.DEFAULT_PIPELINE),
                actor="procure init",
                at=now,
            )
            report["pipeline"] = f"{row.name}@{row.version} installed"
        if sample:
            from sqlmodel import func, select

            from models.org import Person

            people = session.exec(select(func.count()).select_from(Person)).one()
            if people:
                # The organisation is the one people keep now: the sample would undo their
                # changes (a budget lowered, someone set inactive). It is loaded once, at the start.
                report["sample"] = {
                    "skipped": f"the database already holds an organisation ({people} "
                    "people): the sample is loaded only into an empty one; change yours "
                    "with procure org load and procure catalog load"
                }
            else:
                report["sample"] = load_sample(session, actor="procure init", at=now)
    if json_:
        emit(report)
        return
    action = "created" if before is None else ("upgraded" if before != after else "up to date")
    typer.echo(f"database {report['database']}: schema {action} ({after})")
    if "pipeline" in report:
        typer.echo(f"pipeline {report['pipeline']}")
    if sample and "skipped" in report["sample"]:
        typer.echo(f"sample organisation and catalog: not loaded, {report['sample']['skipped']}")
    elif sample:
        counts: dict[str, int] = {}
        for tallies in report["sample"].values():
            for kind, tally in tallies.items():
                counts[kind] = counts.get(kind, 0) + tally["created"] + tally["updated"]
        loaded = ", ".join(f"{n} {kind.replace('_', ' ')}(s)" for kind, n in counts.items() if n)
        typer.echo(
            f"sample organisation and catalog: {loaded or 'already loaded, nothing changed'}"
        )


def _masked(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "(unparseable URL)"


def _tally_text(tallies: dict[str, dict[str, int]]) -> str:
    parts = []
    for kind, counts in tallies.items():
        text = f"{kind}: {counts['created']} new, {counts['updated']} changed, {counts['unchanged']} unchanged"
        if counts.get("kept_inactive"):
            text += (
                f" ({counts['kept_inactive']} who left kept inactive: "
                "`active: true` brings one back)"
            )
        parts.append(text)
    return "; ".join(parts)


def _read_file(read: Callable[[], T], check: Callable[[Session, Any], list[Problem]]) -> T:
    """read() a file; when fields fail, check() finds what is wrong with the references of the
    valid part, so that one run reports both (the field errors alone if there is no database)."""
    try:
        return read()
    except FieldErrors as exc:
        st = state()
        try:
            st.engine()
        except InputError:
            raise exc from None
        with st.read() as session:
            raise exc.with_checks(lambda found: check(session, found)) from None


@org_app.command("load")
def org_load(file: FileArg, json_: JsonOpt = False) -> None:
    """Create or update people, cost centres and delegations from a YAML/JSON file (or a CSV of people)."""
    from models.org import check_org, load_org, read_org_file

    org, doc = _read_file(
        lambda: read_org_file(file), lambda session, found: check_org(session, *found)
    )
    st = state()
    with st.write() as session:
        result = load_org(session, org=org, doc=doc, actor="procure org load", at=st.now())
    emit(result) if json_ else typer.echo(f"{file}: {_tally_text(result)}")


@catalog_app.command("load")
def catalog_load(file: FileArg, json_: JsonOpt = False) -> None:
    """Create or update suppliers and items from a YAML/JSON file (or a CSV of items)."""
    from models.catalog import check_catalog, load_catalog, read_catalog_file

    catalog, doc = _read_file(
        lambda: read_catalog_file(file), lambda session, found: check_catalog(session, *found)
    )
    st = state()
    with st.write() as session:
        result = load_catalog(
            session, catalog=catalog, doc=doc, actor="procure catalog load", at=st.now()
        )
    emit(result) if json_ else typer.echo(f"{file}: {_tally_text(result)}")


@pipeline_app.command("check")
def pipeline_check(file: PipelineFileArg, json_: JsonOpt = False) -> None:
    """Validate a pipeline file; every error names the file, line and field. Needs no database."""
    from models.pipeline import check_file, describe

    spec = check_file(file)
    if json_:
        emit(
            {
                "file": str(file),
                "ok": True,
                "name": spec.name,
                "version": spec.version,
                "stages": describe(spec),
            }
        )
        return
    typer.echo(f"{file}: ok — pipeline {spec.name}@{spec.version}, {len(spec.stages)} stages")
    _print_stages(describe(spec))


def _print_stages(stages: list[dict[str, Any]]) -> None:
    for s in stages:
        cond = f" when {s['when']}" if s["when"] else ""
        cond += f" unless {s['unless']}" if s["unless"] else ""
        joiner = " + " if s["mode"] == "all" else " | "
        sla = f", SLA {s['sla_hours']} business hours" if s["sla_hours"] else ""
        esc = f", escalates to {s['escalate_to']}" if s["escalate_to"] else ""
        after = f" after {', '.join(s['after'])}" if s["after"] else ""
        typer.echo(f"  {s['id']}: {joiner.join(s['roles'])}{cond}{after}{sla}{esc}")


@pipeline_app.command("load")
def pipeline_load(file: PipelineFileArg, json_: JsonOpt = False) -> None:
    """Install a pipeline file for new requests (requests in flight keep theirs)."""
    from models.pipeline import install, read_pipeline_file

    source, text = read_pipeline_file(file)
    st = state()
    with st.write() as session:
        row, changed = install(
            session, text=text, source=source, actor="procure pipeline load", at=st.now()
        )
    result = {"name": row.name, "version": row.version, "sha256": row.sha256, "changed": changed}
    if json_:
        emit(result)
    else:
        typer.echo(
            f"pipeline {row.name}@{row.version} "
            + ("installed" if changed else "is already installed")
        )


@pipeline_app.command("show")
def pipeline_show(json_: JsonOpt = False) -> None:
    """Show the installed pipeline."""
    from models.pipeline import active, describe

    with state().read() as session:
        row, spec = active(session)
    if json_:
        emit(
            {
                "name": spec.name,
                "version": spec.version,
                "sha256": row.sha256,
                "loaded_at": row.loaded_at,
                "stages": describe(spec),
            }
        )
        return
    typer.echo(
        f"pipeline {spec.name}@{spec.version} (installed {row.loaded_at:%Y-%m-%d %H:%M} UTC from {row.loaded_from})"
    )
    _print_stages(describe(spec))


# ------------------------------------------------------------------ requests


def known_status(status: str | None, statuses: Iterable[StrEnum]) -> None:
    """A listing's --status: one of the lifecycle's statuses (InputError naming them)."""
    names = [s.value for s in statuses]
    if status is not None and status not in names:
        raise InputError(
            Problem(f"unknown status {status!r} (one of: {', '.join(names)})", field="--status")
        )


def _check_drafts(session: Session, drafts: Any) -> list[Problem]:
    from models.actions import check_drafts

    return check_drafts(session, drafts=drafts, now=state().now())


@request_app.command("submit")
def request_submit(file: FileArg, json_: JsonOpt = False) -> None:
    """Submit requests from a file: one request or a list (YAML/JSON), or a CSV of lines (all or nothing)."""
    from models.actions import submit
    from models.requests import read_request_file

    drafts = _read_file(lambda: read_request_file(file), _check_drafts)
    st = state()
    with st.write() as session:
        results = submit(session, drafts=drafts, now=st.now())
    if json_:
        emit(
            {
                "ids": [r.ref for r in results],
                "created": [r.ref for r in results if r.created],
                "existing": [r.ref for r in results if not r.created],
                "requests": [
                    {
                        "id": r.ref,
                        "status": r.status,
                        "created": r.created,
                        "idempotency_key": r.idempotency_key,
                    }
                    for r in results
                ],
            }
        )
        return
    for r in results:
        note = (
            ""
            if r.created
            else f"  (already submitted with idempotency key {r.idempotency_key}: nothing new)"
        )
        typer.echo(f"{r.ref}  {r.status}{note}")


@request_app.command("list")
def request_list(
    status: Annotated[
        str | None, typer.Option("--status", help="Only requests in this status.")
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="At most this many (newest first).")
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """List requests, newest first."""
    from models.lifecycle import RequestStatus
    from models.views import request_rows

    known_status(status, RequestStatus)
    with state().read() as session:
        rows = request_rows(session, status=status, limit=limit)
    if json_:
        emit({"requests": rows})
        return
    if not rows:
        typer.echo("no requests")
        return
    typer.echo(
        f"{'ID':<9} {'STATUS':<18} {'KIND':<12} {'TOTAL':>14}  {'NEEDED BY':<10}  REQUESTER / WAITING FOR"
    )
    for r in rows:
        waiting = f"  waiting for {', '.join(r['waiting_for'])}" if r["waiting_for"] else ""
        typer.echo(
            f"{r['id']:<9} {r['status']:<18} {r['kind']:<12} {money_text(r['total'], r['currency']):>14}  {r['needed_by']:<10}  {r['requester']}{waiting}"
        )


@request_app.command("show")
def request_show(ref: Annotated[str, typer.Argument(metavar="ID")], json_: JsonOpt = False) -> None:
    """Show a request: lines, stages and decisions, who is pending, devices, timeline."""
    from models.actions import get_request
    from models.views import request_detail

    st = state()
    with st.read() as session:
        detail = request_detail(session, get_request(session, ref), now=st.now())
    if json_:
        emit(detail)
        return
    from procure.text import print_detail

    print_detail(detail)


@request_app.command("economics")
def request_economics_command(
    ref: Annotated[str, typer.Argument(metavar="ID")], json_: JsonOpt = False
) -> None:
    """The money of a request: sourcing, buy/lease/DaaS, delivery plan, late-involvement cost, budget."""
    from models.actions import get_request, spec_for
    from models.economics import request_economics

    st = state()
    with st.read() as session:
        request = get_request(session, ref)
        spec = spec_for(session, request)
        data = {
            "id": request.ref,
            "status": request.status,
            "total": str(request.total),
            "currency": request.currency,
            **request_economics(
                session, request, economics=spec.economics, today=spec.calendar.today(st.now())
            ),
        }
    if json_:
        emit(data)
        return
    from procure.text import print_economics

    typer.echo(
        f"{data['id']}  {data['status']}  total {money_text(data['total'], data['currency'])}"
    )
    print_economics(data)


@request_app.command("resubmit")
def request_resubmit(
    ref: Annotated[str, typer.Argument(metavar="ID")],
    file: Annotated[
        Path | None,
        typer.Argument(
            metavar="[FILE]", help="The changed fields (YAML/JSON); none: resubmit as is."
        ),
    ] = None,
    as_: AsOpt = ...,  # type: ignore[assignment]
    comment: Annotated[str, typer.Option("--comment", help="What you changed.")] = "",
    json_: JsonOpt = False,
) -> None:
    """Resubmit a request that was sent back; stages whose inputs did not change keep their approvals."""
    from models.actions import get_request, requester_of, resubmit
    from models.requests import FIXED_MESSAGE, FIXED_ON_RESUBMISSION, RequestUpdate
    from models.sources import load_document, remap, validate

    doc = None
    if file is not None:
        doc = load_document(file)
        if not isinstance(doc.data, dict):
            raise InputError(doc.problem((), "expected a mapping of the fields to change"))
    st = state()
    with st.write() as session:
        update = None
        if doc is not None:
            # The original file, edited, names what cannot change as it was: that is no change.
            request = get_request(session, ref)
            kept = {
                "requester": requester_of(session, request).email,
                "idempotency_key": request.idempotency_key,
                "currency": request.currency,
            }
            data = {
                k: v
                for k, v in doc.data.items()
                if not (k in kept and str(v).strip().lower() == str(kept[k]).lower())
            }
            try:
                update = validate(RequestUpdate, data, doc)
            except InputError as exc:
                raise InputError(
                    [
                        replace(p, message=FIXED_MESSAGE) if p.field in FIXED_ON_RESUBMISSION else p
                        for p in exc.problems
                    ]
                ) from None
        try:
            request = resubmit(
                session, ref=ref, actor_email=as_, update=update, comment=comment, now=st.now()
            )
        except InputError as exc:
            if doc is None:
                raise
            raise InputError(remap(exc.problems, doc)) from None
        result = {"id": request.ref, "status": request.status, "round": request.round}
    emit(result) if json_ else typer.echo(
        f"{result['id']}  {result['status']} (round {result['round']})"
    )


@request_app.command("send")
def request_send(
    ref: Annotated[str, typer.Argument(metavar="ID")],
    as_: AsOpt = ...,  # type: ignore[assignment]
    json_: JsonOpt = False,
) -> None:
    """Send a draft into the pipeline.

    A draft is a request prepared for you: a refresh the lifecycle watch drafted, say."""
    from models.actions import send_draft

    st = state()
    with st.write() as session:
        request = send_draft(session, ref=ref, actor_email=as_, now=st.now())
        result = {"id": request.ref, "status": request.status}
    emit(result) if json_ else typer.echo(f"{result['id']}  {result['status']}")


@request_app.command("cancel")
def request_cancel(
    ref: Annotated[str, typer.Argument(metavar="ID")],
    as_: AsOpt = ...,  # type: ignore[assignment]
    reason: Annotated[str, typer.Option("--reason", help="Why.")] = "",
    json_: JsonOpt = False,
) -> None:
    """Cancel a request before it is ordered (the requester, purchasing or management)."""
    from models.actions import cancel

    st = state()
    with st.write() as session:
        request = cancel(session, ref=ref, actor_email=as_, reason=reason, now=st.now())
        result = {"id": request.ref, "status": request.status}
    emit(result) if json_ else typer.echo(f"{result['id']}  {result['status']}")


# ------------------------------------------------------------------ decisions and inbox


@app.command()
def decide(
    ref: Annotated[str, typer.Argument(metavar="ID")],
    as_: AsOpt = ...,  # type: ignore[assignment]
    approve: Annotated[bool, typer.Option("--approve", help="Approve.")] = False,
    reject: Annotated[
        bool, typer.Option("--reject", help="Reject the request (--comment says why).")
    ] = False,
    send_back: Annotated[
        bool,
        typer.Option(
            "--send-back",
            help="Send it back to the requester for changes (--comment says what to change).",
        ),
    ] = False,
    comment: Annotated[
        str,
        typer.Option(
            "--comment", help="Why (shown to the requester); needed with --reject and --send-back."
        ),
    ] = "",
    stage: Annotated[
        str | None, typer.Option("--stage", help="Which stage, if you can decide several.")
    ] = None,
    confirm_terms: Annotated[
        bool,
        typer.Option(
            "--confirm-terms",
            help="Also confirm the contract terms still open (warranty, SLA, returns, erasure): whoever decides purchasing's part of the joint review.",
        ),
    ] = False,
    json_: JsonOpt = False,
) -> None:
    """Decide a pending stage of a request: exactly one of --approve, --reject, --send-back."""
    from procure.deciding import Decision, describe, record

    chosen = [
        name
        for name, flag in (("approve", approve), ("reject", reject), ("send_back", send_back))
        if flag
    ]
    if len(chosen) != 1:
        raise InputError(Problem("give exactly one of --approve, --reject, --send-back"))
    st = state()
    result = record(
        st.engine(),
        Decision(
            ref=ref,
            actor_email=as_,
            outcome=chosen[0],
            comment=comment,
            stage_key=stage,
            confirm_terms=confirm_terms,
        ),
        now=st.now(),
    )
    data = describe(result)
    data.pop("message")
    if json_:
        emit(data)
        return
    for_ = f" on behalf of {result.on_behalf_of}" if result.on_behalf_of else ""
    note = f"  ({result.message})" if result.message else ""
    typer.echo(
        f"{result.ref} {result.stage}: {result.outcome} by {result.actor}{for_} as {result.role} → stage {result.stage_status}, request {result.request_status}{note}"
    )


@app.command()
def inbox(as_: AsOpt = ..., json_: JsonOpt = False) -> None:  # type: ignore[assignment]
    """What waits for your decision (delegations included), oldest deadline first: the contract
    terms you may confirm among them; and a part of your role's that nobody may decide, with why
    and what to do."""
    from models.actions import find_person
    from models.views import inbox as inbox_view

    st = state()
    with st.read() as session:
        me = find_person(session, as_, what="as")
        items = inbox_view(session, me, now=st.now())
    if json_:
        emit({"items": items})
        return
    if not items:
        typer.echo("nothing waits for you" + ("" if me.active else f" ({me.email} is not active)"))
        return
    # Each column as wide as its widest cell: the amounts stay aligned whatever the roles.
    cells = []
    for i in items:
        as_whom = f"as {i['role']}"
        if i["on_behalf_of"]:
            as_whom += f" (for {i['on_behalf_of']})"
        if i["escalated"]:  # the escalation role, for a part nobody else may decide
            as_whom += " (escalated)"
        cells.append((i["stage"] or "terms", as_whom, money_text(i["total"], i["currency"])))
    stage_w = max(14, *(len(c[0]) for c in cells))
    whom_w = max(len(c[1]) for c in cells)
    money_w = max(14, *(len(c[2]) for c in cells))
    for i, (stage, as_whom, total) in zip(items, cells, strict=True):
        due = f"due {i['due_at'][:16].replace('T', ' ')} UTC" if i["due_at"] else "no deadline"
        late = "  OVERDUE" if i["overdue"] else ""
        typer.echo(
            f"{i['id']:<9} {stage:<{stage_w}} {as_whom:<{whom_w}} {total:>{money_w}}  {due}{late}"
        )
        if i["terms"]:  # the final approval waits for them: which, and how to confirm them
            typer.echo(
                f"          contract terms to confirm: {', '.join(i['terms'])}; "
                f"procure terms {i['id']} --all --as {me.email}"
            )
        if i["nobody"]:  # not yours to decide either: why, and what to do
            typer.echo(f"          {i['nobody']}")


# ------------------------------------------------------------------ purchasing in the joint review


@app.command()
def terms(
    ref: Annotated[str, typer.Argument(metavar="ID")],
    confirm: Annotated[
        list[str] | None,
        typer.Option(
            "--confirm",
            metavar="TERM",
            help="Confirm warranty, sla, returns or erasure (repeatable, or comma-separated).",
        ),
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Confirm every term still open.")] = False,
    as_: Annotated[
        str | None,
        typer.Option(
            "--as",
            help=f"Your email address (default: ${USER_ENV}); needed to confirm.",
            metavar="EMAIL",
            envvar=USER_ENV,
            show_envvar=False,
            callback=_actor_source,
        ),
    ] = None,
    note: Annotated[str, typer.Option("--note", help="What was agreed.")] = "",
    json_: JsonOpt = False,
) -> None:
    """The contract terms on the joint-review checklist: which are confirmed (by an agreement, or by whom), which are open and who may confirm them. With --confirm TERM or --all, purchasing (or its escalation role in its place) confirms them; they are needed before the final approval."""
    if confirm and all_:
        raise InputError(Problem("give either --confirm TERM or --all, not both", field="--all"))
    if not (confirm or all_):
        if note:
            raise InputError(
                Problem("goes with what you confirm: add --confirm TERM or --all", field="--note")
            )
        _show_terms(ref, json_)
        return
    if as_ is None:
        raise InputError(
            Problem(f"give your email to confirm terms (or set {USER_ENV})", field="--as")
        )
    from models.actions import confirm_terms

    names = (
        [n.strip().lower() for value in confirm for n in value.split(",") if n.strip()]
        if confirm
        else None
    )
    st = state()
    with st.write() as session:
        result = confirm_terms(
            session, ref=ref, actor_email=as_, names=names, note=note, now=st.now()
        )
    if json_:
        emit(result)
        return
    done = ", ".join(result["confirmed"]) or "nothing new"
    still = (
        f"; still open: {', '.join(result['missing'])}"
        if result["missing"]
        else "; the checklist is complete"
    )
    typer.echo(f"{result['id']}: confirmed {done}{still}")


def _show_terms(ref: str, json_: bool) -> None:
    """`procure terms ID`: the checklist, changing nothing."""
    from models.actions import get_request
    from models.views import terms_checklist

    st = state()
    with st.read() as session:
        data = terms_checklist(session, get_request(session, ref), st.now())
    if json_:
        emit(data)
        return
    from procure.text import print_terms

    print_terms(data)


quote_app = typer.Typer(
    help="Quotes purchasing collects for a line, compared side by side.", no_args_is_help=True
)
app.add_typer(quote_app, name="quote")


@quote_app.command("add")
def quote_add(
    ref: Annotated[str, typer.Argument(metavar="ID")],
    line: Annotated[int, typer.Option("--line", min=1, help="The line number.")],
    supplier: Annotated[
        str,
        typer.Option(
            "--supplier",
            help="Who quoted: a catalog supplier's code, or another supplier's name. A line bought at the quote is ordered from them.",
        ),
    ],
    price: Annotated[
        str, typer.Option("--price", metavar="AMOUNT", help="Unit price, e.g. 912.50.")
    ],
    as_: AsOpt = ...,  # type: ignore[assignment]
    valid_until: Annotated[str | None, typer.Option("--valid-until", metavar="YYYY-MM-DD")] = None,
    note: Annotated[str, typer.Option("--note")] = "",
    json_: JsonOpt = False,
) -> None:
    """Record a supplier's quote for a line of a request under review."""
    from models.actions import record_quote
    from models.fields import amount

    try:
        unit = amount(price)
    except ValueError as exc:
        raise InputError(Problem(str(exc), field="--price")) from None
    until = parse_date(valid_until, "--valid-until") if valid_until else None
    st = state()
    with st.write() as session:
        quote = record_quote(
            session,
            ref=ref,
            line_no=line,
            supplier=supplier,
            unit_price=unit,
            actor_email=as_,
            valid_until=until,
            note=note,
            now=st.now(),
        )
        result = {
            "id": quote.id,
            "request": ref,
            "line": line,
            "supplier": quote.supplier,
            "unit_price": str(quote.unit_price),
        }
    emit(result) if json_ else typer.echo(
        f"quote {result['id']} recorded for line {line}: {result['supplier']} at {result['unit_price']}"
    )


@app.command()
def sourcing(
    ref: Annotated[str, typer.Argument(metavar="ID")],
    line: Annotated[int, typer.Option("--line", min=1, help="The line number.")],
    as_: AsOpt = ...,  # type: ignore[assignment]
    agreement: Annotated[
        str | None,
        typer.Option(
            "--agreement", metavar="CODE", help="Call off under this framework agreement."
        ),
    ] = None,
    individual: Annotated[
        bool, typer.Option("--individual", help="Order it individually at the list price.")
    ] = False,
    quote: Annotated[
        int | None,
        typer.Option("--quote", metavar="ID", help="Order it individually at this quote's price."),
    ] = None,
    offer: Annotated[
        str | None,
        typer.Option(
            "--offer",
            metavar="KIND",
            help="Lease it (lease) or take it as a service (daas) from the cheapest offer.",
        ),
    ] = None,
    justification: Annotated[
        str, typer.Option("--justification", help="Why individually, where an agreement covers it.")
    ] = "",
    json_: JsonOpt = False,
) -> None:
    """Purchasing chooses how a line is sourced: a framework agreement, or individually (list
    price or a quote), or an offer; during the review, or once approved until it is ordered."""
    from models.actions import get_request, set_sourcing, stages_of
    from models.economics import terms_view
    from models.lifecycle import RequestStatus, StageStatus

    st = state()
    with st.write() as session:
        before = get_request(session, ref)
        was, was_total = before.status, str(before.total)
        was_open = terms_view(before.terms)["missing"]
        row = set_sourcing(
            session,
            ref=ref,
            line_no=line,
            actor_email=as_,
            agreement=agreement,
            individual=individual,
            quote_id=quote,
            offer=offer,
            justification=justification,
            now=st.now(),
        )
        request = get_request(session, ref)
        currency = request.currency
        # Approved before: it stays approved, or is back in review for the stages that decide again.
        again = (
            [
                s
                for s in stages_of(session, request)
                if s.status in (StageStatus.OPEN, StageStatus.WAITING)
            ]
            if was == RequestStatus.APPROVED
            else []
        )
        result = {
            "id": request.ref,
            "line": line,
            "sourcing": row.sourcing,
            "unit_price": str(row.unit_price),
            "total": str(row.total),
            "status": str(request.status),
            "request_total": str(request.total),
            "decide_again": [s.key for s in again],
            "terms_open": terms_view(request.terms)["missing"],
        }
    if json_:
        emit(result)
        return
    typer.echo(
        f"{result['id']} line {line}: {row.sourcing} at {money_text(str(row.unit_price), currency)} a unit, "
        f"{money_text(str(row.total), currency)} in total"
    )
    reopened = [t for t in result["terms_open"] if t not in was_open]
    if reopened:
        typer.echo(
            f"contract terms to confirm again (no longer settled, or a new supplier): "
            f"{', '.join(reopened)}; procure terms {result['id']} --as PURCHASER"
        )
    if was == RequestStatus.APPROVED:
        total = str(request.total)
        figures = (
            f"{money_text(was_total, currency)} before, {money_text(total, currency)} now"
            if total != was_total
            else money_text(total, currency)
        )
        typer.echo(
            f"{result['id']} is back in review ({figures}): {', '.join(s.name for s in again)} decide again"
            if again
            else f"{result['id']} stays approved ({figures}): procure order {result['id']}"
        )


# ------------------------------------------------------------------ order, delivery, rollout


@app.command()
def order(
    ref: Annotated[str, typer.Argument(metavar="ID")],
    as_: MaybeAsOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Order an approved request: purchase orders per supplier, one device record per unit."""
    from models.actions import place_order

    st = state()
    with st.write() as session:
        result = place_order(session, ref=ref, actor_email=as_, now=st.now())
    if json_:
        emit(result)
        return
    typer.echo(f"{result['ref']}  {result['status']}")
    for po in result["purchase_orders"]:
        units = sum(ln["quantity"] for ln in po["lines"])
        typer.echo(
            f"  {po['number']}  {po['supplier']:<12} {units:>5} {'unit ' if units == 1 else 'units'}  {money_text(str(po['total']), po['currency']):>16}"
        )


@app.command()
def schedule(
    ref: Annotated[str, typer.Argument(metavar="ID")],
    on: Annotated[
        str, typer.Option("--date", metavar="YYYY-MM-DD", help="The agreed delivery date.")
    ],
    as_: MaybeAsOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Record (or change) the delivery date agreed with the supplier."""
    from models.actions import lines_of, schedule_delivery, spec_for
    from models.economics import supplier_of

    day = parse_date(on, "--date")
    st = state()
    with st.write() as session:
        request = schedule_delivery(session, ref=ref, on=day, actor_email=as_, now=st.now())
        late = max((day - request.needed_by).days, 0)
        # The supplier that takes longest, counted from the order as the order-by date counts.
        slowest = max(
            (supplier_of(session, ln) for ln in lines_of(session, request)),
            key=lambda s: s.lead_time_days,
        )
        assert request.ordered_at is not None  # only an ordered request is scheduled
        ordered_on = spec_for(session, request).calendar.today(request.ordered_at)
        usual = ordered_on + timedelta(days=slowest.lead_time_days)
        early = max((usual - day).days, 0)
        result = {
            "id": request.ref,
            "status": request.status,
            "delivery_on": day.isoformat(),
            "needed_by": request.needed_by.isoformat(),
            "days_late": late,
            "lead_time": {
                "supplier": slowest.code,
                "days": slowest.lead_time_days,
                "ordered_on": ordered_on.isoformat(),
                "usual_delivery": usual.isoformat(),
                "days_early": early,
            },
        }
    if json_:
        emit(result)
        return
    typer.echo(f"{result['id']}  {result['status']} for {day}")
    if late:
        typer.echo(
            f"procure: warning: {day} is {late} day{'s' if late != 1 else ''} after "
            f"{result['id']} is needed ({request.needed_by}): tell the requester",
            err=True,
        )
    if early:
        typer.echo(
            f"procure: warning: {day} is {early} day{'s' if early != 1 else ''} sooner than "
            f"{slowest.name} usually delivers ({slowest.lead_time_days} days from the order on "
            f"{ordered_on}: {usual}): check the date with the supplier",
            err=True,
        )


@app.command()
def deliver(
    ref: Annotated[str, typer.Argument(metavar="ID")],
    serials: Annotated[
        Path,
        typer.Option(
            "--serials",
            metavar="FILE",
            help="CSV (serial[,sku]), YAML/JSON list, or text with one serial per line.",
        ),
    ],
    as_: MaybeAsOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Record delivered devices by serial; the request is delivered when every unit is."""
    from models.actions import deliver as deliver_action
    from models.assets import read_serials_file

    units = read_serials_file(serials)
    st = state()
    with st.write() as session:
        p = deliver_action(
            session, ref=ref, units=units, actor_email=as_, now=st.now(), source=str(serials)
        )
    result = {
        "id": p.ref,
        "status": p.status,
        "delivered": p.done,
        "remaining": p.remaining,
        "serials": p.serials,
    }
    undated = (
        f"; no delivery date is agreed for them: procure schedule {p.ref} --date YYYY-MM-DD"
        if p.remaining and p.status == "ordered"
        else ""
    )
    emit(result) if json_ else typer.echo(
        f"{p.ref}  {p.status}: {p.done} delivered, {p.remaining} still to come{undated}"
    )


@app.command()
def rollout(
    ref: Annotated[str, typer.Argument(metavar="ID")],
    assign: Annotated[
        Path | None,
        typer.Option(
            "--assign",
            metavar="FILE",
            help="CSV (serial,email) or YAML/JSON list; default: all to the person they were requested for.",
        ),
    ] = None,
    as_: MaybeAsOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Hand delivered devices to people; the request is rolled out when every device is."""
    from models.actions import roll_out
    from models.assets import read_assignments_file

    assignments = read_assignments_file(assign) if assign is not None else None
    st = state()
    with st.write() as session:
        p = roll_out(
            session,
            ref=ref,
            assignments=assignments,
            actor_email=as_,
            now=st.now(),
            source=str(assign) if assign else None,
        )
    result = {
        "id": p.ref,
        "status": p.status,
        "assigned": p.done,
        "remaining": p.remaining,
        "serials": p.serials,
    }
    emit(result) if json_ else typer.echo(
        f"{p.ref}  {p.status}: {p.done} assigned, {p.remaining} still to hand out"
    )


# ------------------------------------------------------------------ assets


SerialArg = Annotated[str, typer.Argument(metavar="SERIAL")]


def _asset_result(
    session: Session, asset: Any, json_: bool, message: Callable[[dict[str, Any]], str]
) -> None:
    from models.views import asset_detail

    detail = asset_detail(session, asset)
    emit(detail) if json_ else typer.echo(message(detail))


@asset_app.command("show")
def asset_show(serial: SerialArg, json_: JsonOpt = False) -> None:
    """Show a device: who has it, warranty and contract ends, erasure, history."""
    from models.actions import find_asset
    from models.views import asset_detail

    with state().read() as session:
        detail = asset_detail(session, find_asset(session, serial, lock=False))
    if json_:
        emit(detail)
        return
    typer.echo(
        f"{detail['serial']}  {detail['sku']}  {detail['status']}  ({detail['request']}, {detail['ownership']})"
    )
    if detail["assigned_to"]:
        typer.echo(
            f"  assigned to {detail['assigned_to']}"
            + ("" if detail["acknowledged_at"] else " (not yet acknowledged)")
        )
    typer.echo(
        f"  warranty until {detail['warranty_end']}"
        + (f", contract until {detail['contract_end']}" if detail["contract_end"] else "")
    )
    if detail["erasure"]:
        e = detail["erasure"]
        typer.echo(
            f"  erased {e['at'][:10]} by {e['provider']} ({e['method']}), certificate {e['certificate']}"
        )
    elif not detail["holds_data"]:
        typer.echo("  holds no data: no erasure needed")
    for h in detail["history"]:
        move = f"{h['from']} → {h['to']}" if h["to"] else ""
        typer.echo(
            f"    {h['at'][:19].replace('T', ' ')}  {h['action']:<16} {move:<28} {h['actor']}"
        )


@asset_app.command("list")
def asset_list(
    request: Annotated[
        str | None, typer.Option("--request", metavar="ID", help="Only this request's devices.")
    ] = None,
    status: Annotated[
        str | None, typer.Option("--status", help="Only devices in this status.")
    ] = None,
    holder: Annotated[
        str | None,
        typer.Option("--holder", metavar="EMAIL", help="Only the devices handed to this person."),
    ] = None,
    unacknowledged: Annotated[
        bool,
        typer.Option(
            "--unacknowledged", help="Only devices handed out whose holder has not confirmed them."
        ),
    ] = False,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="At most this many.")] = None,
    json_: JsonOpt = False,
) -> None:
    """List devices (by request and serial): a rollout's, one person's, those in one status, or
    those whose holder has not confirmed receipt yet."""
    from models.actions import find_person, get_request
    from models.lifecycle import AssetStatus
    from models.views import asset_rows

    known_status(status, AssetStatus)
    with state().read() as session:
        try:
            request_id = get_request(session, request).id if request is not None else None
        except InputError as exc:  # a malformed or unknown id (NotFound), named as the option
            raise type(exc)([replace(p, field="--request") for p in exc.problems]) from None
        person = find_person(session, holder, what="--holder") if holder is not None else None
        rows = asset_rows(
            session,
            request_id=request_id,
            status=status,
            holder=person,
            unacknowledged=unacknowledged,
            limit=limit,
        )
    if json_:
        emit({"devices": rows})
        return
    if not rows:
        typer.echo("no devices")
        return
    typer.echo(
        f"{'SERIAL':<20} {'REQUEST':<9} {'SKU':<16} {'STATUS':<20} {'CONFIRMED':<10} "
        f"{'WARRANTY':<10} HOLDER"
    )
    for r in rows:
        confirmed = r["acknowledged_at"][:10] if r["acknowledged_at"] else "-"
        typer.echo(
            f"{r['serial'] or '(not delivered)':<20} {r['request']:<9} {r['sku']:<16} "
            f"{r['status']:<20} {confirmed:<10} {r['warranty_end'] or '-':<10} "
            f"{r['assigned_to'] or '-'}"
        )
    typer.echo(f"{len(rows)} device{'s' if len(rows) != 1 else ''}")


@asset_app.command("ack")
def asset_ack(serial: SerialArg, as_: AsOpt = ..., json_: JsonOpt = False) -> None:  # type: ignore[assignment]
    """Confirm you received the device handed to you."""
    from models.actions import acknowledge

    st = state()
    with st.write() as session:
        asset = acknowledge(session, serial=serial, actor_email=as_, now=st.now())
        _asset_result(
            session, asset, json_, lambda d: f"{d['serial']}  acknowledged by {d['assigned_to']}"
        )


@asset_app.command("request-return")
def asset_request_return(
    serial: SerialArg,
    reason: Annotated[str, typer.Option("--reason", help="Why (leaver, refresh, lease end).")] = "",
    as_: MaybeAsOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Ask for a device back; its holder and IT are told."""
    from models.actions import request_return

    st = state()
    with st.write() as session:
        asset = request_return(session, serial=serial, actor_email=as_, reason=reason, now=st.now())
        _asset_result(session, asset, json_, lambda d: f"{d['serial']}  {d['status']}")


@asset_app.command("cancel-return")
def asset_cancel_return(
    serial: SerialArg,
    reason: Annotated[
        str, typer.Option("--reason", help="Why the holder keeps it (the leave was withdrawn).")
    ] = "",
    as_: MaybeAsOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Take a return request back: the holder keeps the device; they and IT are told."""
    from models.actions import cancel_return

    st = state()
    with st.write() as session:
        asset = cancel_return(session, serial=serial, actor_email=as_, reason=reason, now=st.now())
        _asset_result(session, asset, json_, lambda d: f"{d['serial']}  {d['status']}")


@asset_app.command("return")
def asset_return(serial: SerialArg, as_: MaybeAsOpt = None, json_: JsonOpt = False) -> None:
    """Record that IT has the device back (whether or not a return was requested)."""
    from models.actions import receive_return

    st = state()
    with st.write() as session:
        asset = receive_return(session, serial=serial, actor_email=as_, now=st.now())
        _asset_result(session, asset, json_, lambda d: f"{d['serial']}  {d['status']}")


@asset_app.command("erase")
def asset_erase(
    serial: SerialArg,
    certificate: Annotated[
        str, typer.Option("--certificate", metavar="ID", help="The erasure certificate's id.")
    ],
    method: Annotated[str, typer.Option("--method", metavar="M", help="e.g. 'NIST 800-88 purge'.")],
    provider: Annotated[str, typer.Option("--provider", metavar="P", help="Who erased it.")],
    as_: MaybeAsOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Record the certified erasure of a returned device (the request closes with its last device)."""
    from models.actions import erase

    st = state()
    with st.write() as session:
        asset = erase(
            session,
            serial=serial,
            certificate=certificate,
            method=method,
            provider=provider,
            actor_email=as_,
            now=st.now(),
        )
        _asset_result(
            session,
            asset,
            json_,
            lambda d: f"{d['serial']}  {d['status']} (certificate {d['erasure']['certificate']})",
        )


@asset_app.command("dispose")
def asset_dispose(
    serial: SerialArg,
    to: Annotated[
        str, typer.Option("--to", help="recycler, or provider (lessor / DaaS provider).")
    ] = "recycler",
    as_: MaybeAsOpt = None,
    json_: JsonOpt = False,
) -> None:
    """After erasure (or once returned, if it holds no data): recycle the device or send it back
    to its provider."""
    from models.actions import dispose

    st = state()
    with st.write() as session:
        asset = dispose(session, serial=serial, to=to, actor_email=as_, now=st.now())
        _asset_result(session, asset, json_, lambda d: f"{d['serial']}  {d['status']}")


# ------------------------------------------------------------------ reports


@app.command()
def report(
    name: Annotated[
        str, typer.Argument(metavar="REPORT", help="costs, savings, risk or cycle-times.")
    ],
    from_: Annotated[
        str | None,
        typer.Option("--from", metavar="YYYY-MM-DD", help="First day (ordered, or stage opened)."),
    ] = None,
    to: Annotated[str | None, typer.Option("--to", metavar="YYYY-MM-DD", help="Last day.")] = None,
    csv_: Annotated[
        Path | None, typer.Option("--csv", metavar="FILE", help="Also write the table(s) as CSV.")
    ] = None,
    chart: Annotated[
        Path | None, typer.Option("--chart", metavar="FILE.png", help="Also draw the report.")
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """Spend by cost centre and supplier, savings against list price, late-involvement cost
    incurred vs avoided, cycle time per stage with SLA breaches."""
    from models import reports

    if name not in reports.NAMES:
        raise InputError(
            Problem(f"unknown report {name!r} (one of: {', '.join(reports.NAMES)})", field="REPORT")
        )
    start = parse_date(from_, "--from") if from_ else None
    end = parse_date(to, "--to") if to else None
    if start and end and end < start:
        raise InputError(Problem(f"--to ({end}) is before --from ({start})", field="--to"))
    if chart is not None and chart.suffix.lower() != ".png":
        raise InputError(Problem("a chart is written as PNG: name the file .png", field="--chart"))
    for target, what in ((csv_, "--csv"), (chart, "--chart")):
        if target is not None and not target.parent.exists():
            raise InputError(Problem(f"no folder {target.parent}", field=what))
    st = state()
    with st.read() as session:
        from models.pipeline import active

        _, spec = active(session)
        today = spec.calendar.today(st.now())
        if start and start > today:
            raise InputError(
                Problem(f"{start} is after today ({today}): nothing to report yet", field="--from")
            )
        data = reports.run(
            name, session, start=start, end=end, now=st.now(), zone=spec.calendar.zone
        ).as_dict()
    if csv_ is not None:
        write_csv(data, csv_)
    if chart is not None:
        from procure.charts import draw

        draw(data, chart)
    if json_:
        emit(data)
        return
    from procure.text import print_report

    print_report(data)
    for target in (csv_, chart):
        if target is not None:
            typer.echo(f"written: {target}")


def write_csv(data: dict[str, Any], path: Path) -> None:
    """One CSV for a report: a `table` column, then the rows of each table."""
    import csv

    columns: list[str] = ["table"]
    for rows in data["tables"].values():
        for row in rows:
            columns.extend(k for k in row if k not in columns)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for table, rows in data["tables"].items():
            for row in rows:
                writer.writerow({"table": table, **{k: _csv_safe(v) for k, v in row.items()}})


def _csv_safe(value: Any) -> Any:
    # Text that starts like a formula is neutralised for spreadsheets (names come from files).
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@") and not _is_number(value):
        return "'" + value
    return value


def _is_number(value: str) -> bool:
    from decimal import Decimal, InvalidOperation

    try:
        Decimal(value)
    except InvalidOperation:
        return False
    return True


# ------------------------------------------------------------------ orchestration (Prefect)


run_app = typer.Typer(
    help="Run a flow now, in this process (against PREFECT_API_URL, else Prefect's temporary server).",
    no_args_is_help=True,
)
app.add_typer(run_app, name="run")


def _run(
    name: str,
    json_: bool,
    as_text: Callable[[Any], list[str]] | None = None,
    **parameters: Any,
) -> None:
    """Run a flow with the database of this invocation; print its result (`as_text`: its lines
    for people, the first after the flow's name; JSON with --json)."""
    from procure.orchestration import check_api, prepare_environment, run_local

    st = state()
    st.engine()  # the database must exist and be current before a flow touches it
    prepare_environment()  # PREFECT_HOME, whose profile may name the Prefect server
    check_api()  # a configured server that does not answer is named before the flow starts
    os.environ["PROCURE_DATABASE_URL"] = st.url
    if st.settings.now is not None:
        os.environ["PROCURE_NOW"] = st.settings.now.isoformat()
    result = run_local(name, **parameters)
    if json_:
        emit(result)
    elif as_text is not None:
        first, *rest = as_text(result)
        typer.echo(f"{name}: {first}")
        for line in rest:
            typer.echo(line)
    else:
        typer.echo(f"{name}: {json.dumps(result, ensure_ascii=False, default=str)}")


@run_app.command("intake")
def run_intake(
    file: FileArg, batch_size: Annotated[int, typer.Option(min=1)] = 200, json_: JsonOpt = False
) -> None:
    """Submit a file of requests: checked whole, then in batches, with a progress artifact."""
    from models.requests import read_request_file

    _read_file(lambda: read_request_file(file), _check_drafts)  # bad input named before Prefect
    _run("intake", json_, source=str(file.resolve()), batch_size=batch_size)


@run_app.command("advance")
def run_advance(ref: Annotated[str, typer.Argument(metavar="ID")], json_: JsonOpt = False) -> None:
    """Publish a request's artifacts; order it if it is approved and its pipeline orders automatically."""
    from models.requests import format_ref, parse_ref

    _run("advance", json_, request=format_ref(parse_ref(ref)))


@run_app.command("order")
def run_order(
    refs: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="[ID]...", help="Default: every approved request that orders automatically."
        ),
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """Order approved requests in batches (purchase orders, call-offs)."""
    from models.requests import format_ref, parse_ref

    _run("order", json_, requests=[format_ref(parse_ref(r)) for r in refs] if refs else None)


@run_app.command("delivery")
def run_delivery(
    serials: Annotated[
        Path,
        typer.Option(
            "--serials",
            metavar="FILE",
            help="serial[,sku][,request]: one request's, or a shipping notice for many.",
        ),
    ],
    ref: Annotated[str | None, typer.Argument(metavar="[ID]")] = None,
    assign: Annotated[Path | None, typer.Option("--assign", metavar="FILE")] = None,
    json_: JsonOpt = False,
) -> None:
    """Record delivered serials, then hand the devices out."""
    from models.actions import check_shipments
    from models.assets import by_request, read_assignments_file, read_serials_file
    from models.requests import format_ref, parse_ref

    request = format_ref(parse_ref(ref)) if ref else None
    source = str(serials)

    def check(session: Session, units: list[Any]) -> list[Problem]:
        return problems_of(
            lambda: check_shipments(session, by_request(units, request, source), source)
        )

    shipments = by_request(_read_file(lambda: read_serials_file(serials), check), request, source)
    if assign is not None:
        read_assignments_file(assign)
    with state().read() as session:
        check_shipments(session, shipments, str(serials))
    _run(
        "delivery",
        json_,
        serials_file=str(serials.resolve()),
        request=request,
        assignments_file=str(assign.resolve()) if assign else None,
    )


@run_app.command("returns")
def run_returns(
    serial: Annotated[
        list[str] | None, typer.Option("--serial", help="A device to ask back (repeatable).")
    ] = None,
    reason: Annotated[str, typer.Option("--reason")] = "",
    certificates: Annotated[
        Path | None,
        typer.Option(
            "--certificates", metavar="FILE", help="CSV: serial,certificate,method,provider."
        ),
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """Ask devices back and record the erasure certificates of devices asked back or returned
    (the file is checked whole first: a bad one changes nothing)."""
    from models.actions import check_certificates
    from models.assets import read_certificates_file

    if certificates is not None:
        source = str(certificates)
        found = _read_file(
            lambda: read_certificates_file(certificates),
            lambda session, valid: problems_of(lambda: check_certificates(session, valid, source)),
        )
        with state().read() as session:
            check_certificates(session, found, source)
    _run(
        "returns",
        json_,
        serials=serial or [],
        reason=reason,
        certificates_file=str(certificates.resolve()) if certificates else None,
    )


@run_app.command("hr-sync")
def run_hr_sync(file: FileArg, json_: JsonOpt = False) -> None:
    """Apply an HR export: onboarding requests for joiners; leavers' last days, their devices
    asked back now if the day is near (else by lifecycle-watch when it comes); rows with status
    `withdrawn` cancel a leave."""
    from models.hr import read_checked, sync_lines

    st = state()
    with st.read() as session:
        read_checked(session, file, now=st.now())  # bad input is named here, before Prefect
    _run("hr-sync", json_, sync_lines, export=str(file.resolve()))


def _scheduled(name: str) -> Callable[..., None]:
    def command(json_: JsonOpt = False) -> None:
        _run(name, json_)

    command.__doc__ = (
        __import__("procure.orchestration", fromlist=["by_name"]).by_name(name).description + "."
    )
    return command


for _name in ("sla-watchdog", "lifecycle-watch", "delivery-slip-check", "digest"):
    run_app.command(_name)(_scheduled(_name))


@app.command()
def serve(
    port: Annotated[
        int,
        typer.Option(
            "--port",
            min=1,
            max=65535,
            help="Port of the Prefect server started when none is configured.",
        ),
    ] = 4200,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Flow runs at a time.")] = 4,
    web_port: Annotated[
        int, typer.Option("--web-port", min=1, max=65535, help="Port of the approval web app.")
    ] = 8000,
    no_web: Annotated[bool, typer.Option("--no-web", help="Do not start the web app.")] = False,
) -> None:
    """One command for a working installation: a Prefect server (unless PREFECT_API_URL names
    one), every deployment with its schedule, and the approval web app, from this process.
    Links in notifications point at the web app it serves unless PROCURE_BASE_URL is set."""
    from procure.orchestration import api_setting, check_api, prepare_environment
    from procure.serving import check_port, check_routes, listen, serve_all

    st = state()
    st.engine()
    check_routes(st.settings)  # a broken routes file is named now, not at every send
    prepare_environment()  # PREFECT_HOME, whose profile may name the Prefect server
    # A busy --web-port or --port, or a Prefect server that does not answer, is named before
    # anything starts.
    web_socket = None if no_web else listen("127.0.0.1", web_port, port_option="--web-port")
    try:
        if api_setting() is None:
            check_port(port, web_port=None if no_web else web_port)
        else:
            check_api()
    except BaseException:
        if web_socket is not None:
            web_socket.close()
        raise
    os.environ["PROCURE_DATABASE_URL"] = st.url  # the web app reads the same database
    raise typer.Exit(
        serve_all(
            st.url,
            port=port,
            limit=limit,
            web_port=None if no_web else web_port,
            web_socket=web_socket,
        )
    )


@app.command()
def web(
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port.")] = 8000,
) -> None:
    """The approval web app and the HTTP API on their own (procure serve starts them too).
    Links in notifications point at this address unless PROCURE_BASE_URL is set (set it to
    the address people reach it at, behind your proxy)."""
    from procure.serving import check_routes, listen, use_base_url, web_server

    st = state()
    st.engine()
    st.settings.signing_key()  # refuse to start without a usable key
    check_routes(st.settings)  # a broken routes file is named now, not at every decision
    os.environ["PROCURE_DATABASE_URL"] = st.url
    sock = listen(host, port)  # a busy port or a bad --host is named before "listening"
    links = use_base_url(host, port)
    server = web_server(host, port)
    typer.echo(
        f"procure web: http://{host}:{port}/ (API docs: /api/docs; links in notifications: "
        f"{links}); Ctrl-C stops"
    )
    server.run(sockets=[sock])


# ------------------------------------------------------------------ audit and demo


@audit_app.command("verify")
def audit_verify(json_: JsonOpt = False) -> None:
    """Walk the hash chain; name the first row that does not match (exit 1 if one does not)."""
    from models.audit import verify

    with state().read() as session:
        result = verify(session)
    if json_:
        emit(
            {
                "ok": result.ok,
                "checked": result.checked,
                "problem": result.problem,
                "seq": result.seq,
            }
        )
    elif result.ok:
        typer.echo(f"audit trail intact: {result.checked} events, every hash matches")
    else:
        typer.echo(f"procure: audit trail broken: {result.problem}", err=True)
    if not result.ok:
        raise typer.Exit(1)


@app.command()
def demo(
    out: Annotated[
        Path,
        typer.Option("--out", metavar="DIR", help="Where the demo writes its database and files."),
    ] = Path("demo-output"),
) -> None:
    """Walk one onboarding request from submission to certified erasure, step by step."""
    from procure.demo import run_demo

    raise typer.Exit(run_demo(out))


from procure.notify_cli import notify_app  # noqa: E402 (it reads this module's state lazily)

app.add_typer(notify_app, name="notify")

if __name__ == "__main__":
    run()
