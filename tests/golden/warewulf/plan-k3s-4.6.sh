#!/bin/sh
# ek8s warewulf plan: cluster ek8s, Warewulf 4.6, 5 nodes, 21 commands.
# Only what differs from the registry; a second run after `ek8s warewulf apply` plans nothing.
# registry read from nothing (--offline: an empty registry but for the profile default)
# /etc/warewulf/warewulf.conf: not read; its entries are at the end
# /etc/warewulf/nodes.conf: not read; its entries are at the end
# /etc/warewulf/ek8s-ek8s.exports: not read; its entries are at the end
set -e

# the share on the Warewulf server: root-only, as the agents keep every file in it
install -d -m 0700 -o root -g root /share

# the control-only tree: exported to the control nodes only
install -d -m 0700 -o root -g root /share/ek8s

# the node tree, workers read it as gid 65534 (better a file system of its own: docs/security.md)
install -d -m 0750 -o root -g 65534 /share/ek8s/nodes

# role profile for the control nodes of cluster ek8s
wwctl profile add ek8s-control

# control profile: node image, root, overlays and the tags node.yaml.ww reads
wwctl profile set ek8s-control \
    --yes \
    --tagadd ek8s_cluster=ek8s \
    --tagadd ek8s_share=/share \
    --tagadd ek8s_vip=10.0.0.99 \
    --tagadd ek8s_vip_prefix=24 \
    --tagadd ek8s_vip_hostname=vip.kubernetes.local \
    --tagadd ek8s_vip_port=8443 \
    --tagadd ek8s_vrid=51 \
    --tagadd ek8s_distribution=k3s \
    --tagadd ek8s_k8s_version=v1.36.4 \
    --tagadd ek8s_pod_subnet=10.249.0.0/16 \
    --tagadd ek8s_service_subnet=10.96.0.0/12 \
    --tagadd ek8s_on_cluster_lost=reinit \
    --tagadd ek8s_role=control \
    --image ek8s-k3s \
    --root tmpfs \
    --system-overlays '~hosts,ek8s,ek8s-hosts' \
    --runtime-overlays '~hosts,ek8s-hosts'

# control profile: network defaults of device default
wwctl profile set ek8s-control --yes --netname default --netdev net0 --netmask 255.255.255.0

# role profile for the worker nodes of cluster ek8s
wwctl profile add ek8s-worker

# worker profile: node image, root, overlays and the tags node.yaml.ww reads
wwctl profile set ek8s-worker \
    --yes \
    --tagadd ek8s_cluster=ek8s \
    --tagadd ek8s_share=/share \
    --tagadd ek8s_vip=10.0.0.99 \
    --tagadd ek8s_vip_prefix=24 \
    --tagadd ek8s_vip_hostname=vip.kubernetes.local \
    --tagadd ek8s_vip_port=8443 \
    --tagadd ek8s_vrid=51 \
    --tagadd ek8s_distribution=k3s \
    --tagadd ek8s_k8s_version=v1.36.4 \
    --tagadd ek8s_pod_subnet=10.249.0.0/16 \
    --tagadd ek8s_service_subnet=10.96.0.0/12 \
    --tagadd ek8s_on_cluster_lost=reinit \
    --tagadd ek8s_role=worker \
    --image ek8s-k3s \
    --root tmpfs \
    --system-overlays '~hosts,ek8s,ek8s-hosts' \
    --runtime-overlays '~hosts,ek8s-hosts'

# worker profile: network defaults of device default
wwctl profile set ek8s-worker --yes --netname default --netdev net0 --netmask 255.255.255.0

# new control node
wwctl node add control0 --profile default,ek8s-control --netname default --hwaddr 52:54:00:00:00:21 --ipaddr 10.0.0.21

# new control node
wwctl node add control1 --profile default,ek8s-control --netname default --hwaddr 52:54:00:00:00:22 --ipaddr 10.0.0.22

# new control node
wwctl node add control2 --profile default,ek8s-control --netname default --hwaddr 52:54:00:00:00:23 --ipaddr 10.0.0.23

# new worker node
wwctl node add worker0 --profile default,ek8s-worker --netname default --hwaddr 52:54:00:00:00:41 --ipaddr 10.0.0.41

# new worker node
wwctl node add worker1 --profile default,ek8s-worker --netname default --hwaddr 52:54:00:00:00:42 --ipaddr 10.0.0.42

# DNS servers (network tags)
wwctl node set 'control[0-2],worker[0-1]' --yes --netname default --nettagadd DNS1=1.1.1.1

# warewulfd re-reads nodes.conf, as wwctl makes it after each change
service warewulfd reload

# DHCP: the nodes' MACs and addresses
wwctl configure dhcp

# the server's /etc/hosts: the nodes' names
wwctl configure hostfile

# the server's NFS exports
wwctl configure nfs

# export what /etc/exports.d/ek8s-ek8s.exports lists (exportfs(8))
exportfs -ra

# render node.yaml, the units and /etc/hosts for the cluster's nodes
wwctl overlay build 'control[0-2],worker[0-1]'

# the nodes, their labels, taints and roles for Phylactery (running Nodes, no reboot)
# `ek8s warewulf apply` (or `ek8s warewulf roles`) writes /share/ek8s/inventory.json

# /etc/warewulf/warewulf.conf needs (ek8s warewulf apply merges it):
#   nfs:
#     enabled: true
#     export paths:
#     - path: /share/ek8s/nodes
#       export options: rw,sync,root_squash,anonuid=65534,anongid=65534,no_subtree_check

# /etc/warewulf/nodes.conf needs (ek8s warewulf apply merges it):
#   nodeprofiles:
#     ek8s-control:
#       resources:
#         fstab:
#         - spec: warewulf:/share/ek8s
#           file: /share/ek8s
#           vfstype: nfs
#           mntops: defaults,hard,lookupcache=positive
#         - spec: warewulf:/share/ek8s/nodes
#           file: /share/ek8s/nodes
#           vfstype: nfs
#           mntops: defaults,hard,lookupcache=positive
#     ek8s-worker:
#       resources:
#         fstab:
#         - spec: warewulf:/share/ek8s/nodes
#           file: /share/ek8s/nodes
#           vfstype: nfs
#           mntops: defaults,hard,lookupcache=positive

# /etc/exports.d/ek8s-ek8s.exports (ek8s warewulf apply writes it):
#   # ek8s cluster ek8s: written by `ek8s warewulf apply` (docs/security.md, "The share split").
#   # The control-only tree to the control nodes only; the node tree to them as root (Warewulf's
#   # /etc/exports exports it to the network with root_squash).
#   /share/ek8s 10.0.0.21(rw,sync,no_root_squash,no_subtree_check) 10.0.0.22(rw,sync,no_root_squash,no_subtree_check) 10.0.0.23(rw,sync,no_root_squash,no_subtree_check)
#   /share/ek8s/nodes 10.0.0.21(rw,sync,no_root_squash,no_subtree_check) 10.0.0.22(rw,sync,no_root_squash,no_subtree_check) 10.0.0.23(rw,sync,no_root_squash,no_subtree_check)
