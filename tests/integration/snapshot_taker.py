"""One turn of Phylactery's snapshot controller (``SnapshotController.save``) as a process of
its own, so that a test can run it with a skewed wall clock (libfaketime on this Python
process; etcd, a Go binary, keeps the real time).

``python -m tests.integration.snapshot_taker SHARE NODE BOOT_ID ENDPOINT PKI_DIR KEEP`` prints
the path of the snapshot it filed on the share, or ``-`` when it took none (its member does
not lead etcd, or its etcd member is not of the current generation). What stands in for the
node: ``p`` carries only what the controller reads (the share store, node name, boot id,
``snapshots_keep``); the driver is the kubeadm driver's own ``save_snapshot`` (etcd's
``/v3/maintenance/snapshot`` through the JSON gateway) pointed at ENDPOINT with the kubeadm
etcd client certificate under PKI_DIR."""

from __future__ import annotations

import asyncio
import ssl
import sys
from pathlib import Path
from types import SimpleNamespace

from core.drivers.base import SnapshotTaken
from core.drivers.kubeadm import KubeadmDriver
from core.etcd import kubeadm_client_context
from core.share import ShareStore
from phylactery.controllers.snapshot import SnapshotController


class EtcdMemberDriver:
    """The kubeadm driver's snapshot path on a member outside a kubeadm node."""

    def __init__(self, endpoint: str, pki_dir: Path) -> None:
        self.etcd_endpoint = endpoint
        self.pki_dir = pki_dir

    def etcd_client_context(self) -> ssl.SSLContext:
        return kubeadm_client_context(self.pki_dir)

    def save_snapshot(self) -> SnapshotTaken:
        return KubeadmDriver.save_snapshot(self)  # type: ignore[arg-type]


def main(share: str, node: str, boot_id: str, endpoint: str, pki_dir: str, keep: str) -> None:
    p = SimpleNamespace(
        store=ShareStore(Path(share), "default", node),
        driver=EtcdMemberDriver(endpoint, Path(pki_dir)),
        cfg=SimpleNamespace(node=SimpleNamespace(name=node), phylactery=SimpleNamespace(snapshots_keep=int(keep))),
        boot_id=boot_id,
    )
    path = asyncio.run(SnapshotController(p).save())  # type: ignore[arg-type]
    print(path if path is not None else "-")


if __name__ == "__main__":
    main(*sys.argv[1:])
