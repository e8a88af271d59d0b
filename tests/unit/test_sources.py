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
