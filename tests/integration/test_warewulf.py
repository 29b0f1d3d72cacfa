"""The Warewulf side: overlay templates (Go text/template, 4.5, 4.6 and 4.7 data shapes), the
inventory, `ek8s warewulf plan|apply` against a stand-in wwctl, `ek8s overlay build`.

Golden files live in tests/golden/overlay and tests/golden/warewulf; regenerate them with
EK8S_UPDATE_GOLDEN=1 after a deliberate change, and read the diff.
"""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from core.config import WAREWULF_FACTS, load_config
from manager import wwrender
from manager.cli import cli
from manager.inventory import Inventory, load_inventory

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden"
INVENTORY = ROOT / "warewulf_conf" / "inventory.yaml"
EK8S = [sys.executable, "-m", "manager"]
UPDATE = os.environ.get("EK8S_UPDATE_GOLDEN") == "1"
VERSIONS = ("4.5", "4.6", "4.7")
DISTRIBUTIONS = ("kubeadm", "k3s")
SERVER = {"ipaddr": "10.0.0.13", "netmask": "255.255.255.0", "network": "10.0.0.0", "buildhost": "wwserver"}


def check_golden(path: Path, text: str) -> None:
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"{path} missing: run with EK8S_UPDATE_GOLDEN=1"
    assert text == path.read_text(), f"{path} differs from the rendered output"


def inventory_data(distribution: str = "kubeadm") -> dict[str, object]:
    """The reference inventory (kubeadm); for k3s the same cluster with ``distribution: k3s``
    and the node images and CNI manifest left to their k3s defaults."""
    data = yaml.safe_load(INVENTORY.read_text())
    if distribution != "kubeadm":
        data["kubernetes"]["distribution"] = distribution
        del data["node_images"], data["cni_manifest"]
    return data


def inventory_file(tmp_path: Path, distribution: str) -> Path:
    """The reference inventory for ``distribution`` as a file (the checked-in one for kubeadm)."""
    if distribution == "kubeadm":
        return INVENTORY
    path = tmp_path / f"inventory-{distribution}.yaml"
    path.write_text(yaml.safe_dump(inventory_data(distribution), sort_keys=False))
    return path


def overlay_golden(distribution: str) -> Path:
    """Rendered overlays: tests/golden/overlay (kubeadm) and tests/golden/overlay-k3s."""
    return GOLDEN / ("overlay" if distribution == "kubeadm" else f"overlay-{distribution}")


def registry_fixture(inv: Inventory) -> dict[str, object]:
    """What Warewulf's registry holds once `ek8s warewulf apply` ran for ``inv``
    (:func:`manager.wwrender.registry_fixture`, which the lab's machines use too)."""
    return wwrender.registry_fixture(inv, SERVER)


@pytest.fixture(scope="module")
def wwtemplate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Go renderer (manager/wwtemplate), built with Debian's golang-go."""
    assert shutil.which("go"), "Go is needed for the template checks (apt-get install golang-go; `make test` does)"
    return wwrender.build_renderer(tmp_path_factory.mktemp("go") / "wwtemplate")


render = wwrender.render


TEMPLATES = sorted(p.relative_to(ROOT / "overlay") for p in (ROOT / "overlay").rglob("*.ww"))


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
@pytest.mark.parametrize("version", VERSIONS)
def test_overlay_templates_render_with_warewulf_data(
    wwtemplate: Path, tmp_path: Path, version: str, distribution: str
) -> None:
    inv = load_inventory(inventory_file(tmp_path, distribution))
    fixture = tmp_path / "registry.json"
    fixture.write_text(json.dumps(registry_fixture(inv)))
    assert len(TEMPLATES) == 4, TEMPLATES
    for node in ("control0", "worker1"):
        for tpl in TEMPLATES:
            res = render(wwtemplate, fixture, version, node, ROOT / "overlay" / tpl)
            assert res.returncode == 0, f"{tpl} for {node} on {version}: {res.stderr}"
            rel = Path(*tpl.parts[2:]).with_suffix("")  # overlay name and rootfs/ dropped, .ww too
            check_golden(overlay_golden(distribution) / version / node / rel, res.stdout)


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
def test_every_version_renders_the_same_files(distribution: str) -> None:
    golden = overlay_golden(distribution)
    for version in VERSIONS[1:]:
        for rendered in (golden / "4.5").rglob("*"):
            if rendered.is_file():
                other = golden / version / rendered.relative_to(golden / "4.5")
                assert rendered.read_text() == other.read_text(), (version, rendered)


def test_distributions_differ_only_in_node_yaml_facts() -> None:
    """One overlay for both distributions: what differs between a kubeadm and a k3s node is the
    distribution in node.yaml and the CNI manifest (k3s brings its own flannel)."""
    kubeadm, k3s = overlay_golden("kubeadm"), overlay_golden("k3s")
    files = sorted(p.relative_to(kubeadm) for p in kubeadm.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(k3s) for p in k3s.rglob("*") if p.is_file())
    for rel in files:
        a, b = (kubeadm / rel).read_text(), (k3s / rel).read_text()
        if rel.name != "node.yaml":
            assert a == b, rel
            continue
        changed = {ln for ln in a.splitlines() if ln not in b.splitlines()}
        changed |= {ln for ln in b.splitlines() if ln not in a.splitlines()}
        assert changed == {
            '  distribution: "kubeadm"',
            '  distribution: "k3s"',
            '  manifests: ["/usr/local/lib/ek8s/manifests/cni.yaml"]',
        }, rel


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
def test_rendered_node_yaml_is_the_inventory(tmp_path: Path, distribution: str) -> None:
    inv = load_inventory(inventory_file(tmp_path, distribution))
    for node in inv.expanded():
        path = overlay_golden(distribution) / "4.6" / node.name / "etc" / "ek8s" / "node.yaml"
        if not path.exists():  # golden files exist for control0 and worker1
            continue
        cfg = load_config(path)
        assert (cfg.node.name, cfg.node.address, cfg.node.interface, cfg.role) == (
            node.name,
            node.address,
            "net0",
            node.role,
        )
        assert cfg.cluster == "ek8s" and cfg.vip == inv.vip and cfg.share.path == Path("/share")
        assert cfg.kubernetes.version == "v1.36.4" and cfg.kubernetes.extra_sans == ["10.0.0.13"]
        assert cfg.kubernetes.distribution == distribution
        assert cfg.kubernetes.manifests == ([inv.cni_manifest] if inv.cni_manifest else [])
        assert cfg.service_manager == "systemd"
    hosts = (overlay_golden(distribution) / "4.5" / "control0" / "etc" / "hosts").read_text()
    assert "10.0.0.99 vip.kubernetes.local" in hosts
    # The device name comes from the role profile, merged into each node as Warewulf does.
    assert "10.0.0.23 control2 control2-default control2-net0" in hosts


@pytest.mark.parametrize("version", VERSIONS)
def test_a_nodes_labels_taints_and_roles_reach_its_node_yaml(wwtemplate: Path, tmp_path: Path, version: str) -> None:
    """Labels, taints and roles of a node and its groups travel as the node's own tags
    (ek8s_labels, ek8s_taints, ek8s_roles, space-separated) and node.yaml.ww hands them to
    ek8s unchanged, which parses them; a node without any renders as before."""
    data = inventory_data()
    data["groups"] = [
        {"nodes": "worker1", "labels": {"slurm.partition": "gpu"}, "roles": ["gpu", "storage"]},
        {"nodes": "worker1", "taints": ["nvidia.com/gpu=present:NoSchedule", "dedicated:NoExecute"]},
    ]
    path = tmp_path / "inventory.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    inv = load_inventory(path)
    fixture = tmp_path / "registry.json"
    fixture.write_text(json.dumps(wwrender.registry_fixture(inv, SERVER, version)))
    tpl = ROOT / "overlay/ek8s/rootfs/etc/ek8s/node.yaml.ww"
    for node in ("worker1", "worker0"):
        res = render(wwtemplate, fixture, version, node, tpl)
        assert res.returncode == 0, res.stderr
        (tmp_path / f"{node}.yaml").write_text(res.stdout)
    cfg = load_config(tmp_path / "worker1.yaml")
    assert cfg.node.scheduling == next(n.scheduling for n in inv.expanded() if n.name == "worker1")
    assert cfg.node.scheduling.all_labels() == {
        "slurm.partition": "gpu",
        "node-role.kubernetes.io/gpu": "",
        "node-role.kubernetes.io/storage": "",
    }
    assert [str(t) for t in cfg.node.taints] == ["nvidia.com/gpu=present:NoSchedule", "dedicated:NoExecute"]
    assert "labels" not in (tmp_path / "worker0.yaml").read_text()
    assert not load_config(tmp_path / "worker0.yaml").node.scheduling


