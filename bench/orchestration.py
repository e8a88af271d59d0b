"""Prefect's cost: a 1,000-request intake as a flow vs the plain engine, and the time from a
decision to the start of its orchestration run under `procure serve`.

Both are measured in one run on this machine, on SQLite: the plain engine submits the same
file in the same batches within one process; the flow does it through Prefect's tasks
against a started Prefect server (no temporary-server start in the figure). The two alternate,
ROUNDS times each, with the server up throughout, as `procure serve` keeps it: the ratio is what
running the batch as a flow adds, not what an idle server's own loops take from 2 cores (that
is shown beside it, against the plain engine with no server at all).
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from bench.common import Row, write_table

REQUESTS = 1_000
BATCH = 200
ROUNDS = 3  # plain and flow runs alternate: a burst of other work slows both alike
ROOT = Path(__file__).resolve().parents[1]


def _request_file(path: Path) -> None:
    lines = ["requests:"]
    for i in range(REQUESTS):
        lines.append(
            "  - {kind: refresh, requester: rita.requester@example.com, cost_centre: CC-ENG, "
            f"needed_by: 2027-06-30, justification: 'monitor {i}', lines: [{{sku: MON-27, quantity: 1}}]}}"
        )
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _fresh_db(path: Path) -> str:
    import sample
    from models import pipeline
    from models.db import transaction
    from procure.database import migrate

    url = f"sqlite:///{path}"
    engine, _, _ = migrate(url)
    with transaction(engine) as session:
        pipeline.install(
            session,
            text=pipeline.DEFAULT_PIPELINE.read_text(encoding="utf-8"),
            source="default.yaml",
            actor="bench",
        )
        sample.load(session, actor="bench")
    engine.dispose()
    return url


def plain_intake(url: str, source: Path) -> float:
    from models.actions import check_drafts, submit
    from models.db import make_engine, transaction
    from models.requests import read_request_file

    engine = make_engine(url)
    start = time.perf_counter()
    drafts = read_request_file(source)
    with transaction(engine, readonly=True) as session:  # every request checked before any is
        assert not check_drafts(session, drafts=drafts)  # written, as the flow and the CLI do
    for i in range(0, len(drafts), BATCH):
        with transaction(engine) as session:
            submit(session, drafts=drafts[i : i + BATCH])
    seconds = time.perf_counter() - start
    engine.dispose()
    return seconds


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def prefect_server(home: Path) -> Iterator[None]:
    """A started Prefect server (as `procure serve` starts it) for the runs inside the block."""
    from procure.orchestration import prepare_environment
    from procure.serving import start_server

    prepare_environment(home)
    server, api = start_server(_free_port())
    os.environ["PREFECT_API_URL"] = api
    try:
        yield
    finally:
        from prefect.logging.handlers import APILogWorker

        try:
            # The runs' last log lines reach the server before it stops. (APILogHandler.flush()
            # was a class method before Prefect 3.9.1; the worker's drain is the same in both.)
            APILogWorker.drain_all(timeout=5)
        finally:  # whatever happened, no server is left running after the benchmark
            server.terminate()
            server.wait(timeout=30)
            os.environ.pop("PREFECT_API_URL", None)


def flow_intake(url: str, source: Path) -> float:
    """The intake flow against the started Prefect server (prefect_server)."""
    import asyncio

    from flows.intake import intake

    os.environ["PROCURE_DATABASE_URL"] = url
    start = time.perf_counter()
    asyncio.run(intake(str(source), batch_size=BATCH))
    return time.perf_counter() - start


def warm_up(url: str, folder: Path) -> None:
    """One small intake run first: the flow's and the client's first-run costs are not counted."""
    warm = folder / "warm.yaml"
    warm.write_text(
        "{kind: refresh, requester: rita.requester@example.com, cost_centre: CC-ENG, "
        "needed_by: 2027-06-30, justification: warm-up, lines: [{sku: MON-27, quantity: 1}]}\n",
        encoding="utf-8",
    )
    flow_intake(url, warm)


def decision_latency(home: Path) -> tuple[list[float], list[float]]:
    """Under `procure serve`: seconds from a decision's commit to the start of its advance run,
    and the seconds the decision itself took (the baseline)."""
    import httpx

    db = home / "serve.db"
    url = _fresh_db(db)
    port = _free_port()
    env = {**os.environ, "PROCURE_HOME": str(home / "serve-home")}
    # What users get: procure serve's own runner poll (1 s), not an operator's setting.
    env.pop("PREFECT_RUNNER_POLL_FREQUENCY", None)
    env.pop("PREFECT_API_URL", None)
    log = (home / "serve.log").open("wb")
    serve = subprocess.Popen(
        [str(Path(sys.executable).with_name("procure")), "--db", url, "serve", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    api = f"http://127.0.0.1:{port}/api"
    client = httpx.Client(base_url=api, timeout=10)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if client.get("/deployments/name/advance/advance").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        from models.actions import decide, submit
        from models.db import make_engine, transaction
        from models.requests import Draft, RequestCreate
        from models.sources import Document
        from procure import orchestration

        os.environ["PREFECT_API_URL"] = api
        engine = make_engine(url)
        latencies, decisions = [], []
        for i in range(5):
            create = RequestCreate.model_validate(
                {
                    "kind": "refresh",
                    "requester": "rita.requester@example.com",
                    "cost_centre": "CC-ENG",
                    "needed_by": "2027-06-30",
                    "justification": f"latency {i}",
                    "lines": [{"sku": "MON-27", "quantity": 1}],
                }
            )
            with transaction(engine) as session:
                (done,) = submit(session, drafts=[Draft(create, Document("bench", {}), ())])
            started = time.perf_counter()
            with transaction(engine) as session:
                decide(session, ref=done.ref, actor_email="ida.it@example.com", outcome="approve")
            committed_at = datetime.now(UTC)
            decisions.append(time.perf_counter() - started)
            run_id = orchestration.trigger("advance", {"request": done.ref})
            for _ in range(5):  # a server busy on 2 cores answers 503 now and then: ask again
                if run_id is not None:
                    break
                time.sleep(1)
                run_id = orchestration.trigger("advance", {"request": done.ref})
            assert run_id is not None, "the Prefect server refused to start the advance flow"
            while True:
                run = client.get(f"/flow_runs/{run_id}").json()
                if run.get("start_time"):
                    begun = datetime.fromisoformat(run["start_time"].replace("Z", "+00:00"))
                    latencies.append(max(0.0, (begun - committed_at).total_seconds()))
                    break
                time.sleep(0.1)
        engine.dispose()
        return latencies, decisions
    finally:
        client.close()
        os.killpg(serve.pid, 2)
        try:
            serve.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(serve.pid, 9)
        os.environ.pop("PREFECT_API_URL", None)


def run() -> list[Row]:
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        source = tmp / "requests.yaml"
        _request_file(source)
        alone = plain_intake(_fresh_db(tmp / "alone.db"), source)
        print(f"orchestration: plain engine, no Prefect server: {alone:.2f} s", flush=True)
        plain: list[float] = []
        flowed: list[float] = []
        with prefect_server(tmp / "home"):
            warm_up(_fresh_db(tmp / "warm.db"), tmp)
            for i in range(ROUNDS):
                plain.append(plain_intake(_fresh_db(tmp / f"plain-{i}.db"), source))
                flowed.append(flow_intake(_fresh_db(tmp / f"flow-{i}.db"), source))
                print(
                    f"orchestration: round {i + 1}: plain engine {plain[-1]:.2f} s, "
                    f"intake flow {flowed[-1]:.2f} s",
                    flush=True,
                )
        base, ours = statistics.median(plain), statistics.median(flowed)
        rows.append(
            Row(
                f"intake flow, {REQUESTS:,} requests in batches of {BATCH} (median of {ROUNDS})",
                ours,
                f"the plain engine, same batches (median of {ROUNDS})",
                base,
                "overhead under 25 %",
                ours <= base * 1.25,
            )
        )
        rows.append(
            Row(
                "the plain engine with the Prefect server idle beside it",
                base,
                "the plain engine with no Prefect server running",
                alone,
                "context only: what the idle server takes from 2 cores",
                True,
            )
        )
        latencies, decisions = decision_latency(tmp)
        median = statistics.median(latencies)
        print(
            f"orchestration: decision to its run starting, median of {len(latencies)}: {median:.2f} s",
            flush=True,
        )
        rows.append(
            Row(
                "decision committed to its advance run starting (procure serve, median of 5)",
                median,
                "the decision's own transaction",
                statistics.median(decisions),
                "a few seconds (runner polls every second)",
                median <= 5,
            )
        )
    return rows


def main() -> None:
    path = write_table("orchestration", "Prefect's cost (SQLite, one machine)", run())
    print(path.read_text(encoding="utf-8"))


if __name__ == "__main__":
    main()
