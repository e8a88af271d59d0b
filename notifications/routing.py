"""Who gets a notification where: teams and people mapped to Apprise URLs by tag.

The routes file is Apprise's own YAML configuration format, read here so that every mistake is
named with its file and line before anything is sent:

    version: 1
    urls:
      # Every person, by their own address (`to` is filled in per message):
      - mailtos://${SMTP_USER}:${SMTP_PASSWORD}@smtp.example.com?from=procure@example.com:
          - tag: people
      # A team: its mailing list and its Slack channel.
      - mailto://smtp.example.com?from=procure@example.com&to=it-team@example.com:
          - tag: it
      - ${SLACK_PURCHASING_WEBHOOK}:
          - tag: purchasing
      # One person elsewhere too, by their address as the tag:
      - slack://${prefect-secret:slack-bot-token}/#bob-approvals:
          - tag: bob.budget@example.com

Audiences: `team:NAME` goes to the routes tagged NAME (it, purchasing, hr, finance, management,
operators, or requester: the roles are the teams); `person:EMAIL` goes to the routes tagged with
that address and to every `people` route, addressed to them. Any other tag is a typo and refused.

Secrets never live in the file: `${NAME}` reads the environment, `${prefect-secret:NAME}` a
Prefect Secret block. A substitution inside a URL is URL-encoded (a password may hold `@` or
`/`); one that is the whole URL is taken as it is. Logs, `procure notify` and delivery records
show URLs with their secrets masked: Apprise's privacy form, and every value substituted from
`${…}` replaced by `****` (of a whole-URL substitution, everything but its scheme and its host
name: `json://hooks.example.com/****`). A password written into the file itself is read, but
`Routes.warnings` names its line (`procure notify check` shows it): move it to `${…}`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, quote_plus, unquote, urlencode, urlsplit

import apprise
from apprise.plugins.email.base import NotifyEmail
from apprise.plugins.slack import NotifySlack

from models.errors import InputError, Problem
from models.org import Role
from models.sources import Document, Path_, parse_yaml, read_text

PEOPLE = "people"  # the tag of routes that reach every person at their own address
TEAMS = ("it", "purchasing", "hr", "finance", "management", "operators")  # each needs a route
# Every team a notification may go to: the roles (models.actions.TEAMS) and the operators.
KNOWN_TEAMS = (*TEAMS, *(r.value for r in Role if r.value not in TEAMS))
_PASSWORD_ARGS = frozenset({"pass", "password"})  # Apprise's URL arguments for a password
_PLACEHOLDER = "procuresubstitution"
_SUBSTITUTION = re.compile(r"\$\{([^}]*)\}")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SECRET_NAME = re.compile(r"[a-z0-9][a-z0-9-]*")
_TAG = re.compile(r"[a-z0-9][a-z0-9_.+@-]*")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_HOSTNAME = re.compile(r"(?:[A-Za-z0-9-]+\.)+[A-Za-z0-9-]+|localhost|\[[0-9A-Fa-f:.]+\]")
MASK = "****"

Secrets = Callable[[str], str]


def prefect_secret(name: str) -> str:
    """The value of a Prefect Secret block (raises InputError naming it when it is missing)."""
    from procure.orchestration import prepare_environment

    prepare_environment()  # procure's Prefect settings (no telemetry) if Prefect starts here
    from prefect.blocks.system import Secret

    try:
        value = Secret.load(name, _sync=True).get()  # type: ignore[call-arg, union-attr]
    except ValueError as exc:
        raise InputError(Problem(f"Prefect Secret block {name!r} not found: {exc}")) from None
    return str(value)


@dataclass(frozen=True)
class Route:
    """One URL of the routes file. `url` holds secrets: show `masked`, never `url`, and pass
    any text that may quote the URL (a service's error) through `scrub`."""

    url: str
    masked: str
    tags: frozenset[str]
    service: str  # "email", "slack", or Apprise's name for another service
    line: int | None = None
    # An email route's own addresses (`to=`); a `people` route is addressed per message.
    recipients: tuple[str, ...] = ()
    # The values substituted from ${…} into the URL: masked wherever the URL may show.
    secrets: tuple[str, ...] = field(default=(), repr=False)

    def __repr__(self) -> str:  # never print the secret URL by accident
        return f"Route({self.masked!r}, tags={sorted(self.tags)})"

    def scrub(self, text: str) -> str:
        """text with every value substituted into this route's URL masked."""
        return mask_values(text, self.secrets)

    @property
    def personal(self) -> bool:
        return PEOPLE in self.tags


@dataclass(frozen=True)
class Target:
    """Where one copy of a notification goes: a route, and for email one address (each address
    is delivered and recorded on its own, so a retry never mails those who have it)."""

    route: Route
    to: str | None = None

    @property
    def key(self) -> str:
        """Names the destination in delivery records, without secrets. Two URLs that differ
        only in their secrets mask alike: a short digest of the full URL tells them apart."""
        digest = hashlib.sha256(self.route.url.encode()).hexdigest()[:8]
        if self.to is not None:
            return f"email {self.to} via {self.route.masked} #{digest}"[:500]
        return f"{self.route.service} {self.route.masked} #{digest}"[:500]


@dataclass
class Routes:
    """The routes of one file, with the lookup the dispatcher needs."""

    routes: list[Route] = field(default_factory=list)
    source: str = "(no routes)"
    # What is read but should not be there (a password written into the file), by line.
    warnings: list[Problem] = field(default_factory=list)

    def targets(self, audience: str) -> list[Target]:
        """Every destination of an audience (`team:it`, `person:bob@example.com`)."""
        kind, _, address = audience.partition(":")
        if not address.strip():
            return []
        if kind == "team":
            chosen = [r for r in self.routes if address.lower() in r.tags]
        elif kind == "person":
            email = address.lower()
            chosen = [r for r in self.routes if email in r.tags and not r.personal]
        else:
            return []
        out: list[Target] = []
        for route in chosen:
            if route.service == "email":
                out += [Target(route, to=a) for a in route.recipients]
            else:
                out.append(Target(route))
        if kind == "person":
            out += [Target(r, to=address) for r in self.routes if r.personal]
        return list({t.key: t for t in out}.values())  # one copy per destination

    def teams(self) -> set[str]:
        return {t for r in self.routes for t in r.tags if t != PEOPLE and "@" not in t}

    def missing(self, needed: Iterable[str] = TEAMS) -> list[str]:
        """Teams without a route (their notifications could not be delivered)."""
        have = self.teams()
        return [t for t in needed if t not in have]


class _Hush(logging.Filter):
    """Drops Apprise's log records in a thread while it tries a URL only to show it."""

    local = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(self.local, "on", False)


_HUSH = _Hush()
logging.getLogger("apprise").addFilter(_HUSH)


@contextmanager
def _quiet() -> Iterator[None]:
    _HUSH.local.on = True
    try:
        yield
    finally:
        _HUSH.local.on = False


def instantiate(url: str, **extra: str) -> Any:
    """An Apprise plugin for a URL, with extra URL arguments (None when Apprise cannot read
    it). Never throttled: procure paces its own sends."""
    if extra:
        url += ("&" if "?" in url else "?") + urlencode(extra)
    plugin = apprise.Apprise.instantiate(url, suppress_exceptions=True)
    if plugin is not None:
        plugin.request_rate_per_sec = 0
    return plugin


def service_of(plugin: Any) -> str:
    if isinstance(plugin, NotifyEmail):
        return "email"
    if isinstance(plugin, NotifySlack):
        return "slack"
    return str(getattr(plugin, "service_name", type(plugin).__name__)).lower()


def mask_values(text: str, values: Iterable[str]) -> str:
    """text with each of values masked, as it is and URL-encoded, whatever its case."""
    forms = {
        form
        for value in values
        if value
        for form in (value, quote(value, safe=""), quote(value), quote_plus(value), unquote(value))
        if form
    }
    if not forms:
        return text
    pattern = "|".join(re.escape(f) for f in sorted(forms, key=len, reverse=True))
    return re.sub(pattern, MASK, text, flags=re.IGNORECASE)


def _parts(value: str, whole: bool) -> list[str]:
    """What to mask in text that may quote a substituted value: all of it, and of a whole URL
    each of its parts that may be a token (its user and password, path, segments, query values)."""
    if not whole:
        return [value]
    value = value.strip()
    split = urlsplit(value)
    userinfo = split.netloc.rpartition("@")[0]
    parts = [value, userinfo, *userinfo.split(":"), split.path, split.query, split.fragment]
    parts += [s for s in split.path.split("/") if len(s) >= 6]
    parts += [v for _, v in parse_qsl(split.query)]
    return [p for p in parts if p]


def _shown_whole(value: str) -> str:
    """A URL that came whole from ${…}, as shown: its scheme and host name, the rest masked (a
    "host" that is no host name, as in Apprise's `discord://ID/TOKEN`, is masked too)."""
    split = urlsplit(value.strip())
    host = split.netloc.rpartition("@")[2]
    if not _HOSTNAME.fullmatch(re.sub(r":\d+$", "", host)):
        host = MASK
    return f"{split.scheme or MASK}://{host}/{MASK}"


def substitute(
    text: str,
    *,
    doc: Document,
    path: Path_,
    secrets: Secrets = prefect_secret,
    found: list[str] | None = None,
) -> str:
    """Replace ${ENV} and ${prefect-secret:NAME}; a missing one is named with its line. What
    was put in is added to `found` (to be masked wherever the URL shows)."""
    whole = _SUBSTITUTION.fullmatch(text.strip()) is not None

    def value(match: re.Match[str]) -> str:
        ref = match.group(1).strip()
        if ref.startswith("prefect-secret:"):
            name = ref.removeprefix("prefect-secret:").strip()
            if not _SECRET_NAME.fullmatch(name):
                raise InputError(doc.problem(path, f"{name!r} is not a Prefect block name"))
            try:
                got = secrets(name)
            except InputError as exc:
                raise InputError(
                    doc.problem(path, f"${{prefect-secret:{name}}}: {exc.problems[0].message}")
                ) from None
        else:
            if not _NAME.fullmatch(ref):
                raise InputError(
                    doc.problem(
                        path, f"${{{ref}}} is neither ${{NAME}} nor ${{prefect-secret:NAME}}"
                    )
                )
            if ref not in os.environ:
                raise InputError(
                    doc.problem(path, f"${{{ref}}}: the environment variable {ref} is not set")
                )
            got = os.environ[ref]
        if found is not None:
            found.extend(_parts(got, whole))
        return got if whole else quote(got, safe="")

    return _SUBSTITUTION.sub(value, text)


def _tags(value: Any, doc: Document, path: Path_) -> set[str]:
    if value is None:
        return set()
    items = value if isinstance(value, list) else str(value).replace(";", ",").split(",")
    out = set()
    for item in items:
        tag = str(item).strip().lower()
        if not tag:
            continue
        if not _TAG.fullmatch(tag):
            raise InputError(doc.problem(path, f"tag {tag!r} is not a team name or an address"))
        if "@" in tag and not _EMAIL.fullmatch(tag):
            raise InputError(doc.problem(path, f"tag {tag!r} is not an email address"))
        if "@" not in tag and tag != PEOPLE and tag not in KNOWN_TEAMS:
            raise InputError(
                doc.problem(
                    path,
                    f"tag {tag!r} is no team: {', '.join(KNOWN_TEAMS)}, "
                    f"or {PEOPLE}, or an email address",
                )
            )
        out.add(tag)
    return out


class _UrlKey(str):
    """A URL that is a key of its settings, in a path: it finds the settings' line as the URL
    does, and is named by its scheme alone in a problem's field (a password written in the URL
    never reaches a message)."""

    def __str__(self) -> str:
        scheme, found, _ = str.__str__(self).partition("://")
        return f"{scheme}://…" if found else "(a URL)"


def _entries(doc: Document) -> list[tuple[Path_, Path_, str, Mapping[str, Any]]]:
    """(path of the URL, path of its settings, url, settings) per URL entry of an Apprise YAML
    document. A URL's problems are reported at its own line, a setting's at the setting's."""
    data = doc.data
    if not isinstance(data, dict):
        raise InputError(doc.problem((), "must be a map with `urls:` (Apprise YAML config)"))
    unknown = set(data) - {"version", "urls", "tag", "include", "asset", "groups"}
    if unknown:
        key = sorted(unknown)[0]
        raise InputError(doc.problem((key,), f"unknown key {key!r}: expected version, urls, tag"))
    if data.get("version", 1) != 1:
        raise InputError(doc.problem(("version",), "only version 1 is known"))
    for key in ("include", "groups"):
        if key in data:
            raise InputError(doc.problem((key,), f"`{key}` is not supported: list every URL here"))
    urls = data.get("urls")
    if not isinstance(urls, list) or not urls:
        raise InputError(doc.problem(("urls",), "needs a list of URLs under `urls:`"))
    out: list[tuple[Path_, Path_, str, Mapping[str, Any]]] = []
    for i, entry in enumerate(urls):
        path: Path_ = ("urls", i)
        if isinstance(entry, str):
            out.append((path, path, entry, {}))
            continue
        if not isinstance(entry, dict) or len(entry) != 1:
            raise InputError(
                doc.problem(path, "each entry is a URL, or a URL with a list of its settings")
            )
        ((url, settings),) = entry.items()
        inner = (*path, _UrlKey(str(url)))
        if settings is None:
            out.append((path, inner, str(url), {}))
        elif isinstance(settings, dict):
            out.append((path, inner, str(url), settings))
        elif isinstance(settings, list) and all(isinstance(s, dict) for s in settings):
            for j, one in enumerate(settings):
                out.append((path, (*inner, j), str(url), one))
        else:
            raise InputError(
                doc.problem(inner, "the settings of a URL are a map or a list of maps")
            )
    return out


def parse_routes(text: str, source: str, *, secrets: Secrets = prefect_secret) -> Routes:
    """Read an Apprise YAML routes file; raises InputError naming file, line and problem (every
    route's problems at once)."""
    doc = parse_yaml(text, source)
    common = _tags(doc.data.get("tag") if isinstance(doc.data, dict) else None, doc, ("tag",))
    routes: list[Route] = []
    problems: list[Problem] = []
    warnings: list[Problem] = []
    for path, where, raw_url, settings in _entries(doc):
        try:
            routes.append(_route(doc, path, where, raw_url, settings, common, secrets))
        except InputError as exc:
            problems += exc.problems
        if _literal_password(str(raw_url), settings):
            problem = doc.problem(
                path,
                "a password is written in the file: take it from the environment "
                "(${SMTP_PASSWORD}) or a Prefect Secret block (${prefect-secret:NAME})",
            )
            if problem not in warnings:  # one per URL, not one per list of its settings
                warnings.append(problem)
    if problems:
        raise InputError(problems)
    return Routes(routes, source=source, warnings=warnings)


def _literal_password(raw_url: str, settings: Mapping[str, Any]) -> bool:
    """Whether a URL as written holds a password that does not come from ${…}: in its user
    part (`user:secret@host`) or as a `pass=` / `password=` argument."""

    def literal(value: Any) -> bool:
        return bool(str(value).strip()) and _PLACEHOLDER not in str(value)

    try:
        split = urlsplit(_SUBSTITUTION.sub(_PLACEHOLDER, raw_url.strip()))
    except ValueError:  # not a URL at all: refused as such
        return False
    userinfo = split.netloc.rpartition("@")[0]
    if ":" in userinfo and literal(userinfo.partition(":")[2]):
        return True
    args = [*parse_qsl(split.query), *settings.items()]
    return any(
        str(key).lower() in _PASSWORD_ARGS
        and value is not None
        and literal(_SUBSTITUTION.sub(_PLACEHOLDER, str(value)))
        for key, value in args
    )


def _with_args(url: str, args: Mapping[str, str]) -> str:
    return url + ("&" if "?" in url else "?") + urlencode(args) if args else url


def _shown(raw_url: Any, raw_args: Mapping[str, str], put_in: list[str], plugin: Any) -> str:
    """A route's URL as shown: Apprise's privacy form, with each ${…} as ****. Built from the
    URL with a placeholder for each ${…}, so only the substituted parts are masked; when
    Apprise cannot read that form (a port or a token of a fixed form from ${…}), every
    substituted value is masked wherever it appears in the privacy form of the real URL."""
    count = iter(range(1_000_000))

    def placeholder(match: re.Match[str]) -> str:
        return f"procuremask{next(count)}x"

    url = _with_args(
        _SUBSTITUTION.sub(placeholder, str(raw_url)),
        {k: _SUBSTITUTION.sub(placeholder, v) for k, v in raw_args.items()},
    )
    with _quiet():  # a placeholder may not fit (a port, a Slack token): no error logged
        shape = instantiate(url)
    if shape is not None:
        return re.sub(r"procuremask\d+x", MASK, shape.url(privacy=True), flags=re.IGNORECASE)
    return mask_values(plugin.url(privacy=True), put_in)


def _route(
    doc: Document,
    path: Path_,
    where: Path_,
    raw_url: Any,
    settings: Mapping[str, Any],
    common: set[str],
    secrets: Secrets,
) -> Route:
    """One entry of the routes file."""
    put_in: list[str] = []  # every substituted value, to be masked wherever the URL shows
    url = substitute(str(raw_url), doc=doc, path=path, secrets=secrets, found=put_in)
    whole = url if _SUBSTITUTION.fullmatch(str(raw_url).strip()) else None
    args: dict[str, str] = {}
    raw_args: dict[str, str] = {}  # as written, ${…} and all
    tags = set(common)
    for key, value in settings.items():
        if key == "tag":
            tags |= _tags(value, doc, (*where, key))
        elif isinstance(value, (str, int, float, bool)) or value is None:
            text_value = "" if value is None else str(value)
            if isinstance(value, bool):
                text_value = "yes" if value else "no"
            raw_args[str(key)] = text_value
            args[str(key)] = substitute(
                text_value, doc=doc, path=(*where, key), secrets=secrets, found=put_in
            )
        else:
            raise InputError(doc.problem((*where, key), f"{key}: expected a single value"))
    url = _with_args(url, args)
    if "://" not in url:
        raise InputError(doc.problem(path, "is not a URL (e.g. mailtos://user:pass@host)"))
    schema = url.split("://", 1)[0]
    plugin = instantiate(url)
    if plugin is None:
        raise InputError(
            doc.problem(path, f"Apprise cannot use this {schema}:// URL (check its form)")
        )
    if not tags:
        raise InputError(
            doc.problem(
                path,
                f"{schema}:// has no tag: give it a team (e.g. `tag: it`), "
                "`people`, or a person's address",
            )
        )
    service = service_of(plugin)
    if PEOPLE in tags and service != "email":
        raise InputError(doc.problem(path, "only an email URL can take the `people` tag"))
    recipients: tuple[str, ...] = ()
    if service == "email":
        if plugin.cc or plugin.bcc:
            raise InputError(
                doc.problem(path, "cc= and bcc= are not supported: list everyone in to=")
            )
        recipients = tuple(address for _, address in plugin.targets)
        defaulted = recipients == (plugin.from_addr[1],) and "to=" not in url.lower()
        if defaulted and tags - {PEOPLE}:
            raise InputError(doc.problem(path, "a team's email URL needs to= (the team's address)"))
    return Route(
        url=url,
        masked=_shown_whole(whole)
        if whole is not None
        else _shown(raw_url, raw_args, put_in, plugin),
        tags=frozenset(tags),
        service=service,
        line=doc.line_of(path),
        recipients=recipients,
        secrets=tuple(put_in),
    )


def load_routes(path: Path | str, *, secrets: Secrets = prefect_secret) -> Routes:
    """The routes file at path (PROCURE_APPRISE_CONFIG)."""
    source, text = read_text(path)
    return parse_routes(text, source, secrets=secrets)
