"""Property-based hostile input (Hypothesis) through the documented entry points: request
files, CSV imports, pipeline files, decision forms. Whatever arrives: no traceback (never the
internal-error exit 70 or an HTTP 5xx), nothing half written, every refusal names its file,
and no float ever reaches a money column."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import yaml
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.engine import Engine

from models.db import make_engine
from pipelines import __file__ as pipelines_init
from procure import settings as settings_module
from procure.cli import main
from tests.conftest import Databases
from tests.factories import IDA, NOW, RITA, row_counts, submit
from web.app import create_app

SETTINGS = settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
DEFAULT_PIPELINE = Path(pipelines_init).with_name("default.yaml")

nasty_text = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        [
            '=HYPERLINK("http://evil")',
            "+1+1",
            "@SUM(A1)",
            "line\r\nBcc: x@example.com",
            "\u202egnp.exe",
            "zero\u200bwidth",
            "<script>alert(1)</script>",
            "🚀" * 50,
            "x" * 5000,
            "",
            "NaN",
            "1e309",
        ]
    ),
)
numbers = st.one_of(
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.decimals(allow_nan=False, allow_infinity=False, places=4),
    st.sampled_from(["1", "1.5", "-3", "1e3", "0x10", "", "ten", "2.999999999"]),
)
scalars = st.one_of(nasty_text, numbers, st.booleans(), st.none(), st.dates().map(str))


class _Dumper(yaml.SafeDumper):
    """Writes a Decimal as the number it is (YAML has no Decimal of its own)."""


_Dumper.add_representer(
    Decimal, lambda dumper, value: dumper.represent_scalar("tag:yaml.org,2002:float", str(value))
)


def dump(data: Any) -> str:
    return yaml.dump(data, Dumper=_Dumper, allow_unicode=True, default_flow_style=False)


def requests() -> st.SearchStrategy[dict[str, Any]]:
    line = st.fixed_dictionaries(
        {
            "sku": st.one_of(st.sampled_from(["LAPTOP-STD-14", "MON-27", "DOCK-USB4"]), nasty_text),
            "quantity": numbers,
        },
        optional={"unit_price": numbers, "sourcing": scalars},
    )
    return st.fixed_dictionaries(
        {
            "kind": st.one_of(st.sampled_from(["onboarding", "refresh", "rollout"]), nasty_text),
            "requester": st.one_of(st.just(RITA), nasty_text),
            "cost_centre": st.one_of(st.just("CC-ENG"), nasty_text),
            "needed_by": st.one_of(st.dates().map(str), scalars),
            "lines": st.one_of(st.lists(line, max_size=4), scalars),
        },
        optional={"justification": nasty_text, "on_behalf_of": scalars, "extra": scalars},
    )


def run(capsys: pytest.CaptureFixture[str], url: str, *args: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["--db", url, *args])
    out, err = capsys.readouterr()
    return code, out + err


def assert_clean_refusal(code: int, output: str, source: Path) -> None:
    assert code in (0, 1, 2), output  # never 70: an internal error is a bug
    assert "Traceback" not in output and "internal error" not in output, output
    if code == 2:
        assert str(source) in output or source.name in output, output


def money_values(engine: Engine) -> list[Any]:
    with engine.connect() as db:
        rows = db.execute(text("SELECT unit_price, list_price, total FROM request_line")).all()
        totals = db.execute(text("SELECT total FROM request")).all()
    return [v for row in [*rows, *totals] for v in row if v is not None]


@pytest.fixture
def sqlite_url(databases: Databases) -> Iterator[str]:
    yield databases.url("sample")


@pytest.mark.parametrize("databases", ["sqlite"], indirect=True)
@SETTINGS
@given(data=st.one_of(requests(), st.lists(requests(), max_size=3)), as_json=st.booleans())
def test_request_files_are_refused_cleanly_or_stored_exactly(
    sqlite_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    data: Any,
    as_json: bool,
) -> None:
    engine = make_engine(sqlite_url)
    source = tmp_path / ("request.json" if as_json else "request.yaml")
    if as_json:
        source.write_text(json.dumps(data, default=str, allow_nan=True))
    else:
        source.write_text(dump(data))
    before = row_counts(engine)
    code, output = run(capsys, sqlite_url, "request", "submit", str(source))
    assert_clean_refusal(code, output, source)
    if code != 0:
        assert row_counts(engine) == before  # all or nothing
    for value in money_values(engine):
        assert not isinstance(value, float), value
        assert Decimal(str(value)) == Decimal(str(value)).quantize(Decimal("0.01"))
    engine.dispose()


@pytest.mark.parametrize("databases", ["sqlite"], indirect=True)
@SETTINGS
@given(
    header=st.lists(
        st.sampled_from(["email", "name", "department", "roles", "manager", "x", ""]),
        min_size=1,
        max_size=6,
    ),
    rows=st.lists(st.lists(nasty_text, min_size=0, max_size=7), max_size=5),
    raw=st.one_of(st.none(), st.binary(max_size=200)),
)
def test_csv_imports_are_all_or_nothing(
    sqlite_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    header: list[str],
    rows: list[list[str]],
    raw: bytes | None,
) -> None:
    import csv
    import io

    engine = make_engine(sqlite_url)
    source = tmp_path / "people.csv"
    if raw is not None:
        source.write_bytes(raw)
    else:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(header)
        writer.writerows(rows)
        source.write_text(buffer.getvalue())
    before = row_counts(engine)
    code, output = run(capsys, sqlite_url, "org", "load", str(source))
    assert_clean_refusal(code, output, source)
    if code != 0:
        assert row_counts(engine) == before
    engine.dispose()


def _mutate(document: Any, path: list[Any], value: Any) -> Any:
    """The default pipeline with one value replaced (or a key added) somewhere."""
    node = document
    for step in path[:-1]:
        if isinstance(node, dict) and node:
            node = node[sorted(node)[step % len(node)]]
        elif isinstance(node, list) and node:
            node = node[step % len(node)]
        else:
            break
    if isinstance(node, dict) and node:
        node[sorted(node)[path[-1] % len(node)]] = value
    elif isinstance(node, list) and node:
        node[path[-1] % len(node)] = value
    return document


@pytest.mark.parametrize("databases", ["sqlite"], indirect=True)
@SETTINGS
@given(
    path=st.lists(st.integers(min_value=0, max_value=50), min_size=1, max_size=5),
    value=st.one_of(
        scalars, st.lists(scalars, max_size=3), st.dictionaries(nasty_text, scalars, max_size=2)
    ),
)
def test_pipeline_files_are_checked_with_their_line(
    sqlite_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    path: list[int],
    value: Any,
) -> None:
    engine = make_engine(sqlite_url)
    document = yaml.safe_load(DEFAULT_PIPELINE.read_text())
    source = tmp_path / "pipeline.yaml"
    source.write_text(dump(_mutate(document, path, value)))
    before = row_counts(engine)
    code, output = run(capsys, sqlite_url, "pipeline", "check", str(source))
    assert_clean_refusal(code, output, source)
    code, output = run(capsys, sqlite_url, "pipeline", "load", str(source))
    assert_clean_refusal(code, output, source)
    if code != 0:
        assert row_counts(engine) == before
    engine.dispose()


@pytest.mark.parametrize("databases", ["sqlite"], indirect=True)
@SETTINGS
@given(
    form=st.dictionaries(
        st.sampled_from(["csrf", "decision", "comment", "confirm_terms", "x"]),
        nasty_text,
        max_size=5,
    ),
    token=st.one_of(st.just("GOOD"), nasty_text),
    raw=st.one_of(st.none(), st.binary(max_size=300)),
)
def test_decision_forms_never_break_the_page_or_decide_by_accident(
    sqlite_url: str,
    tmp_path: Path,
    form: dict[str, str],
    token: str,
    raw: bytes | None,
) -> None:
    engine = make_engine(sqlite_url)
    with engine.connect() as db:
        empty = not db.execute(text("SELECT count(*) FROM request")).scalar_one()
    if empty:
        submit(engine)
    config = settings_module.load(
        database_url=sqlite_url, home=tmp_path / "home", secret_key="h" * 40, now=NOW
    )
    if token == "GOOD":
        from sqlmodel import Session, select

        from models.org import Person
        from models.requests import Request, Stage
        from notifications.context import Links

        with Session(engine) as session:
            stage = session.exec(select(Stage).where(Stage.key == "joint_review")).first()
            request = session.get(Request, stage.request_id) if stage else None
            ida = session.exec(select(Person).where(Person.email == IDA)).one()
            assert stage and request
            token = (
                Links("http://testserver", config.signing_key(), NOW)
                .approval(request, stage, ida)["page"]
                .rsplit("/", 1)[1]
            )
    before = row_counts(engine)
    client = TestClient(create_app(config, engine), raise_server_exceptions=False)
    csrf = form.get("csrf", "")
    response = client.post(
        f"/a/{quote(token, safe='')}",
        content=raw if raw is not None else None,
        data=None if raw is not None else form,
        headers={
            "Cookie": f"procure_csrf={re.sub(r'[^A-Za-z0-9_-]', '', csrf) or 'none'}",
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    assert response.status_code < 500, response.text[-500:]
    if response.status_code != 200:
        assert row_counts(engine) == before
    engine.dispose()
