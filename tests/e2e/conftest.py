"""The approval web app on a real uvicorn server on loopback, with the real SMTP sink."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy.engine import Engine
from sqlmodel import Session, func, select

from models.requests import Decision
from notifications.context import Links
from notifications.dispatch import Dispatcher
from notifications.routing import load_routes
from notifications.sink import MailSink, free_port
from procure import settings as settings_module
from tests.conftest import Databases
from tests.factories import NOW
from web.app import create_app

KEY = "k" * 40
API_TOKEN = "api-token-for-tests-0123456789abcdef"


@dataclass
class Site:
    base: str
    engine: Engine
    sink: MailSink
    settings: Any
    client: httpx.Client

    def dispatch(self) -> None:
        relay = Dispatcher(
            self.engine,
            load_routes(self.settings.apprise_config),
            Links(self.base, self.settings.signing_key(), NOW),
        )
        relay.run(now=NOW)

    def links_to(self, email: str, kind: str = "a") -> list[str]:
        found: list[str] = []
        for mail in self.sink.to(email):
            found += re.findall(rf"{re.escape(self.base)}/{kind}/\S+", mail.part("plain"))
        return found

    def approval_link(self, email: str) -> str:
        (page, *_) = [u.split("?")[0] for u in self.links_to(email)]
        return page

    def signed_approval_link(self, ref: str, stage: str, email: str) -> str:
        """The link an approval email would carry, signed here: for a site that sends none."""
        from models import actions
        from models.org import person_by_email

        with Session(self.engine) as session:
            request = actions.get_request(session, ref)
            (open_stage,) = [s for s in actions.stages_of(session, request) if s.key == stage]
            reader = person_by_email(session, email)
            assert reader is not None
            links = Links(self.base, self.settings.signing_key(), NOW)
            return links.approval(request, open_stage, reader)["page"]

    @property
    def sink_folder(self) -> Path:
        return Path(self.settings.home)

    def decisions(self) -> int:
        with Session(self.engine) as session:
            return int(session.exec(select(func.count()).select_from(Decision)).one())

    def form(self, url: str, decision: str, **extra: str) -> httpx.Response:
        page = self.client.get(url)
        assert page.status_code == 200, page.text
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf is not None
        return self.client.post(
            url, data={"csrf": csrf.group(1), "decision": decision, **extra}, headers=self.origin
        )

    @property
    def origin(self) -> dict[str, str]:
        return {"Origin": self.base}


def routes_file(path: Path, sink: MailSink) -> Path:
    path.write_text(sink.routes())
    return path


@pytest.fixture
def site(databases: Databases, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Site]:
    """The web app with notification routes to the SMTP sink; without any (notices stay
    queued, as with PROCURE_APPRISE_CONFIG unset) where a test says
    `@pytest.mark.parametrize("site", ["no routes"], indirect=True)`."""
    routed = getattr(request, "param", "routes") == "routes"
    url = databases.url("sample")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with MailSink() as sink:
        config = settings_module.load(
            database_url=url,
            home=tmp_path / "home",
            base_url=base,
            secret_key=KEY,
            now=NOW,
            apprise_config=routes_file(tmp_path / "apprise.yml", sink) if routed else None,
            api_token=API_TOKEN,
        )
        app = create_app(config)
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        client = httpx.Client(base_url=base, timeout=30, follow_redirects=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if client.get("/health").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        engine = databases.engine("sample")
        engine.dispose()
        from models.db import make_engine

        own = make_engine(url)
        try:
            yield Site(base, own, sink, config, client)
        finally:
            client.close()
            server.should_exit = True
            thread.join(10)
            app.state.web.close()
            own.dispose()


def wait_for(predicate: Any, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())