def test_version_shapes_are_enforced(wwtemplate: Path, tmp_path: Path) -> None:
    """The renderer is not lenient: 4.5's .Get on .AllNodes fails on 4.6 data and vice versa."""
    fixture = tmp_path / "registry.json"
    fixture.write_text(json.dumps(registry_fixture(load_inventory(INVENTORY))))
    get = tmp_path / "get.ww"
    get.write_text("{{ range .AllNodes }}{{ .Id.Get }} {{ end }}")
    plain = tmp_path / "plain.ww"
    plain.write_text("{{ range .AllNodes }}{{ range .NetDevs }}{{ .Ipaddr.To4 }}{{ end }}{{ end }}")
    assert render(wwtemplate, fixture, "4.5", "control0", get).returncode == 0
    res = render(wwtemplate, fixture, "4.6", "control0", get)
    assert res.returncode == 1 and "Get" in res.stderr
    assert render(wwtemplate, fixture, "4.6", "control0", plain).returncode == 0
    assert render(wwtemplate, fixture, "4.5", "control0", plain).returncode == 1


def test_node_without_tags_renders_a_node_yaml_that_names_the_missing_fact(wwtemplate: Path, tmp_path: Path) -> None:
    data = registry_fixture(load_inventory(INVENTORY))
    del data["profiles"]["ek8s-control"]["tags"]["ek8s_role"]  # type: ignore[index]
    fixture = tmp_path / "registry.json"
    fixture.write_text(json.dumps(data))
    res = render(wwtemplate, fixture, "4.6", "control0", ROOT / "overlay/ek8s/rootfs/etc/ek8s/node.yaml.ww")
    assert res.returncode == 0, res.stderr
    (tmp_path / "node.yaml").write_text(res.stdout)
    out = subprocess.run([*EK8S, "config", "check", str(tmp_path / "node.yaml")], capture_output=True, text=True)
    assert out.returncode == 2 and "role" in out.stderr


NODE_YAML_WW = ROOT / "overlay/ek8s/rootfs/etc/ek8s/node.yaml.ww"


def _check_rendered(
    tool: Path, tmp_path: Path, data: dict[str, object], version: str
) -> tuple[subprocess.CompletedProcess[str], subprocess.CompletedProcess[str], Path]:
    """Render node.yaml.ww for control0 from ``data``, then `ek8s config check` it."""
    fixture = tmp_path / "registry.json"
    fixture.write_text(json.dumps(data))
    rendered = render(tool, fixture, version, "control0", NODE_YAML_WW)
    assert rendered.returncode == 0, rendered.stderr
    path = tmp_path / "node.yaml"
    path.write_text(rendered.stdout)
    check = subprocess.run([*EK8S, "config", "check", str(path)], capture_output=True, text=True, timeout=60)
    return rendered, check, path


@pytest.mark.parametrize("version", VERSIONS)
def test_node_yaml_without_its_profile_is_refused_naming_the_missing_facts(
    wwtemplate: Path, tmp_path: Path, version: str
) -> None:
    """A node whose profile is missing renders without the cluster's facts (Warewulf only
    warns); node.yaml says it was rendered by Warewulf, so ek8s refuses it (exit 2) and names
    each missing fact and its tag instead of running as cluster "default"."""
    data = registry_fixture(load_inventory(INVENTORY))
    del data["profiles"]["ek8s-control"]  # type: ignore[attr-defined]
    rendered, check, path = _check_rendered(wwtemplate, tmp_path, data, version)
    assert "ek8s-control" in rendered.stderr  # Warewulf's warning, the only sign on the server
    assert check.returncode == 2, check.stdout + check.stderr
    assert str(path) in check.stderr and "node control0" in check.stderr and "Traceback" not in check.stderr
    for dotted, tag in WAREWULF_FACTS.items():
        assert f"  {dotted}: missing (profile tag {tag})" in check.stderr
    assert "node.address" not in check.stderr
    # One tag deleted from the profile: that fact alone.
    data = registry_fixture(load_inventory(INVENTORY))
    del data["profiles"]["ek8s-control"]["tags"]["ek8s_vip"]  # type: ignore[index]
    _, check, _ = _check_rendered(wwtemplate, tmp_path, data, version)
    assert check.returncode == 2 and check.stderr.count(": missing (") == 1
    assert "vip.address: missing (profile tag ek8s_vip)" in check.stderr


@pytest.mark.parametrize(("version", "shown"), [("4.5", "''"), ("4.6", "'<nil>'"), ("4.7", "'<nil>'")])
def test_empty_node_address_is_refused_naming_the_node_and_field(
    wwtemplate: Path, tmp_path: Path, version: str, shown: str
) -> None:
    """4.5 renders an empty address as "", 4.6 as "<nil>" (an empty net.IP)."""
    data = registry_fixture(load_inventory(INVENTORY))
    data["nodes"][0]["netdevs"]["default"]["ipaddr"] = ""  # type: ignore[index]
    rendered, check, _ = _check_rendered(wwtemplate, tmp_path, data, version)
    assert f"address: {shown.replace(chr(39), chr(34))}" in rendered.stdout
    assert check.returncode == 2, check.stdout + check.stderr
    assert "node.address:" in check.stderr and f"control0 has no address ({shown})" in check.stderr
    assert "wwctl node set control0" in check.stderr


def test_required_facts_are_the_profile_tags_the_template_reads() -> None:
    """core.config.WAREWULF_FACTS, the plan's profile tags and node.yaml.ww agree: every
    required fact is a tag the plan sets and the template reads; only the CNI manifest is
    optional."""
    tags = load_inventory(INVENTORY).cluster_tags()
    template = NODE_YAML_WW.read_text()
    assert set(tags) - set(WAREWULF_FACTS.values()) == {"ek8s_cni_manifest"}
    for dotted, tag in WAREWULF_FACTS.items():
        assert f'index .Tags "{tag}"' in template, tag
        leaf = dotted.rsplit(".", 1)[-1]
        assert f"{leaf}: {{{{ printf" in template, dotted


def _render_text(tool: Path, tmp_path: Path, data: dict[str, object], version: str, text: str) -> tuple[int, str, str]:
    fixture = tmp_path / "registry.json"
    fixture.write_text(json.dumps(data))
    tpl = tmp_path / "t.ww"
    tpl.write_text(text)
    res = render(tool, fixture, version, "control0", tpl)
    return res.returncode, res.stdout, res.stderr


@pytest.mark.parametrize(
    ("version", "warning"),
    [
        ("4.5", "Profile not found for node 'control0': ek8s-control"),
        ("4.6", "profile not found: ek8s-control"),
        ("4.7", "profile not found: ek8s-control"),
    ],
)
def test_renderer_merges_tags_only_from_profiles_that_exist(
    wwtemplate: Path, tmp_path: Path, version: str, warning: str
) -> None:
    """Warewulf skips a node's missing profile with a warning and renders on
    (4.5 node/constructors.go:195-199, 4.6 node/mergo.go:147-150); the node's own tags win."""
    data = registry_fixture(load_inventory(INVENTORY))
    data["nodes"][0]["tags"] = {"ek8s_role": "worker"}  # type: ignore[index]
    text = '{{ index .Tags "ek8s_cluster" }}|{{ index .Tags "ek8s_role" }}'
    assert _render_text(wwtemplate, tmp_path, data, version, text) == (0, "ek8s|worker", "")
    del data["profiles"]["ek8s-control"]  # type: ignore[attr-defined]
    code, out, err = _render_text(wwtemplate, tmp_path, data, version, text)
    assert (code, out) == (0, "|worker") and warning in err


