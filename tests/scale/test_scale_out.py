"""Scale-out: a Prefect server on PostgreSQL, procure's database on PostgreSQL, two workers on a
process pool, deployments from prefect.yaml; 200 requests pushed through to delivery; a worker
killed with SIGKILL in the middle of a batch loses nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import func, select

from models import actions
from models.assets import Asset
from models.db import make_engine, transaction
from models.lifecycle import AssetStatus, RequestStatus
from models.outbox import Notification
from models.requests import Decision, Request
from tests.conftest import Databases
from tests.factories import BOB, IDA, NOW, PAUL, RITA, TODAY
from tests.prefect_server import PREFECT, PrefectServer

ROOT = Path(__file__).resolve().parents[2]
REQUESTS = 200
pytestmark = pytest.mark.postgres


class Cluster:
    """A Prefect server and its workers, and the calls the test makes to them."""

    def __init__(self, tmp: Path, database_url: str):
        self.tmp = tmp
        self.server = PrefectServer(tmp, services=True)
        self.api = self.server.api
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(tmp),
            "PREFECT_HOME": str(tmp / "prefect"),
            "PREFECT_API_URL": self.api,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            "PREFECT_WORKER_PREFETCH_SECONDS": "1",
            "PREFECT_LOGGING_COLORS": "false",
            "PROCURE_DATABASE_URL": database_url,
            "PROCURE_NOW": NOW.isoformat(),
            "PROCURE_HR_EXPORT": str(tmp / "hr.csv"),
            "PROCURE_ROOT": str(ROOT),
        }
        self.server.env = self.env  # the server drops PREFECT_API_URL from it
        self.workers: list[subprocess.Popen[bytes]] = []
        self.client = httpx.Client(base_url=self.api, timeout=30)

    def start(self) -> None:
        self.server.start()

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [PREFECT, *args], env=self.env, cwd=ROOT, capture_output=True, text=True, timeout=180
        )
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        return done

    def start_worker(self, name: str) -> subprocess.Popen[bytes]:
        log = (self.tmp / f"{name}.log").open("wb")
        worker = subprocess.Popen(
            [PREFECT, "worker", "start", "--pool", "procure", "--name", name],
            env=self.env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: SIGKILL takes its flow runs too
        )
        self.workers.append(worker)
        return worker

    def kill(self, worker: subprocess.Popen[bytes]) -> None:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)

    def run(self, deployment: str, **parameters: Any) -> str:
        flow = {"record-decision": "record-decision"}.get(deployment, deployment)
        found = self.client.get(f"/deployments/name/{flow}/{deployment}")
        found.raise_for_status()
        created = self.client.post(
            f"/deployments/{found.json()['id']}/create_flow_run", json={"parameters": parameters}
        )
        created.raise_for_status()
        return str(created.json()["id"])

    def state(self, run_id: str) -> str:
        """The run's state type. A read that times out is asked again, up to three times: two
        workers' flow runs and the server's own services share two cores with the rest of the
        suite, and one slow answer says nothing about the runs."""
        for attempt in range(3):
            try:
                response = self.client.get(f"/flow_runs/{run_id}")
                break
            except httpx.TimeoutException:
                if attempt == 2:
                    raise AssertionError(
                        f"the Prefect server did not answer for run {run_id} in 3 × 30 s\n"
                        f"{self.server.log()}"
                    ) from None
        response.raise_for_status()
        return str(response.json()["state_type"])

    def wait(self, *run_ids: str, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        pending = set(run_ids)
        while pending and time.monotonic() < deadline:
            for run_id in list(pending):
                state = self.state(run_id)
                if state == "COMPLETED":
                    pending.discard(run_id)
                elif state in ("FAILED", "CRASHED", "CANCELLED"):
                    logs = "\n".join(
                        (self.tmp / f"{w}.log").read_text()[-3000:]
                        for w in ("w1", "w2", "w3")
                        if (self.tmp / f"{w}.log").exists()
                    )
                    raise AssertionError(f"flow run {run_id} ended {state}\n{logs}")
            time.sleep(0.5)
        assert not pending, (
            f"flow runs still not done after {timeout} s: {pending}\n{self.server.log()}"
        )

    def stop(self) -> None:
        for worker in self.workers:
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGTERM)
                try:
                    worker.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(worker.pid, signal.SIGKILL)
        self.server.stop()
        self.client.close()


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[Cluster, Engine]]:
    dbs = Databases("postgres", request, tmp_path)
    url = dbs.url("sample")
    engine = make_engine(url)
    dbs.engines.append(engine)
    cluster = Cluster(tmp_path, url)
    try:
        cluster.start()
        yield cluster, engine
    finally:
        cluster.stop()
        dbs.close()


def count(engine: Engine, model: Any, *where: Any) -> int:
    with transaction(engine, readonly=True) as session:
        return int(session.exec(select(func.count()).select_from(model).where(*where)).one())


def test_two_workers_push_200_requests_to_delivery_and_a_killed_worker_loses_nothing(
    cluster: tuple[Cluster, Engine], tmp_path: Path
) -> None:
    prefect, engine = cluster
    prefect.cli("work-pool", "create", "procure", "--type", "process")
    prefect.cli("--no-prompt", "deploy", "--all")
    prefect.start_worker("w1")
    prefect.start_worker("w2")

    # 200 requests in one file, submitted by the intake deployment in batches.
    entries = "".join(
        f"  - {{kind: refresh, requester: {RITA}, cost_centre: CC-ENG, needed_by: {TODAY.replace(year=TODAY.year + 1)},"
        f" justification: 'monitor {i}', lines: [{{sku: MON-27, quantity: 1}}]}}\n"
        for i in range(REQUESTS)
    )
    source = tmp_path / "requests.yaml"
    source.write_text("requests:\n" + entries, encoding="utf-8")
    prefect.wait(prefect.run("intake", source=str(source), batch_size=50))
    refs = [f"PR-{i:04d}" for i in range(1, REQUESTS + 1)]
    assert count(engine, Request) == REQUESTS

    # Scripted decisions: IT and purchasing in the joint review, then the budget owner.
    for ref in refs:
        for who in (IDA, PAUL, BOB):
            with transaction(engine) as session:
                actions.decide(
                    session,
                    ref=ref,
                    actor_email=who,
                    outcome="approve",
                    now=NOW,
                    confirm_terms=who == PAUL,
                )
    assert count(engine, Request, Request.status == RequestStatus.APPROVED) == REQUESTS

    # Two order runs at once, one for each worker (each flow run is a process of its own).
    orders = [
        prefect.run("order", requests=refs[i : i + REQUESTS // 2], batch_size=10)
        for i in range(0, REQUESTS, REQUESTS // 2)
    ]
    prefect.wait(*orders)
    assert count(engine, Request, Request.status == RequestStatus.ORDERED) == REQUESTS

    # One supplier notice for the first half, delivered normally.
    half = REQUESTS // 2
    first = tmp_path / "asn-1.csv"
    first.write_text(
        "request,serial\n" + "".join(f"{r},SN-{i:05d}\n" for i, r in enumerate(refs[:half])),
        encoding="utf-8",
    )
    prefect.wait(prefect.run("delivery", serials_file=str(first), batch_size=10))

    # The second half one request per batch; both workers are killed mid-run.
    second = tmp_path / "asn-2.csv"
    second.write_text(
        "request,serial\n"
        + "".join(f"{r},SN-{i:05d}\n" for i, r in enumerate(refs[half:], start=half)),
        encoding="utf-8",
    )
    killed_run = prefect.run("delivery", serials_file=str(second), batch_size=1)
    delivered_before = count(engine, Asset, Asset.status != AssetStatus.ORDERED)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        now_delivered = count(engine, Asset, Asset.status != AssetStatus.ORDERED)
        if now_delivered > delivered_before:
            break
        time.sleep(0.05)
    for worker in list(prefect.workers):
        prefect.kill(worker)
    at_kill = count(engine, Asset, Asset.status != AssetStatus.ORDERED)
    assert half < at_kill < REQUESTS, (
        f"the kill did not land mid-batch ({at_kill} of {REQUESTS} delivered)"
    )
    assert prefect.state(killed_run) != "COMPLETED"

    # After a restart the same notice again: the batch completes with the same end state.
    prefect.start_worker("w3")
    prefect.wait(prefect.run("delivery", serials_file=str(second), batch_size=10))

    assert count(engine, Request, Request.status == RequestStatus.ROLLED_OUT) == REQUESTS
    assert count(engine, Asset, Asset.status == AssetStatus.DEPLOYED) == REQUESTS
    # No decision applied twice: exactly three per request.
    assert count(engine, Decision) == 3 * REQUESTS
    # No notification queued twice: one per event and audience for each request.
    with transaction(engine, readonly=True) as session:
        per_request = session.exec(
            select(Notification.event, Notification.audience, func.count())
            .where(Notification.request_id.is_not(None))  # type: ignore[union-attr]
            .group_by(Notification.event, Notification.audience)
        ).all()
    counted = {(event, audience): n for event, audience, n in per_request}
    assert counted[("ordered", f"person:{RITA}")] == REQUESTS
    assert counted[("delivered", "team:it")] == REQUESTS
    assert counted[("rolled_out", f"person:{RITA}")] == REQUESTS
    with transaction(engine, readonly=True) as session:
        from models.audit import verify

        assert verify(session).ok
