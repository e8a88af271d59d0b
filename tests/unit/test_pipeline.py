"""The pipeline file: the shipped default, `procure pipeline check`, safe conditions, install."""

from __future__ import annotations

import copy
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from models import pipeline
from models.audit import AuditEvent
from models.db import transaction
from models.errors import InputError
from models.pipeline import (
    CONDITION_NAMES,
    DEFAULT_PIPELINE,
    InformSpec,
    PipelineSpec,
    PipelineVersion,
    check_file,
    evaluate,
    parse_pipeline,
)
from procure.cli import main
from tests.factories import approve_all, show, submit

DEFAULT_TEXT = DEFAULT_PIPELINE.read_text(encoding="utf-8")


def context(**overrides: Any) -> dict[str, Any]:
    """A condition context as actions.condition_context builds it: one standard laptop."""
    data: dict[str, Any] = {
        "total": Decimal("949.00"),
        "currency": "EUR",
        "quantity": 1,
        "line_count": 1,
        "max_unit_price": Decimal("949.00"),
        "kind": "onboarding",
        "categories": ["laptop"],
        "skus": ["LAPTOP-STD-14"],
        "cost_centre": "CC-ENG",
        "department": "Engineering",
    }
    data.update(overrides)
    return data


def pipeline_text(stages: str, **header: Any) -> str:
    head = {"name": "custom", "version": 1, **header}
    lines = [f"{key}: {value}" for key, value in head.items()]
    return "\n".join(lines) + "\nstages:\n" + stages


def stage_yaml(**fields: Any) -> str:
    """One stage as a YAML list item; values are written as given (quote them yourself)."""
    body = {"id": "review", "name": "Review", "roles": "[it]", **fields}
    first, *rest = body.items()
    out = f"  - {first[0]}: {first[1]}\n"
    for key, value in rest:
        out += f"    {key}: {value}\n"
    return out


def with_stage(**fields: Any) -> str:
    """A pipeline whose first stage is fine and whose second (lines 7-9, then 10...) has `fields`.

    The fine first stage keeps each test about one mistake: when every stage is wrong the
    report also carries a bogus "no stages" line (see the test about that below).
    """
    return pipeline_text(stage_yaml(id="intake", name="Intake") + stage_yaml(**fields))


# ------------------------------------------------------------------ the shipped default


@pytest.fixture(scope="module")
def default_spec() -> PipelineSpec:
    return check_file(DEFAULT_PIPELINE)


def test_the_shipped_default_pipeline_loads_with_its_four_stages_in_order(
    default_spec: PipelineSpec,
) -> None:
    assert (default_spec.name, default_spec.version, default_spec.currency) == ("default", 1, "EUR")
    assert [s.id for s in default_spec.stages] == [
        "joint_review",
        "budget_owner",
        "finance",
        "management",
    ]
    # Each stage waits for the one before it.
    assert [default_spec.dependencies(s) for s in default_spec.stages] == [
        (),
        ("joint_review",),
        ("budget_owner",),
        ("finance",),
    ]
    calendar = default_spec.calendar
    assert (calendar.timezone, calendar.workdays) == (
        "Europe/Berlin",
        ("mon", "tue", "wed", "thu", "fri"),
    )
    assert (calendar.start.isoformat(), calendar.end.isoformat()) == ("08:00:00", "17:00:00")


