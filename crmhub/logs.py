"""Logging: one line per record, with the flow / event / entity ids appended as key=value."""

from __future__ import annotations

import logging

FIELDS = ("flow", "event_id", "entity_id")


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = " ".join(f"{name}={getattr(record, name)}" for name in FIELDS
                          if getattr(record, name, None))
        return f"{line} {extras}" if extras else line


def configure(level: str = "INFO") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(KeyValueFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Client libraries are chatty at INFO (group joins, connections); keep their warnings.
    for noisy in ("aiokafka", "faststream", "crmhub.broker", "uvicorn.access", "alembic"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
