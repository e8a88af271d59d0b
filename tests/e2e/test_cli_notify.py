"""`procure notify` end to end: send through a real SMTP server, see failures, retry, preview."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from notifications.sink import MailSink, free_port
from tests.conftest import Databases
from tests.e2e.test_cli import Cli
from tests.factories import IDA, NOW, PAUL, RITA, submit
from tests.wire import WebhookReceiver


def routes_file(path: Path, port: int) -> Path:
    mail = f"mailto://127.0.0.1:{port}?from=procure@example.com&cto=2"
    path.write_text(
        "version: 1\nurls:\n"
        f'  - "{mail}":\n      - tag: people\n'
        + "".join(
            f'  - "{mail}&to={team}@example.com":\n      - tag: {team}\n'
            for team in ("it", "purchasing", "hr", "finance", "management", "operators")
        )
    )
    return path


@pytest.fixture
def world(
    databases: Databases,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> Iterator[tuple[Cli, str, Path]]:
    """A database with one submitted request, and PROCURE_* settings as an installation has."""
    url = databases.url("sample")
    engine = databases.engine("sample")
    engine.dispose()
    from models.db import make_engine

    own = make_engine(url)
    ref = submit(own)
    own.dispose()
    monkeypatch.setenv("PROCURE_NOW", NOW.isoformat())
    monkeypatch.setenv("PROCURE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PROCURE_BASE_URL", "https://procure.example.com")
    yield Cli(url, capsys), ref, tmp_path


def test_send_delivers_and_status_counts(
    world: tuple[Cli, str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    cli, _, tmp = world
    with MailSink() as sink:
        monkeypatch.setenv(
            "PROCURE_APPRISE_CONFIG", str(routes_file(tmp / "apprise.yml", sink.port))
        )
        report = cli.json("notify", "send")
        assert report["sent"] == 8 and report["failures"] == []
        assert len(sink.received) == 8
        code, out, _ = cli("notify", "send")
        assert code == 0 and out.startswith("0 due: 0 sent")
    status = cli.json("notify", "status")
    assert status["counts"]["sent"] == 8 and status["counts"]["pending"] == 0
    assert status["items"] == []  # nothing waiting or failing


def test_a_request_for_a_decision_already_made_is_dropped_counted_and_not_listed(
    world: tuple[Cli, str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    cli, ref, tmp = world
    code, _, err = cli("decide", ref, "--as", IDA, "--approve")
    assert code == 0, err
    with MailSink() as sink:
        monkeypatch.setenv(
            "PROCURE_APPRISE_CONFIG", str(routes_file(tmp / "apprise.yml", sink.port))
        )
        code, out, _ = cli("notify", "send")
    assert code == 0
    assert "3 dropped (out of date before they went)" in out  # Ida's, Ivan's, the IT team's
    assert not [m for m in sink.received if IDA in m.recipients]
    status = cli.json("notify", "status")
    assert status["counts"]["dropped"] == 3 and status["counts"]["pending"] == 0
    assert status["items"] == []  # done, not waiting: not listed
    assert cli.json("notify", "status", "--failed")["items"] == []  # nor failing


def test_smtp_down_is_visible_in_status_and_retried(
    world: tuple[Cli, str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    cli, ref, tmp = world
    port = free_port()
    monkeypatch.setenv("PROCURE_APPRISE_CONFIG", str(routes_file(tmp / "apprise.yml", port)))
    code, out, _ = cli("notify", "send")
    assert code == 1  # nothing lost, but the operator running it should know
    assert "8 due: 0 sent, 8 to retry" in out
    code, out, _ = cli("notify", "status", "--request", ref)
    assert code == 0
    assert out.splitlines()[0].startswith("8 pending")
    assert f"127.0.0.1:{port}" in out and "next try 2026-11-25 09:01 UTC" in out
    status = cli.json("notify", "status", "--failed")
    (first, *_) = status["items"]
    assert first["attempts"] == 1 and first["deliveries"][0]["ok"] is False
    # The server comes back; the next run after the back-off sends everything.
    monkeypatch.setenv("PROCURE_NOW", "2026-11-25T09:01:00+00:00")
    with MailSink(port=port) as sink:
        assert cli.json("notify", "send")["sent"] == 8
    assert len(sink.received) == 8


def test_a_dead_row_is_requeued_by_notify_retry(
    world: tuple[Cli, str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    cli, _, tmp = world
    monkeypatch.setenv("PROCURE_MAX_ATTEMPTS", "1")
    with MailSink() as sink:
        sink.refuse[RITA] = "550 5.1.1 mailbox unavailable"
        monkeypatch.setenv(
            "PROCURE_APPRISE_CONFIG", str(routes_file(tmp / "apprise.yml", sink.port))
        )
        report = cli.json("notify", "send", code=1)
        # Seven delivered, Rita's given up, and the operators' alert about it sent at once.
        assert report["dead"] == 1 and report["sent"] == 8 and report["claimed"] == 9
        status = cli.json("notify", "status")
        dead = [i for i in status["items"] if i["status"] == "dead"]
        assert [d["audience"] for d in dead] == [f"person:{RITA}"]
        assert "550 5.1.1 mailbox unavailable" in dead[0]["last_error"]
        (alert,) = sink.to("operators@example.com")
        assert alert.subject.startswith(f"Undeliverable: request submitted for person:{RITA}")
        del sink.refuse[RITA]
        code, out, _ = cli("notify", "retry", str(dead[0]["id"]))
        assert code == 0 and out.strip() == f"queued again: #{dead[0]['id']}"
        # Queued again, it is pending: retrying it says why not (exit 1), and changes nothing.
        code, _, err = cli("notify", "retry", str(dead[0]["id"]))
        assert code == 1 and f"notification #{dead[0]['id']} is pending, not dead" in err
        assert cli.json("notify", "send")["sent"] == 1
        assert len(sink.to(RITA)) == 1


HOOK_TOKEN = "HOOKTOKEN12345"  # a recognisable fake secret: it must show nowhere


def test_a_secret_substituted_into_a_webhook_path_shows_nowhere(
    world: tuple[Cli, str, Path],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A webhook whose path holds ${HOOK_TOKEN}: `notify check`, the delivery rows, `notify
    status` and the operators' undeliverable notice show the route with the token masked."""
    cli, _, tmp = world
    monkeypatch.setenv("HOOK_TOKEN", HOOK_TOKEN)
    monkeypatch.setenv("PROCURE_MAX_ATTEMPTS", "1")
    with MailSink() as sink, WebhookReceiver() as hook:
        hook.status, hook.reply = 500, f"no hook /hooks/it-{HOOK_TOKEN}".encode()
        routes = routes_file(tmp / "apprise.yml", sink.port)
        port = hook.url.rsplit(":", 1)[1]
        routes.write_text(
            routes.read_text()
            + f'  - "json://127.0.0.1:{port}/hooks/it-${{HOOK_TOKEN}}":\n      - tag: it\n'
        )
        monkeypatch.setenv("PROCURE_APPRISE_CONFIG", str(routes))
        shown: list[str] = []
        code, out, err = cli("notify", "check")
        assert code == 0, err
        assert f"it -> json://127.0.0.1:{port}/hooks/it-****?" in out  # still recognisable
        shown += [out, err]
        checked = cli.json("notify", "check")
        assert any(
            r["url"].startswith(f"json://127.0.0.1:{port}/hooks/it-****") for r in checked["routes"]
        )
        shown.append(str(checked))
        report = cli.json("notify", "send", code=1)
        assert report["dead"] == 1
        assert hook.posts and hook.posts[0].path == f"/hooks/it-{HOOK_TOKEN}"  # the real URL
        shown.append(str(report))
        (alert,) = sink.to("operators@example.com")
        assert "Undeliverable" in alert.subject
        shown += [alert.subject, alert.part("plain"), alert.part("html")]
        code, out, err = cli("notify", "status", "--failed")
        assert code == 0 and "/hooks/it-****" in out
        shown += [out, err]
        status = cli.json("notify", "status", "--failed")
        (dead,) = [i for i in status["items"] if i["status"] == "dead"]
        assert any("/hooks/it-****" in d["target"] for d in dead["deliveries"])
        shown.append(str(status))
    from sqlmodel import Session, select

    from models.db import make_engine
    from models.outbox import Delivery, Notification

    engine = make_engine(cli.url)
    with Session(engine) as session:
        shown += [f"{d.target} {d.error}" for d in session.exec(select(Delivery)).all()]
        shown += [f"{n.last_error} {n.context}" for n in session.exec(select(Notification)).all()]
    engine.dispose()
    shown += [r.getMessage() for r in caplog.records]
    leaked = [text for text in shown if HOOK_TOKEN.lower() in text.lower()]
    assert leaked == []


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["notify", "retry"], "ID: name notification numbers or use --all-dead"),
        (["notify", "retry", "999"], "no notification #999"),
        (["notify", "retry", "x"], "Invalid value"),
        (["notify", "send", "--limit", "0"], "Invalid value"),
        (["notify", "status", "--request", "PR-9999"], "PR-9999"),
        (["notify", "preview", "approved", "--request", "PR-0001"], "no approved notification"),
        (
            ["notify", "preview", "approval_needed", "--request", "PR-0001", "--sample"],
            "give one of --request ID, --id N or --sample",
        ),
    ],
)
def test_bad_arguments_exit_2_naming_what(
    world: tuple[Cli, str, Path], args: list[str], needle: str
) -> None:
    cli, _, _ = world
    code, out, err = cli(*args)
    assert code == 2
    assert needle in err + out


