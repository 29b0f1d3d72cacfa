"""Golden tests of the pure renderers: a change to a rendered file is a reviewed change.

Regenerate after an intended change with ``EK8S_UPDATE_GOLDEN=1 pytest tests/unit/test_render_golden.py``
and read the diff.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from core.config import parse_config
from core.drivers import k3s
from core.drivers.kubeadm import render_init_config, render_join_config
from core.share import JoinMaterial
from phylactery import render

GOLDEN = Path(__file__).parents[1] / "golden"
TOKEN = "abcdef.0123456789abcdef"
KEY = "0123456789abcdef" * 4


def cfg(role: str, name: str, address: str):  # type: ignore[no-untyped-def]
    return parse_config({"role": role, "node": {"name": name, "address": address}}, Path("node.yaml"))


MATERIAL = JoinMaterial(
    generation=1,
    epoch=1,
    api_server_endpoint="vip.kubernetes.local:8443",
    token=TOKEN,
    token_expires_at=0.0,
    ca_cert_hashes=["sha256:" + "ab" * 32],
    certificate_key=KEY,
    certificate_key_expires_at=0.0,
    ca_cert="",
    published_by="control0",
    published_at=0.0,
)
K3S_MATERIAL = JoinMaterial(
    generation=1,
    epoch=1,
    api_server_endpoint="vip.kubernetes.local:8443",
    token="K10" + "ab" * 32 + "::server:" + "11" * 32,
    token_expires_at=0.0,
    ca_cert_hashes=["sha256:" + "ab" * 32],
    certificate_key="K10" + "ab" * 32 + "::node:" + "22" * 32,
    certificate_key_expires_at=0.0,
    ca_cert="",
    published_by="control0",
    published_at=0.0,
)

# control0's keepalived.conf among three control nodes; each case changes what it names.
KEEPALIVED_ARGS: dict[str, Any] = dict(
    node="control0",
    cluster="default",
    generation=1,
    address="10.0.0.21",
    interface="eth0",
    peers=["10.0.0.21", "10.0.0.23", "10.0.0.22"],
    vip="10.0.0.99",
    prefix_length=24,
    virtual_router_id=51,
    advert_int=0.1,
    is_leader=False,
    check_script="/etc/keepalived/check_haproxy.sh",
)


def keepalived(**changes: Any) -> str:
    return render.render_keepalived(**{**KEEPALIVED_ARGS, **changes})


CASES = {
    "haproxy.cfg": lambda: render.render_haproxy(
        node="control0",
        cluster="default",
        generation=1,
        frontend_port=8443,
        api_port=6443,
        stats_socket="/run/haproxy/admin.sock",
        members=[
            render.Backend("control1", "10.0.0.22"),
            render.Backend("control0", "10.0.0.21"),
            render.Backend("control2", "10.0.0.23"),
        ],
        ca_file="/etc/haproxy/cluster-ca-0123456789abcdef.pem",  # the generation's CA is published
    ),
    "keepalived.conf": lambda: keepalived(),
    "keepalived-alone-leader.conf": lambda: keepalived(peers=["10.0.0.21"], is_leader=True),
    "keepalived-no-realtime.conf": lambda: keepalived(realtime=False),
    "check_haproxy.sh": lambda: render.render_check_script(8443),
    "kubeadm-init.yaml": lambda: render_init_config(cfg("control", "control0", "10.0.0.21"), TOKEN, KEY),
    "kubeadm-join-control.yaml": lambda: render_join_config(cfg("control", "control1", "10.0.0.22"), MATERIAL),
    "kubeadm-join-worker.yaml": lambda: render_join_config(cfg("worker", "worker0", "10.0.0.41"), MATERIAL),
    "k3s-init.yaml": lambda: k3s.render_init_config(cfg("control", "control0", "10.0.0.21"), "11" * 32, "22" * 32),
    "k3s-join-control.yaml": lambda: k3s.render_join_config(cfg("control", "control1", "10.0.0.22"), K3S_MATERIAL),
    "k3s-join-worker.yaml": lambda: k3s.render_join_config(cfg("worker", "worker0", "10.0.0.41"), K3S_MATERIAL),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_rendered_file_matches_golden(name: str) -> None:
    text = CASES[name]()
    path = GOLDEN / name
    if os.environ.get("EK8S_UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text(), f"{name} changed; regenerate with EK8S_UPDATE_GOLDEN=1 and review the diff"


def test_kubeadm_documents_use_v1beta4_and_the_vip_endpoint() -> None:
    init, cluster = yaml.safe_load_all(CASES["kubeadm-init.yaml"]())
    assert init["kind"] == "InitConfiguration" and cluster["kind"] == "ClusterConfiguration"
    assert {init["apiVersion"], cluster["apiVersion"]} == {"kubeadm.k8s.io/v1beta4"}
    assert cluster["controlPlaneEndpoint"] == "vip.kubernetes.local:8443"
    assert {"10.0.0.99", "vip.kubernetes.local", "10.0.0.13"} <= set(cluster["apiServer"]["certSANs"])
    worker = yaml.safe_load(CASES["kubeadm-join-worker.yaml"]())
    assert "controlPlane" not in worker and worker["discovery"]["bootstrapToken"]["token"] == TOKEN


@pytest.mark.parametrize("distribution", ["kubeadm", "k3s"])
def test_a_node_yaml_warewulf_rendered_drives_its_distribution(distribution: str) -> None:
    """From the golden node.yaml Warewulf renders for the reference inventory (kubeadm, or the
    same cluster with ``distribution: k3s``; tests/integration/test_warewulf.py keeps them) to
    the distribution's own config: the VIP, its name and the Warewulf server are API SANs, and
    the node's facts reach the driver."""
    from core.config import load_config
    from core.drivers import driver_for

    overlay = GOLDEN / ("overlay" if distribution == "kubeadm" else f"overlay-{distribution}") / "4.6"
    control = load_config(overlay / "control0/etc/ek8s/node.yaml")
    worker = load_config(overlay / "worker1/etc/ek8s/node.yaml")
    assert driver_for(control).name == distribution and control.service_manager == "systemd"
    sans = {"10.0.0.99", "vip.kubernetes.local", "10.0.0.13"}
    if distribution == "kubeadm":
        _, cluster = yaml.safe_load_all(render_init_config(control, TOKEN, KEY))
        assert sans <= set(cluster["apiServer"]["certSANs"])
        assert cluster["controlPlaneEndpoint"] == "vip.kubernetes.local:8443"
        return
    init = yaml.safe_load(k3s.render_init_config(control, "11" * 32, "22" * 32))
    assert sans <= set(init["tls-san"]) and (init["node-name"], init["node-ip"]) == ("control0", "10.0.0.21")
    assert init["cluster-cidr"] == "10.249.0.0/16" and init["cluster-init"] is True
    join = yaml.safe_load(k3s.render_join_config(worker, K3S_MATERIAL))
    assert join["server"] == "https://vip.kubernetes.local:8443" and join["node-name"] == "worker1"
    assert join["token"] == K3S_MATERIAL.certificate_key  # the agent token, never the server token


def directives(text: str) -> set[str]:
    return {line.split()[0] for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")}


def test_keepalived_conf_asks_for_exactly_one_scheduling() -> None:
    """Real-time (``vrrp_rt_priority``) or nice (``vrrp_priority``), never both:
    :func:`phylactery.daemons.vrrp_realtime_allowed` picks one."""
    rt, nice = directives(keepalived(realtime=True)), directives(keepalived(realtime=False))
    assert "vrrp_rt_priority" in rt and "vrrp_priority" not in rt
    assert "vrrp_priority" in nice and "vrrp_rt_priority" not in nice
    assert f"vrrp_priority {render.VRRP_NICE}" in keepalived(realtime=False)
