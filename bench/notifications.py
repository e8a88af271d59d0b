"""Notification dispatch throughput to a local SMTP server, against raw smtplib in the same run.

The outbox holds the notifications of a few hundred submitted requests (each queues eight:
the requester, four approvers with signed links, IT, purchasing and HR). The dispatcher claims,
renders (subject, text, HTML, Slack), sends and records every one. The baseline is the floor:
one smtplib connection sending small pre-built messages, nothing rendered, nothing recorded.
Apprise's own email plugin, one notify() per message, is measured beside them for context.
The SMTP server is aiosmtpd in a separate process, so it does not share the dispatcher's GIL.
"""

from __future__ import annotations

import multiprocessing
import smtplib
import tempfile
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from bench.common import Row, write_table

REQUESTS = 250  # x 8 notifications = 2,000 messages (2,250 deliveries: HR has two addresses)
APPRISE_MESSAGES = 200
GOAL = 100.0  # messages per second


def _serve(port: int, ready: Any, stop: Any) -> None:
    from notifications.sink import MailSink

    with MailSink(port=port):
        ready.set()
        stop.wait()


class Server:
    """aiosmtpd in a child process (it keeps messages in memory and writes no files)."""

    def __init__(self) -> None:
        from notifications.sink import free_port

        self.port = free_port()
        context = multiprocessing.get_context("spawn")
        self.ready = context.Event()
        self.stop = context.Event()
        self.process = context.Process(target=_serve, args=(self.port, self.ready, self.stop))

    def __enter__(self) -> Server:
        self.process.start()
        if not self.ready.wait(30):
            raise RuntimeError("the benchmark's SMTP server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.process.join(10)


def raw_smtplib(port: int, count: int) -> float:
    """Seconds to send `count` small messages on one connection."""
    message = EmailMessage()
    message["From"] = "procure@example.com"
    message["To"] = "someone@example.com"
    message["Subject"] = "A notification"
    message.set_content("Hello,\n\nsomething happened.\n")
    data = message.as_bytes()
    start = time.perf_counter()
    with smtplib.SMTP("127.0.0.1", port) as conn:
        for _ in range(count):
            conn.sendmail("procure@example.com", ["someone@example.com"], data)
    return time.perf_counter() - start


def apprise_alone(port: int, count: int) -> float:
    import apprise

    plugin = apprise.Apprise.instantiate(
        f"mailto://127.0.0.1:{port}?from=procure@example.com&to=someone@example.com"
    )
    assert plugin is not None
    plugin.request_rate_per_sec = 0
    start = time.perf_counter()
    for _ in range(count):
        assert plugin.notify(body="<p>Hello</p>", title="A notification")
    return time.perf_counter() - start


def prepare(folder: Path, requests: int) -> str:
    """A migrated SQLite database whose outbox holds `requests` x 8 due notifications."""
    from models import actions
    from models.db import transaction
    from models.requests import Draft, RequestCreate
    from models.sources import Document
    from notifications.samples import NOW
    from procure.database import migrate
    from tests.factories import load_sample, request_data

    url = f"sqlite:///{folder / 'bench.db'}"
    engine, _, _ = migrate(url)
    with transaction(engine) as session:
        load_sample(session)  # the default pipeline, the sample organisation and catalog
    drafts = []
    for i in range(requests):
        data = request_data(idempotency_key=f"bench-{i}", justification=f"Bench request {i}")
        drafts.append(Draft(RequestCreate.model_validate(data), Document("bench", data), ()))
    for start in range(0, len(drafts), 50):
        with transaction(engine) as session:
            actions.submit(session, drafts=drafts[start : start + 50], now=NOW)
    engine.dispose()
    return url


def dispatch(url: str, port: int) -> tuple[float, int, int]:
    """Seconds to send the whole outbox, messages sent, deliveries."""
    from models.db import make_engine
    from notifications.context import Links
    from notifications.dispatch import Dispatcher
    from notifications.routing import parse_routes
    from notifications.samples import NOW

    mail = f"mailto://127.0.0.1:{port}?from=procure@example.com"
    routes = parse_routes(
        "urls:\n"
        f'  - "{mail}":\n      - tag: people\n'
        f'  - "{mail}&to=it@example.com":\n      - tag: it\n'
        f'  - "{mail}&to=purchasing@example.com":\n      - tag: purchasing\n'
        f'  - "{mail}&to=hr@example.com,people@example.com":\n      - tag: hr\n',
        "bench.yml",
    )
    engine = make_engine(url)
    relay = Dispatcher(engine, routes, Links("https://procure.example.com", b"k" * 32, NOW))
    start = time.perf_counter()
    report = relay.run(now=NOW)
    seconds = time.perf_counter() - start
    engine.dispose()
    assert not report.failures, report.failures[:3]
    return seconds, report.sent, report.deliveries


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="procure-bench-") as folder:
        url = prepare(Path(folder), REQUESTS)
        with Server() as server:
            seconds, sent, deliveries = dispatch(url, server.port)
            floor = raw_smtplib(server.port, deliveries)
            alone = apprise_alone(server.port, APPRISE_MESSAGES)
    rate = deliveries / seconds
    floor_rate = deliveries / floor
    apprise_rate = APPRISE_MESSAGES / alone
    rows = [
        Row(
            f"dispatcher: {deliveries:,} emails ({sent:,} notifications) rendered, sent, recorded",
            rate,
            "raw smtplib, one connection, pre-built messages",
            floor_rate,
            f">= {GOAL:.0f} msg/s",
            rate >= GOAL,
            unit="msg/s",
        ),
        Row(
            f"Apprise email plugin alone, {APPRISE_MESSAGES} notify() calls",
            apprise_rate,
            "raw smtplib, one connection, pre-built messages",
            floor_rate,
            "context only",
            True,
            unit="msg/s",
        ),
    ]
    path = write_table(
        "notifications",
        "Notification dispatch to a local SMTP server",
        rows,
        [
            "Ratios are against raw smtplib measured in the same run: the dispatcher also claims "
            "rows, renders four parts per message, signs links and records every delivery.",
        ],
    )
    print(path.read_text(encoding="utf-8"))
