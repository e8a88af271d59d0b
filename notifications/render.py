"""Rendering a notification: one Jinja template file per event, four outputs per message.

Each file under `notifications/templates/` extends `_base.j2` and fills the blocks `subject`,
`text`, `html` and, where the chat message differs from the text, `slack`. The same file is
rendered once per output, each in its own environment:

- subject: no escaping; every value is flattened to one line (a CR/LF can never start a new
  mail header), and the result is cut to a sane length;
- text: no escaping (a plain-text part shows what people wrote, as they wrote it);
- html: autoescaped;
- slack: plain text like the text part (it differs where a template says so); Apprise's
  Slack plugin escapes `&`, `<` and `>` on the way out, so a justification can neither forge
  a link nor mention @channel.

All four use StrictUndefined: a template that names a variable the context lacks fails (in
tests, in `procure notify check`) instead of sending a blank.

An organisation can override any template, file by file, from a folder (PROCURE_TEMPLATES_DIR).
Those files render in a sandbox (no attribute escapes, a bounded `range`, bounded string
operations) with a limit on output size and render time; an override that fails falls back
to the built-in template and the failure is reported.
"""

from __future__ import annotations

import ctypes
import difflib
import functools
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from types import TracebackType
from typing import Any
from zoneinfo import ZoneInfo

import jinja2
from jinja2 import ChoiceLoader, FileSystemLoader, StrictUndefined, pass_context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from markupsafe import Markup

from models.errors import InputError, Problem
from models.types import ending, label, plural, sentence

TEMPLATES = Path(__file__).resolve().parent / "templates"
PARTS = ("subject", "text", "html", "slack")
SUBJECT_MAX = 200
# Bounds for an organisation's own templates.
OVERRIDE_OUTPUT_MAX = 512 * 1024  # characters per output
OVERRIDE_SECONDS = 2.0
OVERRIDE_RANGE_MAX = 1000
OVERRIDE_STRING_MAX = 64 * 1024

# Characters that end a line somewhere (mail headers, Slack, terminals).
_LINE_BREAKS = re.compile(r"[\r\n\v\f\x1c-\x1e\x85\u2028\u2029]+")
_SPACES = re.compile(r"[ \t]+")
# Two or more blank (or blank-looking) lines: one is kept. The next line's indent is not part
# of the match (a summary's first row keeps its two spaces).
_BLANK_RUNS = re.compile(r"\n(?:[ \t]*\n){2,}")


class RenderError(Exception):
    """A template could not render: names the template file and line, and why."""

    def __init__(self, message: str, *, template: str | None = None, line: int | None = None):
        self.template = template
        self.line = line
        where = f"{template}:{line}: " if template and line else f"{template}: " if template else ""
        super().__init__(f"{where}{message}")

    def problem(self) -> Problem:
        return Problem(str(self).split(": ", 2)[-1], source=self.template, line=self.line)


@dataclass(frozen=True)
class Button:
    label: str
    url: str
    style: str = ""  # "primary" or "danger" (Slack); the HTML template styles its own


@dataclass(frozen=True)
class Attachment:
    filename: str
    content_type: str  # "text/calendar", ...
    data: bytes


@dataclass(frozen=True)
class Message:
    """A rendered notification, ready for any transport."""

    event: str
    subject: str
    text: str
    html: str
    slack: str
    buttons: tuple[Button, ...] = ()
    attachments: tuple[Attachment, ...] = ()
    # Problems with an override that fell back to the built-in template.
    warnings: tuple[str, ...] = field(default=(), compare=False)


# ------------------------------------------------------------------ filters


def _decimal(value: Any) -> Decimal:
    if isinstance(value, Decimal):
        return value
    try:
        return Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"not an amount: {value!r}") from None


CURRENCY_SIGNS = {"EUR": "€", "USD": "$", "GBP": "£", "CHF": "CHF "}


def money(value: Any, currency: str = "EUR") -> str:
    """1234.5 -> '€1,234.50' (amounts are strings or Decimals in the context, never floats)."""
    if value is None:
        return "—"
    amount = _decimal(value).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)  # as the ledger
    sign = "-" if amount < 0 else ""
    prefix = CURRENCY_SIGNS.get(currency, f"{currency} ")
    return f"{sign}{prefix}{abs(amount):,.2f}"


def _parse_moment(value: Any) -> datetime | date | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime | date):
        return value
    text = str(value)
    try:
        return datetime.fromisoformat(text) if "T" in text else date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not a date: {value!r}") from None


def day(value: Any) -> str:
    """'2026-12-07' -> 'Mon 7 Dec 2026'."""
    moment = _parse_moment(value)
    if moment is None:
        return "—"
    if isinstance(moment, datetime):
        moment = moment.date()
    return f"{moment:%a} {moment.day} {moment:%b %Y}"


