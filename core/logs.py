"""Structured log lines for journald and the lab's log files.

One event per line, logfmt-style, so ``journalctl -u ek8s-node`` reads like a story and
``grep phase=join`` finds every join step::

    2026-11-22T03:59:01.203Z level=info node=control0 phase=lead msg="I lead generation 1 with epoch 1: ..."

Use :func:`get_logger` and pass fields with ``extra={"phase": ..., ...}`` or through
:class:`PhaseLogger`.

**Priorities in the journal.** When stderr is the journal (systemd sets ``JOURNAL_STREAM`` to
the device and inode of the stream it connected, systemd.exec(5) "Environment variables in
spawned processes"), every line starts with its syslog priority, ``<3>`` for an error, ``<6>``
for info (sd-daemon(3): the ``SD_ERR``... prefixes), which journald strips and stores as
``PRIORITY=`` because the units keep ``SyslogLevelPrefix=yes``; so ``journalctl -p err -u
ek8s-node`` finds the errors. Elsewhere (a terminal, the lab's process mode and its log files)
lines have no prefix. Why prefixes rather than the native journal protocol with ``NODE=`` and
``STATE=`` fields: the native protocol from Python needs systemd's C bindings
(``systemd-python``, built against libsystemd for the interpreter that runs ek8s: Rocky 9
packages them for its python3.9 only, ek8s runs on python3.11), and the prefix keeps one
format for journald, terminals and files; the logfmt fields (``node=``, ``phase=``) stay
searchable with ``journalctl -u ek8s-node --grep phase=join``.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from types import TracebackType
from typing import Any, TextIO

_RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}

# ``--log-level`` names, and the syslog priority (syslog(3), sd-daemon(3)) of each logging level.
LOG_LEVELS = ("debug", "info", "warning", "error")
_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}


def syslog_priority(levelno: int) -> int:
    """The syslog priority for a ``logging`` level number: 2 crit, 3 err, 4 warning, 6 info,
    7 debug (levels in between take the next more severe one)."""
    for level, priority in sorted(_PRIORITY.items()):
        if levelno <= level:
            return priority
    return 2


def stream_is_journal(stream: TextIO) -> bool:
    """Whether ``stream`` is the journal's stream socket: its ``st_dev:st_ino`` is the
    ``JOURNAL_STREAM`` systemd set for this process (systemd.exec(5)). False for a terminal,
    a file, a pipe, or when the variable is absent or was inherited by a child whose stderr
    is something else."""
    want = os.environ.get("JOURNAL_STREAM", "")
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return want == f"{st.st_dev}:{st.st_ino}"


def journal_prefix(levelno: int, stream: TextIO | None = None) -> str:
    """``<N>`` (the syslog priority of ``levelno``) when ``stream`` (default stderr) is the
    journal, else ``""``: for lines written without :mod:`logging` (``core.cli.fail``)."""
    return f"<{syslog_priority(levelno)}>" if stream_is_journal(stream or sys.stderr) else ""


def _quote(value: object) -> str:
    s = str(value)
    if s == "" or any(c in s for c in ' ="\n\t'):
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return s


class LogfmtFormatter(logging.Formatter):
    """Render a record as ``time level node phase msg k=v ...``; with ``priority_prefix``,
    as ``<N>time level ...`` where N is the record's syslog priority (for journald)."""

    def __init__(self, node: str | None = None, priority_prefix: bool = False) -> None:
        super().__init__()
        self.node = node
        self.priority_prefix = priority_prefix

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
        line = " ".join(parts)
        return f"<{syslog_priority(record.levelno)}>{line}" if self.priority_prefix else line


def parse_level(level: str | int) -> int:
    """A ``logging`` level from a ``--log-level`` name (:data:`LOG_LEVELS`, any case) or a
    number. Raises ``ValueError`` naming the accepted names."""
    if isinstance(level, int):
        return level
    if level.lower() not in LOG_LEVELS:
        raise ValueError(f"log level {level!r}: expected one of {', '.join(LOG_LEVELS)}")
    return int(getattr(logging, level.upper()))


def setup_logging(node: str | None = None, level: str | int = logging.INFO) -> None:
    """Send every log line to stderr in logfmt (journald adds its own timestamp and unit),
    with the syslog priority prefix when stderr is the journal (:func:`stream_is_journal`).
    ``level``: a :data:`LOG_LEVELS` name or a ``logging`` number; the libraries' chatter
    (aiohttp's access log, urllib3, kubernetes, filelock, asyncio) stays at WARNING unless
    ``debug`` is asked. Uncaught exceptions, in the main thread or another, are logged as one
    ``critical`` line with the traceback in ``error=`` (a traceback's lines would otherwise
    reach the journal one by one, at the default priority). Raises ``ValueError`` for an
    unknown level name."""
    levelno = parse_level(level)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LogfmtFormatter(node, priority_prefix=stream_is_journal(sys.stderr)))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(levelno)
    for noisy in ("aiohttp.access", "urllib3", "kubernetes", "filelock", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.NOTSET if levelno <= logging.DEBUG else logging.WARNING)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_in_thread


def _log_uncaught(
    kind: type[BaseException], value: BaseException, tb: TracebackType | None, thread: str | None = None
) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, value, tb)
        return
    extra = {"phase": "crash", **({"in_thread": thread} if thread else {})}
    logging.getLogger("ek8s").critical(f"uncaught {kind.__name__}: {value}", exc_info=(kind, value, tb), extra=extra)


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_value is None or issubclass(args.exc_type, SystemExit):
        return
    name = args.thread.name if args.thread else None
    _log_uncaught(args.exc_type, args.exc_value, args.exc_traceback, name)


def log_start(program: str, phase: str, cfg: Any) -> None:
    """The first line of a node program: ``<program> <version> starting`` with the revision,
    the node's role and distribution, the Python version and the pid (``cfg``: the node's
    :class:`core.config.NodeConfig`)."""
    import core

    get_logger(f"ek8s.{phase}", phase).info(
        f"{program} {core.__version__} starting",
        extra={
            "revision": core.revision(),
            "role": cfg.role,
            "distribution": cfg.kubernetes.distribution,
            "python": sys.version.split()[0],
            "pid": os.getpid(),
        },
    )


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
