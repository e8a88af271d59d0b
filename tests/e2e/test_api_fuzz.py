"""The HTTP API's OpenAPI schema, fuzzed by schemathesis: whatever arrives, no 5xx."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from procure import settings as settings_module
from tests.conftest import Databases
from tests.factories import NOW, submit
from web.app import create_app

TOKEN = "fuzz-token-0123456789abcdef0123456789"


@pytest.mark.parametrize("databases", ["sqlite"], indirect=True)
def test_the_api_never_answers_5xx(databases: Databases, tmp_path: Path) -> None:
    engine = databases.engine("sample")
    submit(engine)  # something to list, show and decide
    config = settings_module.load(
        database_url=engine.url.render_as_string(hide_password=False),
        home=tmp_path / "home",
        secret_key="s" * 40,
        now=NOW,
        api_token=TOKEN,
    )
    schema = schemathesis.openapi.from_asgi("/api/openapi.json", create_app(config, engine))
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {
        "/api/health",
        "/api/requests",
        "/api/requests/{ref}",
        "/api/requests/{ref}/decisions",
        "/api/people/{email}/pending",
    }
    calls: list[int] = []
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=30,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case: Any) -> None:
            for headers in ({"Authorization": f"Bearer {TOKEN}"}, {}):
                response = case.call(headers=headers)
                calls.append(response.status_code)
                case.validate_response(response, checks=[not_a_server_error])
                assert response.status_code < 500, (case.path, response.text[:500])

        fuzz()
    assert len(calls) > 100 and not [c for c in calls if c >= 500]
