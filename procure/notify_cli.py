"""`procure notify ...`: preview, check, send, inspect and retry notifications."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from sqlmodel import Session, col, func, select

from models.errors import InputError, Problem, RuleViolation

notify_app = typer.Typer(
    help="Notifications: preview a template, check the routes, send, see what failed, retry.",
    no_args_is_help=True,
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
RequestOpt = Annotated[
    str | None, typer.Option("--request", metavar="ID", help="A request, e.g. PR-0042.")
]
PARTS = ("subject", "text", "html", "slack")


def _cli() -> Any:
    from procure import cli

    return cli


@contextmanager
def _rendering() -> Iterator[None]:
    """A template problem is bad input (exit 2) naming the template file and line."""
    from notifications.render import RenderError

    try:
        yield
    except RenderError as exc:
        raise InputError(exc.problem()) from None


def _links(now: Any) -> Any:
    from notifications.context import Links

    st = _cli().state()
    return Links(st.settings.base_url, st.settings.signing_key(), now, st.settings.link_days)


def _check_event(event: str) -> None:
    from notifications.render import Renderer

    events = Renderer.events()
    if event not in events:
        raise InputError(
            Problem(f"no such event {event!r}; events: {', '.join(events)}", field="EVENT")
        )


def _pick_row(session: Session, event: str, ref: str, to: str | None) -> Any:
    from models.actions import get_request
    from models.outbox import Notification

    request = get_request(session, ref)
    rows = session.exec(
        select(Notification)
        .where(Notification.request_id == request.id)
        .order_by(col(Notification.id))
    ).all()
    mine = [r for r in rows if r.event == event and (to is None or r.audience.endswith(to))]
    if not mine:
        queued = sorted({r.event for r in rows})
        hint = f"events queued for it: {', '.join(queued)}" if queued else "none queued for it yet"
        raise InputError(
            Problem(
                f"no {event} notification for {request.ref}"
                + (f" to {to}" if to else "")
                + f" ({hint}); --sample previews it with sample data",
                field="--request",
            )
        )
    people = [r for r in mine if r.audience.startswith("person:")]
    return (people or mine)[-1]


def _row_by_id(session: Session, event: str, id_: int, to: str | None) -> Any:
    """The notification `notify status` lists as #id; it must be of the event named."""
    from models.outbox import Notification

    row = session.get(Notification, id_)
    if row is None:
        raise InputError(
            Problem(f"no notification #{id_} (notify status lists them)", field="--id")
        )
    if row.event != event:
        raise InputError(
            Problem(f"#{id_} is a {row.event} notification, not {event}", field="--id")
        )
    if to is not None and not row.audience.endswith(to):
        raise InputError(Problem(f"#{id_} goes to {row.audience}, not {to}", field="--to"))
    return row


def _sample_copies_of(session: Session, event: str) -> list[Any]:
    from models.outbox import Notification

    return list(session.exec(select(Notification).where(Notification.event == event)).all())


