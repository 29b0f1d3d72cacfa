"""vagrant/: the Vagrantfile validates (Vagrant and vagrant-libvirt come from Debian in
`make test`) and its nodes are the reference inventory's."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from manager.inventory import load_inventory

ROOT = Path(__file__).resolve().parents[2]


def test_vagrantfile_validates(tmp_path: Path) -> None:
    tool = shutil.which("vagrant")
    assert tool, "vagrant is needed (apt-get install vagrant vagrant-libvirt; `make test` does)"
    env = os.environ | {"VAGRANT_DOTFILE_PATH": str(tmp_path / "dot"), "VAGRANT_HOME": str(tmp_path / "home")}
    res = subprocess.run([tool, "validate"], cwd=ROOT / "vagrant", capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "validated successfully" in res.stdout
    assert not (ROOT / "vagrant" / ".vagrant").exists()


def test_vagrant_nodes_match_the_reference_inventory() -> None:
    text = (ROOT / "vagrant" / "Vagrantfile").read_text()
    assert re.search(r'"control#\{i\}", "control", 21 \+ i', text) and re.search(
        r'"worker#\{i\}", "worker", 41 \+ i', text
    )
    assert 'format("52:54:00:00:00:%02d", last_octet)' in text and 'ip: "10.0.0.13"' in text
    for node in load_inventory(ROOT / "warewulf_conf" / "inventory.yaml").expanded():
        octet = int(node.address.rsplit(".", 1)[1])
        assert node.mac == f"52:54:00:00:00:{octet:02d}", node