@pytest.mark.parametrize(
    ("stage_id", "roles", "mode", "when", "sla_hours", "escalate_to", "inform"),
    [
        (
            "joint_review",
            ("it", "purchasing"),
            "all",
            None,
            16,
            "management",
            (InformSpec(role="hr", when="kind == 'onboarding'"),),
        ),
        ("budget_owner", ("budget_owner",), "any", None, 16, "finance", ()),
        ("finance", ("finance",), "any", "total >= 10000", 24, "management", ()),
        ("management", ("management",), "any", "total >= 50000", 40, None, ()),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_the_shipped_default_pipeline_declares_each_stage_as_documented(
    default_spec: PipelineSpec,
    stage_id: str,
    roles: tuple[str, ...],
    mode: str,
    when: str | None,
    sla_hours: int,
    escalate_to: str | None,
    inform: tuple[InformSpec, ...],
) -> None:
    stage = next(s for s in default_spec.stages if s.id == stage_id)
    assert stage.roles == roles
    assert stage.mode == mode
    assert stage.when == when
    assert stage.unless is None
    assert stage.sla_hours == sla_hours
    assert stage.escalate_to == escalate_to
    assert stage.inform == inform


# ------------------------------------------------------------------ applies() at the thresholds


@pytest.mark.parametrize(
    ("total", "finance", "management"),
    [
        # finance from 10,000.00, management from 50,000.00 (>=: the threshold itself counts)
        ("0.00", False, False),
        ("949.00", False, False),
        ("9999.99", False, False),
        ("10000.00", True, False),
        ("10000.01", True, False),
        ("49999.99", True, False),
        ("50000.00", True, True),
        ("1000000.00", True, True),
    ],
)
def test_stages_apply_from_their_thresholds(
    default_spec: PipelineSpec, total: str, finance: bool, management: bool
) -> None:
    ctx = context(total=Decimal(total))
    assert {s.id: s.applies(ctx) for s in default_spec.stages} == {
        "joint_review": True,
        "budget_owner": True,
        "finance": finance,
        "management": management,
    }


@pytest.mark.parametrize(
    ("expression", "amount", "holds"),
    [
        # A threshold with decimals compares exactly with the amount: a float 258.1 is a
        # little more than 258.10, and finance would be skipped at the threshold itself.
        ("total >= 258.1", "258.10", True),
        ("total >= 258.10", "258.09", False),
        ("total >= 10000.01", "10000.01", True),
        ("total > 10000.01", "10000.01", False),
        ("max_unit_price >= 999.99", "999.99", True),
        ("total >= 1.5e3", "1500.00", True),
        ("total * 0.1 >= 100.01", "1000.10", True),
        ("total == 0.3 - 0.1 - 0.2 + 258.1", "258.10", True),
    ],
)
def test_numbers_with_decimals_in_conditions_compare_exactly_with_amounts(
    expression: str, amount: str, holds: bool
) -> None:
    ctx = context(total=Decimal(amount), max_unit_price=Decimal(amount))
    assert evaluate(expression, ctx) is holds


@pytest.mark.parametrize(
    ("kind", "hr_informed"),
    [("onboarding", True), ("refresh", False), ("rollout", False), ("replacement", False)],
)
def test_hr_is_informed_of_the_joint_review_only_for_onboarding(
    default_spec: PipelineSpec, kind: str, hr_informed: bool
) -> None:
    (inform,) = default_spec.stages[0].inform
    assert inform.role == "hr"
    assert inform.when is not None
    assert evaluate(inform.when, context(kind=kind)) is hr_informed


@pytest.mark.parametrize(
    ("when", "unless", "ctx", "applies"),
    [
        (None, None, context(), True),
        ("true", None, context(), True),
        ("false", None, context(), False),
        (None, "kind == 'replacement'", context(kind="replacement"), False),
        (None, "kind == 'replacement'", context(kind="refresh"), True),
        ("total >= 1000", "'phone' in categories", context(total=Decimal("5000.00")), True),
        (
            "total >= 1000",
            "'phone' in categories",
            context(total=Decimal("5000.00"), categories=["laptop", "phone"]),
            False,
        ),
        ("quantity > 10 or max_unit_price >= 1500", None, context(quantity=11), True),
        ("quantity > 10 or max_unit_price >= 1500", None, context(quantity=10), False),
        ("department == 'Engineering' and currency == 'EUR'", None, context(), True),
        ("cost_centre.startswith('CC-')", None, context(cost_centre="FIN-1"), False),
        ("'LAPTOP-STD-14' in skus and line_count == 1", None, context(), True),
    ],
    ids=[
        "no-condition",
        "when-true",
        "when-false",
        "unless-holds",
        "unless-does-not-hold",
        "when-holds-unless-not",
        "when-and-unless-both-hold",
        "or-first-part-holds",
        "or-neither-part-holds",
        "and-both-parts-hold",
        "text-method-is-false",
        "membership-and-count",
    ],
)
def test_when_and_unless_decide_whether_a_stage_applies(
    when: str | None, unless: str | None, ctx: dict[str, Any], applies: bool
) -> None:
    fields: dict[str, Any] = {"when": when, "unless": unless}
    text = pipeline_text(
        stage_yaml(**{k: (f'"{v}"' if "'" in v else v) for k, v in fields.items() if v})
    )
    (stage,) = parse_pipeline(text, "custom.yaml").stages
    assert stage.applies(ctx) is applies


# ------------------------------------------------------------------ pipeline check


@pytest.mark.parametrize(
    ("text", "line", "field", "message"),
    [
        pytest.param(
            with_stage(roles="[it, wizard]"),
            9,
            "stages[1].roles",
            "unknown role 'wizard' (known: budget_owner, finance, hr, it, management, purchasing, requester)",
            id="unknown-role",
        ),
        pytest.param(
            with_stage(roles="[it, it]"),
            9,
            "stages[1].roles",
            "a role is listed twice",
            id="role-twice",
        ),
        pytest.param(
            with_stage(when="totl >= 10000"),
            10,
            "stages[1].when",
            "'totl' is undefined; the names a condition can use are: " + ", ".join(CONDITION_NAMES),
            id="unknown-name-in-condition",
        ),
        pytest.param(
            with_stage(when="kind == onboarding"),
            10,
            "stages[1].when",
            "'onboarding' is undefined",
            id="unquoted-text-in-condition",
        ),
        pytest.param(
            with_stage(when='"total >="'),
            10,
            "stages[1].when",
            "is not a valid expression",
            id="condition-syntax-error",
        ),
        pytest.param(
            with_stage(when="kind > 5"),
            10,
            "stages[1].when",
            "cannot be evaluated",
            id="condition-comparing-text-with-a-number",
        ),
        pytest.param(
            with_stage(when='""'),
            10,
            "stages[1].when",
            "must be an expression such as: total >= 10000",
            id="empty-condition",
        ),
        pytest.param(
            with_stage(when="total >= " + " + ".join(["1"] * 200)),
            10,
            "stages[1].when",
            "is longer than 500 characters",
            id="condition-too-long",
        ),
        pytest.param(
            with_stage(mode="some"),
            10,
            "stages[1].mode",
            "all",
            id="unknown-mode",
        ),
        pytest.param(
            with_stage(rolez="[it]"),
            10,
            "stages[1].rolez",
            "is not a known field (check the spelling)",
            id="misspelt-field",
        ),
        pytest.param(
            with_stage(sla_hours=0),
            10,
            "stages[1].sla_hours",
            "greater than or equal to 1",
            id="zero-sla",
        ),
        pytest.param(
            with_stage(escalate_to="ceo"),
            10,
            "stages[1].escalate_to",
            "unknown role 'ceo'",
            id="unknown-escalation-role",
        ),
        pytest.param(
            with_stage(inputs="[total, colour]"),
            10,
            "stages[1].inputs[1]",
            "colour",
            id="unknown-input",
        ),
        pytest.param(
            with_stage(inform="[{role: hr, when: kind == onboarding}]"),
            10,
            "stages[1].inform[0].when",
            "'onboarding' is undefined",
            id="unknown-name-in-inform-condition",
        ),
        pytest.param(
            with_stage(id="intake", name="Again"),
            7,
            "stages[1].id",
            "stage id 'intake' is used twice (also stages[0])",
            id="stage-id-twice",
        ),
        pytest.param(
            with_stage(after="[review]"),
            10,
            "stages[1].after[0]",
            "a stage cannot wait for itself",
            id="waits-for-itself",
        ),
        pytest.param(
            with_stage(after="[audit]"),
            10,
            "stages[1].after[0]",
            "'audit' is not a stage of this pipeline",
            id="waits-for-an-unknown-stage",
        ),
        pytest.param(
            with_stage(after="[later]") + stage_yaml(id="later", name="Later"),
            10,
            "stages[1].after[0]",
            "'later' must be a stage listed before this one",
            id="waits-for-a-later-stage",
        ),
        pytest.param(
            "version: 1\nstages:\n" + stage_yaml(),
            1,
            "name",
            "is required",
            id="missing-name",
        ),
        pytest.param(
            "name: custom\nversion: 1\nstages: []\n",
            3,
            "stages",
            "needs at least 1 entry",
            id="no-stages",
        ),
        pytest.param(
            pipeline_text(stage_yaml(), version=0),
            2,
            "version",
            "greater than or equal to 1",
            id="version-zero",
        ),
        pytest.param(
            pipeline_text(stage_yaml(), currency="EURO"),
            3,
            "currency",
            "unknown currency 'EURO'",
            id="unknown-currency",
        ),
        pytest.param(
            "- just\n- a list\n",
            1,
            None,
            "a pipeline file must be a mapping with name, version and stages",
            id="not-a-mapping",
        ),
        pytest.param(
            "name: custom\nname: other\nversion: 1\nstages:\n" + stage_yaml(),
            2,
            None,
            "duplicate key 'name' (first on line 1)",
            id="duplicate-key",
        ),
    ],
)
def test_pipeline_check_names_the_file_line_and_field_of_each_error(
    tmp_path: Path, text: str, line: int | None, field: str | None, message: str
) -> None:
    path = tmp_path / "my-pipeline.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError) as caught:
        check_file(path)
    (problem,) = caught.value.problems
    assert problem.source == str(path)
    assert (problem.line, problem.field) == (line, field)
    assert message in problem.message


def test_pipeline_check_reports_every_error_at_once(tmp_path: Path) -> None:
    text = with_stage(roles="[wizard]") + stage_yaml(
        id="money", name="Money", roles="[finance]", when="foo >= 10"
    )
    path = tmp_path / "two-errors.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError) as caught:
        check_file(path)
    assert [(p.line, p.field) for p in caught.value.problems] == [
        (9, "stages[1].roles"),
        (13, "stages[2].when"),
    ]


def test_pipeline_check_does_not_claim_the_stages_are_missing_when_each_has_an_error(
    tmp_path: Path,
) -> None:
    # Three stages, each with its own mistake: the report names those three, and nothing
    # says the pipeline has no stages (it has three).
    text = pipeline_text(
        stage_yaml(roles="[wizard]")
        + stage_yaml(id="money", name="Money", roles="[finance]", when="foo >= 10")
        + stage_yaml(id="later", name="Later", roles="[finance]", when='"().__class__"')
    )
    path = tmp_path / "all-stages-wrong.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError) as caught:
        check_file(path)
    reported = [(p.field, p.message) for p in caught.value.problems]
    assert [field for field, _ in reported] == [
        "stages[0].roles",
        "stages[1].when",
        "stages[2].when",
    ], reported


def test_pipeline_check_names_a_missing_file() -> None:
    with pytest.raises(InputError, match=r"no-such-pipeline\.yaml: no such file"):
        check_file("no-such-pipeline.yaml")


def test_the_procure_pipeline_check_command_accepts_the_default_and_lists_its_stages(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["pipeline", "check", str(DEFAULT_PIPELINE)]) == 0
    out = capsys.readouterr().out
    assert f"{DEFAULT_PIPELINE}: ok — pipeline default@1, 4 stages" in out
    assert "finance: finance when total >= 10000 after budget_owner" in out
    assert "management: management when total >= 50000 after finance" in out


def test_the_procure_pipeline_check_command_exits_2_and_names_the_line_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(with_stage(roles="[it, wizard]"), encoding="utf-8")
    assert main(["pipeline", "check", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:9: stages[1].roles: unknown role 'wizard'" in err


# ------------------------------------------------------------------ conditions in a sandbox


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        (
            "().__class__.__mro__",
            "is not allowed: access to attribute '__class__' of 'tuple' object is unsafe",
        ),
        (
            "''.__class__",
            "is not allowed: access to attribute '__class__' of 'str' object is unsafe",
        ),
        ("''.__class__.__mro__[1].__subclasses__()", "is unsafe"),
        # Conditions get no globals at all: Jinja's helpers are not there to climb through.
        ("cycler.__init__.__globals__", "access to attribute '__init__'"),
        ("joiner.__init__.__globals__['os']", "access to attribute '__init__'"),
        ("namespace.__init__.__globals__", "access to attribute '__init__'"),
        ("lipsum.__globals__", "'lipsum' is undefined"),
        ("self.__init__.__globals__", "access to attribute '__init__'"),
        (
            "total.__class__",
            "is not allowed: access to attribute '__class__' of 'Decimal' object is unsafe",
        ),
        # ... and only a few harmless filters.
        ("kind|attr('__class__')", "No filter named 'attr'"),
        ("'{0.__class__}'.format(kind)", "is not allowed: access to attribute '__class__'"),
        ("'%s'|format(kind.__class__)", "No filter named 'format'"),
    ],
)
def test_sandbox_escapes_are_refused_when_the_pipeline_loads(expression: str, message: str) -> None:
    text = with_stage(when=f'"{expression}"')
    with pytest.raises(InputError) as caught:
        parse_pipeline(text, "evil.yaml")
    (problem,) = caught.value.problems
    assert problem.field == "stages[1].when"
    assert message in problem.message


@pytest.mark.parametrize(
    "expression",
    [
        "categories.append('phone')",
        "skus.pop()",
        "categories.clear() or true",
        "categories.sort()",
        "dict(a=1).update(b=2)",
    ],
)
def test_conditions_cannot_change_the_request_context(expression: str) -> None:
    ctx = context(categories=["monitor", "laptop"], skus=["MON-27", "LAPTOP-STD-14"])
    before = copy.deepcopy(ctx)
    with pytest.raises(
        ValueError, match=r"is not allowed: access to attribute .* is unsafe|'dict' is undefined"
    ):
        evaluate(expression, ctx)
    assert ctx == before


def test_a_condition_cannot_open_a_file(tmp_path: Path) -> None:
    target = tmp_path / "pwned"
    with pytest.raises(ValueError, match="'open' is undefined"):
        evaluate(f"open('{target}', 'w')", context())
    with pytest.raises(ValueError, match="'__import__' is undefined"):
        evaluate("__import__('os').system('touch " + str(target) + "')", context())
    assert not target.exists()


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        # No Jinja helpers and no attribute-reading filters reach a condition.
        ("joiner is defined", False),
        ("cycler is defined", False),
        ("range is defined", False),
        ("kind is defined", True),
    ],
)
def test_sandbox_helpers_evaluate_harmlessly(expression: str, expected: bool) -> None:
    assert evaluate(expression, context()) is expected


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        # Both are evaluated against sample requests while the file loads, so they never
        # reach a running pipeline: a huge range and a huge string.
        pytest.param("range(10**9)|length > 0", "'range' is undefined", id="huge-range"),
        # 100 MB of 'x' for every evaluation (10**9 takes a gigabyte and half a minute).
        pytest.param(
            "'x' * 10**8 == ''", "may not build strings or lists that long", id="huge-string"
        ),
        pytest.param(
            "['x'] * 10**6 == []", "may not build strings or lists that long", id="huge-list"
        ),
        pytest.param("total ** 1000 > 0", "exponents above 64", id="huge-power"),
        pytest.param("'a'|center(10**9) == ''", "No filter named 'center'", id="huge-center"),
    ],
)
def test_resource_abuse_in_a_condition_is_refused_when_the_pipeline_loads(
    expression: str, message: str
) -> None:
    text = with_stage(when=f'"{expression}"')
    with pytest.raises(InputError) as caught:
        parse_pipeline(text, "abuse.yaml")
    (problem,) = caught.value.problems
    assert problem.field == "stages[1].when"
    assert message in problem.message


