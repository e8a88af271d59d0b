"""Bulk work in batches: a task per stage per batch, not a task per request."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Annotated, TypeVar

from pydantic import Field

T = TypeVar("T")

# A flow's batch_size parameter: its schema refuses 0 or less when a run is created (the
# Prefect UI's form, `prefect deployment run --param`), as the CLI's --batch-size does.
BatchSize = Annotated[int, Field(ge=1, le=100_000)]


def chunks(items: Sequence[T], size: int) -> Iterator[list[T]]:
    """items in consecutive lists of at most `size`."""
    if size < 1:
        raise ValueError("a batch holds at least one item")
    for start in range(0, len(items), size):
        yield list(items[start : start + size])
