"""The outbox relay: send the due notification rows, record every delivery, retry with back-off.

One run claims due rows in chunks (a lease: another dispatcher skips them until it lapses),
renders each once, sends a copy to every destination of its audience that does not have it
yet, records each result in `notification_delivery`, and settles the row:

- every destination has it: sent (never sent again: its dedup key was unique when queued,
  and delivered destinations are skipped on any later run);
- some failed: pending again, next try after a back-off (1, 2, 4 ... minutes, at most 6 h);
- failed `max_attempts` times: dead, and the operators' team is told (`undeliverable`);
- stale before it went (actions.stale_notices: a decision it asks for was made, a newer
  notice supersedes it): dropped, not sent.

A crash between sending and recording leaves the row claimed; when its lease lapses the next
run sends it again (at most once more, never lost).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from models import lifecycle, outbox
from models.actions import stale_notices
from models.db import transaction
from models.errors import InputError, Problem
from models.lifecycle import NotificationEvent
from models.outbox import Delivery, Notice, Notification
from models.requests import format_ref
from notifications.context import ContextBuilder, Links
from notifications.render import Message, Renderer, RenderError
from notifications.routing import Routes, Target, instantiate
from notifications.transport import (
    DeliveryError,
    Envelope,
    SmtpPool,
    SmtpServer,
    apprise_send,
    build_email,
    slack_send,
    smtp_server,
)
from procure import failpoints

log = logging.getLogger("procure.notify")

OPERATORS = outbox.team("operators")
BACKOFF_FIRST = timedelta(minutes=1)
BACKOFF_MAX = timedelta(hours=6)
LEASE = timedelta(minutes=10)
_RECORD = insert(Delivery.__table__)  # type: ignore[attr-defined]
CHUNK = 200


def backoff(attempts: int) -> timedelta:
    """How long to wait after the n-th failed attempt: 1, 2, 4, ... minutes, at most 6 h."""
    return min(BACKOFF_FIRST * 2 ** max(attempts - 1, 0), BACKOFF_MAX)


@dataclass
class DispatchReport:
    claimed: int = 0
    sent: int = 0
    retried: int = 0
    dead: int = 0
    # Asked for a decision made before they could go, or a later change made them stale (a
    # newer delivery date, a return taken back): not sent.
    dropped: int = 0
    deliveries: int = 0
    failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def summary(self) -> str:
        """The run in one line, as `procure notify send` prints it and the dispatch flow logs it:
        every row claimed was sent, is to be retried, given up or dropped."""
        return (
            f"{self.claimed} due: {self.sent} sent, {self.retried} to retry, "
            f"{self.dead} given up, {self.dropped} dropped (out of date before they went) "
            f"({self.deliveries} deliveries)"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "claimed": self.claimed,
            "sent": self.sent,
            "retried": self.retried,
            "dead": self.dead,
            "dropped": self.dropped,
            "deliveries": self.deliveries,
            "failures": self.failures,
            "warnings": self.warnings,
        }


@dataclass(frozen=True)
class _Job:
    row: Notification
    target: Target
    message: Message
    envelope: Envelope

    def delivery(self, error: str | None, at: datetime) -> dict[str, Any]:
        """This copy's delivery row: handed over (error None) or not, and why."""
        assert self.row.id is not None
        return {
            "notification_id": self.row.id,
            "attempt": self.row.attempts,
            "target": self.target.key,
            "ok": error is None,
            "error": (error or "")[:2000],
            "at": at,
        }