@pytest.mark.parametrize(
    ("expression", "unknown"),
    [
        ("totl >= 10000", "totl"),
        ("cost_center == 'CC-ENG'", "cost_center"),
        ("kind == onboarding", "onboarding"),
        ("config", "config"),
        ("request.total > 1", "request"),
    ],
)
def test_an_unknown_name_in_a_condition_is_named_with_the_names_that_exist(
    expression: str, unknown: str
) -> None:
    with pytest.raises(ValueError) as caught:
        evaluate(expression, context())
    message = str(caught.value)
    assert f"'{unknown}' is undefined" in message
    assert "the names a condition can use are: " + ", ".join(CONDITION_NAMES) in message
    assert "text values need quotes, e.g. kind == 'onboarding'" in message


# ------------------------------------------------------------------ install


def _versions(session: Session) -> list[tuple[str, int, bool]]:
    rows = session.exec(select(PipelineVersion).order_by(col(PipelineVersion.id))).all()
    return [(r.name, r.version, r.active) for r in rows]


def _audit_count(session: Session) -> int:
    return session.exec(select(func.count()).select_from(AuditEvent)).one()


FINANCE_FROM_100 = DEFAULT_TEXT.replace("version: 1", "version: 2", 1).replace(
    "when: total >= 10000", "when: total >= 100", 1
)


