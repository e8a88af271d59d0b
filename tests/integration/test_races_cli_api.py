"""50 concurrent decisions on one stage through the documented CLI (50 processes) and the HTTP
API (50 requests to one uvicorn server), on SQLite and PostgreSQL: exactly one decision and
one audit row, the others a clean refusal (exit 1, HTTP 409), never a crash."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import uvicorn
from sqlalchemy.engine import Engine

from models.db import make_engine
from notifications.sink import free_port
from procure import settings as settings_module
from tests.conftest import Databases
from tests.factories import NOW, submit
from tests.integration.test_races import add_people, assert_chain_intact, counts
from web.app import create_app

RACERS = 50
PEOPLE = [f"racer{n:02d}@example.com" for n in range(RACERS)]
PROCURE = str(Path(sys.executable).with_name("procure"))
TOKEN = "race-api-token-0123456789abcdef0123"


@pytest.fixture
def raced(databases: Databases) -> Iterator[tuple[str, Engine, str]]:
    """A database (URL and engine) with 50 more IT people and one request in joint review."""
    url = databases.url("sample")
    engine = make_engine(url)
    add_people(engine, "it", PEOPLE)
    ref = submit(engine)
    yield url, engine, ref
    engine.dispose()


def test_fifty_cli_processes_deciding_one_stage_make_one_decision(
    raced: tuple[str, Engine, str], tmp_path: Path
) -> None:
    url, engine, ref = raced
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PROCURE_NOW": NOW.isoformat()}
    processes = [
        subprocess.Popen(
            [PROCURE, "--db", url, "decide", ref, "--as", person, "--approve"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for person in PEOPLE
    ]
    outcomes = []
    for process in processes:
        out, err = process.communicate(timeout=300)
        outcomes.append((process.returncode, out, err))
    codes = sorted(code for code, _, _ in outcomes)
    assert codes == [0] + [1] * (RACERS - 1), [o for o in outcomes if o[0] not in (0, 1)][:3]
    refusals = [err for code, _, err in outcomes if code == 1]
    assert all("already decided" in err for err in refusals), refusals[:3]
    assert not any("Traceback" in err or "internal error" in err for _, _, err in outcomes)
    assert counts(engine, ref, "joint_review") == (1, 1)
    assert_chain_intact(engine)


def test_fifty_api_calls_deciding_one_stage_make_one_decision(
    raced: tuple[str, Engine, str], tmp_path: Path
) -> None:
    url, engine, ref = raced
    port = free_port()
    config = settings_module.load(
        database_url=url, home=tmp_path / "home", secret_key="r" * 40, now=NOW, api_token=TOKEN
    )
    app = create_app(config)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)

    def decide(person: str) -> tuple[int, str]:
        response = httpx.post(
            f"{base}/api/requests/{ref}/decisions",
            json={"approver": person, "decision": "approve", "stage": "joint_review"},
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=120,
        )
        return response.status_code, response.json().get("error", "")

    try:
        with ThreadPoolExecutor(RACERS) as pool:
            answers = list(pool.map(decide, PEOPLE))
    finally:
        server.should_exit = True
        thread.join(10)
        app.state.web.close()
    codes = sorted(code for code, _ in answers)
    assert codes == [200] + [409] * (RACERS - 1), answers
    assert all("already decided" in error for code, error in answers if code == 409)
    assert counts(engine, ref, "joint_review") == (1, 1)
    assert_chain_intact(engine)
