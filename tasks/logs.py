"""Prefect's run logs: a refusal by procure is logged as its message, without a traceback.

Prefect logs a failed task or flow run with its traceback. For bad input or a rule procure
refused on purpose (a ProcureError) the message says what and where (file, line, field); the
frames around it are procure's own and tell an operator nothing more. Other failures keep their
traceback.
"""

from __future__ import annotations

import logging

from models.errors import ProcureError

RUN_LOGGERS = ("prefect.task_runs", "prefect.flow_runs")


class QuietRefusals(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, ProcureError):
            record.exc_info = None
            record.exc_text = None
        return True


def install() -> None:
    """Once per process (a second call adds nothing)."""
    for name in RUN_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, QuietRefusals) for f in logger.filters):
            logger.addFilter(QuietRefusals())
