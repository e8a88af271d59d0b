"""procure/failpoints.py: silent unless PROCURE_FAILPOINT is set, a misspelt point refused,
`NAME:N` dying on the N-th hit of that point only, every point in the code declared."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from models.errors import InputError
from procure import failpoints

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _fresh(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test reads the variable anew; the process is left as it was found (unarmed)."""
    monkeypatch.delenv(failpoints.VARIABLE, raising=False)
    failpoints.reset()
    yield
    monkeypatch.delenv(failpoints.VARIABLE, raising=False)
    failpoints.reset()


def test_without_the_variable_every_point_is_a_no_op() -> None:
    for name in failpoints.POINTS * 3:
        failpoints.hit(name)
    assert failpoints.armed() is None


@pytest.mark.parametrize(
    ("value", "armed"),
    [("after-send", ("after-send", 1)), (" after-commit:7 ", ("after-commit", 7)), ("", None)],
)
def test_a_point_and_its_count_are_read(
    monkeypatch: pytest.MonkeyPatch, value: str, armed: tuple[str, int] | None
) -> None:
    monkeypatch.setenv(failpoints.VARIABLE, value)
    assert failpoints.armed() == armed


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("after-sned", "unknown failpoint 'after-sned' (known: after-commit, after-claim"),
        ("AFTER-SEND", "unknown failpoint 'AFTER-SEND'"),
        ("after-send:0", "the count after ':' must be a whole number from 1"),
        ("after-send:", "the count after ':' must be a whole number from 1"),
        ("after-send:two", "the count after ':' must be a whole number from 1"),
        ("after-send:²", "the count after ':' must be a whole number from 1"),
    ],
)
def test_a_misspelt_point_is_an_error_naming_the_variable_at_every_check(
    monkeypatch: pytest.MonkeyPatch, value: str, says: str
) -> None:
    monkeypatch.setenv(failpoints.VARIABLE, value)
    for _ in range(2):  # not only the first time: a retried task meets it again
        with pytest.raises(InputError) as caught:
            failpoints.hit("after-send")
        assert str(caught.value).startswith(f"{failpoints.VARIABLE}: ")
        assert says in str(caught.value)
    with pytest.raises(InputError):
        failpoints.check()


def test_name_n_dies_by_sigkill_on_the_nth_hit_of_that_point_only() -> None:
    script = (
        "from procure import failpoints\n"
        "for i in range(1, 6):\n"
        "    failpoints.hit('after-commit')\n"
        "    failpoints.hit('after-send')\n"
        "    print(i, flush=True)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env={failpoints.VARIABLE: "after-send:3", "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == -signal.SIGKILL
    assert done.stdout.split() == ["1", "2"]  # the third hit of after-send, not of after-commit
    assert done.stderr == "procure: failpoint after-send:3 reached: SIGKILL\n"


def test_every_point_the_code_reaches_is_declared() -> None:
    used: dict[str, set[str]] = {}
    for folder in ("models", "procure", "tasks", "flows", "notifications", "web"):
        for path in (ROOT / folder).rglob("*.py"):
            for name in re.findall(r"failpoints\.hit\(\"([^\"]+)\"\)", path.read_text()):
                used.setdefault(name, set()).add(f"{folder}/{path.name}")
    assert set(used) == set(failpoints.POINTS), used
    assert used["after-commit"] == {"tasks/db.py"}
    assert used["after-send"] == {"notifications/dispatch.py"}
