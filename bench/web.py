"""From an approval POST to the next approver's email at the SMTP server.

The web app runs under uvicorn on loopback, as `procure serve` runs it; the SMTP server is
aiosmtpd on loopback. For each request, IT approves from its link, then purchasing approves
from its link: that completes the joint review, so the budget owner's approval request is
queued and sent. The measure is from sending purchasing's POST to the budget owner's email
being accepted by the SMTP server. The baseline, measured in the same run, is the POST's own
response time (the decision committed and the page rendered): the rest is the dispatch.
"""

from __future__ import annotations

import re
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx

from bench.common import Row, write_table

REQUESTS = 30
GOAL_SECONDS = 1.0


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, round(0.95 * len(ordered)) - 1)]


def main() -> None:
    import uvicorn

    from models import actions
    from models.db import make_engine, transaction
    from notifications.context import Links
    from notifications.dispatch import Dispatcher
    from notifications.routing import load_routes
    from notifications.samples import NOW
    from notifications.sink import MailSink, free_port
    from procure import settings as settings_module
    from procure.database import migrate
    from tests.factories import IDA, PAUL, draft, load_sample
    from web.app import create_app

    with tempfile.TemporaryDirectory(prefix="procure-bench-") as folder, MailSink() as sink:
        url = f"sqlite:///{Path(folder) / 'bench.db'}"
        engine, _, _ = migrate(url)
        with transaction(engine) as session:
            load_sample(session)
            actions.submit(
                session,
                drafts=[draft(idempotency_key=f"web-{i}") for i in range(REQUESTS)],
                now=NOW,
            )
        routes = Path(folder) / "apprise.yml"
        routes.write_text(sink.routes())
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        config = settings_module.load(
            database_url=url,
            home=Path(folder) / "home",
            base_url=base,
            secret_key="b" * 40,
            now=NOW,
            apprise_config=routes,
        )
        Dispatcher(engine, load_routes(routes), Links(base, config.signing_key(), NOW)).run(now=NOW)
        app = create_app(config, make_engine(url))
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        client = httpx.Client(base_url=base, timeout=30)
        while True:
            try:
                if client.get("/health").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)

        def link(email: str, ref: str) -> str:
            for mail in sink.to(email):
                if ref in mail.subject and mail.subject.startswith("Your decision"):
                    found = re.search(rf"{re.escape(base)}/a/\S+", mail.part("plain"))
                    if found:
                        return found.group(0).split("?")[0]
            raise AssertionError(f"no approval link for {email} about {ref}")

        def post(url: str, **extra: str) -> None:
            response = client.post(
                url,
                data={"csrf": "c", "decision": "approve", **extra},
                headers={"Cookie": "procure_csrf=c", "Origin": base},
            )
            assert response.status_code == 200, response.text[-500:]

        latencies: list[float] = []
        responses: list[float] = []
        for i in range(1, REQUESTS + 1):
            ref = f"PR-{i:04d}"
            post(link(IDA, ref))
            before = len(sink.received)
            start = time.monotonic()
            post(link(PAUL, ref), confirm_terms="yes")
            responses.append(time.monotonic() - start)
            deadline = start + 10
            arrived = None
            while arrived is None and time.monotonic() < deadline:
                for mail in sink.received[before:]:
                    if ref in mail.subject and "Budget owner" in mail.subject:
                        arrived = mail.at
                        break
                else:
                    time.sleep(0.005)
            assert arrived is not None, f"no budget owner email for {ref}"
            latencies.append(arrived - start)
        client.close()
        server.should_exit = True
        thread.join(10)
        app.state.web.close()
        engine.dispose()

    p95 = _p95(latencies)
    rows = [
        Row(
            f"approval POST to the next approver's email at the SMTP server, p95 of {REQUESTS}",
            p95,
            "the POST's own response time, p95",
            _p95(responses),
            f"< {GOAL_SECONDS:.1f} s",
            p95 < GOAL_SECONDS,
        ),
        Row(
            "the same, median",
            statistics.median(latencies),
            "the POST's own response time, median",
            statistics.median(responses),
            "context",
            True,
        ),
    ]
    path = write_table(
        "web",
        "From an approval POST to the next approver's email",
        rows,
        [
            "The web app under uvicorn as `procure serve` runs it, SQLite, aiosmtpd on loopback. "
            "After the decision commits, the request's new notifications are sent at once in "
            "the background; Prefect's `advance` run follows asynchronously."
        ],
    )
    print(path.read_text(encoding="utf-8"))
