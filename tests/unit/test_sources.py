"""Reading files: where a problem is, for the cases no other test file covers."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.errors import InputError
from models.fields import single_line
from models.pipeline import check_file
from models.sources import read_text


def test_a_utf16_file_is_named_as_such(tmp_path: Path) -> None:
    path = tmp_path / "req.yaml"
    path.write_bytes("kind: onboarding\n".encode("utf-16"))
    with pytest.raises(InputError, match=r"req.yaml:1: is UTF-16 text: save it as UTF-8"):
        read_text(path)


def test_an_unclosed_quote_points_at_where_it_opened(tmp_path: Path) -> None:
    from models.sources import parse_yaml

    text = 'kind: onboarding\njustification: "never closed\nlines: []\n\n\n'
    with pytest.raises(InputError) as caught:
        parse_yaml(text, "req.yaml")
    (problem,) = caught.value.problems
    assert problem.line == 2
    assert "quoted scalar (line 2)" in problem.message


@pytest.mark.parametrize(
    "char",
    ["\u200b", "\u2060", "\ufeff", "\u202e"],
    ids=["zero-width space", "word joiner", "bom", "rtl override"],
)
def test_invisible_characters_are_refused_in_text(char: str) -> None:
    with pytest.raises(
        ValueError, match=rf"invisible character \(U\+{ord(char):04X}\) at position 5"
    ):
        single_line(f"paul{char}@example.com")


def test_emoji_with_joiners_and_accents_stay_allowed() -> None:
    text = "Zoë 👩‍💻 Ørsted"
    assert single_line(text) == text


def test_a_pipeline_file_must_be_yaml(tmp_path: Path) -> None:
    path = tmp_path / "pipeline.txt"
    path.write_text("name: x\n", encoding="utf-8")
    with pytest.raises(
        InputError, match=r"pipeline.txt: a pipeline file is YAML: name it .yaml or .yml"
    ):
        check_file(path)


def test_a_line_naming_an_agreement_and_individual_sourcing_is_refused_as_contradictory() -> None:
    from pydantic import ValidationError

    from models.requests import LineCreate

    with pytest.raises(ValidationError, match="names an agreement, but sourcing says individual"):
        LineCreate.model_validate(
            {"sku": "LAPTOP-STD-14", "quantity": 1, "sourcing": "individual", "agreement": "FA-1"}
        )


def test_fields_that_fail_leave_the_rest_of_a_file_to_check_its_references() -> None:
    from models.errors import FieldErrors
    from models.org import OrgFile
    from models.sources import parse_yaml, valid, validate

    text = (
        "people:\n"
        "  - zoe.new@example.com\n"  # 2: not a mapping: keeps its place, every field left out
        "  - {email: Ann@Example.com, name: Ann, roles: [admin]}\n"  # 3: roles fail
        "delegations:\n"
        "  - {delegator: ann@example.com, delegate: bob, from: 2026-12-01, to: 2026-12-24}\n"
    )
    doc = parse_yaml(text, "org.yaml")
    with pytest.raises(FieldErrors) as caught:
        validate(OrgFile, doc.data, doc)
    assert [(p.line, p.field) for p in caught.value.problems] == [
        (2, "people[0]"),
        (3, "people[1].roles[0]"),
        (5, "delegations[0].delegate"),
    ]
    org = caught.value.partial
    nobody, ann = org.people
    assert not valid(nobody, "email") and not valid(nobody, "name")
    assert (ann.email, valid(ann, "email"), valid(ann, "roles")) == ("ann@example.com", True, False)
    (delegation,) = org.delegations
    assert valid(delegation, "delegator", "starts_on", "ends_on")
    assert not valid(delegation, "delegate") and delegation.delegate is None
    assert str(delegation.starts_on) == "2026-12-01"  # validated: a date, read by its alias


def test_a_rule_of_the_whole_model_that_still_fails_leaves_nothing_to_check() -> None:
    from models.calendar import Calendar
    from models.errors import FieldErrors
    from models.sources import parse_yaml, validate

    doc = parse_yaml("{start: '18:00', end: '08:00', workdays: [mon, someday]}", "cal.yaml")
    with pytest.raises(FieldErrors) as caught:
        validate(Calendar, doc.data, doc)
    assert caught.value.partial is None  # the day still ends before it starts


def test_field_errors_travel_as_the_plain_error_without_their_partial_input() -> None:
    import pickle

    from models.errors import FieldErrors, Problem

    problems = [Problem("is required", "hr.csv", 3, "name")]
    error = FieldErrors(problems, lambda: object())  # a closure: it would not pickle
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is InputError and copy.problems == problems


def test_a_check_that_trips_over_the_partial_input_leaves_the_field_errors_alone() -> None:
    """A reference check that reads a field left out of the partial input (None) must not turn
    bad input into a traceback: the field errors come alone, as they did before."""
    from models.errors import FieldErrors, Problem, problems_of

    problems = [Problem("is required", "org.yaml", 4, "people[0].email")]
    error = FieldErrors(problems, lambda: {"people": [{"email": None}]})

    def careless(org: dict) -> list[Problem]:
        return [Problem(f"unknown person {p['email'].lower()}") for p in org["people"]]

    assert error.with_checks(careless).problems == problems

    def refusing(org: dict) -> None:  # a check that raises, as check_certificates does
        raise InputError([Problem("unknown cost centre CC-X", "org.yaml", 9, "cost_centre")])

    found = error.with_checks(lambda org: problems_of(lambda: refusing(org))).problems
    assert [str(p) for p in found] == [
        "org.yaml:4: people[0].email: is required",
        "org.yaml:9: cost_centre: unknown cost centre CC-X",
    ]


# ------------------------------------------------------------------ a person's `active`

# What one value reads as in each kind of organisation file: YAML and JSON write it as they
# write it (a boolean, a number, text), a CSV cell is always text. None: the file does not say.
# fmt: off
ACTIVE_VALUES = [
    pytest.param("true", "true", "true", True, id="true"),
    pytest.param("false", "false", "false", False, id="false"),
    pytest.param("yes", '"yes"', "Yes", True, id="yes"),
    pytest.param("no", '"no"', "NO", False, id="no"),
    pytest.param("'off'", '"off"', "off", False, id="off"),
    pytest.param("1", "1", "1", True, id="one"),
    pytest.param("0", "0", "0", False, id="zero"),
    pytest.param("''", '""', "", None, id="empty"),
    pytest.param("~", "null", " ", None, id="null"),
]
# fmt: on


def _org_files(tmp_path: Path, yaml_value: str, json_value: str, csv_value: str) -> list[Path]:
    files = {
        "org.yaml": f"people:\n  - {{email: a@example.com, name: A, active: {yaml_value}}}\n",
        "org.json": f'{{"people": [{{"email": "a@example.com", "name": "A", "active": {json_value}}}]}}',
        "org.csv": f"email,name,active\na@example.com,A,{csv_value}\n",
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    return [tmp_path / name for name in files]


@pytest.mark.parametrize(("yaml_value", "json_value", "csv_value", "expected"), ACTIVE_VALUES)
def test_active_reads_the_same_in_yaml_json_and_csv(
    tmp_path: Path, yaml_value: str, json_value: str, csv_value: str, expected: bool | None
) -> None:
    from models.org import read_org_file

    for path in _org_files(tmp_path, yaml_value, json_value, csv_value):
        org, _ = read_org_file(path)
        assert org.people[0].active is expected, path.name


@pytest.mark.parametrize(
    ("yaml_value", "json_value", "csv_value", "shown"),
    [
        pytest.param("maybe", '"maybe"', "maybe", "maybe", id="a word"),
        pytest.param("2", "2", "2", "2", id="two"),
        pytest.param("1.0", "1.0", "1.0", "1.0", id="a fraction"),
    ],
)
def test_an_active_that_is_neither_true_nor_false_is_refused_alike(
    tmp_path: Path, yaml_value: str, json_value: str, csv_value: str, shown: str
) -> None:
    from models.org import read_org_file

    for path in _org_files(tmp_path, yaml_value, json_value, csv_value):
        with pytest.raises(InputError) as refused:
            read_org_file(path)
        line = 1 if path.suffix == ".json" else 2
        assert str(refused.value) == (
            f"{path}:{line}: people[0].active: expected true or false (or yes/no, on/off, "
            f"1/0), not {shown!r}"
        ), path.name
