"""The routes file (notifications/routing.py): Apprise YAML read with file and line errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.errors import InputError, Problem
from notifications.routing import (
    TEAMS,
    Routes,
    instantiate,
    load_routes,
    parse_routes,
)

PASSWORD = "p@ss/w:rd"  # every character that means something in a URL's authority
SLACK_HOOK = "slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ/#general"
SLACK_TOKENS = ("T1JJ3T3L2", "A1BRTD4JD", "TIiajkdnlazkcOXrIdevi7FQ")
BOT_TOKEN = "xoxb-1234-1234-4ddbc191d40ee098cbaae6f3523ada2d"

ROUTES = """\
version: 1
urls:
  # every person, at their own address
  - mailtos://${SMTP_USER}:${SMTP_PASSWORD}@smtp.example.com?from=procure@example.com:
      - tag: people
  # a team mailing list and the service desk, two teams at once (a comma-separated string)
  - mailto://${SMTP_USER}:${SMTP_PASSWORD}@smtp.example.com?from=procure@example.com&to=it-team@example.com,helpdesk@example.com:
      - tag: it, management
  # one Slack channel for two teams (a list of tags)
  - slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ/#general:
      - tag: [purchasing, hr]
  # a generic webhook whose whole URL comes from the environment
  - ${FINANCE_HOOK}:
      - tag: finance
  # one person elsewhere too, by their address
  - slack://${prefect-secret:slack-bot-token}/#bob-approvals:
      - tag: Bob@Example.com
  - json://127.0.0.1:9/hook:
      tag: bob@example.com
