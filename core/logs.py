"""Structured log lines for journald and the lab's log files.

One event per line, logfmt-style, so ``journalctl -u ek8s-node`` reads like a story and
``grep phase=join`` finds every join step::

    2026-11-22T03:59:01.203Z level=info node=control0 phase=lead msg="I lead generation 1 with epoch 1: ..."

Use :func:`get_logger` and pass fields with ``extra={"phase": ..., ...}`` or through
:class:`PhaseLogger`.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

_RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def _quote(value: object) -> str:
    s = str(value)
    if s == "" or any(c in s for c in ' ="\n\t'):
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return s


class LogfmtFormatter(logging.Formatter):
    """Render a record as ``time level node phase msg k=v ...``."""

    def __init__(self, node: str | None = None) -> None:
        super().__init__()
        self.node = node

    def format(self, record: logging.LogRecord) -> str:
        """One logfmt line for ``record`` (fields from ``extra`` after ``msg``)."""
        t = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        parts = [f"{t}.{int(record.msecs):03d}Z", f"level={record.levelname.lower()}"]
        node = getattr(record, "node", None) or self.node
        if node:
            parts.append(f"node={_quote(node)}")
        phase = getattr(record, "phase", None)
        if phase:
            parts.append(f"phase={_quote(phase)}")
        parts.append(f"msg={_quote(record.getMessage())}")
        for key, value in vars(record).items():
            if key in _RESERVED or key in ("node", "phase") or key.startswith("_"):
                continue
            parts.append(f"{key}={_quote(value)}")
        if record.exc_info:
            parts.append(f"error={_quote(self.formatException(record.exc_info))}")
        return " ".join(parts)


def setup_logging(node: str | None = None, level: int = logging.INFO) -> None:
    """Send every log line to stderr in logfmt (journald adds its own timestamp and unit)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LogfmtFormatter(node))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("aiohttp.access", "urllib3", "kubernetes", "filelock", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class PhaseLogger(logging.LoggerAdapter):
    """A logger that stamps every line with a phase (the agent's state: elect, lead, join, watch...)."""

    def __init__(self, logger: logging.Logger, phase: str) -> None:
        super().__init__(logger, {"phase": phase})

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        """Add the phase and the call's ``extra`` fields, renaming those that shadow LogRecord attributes."""
        extra = dict(self.extra or {})
        for key, value in (kwargs.get("extra") or {}).items():
            # logging refuses extras that shadow LogRecord attributes ("name", "args"...).
            extra[f"{key}_" if key in _RESERVED else key] = value
        kwargs["extra"] = extra
        return msg, kwargs


def get_logger(name: str, phase: str) -> PhaseLogger:
    """A :class:`PhaseLogger` named ``name`` whose lines carry ``phase=<phase>``."""
    return PhaseLogger(logging.getLogger(name), phase)
