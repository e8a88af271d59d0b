"""A real Prefect server for the tests that need one outside the test harness: its own
PostgreSQL database (it starts in about half the time SQLite takes), on a free port."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psycopg

from notifications.sink import free_port
from tests.conftest import POSTGRES_ADMIN_URL, RUN_ID

PREFECT = str(Path(sys.executable).with_name("prefect"))


class PrefectServer:
    """`prefect server start` (API only unless `services`); restart() keeps its database,
    stop() drops it."""

    def __init__(
        self, tmp: Path, *, services: bool = False, env: dict[str, str] | None = None
    ) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.api = f"http://127.0.0.1:{self.port}/api"
        self.database = f"procure_pf_{RUN_ID}_{self.port}"
        self.services = services
        self.env = env or {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(tmp),
            "PREFECT_HOME": str(tmp / "prefect"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{self.database}"')
        self._launch()

    def restart(self) -> None:
        """Stop the server and start it again on the same database and port: what it knew
        (deployments, flow runs) survives, as it does a machine's restart."""
        self._terminate()
        self._launch()

    def _launch(self) -> None:
        base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0].replace(
            "postgresql://", "postgresql+asyncpg://"
        )
        env = {**self.env, "PREFECT_API_DATABASE_CONNECTION_URL": f"{base}/{self.database}"}
        env.pop("PREFECT_API_URL", None)  # the server is the API, not a client of one
        only_api = [] if self.services else ["--no-services", "--no-ui"]
        log = (self.tmp / "server.log").open("ab")
        self.process = subprocess.Popen(
            [
                PREFECT,
                "server",
                "start",
                *only_api,
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.api}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert self.process.poll() is None, self.log()
            time.sleep(0.3)
        raise AssertionError(f"the Prefect server did not start:\n{self.log()}")

    def log(self) -> str:
        return (self.tmp / "server.log").read_text()[-3000:]

    def stop(self) -> None:
        self._terminate()
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')

    def _terminate(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)
