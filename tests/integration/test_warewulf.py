"""The Warewulf side: overlay templates (Go text/template, 4.5 and 4.6 data shapes), the
inventory, `ek8s warewulf plan|apply` against a stand-in wwctl, `ek8s overlay build`.

Golden files live in tests/golden/overlay and tests/golden/warewulf; regenerate them with
EK8S_UPDATE_GOLDEN=1 after a deliberate change, and read the diff.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from core.config import WAREWULF_FACTS, load_config
from manager import wwrender
from manager.inventory import Inventory, load_inventory

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden"
INVENTORY = ROOT / "warewulf_conf" / "inventory.yaml"
EK8S = [sys.executable, "-m", "manager"]
UPDATE = os.environ.get("EK8S_UPDATE_GOLDEN") == "1"
VERSIONS = ("4.5", "4.6")
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
def test_both_versions_render_the_same_files(distribution: str) -> None:
    golden = overlay_golden(distribution)
    for rendered in (golden / "4.5").rglob("*"):
        if rendered.is_file():
            other = golden / "4.6" / rendered.relative_to(golden / "4.5")
            assert rendered.read_text() == other.read_text(), rendered


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
    assert "10.0.0.23 control2 control2-default control2-net0" in hosts


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
    data["nodes"][0]["tags"] = {}  # type: ignore[index]
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
    del data["profiles"]["ek8s-ek8s"]  # type: ignore[attr-defined]
    rendered, check, path = _check_rendered(wwtemplate, tmp_path, data, version)
    assert "ek8s-ek8s" in rendered.stderr  # Warewulf's warning, the only sign on the server
    assert check.returncode == 2, check.stdout + check.stderr
    assert str(path) in check.stderr and "node control0" in check.stderr and "Traceback" not in check.stderr
    for dotted, tag in WAREWULF_FACTS.items():
        assert f"  {dotted}: missing (profile tag {tag})" in check.stderr
    assert "node.address" not in check.stderr
    # One tag deleted from the profile: that fact alone.
    data = registry_fixture(load_inventory(INVENTORY))
    del data["profiles"]["ek8s-ek8s"]["tags"]["ek8s_vip"]  # type: ignore[index]
    _, check, _ = _check_rendered(wwtemplate, tmp_path, data, version)
    assert check.returncode == 2 and check.stderr.count(": missing (") == 1
    assert "vip.address: missing (profile tag ek8s_vip)" in check.stderr


@pytest.mark.parametrize(("version", "shown"), [("4.5", "''"), ("4.6", "'<nil>'")])
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
    [("4.5", "Profile not found for node 'control0': ek8s-ek8s"), ("4.6", "profile not found: ek8s-ek8s")],
)
def test_renderer_merges_tags_only_from_profiles_that_exist(
    wwtemplate: Path, tmp_path: Path, version: str, warning: str
) -> None:
    """Warewulf skips a node's missing profile with a warning and renders on
    (4.5 node/constructors.go:195-199, 4.6 node/mergo.go:147-150); the node's own tags win."""
    data = registry_fixture(load_inventory(INVENTORY))
    text = '{{ index .Tags "ek8s_cluster" }}|{{ index .Tags "ek8s_role" }}'
    assert _render_text(wwtemplate, tmp_path, data, version, text) == (0, "ek8s|control", "")
    del data["profiles"]["ek8s-ek8s"]  # type: ignore[attr-defined]
    code, out, err = _render_text(wwtemplate, tmp_path, data, version, text)
    assert (code, out) == (0, "|control") and warning in err


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
    images = {"kubeadm": ["ek8s-control"] * 3 + ["ek8s-base"] * 2, "k3s": ["ek8s-k3s"] * 5}[distribution]
    assert [ln.split()[1] for ln in res.stdout.splitlines() if ln.strip().startswith(image_flag)] == images
    assert f"ek8s_distribution={distribution}" in res.stdout
    assert ("ek8s_cni_manifest" in res.stdout) == (distribution == "kubeadm")
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
        ({"share": {"path": "share"}}, "share.path"),
        ({"colour": "blue"}, "colour"),
    ],
)  # fmt: skip
def test_invalid_inventory_exits_2_naming_the_field(tmp_path: Path, change: dict[str, object], field: str) -> None:
    data = yaml.safe_load(INVENTORY.read_text()) | change
    bad = tmp_path / "inventory.yaml"
    bad.write_text(yaml.safe_dump(data))
    log = tmp_path / "wwctl.log"
    for cmd in (["plan", "--offline"], ["apply"]):
        res = subprocess.run(
            [*EK8S, "warewulf", *cmd, "--version", "4.6", "--wwctl", str(_stand_in(tmp_path, log)), str(bad)],
            capture_output=True,
            text=True,
        )
        assert res.returncode == 2, res.stdout + res.stderr
        assert field in res.stderr and str(bad) in res.stderr
    assert not log.exists(), "nothing may run for an invalid inventory"


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


