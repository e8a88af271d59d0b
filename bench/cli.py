"""The command line as people use it: a 10,000-row CSV import, and the read-only commands.

- `procure org load people.csv` with 10,000 people (an HR directory), against the floor:
  Python's csv module reading the same file and sqlite3 inserting the rows with executemany in
  one transaction (no validation, no audit). The same file with one bad row at the end is
  refused whole: the time to say so is measured too. Goal: at most 2 s on SQLite.
- `procure request list`, `request show`, `inbox`, `audit verify` as separate processes (what
  a person waits for), against `prefect version` in the same run. Goal: well under a second.
"""

from __future__ import annotations

import csv
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import Row, best_of, write_table

PEOPLE = 10_000
PROCURE = str(Path(sys.executable).with_name("procure"))
PREFECT = str(Path(sys.executable).with_name("prefect"))


def people_csv(path: Path, count: int, *, bad_last: bool = False) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["email", "name", "department", "roles"])
        for i in range(count):
            writer.writerow(
                [f"person{i:05d}@example.com", f"Person {i}", "Engineering", "requester"]
            )
        if bad_last:
            writer.writerow(["not-an-email", "Broken Row", "Engineering", "requester"])
    return path


def _procure(url: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [PROCURE, "--db", url, *args], capture_output=True, text=True, timeout=600
    )
    if check and done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return done


def _fresh(folder: Path, name: str) -> str:
    url = f"sqlite:///{folder / name}"
    _procure(url, "init", "--sample")
    return url


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="procure-bench-") as name:
        folder = Path(name)
        good = people_csv(folder / "people.csv", PEOPLE)
        bad = people_csv(folder / "people-bad.csv", PEOPLE, bad_last=True)

        counter = iter(range(100))

        def load_good() -> None:
            url = _fresh(folder, f"load-{next(counter)}.db")
            start = time.perf_counter()
            _procure(url, "org", "load", str(good))
            timings.append(time.perf_counter() - start)

        def refuse_bad() -> None:
            url = _fresh(folder, f"bad-{next(counter)}.db")
            start = time.perf_counter()
            done = _procure(url, "org", "load", str(bad), check=False)
            refusals.append(time.perf_counter() - start)
            assert done.returncode == 2 and f"{bad}:{PEOPLE + 2}" in done.stderr, done.stderr
            with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
                people = db.execute("SELECT count(*) FROM person").fetchone()[0]
            assert people == sample_people, f"a refused file wrote {people - sample_people} people"

        def floor() -> None:
            db = sqlite3.connect(folder / f"floor-{next(counter)}.db")
            db.execute("CREATE TABLE person (email TEXT UNIQUE, name TEXT, dept TEXT, roles TEXT)")
            start = time.perf_counter()
            with good.open(newline="", encoding="utf-8") as handle:
                rows = list(csv.reader(handle))[1:]
            with db:
                db.executemany("INSERT INTO person VALUES (?, ?, ?, ?)", rows)
            floors.append(time.perf_counter() - start)
            db.close()

        with sqlite3.connect(_fresh(folder, "sample.db").removeprefix("sqlite:///")) as db:
            sample_people = db.execute("SELECT count(*) FROM person").fetchone()[0]
        timings: list[float] = []
        refusals: list[float] = []
        floors: list[float] = []
        for _ in range(3):
            load_good()
            refuse_bad()
            floor()
        load, refuse, base = min(timings), min(refusals), min(floors)

        url = _fresh(folder, "read.db")
        request = folder / "request.yaml"
        request.write_text(
            "kind: refresh\nrequester: rita.requester@example.com\ncost_centre: CC-ENG\n"
            "needed_by: 2027-06-01\nlines: [{sku: MON-27, quantity: 1}]\n"
        )
        _procure(url, "request", "submit", str(request))
        reads = {
            "request list": ("request", "list"),
            "request show PR-0001": ("request", "show", "PR-0001"),
            "inbox --as ida.it@example.com": ("inbox", "--as", "ida.it@example.com"),
            "audit verify": ("audit", "verify"),
        }
        read_times = {
            label: best_of(lambda args=args: _procure(url, *args), repeat=5)
            for label, args in reads.items()
        }
        prefect = best_of(
            lambda: subprocess.run([PREFECT, "version"], capture_output=True, check=True),
            repeat=5,
        )

    rows = [
        Row(
            f"procure org load: {PEOPLE:,}-row CSV (process, validated, audited)",
            load,
            "csv + sqlite3 executemany (no checks)",
            base,
            "<= 2 s",
            load <= 2.0,
        ),
        Row(
            "the same file with a bad last row: refused whole, line named",
            refuse,
            "csv + sqlite3 executemany (no checks)",
            base,
            "<= 2 s, nothing written",
            refuse <= 2.0,
        ),
    ]
    for label, seconds in read_times.items():
        rows.append(
            Row(
                f"procure {label} (a new process)",
                seconds,
                "prefect version (a new process)",
                prefect,
                "< 1 s",
                seconds < 1.0,
            )
        )
    path = write_table(
        "cli",
        "The command line: a 10,000-row import and the read-only commands",
        rows,
        [
            "Best of 3 (imports) or 5 (reads) on SQLite, each a new `procure` process, as a person "
            "runs it. Read-only commands never import Prefect; `prefect version` shows what "
            "importing it costs on the same machine."
        ],
    )
    print(path.read_text(encoding="utf-8"))