@pass_context
def when(ctx: Any, value: Any) -> str:
    """A moment in the organisation's time zone: 'Mon 7 Dec 2026, 14:00 CET'."""
    moment = _parse_moment(value)
    if moment is None:
        return "—"
    if not isinstance(moment, datetime):
        return day(moment)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    local = moment.astimezone(ZoneInfo(ctx.get("tz") or "UTC"))
    return f"{local:%a} {local.day} {local:%b %Y}, {local:%H:%M %Z}"


@pass_context
def who(ctx: Any, email: Any) -> str:
    """A person by name where known ('Dana Fischer'), else their address."""
    if email is None:
        return "—"
    people = ctx.get("people") or {}
    return str(people.get(email) or email)


@pass_context
def who_html(ctx: Any, email: Any) -> Markup:
    """who(), isolated for HTML: a name in Arabic or Hebrew inside an English sentence must not
    reorder the words and numbers around it (<bdi>, bidirectional isolation; escaped inside)."""
    return Markup("<bdi>{}</bdi>").format(who(ctx, email))


def than(difference: Any, currency: str = "EUR") -> str:
    """What one price costs against another, in words before the other's name: '€2,900.00 more
    than', '€1,900.00 less than', 'the same as' (a difference of 0)."""
    amount = _decimal(difference)
    if not amount:
        return "the same as"
    return f"{money(abs(amount), currency)} {'more' if amount > 0 else 'less'} than"


FILTERS: dict[str, Callable[..., Any]] = {
    "money": money,
    "than": than,
    "day": day,
    "when": when,
    "who": who,
    "label": label,
    "sentence": sentence,
    "ending": ending,
    "plural": plural,
}
# The HTML part's and the web pages' filters: the same, with names isolated.
HTML_FILTERS: dict[str, Callable[..., Any]] = {**FILTERS, "who": who_html}


# ------------------------------------------------------------------ environments


def _none(value: Any) -> Any:
    return "—" if value is None else value


def _one_line(value: Any) -> str:
    """A value in a subject: on one line, whatever it contains."""
    return _SPACES.sub(" ", _LINE_BREAKS.sub(" ", str(_none(value))))


# The Slack part is plain text like the text part: Apprise's Slack plugin escapes &, < and >
# (Slack's only special characters) when it is handed plain text, so escaping here would show
# "&amp;" in the channel.
FINALIZE: dict[str, Callable[[Any], Any]] = {
    "subject": _one_line,
    "text": _none,
    "html": _none,
    "slack": _none,
}


def configure(env: jinja2.Environment, part: str) -> jinja2.Environment:
    """The filters and globals of one part's templates (the web pages are the "html" part)."""
    env.filters.update(HTML_FILTERS if part == "html" else FILTERS)
    env.globals["part"] = part
    return env


def _environment(loader: jinja2.BaseLoader, part: str) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=loader,
        autoescape=part == "html",  # noqa: S701 - subject, text and Slack are not HTML
        undefined=StrictUndefined,
        finalize=FINALIZE[part],
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        auto_reload=False,
    )
    return configure(env, part)


