"""`procure serve`: one command starts a Prefect server, serves every deployment, runs them."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from models.errors import InputError
from notifications.sink import MailSink
from procure import serving
from procure.orchestration import DEPLOYMENTS
from tests.factories import NOW

ROOT = Path(__file__).resolve().parents[2]
PROCURE = str(Path(sys.executable).with_name("procure"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _retrying(call: Any, *args: Any, **kwargs: Any) -> httpx.Response:
    """Prefect's server on SQLite answers 5xx now and then while its scheduler writes (a busy
    two-core machine, 'database is locked'): a client (the UI does too) tries again."""
    for _ in range(5):
        response = call(*args, **kwargs)
        if response.status_code < 500:
            return response
        time.sleep(1)
    return response


def test_serve_starts_a_server_serves_every_deployment_and_runs_a_decision_from_the_ui(
    tmp_path: Path,
) -> None:
    port = free_port()
    web_port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    db = f"sqlite:///{tmp_path / 'procure.db'}"
    sink = MailSink().start()
    routes = tmp_path / "apprise.yml"
    routes.write_text(sink.routes(), encoding="utf-8")
    # No PROCURE_BASE_URL (links follow --web-port), no PREFECT_RUNNER_POLL_FREQUENCY (serve
    # polls every second), no PROCURE_HR_EXPORT (hr-sync unscheduled, and said so).
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "PROCURE_HOME": str(tmp_path / "home"),
        "PROCURE_NOW": NOW.isoformat(),
        "PROCURE_APPRISE_CONFIG": str(routes),
        # The code under test, when it is not the installed one (a git worktree's).
        **{k: v for k, v in os.environ.items() if k == "PYTHONPATH"},
    }
    assert (
        subprocess.run(
            [PROCURE, "--db", db, "init", "--sample"], env=env, capture_output=True, timeout=120
        ).returncode
        == 0
    )
    request = tmp_path / "request.yaml"
    request.write_text(
        "kind: refresh\nrequester: rita.requester@example.com\ncost_centre: CC-ENG\n"
        "needed_by: 2027-01-20\nlines: [{sku: MON-27, quantity: 1}]\n",
        encoding="utf-8",
    )
    assert (
        subprocess.run(
            [PROCURE, "--db", db, "request", "submit", str(request)],
            env=env,
            capture_output=True,
            timeout=60,
        ).returncode
        == 0
    )
    log = (tmp_path / "serve.log").open("wb")
    serve = subprocess.Popen(
        [PROCURE, "--db", db, "serve", "--port", str(port), "--web-port", str(web_port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    client = httpx.Client(base_url=api, timeout=10)
    try:
        deadline = time.monotonic() + 150
        names: set[str] = set()
        while time.monotonic() < deadline and len(names) < len(DEPLOYMENTS):
            try:
                found = client.post("/deployments/filter", json={})
                if found.status_code == 200:
                    names = {d["name"] for d in found.json()}
            except httpx.HTTPError:
                pass
            time.sleep(1)
        assert names == {d.name for d in DEPLOYMENTS}, (tmp_path / "serve.log").read_text()[-3000:]
        schedules = {
            d["name"]: [s["schedule"].get("cron") for s in d["schedules"]]
            for d in client.post("/deployments/filter", json={}).json()
        }
        assert schedules["sla-watchdog"] == ["*/15 * * * *"]
        assert schedules["hr-sync"] == []  # no PROCURE_HR_EXPORT: run by hand
        assert (
            "procure serve: hr-sync is not scheduled: PROCURE_HR_EXPORT is not set"
            in (tmp_path / "serve.log").read_text()
        )
        # A second serve on this one's --port is refused before it starts anything: it would
        # serve (and, stopped, pause) this server's deployments.
        other_web = free_port()
        second = subprocess.run(
            [PROCURE, "--db", db, "serve", "--port", str(port), "--web-port", str(other_web)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 2, second.stderr
        assert second.stderr == (
            f"procure: bad input: --port: {port} is in use on 127.0.0.1 (another program "
            "listens there): choose another --port\n"
        )
        assert second.stdout == ""
        assert (
            not (tmp_path / "home" / "prefect" / "server.log").read_text().count("already in use")
        )  # no second Prefect server was started
        with socket.socket() as s:
            s.bind(("127.0.0.1", other_web))  # nor its web app
        paused = {
            d["name"]: d["paused"] for d in client.post("/deployments/filter", json={}).json()
        }
        assert paused == dict.fromkeys(paused, False) and len(paused) == len(DEPLOYMENTS)
        # A decision as the Prefect UI would submit it: a run of record-decision with its form.
        deployment = client.get("/deployments/name/record-decision/record-decision").json()

        def form(approver: str, decision: str) -> httpx.Response:
            return _retrying(
                client.post,
                f"/deployments/{deployment['id']}/create_flow_run",
                json={
                    "parameters": {
                        "decision": {
                            "request": "PR-0001",
                            "approver": approver,
                            "decision": decision,
                        }
                    }
                },
            )

        def ended(run_id: str) -> dict[str, Any]:
            run: dict[str, Any] = {}
            while time.monotonic() < deadline + 90:
                run = _retrying(client.get, f"/flow_runs/{run_id}").json()
                if run["state_type"] in ("COMPLETED", "FAILED", "CRASHED"):
                    break
                time.sleep(1)
            return run

        def shown() -> str:
            return subprocess.run(
                [PROCURE, "--db", db, "request", "show", "PR-0001", "--json"],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            ).stdout

        created = form("ida.it@example.com", "approve")
        assert created.status_code == 201, (created.status_code, created.text[:500])
        run = ended(created.json()["id"])
        assert run["state_type"] == "COMPLETED", (tmp_path / "serve.log").read_text()[-3000:]
        assert run["name"] == "decide-PR-0001"
        assert '"by": "ida.it@example.com"' in shown()
        # The request's notifications, rendered by a flow run in its own process: their links
        # point at the web app this serve runs (--web-port), and open there.
        dispatcher = client.get(
            "/deployments/name/dispatch-notifications/dispatch-notifications"
        ).json()
        sent = _retrying(
            client.post,
            f"/deployments/{dispatcher['id']}/create_flow_run",
            json={"parameters": {"requests": ["PR-0001"]}},
        )
        assert sent.status_code == 201, sent.text[:500]
        dispatched = ended(sent.json()["id"])
        assert dispatched["state_type"] == "COMPLETED", (tmp_path / "serve.log").read_text()[-3000:]
        links = [
            link
            for mail in sink.received
            for link in re.findall(r"https?://[^/\s]+/a/[^\s?]+", mail.part("plain"))
        ]
        assert links, [mail.subject for mail in sink.received]
        assert {link.split("/a/")[0] for link in links} == {f"http://127.0.0.1:{web_port}"}
        # Every link opens at that web app: purchasing's with the form, IT's saying the IT part
        # was decided (by Ida, above); which one comes first depends on the sending order.
        pages = [httpx.get(link, timeout=10) for link in links]
        assert all("PR-0001" in page.text for page in pages), [p.status_code for p in pages]
        assert {page.status_code for page in pages} <= {200, 409}
        assert 200 in {page.status_code for page in pages}
        # Serve's runner asks for runs every second: each run is taken up (Pending) within a
        # few seconds of being asked for (under a second here; with Prefect's default, 10 s,
        # both within 5 s one time in four).
        for run_id in (created.json()["id"], sent.json()["id"]):
            assert _taken_up_after(client, run_id) < 5.0
        # A form that is not a decision never becomes a run; nor does a send-back without a
        # comment (the form's schema says that a reject or a send-back needs one).
        assert form("ida.it@example.com", "maybe").status_code == 409
        silent = form("paul.purchasing@example.com", "send_back")
        assert silent.status_code == 409, silent.text[:500]
        assert "comment" in silent.text
        assert '"by": "paul.purchasing@example.com"' not in shown()
        # The approval web app answers beside the flows.
        web = httpx.get(f"http://127.0.0.1:{web_port}/api/health", timeout=10)
        assert web.json() == {"status": "ok"}
        assert web.headers["x-frame-options"] == "DENY"
    finally:
        client.close()
        os.killpg(serve.pid, signal.SIGINT)
        try:
            serve.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(serve.pid, signal.SIGKILL)
            serve.wait(timeout=10)
        sink.stop()
    text = (tmp_path / "serve.log").read_text()
    # No traceback, except where a scheduled run happened to start as Ctrl-C reached the whole
    # process group: Prefect then reports that run's KeyboardInterrupt, which is the stop asked for.
    # A chained traceback (an exception raised while handling another, such as the
    # CancelledError that Ctrl-C leaves in an open request) counts by the exception it ends in.
    unexpected = [t for t in _chains(text) if not _interrupted(t)]
    assert not unexpected, text[-3000:]
    # the server it started stopped with it
    try:
        httpx.get(f"{api}/health", timeout=2)
        raise AssertionError("the Prefect server outlived procure serve")
    except httpx.HTTPError:
        pass


def _taken_up_after(client: httpx.Client, run_id: str) -> float:
    """Seconds from a run's Scheduled state to its Pending one (a runner took it up)."""
    states = _retrying(client.get, "/flow_run_states/", params={"flow_run_id": run_id}).json()
    at = {s["type"]: datetime.fromisoformat(s["timestamp"]) for s in states}
    return (at["PENDING"] - at["SCHEDULED"]).total_seconds()