def test_send_without_routes_names_the_setting_and_sends_nothing(
    world: tuple[Cli, str, Path],
) -> None:
    cli, _, _ = world
    code, _, err = cli("notify", "send")
    assert code == 2 and "PROCURE_APPRISE_CONFIG" in err
    assert cli.json("notify", "status")["counts"]["pending"] == 8


def test_a_broken_routes_file_is_named_with_its_line(
    world: tuple[Cli, str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    cli, _, tmp = world
    bad = tmp / "apprise.yml"
    bad.write_text(
        "urls:\n  - mailto://127.0.0.1:25?from=a@example.com&to=it@example.com:\n"
        "      - tag: it\n  - nope://x\n"
    )
    monkeypatch.setenv("PROCURE_APPRISE_CONFIG", str(bad))
    code, _, err = cli("notify", "send")
    assert code == 2 and f"{bad}:4" in err
    code, _, err = cli("notify", "check")
    assert code == 2 and f"{bad}:4" in err
    assert cli.json("notify", "status")["counts"]["pending"] == 8


def test_check_refuses_a_typo_d_team_tag_and_warns_of_a_written_password(
    world: tuple[Cli, str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`tag: itt` once passed with "no route for: it, …" and exit 0; now refused by line, by
    `notify check` and wherever the routes are read. A password written into the file is read
    (a test server may take any) but warned of by line, never shown."""
    cli, _, tmp = world
    path = routes_file(tmp / "apprise.yml", 25)
    good = path.read_text()
    path.write_text(good.replace("tag: it\n", "tag: itt\n"))
    monkeypatch.setenv("PROCURE_APPRISE_CONFIG", str(path))
    code, out, err = cli("notify", "check")
    assert code == 2, out
    assert err.strip() == (
        f"procure: bad input: {path}:6: urls[1].mailto://…[0].tag: tag 'itt' is no team: it, "
        "purchasing, hr, finance, "
        "management, operators, requester, or people, or an email address"
    )
    code, _, err = cli("notify", "send")
    assert code == 2 and f"{path}:6:" in err and "'itt' is no team" in err
    path.write_text(
        good
        + '  - "mailtos://procure:hunter2@smtp.example.com?from=p@example.com&to=hr@example.com":\n'
        "      - tag: hr\n"
    )
    code, out, err = cli("notify", "check")
    assert code == 0, err
    assert f"procure: warning: {path}:17: urls[7]: a password is written in the file" in err
    assert "hunter2" not in out + err
    assert cli.json("notify", "check")["routes_warnings"] == [
        f"{path}:17: urls[7]: a password is written in the file: take it from the environment "
        "(${SMTP_PASSWORD}) or a Prefect Secret block (${prefect-secret:NAME})"
    ]


def test_preview_renders_the_queued_message_of_a_request(world: tuple[Cli, str, Path]) -> None:
    cli, ref, tmp = world
    code, out, _ = cli("notify", "preview", "approval_needed", "--request", ref, "--to", PAUL)
    assert code == 0
    assert out.startswith(f"To: person:{PAUL}\nSubject: Your decision: {ref}")
    assert "https://procure.example.com/a/" in out and "decision=approve" in out
    code, out, _ = cli("notify", "preview", "review_needed", "--request", ref, "--part", "html")
    assert code == 0 and out.lstrip().startswith("<!doctype html>")
    code, out, _ = cli("notify", "preview", "informed", "--request", ref, "--out", str(tmp / "p"))
    assert code == 0
    assert (tmp / "p" / "informed.html").exists() and (tmp / "p" / "informed.txt").exists()
