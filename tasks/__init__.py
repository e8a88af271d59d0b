"""Prefect tasks: thin wrappers (retries, logging, artifacts) over the plain functions of models/.

A task's body is one database transaction through models/, and safe to run again: a retried
task never applies a decision twice nor queues a notification twice, because the actions it
calls recognise what is already done.
"""

from tasks import logs

logs.install()
