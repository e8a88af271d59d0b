"""Reading input files (YAML, JSON, CSV) so that every error names the file, line and field.

YAML and JSON numbers with a decimal point become Decimal (never float), duplicate keys are
refused, and a map from each value's path to its line lets validation errors point at the
line that holds the wrong value.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from pathlib import Path
from types import NoneType, UnionType
from typing import Any, TypeVar, Union, get_args, get_origin
from weakref import WeakKeyDictionary

import yaml
from pydantic import BaseModel, ValidationError, create_model

from models.errors import FieldErrors, InputError, Problem, in_file_order

MAX_FILE_BYTES = 50 * 1024 * 1024
Path_ = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)


@dataclass
class Document:
    """Parsed content of one file, with the line of every value path."""

    source: str
    data: Any
    lines: dict[Path_, int] = field(default_factory=dict)
    table: bool = False  # CSV: a row is named by its line, not by its index as well
    columns: tuple[str, ...] = ()  # CSV: the header's columns (a row leaves out its empty cells)

    def line_of(self, path: Path_) -> int | None:
        """The line of the value at path, or of its nearest enclosing value."""
        while True:
            if path in self.lines:
                return self.lines[path]
            if not path:
                return None
            path = path[:-1]

    def problem(self, path: Path_, message: str) -> Problem:
        line = self.line_of(path)
        if self.table and line is not None and path and isinstance(path[0], int):
            path = path[1:]  # FILE:21: serial, not FILE:21: [19].serial
        return Problem(message, source=self.source, line=line, field=dotted(path))


def dotted(path: Path_) -> str | None:
    """('lines', 0, 'quantity') -> 'lines[0].quantity'."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or None


class _Loader(yaml.SafeLoader):
    """A safe YAML loader: decimals as Decimal, duplicate keys, bad dates and aliases refused."""

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        # Aliases (*name) can build recursive or exponentially large documents from a few
        # bytes, and no procure file needs them.
        if self.check_event(yaml.events.AliasEvent):
            event = self.get_event()
            raise yaml.composer.ComposerError(
                None,
                None,
                f"aliases (*{event.anchor}) are not supported: write the value out",
                event.start_mark,
            )
        return super().compose_node(parent, index)


def _construct_decimal(loader: _Loader, node: yaml.ScalarNode) -> Any:
    text = str(loader.construct_scalar(node)).replace("_", "")
    try:
        return Decimal(text)
    except InvalidOperation:
        raise yaml.constructor.ConstructorError(
            None, None, f"not a number: {text!r}", node.start_mark
        ) from None


def _construct_mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"duplicate key {key!r} (first on line {seen[key]})",
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark.line + 1
    loader.flatten_mapping(node)
    return dict(loader.construct_pairs(node, deep=deep))


def _construct_timestamp(loader: _Loader, node: yaml.ScalarNode) -> Any:
    try:
        return yaml.constructor.SafeConstructor.construct_yaml_timestamp(loader, node)
    except ValueError:
        raise yaml.constructor.ConstructorError(
            None, None, f"not a valid date: {node.value!r}", node.start_mark
        ) from None


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _construct_timestamp)
_Loader.add_constructor("tag:yaml.org,2002:float", _construct_decimal)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _node_lines(node: yaml.Node, path: Path_, out: dict[Path_, int]) -> None:
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node)
            _node_lines(value_node, (*path, key), out)
            # A value on a later line than its key: errors about the key itself point at the key.
            out.setdefault((*path, key), key_node.start_mark.line + 1)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _node_lines(item, (*path, index), out)


def read_text(path: Path | str, *, label: str | None = None) -> tuple[str, str]:
    """Read a UTF-8 text file; returns (label, text). Errors name the file."""
    p = Path(path)
    source = label or str(path)
    try:
        size = p.stat().st_size
    except FileNotFoundError:
        raise InputError(Problem("no such file", source=source)) from None
    except OSError as exc:
        raise InputError(Problem(f"cannot read: {exc.strerror}", source=source)) from None
    if p.is_dir():
        raise InputError(Problem("is a directory, not a file", source=source))
    if size > MAX_FILE_BYTES:
        raise InputError(
            Problem(f"too large ({size:,} bytes; at most {MAX_FILE_BYTES:,})", source=source)
        )
    raw = p.read_bytes()
    return source, decode(raw, source)