def _write(message: Any, out: Path, stem: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    files = {
        out / f"{stem}.subject.txt": message.subject + "\n",
        out / f"{stem}.txt": message.text,
        out / f"{stem}.html": message.html,
        out / f"{stem}.slack.txt": message.slack + "\n",
    }
    for path, text in files.items():
        path.write_text(text)
    written = list(files)
    for item in message.attachments:
        path = out / f"{stem}.{item.filename}"
        path.write_bytes(item.data)
        written.append(path)
    return written


def _show(message: Any, part: str | None, audience: str, json_: bool) -> None:
    if json_:
        _cli().emit(
            {
                "event": message.event,
                "audience": audience,
                "subject": message.subject,
                "text": message.text,
                "html": message.html,
                "slack": message.slack,
                "buttons": [{"label": b.label, "url": b.url} for b in message.buttons],
                "attachments": [a.filename for a in message.attachments],
                "warnings": list(message.warnings),
            }
        )
        return
    for warning in message.warnings:
        typer.echo(f"procure: warning: {warning}", err=True)
    if part is not None:
        typer.echo(getattr(message, part), nl=part != "text")
        return
    typer.echo(f"To: {audience}\nSubject: {message.subject}\n")
    typer.echo(message.text, nl=False)
    if message.attachments:
        typer.echo(f"\nAttachments: {', '.join(a.filename for a in message.attachments)}")


@notify_app.command("preview")
def preview(
    event: Annotated[str, typer.Argument(metavar="EVENT", help="e.g. approval_needed.")],
    request: RequestOpt = None,
    sample: Annotated[
        bool, typer.Option("--sample", help="Render from sample data instead of a request.")
    ] = False,
    id_: Annotated[
        int | None,
        typer.Option(
            "--id",
            metavar="N",
            min=1,
            help="A queued or sent notification, as notify status lists it (#N): also one of "
            "no request (an HR leaver's, a digest).",
        ),
    ] = None,
    to: Annotated[
        str | None,
        typer.Option("--to", metavar="WHO", help="The copy for this person or team (e.g. hr)."),
    ] = None,
    part: Annotated[
        str | None,
        typer.Option("--part", metavar="PART", help="Print only subject, text, html or slack."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", metavar="DIR", help="Write subject, text, HTML, Slack and files."),
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """Render one notification (subject, text, HTML, Slack) as it would be sent."""
    from notifications.context import ContextBuilder
    from notifications.render import Renderer

    _check_event(event)
    if part is not None and part not in PARTS:
        raise InputError(Problem(f"{part!r}: expected one of {', '.join(PARTS)}", field="--part"))
    if [sample, request is not None, id_ is not None].count(True) != 1:
        raise InputError(Problem("give one of --request ID, --id N or --sample", field="--request"))
    st = _cli().state()
    renderer = Renderer(st.settings.templates_dir)
    if sample:
        from notifications.samples import NOW, sample_database, sample_rows

        with sample_database() as engine, Session(engine) as session, _rendering():
            row = sample_rows(session, to).get(event)
            if row is None:
                copies = sorted({r.audience for r in _sample_copies_of(session, event)})
                raise InputError(
                    Problem(
                        f"no sample {event} notification to {to}; the samples have it for "
                        + ", ".join(a.split(":", 1)[1] for a in copies),
                        field="--to",
                    )
                )
            context = ContextBuilder(session, _links(NOW)).build(row)
            message = renderer.render(event, context)
            audience = row.audience
    else:
        with st.read() as session, _rendering():
            row = (
                _pick_row(session, event, request, to)
                if request is not None
                else _row_by_id(session, event, id_ or 0, to)
            )
            context = ContextBuilder(session, _links(st.now())).build(row)
            message = renderer.render(event, context)
            audience = row.audience
    if out is not None:
        written = _write(message, out, event)
        typer.echo(f"wrote {len(written)} files to {out}: {', '.join(p.name for p in written)}")
        return
    _show(message, part, audience, json_)


@notify_app.command("check")
def check(
    routes: Annotated[
        Path | None,
        typer.Option("--routes", metavar="FILE", help="Default: $PROCURE_APPRISE_CONFIG."),
    ] = None,
    templates: Annotated[
        Path | None,
        typer.Option("--templates", metavar="DIR", help="Default: $PROCURE_TEMPLATES_DIR."),
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """Check the routes file and every template (overrides included) against sample data."""
    from notifications.context import ContextBuilder
    from notifications.render import Renderer
    from notifications.routing import load_routes
    from notifications.samples import NOW, sample_copies, sample_database

    st = _cli().state()
    routes_file = routes or st.settings.apprise_config
    folder = templates or st.settings.templates_dir
    report: dict[str, Any] = {
        "routes": None,
        "teams_without_route": [],
        "routes_warnings": [],
        "events": {},
    }
    if routes_file is not None:
        loaded = load_routes(routes_file)
        report["routes"] = [
            {"url": r.masked, "tags": sorted(r.tags), "service": r.service, "line": r.line}
            for r in loaded.routes
        ]
        report["teams_without_route"] = loaded.missing()
        report["routes_warnings"] = [str(w) for w in loaded.warnings]
        for warning in report["routes_warnings"]:  # read all the same: not a failure
            typer.echo(f"procure: warning: {warning}", err=True)
    renderer = Renderer(folder)
    problems: list[Problem] = renderer.stray_overrides()
    with sample_database() as engine, Session(engine) as session:
        builder = ContextBuilder(session, _links(NOW))
        for event, rows in sorted(sample_copies(session).items()):
            outcome: dict[str, Any] = {"ok": True, "warnings": []}
            for row in rows:  # a person's copy and a team's: each from its own notice
                try:
                    message = renderer.render(event, builder.build(row))
                except Exception as exc:
                    from notifications.render import RenderError

                    if not isinstance(exc, RenderError):
                        raise
                    problems.append(exc.problem())
                    outcome = {"ok": False, "error": str(exc)}
                    break
                outcome["ok"] = outcome["ok"] and not message.warnings
                # Each copy falls back alike when an override fails: report it once.
                new = [w for w in message.warnings if w not in outcome["warnings"]]
                outcome["warnings"] += new
                problems += [Problem(w, source=f"{event}.j2") for w in new]
            report["events"][event] = outcome
    if json_:
        _cli().emit(report)
    else:
        if report["routes"] is None:
            typer.echo("routes: PROCURE_APPRISE_CONFIG is not set (nothing can be sent)")
        else:
            typer.echo(f"routes: {routes_file}")
            for r in report["routes"]:
                typer.echo(f"  line {r['line']}: {', '.join(r['tags'])} -> {r['url']}")
            if report["teams_without_route"]:
                typer.echo(f"  no route for: {', '.join(report['teams_without_route'])}")
        where = f" (overrides from {folder})" if folder else ""
        ok = sum(1 for e in report["events"].values() if e["ok"])
        typer.echo(f"templates{where}: {ok} of {len(report['events'])} events render cleanly")
    if problems:
        raise InputError(problems)


@notify_app.command("send")
def send(
    request: RequestOpt = None,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="Send at most this many rows.")
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """Send what is due now (what the scheduled dispatcher does every minute)."""
    from models.actions import get_request
    from notifications.dispatch import dispatcher

    st = _cli().state()
    now = st.now()
    ids = None
    if request is not None:
        with st.read() as session:
            found = get_request(session, request).id
            assert found is not None
            ids = [found]
    report = dispatcher(st.engine(), st.settings, now=now).run(
        now=now, request_ids=ids, limit=limit
    )
    if json_:
        _cli().emit(report.as_dict())
    else:
        typer.echo(report.summary)
        for line in report.failures[:50]:
            typer.echo(f"  {line}")
        for warning in report.warnings[:20]:
            typer.echo(f"procure: warning: {warning}", err=True)
    if report.failures:
        raise typer.Exit(1)


@notify_app.command("status")
def status(
    request: RequestOpt = None,
    failed: Annotated[
        bool, typer.Option("--failed", help="Only rows whose last attempt failed, and dead ones.")
    ] = False,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Rows to list.")] = 50,
    json_: JsonOpt = False,
) -> None:
    """Counts by status, and the rows waiting, failing or dead with their last error."""
    from models.actions import get_request
    from models.lifecycle import NotificationStatus
    from models.outbox import Delivery, Notification
    from models.requests import format_ref

    st = _cli().state()
    with st.read() as session:
        query = select(Notification)
        counts_query = select(Notification.status, func.count()).group_by(Notification.status)
        if request is not None:
            rid = get_request(session, request).id
            query = query.where(Notification.request_id == rid)
            counts_query = counts_query.where(Notification.request_id == rid)
        counts = {s.value: 0 for s in NotificationStatus}
        counts.update({str(s): int(n) for s, n in session.exec(counts_query).all()})
        # A dropped row is done, not failing: it asked for a decision made before it went, or a
        # later change made it stale.
        done = [NotificationStatus.SENT, NotificationStatus.DROPPED]
        if failed:
            query = query.where(
                col(Notification.last_error) != "", col(Notification.status).not_in(done[1:])
            )
        else:
            query = query.where(col(Notification.status).not_in(done))
        rows = session.exec(query.order_by(col(Notification.id).desc()).limit(limit)).all()
        ids = [r.id for r in rows]
        deliveries: dict[int, list[Delivery]] = {}
        for d in session.exec(
            select(Delivery)
            .where(col(Delivery.notification_id).in_(ids))
            .order_by(col(Delivery.id))
        ).all():
            deliveries.setdefault(d.notification_id, []).append(d)
    items = [
        {
            "id": r.id,
            "event": r.event,
            "audience": r.audience,
            "request": format_ref(r.request_id) if r.request_id else None,
            "status": r.status,
            "attempts": r.attempts,
            "next_attempt_at": r.next_attempt_at.isoformat() if r.next_attempt_at else None,
            "last_error": r.last_error,
            "deliveries": [
                {
                    "attempt": d.attempt,
                    "target": d.target,
                    "ok": d.ok,
                    "error": d.error,
                    "at": d.at.isoformat(),
                }
                for d in deliveries.get(r.id or 0, [])
            ],
        }
        for r in rows
    ]
    if json_:
        _cli().emit({"counts": counts, "items": items})
        return
    typer.echo(", ".join(f"{n} {s}" for s, n in counts.items()))
    for i in items:
        when = (
            f", next try {i['next_attempt_at'][:16].replace('T', ' ')} UTC"
            if (i["status"] == "pending" and i["next_attempt_at"])
            else ""
        )
        typer.echo(
            f"#{i['id']:<6} {i['status']:<8} {i['event']:<20} {i['audience']}"
            f"{' ' + i['request'] if i['request'] else ''}  attempts {i['attempts']}{when}"
        )
        if i["last_error"]:
            typer.echo(f"        last error: {i['last_error']}")
        for d in i["deliveries"]:
            if d["ok"]:
                typer.echo(f"        ok      {d['target']}")
            else:
                typer.echo(f"        failed  {d['target']}: {d['error']}")


@notify_app.command("retry")
def retry(
    ids: Annotated[
        list[int] | None, typer.Argument(metavar="ID...", help="Dead notification numbers.")
    ] = None,
    all_dead: Annotated[bool, typer.Option("--all-dead", help="Every dead notification.")] = False,
    json_: JsonOpt = False,
) -> None:
    """Queue dead notifications again (after fixing the route or the server)."""
    from models import lifecycle
    from models.lifecycle import NotificationEvent, NotificationStatus
    from models.outbox import Notification

    if not ids and not all_dead:
        raise InputError(Problem("name notification numbers or use --all-dead", field="ID"))
    st = _cli().state()
    now = st.now()
    with st.write() as session:
        if all_dead:
            rows = list(
                session.exec(
                    select(Notification).where(Notification.status == NotificationStatus.DEAD)
                ).all()
            )
        else:
            rows = []
            for n in ids or []:
                row = session.get(Notification, n)
                if row is None:
                    raise InputError(Problem(f"no notification #{n}", field="ID"))
                if row.status != NotificationStatus.DEAD:
                    raise RuleViolation(
                        f"notification #{n} is {row.status}, not dead: only a dead one is "
                        "queued again (a pending one goes with the next send, a sent one went)"
                    )
                rows.append(row)
        for row in rows:
            lifecycle.settle_notification(
                session,
                row,
                NotificationEvent.REQUEUE,
                attempts=0,
                next_attempt_at=now,
                last_error="",
            )
    requeued = [r.id for r in rows]
    if json_:
        _cli().emit({"requeued": requeued})
    else:
        typer.echo(f"queued again: {', '.join(f'#{i}' for i in requeued) or 'nothing was dead'}")