def test_renderer_data_types_are_warewulfs(wwtemplate: Path, tmp_path: Path) -> None:
    """Receivers and field types as in v4.5.8 / v4.6.5 (manager/wwtemplate/main.go cites them)."""
    data = registry_fixture(load_inventory(INVENTORY))
    node = data["nodes"][0]  # type: ignore[index]
    node["netdevs"]["ib"] = {"device": "ib0", "ipaddr": "10.1.0.21", "onboot": "false"}
    # 4.5 marks only the primary device; the others' Primary is empty, not "false".
    text = "{{ range $n, $d := .NetDevs }}{{ $n }}=[{{ $d.Primary }}] {{ end }}"
    assert _render_text(wwtemplate, tmp_path, data, "4.5", text)[1] == "default=[true] ib=[] "
    # 4.6: Primary() reads an unexported field that the gob copy behind the top-level fields
    # drops; .ThisNode keeps it.
    text = "{{ range $n, $d := .ThisNode.NetDevs }}{{ $n }}={{ $d.Primary }} {{ end }}"
    assert _render_text(wwtemplate, tmp_path, data, "4.6", text)[1] == "default=true ib=false "
    # 4.6 OnBoot is a string type: "false" is true inside {{if}}; .Bool reads it.
    text = '{{ with index .NetDevs "ib" }}{{ if .OnBoot }}if{{ end }} {{ .OnBoot.Bool }}{{ end }}'
    assert _render_text(wwtemplate, tmp_path, data, "4.6", text)[1] == "if false"
    # Pointer receivers: 4.6 Id() works on the addressable .ThisNode and .AllNodes entries,
    # not on the embedded node of the template data, which Warewulf passes by value.
    assert _render_text(wwtemplate, tmp_path, data, "4.6", "{{ .ThisNode.Id }}")[1] == "control0"
    code, _, err = _render_text(wwtemplate, tmp_path, data, "4.6", "{{ .Node.Id }}")
    assert code == 1 and "can't evaluate field Id" in err
    assert _render_text(wwtemplate, tmp_path, data, "4.5", "{{ .ThisNode.Id.Get }}")[1] == "control0"
    # An empty address: 4.6's net.IP prints "<nil>", 4.5's string is empty.
    node["netdevs"]["default"]["ipaddr"] = ""
    text = '{{ with index .NetDevs "default" }}[{{ .Ipaddr }}]{{ end }}'
    assert _render_text(wwtemplate, tmp_path, data, "4.6", text)[1] == "[<nil>]"
    assert _render_text(wwtemplate, tmp_path, data, "4.5", text)[1] == "[]"


@pytest.mark.parametrize("version", VERSIONS)
def test_renderer_writes_like_warewulf(wwtemplate: Path, tmp_path: Path, version: str) -> None:
    """-out writes as CarefulWriteBuffer does: an existing file is kept as .wwbackup unless the
    template calls {{ nobackup }}; {{ abort }} writes nothing."""
    fixture = tmp_path / "registry.json"
    fixture.write_text(json.dumps(registry_fixture(load_inventory(INVENTORY))))
    for case, (text, backup) in enumerate((("new", True), ("{{ nobackup }}new", False), ("{{ abort }}new", False))):
        out = tmp_path / str(case) / "hosts"
        out.parent.mkdir()
        out.write_text("old")
        tpl = tmp_path / "hosts.ww"
        tpl.write_text(text)
        assert render(wwtemplate, fixture, version, "control0", tpl, out=out).returncode == 0
        assert out.with_name("hosts.wwbackup").exists() == backup
        assert out.read_text() == ("old" if "abort" in text else "new")


@pytest.mark.parametrize("version", VERSIONS)
def test_hosts_replaces_etc_hosts_without_a_wwbackup(wwtemplate: Path, tmp_path: Path, version: str) -> None:
    """ek8s-hosts comes after the overlay that wrote /etc/hosts first; Warewulf would keep
    that one as /etc/hosts.wwbackup in the node's root unless the template says nobackup."""
    fixture = tmp_path / "registry.json"
    fixture.write_text(json.dumps(registry_fixture(load_inventory(INVENTORY))))
    hosts = tmp_path / "root" / "etc" / "hosts"
    hosts.parent.mkdir(parents=True)
    hosts.write_text("127.0.0.1 localhost\n")  # from Warewulf's own hosts overlay
    res = render(wwtemplate, fixture, version, "control0", ROOT / "overlay/ek8s-hosts/rootfs/etc/hosts.ww", out=hosts)
    assert res.returncode == 0, res.stderr
    assert "vip.kubernetes.local" in hosts.read_text()
    assert sorted(p.name for p in hosts.parent.iterdir()) == ["hosts"]


@pytest.mark.parametrize("version", VERSIONS)
def test_4_7_abort_halts_the_template_where_4_5_and_4_6_run_on(wwtemplate: Path, tmp_path: Path, version: str) -> None:
    """4.7's abort returns an error that stops the template (v4.7.0 overlay.go:1196-1199,
    1251-1254); 4.5's and 4.6's only clear a flag, so a failing call after it still fails."""
    data = registry_fixture(load_inventory(INVENTORY))
    code, _, err = _render_text(wwtemplate, tmp_path, data, version, "{{ abort }}{{ .ThisNode.NoSuchField }}")
    assert (code == 0) == (version == "4.7"), err


@pytest.mark.parametrize("version", VERSIONS)
def test_renderer_merges_profiles_as_warewulf(wwtemplate: Path, tmp_path: Path, version: str) -> None:
    """A scalar comes from the node, else the right-most profile setting it; overlay lists are
    appended and `~name` drops name; nested profiles exist on 4.6+ only (node/mergo.go
    getProfilesProfiles); 4.5 merges its profiles the same way otherwise, and its role
    profile negates nothing (4.6+ drop Warewulf's `hosts` for ek8s-hosts)."""
    data = wwrender.registry_fixture(load_inventory(INVENTORY), SERVER, version)
    profiles = data["profiles"]
    profiles["site"] = {"image": "site-image", "root": "initramfs", "system_overlays": ["site", "hosts"],
                        "profiles": ["nested"], "netdevs": {"default": {"netmask": "255.255.0.0"}}}  # fmt: skip
    profiles["nested"] = {"tags": {"from_nested": "yes"}}
    node = data["nodes"][0]  # control0
    node["profiles"] = ["default", "site", "ek8s-control"]
    netmask = '{{ with index .NetDevs "default" }}{{ .Netmask }}{{ end }}|{{ index .Tags "from_nested" }}'
    if version == "4.5":  # 4.5's node fields are NodeConf's, top level
        text = "{{ .ContainerName }}|{{ .Root }}|{{ .SystemOverlay }}|" + netmask
    else:
        text = "{{ .ThisNode.ImageName }}|{{ .ThisNode.Root }}|{{ .ThisNode.SystemOverlay }}|" + netmask
    overlays = "[site hosts wwinit ek8s ek8s-hosts]" if version == "4.5" else "[site ek8s ek8s-hosts]"
    nested = "" if version == "4.5" else "yes"
    code, out, err = _render_text(wwtemplate, tmp_path, data, version, text)
    assert code == 0, err
    assert out == f"ek8s-control|tmpfs|{overlays}|255.255.255.0|{nested}"
    node["image"] = "own-image"
    code, out, _ = _render_text(wwtemplate, tmp_path, data, version, text)
    assert out.startswith("own-image|")


# -- inventory and plan -----------------------------------------------------------------


def plan_golden(version: str, distribution: str) -> Path:
    """tests/golden/warewulf/plan-<version>.sh (kubeadm) and plan-k3s-<version>.sh."""
    prefix = "plan" if distribution == "kubeadm" else f"plan-{distribution}"
    return GOLDEN / "warewulf" / f"{prefix}-{version}.sh"


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
@pytest.mark.parametrize("version", VERSIONS)
def test_plan_golden(tmp_path: Path, version: str, distribution: str) -> None:
    inventory = inventory_file(tmp_path, distribution)
    res = subprocess.run(
        [*EK8S, "warewulf", "plan", "--offline", "--version", version, str(inventory)],
        capture_output=True,
        text=True,
        check=True,
    )
    check_golden(plan_golden(version, distribution), res.stdout)
    image_flag = "--container" if version == "4.5" else "--image"
    images = {"kubeadm": ["ek8s-control", "ek8s-base"], "k3s": ["ek8s-k3s", "ek8s-k3s"]}[distribution]
    assert [ln.split()[1] for ln in res.stdout.splitlines() if ln.strip().startswith(image_flag)] == images
    assert f"ek8s_distribution={distribution}" in res.stdout
    assert ("ek8s_cni_manifest" in res.stdout) == (distribution == "kubeadm")
    # Nodes carry only their own: no image, root, netmask or tag on any node command.
    for cmd in res.stdout.split("\n\n"):
        if "wwctl node " in cmd:
            assert not any(f in cmd for f in (image_flag, "--root", "--netmask", "--netdev", "--tagadd")), cmd
    nfs = subprocess.run(
        [*EK8S, "warewulf", "nfs", "--version", version, str(inventory)], capture_output=True, text=True, check=True
    )
    # The share does not depend on the distribution: one golden file per version.
    check_golden(GOLDEN / "warewulf" / f"nfs-{version}.yaml", nfs.stdout)
    assert "no_root_squash" in nfs.stdout and "lookupcache=positive" in nfs.stdout


def test_plan_is_valid_shell(tmp_path: Path) -> None:
    for version in VERSIONS:
        for distribution in DISTRIBUTIONS:
            subprocess.run(["sh", "-n", str(plan_golden(version, distribution))], check=True)


# The plan for 3 control + 120 workers on a fresh Warewulf, as docs/warewulf.md states it.
SCALE_COMMANDS = {"4.5": 138, "4.6": 139, "4.7": 139}


