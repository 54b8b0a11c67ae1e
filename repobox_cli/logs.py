"""Logging setup: rich on a terminal, JSON lines otherwise; every line passes the redaction filter."""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import MutableMapping
from typing import Any

from repobox_cli.redaction import redact

CONTEXT_FIELDS = ("job_id", "user_id", "worker_id", "runner_id", "attempt", "entry_id")


class RedactingFilter(logging.Filter):
    """Masks live secrets in the message and its arguments before any handler sees them."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        if record.exc_info:
            # A traceback may quote secrets; keep only the one-line reason.
            record.msg = f"{record.msg}: {redact(str(record.exc_info[1]))}"
            record.exc_info = None
            record.exc_text = None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                payload[name] = value
        return json.dumps(payload, ensure_ascii=False)


class PrettyContextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        context = " ".join(
            f"{name}={getattr(record, name)}" for name in CONTEXT_FIELDS if getattr(record, name, None) is not None
        )
        message = record.getMessage()
        return f"{message}  ({context})" if context else message


def setup_logging(log_format: str, level: int = logging.INFO) -> None:
    """Route the `repobox_cli` loggers to stderr in the chosen format."""
    root = logging.getLogger("repobox_cli")
    root.handlers.clear()
    root.setLevel(level)
    root.propagate = False
    handler: logging.Handler
    if log_format == "pretty":
        from rich.console import Console
        from rich.logging import RichHandler

        handler = RichHandler(console=Console(stderr=True), markup=False, show_path=False, rich_tracebacks=False)
        handler.setFormatter(PrettyContextFormatter())
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactingFilter())
    root.addHandler(handler)


class JobLog(logging.LoggerAdapter[logging.Logger]):
    """A logger carrying job_id, user_id, worker_id and runner_id on every line."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        extra = dict(self.extra or {})
        extra.setdefault("worker_id", threading.current_thread().name)
        kwargs["extra"] = {**extra, **kwargs.get("extra", {})}
        return msg, kwargs
