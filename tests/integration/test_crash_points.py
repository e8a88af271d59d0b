"""kill -9 at each failpoint (procure/failpoints.py), then restart: the same end state as a run
without the crash, no notification lost, at most one duplicate per crash, the audit chain intact.

The dispatcher is the documented `procure notify send` against a local SMTP sink. The worker is
`procure run order|delivery`: the flow in its own process against a Prefect server (one per
module, on PostgreSQL: it starts in about half the time SQLite takes), the tasks committing one
request at a time through tasks/db.py. PROCURE_FAILPOINT makes each die at a named moment
instead of at a moment guessed by timing (tests/integration/test_crashes.py does that)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from models import actions
from models.audit import AuditEvent, verify
from models.db import make_engine, transaction
from models.outbox import Delivery, Notification
from models.requests import Request
from models.views import request_detail
from notifications.dispatch import LEASE
from notifications.sink import MailSink, Received
from procure.failpoints import VARIABLE
from tests.conftest import Databases
from tests.factories import NOW, approve_all, stale_notices, submit
from tests.prefect_server import PrefectServer

PROCURE = str(Path(sys.executable).with_name("procure"))
DISPATCH_WORKERS = 8  # the dispatcher's sending threads: copies in flight when it dies
REQUESTS = 3


def base_env(tmp: Path, url: str) -> dict[str, str]:
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp),
        "PROCURE_HOME": str(tmp / "home"),
        "PROCURE_DATABASE_URL": url,
        "PROCURE_NOW": NOW.isoformat(),
    }


def run(
    args: list[str], env: dict[str, str], failpoint: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**env, VARIABLE: failpoint} if failpoint else env
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=180)


def assert_killed_at(done: subprocess.CompletedProcess[str], point: str) -> None:
    """Died of SIGKILL, at that point (its last word), not of anything else."""
    name, _, n = point.partition(":")
    assert done.returncode == -signal.SIGKILL, (
        f"exit {done.returncode}, expected SIGKILL at {point}\n{done.stdout[-2000:]}"
        f"{done.stderr[-3000:]}"
    )
    assert done.stderr.rstrip().endswith(f"failpoint {name}:{n or 1} reached: SIGKILL"), (
        done.stderr[-2000:]
    )


def settled(sink: MailSink) -> list[Received]:
    """What the sink holds once nothing has arrived for a moment (the last message written
    before a kill may still be in the sink's event loop)."""
    seen, quiet_since = -1, time.monotonic()
    while time.monotonic() - quiet_since < 0.3:
        if len(sink.received) != seen:
            seen, quiet_since = len(sink.received), time.monotonic()
        time.sleep(0.05)
    return list(sink.received)


def notification_ids(received: list[Received]) -> Counter[int]:
    """How many copies of each notification the sink got (one destination per row here)."""
    return Counter(int(str(m.message["Message-ID"]).split(".")[1]) for m in received)


def outbox(engine: Engine) -> dict[int, str]:
    with transaction(engine, readonly=True) as session:
        return {n.id or 0: n.status for n in session.exec(select(Notification)).all()}


def delivered(engine: Engine) -> list[int]:
    """The notification of every delivery recorded as handed over."""
    with transaction(engine, readonly=True) as session:
        query = select(Delivery.notification_id).where(col(Delivery.ok).is_(True))
        return list(session.exec(query).all())


def assert_chain_verifies(engine: Engine) -> None:
    with transaction(engine, readonly=True) as session:
        result = verify(session)
    assert result.ok, result


def end_state(engine: Engine) -> dict[str, Any]:
    """What a run leaves behind: every request as `request show --json` prints it (status,
    stages, purchase orders, devices, timeline), the outbox, and the audit trail in order."""
    with transaction(engine, readonly=True) as session:
        requests = session.exec(select(Request).order_by(col(Request.id))).all()
        return {
            "requests": {r.ref: request_detail(session, r, now=NOW) for r in requests},
            "outbox": sorted(
                (n.dedup_key, n.event, n.audience, n.request_id or 0, n.status)
                for n in session.exec(select(Notification)).all()
            ),
            "audit": [
                (a.entity, a.entity_id, a.action, a.from_status, a.to_status, a.actor, a.details)
                for a in session.exec(select(AuditEvent).order_by(col(AuditEvent.seq))).all()
            ],
        }


# ------------------------------------------------------------------ the dispatcher


@pytest.fixture
def queued(databases: Databases) -> Iterator[tuple[str, Engine]]:
    """A database whose outbox holds some 40 due notifications: four requests submitted, one
    of them through every approval."""
    url = databases.url("sample")
    engine = make_engine(url)
    refs = [submit(engine, idempotency_key=f"crash-point-{i}") for i in range(4)]
    approve_all(engine, refs[0])
    yield url, engine
    engine.dispose()


@pytest.mark.parametrize("point", ["after-claim", "after-send", "after-send:half", "after-settle"])
def test_the_dispatcher_killed_at_a_failpoint_loses_nothing_and_repeats_at_most_once(
    queued: tuple[str, Engine], tmp_path: Path, point: str
) -> None:
    url, engine = queued
    rows = outbox(engine)
    assert len(rows) > 30 and set(rows.values()) == {"pending"}
    # The requests for decisions made before the dispatcher ran are dropped, not sent.
    stale = stale_notices(engine)
    assert stale and stale < set(rows)
    sendable = set(rows) - stale
    point = point.replace("half", str(len(rows) // 2))
    name, _, count = point.partition(":")
    nth = int(count or 1)
    before = end_state(engine)["requests"]

    with MailSink() as sink:
        env = base_env(tmp_path, url)
        env["PROCURE_APPRISE_CONFIG"] = str(tmp_path / "apprise.yml")
        (tmp_path / "apprise.yml").write_text(sink.routes())
        crashed = run([PROCURE, "notify", "send"], env, failpoint=point)
        assert_killed_at(crashed, point)
        at_crash = notification_ids(settled(sink))
        statuses = Counter(outbox(engine).values())
        recorded = set(delivered(engine))
        if name == "after-claim":  # all claimed (one chunk), nothing sent
            assert statuses == {"sending": len(rows)} and not at_crash and not recorded
        elif name == "after-send":  # sent in part, each copy recorded as it was handed over
            assert statuses == {"sending": len(rows)}  # the chunk never settled
            assert nth <= at_crash.total() <= nth + DISPATCH_WORKERS - 1
            assert recorded <= set(at_crash)
            # Sent and not recorded: the copy the point stopped, and the others in flight.
            assert 1 <= len(set(at_crash) - recorded) <= DISPATCH_WORKERS
        else:  # after-settle: everything sent and recorded, the process dead before it ended
            assert statuses == {"sent": len(sendable), "dropped": len(stale)}
            assert at_crash.total() == len(sendable)

        # Restarted once the dead dispatcher's lease has lapsed (before, its rows wait: the
        # timing test in test_crashes.py shows that).
        env["PROCURE_NOW"] = (NOW + LEASE).isoformat()
        again = run([PROCURE, "notify", "send", "--json"], env)
        assert again.returncode == 0, again.stdout + again.stderr
        received = notification_ids(list(sink.received))

    # Nothing lost: every row sent, every one of them in the sink; the stale ones dropped.
    assert {n: s for n, s in outbox(engine).items() if s != "sent"} == dict.fromkeys(
        stale, "dropped"
    )
    assert set(received) == sendable
    # At most one duplicate per crash: only the copies in flight when the dispatcher died
    # (handed over, not yet recorded; at most one per sending thread) arrive twice, and
    # nothing more than twice.
    assert max(received.values()) <= 2
    duplicated = {n for n, copies in received.items() if copies == 2}
    assert duplicated == (set(at_crash) - recorded if name == "after-send" else set())
    assert len(duplicated) <= DISPATCH_WORKERS
    assert Counter(delivered(engine)) == Counter(sendable)  # one recorded delivery per row sent
    # The requests did not move; the chain verifies.
    assert end_state(engine)["requests"] == before
    assert_chain_verifies(engine)


def test_a_misspelt_failpoint_is_refused_naming_the_variable(tmp_path: Path) -> None:
    env = base_env(tmp_path, f"sqlite:///{tmp_path / 'none.db'}")
    for args in (["notify", "send"], ["run", "order"]):
        done = run([PROCURE, *args], env, failpoint="after-sned")
        assert done.returncode == 2, done.stdout + done.stderr
        assert done.stderr.strip() == (
            f"procure: bad input: {VARIABLE}: unknown failpoint 'after-sned' (known: "
            "after-commit, after-claim, after-send, after-settle; NAME or NAME:N)"
        )
    done = run([PROCURE, "notify", "send"], env, failpoint="after-send:0")
    assert done.returncode == 2 and VARIABLE in done.stderr and "after-send:3" in done.stderr
    assert not (tmp_path / "none.db").exists()  # refused before anything ran


# ------------------------------------------------------------------ the worker


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = PrefectServer(tmp_path_factory.mktemp("prefect-server"))
    try:
        server.start()
        yield server.api
    finally:
        server.stop()


def prepare(engine: Engine, upto: str) -> list[str]:
    """Three requests approved (`upto="approved"`), or approved and ordered."""
    refs = [submit(engine, idempotency_key=f"crash-point-{i}") for i in range(REQUESTS)]
    for ref in refs:
        approve_all(engine, ref)
        if upto == "ordered":
            with transaction(engine) as session:
                actions.place_order(session, ref=ref, now=NOW)
    return refs


WORKER_CASES = {
    # The order flow's one batch: the first request's order committed, then the worker dies.
    "order-after-commit": ("approved", "after-commit"),
    # The delivery flow: three deliveries recorded (commits 1-3), the roll-out batch half done
    # (devices of the first request handed out, commit 4; the second's, commit 5): then kill -9.
    "delivery-mid-batch": ("ordered", "after-commit:5"),
}


@pytest.mark.parametrize("case", list(WORKER_CASES))
def test_a_worker_killed_at_a_failpoint_ends_as_a_run_without_the_crash(
    databases: Databases, tmp_path: Path, prefect_api: str, case: str
) -> None:
    upto, point = WORKER_CASES[case]
    urls = {kind: databases.url("sample") for kind in ("baseline", "crashed")}
    engines = {kind: make_engine(url) for kind, url in urls.items()}
    databases.engines += engines.values()
    refs = prepare(engines["baseline"], upto)
    assert prepare(engines["crashed"], upto) == refs
    serials = tmp_path / "asn.csv"
    serials.write_text(
        "request,serial\n" + "".join(f"{r},SN-CRASH-{i}\n" for i, r in enumerate(refs)),
        encoding="utf-8",
    )
    flow = ["order", *refs] if upto == "approved" else ["delivery", "--serials", str(serials)]
    envs = {
        kind: {
            **base_env(tmp_path / kind, url),
            "PREFECT_API_URL": prefect_api,
            "PREFECT_SERVER_EPHEMERAL_ENABLED": "false",  # never a temporary server
            "PREFECT_LOGGING_COLORS": "false",
        }
        for kind, url in urls.items()
    }

    # The run without a crash, and the run that dies, side by side.
    procs = {
        kind: subprocess.Popen(
            [PROCURE, "run", *flow],
            env={**envs[kind], **({VARIABLE: point} if kind == "crashed" else {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for kind in envs
    }
    done = {}
    for kind, proc in procs.items():
        out, err = proc.communicate(timeout=180)
        done[kind] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    assert done["baseline"].returncode == 0, done["baseline"].stderr[-3000:]
    assert_killed_at(done["crashed"], point)
    assert end_state(engines["crashed"]) != end_state(engines["baseline"])  # died half-way
    assert_chain_verifies(engines["crashed"])

    # Restarted: the same flow again, without the failpoint.
    again = run([PROCURE, "run", *flow], envs["crashed"])
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-3000:]
    assert end_state(engines["crashed"]) == end_state(engines["baseline"])
    assert_chain_verifies(engines["crashed"])

    # No notification lost nor doubled: the dispatcher delivers every row once (those asking for
    # decisions made since they were queued are dropped, as in the run without the crash).
    rows = outbox(engines["crashed"])
    stale = stale_notices(engines["crashed"])
    assert len(stale) == len(stale_notices(engines["baseline"]))
    with MailSink() as sink:
        env = {**envs["crashed"], "PROCURE_APPRISE_CONFIG": str(tmp_path / "apprise.yml")}
        (tmp_path / "apprise.yml").write_text(sink.routes())
        sent = run([PROCURE, "notify", "send"], env)
        assert sent.returncode == 0, sent.stdout + sent.stderr
        received = notification_ids(list(sink.received))
    assert {n: s for n, s in outbox(engines["crashed"]).items() if s != "sent"} == dict.fromkeys(
        stale, "dropped"
    )
    assert set(received) == set(rows) - stale
    assert max(received.values()) == 1  # a worker's crash duplicates nothing