@dataclass
class Dispatcher:
    engine: Engine
    routes: Routes
    links: Links
    renderer: Renderer = field(default_factory=Renderer)
    max_attempts: int = 6
    workers: int = 8
    chunk: int = CHUNK
    _servers: dict[str, SmtpServer] = field(default_factory=dict, repr=False)

    def run(
        self,
        *,
        now: datetime,
        request_ids: Sequence[int] | None = None,
        limit: int | None = None,
    ) -> DispatchReport:
        """Send everything due now (or only the rows of some requests); returns the tally."""
        report = DispatchReport()
        pool = SmtpPool()
        try:
            with ThreadPoolExecutor(self.workers, thread_name_prefix="notify") as executor:
                while limit is None or report.claimed < limit:
                    size = self.chunk if limit is None else min(self.chunk, limit - report.claimed)
                    with transaction(self.engine) as session:
                        rows = lifecycle.claim_notifications(
                            session,
                            now=now,
                            lease_until=now + LEASE,
                            limit=size,
                            request_ids=request_ids,
                        )
                        session.expunge_all()  # keep what was claimed: settling checks it
                    if not rows:
                        break
                    failpoints.hit("after-claim")  # leased and committed, nothing sent yet
                    report.claimed += len(rows)
                    self._chunk(rows, now, pool, executor, report)
                    failpoints.hit("after-settle")  # the chunk's results committed
        finally:
            pool.close()
        return report

    def _chunk(
        self,
        rows: list[Notification],
        now: datetime,
        pool: SmtpPool,
        executor: ThreadPoolExecutor,
        report: DispatchReport,
    ) -> None:
        ids = [r.id for r in rows if r.id is not None]
        problems: dict[int, str] = {}
        jobs: list[_Job] = []
        wanted: dict[int, set[str]] = {}
        with Session(self.engine) as session:
            done = {
                (n, t)
                for n, t in session.exec(
                    select(Delivery.notification_id, Delivery.target).where(
                        col(Delivery.notification_id).in_(ids), col(Delivery.ok).is_(True)
                    )
                ).all()
            }
            builder = ContextBuilder(session, self.links)
            # "Waits for your decision", after it was made; "delivery on the 8th", after it
            # moved to the 15th: dropped, not sent.
            dropped = stale_notices(session, rows)
            for row in rows:
                assert row.id is not None
                if row.id in dropped:
                    continue
                targets = self.routes.targets(row.audience)
                if not targets:
                    problems[row.id] = self._no_route(row.audience)
                    continue
                wanted[row.id] = {t.key for t in targets}
                todo = [t for t in targets if (row.id, t.key) not in done]
                if not todo:
                    continue  # delivered everywhere by an earlier run that did not settle
                try:
                    context = builder.build(row)
                    message = self.renderer.render(row.event, context)
                except RenderError as exc:
                    problems[row.id] = f"cannot render: {exc}"
                    continue
                except Exception as exc:  # one bad row must not hold up the others
                    log.exception("notification %s: building its message", row.id)
                    problems[row.id] = f"cannot render: {type(exc).__name__}: {exc}"
                    continue
                for warning in message.warnings:
                    report.warnings.append(f"notification {row.id}: {warning}")
                    log.warning("notification %s: %s", row.id, warning)
                name = context["recipient"]["name"] if row.audience.startswith("person:") else None
                envelope = Envelope(
                    notification_id=row.id,
                    request_id=format_ref(row.request_id) if row.request_id else None,
                    recipient_name=name,
                    at=now,
                    queued_at=row.created_at,
                    request_created=(
                        builder.request_created(row.request_id) if row.request_id else None
                    ),
                )
                jobs += [_Job(row, t, message, envelope) for t in todo]
        results = list(executor.map(lambda job: self._send(job, pool), jobs))
        self._settle(rows, now, jobs, results, problems, wanted, done, report, dropped)

    def _no_route(self, audience: str) -> str:
        kind, _, address = audience.partition(":")
        tag = address if kind == "team" else f"people (or {address})"
        return f"no route for {audience}: add a URL tagged {tag} to {self.routes.source}"

    def _server(self, target: Target) -> SmtpServer:
        """The SMTP settings of an email route, read from its URL once per dispatcher."""
        server = self._servers.get(target.route.url)
        if server is None:
            server = self._servers[target.route.url] = smtp_server(instantiate(target.route.url))
        return server

    def _send(self, job: _Job, pool: SmtpPool) -> tuple[str | None, bool]:
        """(None when delivered, else why not; whether the delivery is recorded already)."""
        target = job.target
        try:
            if target.route.service == "email":
                server = self._server(target)
                assert target.to is not None
                mail = build_email(
                    job.message,
                    sender=server.sender,
                    to=target.to,
                    envelope=job.envelope,
                    target=target,
                )
                pool.send(server, mail, target.to)
            elif target.route.service == "slack":
                slack_send(job.message, target)
            else:
                apprise_send(job.message, target)
        except DeliveryError as exc:  # a service's own words may quote the URL: scrubbed
            return target.route.scrub(str(exc)), False
        except Exception as exc:  # a transport bug must not lose the row: it is retried
            why = target.route.scrub(f"{type(exc).__name__}: {exc}")
            # No traceback: its text may quote the URL, and with it the route's secrets.
            log.error("sending notification %s to %s: %s", job.row.id, target.key, why)
            return why, False
        failpoints.hit("after-send")  # handed over, not yet recorded (a crash rehearsal)
        try:
            self._record(job, at=job.envelope.at)
        except Exception:  # the database hiccuped: the chunk's settling records it instead
            log.exception("recording notification %s to %s", job.row.id, target.key)
            return None, False
        return None, True

    def _record(self, job: _Job, *, at: datetime) -> None:
        """Record one copy handed over, at once and on its own: a dispatcher that dies later in
        the chunk has only the copies in flight to send again, not the whole chunk so far."""
        with self.engine.begin() as connection:  # no ORM session: one row, one statement
            connection.execute(_RECORD, job.delivery(None, at))

    def _settle(
        self,
        rows: list[Notification],
        now: datetime,
        jobs: list[_Job],
        results: list[tuple[str | None, bool]],
        problems: dict[int, str],
        wanted: dict[int, set[str]],
        done: set[tuple[int, str]],
        report: DispatchReport,
        dropped: dict[int, str],
    ) -> None:
        errors: dict[int, list[str]] = {}
        delivered = set(done)
        with transaction(self.engine) as session:
            for job, (error, recorded) in zip(jobs, results, strict=True):
                assert job.row.id is not None
                report.deliveries += 1
                if not recorded:  # a failure, or a delivery _record could not write
                    session.add(Delivery(**job.delivery(error, now)))
                if error is None:
                    delivered.add((job.row.id, job.target.key))
                    continue
                errors.setdefault(job.row.id, []).append(error)
                log.warning("notification %s to %s: %s", job.row.id, job.target.key, error)
            for row_id, problem in problems.items():
                errors.setdefault(row_id, []).append(problem)
                log.warning("notification %s: %s", row_id, problem)
            session.flush()
            for row in rows:
                assert row.id is not None
                if row.id in dropped:
                    settled = lifecycle.settle_notification(
                        session,
                        row,
                        NotificationEvent.DROP,
                        last_error=f"not sent: {dropped[row.id]}",
                    )
                    report.dropped += settled
                    continue
                missing = {k for k in wanted.get(row.id, set()) if (row.id, k) not in delivered}
                if row.id not in problems and not missing:
                    settled = lifecycle.settle_notification(
                        session, row, NotificationEvent.DELIVER, sent_at=now, last_error=""
                    )
                    report.sent += settled
                    continue
                why = "; ".join(errors.get(row.id) or ["not delivered"])[:2000]
                report.failures.append(
                    f"notification {row.id} ({row.event} to {row.audience}): {why}"
                )
                if row.attempts >= self.max_attempts:
                    alert = self._undeliverable(row, why)
                    settled = lifecycle.settle_notification(
                        session,
                        row,
                        NotificationEvent.GIVE_UP,
                        last_error=why,
                        notices=[alert] if alert else [],
                        at=now,
                    )
                    report.dead += settled
                else:
                    settled = lifecycle.settle_notification(
                        session,
                        row,
                        NotificationEvent.RETRY,
                        last_error=why,
                        next_attempt_at=now + backoff(row.attempts),
                    )
                    report.retried += settled

    def _undeliverable(self, row: Notification, why: str) -> Notice | None:
        """The operators' alert for a dead row (none for an alert that itself died)."""
        if row.event == "undeliverable" or row.audience == OPERATORS:
            return None
        return Notice(
            "undeliverable",
            OPERATORS,
            f"notification/{row.id}/{row.attempts}",
            {
                "notification": row.id,
                "event": row.event,
                "audience": row.audience,
                "attempts": row.attempts,
                "error": why[:500],
            },
        )


def dispatcher(
    engine: Engine, settings: Any, *, now: datetime, routes: Routes | None = None
) -> Dispatcher:
    """A dispatcher configured from settings (routes file, templates folder, signing key)."""
    from notifications.routing import load_routes

    if routes is None:
        if settings.apprise_config is None:
            raise InputError(
                Problem(
                    "is not set: name the Apprise YAML file that routes teams and people "
                    "(notifications stay queued until then)",
                    field="PROCURE_APPRISE_CONFIG",
                )
            )
        routes = load_routes(settings.apprise_config)
    return Dispatcher(
        engine=engine,
        routes=routes,
        links=Links(settings.base_url, settings.signing_key(), now, settings.link_days),
        renderer=Renderer(settings.templates_dir),
        max_attempts=settings.max_attempts,
    )