@pytest.mark.parametrize("version", VERSIONS)
def test_plan_for_3_plus_120_nodes_counts_what_the_docs_say(tmp_path: Path, version: str) -> None:
    data = inventory_data()
    data["nodes"] = [
        {"name": "control[0-2]", "role": "control", "address": "10.0.0.21",
         "mac": [f"52:54:00:00:00:{i:02x}" for i in range(3)]},
        {"name": "worker[0-119]", "role": "worker", "address": "10.0.0.100",
         "mac": [f"52:54:00:00:01:{i:02x}" for i in range(120)]},
    ]  # fmt: skip
    data["warewulf"]["netmask"] = "255.255.254.0"  # type: ignore[index]
    path = tmp_path / "inventory.yaml"
    path.write_text(yaml.safe_dump(data))
    res = subprocess.run(
        [*EK8S, "warewulf", "plan", "--offline", "--version", version, str(path)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    commands = [ln for ln in res.stdout.splitlines() if ln.startswith(("wwctl ", "install ", "service ", "exportfs "))]
    assert len(commands) == SCALE_COMMANDS[version]
    assert f"123 nodes, {SCALE_COMMANDS[version]} commands" in res.stdout
    assert sum(c.startswith("wwctl node add ") for c in commands) == 123
    lines = len(res.stdout.splitlines())
    docs = (ROOT / "docs" / "warewulf.md").read_text()
    assert f"| {version} | {SCALE_COMMANDS[version]} | {lines} |" in docs, (version, lines)
    if version != "4.5":
        assert "wwctl overlay build 'control[0-2],worker[0-119]'" in res.stdout


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"nodes": [{"name": "control[0-2]", "role": "control", "address": "10.0.0.21", "mac": "52:54:00:00:00:21"}]},
         "nodes.0"),
        ({"nodes": [{"name": "Control0", "role": "control", "address": "10.0.0.21", "mac": "52:54:00:00:00:21"}]},
         "nodes.0.name"),
        ({"nodes": [{"name": "c[0-", "role": "control", "address": "10.0.0.21", "mac": "52:54:00:00:00:21"}]},
         "nodes.0.name"),
        ({"nodes": [{"name": "c0", "role": "control", "address": "10.0.0.21", "mac": "52:54:00:00:00"}]},
         "nodes.0.mac"),
        ({"nodes": [{"name": "c0", "role": "boss", "address": "10.0.0.21", "mac": "52:54:00:00:00:21"}]},
         "nodes.0.role"),
        ({"nodes": [{"name": "w0", "role": "worker", "address": "10.0.0.21", "mac": "52:54:00:00:00:21"}]},
         "at least one control node"),
        ({"vip": {"address": "10.0.0.21"}}, "vip.address"),
        ({"vip": {"address": "10.9.0.1"}}, "vip.address"),
        ({"kubernetes": {"version": "1.32"}}, "kubernetes.version"),
        ({"kubernetes": {"distribution": "k8s"}}, "kubernetes.distribution"),
        # k3s with the reference file's kubeadm images, then with its kubeadm CNI manifest.
        ({"kubernetes": {"distribution": "k3s"}}, "node_images.control"),
        ({"kubernetes": {"distribution": "k3s"}, "node_images": {"worker": "ek8s-base"}}, "node_images.worker"),
        ({"kubernetes": {"distribution": "k3s"}, "node_images": {}}, "cni_manifest"),
        ({"cluster": "EK8S"}, "cluster"),
        ({"warewulf": {"netmask": "255.0.255.0"}}, "warewulf.netmask"),
        ({"warewulf": {"version": "4.8"}}, "warewulf.version"),
        ({"warewulf": {"profile": "ek8s-ek8s"}}, "one profile per role"),
        ({"share": {"path": "share"}}, "share.path"),
        ({"colour": "blue"}, "colour"),
    ],
)  # fmt: skip
def test_invalid_inventory_exits_2_naming_the_field(tmp_path: Path, change: dict[str, object], field: str) -> None:
    data = yaml.safe_load(INVENTORY.read_text()) | change
    bad = tmp_path / "inventory.yaml"
    bad.write_text(yaml.safe_dump(data))
    ww = WW(tmp_path, "4.7.0")
    for cmd in (["plan", "--offline"], ["apply"]):
        res = ww.ek8s("warewulf", *cmd, "--version", "4.7", inventory=bad)
        assert res.returncode == 2, res.stdout + res.stderr
        assert field in res.stderr and str(bad) in res.stderr
    assert not ww.log.exists(), "nothing may run for an invalid inventory"


def test_unquoted_macs_read_as_written(tmp_path: Path) -> None:
    """YAML 1.1 (PyYAML) reads an unquoted all-decimal MAC as a base-60 integer
    (52:54:00:00:00:21 -> 41135040021); the inventory reads it as written, as Warewulf's Go
    YAML would, and a MAC that still arrives as a number is refused naming the field."""
    text = INVENTORY.read_text().replace('"', "")
    assert "mac: [52:54:00:00:00:21, 52:54:00:00:00:22" in text
    text += "  - {name: worker9, role: worker, address: 10.0.0.49, mac: 52:54:00:00:00:49}\n"
    path = tmp_path / "inventory.yaml"
    path.write_text(text)
    assert [n.mac for n in load_inventory(path).expanded()] == [
        f"52:54:00:00:00:{last}" for last in (21, 22, 23, 41, 42, 49)
    ]
    res = subprocess.run(
        [*EK8S, "warewulf", "plan", "--offline", "--version", "4.6", str(path)], capture_output=True, text=True
    )
    assert res.returncode == 0 and "--hwaddr 52:54:00:00:00:49" in res.stdout, res.stderr
    path.write_text(text.replace("mac: 52:54:00:00:00:49", "mac: 525400000049"))
    res = subprocess.run([*EK8S, "warewulf", "plan", "--offline", str(path)], capture_output=True, text=True)
    assert res.returncode == 2 and "nodes.2.mac" in res.stderr and "is a number, not a MAC" in res.stderr


def test_hostlist_expansion_counts_addresses() -> None:
    nodes = load_inventory(INVENTORY).expanded()
    assert [(n.name, n.address) for n in nodes] == [
        ("control0", "10.0.0.21"),
        ("control1", "10.0.0.22"),
        ("control2", "10.0.0.23"),
        ("worker0", "10.0.0.41"),
        ("worker1", "10.0.0.42"),
    ]


def test_wwctl_version_parsing() -> None:
    from manager.wwplan import WarewulfError, parse_version

    assert parse_version("wwctl version:\t 4.5.8-1.el9") == "4.5"
    assert parse_version("Warewulf Version: v4.6.1") == "4.6"
    assert parse_version("wwctl version:\t 4.7.0-1") == "4.7"
    assert parse_version("4.8.2") == "4.7"
    with pytest.raises(WarewulfError):
        parse_version("4.4.1")
    with pytest.raises(WarewulfError):
        parse_version("command not found")


# -- the registry as Warewulf prints it ------------------------------------------------------


def test_registry_reads_warewulfs_own_json() -> None:
    """`node list -j` as Warewulf's own test expects it (v4.6.5
    internal/app/wwctl/node/list/main_test.go "single node list json output"), and a full node
    with the struct's json tags (node/datastructure.go: `image name`, `network devices`,
    net.IP as a string, the device's onboot spelled `onbot`), merged with its profiles."""
    from manager.wwregistry import parse_list_json

    assert parse_list_json('{\n  "n01": {\n    "profiles": [\n      "default"\n    ]\n  }\n}\n', "x") == {
        "n01": __import__("manager.wwregistry", fromlist=["Entity"]).Entity(profiles=("default",))
    }
    text = json.dumps(
        {
            "control0": {
                "profiles": ["default", "ek8s-control"],
                "image name": "ek8s-control",
                "root": "tmpfs",
                "system overlay": ["wwinit", "wwclient", "ek8s", "ek8s-hosts"],
                "runtime overlay": ["ssh.authorized_keys", "ek8s-hosts"],
                "kernel": {"args": ["quiet", "crashkernel=no"]},
                "network devices": {
                    "default": {"onbot": "true", "device": "net0", "hwaddr": "52:54:00:00:00:21",
                                "ipaddr": "10.0.0.21", "netmask": "255.255.255.0", "tags": {"DNS1": "1.1.1.1"}}
                },
                "tags": {"ek8s_role": "control"},
                "resources": {"fstab": [{"spec": "warewulf:/home", "file": "/home", "vfstype": "nfs"}]},
            }
        },
        indent=2,
    )  # fmt: skip
    node = parse_list_json(text, "wwctl node list -j")["control0"]
    assert (node.image, node.root, node.profiles) == ("ek8s-control", "tmpfs", ("default", "ek8s-control"))
    nd = node.netdevs["default"]
    assert (nd.device, nd.hwaddr, nd.ipaddr, nd.netmask, dict(nd.tags)) == (
        "net0", "52:54:00:00:00:21", "10.0.0.21", "255.255.255.0", {"DNS1": "1.1.1.1"},
    )  # fmt: skip
    assert node.fstab[0]["file"] == "/home" and node.runtime_overlays[-1] == "ek8s-hosts"
    from manager.wwregistry import WarewulfError

    for bad in ("NODE NAME  PROFILES\n---------  --------\nn1  default\n", "[]", '{"n1": {"tags": []}}'):
        with pytest.raises(WarewulfError):
            parse_list_json(bad, "wwctl node list -j")