def decode(raw: bytes, source: str) -> str:
    """Bytes to text: UTF-8 (a BOM is allowed); anything else is named with its line."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise InputError(Problem("is UTF-16 text: save it as UTF-8", source, 1))
    if b"\x00" in raw:
        line = raw[: raw.index(b"\x00")].count(b"\n") + 1
        raise InputError(Problem("contains a NUL byte: this is not a text file", source, line))
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise InputError(
            Problem(f"is not UTF-8 text (byte 0x{raw[exc.start]:02x})", source, line)
        ) from None


def parse_yaml(text: str, source: str) -> Document:
    """Parse YAML (one document) with line positions."""
    loader = None
    try:
        loader = _Loader(text)
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow, e.g. ESC
        where = text[: exc.position].count("\n") + 1
        raise InputError(
            Problem(f"invalid YAML: character U+{exc.character:04X} is not allowed", source, where)
        ) from None
    except yaml.MarkedYAMLError as exc:
        problem_line = exc.problem_mark.line + 1 if exc.problem_mark is not None else None
        context_line = exc.context_mark.line + 1 if exc.context_mark is not None else None
        context = exc.context or ""
        line: int | None
        if context and context_line is not None and context_line != problem_line:
            message = f"{context} (line {context_line}): {exc.problem} (line {problem_line})"
            # An unclosed quote or bracket is found where YAML gave up (often the end of the
            # file): point at where it opened. Other errors are where YAML found them.
            line = context_line if isinstance(exc, yaml.scanner.ScannerError) else problem_line
        else:
            message = " ".join(str(part) for part in (context, exc.problem) if part)
            line = problem_line or context_line
        raise InputError(Problem(f"invalid YAML: {message}", source, line)) from None
    except yaml.YAMLError as exc:
        raise InputError(Problem(f"invalid YAML: {exc}", source)) from None
    finally:
        if loader is not None:
            loader.dispose()
    lines: dict[Path_, int] = {}
    if node is not None:
        _node_lines(node, (), lines)
    return Document(source, data, lines)


def _json_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def parse_json(text: str, source: str) -> Document:
    """Parse JSON (numbers with a point as Decimal) with line positions where they can be found."""
    try:
        data = json.loads(
            text,
            parse_float=Decimal,
            parse_constant=_refuse_constant,
            object_pairs_hook=_json_pairs,
        )
    except json.JSONDecodeError as exc:
        raise InputError(Problem(f"invalid JSON: {exc.msg}", source, exc.lineno)) from None
    except ValueError as exc:
        raise InputError(
            Problem(f"invalid JSON: {exc}", source, _json_error_line(text, exc))
        ) from None
    lines: dict[Path_, int] = {}
    try:  # JSON is (nearly) YAML: borrow its positions; without them errors still name the field.
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if node is not None:
            _node_lines(node, (), lines)
    except yaml.YAMLError:
        lines = {}
    return Document(source, data, lines)


def _json_error_line(text: str, exc: ValueError) -> int | None:
    """The line of a duplicate key or a NaN/Infinity, which json reports without a position."""
    message = str(exc)
    if message.startswith("duplicate key"):
        try:
            parse_yaml(text, "")  # the YAML loader refuses duplicate keys with their line
        except InputError as dup:
            return dup.problems[0].line
        return None
    found = re.search(r'(?<![\w"])(-?Infinity|NaN)(?![\w"])', text)
    return text[: found.start()].count("\n") + 1 if found else None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number procure accepts")


def parse_csv(text: str, source: str, *, required: set[str], known: set[str]) -> Document:
    """Parse CSV with a header row into a list of dicts; data is [row, ...], lines per row/column."""
    try:
        dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    reader = csv.reader(io.StringIO(text, newline=""), dialect)
    try:
        header = next(reader)
    except StopIteration:
        raise InputError(Problem("is empty: expected a header row", source, 1)) from None
    except csv.Error as exc:
        raise InputError(Problem(f"invalid CSV: {exc}", source, 1)) from None
    columns = [h.strip().lower() for h in header]
    problems = []
    missing = sorted(required - set(columns))
    if missing:
        problems.append(Problem(f"missing column(s): {', '.join(missing)}", source, 1))
    unknown = [c for c in columns if c not in known]
    if unknown:
        problems.append(
            Problem(
                f"unknown column(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})",
                source,
                1,
            )
        )
    if len(set(columns)) != len(columns):
        problems.append(Problem("a column name appears twice", source, 1))
    if problems:
        raise InputError(problems)
    rows: list[dict[str, Any]] = []
    lines: dict[Path_, int] = {}
    try:
        for record in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in record):
                continue
            if len(record) != len(columns):
                problems.append(
                    Problem(
                        f"has {len(record)} fields, the header has {len(columns)}", source, line
                    )
                )
                continue
            index = len(rows)
            rows.append({c: v for c, v in zip(columns, record, strict=True) if v.strip() != ""})
            lines[(index,)] = line
    except csv.Error as exc:
        problems.append(Problem(f"invalid CSV: {exc}", source, reader.line_num))
    if problems:
        raise InputError(problems)
    return Document(source, rows, lines, table=True, columns=tuple(columns))


def load_document(path: Path | str, **csv_columns: Any) -> Document:
    """Read and parse a file by its extension (.yaml/.yml, .json, .csv)."""
    source, text = read_text(path)
    suffix = Path(path).suffix.lower()
    if suffix in (".yaml", ".yml"):
        return parse_yaml(text, source)
    if suffix == ".json":
        return parse_json(text, source)
    if suffix == ".csv":
        if not csv_columns:
            raise InputError(Problem("CSV is not accepted for this kind of file", source))
        return parse_csv(text, source, **csv_columns)
    raise InputError(
        Problem(f"unknown file type {suffix or '(none)'!r}: use .yaml, .json or .csv", source)
    )


def validate(model: type[M], data: Any, doc: Document, base: Path_ = ()) -> M:
    """Validate data against a pydantic model; errors name file, line and field. They come as
    FieldErrors holding the valid part (salvage) for the checks of references that can run on it."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = in_file_order(validation_problems(exc, doc, base))
        raise FieldErrors(problems, lambda: salvage(model, data)) from None


