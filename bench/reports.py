"""Reports over 100,000 requests on SQLite: each report against the raw-SQL scan it cannot beat.

The data is written straight into a migrated database (a real schema, the sample organisation,
catalog and agreement), so the benchmark measures the reports, not the generator. The baseline
of each report is the plain sqlite3 query that reads the same rows with no ORM, no types and
no formatting: the floor.
"""

from __future__ import annotations

import json
import random
import sqlite3
import tempfile
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from bench.common import Row, best_of, peak_rss_mb, write_table

REQUESTS = 100_000
KINDS = ("unclear_terms", "individual_order", "missed_delivery_planning")
STAGES = ("joint_review", "budget_owner", "finance", "management")
FLOORS = {
    "costs": "SELECT r.cost_centre_id, count(DISTINCT r.id), sum(l.quantity), sum(l.total) "
    "FROM request_line l JOIN request r ON r.id = l.request_id WHERE r.ordered_at IS NOT NULL "
    "GROUP BY r.cost_centre_id",
    "savings": "SELECT l.sourcing, sum(l.quantity), sum(l.list_price * l.quantity), sum(l.total) "
    "FROM request_line l JOIN request r ON r.id = l.request_id WHERE r.ordered_at IS NOT NULL "
    "GROUP BY l.sourcing",
    "risk": "SELECT e.kind, count(*), sum(e.incurred), sum(e.avoided) FROM ledger_entry e "
    "JOIN request r ON r.id = e.request_id WHERE r.ordered_at IS NOT NULL GROUP BY e.kind",
    "cycle-times": "SELECT key, (julianday(closed_at) - julianday(opened_at)) * 24 FROM stage "
    "WHERE opened_at IS NOT NULL AND closed_at IS NOT NULL",
}


