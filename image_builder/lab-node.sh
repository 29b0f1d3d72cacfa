#!/usr/bin/env bash
# The lab's node image (docs/lab.md, "The lab's node image"): Debian 12 (bookworm) made with
# debootstrap from Debian's packages, booted by `ek8s lab up --machines` with systemd-nspawn.
# It mirrors what Containerfile.base and Containerfile.control put in the Rocky images, at
# the same paths and entry points: python3.11 with ek8s's dependencies (pip, into
# /usr/local/lib/python3.11/dist-packages, as `python3.11 -m pip install` does on Rocky),
# HAProxy and keepalived installed but not enabled (Phylactery starts them), iproute2, and in
# place of the Kubernetes packages the lab's stand-ins: etcd 3.5 (real: Debian 13's
# etcd-server and etcd-client, 3.5.16 as kubeadm 1.32 pins it, unpacked by
# scripts/fetch-deb.sh into /usr/bin: etcd, etcdctl, etcdutl; bookworm's own is 3.4.23) and
# /usr/bin/kubeadm, the EMULATED kubeadm, whose code the lab overlay brings, as the ek8s
# overlay brings the project's own code. Nothing of the project's code is in the image, so a
# code change needs no image rebuild.
#
#   image_builder/lab-node.sh OUT_DIR REQUIREMENTS_FILE [MIRROR]
#
# Builds into OUT_DIR.tmp and renames it to OUT_DIR when complete, so OUT_DIR exists only
# whole. Needs root, debootstrap and the mirror (default http://deb.debian.org/debian).
set -euo pipefail

out="${1:?usage: lab-node.sh OUT_DIR REQUIREMENTS_FILE [MIRROR]}"
requirements="${2:?usage: lab-node.sh OUT_DIR REQUIREMENTS_FILE [MIRROR]}"
mirror="${3:-http://deb.debian.org/debian}"
suite=bookworm
tmp="${out}.tmp"

# systemd as PID 1 (systemd-sysv), dbus for systemctl's and journalctl's usual paths;
# the daemons; python3 is 3.11 on bookworm; kmod for the agent's modprobe (it only warns);
# node_exporter, under ek8s's own unit as in the Rocky images.
packages=(
    systemd systemd-sysv dbus libpam-systemd
    python3 python3-pip
    haproxy keepalived
    iproute2 procps kmod ca-certificates
    prometheus-node-exporter
)

# chroot with a clean environment: the build machine's PIP_*, REQUESTS_CA_BUNDLE... name its
# own files, not the image's.
in_image() { env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 chroot "$tmp" "$@"; }

rm -rf "$tmp"
mkdir -p "$(dirname "$out")"
debootstrap --variant=minbase --include="$(IFS=,; echo "${packages[*]}")" "$suite" "$tmp" "$mirror"

# The project's dependencies, with Debian's pip as root: /usr/local/lib/python3.11/dist-packages
# (PEP 668 marks Debian's python as externally managed; the image is ours to manage).
# A build machine whose pip trusts its own CA bundle (PIP_CERT, as behind a TLS-inspecting
# proxy) lends it to this one pip run; it does not stay in the image.
cp "$requirements" "$tmp/tmp/requirements-node.txt"
cert_args=()
if [ -n "${PIP_CERT:-}" ] && [ -f "$PIP_CERT" ]; then
    cp "$PIP_CERT" "$tmp/tmp/pip-ca.crt"
    cert_args=(--cert /tmp/pip-ca.crt)
fi
in_image python3.11 -m pip install --no-cache-dir --break-system-packages --root-user-action=ignore \
    "${cert_args[@]}" -r /tmp/requirements-node.txt
rm -f "$tmp/tmp/requirements-node.txt" "$tmp/tmp/pip-ca.crt"

# etcd 3.5 from Debian 13 (trixie), its binaries only: etcd is started by the (emulated)
# kubelet from its static pod manifest or by the emulated k3s, never by a unit of its own.
# They need glibc 2.34, which bookworm's 2.36 provides.
etcd_debs="$tmp.etcd-debs"
rm -rf "$etcd_debs"
EK8S_DEBIAN_MIRROR="$mirror" bash "$(dirname "$0")/../scripts/fetch-deb.sh" trixie "$etcd_debs" etcd-server etcd-client
install -m 0755 "$etcd_debs/usr/bin/etcd" "$etcd_debs/usr/bin/etcdctl" "$etcd_debs/usr/bin/etcdutl" "$tmp/usr/bin/"
rm -rf "$etcd_debs"
in_image etcd --version | grep -q '^etcd Version: 3\.5\.'

# Services the packages enable that a node must not run by itself: HAProxy and keepalived
# are started by Phylactery (Containerfile.control disables them likewise). Units that only
# make sense on real hardware or with a console are masked so that `systemctl --failed`
# stays meaningful.
in_image systemctl disable haproxy.service keepalived.service prometheus-node-exporter.service
# node_exporter as on a node (Containerfile.base): ek8s's unit, the textfile the agent writes.
install -m 0644 "$(dirname "$0")/ek8s-node-exporter.service" "$tmp/etc/systemd/system/ek8s-node-exporter.service"
ln -sf /usr/bin/prometheus-node-exporter "$tmp/usr/local/bin/node_exporter"
in_image systemctl enable ek8s-node-exporter.service
in_image systemctl mask getty@tty1.service console-getty.service systemd-networkd-wait-online.service \
    apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service fstrim.timer

# The EMULATED Kubernetes at kubeadm's own path: the code comes from the lab overlay
# (/usr/local/lib/ek8s/python/lab), its settings from the lab's emulation directory, which
# the lab binds at /var/lib/ek8s-lab (emulation.json; kubeadm appends timings.jsonl there).
cat > "$tmp/usr/bin/kubeadm" <<'SH'
#!/bin/sh
# EMULATED kubeadm (ephemeral-k8s lab node image): lab/kubeadm.py from the lab overlay.
PYTHONPATH=/usr/local/lib/ek8s/python${PYTHONPATH:+:$PYTHONPATH}
EK8S_EMULATION="${EK8S_EMULATION:-/var/lib/ek8s-lab/emulation.json}"
export PYTHONPATH EK8S_EMULATION
exec python3.11 -m lab.kubeadm "$@"
SH
chmod 0755 "$tmp/usr/bin/kubeadm"

# A RAM root starts without machine identity (Warewulf images ship none): systemd makes one
# at each boot. No apt lists or caches in RAM.
: > "$tmp/etc/machine-id"
rm -rf "$tmp/var/lib/apt/lists/"* "$tmp/var/cache/apt/"*.bin "$tmp/var/cache/apt/archives/"*.deb
echo "ek8s-lab-node" > "$tmp/etc/hostname"

# The image's users exist and its caches are current: mark /etc and /var updated after the
# last change to /usr, so the units with ConditionNeedsUpdate= (systemd-sysusers, ldconfig,
# journal-catalog-update, systemd-update-done) do not run at every boot of a RAM root.
in_image systemd-sysusers
touch "$tmp/etc/.updated" "$tmp/var/.updated"

rm -rf "$out"
mv "$tmp" "$out"