@pytest.mark.parametrize("version", ["4.5.8", "4.6.1"])
def test_apply_keeps_colon_values_in_warewulf_files(tmp_path: Path, version: str) -> None:
    """`apply` rewrites warewulf.conf (and nodes.conf on 4.6); values a person left unquoted,
    such as a node's hwaddr, come back meaning what they meant, to PyYAML and to Warewulf."""
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "warewulf.conf").write_text(
        "ipaddr: 10.0.0.13\ntftp:\n  ipxe:\n    00:09: ipxe-snponly-x86_64.efi\n"
        "nfs:\n  export paths:\n  - path: /home\n    export options: 10:30\n"
    )
    nodes_conf = (
        "nodeprofiles:\n  default:\n    comment: 1:30.5\nnodes:\n  n1:\n    network devices:\n"
        "      default:\n        hwaddr: 52:54:00:00:00:21\n"
    )
    (etc / "nodes.conf").write_text(nodes_conf)
    res = _apply(tmp_path, tmp_path / "wwctl.log", version)
    assert res.returncode == 0, res.stdout + res.stderr
    conf = yaml.safe_load((etc / "warewulf.conf").read_text())
    assert conf["tftp"]["ipxe"] == {"00:09": "ipxe-snponly-x86_64.efi"}
    assert conf["nfs"]["export paths"][0]["export options"] == "10:30"
    if version.startswith("4.5"):  # 4.5 mounts from warewulf.conf: nodes.conf is not touched
        assert (etc / "nodes.conf").read_text() == nodes_conf
        return
    nodes = yaml.safe_load((etc / "nodes.conf").read_text())
    assert nodes["nodes"]["n1"]["network devices"]["default"]["hwaddr"] == "52:54:00:00:00:21"
    assert nodes["nodeprofiles"]["default"]["comment"] == "1:30.5"
    assert "ek8s-ek8s" in nodes["nodeprofiles"]


def test_apply_refuses_an_unreadable_warewulf_file_before_running_anything(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "warewulf.conf").write_text("ipaddr: 10.0.0.13\n")
    (etc / "nodes.conf").write_text("nodes: [unclosed\n")
    log = tmp_path / "wwctl.log"
    res = _apply(tmp_path, log, "4.6.1")
    assert res.returncode == 2 and "nodes.conf: not valid YAML" in res.stdout and "nothing was run" in res.stdout
    assert all(c[1:2] == ["list"] or c == ["version"] for c in _calls(log))
    assert (etc / "warewulf.conf").read_text() == "ipaddr: 10.0.0.13\n"


@pytest.mark.parametrize(
    ("name", "text", "field"),
    [
        ("warewulf.conf", "ipaddr: 10.0.0.13\nnfs: yes\n", "nfs"),
        ("warewulf.conf", "nfs:\n  export paths: /srv/share\n", "nfs.export paths"),
        ("nodes.conf", "nodeprofiles: []\n", "nodeprofiles"),
    ],
)
def test_apply_refuses_a_warewulf_file_of_the_wrong_shape_naming_the_field(
    tmp_path: Path, name: str, text: str, field: str
) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "warewulf.conf").write_text("ipaddr: 10.0.0.13\n")
    (etc / "nodes.conf").write_text("nodeprofiles: {}\n")
    (etc / name).write_text(text)
    log = tmp_path / "wwctl.log"
    res = _apply(tmp_path, log, "4.6.1")
    assert res.returncode == 2 and f"field {field!r} must be a" in res.stdout and "nothing was run" in res.stdout
    assert all(c[1:2] == ["list"] or c == ["version"] for c in _calls(log))
    assert (etc / name).read_text() == text and not list(etc.glob("*.ek8s-backup"))


