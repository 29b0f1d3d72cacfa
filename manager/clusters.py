"""Which cluster an operator's command means: ``--cluster``, else ``$EK8S_CLUSTER``, else the
only cluster on the share.

A share may hold several clusters (``<share>/<cluster>/``, docs/share-protocol.md); the
example inventory names its cluster ``ek8s``, a lab's is ``default``. Guessing when there are
several would act on the wrong one, so that is refused (exit 2) with the names found.
"""

from __future__ import annotations

from pathlib import Path

import click

from core.cli import fail
from core.share import ShareStore, clusters_on

ENV = "EK8S_CLUSTER"
CLUSTER_OPTION = click.option(
    "--cluster",
    envvar=ENV,
    default=None,
    help=f"cluster name (its directory on the share); default: ${ENV}, else the only cluster on the share",
)
SHARE_OPTION = click.option(
    "--share", "share_path", default="/share", show_default=True, type=click.Path(path_type=Path), help="the share"
)


def _found(names: list[str]) -> str:
    return ", ".join(names) if names else "none"


def operator_store(share: Path, cluster: str | None, who: str) -> ShareStore:
    """The :class:`core.share.ShareStore` of the cluster the operator means, writing as
    ``who``. ``cluster`` is ``--cluster`` (click has already put ``$EK8S_CLUSTER`` there when
    the option was not given); None means the only cluster under ``share``.

    Exits 2 (bad input, nothing written) when no cluster is named and the share holds
    several, or when the named one is not among those it holds, listing the clusters found;
    exits 1 when the share holds no cluster at all (not mounted? nothing booted yet?). Never
    creates anything; a bad record it reads is logged, not recorded as an ``invalid_record``
    event (the nodes that read it do that). ``OSError`` from listing the share is left to the caller."""
    names = clusters_on(share)
    if cluster is None:
        if len(names) == 1:
            return ShareStore(share, names[0], who, record_invalid=False)
        if not names:
            fail(f"no cluster under {share} (no {share}/*/cluster.json): is the share mounted?")
        fail(f"{share} holds several clusters ({_found(names)}): name one with --cluster or ${ENV}", 2)
    store = ShareStore(share, cluster, who, record_invalid=False)
    if not store.exists():
        if names:
            fail(f"--cluster: no cluster {cluster!r} under {share}; clusters found: {_found(names)}", 2)
        fail(f"no cluster {cluster!r} under {share} (no {store.dir}/cluster.json; the share holds no cluster)")
    return store
