"""Failpoints: kill this process with SIGKILL at a named moment, to rehearse crashes.

Never active unless the environment variable PROCURE_FAILPOINT is set. It names one point,
`NAME` (the first time the process reaches it) or `NAME:N` (the N-th time this process
reaches it, N ≥ 1: "half a batch done" is a count). The process writes one line to stderr
(`procure: failpoint NAME:N reached: SIGKILL`) and kills itself: no cleanup, no `finally`,
no rollback of what was already committed, as with `kill -9` or a power cut.

The points:

- `after-commit` (worker side, `tasks/db.py`): a worker task's transaction has committed (a
  lifecycle transition: an order placed, a delivery recorded, a device handed out, ...) and
  the task has not returned yet. The batch tasks commit once per request, so `after-commit:N`
  stops a batch after its N-th request.
- `after-claim` (dispatcher, `notifications/dispatch.py`): a chunk of due notifications was
  claimed (pending → sending, leased) and committed; nothing of it was sent.
- `after-send` (dispatcher): one destination's copy was handed to the transport (accepted by
  the SMTP server, the webhook, ...) and its delivery is not recorded yet. `after-send:N`:
  the N-th copy; the chunk is half sent, and none of it recorded.
- `after-settle` (dispatcher): a chunk's deliveries were recorded and its rows settled
  (sent, to retry or dead), committed.

A name that is not one of these is an error (`InputError` naming PROCURE_FAILPOINT) when a
point is first checked, and at every check after, so a typo cannot pass as "nothing crashed". `check()` checks the
variable up front (the `procure` command does, before it does anything).

Cost when unused: one dictionary lookup per process, then a comparison per point reached.
"""

from __future__ import annotations

import os
import signal
import sys

from models.errors import InputError, Problem

VARIABLE = "PROCURE_FAILPOINT"
POINTS = ("after-commit", "after-claim", "after-send", "after-settle")

_read = False  # PROCURE_FAILPOINT is read once per process
_armed: tuple[str, int] | None = None  # (point, n)
_hits: dict[str, int] = {}


def _parse(value: str) -> tuple[str, int] | None:
    value = value.strip()
    if not value:
        return None
    name, sep, count = value.partition(":")
    known = ", ".join(POINTS)
    if name not in POINTS:
        raise InputError(
            Problem(f"unknown failpoint {name!r} (known: {known}; NAME or NAME:N)", field=VARIABLE)
        )
    if not sep:
        return name, 1
    if not (count.isascii() and count.isdigit()) or int(count) < 1:
        raise InputError(
            Problem(
                f"{value!r}: the count after ':' must be a whole number from 1, e.g. {name}:3",
                field=VARIABLE,
            )
        )
    return name, int(count)


def armed() -> tuple[str, int] | None:
    """The point this process dies at, and on which hit (None: no failpoint set)."""
    global _armed, _read
    if not _read:
        _armed = _parse(os.environ.get(VARIABLE, ""))
        _read = True
    return _armed


def check() -> None:
    """Raise InputError now if PROCURE_FAILPOINT names no known point."""
    armed()


def hit(name: str) -> None:
    """Reached the point `name`: die here if PROCURE_FAILPOINT says so, else return."""
    target = _armed if _read else armed()
    if target is None:
        return
    assert name in POINTS, f"failpoint {name!r} is not declared in POINTS"
    point, n = target
    if name != point:
        return
    _hits[name] = count = _hits.get(name, 0) + 1
    if count == n:
        sys.stderr.write(f"procure: failpoint {name}:{n} reached: SIGKILL\n")
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)


def reset() -> None:
    """Read PROCURE_FAILPOINT again at the next point and forget the hits (for tests)."""
    global _armed, _read
    _armed, _read = None, False
    _hits.clear()
