"""Structured log lines: one event per line, fields that cannot break logging."""

from __future__ import annotations

import io
import logging

from core.logs import LogfmtFormatter, get_logger


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