def test_registry_of_4_5_is_its_nodes_conf_merged_as_4_5_merges() -> None:
    """4.5 has no -j (v4.5.8 node/list/root.go): its nodes.conf, `container name` for the image,
    profile values under the node's own."""
    from manager.wwregistry import parse_nodes_conf_45

    reg = parse_nodes_conf_45(
        "WW_INTERNAL: 45\nnodeprofiles:\n  default:\n    comment: x\n  ek8s-control:\n"
        "    container name: ek8s-control\n    root: tmpfs\n    network devices:\n      default:\n"
        "        device: net0\n        netmask: 255.255.255.0\n    tags:\n      ek8s_role: control\n"
        "nodes:\n  control0:\n    profiles:\n    - default\n    - ek8s-control\n    network devices:\n"
        "      default:\n        hwaddr: 52:54:00:00:00:21\n        ipaddr: 10.0.0.21\n    tags:\n"
        "      ek8s_role: worker\n",
        Path("nodes.conf"),
    )
    node = reg.nodes["control0"]
    assert (node.image, node.root, node.tags["ek8s_role"]) == ("ek8s-control", "tmpfs", "worker")
    assert (node.netdevs["default"].device, node.netdevs["default"].hwaddr) == ("net0", "52:54:00:00:00:21")


# -- apply against a stand-in wwctl --------------------------------------------------------

STAND_IN = Path(__file__).with_name("wwctl_standin.py")


class WW:
    """A stand-in Warewulf server in ``tmp_path``: etc/ (warewulf.conf, nodes.conf: the
    stand-in's registry), the share under tmp_path, a wwctl wrapper that logs every call."""

    def __init__(self, tmp_path: Path, version: str, fail: str | None = None) -> None:
        self.tmp, self.version = tmp_path, version
        self.etc = tmp_path / "etc"
        self.etc.mkdir(exist_ok=True)
        self.log = tmp_path / "wwctl.log"
        self.wwctl = tmp_path / "wwctl"
        self.wwctl.write_text(f'#!/bin/sh\nexec {sys.executable} {STAND_IN} "$@"\n')
        self.wwctl.chmod(0o755)
        # `service warewulfd reload`, recorded in the same log.
        self.service = tmp_path / "service"
        self.service.write_text(
            f"#!{sys.executable}\nimport json, sys\n"
            f"open({str(self.log)!r}, 'a').write(json.dumps(['service', *sys.argv[1:]]) + '\\n')\n"
        )
        self.service.chmod(0o755)
        # systemctl: is-enabled/is-active answer from a state file (not logged), the other
        # verbs are logged and change it (enable/disable, --now also starts/stops).
        self.units = tmp_path / "units.json"
        self.systemctl = tmp_path / "systemctl"
        self.systemctl.write_text(
            f"#!{sys.executable}\nimport json, os, sys\n"
            f"state = json.load(open({str(self.units)!r})) if os.path.exists({str(self.units)!r}) else {{}}\n"
            "verb, args = sys.argv[1], [a for a in sys.argv[2:] if a != '--now']\n"
            "if verb in ('is-enabled', 'is-active'):\n"
            "    sys.exit(0 if state.get(args[0], {}).get(verb) else 1)\n"
            f"open({str(self.log)!r}, 'a').write(json.dumps(['systemctl', *sys.argv[1:]]) + '\\n')\n"
            "for unit in args:\n"
            "    u = state.setdefault(unit, {})\n"
            "    if verb in ('enable', 'disable'):\n"
            "        u['is-enabled'] = verb == 'enable'\n"
            "        if '--now' in sys.argv: u['is-active'] = verb == 'enable'\n"
            "    if verb == 'restart': u['is-active'] = True\n"
            f"json.dump(state, open({str(self.units)!r}, 'w'))\n"
        )
        self.systemctl.chmod(0o755)
        self.fail = fail
        # As the packages install them (etc/warewulf.conf, etc/nodes.conf of each tag, shortened).
        (self.etc / "warewulf.conf").write_text(
            "ipaddr: 10.0.0.13\nnfs:\n  enabled: true\n  export paths:\n  - path: /home\n    export options: rw,sync\n"
        )
        (self.etc / "nodes.conf").write_text(
            "nodeprofiles:\n  default:\n    comment: This profile is automatically included for each node\nnodes: {}\n"
        )

    def env(self) -> dict[str, str]:
        env = os.environ | {
            "WWCTL_LOG": str(self.log),
            "WWCTL_NODES_CONF": str(self.etc / "nodes.conf"),
            "WWCTL_VERSION": self.version,
        }
        if self.fail:
            env["WWCTL_FAIL"] = self.fail
        return env

    def inventory(self, distribution: str = "kubeadm", **changes: object) -> Path:
        inv = inventory_data(distribution) | changes
        inv["share"] = {"path": str(self.tmp / "share")}  # the stand-in run makes the share here
        path = self.tmp / "inventory.yaml"
        path.write_text(yaml.safe_dump(inv))
        return path

    def ek8s(self, *args: str, inventory: Path | None = None) -> subprocess.CompletedProcess[str]:
        inv = inventory or self.inventory()
        argv = [*EK8S, *args, "--wwctl", str(self.wwctl), "--conf-dir", str(self.etc), str(inv)]
        return subprocess.run(argv, capture_output=True, text=True, env=self.env(), timeout=120)

    def apply(self, *extra: str, inventory: Path | None = None) -> subprocess.CompletedProcess[str]:
        # `exportfs -ra` goes to the same recorder as `service` (logged as ["service", "-ra"]).
        svc = str(self.service)
        tools = ("--service", svc, "--exportfs", svc, "--systemctl", str(self.systemctl))
        return self.ek8s("warewulf", "apply", *tools, *extra, inventory=inventory)

    def calls(self) -> list[list[str]]:
        return [json.loads(line) for line in self.log.read_text().splitlines()] if self.log.exists() else []

    def mutating(self) -> list[list[str]]:
        return [c for c in self.calls() if c != ["version"] and c[1:2] != ["list"]]

    def registry(self) -> dict[str, object]:
        return yaml.safe_load((self.etc / "nodes.conf").read_text())


def fixture_from_stand_in(ww: WW) -> dict[str, object]:
    """The renderer's fixture from what the stand-in holds after a run: its profiles and nodes
    with their own fields only; the renderer merges them as Warewulf does."""
    reg = ww.registry()
    image_key = "container name" if ww.version.startswith("4.5") else "image name"

    def fields(entry: dict[str, object]) -> dict[str, object]:
        return {
            "profiles": entry.get("profiles", []),
            "image": entry.get(image_key, ""),
            "root": entry.get("root", ""),
            "tags": entry.get("tags", {}),
            "netdevs": entry.get("network devices", {}),
            "system_overlays": entry.get("system overlay", []),
            "runtime_overlays": entry.get("runtime overlay", []),
        }

    profiles = {name: fields(p or {}) for name, p in reg["nodeprofiles"].items()}  # type: ignore[union-attr]
    nodes = [{"id": n, "primary_netdev": "default", **fields(e or {})} for n, e in reg["nodes"].items()]  # type: ignore[union-attr]
    return {"server": SERVER, "profiles": profiles, "nodes": nodes}