def test_hostlist_expansion_counts_addresses() -> None:
    nodes = load_inventory(INVENTORY).expanded()
    assert [(n.name, n.address) for n in nodes] == [
        ("control0", "10.0.0.21"),
        ("control1", "10.0.0.22"),
        ("control2", "10.0.0.23"),
        ("worker0", "10.0.0.41"),
        ("worker1", "10.0.0.42"),
    ]


# -- apply against a stand-in wwctl --------------------------------------------------------

STAND_IN = r'''#!{python}
"""Stand-in wwctl (tests only): a registry in a JSON file, with Warewulf's behaviour per version
where ek8s depends on it (WWCTL_VERSION, read from the v4.5.8 / v4.6.5 tags):

- 4.5 `profile add` asks "Are you sure you add the profile" unless --yes
  (internal/app/wwctl/profile/add/main.go:77-88, --yes at profile/add/root.go:70); with no
  terminal to answer, promptui's answer is "no": nothing is added and it exits 0.
- 4.6.5 `profile add` has no --yes (profile/add/root.go): "ERROR: unknown flag: --yes", exit
  255 (cmd/wwctl/main.go:18-24; the root command silences cobra's own message).
- `profile set` and `node set` ask too unless --yes (4.5 profile/set/main.go:67-79,
  node/set/main.go:81; 4.6.5 profile/set/main.go:74-86, node/set/main.go:76-88): "no", exit 0.
- `profile set` on a profile that does not exist changes nothing and exits 0 (4.5
  api/profile/profile.go ProfileSetParameterCheck only visits existing profiles; 4.6.5
  api/profile/set.go:64-67 warns "invalid profile").
- 4.5 has no `image` command and no --image/--system-overlays/--runtime-overlays; 4.6 keeps
  --container/--wwinit/--runtime as deprecated aliases (wwctl/flags/flags.go).
- A fresh registry has the profile `default`.
Records every argv in WWCTL_LOG; fails on demand when WWCTL_FAIL is part of the command line.
"""
import json, os, sys
log, state = os.environ["WWCTL_LOG"], os.environ["WWCTL_STATE"]
v45 = os.environ.get("WWCTL_VERSION", "4.6.1").startswith("4.5.")
argv = sys.argv[1:]
with open(log, "a") as f:
    f.write(json.dumps(argv) + "\n")
fail = os.environ.get("WWCTL_FAIL")
if fail and fail in " ".join(argv):
    print("Error: stand-in failure for " + fail, file=sys.stderr)
    sys.exit(255)
reg = json.load(open(state)) if os.path.exists(state) else {{"profile": {{"default": {{"tags": {{}}}}}}, "node": {{}}}}

def die(msg):
    print("ERROR: " + msg, file=sys.stderr)
    sys.exit(255)

def save():
    json.dump(reg, open(state, "w"), indent=1)

VALUED = {{"--profile", "--container", "--image", "--root", "--netname", "--netdev", "--hwaddr", "--ipaddr",
          "--netmask", "--gateway", "--nettagadd", "--tagadd", "--wwinit", "--runtime", "--system-overlays",
          "--runtime-overlays"}}
ONLY_46 = {{"--image", "--system-overlays", "--runtime-overlays"}}

def options(args, allowed_flags):
    opts, rest, i = {{}}, [], 0
    while i < len(args):
        a = args[i]
        if a in VALUED and not (v45 and a in ONLY_46):
            opts.setdefault(a, []).append(args[i + 1])
            i += 2
        elif a in allowed_flags:
            opts[a] = True
            i += 1
        elif a.startswith("-"):
            die("unknown flag: " + a)
        else:
            rest.append(a)
            i += 1
    return opts, rest

def tags(opts, key="--tagadd"):
    out = {{}}
    for value in opts.get(key, []):
        for pair in value.split(","):
            k, _, v = pair.partition("=")
            out[k] = v
    return out

if argv == ["version"]:
    print("wwctl version:\t " + os.environ.get("WWCTL_VERSION", "4.6.1"))
    sys.exit(0)
if argv[:1] == ["image"] and v45:
    die('unknown command "image" for "wwctl"')
kind, verb, args = argv[0], argv[1], argv[2:]
if verb == "list":
    print("NODE NAME   PROFILES   NETWORK" if kind == "node" else "PROFILE NAME   COMMENT/DESCRIPTION")
    print("=" * 40)
    for name in reg[kind]:
        print(name + "   default")
elif verb == "add":
    opts, names = options(args, {{"--yes"}} if (kind, v45) == ("profile", True) else set())
    if names[0] in reg[kind]:
        die(kind + " with name " + names[0] + " already exists")
    if kind == "profile" and v45 and "--yes" not in opts:
        print("Are you sure you add the profile " + str(names) + "? [y/N] ")
        sys.exit(0)  # no terminal: promptui returns "no"
    fresh = {{"tags": {{}}}} if kind == "profile" else {{"profiles": ["default"], "tags": {{}}, "netdevs": {{}}}}
    reg[kind][names[0]] = fresh
    save()
elif verb == "set":
    opts, names = options(args, {{"--yes"}})
    if "--yes" not in opts:
        print("Are you sure you want to modify 1 " + kind + "(s)? [y/N] ")
        sys.exit(0)
    for name in names:
        entry = reg[kind].get(name)
        if entry is None:
            print("WARN   : invalid " + kind + ": " + name, file=sys.stderr)
            continue
        entry["tags"].update(tags(opts))
        if "--profile" in opts:
            entry["profiles"] = opts["--profile"][-1].split(",")
        for flag, key in (("--container", "image"), ("--image", "image"), ("--root", "root"),
                          ("--wwinit", "system_overlays"), ("--system-overlays", "system_overlays"),
                          ("--runtime", "runtime_overlays"), ("--runtime-overlays", "runtime_overlays")):
            if flag in opts:
                value = opts[flag][-1]
                entry[key] = value.split(",") if key.endswith("overlays") else value
        if "--netname" in opts:
            dev = entry.setdefault("netdevs", {{}}).setdefault(opts["--netname"][-1], {{}})
            for flag, key in (("--netdev", "device"), ("--hwaddr", "hwaddr"), ("--ipaddr", "ipaddr"),
                              ("--netmask", "netmask"), ("--gateway", "gateway")):
                if flag in opts:
                    dev[key] = opts[flag][-1]
            dev.setdefault("tags", {{}}).update(tags(opts, "--nettagadd"))
    save()
'''


