"""Structured log lines: one event per line, fields that cannot break logging."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from core.logs import LogfmtFormatter, get_logger, parse_level, setup_logging, stream_is_journal


def test_fields_that_shadow_logrecord_attributes_are_renamed_not_fatal() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(LogfmtFormatter("control0"))
    logger = logging.getLogger("ek8s.test.logs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        get_logger("ek8s.test.logs", "prune").info(
            "pruned", extra={"name": "worker0", "args": [1], "address": "10.0.0.41"}
        )
    finally:
        logger.removeHandler(handler)
    line = stream.getvalue().strip()
    assert "\n" not in line
    assert "node=control0 phase=prune msg=pruned" in line
    assert "name_=worker0" in line and "address=10.0.0.41" in line


def journal_env(monkeypatch: pytest.MonkeyPatch, stream: io.TextIOBase) -> None:
    """Make ``stream`` (a real file) what systemd's JOURNAL_STREAM names: its st_dev:st_ino."""
    st = os.fstat(stream.fileno())
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")


def test_lines_carry_their_syslog_priority_only_when_stderr_is_the_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with open(tmp_path / "journal", "w+") as journal, open(tmp_path / "terminal", "w+") as terminal:
        journal_env(monkeypatch, journal)
        assert stream_is_journal(journal) and not stream_is_journal(terminal)
        for stream in (journal, terminal):
            monkeypatch.setattr(sys, "stderr", stream)
            setup_logging("control0", "debug")
            log = get_logger("ek8s.test.priority", "join")
            log.debug("d")
            log.info("i")
            log.warning("w")
            log.error("e")
            log.critical("c")
        logging.getLogger().handlers[:] = []
        journal.seek(0)
        terminal.seek(0)
        got = [(line[:3], line.split(" msg=")[1]) for line in journal.read().splitlines()]
        assert got == [("<7>", "d"), ("<6>", "i"), ("<4>", "w"), ("<3>", "e"), ("<2>", "c")]
        assert all(line.startswith("20") for line in terminal.read().splitlines()), "no prefix on a terminal"


def test_log_level_hides_lower_levels_and_refuses_unknown_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with open(tmp_path / "err", "w+") as err:
        monkeypatch.setattr(sys, "stderr", err)
        setup_logging("worker0", "WARNING")
        log = get_logger("ek8s.test.level", "watch")
        log.info("hidden")
        log.warning("shown")
        logging.getLogger().handlers[:] = []
        err.seek(0)
        assert [line.split(" msg=")[1] for line in err.read().splitlines()] == ["shown"]
    with pytest.raises(ValueError, match="expected one of debug, info, warning, error"):
        parse_level("verbose")


def test_an_uncaught_exception_is_one_critical_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with open(tmp_path / "journal", "w+") as journal:
        journal_env(monkeypatch, journal)
        monkeypatch.setattr(sys, "stderr", journal)
        monkeypatch.setattr(sys, "excepthook", sys.excepthook)
        monkeypatch.setattr(threading, "excepthook", threading.excepthook)
        setup_logging("control0")
        t = threading.Thread(target=lambda: 1 / 0, name="heartbeat")
        t.start()
        t.join()
        logging.getLogger().handlers[:] = []
        journal.seek(0)
        lines = journal.read().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("<2>") and 'msg="uncaught ZeroDivisionError: division by zero"' in lines[0]
    assert "in_thread=heartbeat" in lines[0] and "Traceback" in lines[0]


def test_a_node_program_that_exits_2_says_why_at_err_priority(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "node.yaml"
    bad.write_text("node: {name: control0}\nrole: controller\n")
    with open(tmp_path / "journal", "w+") as journal:
        journal_env(monkeypatch, journal)
        result = subprocess.run(
            [sys.executable, "-m", "leader", "run", "--config", str(bad)],
            stderr=journal,
            env={**os.environ, "JOURNAL_STREAM": os.environ["JOURNAL_STREAM"]},
            check=False,
        )
        journal.seek(0)
        lines = journal.read().splitlines()
    assert result.returncode == 2
    assert lines and all(line.startswith("<3>") for line in lines), lines
    assert any("role" in line for line in lines)