def test_the_finance_from_100_pipeline_differs_from_the_default_only_there() -> None:
    spec = parse_pipeline(FINANCE_FROM_100, "finance-100.yaml")
    assert spec.version == 2
    assert [s.when for s in spec.stages] == [None, None, "total >= 100", "total >= 50000"]


def test_installing_the_same_text_twice_is_a_no_op(engine: Engine) -> None:
    with transaction(engine) as session:
        audit_before = _audit_count(session)
        # The sample database was set up with the default pipeline already.
        row, changed = pipeline.install(
            session, text=DEFAULT_TEXT, source="default.yaml", actor="tests"
        )
        assert (row.name, row.version, row.active, changed) == ("default", 1, True, False)
        again, changed_again = pipeline.install(
            session, text=DEFAULT_TEXT, source="elsewhere.yaml", actor="someone else"
        )
        assert (again.id, changed_again) == (row.id, False)
    with transaction(engine, readonly=True) as session:
        assert _versions(session) == [("default", 1, True)]
        assert _audit_count(session) == audit_before


def test_a_new_text_deactivates_the_old_version_and_is_audited(engine: Engine) -> None:
    with transaction(engine) as session:
        audit_before = _audit_count(session)
        row, changed = pipeline.install(
            session, text=FINANCE_FROM_100, source="finance-100.yaml", actor="tests"
        )
        assert changed is True
    with transaction(engine) as session:
        again, changed_again = pipeline.install(
            session, text=FINANCE_FROM_100, source="finance-100.yaml", actor="tests"
        )
        assert (again.id, changed_again) == (row.id, False)
    with transaction(engine, readonly=True) as session:
        assert _versions(session) == [("default", 1, False), ("default", 2, True)]
        active_row, spec = pipeline.active(session)
        assert (active_row.id, spec.stages[2].when) == (row.id, "total >= 100")
        events = session.exec(
            select(AuditEvent).where(AuditEvent.seq > audit_before).order_by(col(AuditEvent.seq))
        ).all()
    assert [(e.entity, e.entity_id, e.action, e.actor) for e in events] == [
        ("pipeline", "default@2", "install", "tests")
    ]