def _stand_in(tmp_path: Path, log: Path) -> Path:
    tool = tmp_path / "wwctl"
    tool.write_text(STAND_IN.format(python=sys.executable))
    tool.chmod(0o755)
    return tool


def _apply(
    tmp_path: Path,
    log: Path,
    version: str,
    fail: str | None = None,
    extra: tuple[str, ...] = (),
    distribution: str = "kubeadm",
) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"WWCTL_LOG": str(log), "WWCTL_STATE": str(tmp_path / "state.json"), "WWCTL_VERSION": version}
    if fail:
        env["WWCTL_FAIL"] = fail
    inv = inventory_data(distribution)
    inv["share"]["path"] = str(tmp_path / "share")  # type: ignore[index]  # the stand-in run makes the share here
    path = tmp_path / "inventory.yaml"
    path.write_text(yaml.safe_dump(inv))
    argv = [*EK8S, "warewulf", "apply", *extra, "--wwctl", str(_stand_in(tmp_path, log))]
    return subprocess.run(
        [*argv, "--conf-dir", str(tmp_path / "etc"), str(path)], capture_output=True, text=True, env=env, timeout=120
    )


def _calls(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def fixture_from_stand_in(state: Path) -> dict[str, object]:
    """The renderer's fixture from what the stand-in wwctl holds after a run: its profiles as
    they are (a profile never created is absent) and its nodes with their own settings."""
    reg = json.loads(state.read_text())
    nodes = [{"id": name, "primary_netdev": "default", **entry} for name, entry in reg["node"].items()]
    return {"server": SERVER, "profiles": reg["profile"], "nodes": nodes}


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
@pytest.mark.parametrize("version", ["4.5.8", "4.6.1"])
def test_apply_then_render_gives_every_node_its_cluster_facts(
    wwtemplate: Path, tmp_path: Path, version: str, distribution: str
) -> None:
    """Defect 1 of issue 9: on 4.5 `profile add` without --yes adds nothing and exits 0, and the
    nodes render a node.yaml without the cluster's facts. From `apply` to the node.yaml each
    node reads: the profile exists and every node gets the inventory's cluster, VIP and share,
    its distribution, and the node image built for it."""
    (tmp_path / "etc").mkdir()
    log = tmp_path / "wwctl.log"
    res = _apply(tmp_path, log, version, distribution=distribution)
    assert res.returncode == 0, res.stdout + res.stderr
    fixture = tmp_path / "registry.json"
    fixture.write_text(json.dumps(fixture_from_stand_in(tmp_path / "state.json")))
    inv = load_inventory(tmp_path / "inventory.yaml")
    for node in inv.expanded():
        out = render(wwtemplate, fixture, version[:3], node.name, ROOT / "overlay/ek8s/rootfs/etc/ek8s/node.yaml.ww")
        assert out.returncode == 0 and "not found" not in out.stderr, out.stderr
        path = tmp_path / f"{node.name}.yaml"
        path.write_text(out.stdout)
        check = subprocess.run([*EK8S, "config", "check", str(path)], capture_output=True, text=True, timeout=60)
        assert check.returncode == 0, check.stderr
        cfg = load_config(path)
        assert (cfg.cluster, cfg.role, cfg.node.address) == (inv.cluster, node.role, node.address)
        assert cfg.vip == inv.vip and cfg.share.path == inv.share.path
        assert cfg.kubernetes.distribution == distribution
    images = {name: entry["image"] for name, entry in json.loads((tmp_path / "state.json").read_text())["node"].items()}
    wanted = {"kubeadm": {"control": "ek8s-control", "worker": "ek8s-base"}, "k3s": {"control": "ek8s-k3s"}}
    for node in inv.expanded():
        assert images[node.name] == wanted[distribution].get(node.role, "ek8s-k3s"), node.name


@pytest.mark.parametrize(
    ("planned", "server", "expected"),
    [
        ("4.6", "4.5.8", "ek8s-ek8s is not in `wwctl profile list`"),  # 4.5 took "no" for an answer
        ("4.5", "4.6.1", "ERROR: unknown flag: --yes"),  # 4.6.5 has no --yes on profile add
    ],
)
def test_apply_stops_when_the_profile_is_not_made(tmp_path: Path, planned: str, server: str, expected: str) -> None:
    """A plan for the wrong version: the stand-in answers as that Warewulf would, and apply
    stops right after `profile add` instead of setting nodes on a profile that is not there."""
    (tmp_path / "etc").mkdir()
    log = tmp_path / "wwctl.log"
    res = _apply(tmp_path, log, server, extra=("--version", planned))
    assert res.returncode == 1, res.stdout + res.stderr
    assert expected in res.stdout and "were not run" in res.stdout
    calls = _calls(log)
    assert calls[-1] == ["profile", "list"] if planned == "4.6" else calls[-1][:2] == ["profile", "add"]
    assert not [c for c in calls if c[:1] == ["node"] and c[1:2] != ["list"]]


def test_profile_add_per_version() -> None:
    """4.5 needs --yes on `profile add` (its prompt answers "no" without a terminal); 4.6.5's
    `profile add` has no --yes and refuses it."""
    from manager.wwplan import plan

    inv = load_inventory(INVENTORY)
    adds = {v: [s.argv for s in plan(inv, v) if s.argv[1:3] == ["profile", "add"]] for v in VERSIONS}
    assert adds == {
        "4.5": [["wwctl", "profile", "add", "ek8s-ek8s", "--yes"]],
        "4.6": [["wwctl", "profile", "add", "ek8s-ek8s"]],
    }


@pytest.mark.parametrize(("version", "image_flag"), [("4.5.8", "--container"), ("4.6.1", "--image")])
def test_apply_runs_the_plan_and_is_idempotent(tmp_path: Path, version: str, image_flag: str) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "warewulf.conf").write_text("ipaddr: 10.0.0.13\nnfs:\n  export paths:\n  - path: /home\n")
    (etc / "nodes.conf").write_text("nodeprofiles:\n  default: {}\nnodes: {}\n")
    log = tmp_path / "wwctl.log"
    res = _apply(tmp_path, log, version)
    assert res.returncode == 0, res.stdout + res.stderr
    calls = _calls(log)
    assert calls[0] == ["version"] and ["node", "list"] in calls and ["profile", "list"] in calls
    adds = [c for c in calls if c[1:2] == ["add"]]
    profile_add = ["profile", "add", "ek8s-ek8s", *(["--yes"] if version.startswith("4.5") else [])]
    assert adds == [profile_add] + [
        ["node", "add", n] for n in ("control0", "control1", "control2", "worker0", "worker1")
    ]
    sets = [c for c in calls if c[:2] == ["node", "set"]]
    assert len(sets) == 5 and all(image_flag in c and "tmpfs" in c for c in sets)
    assert calls[-2:] == [["configure", "--all"], ["overlay", "build"]]
    share = tmp_path / "share"
    assert share.is_dir() and (share.stat().st_mode & 0o777) == 0o700
    conf = yaml.safe_load((etc / "warewulf.conf").read_text())
    assert [e["path"] for e in conf["nfs"]["export paths"]] == ["/home", str(share)]
    assert "no_root_squash" in conf["nfs"]["export paths"][1]["export options"]
    nodes_conf = yaml.safe_load((etc / "nodes.conf").read_text())
    if version.startswith("4.6"):
        fstab = nodes_conf["nodeprofiles"]["ek8s-ek8s"]["resources"]["fstab"]
        assert fstab[0]["file"] == str(share) and "lookupcache=positive" in fstab[0]["mntops"]
    else:
        assert "lookupcache=positive" in conf["nfs"]["export paths"][1]["mount options"]
        assert "ek8s-ek8s" not in nodes_conf["nodeprofiles"]
    # Second run: nothing added again, the files unchanged.
    before = ((etc / "warewulf.conf").read_text(), (etc / "nodes.conf").read_text())
    log.unlink()
    res = _apply(tmp_path, log, version)
    assert res.returncode == 0, res.stdout + res.stderr
    assert not [c for c in _calls(log) if c[1:2] == ["add"]]
    assert ((etc / "warewulf.conf").read_text(), (etc / "nodes.conf").read_text()) == before
    assert "merged" not in res.stdout


def test_apply_stops_at_the_first_failure_with_its_output(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    log = tmp_path / "wwctl.log"
    res = _apply(tmp_path, log, "4.6.1", fail="node set control1")
    assert res.returncode == 1
    assert "stand-in failure for node set control1" in res.stdout
    assert "were not run" in res.stdout
    calls = _calls(log)
    assert calls[-1][:3] == ["node", "set", "control1"]
    assert ["node", "add", "control2"] not in calls and ["overlay", "build"] not in calls


def test_wwctl_version_parsing() -> None:
    from manager.wwplan import WarewulfError, parse_version

    assert parse_version("wwctl version: 4.5.8-1.el9") == "4.5"
    assert parse_version("Warewulf Version: v4.6.1") == "4.6"
    assert parse_version("4.7.0") == "4.6"
    with pytest.raises(WarewulfError):
        parse_version("4.4.1")
    with pytest.raises(WarewulfError):
        parse_version("command not found")


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
    assert not list(root.rglob("__pycache__"))
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
