"""Bulk work in batches: a task per stage per batch, not a task per request."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Annotated, TypeVar, cast

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


def as_is(batch: T) -> T:
    """A batch handed to a task as it is: Prefect does not walk it looking for futures to wait
    on (its `quote`), which for 200 requests' nested drafts took longer than submitting them.
    (Prefect is imported here, not at the top: the CLI imports this module for BatchSize.)"""
    from prefect.utilities.annotations import quote

    return cast(T, quote(batch))
