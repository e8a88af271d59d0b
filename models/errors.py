"""The errors the domain raises; the CLI maps them to exit codes, the web app to HTTP statuses."""

from __future__ import annotations

from dataclasses import dataclass


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