class _Bounded(ImmutableSandboxedEnvironment):
    """The sandbox for an organisation's templates: no attribute escapes, no huge values."""

    intercepted_binops = frozenset({"*", "**", "%", "+"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and (abs(_num(right)) > 64 or abs(_num(left)) > 10**6):
            raise jinja2.sandbox.SecurityError("power too large for a template")
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if (
                    isinstance(seq, str | list | tuple)
                    and isinstance(n, int)
                    and len(seq) * n > OVERRIDE_STRING_MAX
                ):
                    raise jinja2.sandbox.SecurityError("repetition too large for a template")
        result = super().call_binop(context, operator, left, right)
        _bounded_size(result)
        return result

    def call(self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        for value in args + tuple(kwargs.values()):
            _bounded_size(value)  # a recursive macro cannot double a string without limit
        result = super().call(__context, __obj, *args, **kwargs)
        _bounded_size(result)
        return result


def _num(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def _size(value: Any, depth: int = 0) -> int:
    """Characters and items in a value, counting strings inside lists and maps (a string
    doubled inside a list is as large as one doubled alone)."""
    if isinstance(value, str):
        return len(value)
    if depth > 8 or not isinstance(value, list | tuple | dict | set):
        return 0
    items = list(value.items()) if isinstance(value, dict) else list(value)
    total = len(items)
    for item in items[: OVERRIDE_STRING_MAX + 1]:
        pair = item if isinstance(item, tuple) and isinstance(value, dict) else (item,)
        total += sum(_size(part, depth + 1) for part in pair)
        if total > OVERRIDE_STRING_MAX:
            break
    return total


def _bounded_size(value: Any) -> None:
    if _size(value) > OVERRIDE_STRING_MAX:
        raise jinja2.sandbox.SecurityError("value too large for a template")


def _bounded_range(*args: int) -> range:
    result = range(*args)
    if len(result) > OVERRIDE_RANGE_MAX:
        raise jinja2.sandbox.SecurityError(f"range longer than {OVERRIDE_RANGE_MAX}")
    return result


def _bounded_filter(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        values = args + tuple(kwargs.values())
        for value in values:
            if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 1000:
                raise jinja2.sandbox.SecurityError(f"{fn.__name__}: argument {value} too large")
        # replace multiplies its input by the replacement's length, before any check could run
        strings = [len(v) for v in values if isinstance(v, str)]
        if len(strings) >= 2 and max(strings) * max(strings[1:]) > OVERRIDE_STRING_MAX * 16:
            raise jinja2.sandbox.SecurityError(f"{fn.__name__}: result would be too large")
        result = fn(*args, **kwargs)
        _bounded_size(result)
        return result

    return wrapper


def _sandbox(loader: jinja2.BaseLoader, part: str) -> jinja2.Environment:
    env = _Bounded(
        loader=loader,
        autoescape=part == "html",
        undefined=StrictUndefined,
        finalize=FINALIZE[part],
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
    )
    configure(env, part)
    env.filters = {name: _bounded_filter(fn) for name, fn in env.filters.items()}
    env.globals = {"range": _bounded_range, "part": part, "dict": dict}
    return env


# ------------------------------------------------------------------ time bound


class _Timeout(BaseException):
    """Raised inside a rendering thread whose override template ran too long."""


class _Deadline:
    """Interrupts the current thread's Python code if it is still rendering after `seconds`.

    A template compiles to Python, so an async exception reaches it between two bytecodes;
    the lock makes sure it can only land inside the guarded block."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.lock = threading.Lock()
        self.done = False
        self.fired = False
        self.thread_id = threading.get_ident()
        self.timer = threading.Timer(seconds, self._fire)
        self.timer.daemon = True

    def _fire(self) -> None:
        with self.lock:
            if not self.done:
                self.fired = True
                ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(self.thread_id), ctypes.py_object(_Timeout)
                )

    def __enter__(self) -> _Deadline:
        self.timer.start()
        return self

    def finish(self) -> None:
        with self.lock:
            self.done = True
        self.timer.cancel()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.finish()


def _collect(parts: Iterator[str], limit: int | None) -> str:
    out: list[str] = []
    size = 0
    for piece in parts:
        size += len(piece)
        if limit is not None and size > limit:
            raise jinja2.sandbox.SecurityError(f"output longer than {limit} characters")
        out.append(piece)
    return "".join(out)


# ------------------------------------------------------------------ the renderer


def _where(exc: BaseException, fallback: str) -> tuple[str, int | None]:
    """The template file and line an exception came from (Jinja keeps them in the traceback)."""
    if isinstance(exc, jinja2.TemplateSyntaxError):
        return exc.filename or exc.name or fallback, exc.lineno
    tb = exc.__traceback__
    found: tuple[str, int | None] = (fallback, None)
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename
        if name.endswith(".j2"):
            found = (name, tb.tb_lineno)
        tb = tb.tb_next
    return found


def _short(path: str) -> str:
    try:
        return str(Path(path).relative_to(TEMPLATES.parent.parent))
    except ValueError:
        return path


class Renderer:
    """Renders notifications from the built-in templates and an optional override folder."""

    def __init__(self, overrides: Path | None = None):
        builtin = FileSystemLoader(str(TEMPLATES))
        self.envs = {part: _environment(builtin, part) for part in PARTS}
        self.overrides = overrides
        self.sandboxes: dict[str, jinja2.Environment] = {}
        self.overridden: set[str] = set()
        if overrides is not None:
            if not overrides.is_dir():
                raise InputError(
                    Problem(f"{overrides} is not a folder", field="PROCURE_TEMPLATES_DIR")
                )
            loader = ChoiceLoader([FileSystemLoader(str(overrides)), builtin])
            self.sandboxes = {part: _sandbox(loader, part) for part in PARTS}
            self.overridden = {p.stem for p in overrides.glob("*.j2")}

    @staticmethod
    def events() -> list[str]:
        """Every event there is a template for."""
        return sorted(p.stem for p in TEMPLATES.glob("*.j2") if not p.stem.startswith("_"))

    def stray_overrides(self) -> list[Problem]:
        """Override files named after no event: never used, most likely misnamed. (A name that
        starts with "_" may be a partial of the organisation's own, imported by others.)"""
        events = self.events()
        problems = []
        for name in sorted(self.overridden):
            if name.startswith("_") or name in events:
                continue
            close = difflib.get_close_matches(name, events, n=1)
            hint = f" (did you mean {close[0]}.j2?)" if close else ""
            problems.append(
                Problem(
                    f"no event is called {name!r}: this override is never used{hint}",
                    source=str((self.overrides or Path()) / f"{name}.j2"),
                )
            )
        return problems

    def render(self, event: str, context: Mapping[str, Any]) -> Message:
        """Subject, text, HTML and Slack text of one event; RenderError names file and line."""
        if (
            not re.fullmatch(r"[a-z][a-z0-9_]{0,63}", event)
            or not (TEMPLATES / f"{event}.j2").exists()
        ):
            raise RenderError(f"no template for event {event!r}")
        warnings: tuple[str, ...] = ()
        if event in self.overridden or self._uses_override():
            try:
                parts = self._render_all(self.sandboxes, event, context, bounded=True)
            except RenderError as exc:
                warnings = (f"template override failed, used the built-in one: {exc}",)
                parts = self._render_all(self.envs, event, context, bounded=False)
        else:
            parts = self._render_all(self.envs, event, context, bounded=False)
        links = context.get("links") or {}
        return Message(
            event=event,
            subject=parts["subject"],
            text=parts["text"],
            html=parts["html"],
            slack=parts["slack"],
            buttons=buttons(links),
            attachments=tuple(context.get("attachments") or ()),
            warnings=warnings,
        )

    def _uses_override(self) -> bool:
        # An overridden partial (the base layout, the macros) changes every event.
        return any(name.startswith("_") for name in self.overridden)

    def _render_all(
        self,
        envs: Mapping[str, jinja2.Environment],
        event: str,
        context: Mapping[str, Any],
        *,
        bounded: bool,
    ) -> dict[str, str]:
        out = {}
        name = f"{event}.j2"
        for part in PARTS:
            env = envs[part]
            try:
                template = env.get_template(name)
                if bounded:
                    # The time limit is for rendering: the layouts and macros a template
                    # extends or imports are compiled first (once per environment), so a
                    # first render on a busy machine is not cut short by compiling them.
                    for shared in env.list_templates(filter_func=lambda n: n.startswith("_")):
                        env.get_template(shared)
                    with _Deadline(OVERRIDE_SECONDS) as deadline:
                        started = time.monotonic()
                        try:
                            text = _collect(template.generate(context), OVERRIDE_OUTPUT_MAX)
                            deadline.finish()
                        except _Timeout:
                            raise RenderError(
                                f"took longer than {OVERRIDE_SECONDS:g} s to render",
                                template=name,
                            ) from None
                        if time.monotonic() - started > OVERRIDE_SECONDS:
                            raise RenderError(
                                f"took longer than {OVERRIDE_SECONDS:g} s to render",
                                template=name,
                            )
                else:
                    text = _collect(template.generate(context), None)
            except RenderError:
                raise
            except jinja2.TemplateNotFound as exc:
                raise RenderError(f"template {exc.name} not found", template=name) from None
            except (
                jinja2.TemplateError,
                ValueError,
                TypeError,
                ArithmeticError,
                KeyError,
                RecursionError,  # a macro calling itself without end
                MemoryError,
            ) as exc:
                where, line = _where(exc, name)
                raise RenderError(
                    f"{part}: {type(exc).__name__}: {exc}", template=_short(where), line=line
                ) from None
            out[part] = text
        out["subject"] = _one_line(out["subject"]).strip()[:SUBJECT_MAX]
        out["text"] = _BLANK_RUNS.sub("\n\n", out["text"]).strip() + "\n"
        out["slack"] = _BLANK_RUNS.sub("\n\n", out["slack"]).strip()
        if not out["subject"] or not out["text"].strip():
            raise RenderError(f"{event}: rendered an empty subject or text", template=name)
        return out


def buttons(links: Mapping[str, str]) -> tuple[Button, ...]:
    """The action links of a message as buttons (Slack shows them; the HTML has its own)."""
    out = []
    if links.get("approve"):
        out.append(Button("Approve", links["approve"], "primary"))
    if links.get("reject"):
        out.append(Button("Reject", links["reject"], "danger"))
    if links.get("send_back"):
        out.append(Button("Send back", links["send_back"]))
    if links.get("receipt"):
        out.append(Button("Confirm receipt", links["receipt"], "primary"))
    if links.get("request"):
        out.append(Button("Open request", links["request"]))
    return tuple(out)