WWCTL_VERSIONS = ("4.5.8", "4.6.5", "4.7.0")


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
@pytest.mark.parametrize("version", WWCTL_VERSIONS)
def test_apply_then_render_gives_every_node_its_cluster_facts(
    wwtemplate: Path, tmp_path: Path, version: str, distribution: str
) -> None:
    """From `apply` to the node.yaml each node reads: the role profiles exist and every node
    gets, through them, the inventory's cluster, VIP and share, its role and interface, its
    distribution and the node image built for it; DNS reaches each node's device."""
    ww = WW(tmp_path, version)
    res = ww.apply(inventory=ww.inventory(distribution))
    assert res.returncode == 0, res.stdout + res.stderr
    fixture = tmp_path / "registry.json"
    fixture.write_text(json.dumps(fixture_from_stand_in(ww)))
    inv = load_inventory(tmp_path / "inventory.yaml")
    for node in inv.expanded():
        out = render(wwtemplate, fixture, version[:3], node.name, NODE_YAML_WW)
        assert out.returncode == 0 and "not found" not in out.stderr, out.stderr
        path = tmp_path / f"{node.name}.yaml"
        path.write_text(out.stdout)
        # `ek8s config check` in this process, each node's (the apply above ran `python -m
        # manager` itself): the command's code and exit status without a Python start per node.
        check = CliRunner().invoke(cli, ["config", "check", str(path)])
        assert check.exit_code == 0, check.output
        cfg = load_config(path)
        assert (cfg.cluster, cfg.role, cfg.node.address, cfg.node.interface) == (
            inv.cluster, node.role, node.address, "net0",
        )  # fmt: skip
        assert cfg.vip == inv.vip and cfg.share.path == inv.share.path
        assert cfg.kubernetes.distribution == distribution
        text = '{{ with index .NetDevs "default" }}{{ index .Tags "DNS1" }}{{ end }}'
        assert _render_text(wwtemplate, tmp_path, json.loads(fixture.read_text()), version[:3], text)[1] == "1.1.1.1"
    reg = ww.registry()
    image_key = "container name" if version.startswith("4.5") else "image name"
    wanted = {"kubeadm": {"control": "ek8s-control", "worker": "ek8s-base"}, "k3s": {"control": "ek8s-k3s"}}
    for role in ("control", "worker"):
        assert reg["nodeprofiles"][f"ek8s-{role}"][image_key] == wanted[distribution].get(role, "ek8s-k3s")  # type: ignore[index]
    for name, node_entry in reg["nodes"].items():  # type: ignore[union-attr]
        assert set(node_entry) == {"profiles", "network devices"}, name  # nothing but its own


@pytest.mark.parametrize(
    ("planned", "server", "expected"),
    [
        ("4.7", "4.5.8", "unknown shorthand flag"),  # 4.5 has no `node list -j`
        ("4.5", "4.6.5", "ERROR: unknown flag: --yes"),  # 4.6.5 has no --yes on profile add
    ],
)
def test_apply_for_the_wrong_version_stops_before_any_node(
    tmp_path: Path, planned: str, server: str, expected: str
) -> None:
    """A plan for the wrong version: the stand-in answers as that Warewulf would, and apply
    stops before setting nodes on a profile that is not there; the files stay as they were."""
    ww = WW(tmp_path, server)
    (ww.etc / "nodes.conf").write_text("nodeprofiles:\n  default: {}\nnodes: {}\n")
    (ww.etc / "warewulf.conf").write_text("# site config\nipaddr: 10.0.0.13\n")
    res = ww.apply("--version", planned)
    assert res.returncode == 1, res.stdout + res.stderr
    assert expected in res.stderr
    assert not [c for c in ww.mutating() if c[:1] == ["node"]]
    assert (ww.etc / "warewulf.conf").read_text() == "# site config\nipaddr: 10.0.0.13\n"


def test_apply_stops_when_4_5_adds_no_profile(tmp_path: Path) -> None:
    """4.5's `profile add` without --yes adds nothing and exits 0 (here: a stand-in told to
    drop --yes is modelled by failing the registry check); apply reads the registry again and
    stops there instead of adding nodes to a profile that is not there."""
    from manager.wwapply import Reporter, apply
    from manager.wwplan import Local, plan
    from manager.wwregistry import offline

    inv = load_inventory(INVENTORY)
    p = plan(inv, "4.5", offline(), Local(share_ready=True))
    out, err = io.StringIO(), io.StringIO()
    ww = WW(tmp_path, "4.5.8")
    env_keys = ww.env()
    old = {k: os.environ.get(k) for k in env_keys}
    os.environ.update(env_keys)
    try:
        code = apply(inv, p, wwctl=str(ww.wwctl), conf_dir=ww.etc, reporter=Reporter(out, err),
                     check_profile=lambda name: False)  # fmt: skip
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    assert code == 1 and "ek8s-control is not in the registry" in err.getvalue()
    assert [c[:2] for c in ww.mutating()] == [["profile", "add"]]


@pytest.mark.parametrize("version", WWCTL_VERSIONS)
def test_apply_runs_the_plan_once_and_a_second_apply_changes_nothing(tmp_path: Path, version: str) -> None:
    ww = WW(tmp_path, version)
    conf = "# site: keep this\nipaddr: 10.0.0.13  # the server\nnfs:\n  export paths:\n  - path: /home  # users\n"
    (ww.etc / "warewulf.conf").write_text(conf)
    (ww.etc / "nodes.conf").write_text("nodeprofiles:\n  default:\n    comment: site default\nnodes: {}\n")
    res = ww.apply()
    assert res.returncode == 0, res.stdout + res.stderr
    lines = res.stdout.splitlines()
    assert all(re.fullmatch(r"\[\s*\d+/\d+\] .* ok", ln) for ln in lines[:-1]), lines
    assert lines[-1].startswith("done: ") and res.stderr == ""
    mutating = ww.mutating()
    adds = [c for c in mutating if c[1:2] == ["add"]]
    assert [c[:3] for c in adds] == [["profile", "add", "ek8s-control"], ["profile", "add", "ek8s-worker"]] + [
        ["node", "add", n] for n in ("control0", "control1", "control2", "worker0", "worker1")
    ]
    nodes = ["control0", "control1", "control2", "worker0", "worker1"]
    targets = nodes if version.startswith("4.5") else ["control[0-2],worker[0-1]"]
    assert mutating[-4:] == [
        ["configure", "hostfile"],
        ["configure", "nfs"],
        ["service", "-ra"],  # exportfs -ra, through the recorder
        ["overlay", "build", *targets],
    ]
    share = tmp_path / "share"
    assert share.is_dir() and (share.stat().st_mode & 0o777) == 0o700
    # The trees by role: the control-only tree root's 0700, the node tree 0750 group 65534.
    assert (share / "ek8s").stat().st_mode & 0o777 == 0o700
    assert ((share / "ek8s/nodes").stat().st_mode & 0o777, (share / "ek8s/nodes").stat().st_gid) == (0o750, 65534)
    exports = (ww.etc.parent / "exports.d" / "ek8s-ek8s.exports").read_text()
    assert f"{share}/ek8s 10.0.0.21(rw,sync,no_root_squash,no_subtree_check) 10.0.0.22(" in exports
    assert "10.0.0.41" not in exports and "10.0.0.0" not in exports, "no worker, no network on the control tree"
    text = (ww.etc / "warewulf.conf").read_text()
    assert text.startswith("# site: keep this\nipaddr: 10.0.0.13  # the server\n") and "/home  # users" in text
    exports = yaml.safe_load(text)["nfs"]["export paths"]
    assert [e["path"] for e in exports] == ["/home", f"{share}/ek8s/nodes"]
    assert "root_squash,anonuid=65534" in exports[1]["export options"], "the node tree: a worker's root squashed"
    reg = ww.registry()
    if version.startswith("4.5"):
        assert "lookupcache=positive" in exports[1]["mount options"]
        assert "resources" not in reg["nodeprofiles"]["ek8s-control"]  # type: ignore[index]
    else:
        # Control nodes mount both trees (parent first), workers the node tree only.
        trees = {"control": [f"{share}/ek8s", f"{share}/ek8s/nodes"], "worker": [f"{share}/ek8s/nodes"]}
        for role, paths in trees.items():
            fstab = reg["nodeprofiles"][f"ek8s-{role}"]["resources"]["fstab"]  # type: ignore[index]
            assert fstab == [{"spec": f"warewulf:{p}", "file": p, "vfstype": "nfs",
                              "mntops": "defaults,hard,lookupcache=positive"} for p in paths]  # fmt: skip
    assert reg["nodeprofiles"]["default"] == {"comment": "site default"}  # type: ignore[index]
    # Second run: nothing mutating, the files unchanged, and it says so.
    before = {p.name: p.read_text() for p in ww.etc.iterdir()}
    ww.log.unlink()
    res = ww.apply()
    assert res.returncode == 0, res.stdout + res.stderr
    assert ww.mutating() == [] and "nothing to do" in res.stdout
    assert "wwctl overlay build" in res.stdout  # says how to rebuild the overlays by hand
    assert {p.name: p.read_text() for p in ww.etc.iterdir()} == before