def test_an_invalid_text_installs_nothing(engine: Engine) -> None:
    broken = DEFAULT_TEXT.replace("when: total >= 10000", "when: totl >= 10000", 1)
    with pytest.raises(InputError, match="'totl' is undefined"), transaction(engine) as session:
        pipeline.install(session, text=broken, source="broken.yaml", actor="tests")
    with transaction(engine, readonly=True) as session:
        assert _versions(session) == [("default", 1, True)]


def test_requests_keep_the_pipeline_they_were_submitted_under(engine: Engine) -> None:
    # One standard laptop: 949.00, below the default's finance threshold and above 100.
    first = submit(engine, idempotency_key="before-the-change")
    with transaction(engine) as session:
        pipeline.install(session, text=FINANCE_FROM_100, source="finance-100.yaml", actor="tests")
    second = submit(engine, idempotency_key="after-the-change")

    before, after = show(engine, first), show(engine, second)
    assert (before["pipeline"], after["pipeline"]) == ("default@1", "default@2")
    assert {s["stage"]: s["status"] for s in before["stages"]}["finance"] == "skipped"
    assert {s["stage"]: s["status"] for s in after["stages"]}["finance"] == "waiting"

    # Deciding after the change still follows each request's own pipeline.
    def stages_decided(detail: dict[str, Any]) -> list[str]:
        return [s["stage"] for s in detail["stages"] for _ in s["decisions"]]

    done_first, done_second = approve_all(engine, first), approve_all(engine, second)
    assert (done_first["status"], done_second["status"]) == ("approved", "approved")
    assert stages_decided(done_first) == ["joint_review", "joint_review", "budget_owner"]
    assert stages_decided(done_second) == [
        "joint_review",
        "joint_review",
        "budget_owner",
        "finance",
    ]


