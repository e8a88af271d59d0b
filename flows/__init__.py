"""Prefect flows: the order of the stages, waits and schedules; orchestration only.

One flow per file, named after it (flows/advance.py:advance). The work is in tasks/, and
everything a flow does is callable without Prefect through models/.
"""