# The fields each partial model (made by _lenient) leaves out because their values failed.
_FAILED: WeakKeyDictionary[type[BaseModel], frozenset[str]] = WeakKeyDictionary()


def valid(obj: BaseModel, *fields: str) -> bool:
    """Whether these fields of a model, perhaps a partial one (salvage), hold validated values."""
    return _FAILED.get(type(obj), frozenset()).isdisjoint(fields)


def salvage(model: type[M], data: Any) -> M | None:
    """The part of data that validates: the model with each failed value left out (None, which
    valid() tells from a None written in the file), the valid items of a list of models kept in
    place, recursively. None when data is not a mapping or cannot be made valid this way (a
    model-wide rule that still fails)."""
    if not isinstance(data, dict):
        return None
    data = dict(data)
    names: dict[Any, str] = {}
    for field_name, info in model.model_fields.items():
        names[field_name] = field_name
        if info.alias:
            names[info.alias] = field_name
    failed: set[str] = set()
    tried: set[str] = set()
    while True:  # each round leaves a field out or salvages its items; both end
        try:
            return _lenient(model, frozenset(failed)).model_validate(data)
        except ValidationError as exc:
            errors = exc.errors(include_url=False)
        except Exception:  # a rule of the model tripping over a value left out
            return None
        progress = False
        for key in dict.fromkeys(_loc(e)[0] for e in errors if _loc(e)):
            name = names.get(key)
            if key not in data:  # a required field that is missing: it stays out
                if name is not None and name not in failed:
                    failed.add(name)
                    progress = True
                continue
            if name is None:  # not a field of the model
                del data[key]
                progress = True
                continue
            if name not in tried:
                tried.add(name)
                inner = [_loc(e)[1:] for e in errors if _loc(e)[:1] == (key,)]
                kept = _salvage_inner(model.model_fields[name].annotation, data[key], inner)
                if kept is not None:
                    data[key] = kept
                    progress = True
                    continue
            del data[key]
            failed.add(name)
            progress = True
        if not progress:
            return None


def _salvage_inner(annotation: Any, value: Any, locs: list[Path_]) -> Any:
    """A nested model, or a list of models, with its failed parts salvaged; None if it has none."""
    args = get_args(annotation)
    if get_origin(annotation) in (Union, UnionType):  # X | None
        options = [a for a in args if a is not NoneType]
        if len(options) != 1:
            return None
        return _salvage_inner(options[0], value, locs)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return salvage(annotation, value)
    item = args[0] if get_origin(annotation) in (list, tuple) and args else None
    if len(args) > 1 and args[1] is not Ellipsis:
        item = None  # a fixed-length tuple: not a list of models
    if not (isinstance(item, type) and issubclass(item, BaseModel) and isinstance(value, list)):
        return None
    items = list(value)
    for index in sorted({loc[0] for loc in locs if loc and isinstance(loc[0], int)}):
        if 0 <= index < len(items):
            # An item that is not even a mapping keeps its place, with every field left out.
            items[index] = (
                salvage(item, items[index])
                or _lenient(item, frozenset(item.model_fields)).model_construct()
            )
    return items


@lru_cache(maxsize=256)
def _lenient(model: type[M], failed: frozenset[str]) -> type[M]:
    """The model with these fields optional and None by default (their values failed)."""
    if not failed:
        return model
    partial = create_model(  # type: ignore[call-overload]
        model.__name__,
        __base__=model,
        __module__=model.__module__,
        **{name: (Any, None) for name in failed},
    )
    _FAILED[partial] = failed
    return partial


