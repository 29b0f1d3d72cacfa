"""Phylactery's controllers: one background loop each, one module each, registered here.

The layout follows k3s's ``pkg/etcd``: one ``*_controller.go`` per job (``member_controller.go``
removes the etcd member of a deleted Node, ``snapshot_controller.go`` keeps the snapshot
records) and one place that starts them all (``etcd.go``, where the leader-elected controller
start calls ``registerEndpointsHandlers``, ``registerMemberHandlers`` and
``registerSnapshotHandlers``; k3s v1.32). Here:

==================  ==============================  =========================================
loop                module                          job
==================  ==============================  =========================================
``reconcile``       :mod:`.reconcile`               member record, haproxy.cfg and
                                                    keepalived.conf in line with the registry,
                                                    on every refresh and every
                                                    ``reconcile_interval_s``
``notify_peers``    :mod:`.notify`                  ask the other Phylacteries to refresh, at
                                                    start and after a new generation
``snapshot``        :mod:`.snapshot`                etcd snapshots to the share, on the node
                                                    whose member leads etcd
``reaper``          :mod:`.reaper`                  remove an etcd member whose node lost its
                                                    data
``roles``           :mod:`.roles`                   every Node's labels, taints and roles in
                                                    line with the published inventory, on the
                                                    node whose member leads etcd
``join_material``   :mod:`.joinmaterial`            keep the token workers join with valid
                                                    (they cannot ask for join material)
==================  ==============================  =========================================

Each runs under Phylactery's :class:`core.supervise.Supervisor` (``/healthz`` is 503 while one
is down). Each decision a controller takes is a sentence its function returns, so that tests
assert them one line each, as the agent's states are tested.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from phylactery.controllers.joinmaterial import JoinMaterialController
from phylactery.controllers.notify import PeerNotifier
from phylactery.controllers.reaper import ReaperController
from phylactery.controllers.reconcile import ReconcileController
from phylactery.controllers.roles import RolesController
from phylactery.controllers.snapshot import SnapshotController

if TYPE_CHECKING:
    from phylactery.service import Phylactery


@dataclass(frozen=True)
class Controllers:
    """Phylactery's controllers (made with the service, started by :meth:`Phylactery.start`)."""

    reconcile: ReconcileController
    notify: PeerNotifier
    snapshot: SnapshotController
    reaper: ReaperController
    roles: RolesController
    join_material: JoinMaterialController

    def loops(self) -> list[tuple[str, Callable[[], Awaitable[None]]]]:
        """``(loop name, coroutine function)`` of each, in the order they start."""
        loops = (self.reconcile, self.notify, self.snapshot, self.reaper, self.roles, self.join_material)
        return [(c.name, c.run) for c in loops]


def register(p: Phylactery) -> Controllers:
    """Every controller of ``p``, made in one place."""
    return Controllers(
        reconcile=ReconcileController(p),
        notify=PeerNotifier(p),
        snapshot=SnapshotController(p),
        reaper=ReaperController(p),
        roles=RolesController(p),
        join_material=JoinMaterialController(p),
    )
