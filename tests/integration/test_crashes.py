"""kill -9 the dispatcher in the middle of a batch: after a restart every notification is
delivered, none is lost, and none arrives more than twice (the ones in flight at the crash)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from sqlmodel import Session, select

from models.db import make_engine
from models.outbox import Notification
from notifications.dispatch import LEASE
from notifications.sink import MailSink
from tests.conftest import Databases
from tests.factories import IDA, NOW, approve_all, stale_notices, submit

PROCURE = str(Path(sys.executable).with_name("procure"))


def routes(path: Path, sink: MailSink) -> Path:
    path.write_text(sink.routes())
    return path


def test_killing_the_dispatcher_mid_batch_loses_nothing(
    databases: Databases, tmp_path: Path
) -> None:
    url = databases.url("sample")
    engine = make_engine(url)
    refs = [submit(engine, idempotency_key=f"crash-{i}") for i in range(8)]
    approve_all(engine, refs[0])  # a transition committed whose messages wait in the outbox
    with Session(engine) as session:
        rows = session.exec(select(Notification)).all()
        expected = {(r.id, r.audience) for r in rows}
    assert len(expected) > 60
    # The requests for decisions made before the dispatcher ran are dropped, not sent.
    stale = stale_notices(engine)
    assert stale

    with MailSink() as sink:
        sink.delay = 0.25  # a slow server: the batch is half done when the dispatcher dies
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(tmp_path),
            "PROCURE_HOME": str(tmp_path / "home"),
            "PROCURE_DATABASE_URL": url,
            "PROCURE_APPRISE_CONFIG": str(routes(tmp_path / "apprise.yml", sink)),
            "PROCURE_NOW": NOW.isoformat(),
        }
        dispatcher = subprocess.Popen(
            [PROCURE, "notify", "send"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 60
        while len(sink.received) < 15 and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(dispatcher.pid, signal.SIGKILL)
        dispatcher.wait(timeout=30)
        assert dispatcher.returncode == -signal.SIGKILL
        at_crash = len(sink.received)
        assert 15 <= at_crash < len(expected)  # killed in the middle, not before or after

        # Restarted at once: the crashed run's rows are leased, nothing is sent twice yet.
        again = subprocess.run(
            [PROCURE, "notify", "send", "--json"], env=env, capture_output=True, text=True
        )
        assert again.returncode == 0, again.stderr
        with Session(engine) as session:
            statuses = Counter(n.status for n in session.exec(select(Notification)).all())
        assert statuses["sending"] > 0  # held by the dead dispatcher until its lease lapses

        # After the lease: everything goes out.
        sink.delay = 0.0
        env["PROCURE_NOW"] = (NOW + LEASE).isoformat()
        later = subprocess.run([PROCURE, "notify", "send"], env=env, capture_output=True, text=True)
        assert later.returncode == 0, later.stdout + later.stderr
        received = list(sink.received)

    with Session(engine) as session:
        rows = session.exec(select(Notification)).all()
    assert {r.id: r.status for r in rows if r.status != "sent"} == dict.fromkeys(stale, "dropped")
    # Every message arrived; the ones in flight at the crash at most twice.
    per_message = Counter(str(m.message["Message-ID"]) for m in received)
    assert max(per_message.values()) <= 2
    duplicates = sum(n - 1 for n in per_message.values())
    assert duplicates <= at_crash + 8  # sent-but-not-recorded ones, and those in flight
    sent_ids = {int(str(m.message["Message-ID"]).split(".")[1]) for m in received}
    assert sent_ids == {n for n, _ in expected} - stale
    assert any(m.recipients == (IDA,) for m in received)
    engine.dispose()