def validation_problems(exc: ValidationError, doc: Document, base: Path_ = ()) -> list[Problem]:
    errors = exc.errors(include_url=False)
    locs = [_loc(e) for e in errors]
    problems = []
    for error, loc in zip(errors, locs, strict=True):
        # A list whose items all failed is "too short" only because of them: say what is wrong
        # with the items, not that the list is missing.
        if error["type"] == "too_short" and any(
            o[: len(loc)] == loc and len(o) > len(loc) for o in locs
        ):
            continue
        problems.append(doc.problem((*base, *loc), _message(error)))
    return problems


def _loc(error: Any) -> Path_:
    return tuple(p for p in error["loc"] if not (isinstance(p, str) and p.startswith("function-")))


def _message(error: Any) -> str:
    kind = error["type"]
    message = str(error["msg"])
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "is not a known field (check the spelling)"
    value = error.get("input")
    if kind in ("enum", "literal_error"):
        return f"{message} (got {value!r})"
    if kind in (
        "date_parsing",
        "date_from_datetime_parsing",
        "date_from_datetime_inexact",
        "date_type",
    ):
        return f"not a date (YYYY-MM-DD): {str(value)[:40]!r}"
    if kind == "too_short":
        least = (error.get("ctx") or {}).get("min_length", 1)
        return f"needs at least {least} {'entry' if least == 1 else 'entries'}"
    return message


def remap(problems: list[Problem], doc: Document, base: Path_ = ()) -> list[Problem]:
    """Attach source and line to problems raised with a field path only (e.g. by a rule)."""
    out = []
    for problem in problems:
        if problem.source is not None:
            out.append(problem)
            continue
        path = (*base, *_parse_dotted(problem.field)) if problem.field else base
        out.append(doc.problem(path, problem.message))
    return out


def _parse_dotted(dotted_path: str) -> Path_:
    parts: list[str | int] = []
    for chunk in dotted_path.replace("]", "").split("."):
        name, *indexes = chunk.split("[")
        if name:
            parts.append(name)
        parts.extend(int(i) for i in indexes)
    return tuple(parts)


def iter_items(doc: Document, *keys: str) -> Iterator[tuple[Path_, Any]]:
    """Items of a document that is a list, or a mapping holding a list under one of keys."""
    data = doc.data
    if isinstance(data, list):
        for index, item in enumerate(data):
            yield (index,), item
        return
    if isinstance(data, dict):
        for key in keys:
            if key in data and isinstance(data[key], list):
                for index, item in enumerate(data[key]):
                    yield (key, index), item
                return
    raise InputError(doc.problem((), f"expected a list (or a mapping with {' or '.join(keys)})"))


def read_rows(
    path: Path | str,
    *,
    key: str,
    fields: Mapping[str, Callable[[Any], Any]],
    required: set[str],
    bare: str | None = None,
) -> list[tuple[dict[str, Any], int | None]]:
    """Rows of a small list file (CSV, or YAML/JSON: a list or `key:` holding one), each field
    checked; returns (row, line) pairs. `bare` names the field a plain scalar item stands for."""
    doc = load_document(path, required=required, known=set(fields))
    data = doc.data
    rows = data if isinstance(data, list) else data.get(key) if isinstance(data, dict) else None
    if not isinstance(rows, list):
        raise InputError(doc.problem((), f"expected a list (or a mapping with {key}: holding one)"))
    base: Path_ = () if isinstance(data, list) else (key,)
    known = ", ".join(fields)
    out: list[tuple[dict[str, Any], int | None]] = []
    problems: list[Problem] = []
    for index, row in enumerate(rows):
        where = (*base, index)
        if bare is not None and isinstance(row, str | int):
            row = {bare: row}
        if not isinstance(row, dict):
            problems.append(doc.problem(where, f"expected a mapping of {known}"))
            continue
        found = len(problems)
        for name in sorted(set(row) - set(fields)):
            problems.append(doc.problem((*where, name), f"is not a known field ({known})"))
        for name in sorted(required - set(row)):
            problems.append(doc.problem((*where, name), "is required"))
        checked: dict[str, Any] = {}
        for name, check in fields.items():
            if row.get(name) is None:
                continue
            try:
                checked[name] = check(row[name])
            except ValueError as exc:
                problems.append(doc.problem((*where, name), str(exc)))
        if len(problems) == found:
            out.append((checked, doc.line_of(where)))
    if problems:
        # With the rows whose fields are all valid (a row is a few fields that go together).
        raise FieldErrors(problems, lambda: out)
    return out