class _Health(BaseHTTPRequestHandler):
    """Another program answering on the port as a Prefect server does: GET /api/health."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"true")

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_a_prefect_server_that_cannot_listen_is_not_taken_for_another_answering_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The port taken after `procure serve` checked it: the Prefect server it starts stops at
    once, while another program answers health checks on the port. That answer is not taken
    for its server's (serve would run, and, stopped, pause, the other server's deployments):
    the start is refused, naming --port."""
    other = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    port = int(other.server_address[1])
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))
    (tmp_path / "prefect").mkdir()
    try:
        assert httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=5).json() is True
        with pytest.raises(InputError) as refused:
            serving.start_server(port)
    finally:
        other.shutdown()
        other.server_close()
    assert str(refused.value) == (
        f"--port: {port} is in use on 127.0.0.1 (another program listens there): "
        "choose another --port"
    )
    assert "already in use" in (tmp_path / "prefect" / "server.log").read_text()


_CHAINED = (
    "During handling of the above exception, another exception occurred:",
    "The above exception was the direct cause of the following exception:",
)


def _chains(text: str) -> list[str]:
    """Each traceback in a log, a chained one as its last part (the exception it ends in)."""
    parts = text.split("Traceback (most recent call last):")[1:]
    return [part for part in parts if not any(marker in part for marker in _CHAINED)]


def _interrupted(traceback: str) -> bool:
    """A traceback (the text after its header) that ends in the KeyboardInterrupt of Ctrl-C.
    The flow-run processes Ctrl-C stops write to one log at once, so another's log line may
    come before the exception's own line: the exception lines (unindented, an exception's
    name) are looked at, not the first unindented line."""
    exception = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b")
    raised = [line.strip() for line in traceback.splitlines() if exception.match(line)]
    return bool(raised) and all(line == "KeyboardInterrupt" for line in raised)