"""


def secrets(name: str) -> str:
    """Stands in for Prefect Secret blocks."""
    found = {"slack-bot-token": BOT_TOKEN, "smtp-password": PASSWORD}
    if name not in found:
        raise InputError(Problem(f"Prefect Secret block {name!r} not found"))
    return found[name]


@pytest.fixture(autouse=True)
def _environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMTP_USER", "procure")
    monkeypatch.setenv("SMTP_PASSWORD", PASSWORD)
    monkeypatch.setenv("FINANCE_HOOK", "json://127.0.0.1:9/finance")
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)


@pytest.fixture
def routes() -> Routes:
    return parse_routes(ROUTES, "apprise.yml", secrets=secrets)


def refused(text: str) -> Problem:
    """The one problem parse_routes names for text (as apprise.yml)."""
    with pytest.raises(InputError) as caught:
        parse_routes(text, "apprise.yml", secrets=secrets)
    (problem,) = caught.value.problems
    assert str(caught.value) == str(problem)
    return problem


# --- a valid file --------------------------------------------------------------------------


def test_a_valid_file_gives_one_route_per_url(routes: Routes) -> None:
    assert routes.source == "apprise.yml"
    assert [(r.service, sorted(r.tags)) for r in routes.routes] == [
        ("email", ["people"]),
        ("email", ["it", "management"]),
        ("slack", ["hr", "purchasing"]),
        ("json", ["finance"]),
        ("slack", ["bob@example.com"]),
        ("json", ["bob@example.com"]),
    ]
    assert [r.personal for r in routes.routes] == [True, False, False, False, False, False]
    # An email route knows its own addresses.
    assert routes.routes[1].recipients == ("it-team@example.com", "helpdesk@example.com")
    # Every route remembers where it was written (within its entry).
    for route, url_line in zip(routes.routes, (4, 7, 10, 13, 16, 18), strict=True):
        assert route.line in (url_line, url_line + 1)


def test_a_team_gets_one_email_target_per_address(routes: Routes) -> None:
    targets = routes.targets("team:it")
    assert [t.to for t in targets] == ["it-team@example.com", "helpdesk@example.com"]
    assert {t.route for t in targets} == {routes.routes[1]}
    assert [t.key.split(" via ")[0] for t in targets] == [
        "email it-team@example.com",
        "email helpdesk@example.com",
    ]
    assert routes.targets("team:management") == targets


def test_a_team_gets_its_slack_and_webhook_routes(routes: Routes) -> None:
    (purchasing,) = routes.targets("team:purchasing")
    assert purchasing.route.service == "slack"
    assert purchasing.to is None
    assert purchasing.key.startswith("slack slack://")
    assert routes.targets("team:hr") == [purchasing]
    (finance,) = routes.targets("team:finance")
    assert finance.route.url == "json://127.0.0.1:9/finance"
    assert finance.key.startswith("json json://127.0.0.1:9/**** #")  # the path came with it


def test_team_names_are_not_case_sensitive(routes: Routes) -> None:
    assert routes.targets("team:IT") == routes.targets("team:it")


def test_a_person_gets_their_own_routes_and_every_people_route_addressed_to_them(
    routes: Routes,
) -> None:
    targets = routes.targets("person:bob@example.com")
    assert [(t.route.service, t.to) for t in targets] == [
        ("slack", None),
        ("json", None),
        ("email", "bob@example.com"),
    ]
    assert targets[0].route.url == f"slack://{BOT_TOKEN}/#bob-approvals"
    assert targets[2].route is routes.routes[0]
    assert targets[2].key.startswith("email bob@example.com via mailtos://")
    # Addresses match whatever their case.
    assert [t.route for t in routes.targets("person:BOB@example.com")] == [t.route for t in targets]


def test_a_person_without_routes_of_their_own_gets_the_people_route(routes: Routes) -> None:
    (target,) = routes.targets("person:carol@example.com")
    assert target.route.personal
    assert target.to == "carol@example.com"


def test_a_people_route_is_never_a_team_target(routes: Routes) -> None:
    for team in TEAMS:
        assert all(not t.route.personal for t in routes.targets(f"team:{team}"))
    assert "people" not in routes.teams()


@pytest.mark.parametrize("audience", ["", "team:", "team:legal", "group:it", "it"])
def test_an_audience_without_routes_has_no_targets(routes: Routes, audience: str) -> None:
    assert routes.targets(audience) == []


def test_no_target_key_holds_a_secret(routes: Routes) -> None:
    audiences = [f"team:{t}" for t in TEAMS] + ["person:bob@example.com"]
    keys = [t.key for a in audiences for t in routes.targets(a)]
    assert len(keys) == 10  # it 2, purchasing 1, hr 1, finance 1, management 2, bob 3
    for key in keys:
        for secret in (PASSWORD, "p%40ss%2Fw%3Ard", BOT_TOKEN, *SLACK_TOKENS):
            assert secret not in key


def test_missing_lists_the_teams_without_a_route(routes: Routes) -> None:
    assert routes.teams() == {"it", "management", "purchasing", "hr", "finance"}
    assert routes.missing() == ["operators"]
    assert routes.missing(["it", "legal", "facilities"]) == ["legal", "facilities"]
    assert Routes().missing() == list(TEAMS)


def test_a_top_level_tag_applies_to_every_url() -> None:
    text = "tag: operators\nurls:\n  - json://127.0.0.1:9/a\n  - json://127.0.0.1:9/b:\n      - tag: it\n"
    routes = parse_routes(text, "apprise.yml", secrets=secrets)
    assert [sorted(r.tags) for r in routes.routes] == [["operators"], ["it", "operators"]]
    assert len(routes.targets("team:operators")) == 2
    assert routes.missing() == ["purchasing", "hr", "finance", "management"]


def test_tags_may_be_separated_by_semicolons_and_are_lowered() -> None:
    text = "urls:\n  - json://127.0.0.1:9/a:\n      - tag: IT; Finance ,HR\n"
    (route,) = parse_routes(text, "apprise.yml", secrets=secrets).routes
    assert route.tags == {"it", "finance", "hr"}


def test_a_url_with_several_settings_entries_is_one_route_per_entry() -> None:
    text = (
        "urls:\n"
        "  - json://127.0.0.1:9/a:\n"
        "      - tag: it\n"
        "      - tag: hr\n"
        "        format: markdown\n"
    )
    routes = parse_routes(text, "apprise.yml", secrets=secrets)
    assert [sorted(r.tags) for r in routes.routes] == [["it"], ["hr"]]
    assert "format=markdown" in routes.routes[1].url
    assert "format=markdown" not in routes.routes[0].url


# --- substitution --------------------------------------------------------------------------


def test_a_substitution_inside_a_url_is_url_encoded(routes: Routes) -> None:
    people = routes.routes[0]
    assert people.url.startswith("mailtos://procure:p%40ss%2Fw%3Ard@smtp.example.com?")
    plugin = instantiate(people.url)
    assert plugin.user == "procure"
    assert plugin.password == PASSWORD
    assert plugin.host == "smtp.example.com"


@settings(max_examples=50, deadline=None)
@given(
    password=st.text(
        st.characters(codec="utf-8", categories=("L", "N", "P", "S", "Zs")),
        min_size=1,
        max_size=24,
    )
)
def test_any_password_reaches_apprise_unchanged(password: str) -> None:
    text = "urls:\n  - mailtos://procure:${SMTP_PASSWORD}@smtp.example.com?to=a@example.com:\n      - tag: it\n"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SMTP_PASSWORD", password)
        (route,) = parse_routes(text, "apprise.yml", secrets=secrets).routes
    assert instantiate(route.url).password == password


def test_a_substitution_that_is_the_whole_url_is_taken_as_it_is(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FINANCE_HOOK", "json://user:p%40ss@127.0.0.1:9/hook?method=PUT")
    text = "urls:\n  - ${FINANCE_HOOK}:\n      - tag: finance\n  - '  ${FINANCE_HOOK} ':\n      - tag: hr\n"
    routes = parse_routes(text, "apprise.yml", secrets=secrets)
    assert routes.routes[0].url == "json://user:p%40ss@127.0.0.1:9/hook?method=PUT"
    assert instantiate(routes.routes[0].url).password == "p@ss"
    assert routes.routes[1].url.strip() == routes.routes[0].url


def test_a_substitution_in_a_setting_reaches_apprise_unchanged() -> None:
    text = (
        "urls:\n"
        "  - mailtos://procure@smtp.example.com?to=a@example.com:\n"
        "      - tag: it\n"
        "        pass: ${SMTP_PASSWORD}\n"
        "        user: ${SMTP_USER}\n"
    )
    (route,) = parse_routes(text, "apprise.yml", secrets=secrets).routes
    plugin = instantiate(route.url)
    assert plugin.password == PASSWORD
    assert plugin.user == "procure"
    assert PASSWORD not in route.masked


def test_a_missing_environment_variable_is_named_with_its_line() -> None:
    text = (
        "urls:\n"
        "  - json://127.0.0.1:9/a:\n"
        "      - tag: it\n"
        "  - mailtos://procure:${NOT_SET_ANYWHERE}@smtp.example.com: {tag: people}\n"
    )
    problem = refused(text)
    assert problem.source == "apprise.yml"
    assert problem.line == 4
    assert "NOT_SET_ANYWHERE" in problem.message
    assert str(problem).startswith("apprise.yml:4: urls[1]")
    assert str(problem).endswith(
        "${NOT_SET_ANYWHERE}: the environment variable NOT_SET_ANYWHERE is not set"
    )


def test_a_missing_environment_variable_in_a_url_entry_with_settings_names_a_line() -> None:
    text = (
        "version: 1\n"
        "urls:\n"
        "  - mailtos://procure:${NOT_SET_ANYWHERE}@smtp.example.com:\n"
        "      - tag: people\n"
    )
    problem = refused(text)
    assert problem.line == 3  # the URL's own line
    assert "the environment variable NOT_SET_ANYWHERE is not set" in problem.message


def test_a_problem_with_a_url_names_the_line_of_the_url() -> None:
    text = (
        "version: 1\n"
        "urls:\n"
        "  - mailtos://procure:${NOT_SET_ANYWHERE}@smtp.example.com:\n"
        "      - tag: people\n"
    )
    assert refused(text).line == 3


def test_a_missing_environment_variable_in_a_setting_is_named_with_its_line() -> None:
    text = (
        "urls:\n"
        "  - mailtos://procure@smtp.example.com?to=a@example.com:\n"
        "      - tag: it\n"
        "        pass: ${NOT_SET_ANYWHERE}\n"
    )
    problem = refused(text)
    assert problem.line == 4
    assert problem.field is not None and problem.field.endswith(".pass")
    assert "NOT_SET_ANYWHERE is not set" in problem.message


def test_a_prefect_secret_is_read_with_the_given_lookup() -> None:
    asked: list[str] = []

    def lookup(name: str) -> str:
        asked.append(name)
        return PASSWORD

    text = "urls:\n  - mailtos://procure:${prefect-secret:smtp-password}@smtp.example.com:\n      - tag: people\n"
    (route,) = parse_routes(text, "apprise.yml", secrets=lookup).routes
    assert asked == ["smtp-password"]
    assert instantiate(route.url).password == PASSWORD
    assert "smtp-password" not in route.url


def test_a_missing_prefect_secret_is_named_with_its_line() -> None:
    text = (
        "urls:\n"
        "  - json://127.0.0.1:9/a: {tag: it}\n"
        "  - json://u:${prefect-secret:no-such-block}@127.0.0.1:9/b: {tag: hr}\n"
    )
    problem = refused(text)
    assert problem.line == 3
    assert problem.message == (
        "${prefect-secret:no-such-block}: Prefect Secret block 'no-such-block' not found"
    )


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("${1abc}", "${1abc} is neither ${NAME} nor ${prefect-secret:NAME}"),
        ("${}", "${} is neither ${NAME} nor ${prefect-secret:NAME}"),
        ("${A-B}", "${A-B} is neither ${NAME} nor ${prefect-secret:NAME}"),
        ("${env:HOME}", "${env:HOME} is neither ${NAME} nor ${prefect-secret:NAME}"),
        ("${prefect-secret:Bad Name}", "'Bad Name' is not a Prefect block name"),
        ("${prefect-secret:}", "'' is not a Prefect block name"),
        ("${prefect-secret:under_score}", "'under_score' is not a Prefect block name"),
    ],
)
def test_a_bad_reference_is_refused_with_its_line(reference: str, message: str) -> None:
    asked: list[str] = []

    def lookup(name: str) -> str:
        asked.append(name)
        return "x"

    text = f"urls:\n  - json://127.0.0.1:9/a: {{tag: it}}\n  - 'json://u:{reference}@127.0.0.1:9/b': {{tag: hr}}\n"
    with pytest.raises(InputError) as caught:
        parse_routes(text, "apprise.yml", secrets=lookup)
    (problem,) = caught.value.problems
    assert problem.message == message
    assert problem.line == 3
    assert str(problem).startswith("apprise.yml:3: ")
    assert asked == []  # nothing was looked up for a bad name


# --- masking -------------------------------------------------------------------------------


def test_masked_urls_hold_no_secret(routes: Routes) -> None:
    secrets_ = (PASSWORD, "p%40ss%2Fw%3Ard", BOT_TOKEN, *SLACK_TOKENS)
    for route in routes.routes:
        for shown in (route.masked, repr(route), str(route)):
            for secret in secrets_:
                assert secret not in shown, (shown, secret)
    email = routes.routes[0]
    assert email.masked.startswith("mailtos://****:****@smtp.example.com")  # both from ${…}
    assert PASSWORD in instantiate(email.url).password  # the real URL still works
    slack = routes.routes[2]
    assert slack.url == SLACK_HOOK
    assert slack.masked.startswith("slack://T...2/A...D/T...Q/")
    assert repr(slack).startswith("Route('slack://T...2/A...D/T...Q/")
    assert repr(slack).endswith("tags=['hr', 'purchasing'])")


def test_a_route_shown_in_a_list_or_an_error_holds_no_secret(routes: Routes) -> None:
    shown = repr(routes.routes) + repr(routes.targets("person:bob@example.com"))
    for secret in (PASSWORD, "p%40ss%2Fw%3Ard", BOT_TOKEN, *SLACK_TOKENS):
        assert secret not in shown


HOOK_TOKEN = "HOOKTOKEN12345"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "json://127.0.0.1:48826/hooks/finance-${HOOK_TOKEN}",
            "json://127.0.0.1:48826/hooks/finance-****?method=POST",
        ),
        ("json://h.example.com:${HOOK_PORT}/hooks/a", "json://h.example.com:****/hooks/a?"),
        ("json://${HOOK_TOKEN}:pw@h.example.com/a", "json://****:****@h.example.com/a?"),
        ("${WHOLE_HOOK}", "json://hooks.example.com:8443/****"),
        ("${DISCORD_HOOK}", "discord://****/****"),
        ("mailtos://u@smtp.example.com?to=a@example.com&pass=${HOOK_TOKEN}", "mailtos://u:****@"),
    ],
    ids=["path", "port", "user", "whole", "whole-token-host", "setting"],
)
def test_a_value_from_the_environment_is_masked_where_it_stands(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, url: str, shown: str
) -> None:
    monkeypatch.setenv("HOOK_TOKEN", HOOK_TOKEN)
    monkeypatch.setenv("HOOK_PORT", "48826")
    monkeypatch.setenv("WHOLE_HOOK", f"json://hooks.example.com:8443/x/{HOOK_TOKEN}?k={HOOK_TOKEN}")
    monkeypatch.setenv("DISCORD_HOOK", f"discord://4174216298/{HOOK_TOKEN}")
    text = f'urls:\n  - "{url}":\n      - tag: finance\n'
    (route,) = parse_routes(text, "apprise.yml", secrets=secrets).routes
    assert route.masked.startswith(shown), route.masked
    for secret in (HOOK_TOKEN, "4174216298"):
        assert secret not in route.masked
    (target,) = Routes([route], source="apprise.yml").targets("team:finance")
    assert HOOK_TOKEN not in target.key and "****" in target.key
    assert [r.getMessage() for r in caplog.records if r.name == "apprise"] == []


def test_a_service_s_error_quoting_the_url_is_scrubbed_of_what_came_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HOOK_TOKEN", "tok/en+1 2")
    text = 'urls:\n  - "json://127.0.0.1:9/hooks/${HOOK_TOKEN}":\n      - tag: it\n'
    (route,) = parse_routes(text, "apprise.yml", secrets=secrets).routes
    assert route.url == "json://127.0.0.1:9/hooks/tok%2Fen%2B1%202"
    error = f"404 at {route.url} (path /hooks/tok/en+1 2, TOK%2FEN%2B1%202, tok%2Fen%2B1+2)"
    assert (
        route.scrub(error) == "404 at json://127.0.0.1:9/hooks/**** (path /hooks/****, ****, ****)"
    )


def test_a_placeholder_apprise_cannot_read_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    """The bot token's route is shown from Apprise's privacy form (a placeholder is no Slack
    token), and trying the placeholder logs no Apprise error."""
    text = "urls:\n  - slack://${prefect-secret:slack-bot-token}/#bob: {tag: bob@example.com}\n"
    (route,) = parse_routes(text, "apprise.yml", secrets=secrets).routes
    assert route.masked.startswith("slack://x...d/%23bob/")
    assert BOT_TOKEN not in route.masked
    assert [r.getMessage() for r in caplog.records if r.name == "apprise"] == []


def test_two_webhooks_that_differ_only_in_their_secrets_are_two_targets() -> None:
    text = (
        "urls:\n"
        "  - json://hook:first-secret@127.0.0.1:9/a: {tag: it}\n"
        "  - json://hook:other-secret@127.0.0.1:9/a: {tag: it}\n"
    )
    routes = parse_routes(text, "apprise.yml", secrets=secrets)
    assert len(routes.routes) == 2
    assert len(routes.targets("team:it")) == 2


# --- malformed files -----------------------------------------------------------------------


def test_a_file_that_is_not_yaml_is_refused_with_its_line() -> None:
    problem = refused("version: 1\nurls:\n  - json://h/: {tag: it\n  - json://g/\n")
    assert problem.message.startswith("invalid YAML: ")
    assert problem.source == "apprise.yml"
    assert problem.line is not None
    assert problem.line >= 3
    assert str(problem).startswith(f"apprise.yml:{problem.line}: invalid YAML")


def test_an_unclosed_list_is_refused_as_invalid_yaml() -> None:
    assert refused("version: 1\nurls: [\n").message.startswith("invalid YAML: ")


@pytest.mark.parametrize(
    "text",
    ["- json://127.0.0.1:9/a\n", "just a sentence\n", "42\n", ""],
    ids=["list", "string", "number", "empty"],
)
def test_a_file_that_is_not_a_map_is_refused(text: str) -> None:
    problem = refused(text)
    assert problem.message == "must be a map with `urls:` (Apprise YAML config)"
    assert problem.source == "apprise.yml"
    if text:
        assert str(problem) == "apprise.yml:1: must be a map with `urls:` (Apprise YAML config)"


def test_an_unknown_top_level_key_is_named_with_its_line() -> None:
    problem = refused("version: 1\nurls:\n  - json://h/: {tag: it}\nrecipients: everyone\n")
    assert str(problem) == (
        "apprise.yml:4: recipients: unknown key 'recipients': expected version, urls, tag"
    )


def test_version_2_is_refused() -> None:
    problem = refused("version: 2\nurls:\n  - json://h/: {tag: it}\n")
    assert str(problem) == "apprise.yml:1: version: only version 1 is known"


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("version: 1\n", 1),
        ("version: 1\nurls: []\n", 2),
        ("version: 1\nurls:\n", 2),
        ("version: 1\nurls: json://h/\n", 2),
        ("version: 1\nurls: {json://h/: {tag: it}}\n", 2),
    ],
    ids=["missing", "empty list", "empty", "a string", "a map"],
)
def test_urls_must_be_a_non_empty_list(text: str, line: int) -> None:
    problem = refused(text)
    assert str(problem) == f"apprise.yml:{line}: urls: needs a list of URLs under `urls:`"


@pytest.mark.parametrize(
    "entry", ["42", "[json://h/]", "{json://h/: {tag: it}, json://g/: {tag: hr}}"]
)
def test_an_entry_that_is_not_a_url_is_refused_with_its_line(entry: str) -> None:
    problem = refused(f"urls:\n  - json://127.0.0.1:9/a: {{tag: it}}\n  - {entry}\n")
    assert str(problem) == (
        "apprise.yml:3: urls[1]: each entry is a URL, or a URL with a list of its settings"
    )


def test_settings_that_are_neither_a_map_nor_a_list_of_maps_are_refused() -> None:
    problem = refused("urls:\n  - json://127.0.0.1:9/a: it\n")
    assert problem.line == 2
    assert problem.message == "the settings of a URL are a map or a list of maps"


def test_a_setting_with_a_nested_value_is_refused() -> None:
    problem = refused("urls:\n  - json://127.0.0.1:9/a:\n      - tag: it\n        format: [a, b]\n")
    assert problem.line == 4
    assert problem.message == "format: expected a single value"


@pytest.mark.parametrize(
    ("url", "schema"),
    [("mailto://", "mailto"), ("nosuchscheme://x", "nosuchscheme"), ("slack://", "slack")],
)
def test_a_url_apprise_cannot_use_is_refused_with_its_line(url: str, schema: str) -> None:
    problem = refused(f"urls:\n  - json://127.0.0.1:9/a: {{tag: it}}\n  - '{url}': {{tag: hr}}\n")
    assert problem.line == 3
    assert problem.message == f"Apprise cannot use this {schema}:// URL (check its form)"
    assert str(problem).startswith("apprise.yml:3: ")


def test_a_text_without_a_scheme_is_not_a_url() -> None:
    problem = refused("urls:\n  - smtp.example.com: {tag: it}\n")
    assert problem.line == 2
    assert problem.message == "is not a URL (e.g. mailtos://user:pass@host)"


@pytest.mark.parametrize(
    "entry",
    [
        "- json://127.0.0.1:9/a",
        "- json://127.0.0.1:9/a:",
        "- json://127.0.0.1:9/a: {format: text}",
        "- json://127.0.0.1:9/a: {tag: ''}",
        "- json://127.0.0.1:9/a: {tag: ' , ;'}",
    ],
)
def test_an_entry_without_a_tag_is_refused(entry: str) -> None:
    problem = refused(f"urls:\n  - json://127.0.0.1:9/b: {{tag: it}}\n  {entry}\n")
    assert problem.line == 3
    assert problem.message.startswith("json:// has no tag: give it a team (e.g. `tag: it`)")


@pytest.mark.parametrize("url", ["json://127.0.0.1:9/a", SLACK_HOOK])
def test_only_an_email_url_takes_the_people_tag(url: str) -> None:
    problem = refused(
        f"urls:\n  - mailto://u:p@smtp.example.com?to=it@example.com: {{tag: it}}\n"
        f"  - '{url}': {{tag: people}}\n"
    )
    assert str(problem).startswith("apprise.yml:3: ")
    assert problem.message == "only an email URL can take the `people` tag"


@pytest.mark.parametrize(
    "entry",
    [
        "'mailto://u:p@smtp.example.com?to=a@example.com&cc=b@example.com': {tag: it}",
        "'mailto://u:p@smtp.example.com?to=a@example.com&bcc=b@example.com': {tag: it}",
        "'mailto://u:p@smtp.example.com?to=a@example.com': {tag: it, cc: b@example.com}",
        "'mailtos://u:p@smtp.example.com': {tag: people, bcc: b@example.com}",
    ],
)
def test_cc_and_bcc_are_refused_on_email_urls(entry: str) -> None:
    problem = refused(f"urls:\n  - json://127.0.0.1:9/a: {{tag: hr}}\n  - {entry}\n")
    assert problem.line == 3
    assert problem.message == "cc= and bcc= are not supported: list everyone in to="


@pytest.mark.parametrize(
    ("tags", "message"),
    [
        ("it team", "tag 'it team' is not a team name or an address"),
        ("[it, 'human resources']", "tag 'human resources' is not a team name or an address"),
        ("it, -x", "tag '-x' is not a team name or an address"),
        ("bob@example", "tag 'bob@example' is not an email address"),
        ("a@b@example.com", "tag 'a@b@example.com' is not an email address"),
    ],
)
def test_a_bad_tag_is_refused_with_its_line(tags: str, message: str) -> None:
    problem = refused(f"urls:\n  - json://127.0.0.1:9/a:\n      - tag: {tags}\n")
    assert problem.line == 3
    assert problem.message == message
    assert problem.field == "urls[0].json://…[0].tag"  # the URL by its scheme alone


NO_TEAM = (
    "is no team: it, purchasing, hr, finance, management, operators, requester, "
    "or people, or an email address"
)


@pytest.mark.parametrize(
    ("tags", "bad"), [("itt", "itt"), ("[it, purchase]", "purchase"), ("hr, peoples", "peoples")]
)
def test_a_tag_that_is_no_team_is_refused_with_its_line(tags: str, bad: str) -> None:
    """A typo'd team would leave that team's notifications undelivered: refused, not routed."""
    problem = refused(
        f"urls:\n  - json://127.0.0.1:9/b: {{tag: it}}\n  - json://127.0.0.1:9/a:\n"
        f"      - tag: {tags}\n"
    )
    assert problem.line == 4
    assert problem.message == f"tag {bad!r} {NO_TEAM}"
    assert str(problem).startswith("apprise.yml:4: ")


def test_a_settings_problem_names_its_url_by_the_scheme_alone_never_its_password() -> None:
    problem = refused(
        "urls:\n  - mailto://user:hunter2-written@127.0.0.1:25?from=a@example.com:\n"
        "      - tag: itt\n"
    )
    assert (problem.line, problem.field) == (3, "urls[0].mailto://…[0].tag")
    assert "hunter2" not in str(problem)


def test_a_top_level_tag_that_is_no_team_is_refused() -> None:
    problem = refused("version: 1\ntag: itt\nurls:\n  - json://127.0.0.1:9/a\n")
    assert str(problem) == f"apprise.yml:2: tag: tag 'itt' {NO_TEAM}"


def test_every_role_is_a_team_a_route_may_take() -> None:
    from models.org import Role

    tags = ", ".join([*(r.value for r in Role), "operators"])
    routes = parse_routes(
        f"urls:\n  - json://127.0.0.1:9/a: {{tag: '{tags}'}}\n", "apprise.yml", secrets=secrets
    )
    assert routes.targets("team:requester") and routes.targets("team:operators")


@pytest.mark.parametrize(
    "entry",
    [
        "mailtos://procure:hunter2@smtp.example.com?from=p@example.com: {tag: people}",
        "'mailtos://smtp.example.com?from=p@example.com&user=procure&pass=hunter2': {tag: people}",
        "mailtos://smtp.example.com?from=p@example.com: {tag: people, user: u, password: hunter2}",
    ],
)
def test_a_password_written_in_the_file_is_warned_of_by_line(entry: str) -> None:
    text = f"urls:\n  - json://127.0.0.1:9/a: {{tag: it}}\n  - {entry}\n"
    routes = parse_routes(text, "apprise.yml", secrets=secrets)
    assert len(routes.routes) == 2  # read all the same
    (warning,) = routes.warnings
    assert warning.line == 3
    assert str(warning).startswith("apprise.yml:3: urls[1]: a password is written in the file: ")
    assert "hunter2" not in str(warning)


@pytest.mark.parametrize(
    "entry",
    [
        "mailtos://${SMTP_USER}:${SMTP_PASSWORD}@smtp.example.com?from=p@example.com",
        "mailtos://${SMTP_USER}:${prefect-secret:smtp-password}@smtp.example.com?from=p@x.com",
        "'mailtos://smtp.example.com?from=p@example.com&user=u&pass=${SMTP_PASSWORD}'",
        "mailto://127.0.0.1:25?from=p@example.com",  # a local server without a password
        "mailto://procure@127.0.0.1:25?from=p@example.com",  # a user, no password
    ],
)
def test_no_warning_for_a_password_from_a_substitution_or_none(entry: str) -> None:
    routes = parse_routes(f"urls:\n  - {entry}: {{tag: people}}\n", "apprise.yml", secrets=secrets)
    assert routes.warnings == []


def test_the_example_routes_warn_of_nothing() -> None:
    assert parse_routes(ROUTES, "apprise.yml", secrets=secrets).warnings == []


def test_a_bad_top_level_tag_is_refused_with_its_line() -> None:
    problem = refused("version: 1\ntag: it team\nurls:\n  - json://127.0.0.1:9/a\n")
    assert str(problem) == "apprise.yml:2: tag: tag 'it team' is not a team name or an address"


@pytest.mark.parametrize("key", ["include", "groups"])
def test_include_and_groups_are_refused(key: str) -> None:
    problem = refused(f"version: 1\nurls:\n  - json://h/: {{tag: it}}\n{key}: other.yml\n")
    assert str(problem) == f"apprise.yml:4: {key}: `{key}` is not supported: list every URL here"


def test_a_duplicate_url_key_in_one_entry_is_refused_as_invalid_yaml() -> None:
    problem = refused("urls:\n  - json://h/: {tag: it, tag: hr}\n")
    assert problem.line == 2
    assert "duplicate key 'tag'" in problem.message


def test_every_bad_route_is_named_at_once() -> None:
    text = (
        "version: 1\nurls:\n"
        "  - nope://x:\n      - tag: it\n"
        "  - json://127.0.0.1:9/fine:\n      - tag: hr\n"
        "  - json://127.0.0.1:9/untagged\n"
    )
    with pytest.raises(InputError) as caught:
        parse_routes(text, "apprise.yml", secrets=secrets)
    assert [(p.line, p.message.split(" (")[0]) for p in caught.value.problems] == [
        (3, "Apprise cannot use this nope:// URL"),
        (7, "json:// has no tag: give it a team"),
    ]


# --- loading a file ------------------------------------------------------------------------


def test_load_routes_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "apprise.yml"
    path.write_text(ROUTES, encoding="utf-8")
    routes = load_routes(path, secrets=secrets)
    assert routes.source == str(path)
    assert len(routes.routes) == 6
    assert routes.missing() == ["operators"]


def test_load_routes_names_the_file_in_its_errors(tmp_path: Path) -> None:
    path = tmp_path / "apprise.yml"
    path.write_text("version: 2\nurls: []\n", encoding="utf-8")
    with pytest.raises(InputError, match=rf"^{path}:1: version: only version 1 is known$"):
        load_routes(path, secrets=secrets)


def test_load_routes_refuses_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "apprise.yml"
    with pytest.raises(InputError) as caught:
        load_routes(path, secrets=secrets)
    assert str(caught.value) == f"{path}: no such file"


def test_load_routes_refuses_a_directory(tmp_path: Path) -> None:
    with pytest.raises(InputError) as caught:
        load_routes(tmp_path, secrets=secrets)
    assert str(caught.value) == f"{tmp_path}: is a directory, not a file"


def test_load_routes_accepts_a_path_as_text(tmp_path: Path) -> None:
    path = tmp_path / "apprise.yml"
    path.write_text("urls:\n  - json://127.0.0.1:9/a: {tag: operators}\n", encoding="utf-8")
    routes = load_routes(os.fspath(path), secrets=secrets)
    assert routes.missing() == ["it", "purchasing", "hr", "finance", "management"]


def test_a_message_id_holds_across_retries_and_differs_between_installations(
    routes: Routes,
) -> None:
    from datetime import UTC, datetime, timedelta

    from notifications.transport import Envelope, message_id

    target = routes.targets("team:it")[0]
    queued = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)

    def envelope(queued_at: datetime, at: datetime) -> Envelope:
        return Envelope(1, "PR-0001", None, at, queued_at)

    first = message_id(envelope(queued, queued), target, "example.com")
    retried = message_id(envelope(queued, queued + timedelta(minutes=4)), target, "example.com")
    # Notification 1 of another database (staging, or one made anew) queued at another time.
    other = message_id(envelope(queued + timedelta(days=3), queued), target, "example.com")
    assert first == retried and first != other
    assert first.startswith("<procure.1.") and other.startswith("<procure.1.")


def test_a_request_s_thread_holds_for_all_its_messages_and_differs_between_installations() -> None:
    from datetime import UTC, datetime, timedelta

    from notifications.transport import Envelope, thread_id

    created = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)

    def envelope(notification: int, at: datetime, request_created: datetime) -> Envelope:
        return Envelope(notification, "PR-0001", None, at, at, request_created)

    first = thread_id(envelope(1, created, created), "example.com")
    later = thread_id(envelope(7, created + timedelta(days=9), created), "example.com")
    # PR-0001 of another database (staging, or one made anew), created at another time.
    other = thread_id(envelope(1, created, created + timedelta(days=3)), "example.com")
    assert first == later and first != other
    assert first is not None and first.startswith("<procure.pr-0001.")
    assert first.endswith("@example.com>")
    # A notification about no request joins no thread.
    assert thread_id(Envelope(1, None, None, created, created), "example.com") is None