def _ts(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")


def build(path: Path, requests: int = REQUESTS, seed: int = 7) -> None:
    """A migrated database with the sample data and `requests` ordered requests."""
    import sample
    from models import pipeline
    from models.db import transaction
    from procure.database import migrate

    engine, _, _ = migrate(f"sqlite:///{path}")
    with transaction(engine) as session:
        text = pipeline.DEFAULT_PIPELINE.read_text(encoding="utf-8")
        pipeline.install(session, text=text, source="default.yaml", actor="bench")
        sample.load(session, actor="bench")
    engine.dispose()
    rng = random.Random(seed)
    db = sqlite3.connect(path)
    people = [r[0] for r in db.execute("SELECT id FROM person")]
    centres = [r[0] for r in db.execute("SELECT id FROM cost_centre")]
    items = list(db.execute("SELECT id, sku, list_price FROM item"))
    pipeline_id = db.execute("SELECT id FROM pipeline_version WHERE active").fetchone()[0]
    agreement_id = db.execute("SELECT id FROM framework_agreement").fetchone()[0]
    start = datetime(2026, 1, 5, 9, tzinfo=UTC)

    def requests_rows() -> Iterator[tuple[object, ...]]:
        for i in range(1, requests + 1):
            submitted = start + timedelta(minutes=5 * i)
            decided = submitted + timedelta(hours=rng.randint(4, 200))
            ordered = decided + timedelta(hours=rng.randint(1, 48))
            needed = (submitted + timedelta(days=rng.randint(10, 90))).date()
            yield (
                i,
                rng.choice(("onboarding", "refresh", "rollout", "replacement")),
                "ordered",
                5,
                1,
                rng.choice(people),
                rng.choice(people),
                rng.choice(centres),
                needed.isoformat(),
                (needed - timedelta(days=15)).isoformat(),
                "",
                "EUR",
                0,
                f"bench-{i}",
                "",
                pipeline_id,
                _ts(submitted),
                _ts(submitted),
                _ts(decided),
                _ts(ordered),
                "{}",
            )

    db.executemany(
        "INSERT INTO request (id, kind, status, version, round, requester_id, on_behalf_of_id, "
        "cost_centre_id, needed_by, order_by, justification, currency, total, idempotency_key, "
        "content_hash, pipeline_id, created_at, submitted_at, decided_at, ordered_at, terms) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        requests_rows(),
    )

    def line_rows() -> Iterator[tuple[object, ...]]:
        for i in range(1, requests + 1):
            for number in range(1, rng.choice((1, 1, 2, 3)) + 1):
                item_id, sku, list_cents = rng.choice(items)
                quantity = rng.randint(1, 60)
                framework = rng.random() < 0.6
                unit = int(list_cents * 0.93) if framework else list_cents
                yield (
                    i,
                    number,
                    item_id,
                    sku,
                    quantity,
                    unit,
                    unit * quantity,
                    "bought",
                    list_cents,
                    "framework" if framework else "individual",
                    agreement_id if framework else None,
                    1 if framework else int(rng.random() < 0.5),
                    "",
                )

    db.executemany(
        "INSERT INTO request_line (request_id, line_no, item_id, sku, quantity, unit_price, total, "
        "ownership, list_price, sourcing, agreement_id, framework_available, sourcing_note) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        line_rows(),
    )
    db.execute(
        "UPDATE request SET total = (SELECT sum(total) FROM request_line WHERE request_id = request.id)"
    )
    rates = {"unclear_terms": 9000, "individual_order": 7000, "missed_delivery_planning": 8000}

    def ledger_rows() -> Iterator[tuple[object, ...]]:
        for i, devices in db.execute(
            "SELECT request_id, sum(quantity) FROM request_line GROUP BY request_id"
        ).fetchall():
            for kind in KINDS:
                hit = rng.randint(0, devices)
                yield (
                    i,
                    kind,
                    hit,
                    devices - hit,
                    rates[kind],
                    rates[kind] * hit,
                    rates[kind] * (devices - hit),
                    _ts(start),
                )

    db.executemany(
        "INSERT INTO ledger_entry (request_id, kind, devices_incurred, devices_avoided, per_device, "
        "incurred, avoided, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        ledger_rows(),
    )

    def stage_rows() -> Iterator[tuple[object, ...]]:
        for i in range(1, requests + 1):
            opened = start + timedelta(minutes=5 * i)
            for position, key in enumerate(STAGES):
                if key == "management" and rng.random() < 0.7:
                    yield (
                        i,
                        key,
                        key,
                        position,
                        "[]",
                        "any",
                        "[]",
                        "skipped",
                        2,
                        1,
                        "",
                        None,
                        None,
                        None,
                        None,
                    )
                    continue
                closed = opened + timedelta(hours=rng.expovariate(1 / 20))
                due = opened + timedelta(hours=16)
                yield (
                    i,
                    key,
                    key,
                    position,
                    json.dumps([key]),
                    "any",
                    "[]",
                    "approved",
                    3,
                    1,
                    "",
                    16,
                    _ts(opened),
                    _ts(due),
                    _ts(closed),
                )
                opened = closed

    db.executemany(
        "INSERT INTO stage (request_id, key, name, position, roles, mode, after, status, version, "
        "round, inputs_hash, sla_hours, opened_at, due_at, closed_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        stage_rows(),
    )
    db.commit()
    db.execute("ANALYZE")
    db.close()


def run() -> list[Row]:
    from models import reports
    from models.db import make_engine, transaction

    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench.db"
        print(f"reports: writing {REQUESTS:,} ordered requests into {path} ...", flush=True)
        build(path)
        engine = make_engine(f"sqlite:///{path}")
        floor = sqlite3.connect(path)
        now = datetime(2027, 1, 1, tzinfo=UTC)
        for name in reports.NAMES:

            def report(name: str = name) -> None:
                with transaction(engine, readonly=True) as session:
                    reports.run(name, session, start=date(2026, 1, 1), end=None, now=now)

            seconds = best_of(report)
            baseline = best_of(lambda name=name: floor.execute(FLOORS[name]).fetchall())
            rows.append(
                Row(
                    f"report {name} over {REQUESTS:,} requests",
                    seconds,
                    "the same rows read by plain sqlite3",
                    baseline,
                    "about 1 s",
                    seconds <= 1.5,
                )
            )
            print(f"  {name}: {seconds:.3f} s (raw SQL {baseline:.3f} s)", flush=True)
        floor.close()
        engine.dispose()
    peak = peak_rss_mb()
    rows.append(
        Row("peak memory of the whole run", peak, "goal", 300.0, "≤ 300 MB", peak <= 300, unit="MB")
    )
    return rows


def main() -> None:
    rows = run()
    path = write_table("reports", "Reports over 100,000 requests (SQLite)", rows)
    print(path.read_text(encoding="utf-8"))


if __name__ == "__main__":
    main()