# ------------------------------------------------------------------ offboarding


@pytest.mark.parametrize(
    ("offboarding_yaml", "field", "message"),
    [
        pytest.param(
            "  return_lead_workdays: 61\n",
            "offboarding.return_lead_workdays",
            "less than or equal to 60",
            id="too-long",
        ),
        pytest.param(
            "  return_lead_workdays: -1\n",
            "offboarding.return_lead_workdays",
            "greater than or equal to 0",
            id="negative",
        ),
        pytest.param(
            "  lead_days: 14\n", "offboarding.lead_days", "is not a known field", id="unknown"
        ),
    ],
)
def test_a_bad_offboarding_lead_in_a_pipeline_file_is_named_with_its_line_and_field(
    offboarding_yaml: str, field: str, message: str
) -> None:
    text = (
        "name: custom\n"
        "version: 1\n"
        "offboarding:\n"
        f"{offboarding_yaml}"
        "stages:\n"
        "  - {id: review, name: Review, roles: [it]}\n"
    )
    with pytest.raises(InputError) as caught:
        parse_pipeline(text, "custom.yaml")
    (problem,) = caught.value.problems
    assert (problem.source, problem.line, problem.field) == ("custom.yaml", 4, field)
    assert message in problem.message


def test_a_pipeline_without_offboarding_asks_leavers_ten_working_days_ahead() -> None:
    text = "name: custom\nversion: 1\nstages:\n  - {id: review, name: Review, roles: [it]}\n"
    assert parse_pipeline(text, "custom.yaml").offboarding.return_lead_workdays == 10