def test_apply_installs_and_starts_the_fence_service_only_with_fencing(tmp_path: Path) -> None:
    """fencing: warewulf-power: the unit ek8s-fence@<cluster>.service is written (ek8s fence
    serve for this cluster's share), systemd reloaded, the unit enabled and started; a second
    apply does nothing; a changed unit is restarted; fencing off stops, disables and removes it."""
    ww = WW(tmp_path, "4.7.0")
    unit = ww.etc.parent / "systemd" / "system" / "ek8s-fence@ek8s.service"
    res = ww.apply(inventory=ww.inventory())
    assert res.returncode == 0, res.stdout + res.stderr
    assert not unit.exists() and not [c for c in ww.calls() if c[0] == "systemctl"], "fencing is off by default"
    ww.log.unlink()
    res = ww.apply(inventory=ww.inventory(fencing="warewulf-power"))
    assert res.returncode == 0, res.stdout + res.stderr
    text = unit.read_text()
    exec_start = next(ln for ln in text.splitlines() if ln.startswith("ExecStart="))
    argv = shlex.split(exec_start.removeprefix("ExecStart="))
    assert argv[argv.index("fence") :] == [
        "fence", "serve", "--cluster", "ek8s", "--share", str(tmp_path / "share"), "--lease-ttl", "30",
    ]  # fmt: skip
    assert "Restart=always" in text and "WantedBy=multi-user.target" in text
    systemctl = [c for c in ww.mutating() if c[0] == "systemctl"]
    assert systemctl == [["systemctl", "daemon-reload"], ["systemctl", "enable", "--now", "ek8s-fence@ek8s.service"]]
    assert "systemctl enable --now ek8s-fence@ek8s.service ok" in res.stdout
    # The unit's command runs: its --help is the fence service's.
    help_ = subprocess.run([*argv[: argv.index("fence") + 2], "--help"], capture_output=True, text=True, timeout=60)
    assert help_.returncode == 0 and "--power-command" in help_.stdout, help_.stderr
    ww.log.unlink()
    res = ww.apply(inventory=ww.inventory(fencing="warewulf-power"))
    assert res.returncode == 0 and ww.mutating() == [], ww.mutating()
    # Stopped by hand: the next apply starts it again, without rewriting the file.
    ww.units.write_text(json.dumps({"ek8s-fence@ek8s.service": {"is-enabled": True, "is-active": False}}))
    res = ww.apply(inventory=ww.inventory(fencing="warewulf-power"))
    assert res.returncode == 0 and ww.mutating() == [["systemctl", "enable", "--now", "ek8s-fence@ek8s.service"]]
    # An edited unit file is put back and the running service restarted.
    unit.write_text(text.replace("Restart=always", "Restart=no"))
    ww.log.unlink()
    res = ww.apply(inventory=ww.inventory(fencing="warewulf-power"))
    assert res.returncode == 0, res.stdout + res.stderr
    assert unit.read_text() == text
    assert ww.mutating() == [["systemctl", "daemon-reload"], ["systemctl", "restart", "ek8s-fence@ek8s.service"]]
    # Fencing off again: stopped, disabled, the file removed.
    ww.log.unlink()
    res = ww.apply(inventory=ww.inventory())
    assert res.returncode == 0, res.stdout + res.stderr
    assert not unit.exists()
    assert [c for c in ww.mutating() if c[0] == "systemctl"] == [
        ["systemctl", "disable", "--now", "ek8s-fence@ek8s.service"],
        ["systemctl", "daemon-reload"],
    ]
    assert json.loads(ww.units.read_text())["ek8s-fence@ek8s.service"] == {"is-enabled": False, "is-active": False}


def test_apply_keeps_the_sites_profiles_and_order(tmp_path: Path) -> None:
    """A node Warewulf already has, in the site's own profiles: the role profile is appended,
    the site's stay in their order, and its MAC and address are set only where they differ."""
    ww = WW(tmp_path, "4.7.0")
    (ww.etc / "nodes.conf").write_text(
        "nodeprofiles:\n  default: {}\n  site-ib: {}\nnodes:\n  worker0:\n    profiles: [default, site-ib]\n"
        "    network devices:\n      default:\n        hwaddr: '52:54:00:00:00:41'\n        ipaddr: 10.0.0.41\n"
    )
    res = ww.apply()
    assert res.returncode == 0, res.stdout + res.stderr
    assert ww.registry()["nodes"]["worker0"]["profiles"] == ["default", "site-ib", "ek8s-worker"]  # type: ignore[index]
    assert not [c for c in ww.mutating() if c[:3] == ["node", "set", "worker0"] and "--hwaddr" in c]
    assert ["node", "add", "worker0"] not in [c[:3] for c in ww.mutating()]


@pytest.mark.parametrize("version", WWCTL_VERSIONS)
def test_apply_moves_an_earlier_plans_registry_onto_the_role_profiles(tmp_path: Path, version: str) -> None:
    """A registry as the earlier plan left it (profile ek8s-<cluster> with the cluster's tags;
    image, root, netmask and the role tag on every node): the nodes move to their role
    profile, the old profile leaves their lists, the role tag leaves the nodes, 4.7 unsets
    what the profile now carries, and a second apply changes nothing."""
    ww = WW(tmp_path, version)
    image_key = "container name" if version.startswith("4.5") else "image name"
    inv = load_inventory(INVENTORY)
    nodes = {
        n.name: {
            "profiles": ["default", "ek8s-ek8s"], image_key: inv.node_images.control if n.role == "control" else
            inv.node_images.worker, "root": "tmpfs",
            "network devices": {"default": {"device": "net0", "hwaddr": n.mac, "ipaddr": n.address,
                                            "netmask": "255.255.255.0", "tags": {"DNS1": "1.1.1.1"}}},
            "tags": {"ek8s_role": n.role},
        }
        for n in inv.expanded()
    }  # fmt: skip
    old_profile = {"tags": inv.cluster_tags() | {"ek8s_share": str(tmp_path / "share")}}
    (ww.etc / "nodes.conf").write_text(
        yaml.safe_dump({"nodeprofiles": {"default": {}, "ek8s-ek8s": old_profile}, "nodes": nodes})
    )
    res = ww.apply()
    assert res.returncode == 0, res.stdout + res.stderr
    reg = ww.registry()
    for name, entry in reg["nodes"].items():  # type: ignore[union-attr]
        role = "control" if name.startswith("control") else "worker"
        assert entry["profiles"] == ["default", f"ek8s-{role}"] and "tags" not in entry, (name, entry)
        if version.startswith("4.7"):
            assert set(entry) == {"profiles", "network devices"}, entry
            assert set(entry["network devices"]["default"]) == {"hwaddr", "ipaddr", "tags"}
    assert not [c for c in ww.mutating() if c[1:2] == ["add"] and c[0] == "node"]
    ww.log.unlink()
    res = ww.apply()
    assert res.returncode == 0 and ww.mutating() == [], ww.mutating()


@pytest.mark.parametrize("failing", ["profile set ek8s-worker", "node add worker1", "node set"])
def test_a_failed_step_leaves_the_files_unchanged_and_says_so_on_stderr(tmp_path: Path, failing: str) -> None:
    ww = WW(tmp_path, "4.7.0", fail=failing)
    conf = "# comment\nipaddr: 10.0.0.13\n"
    nodes_conf = "# hand-kept\nnodeprofiles:\n  default: {}\nnodes: {}\n"
    (ww.etc / "warewulf.conf").write_text(conf)
    (ww.etc / "nodes.conf").write_text(nodes_conf)
    res = ww.apply()
    assert res.returncode == 1
    assert f"stand-in failure for {failing}" in res.stderr and "were not run" in res.stderr
    assert "warewulf.conf and nodes.conf were not changed" in res.stderr
    assert "failed" not in res.stdout and "Error" not in res.stdout
    assert (ww.etc / "warewulf.conf").read_text() == conf
    assert not list(ww.etc.glob("*.ek8s-backup"))
    assert ["overlay", "build"] not in [c[:2] for c in ww.calls()]


def test_apply_verbose_and_dry_run(tmp_path: Path) -> None:
    ww = WW(tmp_path, "4.7.0")
    conf = "# site\nipaddr: 10.0.0.13\nnfs:\n  export paths:\n  - path: /home\n"
    (ww.etc / "warewulf.conf").write_text(conf)
    (ww.etc / "nodes.conf").write_text("nodeprofiles:\n  default: {}\nnodes: {}\n")
    res = ww.apply("--dry-run")
    assert res.returncode == 0, res.stderr
    assert ww.mutating() == [] and (ww.etc / "warewulf.conf").read_text() == conf
    assert f"+++ {ww.etc / 'warewulf.conf'} (after apply)" in res.stdout
    assert f"+  - path: {tmp_path / 'share'}" in res.stdout
    assert "+        file: " in res.stdout or "+      - spec: " in res.stdout  # nodes.conf's fstab resource
    assert "(dry run)" in res.stdout and not (tmp_path / "share").exists()
    res = ww.apply("-v")
    assert res.returncode == 0, res.stderr
    assert "wwctl node add control0 --profile default,ek8s-control --netname default --hwaddr" in res.stdout


