"""``ek8s events``: the cluster's timeline from the share, filtered, printed, followed.

The events are what agents, Phylacteries and the operator's commands record in
``events.jsonl`` (its fields and event names: docs/share-protocol.md). Reading goes through
:meth:`core.share.ShareStore.read_events`, which follows the file's rotations, so a follower
misses nothing when ``events.jsonl`` becomes ``events.jsonl.1`` under it.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import hostlist

from core.share import EventCursor, ShareStore

# The fields every event has; the others are printed as key=value after the message.
BASE_FIELDS = ("t", "node", "generation", "event", "message")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_since(text: str, now: float) -> float:
    """``--since``: a duration back from ``now`` (``90s``, ``10m``, ``2h``, ``1d``; Unix
    seconds) or a time in ISO 8601 (``2026-11-23T12:00``, ``2026-11-23 12:00:05``, local time
    unless it carries an offset). Returns Unix seconds; raises ``ValueError`` saying what is
    accepted."""
    m = _DURATION.match(text.strip())
    if m:
        return now - float(m.group(1)) * _UNIT_S[m.group(2)]
    try:
        return datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        raise ValueError(
            f"{text!r} is neither a duration (90s, 10m, 2h, 1d) nor a time (2026-11-23T12:00, local time)"
        ) from None


def parse_nodes(text: str | None) -> set[str] | None:
    """A NODE argument or ``--node``: one name or a hostlist (``worker[0-9],control1``) as a
    set of names, None for none. Raises ``ValueError`` for a malformed hostlist."""
    if text is None:
        return None
    try:
        names = hostlist.expand_hostlist(text)
    except hostlist.BadHostlist as err:
        raise ValueError(f"{text!r} is not a node name or hostlist: {err}") from None
    if not names:
        raise ValueError(f"{text!r} names no node")
    return set(names)


def select(events: list[dict[str, Any]], nodes: set[str] | None, since: float | None) -> list[dict[str, Any]]:
    """The events of ``nodes`` (all when None) at or after ``since`` (Unix seconds; all when
    None), in their order."""
    return [
        e
        for e in events
        if (nodes is None or e.get("node") in nodes) and (since is None or float(e.get("t", 0)) >= since)
    ]


def format_event(event: dict[str, Any], node_width: int = 0) -> str:
    """One line: local time to the millisecond, node (padded to ``node_width``), generation,
    event, message, then the event's other fields as ``key=value`` (values as JSON when not
    strings). A line such as ``2026-11-23 12:00:03.412 control1 gen 3 leader_claimed I lead
    generation 3 with epoch 7 [epoch=7 role=control]``."""
    t = float(event.get("t", 0))
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) + f".{int(t * 1000) % 1000:03d}"
    extras = [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in event.items() if k not in BASE_FIELDS]
    line = (
        f"{when} {event.get('node', '?')!s:<{node_width}} gen {event.get('generation', '?')} "
        f"{event.get('event', '?')} {event.get('message', '')}"
    ).rstrip()
    return f"{line} [{' '.join(extras)}]" if extras else line


def render(event: dict[str, Any], output: str, node_width: int = 0) -> str:
    """``event`` as ``output`` asks: ``json`` (the stored object, one line) or ``text``."""
    return json.dumps(event) if output == "json" else format_event(event, node_width)


def follow(
    store: ShareStore,
    cursor: EventCursor,
    interval_s: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[dict[str, Any]]:
    """Every event appended after ``cursor``, as it comes: the timeline is read again every
    ``interval_s`` seconds (each read re-opens the files, as NFS close-to-open needs), across
    rotations. Never ends by itself; the caller stops iterating (Ctrl-C)."""
    while True:
        sleep(interval_s)
        found, cursor = store.read_events(cursor)
        yield from found
