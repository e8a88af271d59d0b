"""The errors the domain raises; the CLI maps them to exit codes, the web app to HTTP statuses."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input: where it is (file, line, field) and what is wrong."""

    message: str
    source: str | None = None
    line: int | None = None
    field: str | None = None

    def __str__(self) -> str:
        where = ""
        if self.source:
            where = self.source
            if self.line is not None:
                where += f":{self.line}"
            where += ": "
        elif self.line is not None:
            where = f"line {self.line}: "
        field = f"{self.field}: " if self.field else ""
        return f"{where}{field}{self.message}"


class ProcureError(Exception):
    """Base of every error the domain raises on purpose."""


class InputError(ProcureError):
    """Bad input (a file, an argument, a form): nothing was written. CLI exit 2, HTTP 422."""

    def __init__(self, problems: list[Problem] | Problem | str):
        if isinstance(problems, str):
            problems = [Problem(problems)]
        elif isinstance(problems, Problem):
            problems = [problems]
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class FieldErrors(InputError):
    """Fields of an input that failed validation, with what is left of the input: `partial`
    is the valid part (each failed value None), or None when nothing is left. A caller that
    checks references checks the partial input too (with_checks), so one run reports both."""

    def __init__(self, problems: list[Problem], partial: Callable[[], Any] = lambda: None):
        super().__init__(problems)
        self._partial = partial  # worked out only for a caller that asks

    @cached_property
    def partial(self) -> Any:
        return self._partial()

    def __reduce__(self) -> tuple[Any, ...]:
        # The partial input stays in this process: a pickled copy (a Prefect task's failure)
        # is the plain error with the same problems.
        return (InputError, (self.problems,))

    def map_partial(self, wrap: Callable[[Any], Any]) -> FieldErrors:
        """The same problems, the partial input wrapped (a reader adds what its checks need)."""
        return FieldErrors(
            self.problems, lambda: None if self.partial is None else wrap(self.partial)
        )

    def with_checks(self, check: Callable[[Any], list[Problem]]) -> InputError:
        """This error with the problems check finds in the partial input, all in file order.
        A check that trips over what the partial input leaves out (a bug: checks skip fields
        that are not valid()) must not turn bad input into a traceback: the field errors then
        come alone, as before the partial input was checked at all."""
        if self.partial is None:
            return self
        try:
            found = check(self.partial)  # a check that raises InputError: see problems_of
        except Exception:
            return self
        return InputError(in_file_order([*self.problems, *found]))


def problems_of(check: Callable[[], object]) -> list[Problem]:
    """The problems a check that raises InputError finds; none if it passes."""
    try:
        check()
    except InputError as exc:
        return exc.problems
    return []


def in_file_order(problems: list[Problem]) -> list[Problem]:
    """Problems by file (in the order the files first appear) and line; those of one line keep
    their order, and those without a line (about a whole file) come first."""
    rank: dict[str | None, int] = {}
    for problem in problems:
        rank.setdefault(problem.source, len(rank))
    return sorted(problems, key=lambda p: (rank[p.source], p.line or 0))


class NotFound(InputError):
    """A reference (request, person, SKU, serial) that does not exist. CLI exit 2, HTTP 404."""


class RuleViolation(ProcureError):
    """A well-formed action that a rule refuses (separation of duties, wrong state). CLI exit 1."""


class TransitionNotAllowed(RuleViolation):
    """The lifecycle does not allow this event in the entity's current state."""


class AlreadyDecided(RuleViolation):
    """The stage (or the approver's part of it) was decided already by someone else or otherwise."""


class ConcurrentUpdate(RuleViolation):
    """The entity changed since it was read (optimistic lock): read it again and retry."""