def test_apply_refuses_an_unreadable_warewulf_file_before_running_anything(tmp_path: Path) -> None:
    ww = WW(tmp_path, "4.7.0")
    (ww.etc / "warewulf.conf").write_text("ipaddr: 10.0.0.13\nnfs: [unclosed\n")
    res = ww.apply()
    assert res.returncode == 2 and "warewulf.conf: not valid YAML" in res.stderr and "nothing was run" in res.stderr
    assert ww.mutating() == []
    assert (ww.etc / "warewulf.conf").read_text() == "ipaddr: 10.0.0.13\nnfs: [unclosed\n"


@pytest.mark.parametrize(
    ("name", "text", "field"),
    [
        ("warewulf.conf", "ipaddr: 10.0.0.13\nnfs: yes\n", "nfs"),
        ("warewulf.conf", "nfs:\n  export paths: /srv/share\n", "nfs.export paths"),
        ("nodes.conf", "nodeprofiles:\n  default: {}\n  ek8s-control: []\nnodes: {}\n", "nodeprofiles.ek8s-control"),
    ],
)
def test_apply_refuses_a_warewulf_file_of_the_wrong_shape_naming_the_field(
    tmp_path: Path, name: str, text: str, field: str
) -> None:
    ww = WW(tmp_path, "4.7.0")
    (ww.etc / "warewulf.conf").write_text("ipaddr: 10.0.0.13\n")
    (ww.etc / "nodes.conf").write_text("nodeprofiles:\n  default: {}\nnodes: {}\n")
    (ww.etc / name).write_text(text)
    res = ww.apply()
    assert res.returncode in (1, 2), res.stdout + res.stderr
    assert field in res.stderr, res.stderr
    assert (ww.etc / "warewulf.conf").read_text() in (text, "ipaddr: 10.0.0.13\n")
    assert not list(ww.etc.glob("*.ek8s-backup"))


# -- the files, round trip -----------------------------------------------------------------


def test_edits_keep_comments_order_and_values_of_warewulf_files() -> None:
    """ruamel.yaml round trip: comments, key order and unquoted colon values (a MAC, an iPXE
    architecture key) stay as they were; only the share's entries change, and a second edit
    changes nothing."""
    from manager import wwconf

    inv = load_inventory(INVENTORY)
    conf = (
        "# Warewulf server, edited by hand\nipaddr: 10.0.0.13 # the server\ntftp:\n  ipxe:\n"
        "    00:09: ipxe-snponly-x86_64.efi\nnfs:\n  enabled: true\n  export paths:\n  - path: /home\n"
        "    export options: rw,sync # users\n  - path: /share\n    export options: ro\n  systemd name: nfs-server\n"
    )
    new = wwconf.edit_warewulf_conf(conf, inv, "4.7", Path("warewulf.conf"))
    assert new.startswith("# Warewulf server, edited by hand\nipaddr: 10.0.0.13 # the server\n")
    assert "00:09: ipxe-snponly-x86_64.efi" in new and "rw,sync # users" in new
    # The whole share's export (before the split) is gone; the node tree goes to the network.
    assert "- path: /share\n" not in new
    assert "- path: /share/ek8s/nodes\n    export options: rw,sync,root_squash,anonuid=65534,anongid=65534," in new
    assert wwconf.edit_warewulf_conf(new, inv, "4.7", Path("warewulf.conf")) == new
    nodes_conf = (
        "# kept by the site\nnodeprofiles:\n    default:\n        comment: x # why\n    ek8s-control:\n"
        "        resources:\n            fstab:\n                - spec: warewulf:/scratch\n"
        "                  file: /scratch\nnodes:\n    n1:\n        network devices:\n            default:\n"
        "                hwaddr: 52:54:00:00:00:21\n"
    )
    new = wwconf.edit_nodes_conf(nodes_conf, inv, Path("nodes.conf"))
    assert new.startswith("# kept by the site\n") and "comment: x # why" in new
    assert "hwaddr: 52:54:00:00:00:21" in new and "file: /scratch" in new
    data = yaml.safe_load(new)
    assert [e["file"] for e in data["nodeprofiles"]["ek8s-control"]["resources"]["fstab"]] == [
        "/scratch",
        "/share/ek8s",
        "/share/ek8s/nodes",
    ]
    assert [e["file"] for e in data["nodeprofiles"]["ek8s-worker"]["resources"]["fstab"]] == ["/share/ek8s/nodes"]
    assert (
        data["nodeprofiles"]["ek8s-worker"]["resources"]["fstab"][0]["mntops"] == "defaults,hard,lookupcache=positive"
    )
    assert wwconf.edit_nodes_conf(new, inv, Path("nodes.conf")) == new


# -- overlay build ---------------------------------------------------------------------------


def test_overlay_build(tmp_path: Path) -> None:
    out = tmp_path / "overlays"
    res = subprocess.run([*EK8S, "overlay", "build", "--out", str(out)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    root = out / "ek8s" / "rootfs"
    for rel in (
        "etc/ek8s/node.yaml.ww",
        "etc/systemd/system/ek8s-node.service.ww",
        "etc/systemd/system/phylactery.service.ww",
        "etc/systemd/system/k3s.service",
        "etc/systemd/system/k3s-agent.service",
        "etc/sysctl.d/90-ek8s-kubernetes.conf",
        "etc/modules-load.d/ek8s-kubernetes.conf",
        "usr/local/lib/ek8s/python/leader/agent.py",
        "usr/local/lib/ek8s/python/core/share.py",
        "usr/local/lib/ek8s/python/phylactery/templates/haproxy.cfg.j2",
        "usr/local/lib/ek8s/VERSION",
    ):
        assert (root / rel).is_file(), rel
    assert os.readlink(root / "etc/systemd/system/multi-user.target.wants/ek8s-node.service") == (
        "../ek8s-node.service"
    )
    # k3s's units are there for k3s clusters but never enabled: the agent starts them.
    assert sorted(p.name for p in (root / "etc/systemd/system/multi-user.target.wants").iterdir()) == [
        "ek8s-node.service"
    ]
    assert (out / "ek8s-hosts" / "rootfs" / "etc" / "hosts.ww").is_file()
    # Nodes receive only what runs on nodes: no operator code, no emulation.
    shipped = sorted(p.name for p in (root / "usr/local/lib/ek8s/python").iterdir())
    assert shipped == ["core", "leader", "phylactery"]
    # Bytecode only for the shipped code, compiled by the build (tests/unit/test_overlay_bytecode.py).
    assert {p.parent.parent.relative_to(root).parts[:5] for p in root.rglob("__pycache__/*.pyc")} == {
        ("usr", "local", "lib", "ek8s", "python")
    }
    # Each wrapper puts the overlay's own code first and runs its program with `python -m`.
    shim = tmp_path / "python-shim"
    shim.write_text('#!/bin/sh\necho "$PYTHONPATH" "$@"\n')
    shim.chmod(0o755)
    for name, package, args, expected_help in (
        ("ek8s-node", "leader", ["run"], "Elect, initialise or join"),
        ("ek8s-phylactery", "phylactery", ["--config", "x"], "Serve Phylactery"),
    ):
        wrapper = root / "usr/local/sbin" / name
        assert wrapper.stat().st_mode & 0o111
        env = {"PATH": os.environ["PATH"], "EK8S_PYTHON": str(shim)}
        shown = subprocess.run([str(wrapper), *args], capture_output=True, text=True, env=env, check=True)
        assert shown.stdout.split() == [str(root / "usr/local/lib/ek8s/python"), "-m", package, *args]
        # Run from the overlay alone (cwd elsewhere): the shipped packages import by themselves.
        env["EK8S_PYTHON"] = sys.executable
        helped = subprocess.run([str(wrapper), "--help"], capture_output=True, text=True, env=env, cwd=tmp_path)
        assert helped.returncode == 0 and expected_help in helped.stdout, helped.stderr
    # Idempotent; and a directory it did not make is refused before anything is written.
    assert subprocess.run([*EK8S, "overlay", "build", "--out", str(out)], capture_output=True).returncode == 0
    foreign = tmp_path / "foreign"
    (foreign / "ek8s-hosts").mkdir(parents=True)
    res = subprocess.run([*EK8S, "overlay", "build", "--out", str(foreign)], capture_output=True, text=True)
    assert res.returncode == 2 and "refusing" in res.stderr
    assert sorted(p.name for p in foreign.iterdir()) == ["ek8s-hosts"]
