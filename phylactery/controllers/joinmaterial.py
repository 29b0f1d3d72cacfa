"""The join-material controller: keep the token workers join with valid, ahead of its expiry.

Workers cannot ask for join material (their credential allows a prune of themselves only:
docs/security.md), yet a worker may reboot and rejoin days after the last control node did,
when kubeadm's bootstrap token (24 h) has run out. So the control node whose etcd member
leads etcd (one node does it, as snapshots: ``snapshot.py``) asks its driver every
:data:`JOIN_MATERIAL_CHECK_S` to renew the *token* when it is within the driver's margin of its
expiry (kubeadm: ``TOKEN_RENEW_MARGIN_S``, one hour, far more than the check interval), and
republishes ``join.json`` (``Phylactery.ensure_join_material``). The certificate key, which
unlocks the CA keys in ``kubeadm-certs``, is not renewed here: only a joining control node's
request does that. k3s's tokens never expire: its driver renews nothing.

The decision of each turn is :func:`decide`, a sentence each.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from core.drivers import ApiUnavailable, DriverError
from core.etcd import EtcdError
from core.logs import get_logger
from core.share import EpochSuperseded, ShareError

if TYPE_CHECKING:
    from phylactery.service import Phylactery

log = get_logger(__name__, "phylactery")
JOIN_MATERIAL_CHECK_S = 300.0  # seconds between turns


def decide(leads: bool, ready: bool) -> tuple[bool, str]:
    """Whether this turn asks the driver to renew the token: only on the node whose etcd
    member leads etcd (``leads``), while the generation is ready (``ready``)."""
    if not leads:
        return False, "my etcd member does not lead etcd: its leader's node keeps the token valid"
    if not ready:
        return False, "the generation is not ready: no join material to keep valid yet"
    return True, "checking that the token workers join with is valid for another hour"


class JoinMaterialController:
    """Loop ``join_material`` of Phylactery ``p``; ``interval_s`` between turns."""

    name = "join_material"

    def __init__(self, p: Phylactery, interval_s: float = JOIN_MATERIAL_CHECK_S) -> None:
        self.p = p
        self.interval_s = interval_s
        self.last_sentence = ""

    async def run(self) -> None:
        """A turn every ``interval_s``; a turn whose etcd, API, tool or share does not answer
        is logged and the next one tries again."""
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                self.last_sentence = await self.turn()
            except (LookupError, ApiUnavailable, EpochSuperseded, DriverError, EtcdError, ShareError, OSError) as err:
                self.last_sentence = f"keeping the token valid failed: {err}"
                log.warning("keeping the join token valid failed", extra={"error": str(err)})

    async def turn(self) -> str:
        """One turn: :func:`decide`, then the renewal when it says so. Returns the sentence."""
        p = self.p
        leads = await p.controllers.snapshot.leads_etcd()
        state = await asyncio.to_thread(p.store.read_state)
        ask, sentence = decide(leads, state.ready)
        if not ask:
            return sentence
        result = await p.ensure_join_material(parts=("token",))
        if result["refreshed"]:
            return "renewed the token workers join with; join.json republished"
        return sentence
