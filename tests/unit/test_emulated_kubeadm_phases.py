"""The lab's emulated kubeadm without root or daemons: its workflow runner (kubeadm's
``phases/workflow``), the phase lists per version, its preflight checks and messages, and the
configuration API its version reads."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import yaml

from core.versions import parse
from lab.kubeadm import config, init, join, preflight, reset
from lab.kubeadm.workflow import KubeadmError, Phase, PhaseError, Runner
from lab.nodekit import Root


def test_the_runner_runs_phases_depth_first_skips_and_names_the_failed_one() -> None:
    seen: list[str] = []

    def step(name: str):  # type: ignore[no-untyped-def]
        return lambda d: seen.append(name)

    def boom(d: object) -> None:
        raise KubeadmError("no quorum")

    phases: tuple[Phase[object], ...] = (
        Phase("preflight", step("preflight")),
        Phase("prepare", phases=(Phase("certs", step("certs")), Phase("kubeconfig", step("kubeconfig")))),
        Phase("off", step("off"), run_if=lambda d: False, phases=(Phase("child", step("child")),)),
        Phase("skipped", step("skipped"), phases=(Phase("below", step("below")),)),
        Phase("join", phases=(Phase("etcd", boom),)),
        Phase("never", step("never")),
    )
    runner = Runner(phases, frozenset({"prepare/kubeconfig", "skipped"}))
    with pytest.raises(PhaseError) as err:
        runner.run(object())
    # run_if says no: only that phase's own run is skipped; a skipped parent takes its children.
    assert seen == ["preflight", "certs", "child"]
    assert runner.ran == ["preflight", "prepare/certs", "off/child"]
    assert runner.skipped == ["prepare/kubeconfig", "off", "skipped", "skipped/below"]
    assert str(err.value) == "error execution phase join/etcd: no quorum" and err.value.phase == "join/etcd"


def _names(phases: tuple[Phase[join.JoinData], ...], data: object) -> list[str]:
    runner: Runner[object] = Runner(phases)  # type: ignore[arg-type]
    return [full for full, p, on in runner.visit() if p.run is not None and (p.run_if is None or p.run_if(data))]


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        (
            "v1.32.1",
            [
                "preflight",
                "control-plane-prepare/download-certs",
                "control-plane-prepare/certs",
                "control-plane-prepare/kubeconfig",
                "control-plane-prepare/control-plane",
                "check-etcd",
                "kubelet-start",
                "control-plane-join/etcd",
            ],
        ),
        (
            "v1.36.4",
            [
                "preflight",
                "control-plane-prepare/download-certs",
                "control-plane-prepare/certs",
                "control-plane-prepare/kubeconfig",
                "control-plane-prepare/control-plane",
                "check-etcd",
                "kubelet-start",
                "etcd-join",
                "kubelet-wait-bootstrap",
                "wait-control-plane",
            ],
        ),
    ],
)
def test_a_control_plane_join_runs_the_phases_of_its_version(version: str, expected: list[str]) -> None:
    jc = {"nodeRegistration": {"name": "control1"}, "controlPlane": {"localAPIEndpoint": {"advertiseAddress": "x"}}}
    d = join.JoinData(Root("/nonexistent"), None, parse(version), jc, frozenset())  # type: ignore[arg-type]
    assert _names(join.PHASES, d) == expected


def test_a_worker_join_is_the_same_in_every_version() -> None:
    for version in ("v1.32.1", "v1.36.4"):
        d = join.JoinData(Root("/x"), None, parse(version), {"nodeRegistration": {"name": "w"}}, frozenset())  # type: ignore[arg-type]
        assert _names(join.PHASES, d) == ["preflight", "kubelet-start"]


def test_reset_and_init_phases_are_kubeadms() -> None:
    assert [p.name for p in reset.PHASES] == ["preflight", "remove-etcd-member", "cleanup-node"]
    assert [p.name for p in init.PHASES][:6] == [
        "preflight",
        "certs",
        "kubeconfig",
        "etcd",
        "control-plane",
        "kubelet-start",
    ]


# -- preflight ---------------------------------------------------------------------------
def test_dir_and_file_checks_have_kubeadms_names_and_messages(tmp_path: Path) -> None:
    r = Root(str(tmp_path))
    etcd = preflight.dir_available(r, "/var/lib/etcd")
    assert etcd.name == "DirAvailable--var-lib-etcd" and etcd.run() == []
    (tmp_path / "var/lib/etcd").mkdir(parents=True)
    assert etcd.run() == [], "an empty directory is available"
    (tmp_path / "var/lib/etcd/member").mkdir()
    assert etcd.run() == ["/var/lib/etcd is not empty"]
    conf = preflight.file_available(r, "/etc/kubernetes/kubelet.conf")
    assert conf.name == "FileAvailable--etc-kubernetes-kubelet.conf" and conf.run() == []
    (tmp_path / "etc/kubernetes").mkdir(parents=True)
    (tmp_path / "etc/kubernetes/kubelet.conf").write_text("x")
    assert conf.run() == ["/etc/kubernetes/kubelet.conf already exists"]


def test_a_port_check_fails_while_something_listens() -> None:
    with socket.create_server(("127.0.0.1", 0)) as held:
        port = held.getsockname()[1]
        check = preflight.port_open(port)
        assert check.name == f"Port-{port}" and check.run() == [f"Port {port} is in use"]
    assert check.run() == []


def test_the_checks_of_each_command(tmp_path: Path) -> None:
    r = Root(str(tmp_path))
    init_names = [c.name for c in preflight.init_node_checks(r, 6443, secondary_control_plane=False)]
    assert init_names == [
        "Port-6443",
        "Port-10259",
        "Port-10257",
        "FileAvailable--etc-kubernetes-manifests-kube-apiserver.yaml",
        "FileAvailable--etc-kubernetes-manifests-kube-controller-manager.yaml",
        "FileAvailable--etc-kubernetes-manifests-kube-scheduler.yaml",
        "FileAvailable--etc-kubernetes-manifests-etcd.yaml",
        "Port-10250",
        "Port-2379",
        "Port-2380",
        "DirAvailable--var-lib-etcd",
    ]
    secondary = [c.name for c in preflight.init_node_checks(r, 6443, secondary_control_plane=True)]
    assert "Port-10250" not in secondary and "DirAvailable--var-lib-etcd" in secondary
    assert [c.name for c in preflight.join_node_checks(r, control_plane=False)] == [
        "FileAvailable--etc-kubernetes-kubelet.conf",
        "FileAvailable--etc-kubernetes-bootstrap-kubelet.conf",
        "Port-10250",
        "FileAvailable--etc-kubernetes-pki-ca.crt",
    ]


def _failing(tmp_path: Path) -> list[preflight.Check]:
    (tmp_path / "var/lib/etcd/member").mkdir(parents=True)
    return [preflight.dir_available(Root(str(tmp_path)), "/var/lib/etcd")]


def test_preflight_errors_are_the_message_until_1_33(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(preflight.PreflightFailed) as err:
        preflight.run_checks(_failing(tmp_path), frozenset(), parse("v1.32.1"))
    assert str(err.value) == (
        "[preflight] Some fatal errors occurred:\n\t[ERROR DirAvailable--var-lib-etcd]: /var/lib/etcd is not empty\n"
        + preflight.IF_YOU_KNOW
    )
    assert capsys.readouterr().err == ""


def test_preflight_errors_are_printed_from_1_34(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(preflight.PreflightFailed) as err:
        preflight.run_checks(_failing(tmp_path), frozenset(), parse("v1.36.4"))
    assert str(err.value) == "preflight checks failed"
    assert "\t[ERROR DirAvailable--var-lib-etcd]: /var/lib/etcd is not empty\n" in capsys.readouterr().err


@pytest.mark.parametrize("ignored", ["diravailable--var-lib-etcd", "all"])
def test_an_ignored_check_is_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str], ignored: str) -> None:
    preflight.run_checks(_failing(tmp_path), frozenset({ignored}), parse("v1.32.1"))
    assert capsys.readouterr().err == "\t[WARNING DirAvailable--var-lib-etcd]: /var/lib/etcd is not empty\n"


def test_ignored_checks_come_from_the_flag_and_the_configuration() -> None:
    doc = {"nodeRegistration": {"ignorePreflightErrors": ["Port-6443"]}}
    assert config.ignored_preflight_errors("DirAvailable--var-lib-etcd,", doc) == {
        "diravailable--var-lib-etcd",
        "port-6443",
    }


# -- configuration -----------------------------------------------------------------------
def _config(tmp_path: Path, api: str) -> Path:
    path = tmp_path / "join.yaml"
    path.write_text(yaml.safe_dump({"apiVersion": api, "kind": "JoinConfiguration"}))
    return path


def test_v1beta4_is_read_by_every_version(tmp_path: Path) -> None:
    for v in ("v1.32.1", "v1.36.4"):
        assert "JoinConfiguration" in config.load_docs(_config(tmp_path, "kubeadm.k8s.io/v1beta4"), parse(v))


def test_v1beta3_is_refused_from_1_36(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(KubeadmError, match=r'uses an old API spec: "kubeadm\.k8s\.io/v1beta3"'):
        config.load_docs(_config(tmp_path, "kubeadm.k8s.io/v1beta3"), parse("v1.36.4"))
    with pytest.raises(KubeadmError, match=r"reads kubeadm\.k8s\.io/v1beta4 fields only"):
        config.load_docs(_config(tmp_path, "kubeadm.k8s.io/v1beta3"), parse("v1.35.0"))
    assert "uses a deprecated API spec" in capsys.readouterr().err


def test_the_control_plane_version_must_be_within_one_minor(capsys: pytest.CaptureFixture[str]) -> None:
    config.check_kubernetes_version("v1.35.2", parse("v1.36.4"))
    with pytest.raises(KubeadmError, match=r"control plane version >= 1\.35\.0\. Current version: v1\.32\.1"):
        config.check_kubernetes_version("v1.32.1", parse("v1.36.4"))
    config.check_kubernetes_version("v1.36.0", parse("v1.35.1"))
    assert "Kubernetes version is greater than kubeadm version" in capsys.readouterr().err
