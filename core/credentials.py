"""Phylactery's two bearer credentials, and what accepting one means (docs/security.md).

* the **control credential** (``control``) lets a caller do everything Phylactery offers:
  refresh, join material, status details, and prune any node but the serving one. Control
  nodes (their agents and Phylacteries), the operator's ``ek8s`` on the Warewulf server and
  the lab's prober hold it; it lives in the control-only tree;
* the **worker credential** (``worker``) lets a caller prune *its own* node only (the
  request must come from the address of the node it names, and what goes must belong to that
  node's previous incarnation: :mod:`phylactery.prune`). Workers hold it; it lives in the
  node tree, which every worker mounts.

Each is a random word (:func:`new_token`, 256 bits). A rotation (``ek8s credentials rotate``,
``ek8s reset``) writes a new current value and keeps the old one as *previous* until
``previous_valid_until`` (Unix seconds, :data:`GRACE_S` after the rotation by default), so
requests signed with the old one in flight, or from a client that read it a moment before,
still pass; after that only the new one does. Comparisons are constant-time
(``hmac.compare_digest``) against both values, whatever the first one gave.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass

CONTROL = "control"
WORKER = "worker"
KINDS = (CONTROL, WORKER)
GRACE_S = 300.0  # seconds the previous value of a rotated credential is still accepted


def new_token() -> str:
    """A new credential: 32 random bytes, URL-safe base64 (43 characters, no padding)."""
    return secrets.token_urlsafe(32)


def kind_for_role(role: str) -> str:
    """The credential a node of ``role`` ("control" or "worker") holds."""
    return CONTROL if role == "control" else WORKER


@dataclass(frozen=True)
class CredentialSet:
    """What a server accepts for one credential ``kind``: ``current``, and ``previous`` until
    ``previous_valid_until`` (Unix seconds; None: no previous value)."""

    kind: str
    current: str
    previous: str | None = None
    previous_valid_until: float | None = None

    def accepts(self, given: str, now: float) -> bool:
        """Whether ``given`` is the current value, or the previous one before its end (``now``
        in Unix seconds). Both comparisons always run, in constant time."""
        raw = given.encode()
        current = hmac.compare_digest(raw, self.current.encode())
        previous = hmac.compare_digest(raw, (self.previous or "\0").encode())
        in_grace = (
            self.previous is not None and self.previous_valid_until is not None and now < self.previous_valid_until
        )
        return current or (previous and in_grace)
