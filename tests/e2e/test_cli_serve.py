"""`procure serve` and `procure run` before they start anything (in-process): a --port that
cannot be used and a Prefect server that does not answer are named in one line, exit 2, and
nothing starts (no Prefect server, no web app, no "serving" line).

`tests/scale/test_serve.py` runs `procure serve` itself (a second serve on its busy --port,
the links following --web-port, the hr-sync line)."""

from __future__ import annotations

import shutil
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from notifications.sink import free_port
from procure import orchestration, serving
from procure.cli import main


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """PROCURE_HOME and PREFECT_HOME of their own; no Prefect server configured."""
    monkeypatch.setenv("PROCURE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "home" / "prefect"))
    for name in (
        "PREFECT_API_URL",
        "PREFECT_RUNNER_POLL_FREQUENCY",
        "PROCURE_APPRISE_CONFIG",
        "PROCURE_BASE_URL",
        "PROCURE_DEBUG",
        "PROCURE_HR_EXPORT",
    ):
        # Set, then unset: monkeypatch then restores each as it was, also one a test sets
        # past monkeypatch (serving.use_base_url sets PROCURE_BASE_URL as serve does).
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    return tmp_path / "home"


@pytest.fixture
def db(sqlite_templates: dict[str, Path], tmp_path: Path) -> str:
    """The sample database (SQLite: nothing here depends on the backend)."""
    path = tmp_path / "procure.db"
    shutil.copyfile(sqlite_templates["sample"], path)
    return f"sqlite:///{path}"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def nothing_started(home: Path, *ports: int) -> None:
    """No Prefect server was started (it logs to PREFECT_HOME/server.log from its first line),
    and the ports are free again (no web app left listening)."""
    assert not (home / "prefect" / "server.log").exists()
    for port in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port another program listens on."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        yield int(busy.getsockname()[1])


class NotFound(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_error(404)

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet: the test reads stderr


@pytest.fixture
def not_prefect() -> Iterator[str]:
    """An HTTP server that is no Prefect API (every path 404)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_serve_refuses_a_port_out_of_range_as_it_refuses_a_web_port_out_of_range(
    db: str, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for option in ("--port", "--web-port"):
        for value, bound in (
            ("70000", "less than or equal to 65535"),
            ("0", "greater than or equal to 1"),
        ):
            code, out, err = run(capsys, "--db", db, "serve", option, value)
            assert code == 2, (option, value, err)
            assert f"Invalid value for '{option}': Input should be {bound}" in err, err
            assert out == "" and "Traceback" not in err and "internal error" not in err
    nothing_started(home)


def test_serve_refuses_a_port_another_program_listens_on_before_starting_anything(
    db: str, home: Path, capsys: pytest.CaptureFixture[str], busy_port: int
) -> None:
    """Another Prefect server there would answer for the one that could not start: the serve
    would run that server's deployments, and pause them all when stopped."""
    web_port = free_port()
    for extra in (["--no-web"], ["--web-port", str(web_port)]):
        code, out, err = run(capsys, "--db", db, "serve", "--port", str(busy_port), *extra)
        assert code == 2, (extra, err)
        assert err == (
            f"procure: bad input: --port: {busy_port} is in use on 127.0.0.1 (another program "
            "listens there): choose another --port\n"
        )
        assert out == ""  # no "starting a Prefect server", no "serving"
        nothing_started(home, web_port)
    # The web app's port for the Prefect server too: one of them could not listen.
    code, out, err = run(
        capsys, "--db", db, "serve", "--port", str(web_port), "--web-port", str(web_port)
    )
    assert (code, out) == (2, "")
    assert err == (
        f"procure: bad input: --port: {web_port} is the approval web app's --web-port too: "
        "choose another --port\n"
    )
    nothing_started(home, web_port)


def test_serve_and_run_name_a_prefect_server_that_does_not_answer_and_start_nothing(
    db: str,
    home: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    not_prefect: str,
) -> None:
    closed = free_port()  # nothing listens there
    web_port = free_port()
    url = f"http://127.0.0.1:{closed}/api"
    monkeypatch.setenv("PREFECT_API_URL", url)
    for command in (
        ["serve", "--port", str(free_port()), "--web-port", str(web_port)],
        ["serve", "--no-web"],
        ["run", "digest"],
        ["run", "sla-watchdog", "--json"],
    ):
        code, out, err = run(capsys, "--db", db, *command)
        assert code == 2, (command, err)
        assert err.startswith(
            f"procure: cannot reach the Prefect server at {url} (PREFECT_API_URL): "
        ), (command, err)
        assert len(err.splitlines()) == 1 and "internal error" not in err, err
        assert out == "", (command, out)  # nothing "serving", no flow result
        nothing_started(home, web_port)
    # Set in the Prefect profile (`prefect config set PREFECT_API_URL=...`): named there.
    monkeypatch.delenv("PREFECT_API_URL")
    profiles = home / "prefect" / "profiles.toml"
    profiles.parent.mkdir(parents=True, exist_ok=True)
    profiles.write_text(
        f'active = "work"\n[profiles.work]\nPREFECT_API_URL = "{url}"\n', encoding="utf-8"
    )
    for command in (["serve", "--web-port", str(web_port)], ["run", "digest"]):
        code, out, err = run(capsys, "--db", db, *command)
        assert (code, out) == (2, ""), (command, err)
        assert err.startswith(
            f"procure: cannot reach the Prefect server at {url} (PREFECT_API_URL in {profiles}): "
        ), err
    # Something answers there, but no Prefect API (here: the address without /api).
    profiles.unlink()
    monkeypatch.setenv("PREFECT_API_URL", not_prefect)
    for command in (["serve", "--web-port", str(web_port)], ["run", "digest"]):
        code, out, err = run(capsys, "--db", db, *command)
        assert (code, out) == (2, ""), (command, err)
        assert err == (
            f"procure: cannot reach the Prefect server at {not_prefect} (PREFECT_API_URL): "
            f"{not_prefect}/health answers 404, so this is not a Prefect API (it ends in /api, "
            "e.g. http://127.0.0.1:4200/api)\n"
        ), err
    nothing_started(home, web_port)


def test_a_decision_still_says_the_unreachable_server_in_a_note_and_succeeds(
    db: str, home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The decision is committed before its advance run is asked for: a note, exit 0, as before."""
    from models.db import make_engine
    from tests.factories import IDA, NOW, submit

    monkeypatch.setenv("PROCURE_NOW", NOW.isoformat())
    engine = make_engine(db)
    ref = submit(engine)
    engine.dispose()
    url = f"http://127.0.0.1:{free_port()}/api"
    monkeypatch.setenv("PREFECT_API_URL", url)
    code, _, err = run(capsys, "--db", db, "decide", ref, "--as", IDA, "--approve")
    assert code == 0, err
    assert f"procure: note: could not start the advance flow at {url}" in err


def test_serve_polls_for_runs_every_second_unless_the_operator_says_otherwise(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A decision's advance run starts about 2 s after it (README, bench/results), not up to
    Prefect's 10 s default later; PREFECT_RUNNER_POLL_FREQUENCY, set in the environment or
    the Prefect profile, is left to Prefect."""
    assert orchestration.runner_poll_seconds() == 1.0
    monkeypatch.setenv("PREFECT_RUNNER_POLL_FREQUENCY", "30")
    assert orchestration.runner_poll_seconds() is None
    monkeypatch.delenv("PREFECT_RUNNER_POLL_FREQUENCY")
    profiles = home / "prefect" / "profiles.toml"
    profiles.parent.mkdir(parents=True, exist_ok=True)
    profiles.write_text(
        'active = "work"\n[profiles.work]\nPREFECT_RUNNER_POLL_FREQUENCY = 5\n', encoding="utf-8"
    )
    assert orchestration.runner_poll_seconds() is None


def test_links_follow_the_address_served_unless_procure_base_url_is_set(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert serving.base_url("127.0.0.1", 8091) == "http://127.0.0.1:8091"
    assert serving.base_url("::1", 8091) == "http://[::1]:8091"
    # Every interface: the machine's name, the one address that could mean it to others.
    assert serving.base_url("0.0.0.0", 8091) == f"http://{socket.gethostname()}:8091"
    assert serving.use_base_url("127.0.0.1", 8091) == "http://127.0.0.1:8091"
    monkeypatch.setenv("PROCURE_BASE_URL", "https://procure.example.com/approvals")
    assert serving.use_base_url("127.0.0.1", 8092) == "https://procure.example.com/approvals"


def test_serve_without_its_web_app_says_where_links_point(monkeypatch: pytest.MonkeyPatch) -> None:
    """`serve --no-web` serves no page: the links it sends go to PROCURE_BASE_URL, or to the
    default address, which it says is one and how to change it."""
    from procure.serving import links_without_web

    monkeypatch.delenv("PROCURE_BASE_URL", raising=False)
    assert links_without_web() == (
        "links in notifications: http://127.0.0.1:8000, the default: set PROCURE_BASE_URL to the "
        "address people open procure web at"
    )
    monkeypatch.setenv("PROCURE_BASE_URL", "https://procure.example.com")
    assert links_without_web() == (
        "links in notifications: https://procure.example.com (PROCURE_BASE_URL)"
    )
