"""Provides the server's logging setup: text or structured JSON lines, with the request id and
task id of the current call on every record and secrets redacted.

JSON lines come from python-json-logger; each is one object with ``time``, ``level``,
``logger``, ``message``, ``request_id``, ``task_id`` and any ``extra=`` fields.
"""

from __future__ import annotations

import logging
import re
import sys

from pythonjsonlogger.json import JsonFormatter

from server_client.server import context

#: What a secret looks like in a message: our token and pairing-code shapes, and bearer
#: credentials of any shape (``Authorization: Bearer ...``).
_SECRET = re.compile(
    r"(ctu_[A-Za-z0-9_-]{8,}|(?i:bearer)\s+[^\s'\",]+"
    r"|\b[0-9A-HJKMNP-TV-Z]{4}-?[0-9A-HJKMNP-TV-Z]{4}\b)"
)

REDACTED = "[redacted]"


def redact(text: str) -> str:
    """``text`` with every token, pairing code and bearer credential replaced."""
    return _SECRET.sub(REDACTED, text)


class ContextFilter(logging.Filter):
    """Adds ``request_id`` and ``task_id`` from the current call and redacts secrets from the
    formatted message (so ``%s`` arguments are covered too)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Annotate ``record`` in place; never drops it."""
        record.__dict__.pop("color_message", None)  # uvicorn's ANSI copy of the message
        ctx = context.current()
        if not hasattr(record, "request_id"):
            record.request_id = ctx.request_id
        if not hasattr(record, "task_id"):
            record.task_id = ctx.task_id
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def configure_logging(level: str = "info", *, json_lines: bool = False) -> None:
    """Send every log record to stderr, as text or JSON lines, through :class:`ContextFilter`.

    Replaces the root logger's handlers; uvicorn's loggers propagate to it (their own handlers
    are removed so each line is written once, in one format).
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ContextFilter())
    if json_lines:
        handler.setFormatter(
            JsonFormatter(
                "{asctime}{levelname}{name}{message}{request_id}{task_id}",
                style="{",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
                timestamp=False,
            )
        )
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True


#: The ``log_config`` to hand uvicorn so it keeps the handlers set here.
UVICORN_LOG_CONFIG: dict[str, object] = {"version": 1, "disable_existing_loggers": False}
