#!/usr/bin/env bash
# Provision the Warewulf manager VM (Vagrantfile): Warewulf, ek8s, node images, inventory.
# Every step is idempotent, so `vagrant provision manager` may be run again.
set -euo pipefail

: "${WAREWULF_VERSION:?}" "${EK8S_NODES:?}"
src=/opt/ephemeral-k8s

dnf -y install epel-release
dnf -y install "https://github.com/warewulf/warewulf/releases/download/v${WAREWULF_VERSION}/warewulf-${WAREWULF_VERSION}-1.el9.x86_64.rpm" \
    podman python3.11 python3.11-pip nfs-utils
sed -i -e 's/^ipaddr:.*/ipaddr: 10.0.0.13/' -e 's/^netmask:.*/netmask: 255.255.255.0/' \
    -e 's/^network:.*/network: 10.0.0.0/' -e 's/range start:.*/range start: 10.0.0.100/' \
    -e 's/range end:.*/range end: 10.0.0.200/' /etc/warewulf/warewulf.conf
systemctl enable --now warewulfd
wwctl configure --all

python3.11 -m venv /opt/ek8s-venv
/opt/ek8s-venv/bin/pip install -q -e "${src}[bench]"
ln -sf /opt/ek8s-venv/bin/ek8s /usr/local/bin/ek8s

# The inventory of this Vagrantfile's nodes (names, roles, addresses, MACs).
inventory=/etc/ek8s/inventory.yaml
mkdir -p /etc/ek8s
{
    echo "cluster: ek8s"
    echo "warewulf: {netdev: eth0, netmask: 255.255.255.0}"
    echo "nodes:"
    for node in ${EK8S_NODES}; do
        IFS=, read -r name role address mac <<< "$node"
        echo "  - {name: ${name}, role: ${role}, address: ${address}, mac: \"${mac}\"}"
    done
} > "$inventory"
ek8s warewulf plan --offline "$inventory" > /dev/null  # validates before anything runs

"${src}/images/export.sh" --tool podman
"${src}/image_builder/build.sh" --runtime podman
ek8s overlay build --out /var/lib/warewulf/overlays
ek8s warewulf apply "$inventory"
echo "manager ready: vagrant up the nodes, then: ek8s status --cluster ek8s"
